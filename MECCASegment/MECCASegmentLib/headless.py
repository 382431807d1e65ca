"""Slicer's scripted-module base classes and parameter-node helpers: the application's own, or, under
the slicer-core wheel (MRML without Qt or the application, as in this project's tests and batch
use), stand-ins with what the module's Logic and Test use of them."""

import logging
import unittest

try:  # the Slicer application
    import qt
    from slicer.i18n import tr as _
    from slicer.i18n import translate
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
except ImportError:  # the slicer-core wheel (no Qt, no application): the Logic and the Test still run

    class ScriptedLoadableModule:
        """Needs the Slicer application; never instantiated without it."""

    class ScriptedLoadableModuleWidget:
        """Needs the Slicer application; never instantiated without it."""

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleTest(unittest.TestCase):
        """What MECCASegmentTest uses of the real class, so it also runs under pytest."""

        def delayDisplay(self, message, msec=None):
            logging.info(message)

    def parameterNodeWrapper(cls):
        return cls

    def WithinRange(minimum, maximum):  # noqa: N802  (same name as the Slicer validator)
        return (minimum, maximum)

    def Choice(choices):  # noqa: N802
        return tuple(choices)

    qt = None  # the Widget, the only user of Qt, needs the application

    def _(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text


__all__ = ["Choice", "ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
           "ScriptedLoadableModuleWidget", "WithinRange", "_", "parameterNodeWrapper", "qt", "translate"]
