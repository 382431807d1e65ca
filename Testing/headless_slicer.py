"""Real Slicer core without the desktop application, for pytest.

The ``slicer-core`` wheel has Slicer's MRML scene, module logics and ``slicer.util`` but not the
Qt application that normally wires them together. ``HeadlessSlicer`` does that wiring the way
``qSlicerCoreApplication`` and ``qSlicerAbstractCoreModule`` do at start-up, and installs
``slicer.mrmlScene`` / ``slicer.app`` / ``slicer.modules`` so unmodified module code runs.

Adapted from the project's reference recipe ``shared/reference/headless_slicer_recipe.py``
(itself following trame-slicer's ``SlicerApp`` and ``io_manager.py``): same start-up order,
trimmed to what the MECCASegment tests use (volume/segmentation/markups reading, the slice
logics for the overlay), plus the pytest fixtures at the end.

``slicer.app`` is a small Python stand-in, NOT qSlicerApplication: no layout manager, no Qt.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types
from pathlib import Path

import pytest
import slicer
import slicer.util
import vtk


class _Module:
    """Stands in for qSlicerAbstractCoreModule: ``name``, ``title`` and ``logic()``."""

    def __init__(self, name, logic):
        self.name = self.title = name
        self._logic = logic

    def logic(self):
        return self._logic


class _ModuleManager:
    def __init__(self, modules: dict):
        self._modules = modules

    def module(self, name):
        return self._modules.get(name) or self._modules.get(name.lower())


class _IOManager:
    """The reading part of qSlicerCoreIOManager that slicer.util.loadVolume/loadSegmentation/
    loadMarkups call (the real readers are Qt classes, absent from the wheel)."""

    def __init__(self, app: HeadlessSlicer):
        self._app = app

    @staticmethod
    def fileType(filename):
        name = str(filename).lower()
        if name.endswith((".seg.nrrd", ".seg.nhdr")):
            return "SegmentationFile"
        if name.endswith((".mrk.json", ".fcsv")):
            return "MarkupsFile"
        if name.endswith((".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")):
            return "VolumeFile"
        return "NoFile"

    def loadNodes(self, filetype, properties, loadedNodesCollection, userMessages=None):
        app, fileName = self._app, str(properties["fileName"])
        if filetype == "VolumeFile":  # qSlicerVolumesReader::load
            name = properties.get("name") or Path(fileName).name.split(".")[0]
            options = 0x1 if properties.get("labelmap") else 0
            node = app.logics["Volumes"].AddArchetypeVolume(fileName, name, options)
            if node is not None and properties.get("show", True):
                selection = app.app_logic.GetSelectionNode()
                selection.SetActiveVolumeID(node.GetID())
                app.app_logic.PropagateVolumeSelection()
        elif filetype == "SegmentationFile":  # qSlicerSegmentationsReader::load
            node = app.logics["Segmentations"].LoadSegmentationFromFile(fileName, True, properties.get("name") or "")
        elif filetype == "MarkupsFile":  # qSlicerMarkupsReader::load
            nodeID = app.logics["Markups"].LoadMarkups(fileName, properties.get("name") or "")
            node = app.scene.GetNodeByID(nodeID) if nodeID else None
        else:
            raise RuntimeError(f"headless Slicer cannot read {fileName} (file type {filetype!r})")
        if node is None:
            return False
        loadedNodesCollection.AddItem(node)
        return True


class _App:
    """Tiny stand-in for qSlicerApplication (``slicer.app``)."""

    def __init__(self, app: HeadlessSlicer):
        self._app = app
        self._io = _IOManager(app)
        self._modules = _ModuleManager(app.modules)
        self.temporaryPath = app.temp_dir

    def mrmlScene(self):
        return self._app.scene

    def applicationLogic(self):
        return self._app.app_logic

    def coreIOManager(self):
        return self._io

    ioManager = coreIOManager

    def moduleManager(self):
        return self._modules

    def testingEnabled(self):
        return True

    def commandOptions(self):
        return types.SimpleNamespace(testingEnabled=True, noMainWindow=True)

    def layoutManager(self):
        return None

    def pauseRender(self):
        pass

    resumeRender = processEvents = pauseRender


class HeadlessSlicer:
    """Scene, application logic, module logics and slice logics, wired as Slicer does at start-up."""

    # logic name in appLogic.SetModuleLogic (= Slicer module name) -> class in the slicer namespace;
    # C++ logics find each other by these names (Volumes -> "Colors", Segmentations -> ...).
    MODULE_LOGICS = {
        "Colors": None,  # the application logic's own vtkMRMLColorLogic (procedural color tables)
        "Volumes": "vtkSlicerVolumesLogic",
        "Segmentations": "vtkSlicerSegmentationsModuleLogic",
        "Markups": "vtkSlicerMarkupsLogic",
        "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
        "Data": "vtkSlicerDataModuleLogic",
    }

    def __init__(self, slice_views=("Red", "Yellow", "Green"), temp_dir: str | None = None):
        output = vtk.vtkOutputWindow()
        output.SetDisplayModeToAlwaysStdErr()
        vtk.vtkOutputWindow.SetInstance(output)
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="headless_slicer_")

        # 1. scene and the "default" crosshair (qSlicerCoreApplication::setMRMLScene)
        self.scene = slicer.vtkMRMLScene()
        self.scene.SetRootDirectory(self.temp_dir)
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetCrosshairName("default")
        self.scene.AddNode(crosshair)

        # 2. application logic: SetMRMLScene creates the Selection and Interaction singletons, which
        #    must exist before any module logic (markups) sees the scene
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.app_logic.SetViewLogics(vtk.vtkCollection())

        # 3. data IO (qSlicerCoreApplicationPrivate::initDataIO)
        self.remote_io = slicer.vtkMRMLRemoteIOLogic()
        self.remote_io.GetCacheManager().SetRemoteCacheDirectory(os.path.join(self.temp_dir, "cache"))
        self.data_io_manager_logic = slicer.vtkDataIOManagerLogic()
        self.data_io_manager_logic.SetMRMLApplicationLogic(self.app_logic)
        self.data_io_manager_logic.SetAndObserveDataIOManager(self.remote_io.GetDataIOManager())
        self.app_logic.SetMRMLSceneDataIO(self.scene, self.remote_io, self.data_io_manager_logic)

        # 4. module logics (qSlicerAbstractCoreModule::logic + qSlicerModuleFactoryManager)
        self.modules: dict[str, _Module] = {}
        self.logics: dict[str, object] = {}
        for name, class_name in self.MODULE_LOGICS.items():
            logic = self.app_logic.GetColorLogic() if class_name is None else getattr(slicer, class_name)()
            if hasattr(logic, "SetModuleShareDirectory"):
                logic.SetModuleShareDirectory(self.temp_dir)
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[name] = logic
            self.modules[name.lower()] = _Module(name, logic)

        # 5. slice logics without render windows, so slice composite nodes (foreground/background
        #    layers) exist and the slice pipeline can blend an overlay into an image
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene, True)
        self.slice_logics = {}
        for view_name in slice_views:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(self.app_logic)
            self.app_logic.GetSliceLogics().AddItem(logic)
            logic.SetMRMLScene(self.scene)
            logic.AddSliceNode(view_name)
            self.slice_logics[view_name] = logic

    def install_slicer_globals(self) -> HeadlessSlicer:
        """Populate slicer.mrmlScene / slicer.app / slicer.modules as the desktop application does."""
        slicer.mrmlScene = self.scene
        slicer.app = _App(self)
        modules = types.ModuleType("slicer.modules")
        for key, module in self.modules.items():
            setattr(modules, key, module)
        sys.modules["slicer.modules"] = modules
        slicer.modules = modules
        # slicer.util.getModuleLogic() checks isinstance(module, slicer.qSlicerScriptedLoadableModule),
        # a PythonQt class the wheel lacks; a placeholder makes that check False.
        if not hasattr(slicer, "qSlicerScriptedLoadableModule"):
            slicer.qSlicerScriptedLoadableModule = type("qSlicerScriptedLoadableModule", (), {})
        return self


@pytest.fixture(scope="session")
def headless_slicer(tmp_path_factory) -> HeadlessSlicer:
    """One headless Slicer for the whole test session (starting one takes about a second)."""
    return HeadlessSlicer(temp_dir=str(tmp_path_factory.mktemp("slicer"))).install_slicer_globals()


@pytest.fixture
def scene(headless_slicer):
    """The MRML scene, emptied after each test (singletons such as slice nodes stay, as in Slicer)."""
    yield headless_slicer.scene
    headless_slicer.scene.Clear(0)
