"""What the engine needs (Resources/requirements.txt), checked and installed on first use, as Slicer
modules do: PyTorch from the PyTorch extension where it is installed (it picks the build matching
the GPU driver), the rest with pip."""

from collections.abc import Callable
from pathlib import Path

import slicer

MODULE_DIR = Path(__file__).resolve().parents[1]
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"


class DependencyError(RuntimeError):
    """A Python package the engine needs is missing; the message says which and how to install it."""


def _requirement(line: str):
    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
    return Requirement(line)


def missingRequirements(requirementsFile: Path = REQUIREMENTS_FILE) -> list[str]:
    """The lines of requirements.txt that the running Python does not satisfy (name or version)."""
    import importlib.metadata

    missing = []
    for line in requirementsFile.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = _requirement(line)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(line)
    return missing


def requireDependencies() -> None:
    """Raise DependencyError naming what is missing (scripts, batch use: nothing is installed)."""
    missing = missingRequirements()
    if missing:
        raise DependencyError(
            f"MECCASegment needs these Python packages: {', '.join(missing)}. Open the MECCASegment module "
            f"and press Start to install them, or run slicer.util.pip_install({' '.join(missing)!r}) in the "
            "Python console (PyTorch is best installed with the PyTorch extension's PyTorchUtils module).")


def _pytorchExtension():
    """The PyTorch extension's PyTorchUtils module, or None when that extension is not installed."""
    try:
        import PyTorchUtils
    except ImportError:
        return None
    return PyTorchUtils


def installMissingRequirements(confirm: Callable[[str], bool]) -> bool:
    """Install what requirements.txt lists and is missing, once ``confirm(message)`` agrees.

    PyTorch comes from the PyTorch extension (PyTorchUtils) when it is installed, because it picks the
    build matching the GPU driver; otherwise from pip like the rest. Returns False when the user
    declines, True when everything is there; DependencyError when the installation did not work.
    """
    missing = missingRequirements()
    if not missing:
        return True
    torchLines = [line for line in missing if _requirement(line).name == "torch"]
    pipLines = [line for line in missing if line not in torchLines]
    pytorchExtension = _pytorchExtension()
    torchNote = ("" if not torchLines else
                 " PyTorch comes from the PyTorch extension, which picks the build for this computer." if pytorchExtension
                 else " PyTorch from pip can be several GB (a GPU build on Linux); to choose a CPU or GPU build, cancel, "
                      "install the PyTorch extension from the Extensions Manager and press Start again.")
    if not confirm("MECCASegment needs these Python packages, which are not installed:\n\n  " + "\n  ".join(missing)
                   + "\n\nInstall them now? This downloads them from the internet and can take several minutes."
                   + torchNote):
        return False
    if torchLines:
        if pytorchExtension is None:
            pipLines = torchLines + pipLines
        else:
            torch = pytorchExtension.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=str(_requirement(torchLines[0]).specifier))
            if torch is None:
                raise DependencyError("PyTorch was not installed; see the PyTorch Utils module")
    if pipLines:
        slicer.util.pip_install(" ".join(pipLines))
    stillMissing = missingRequirements()
    if stillMissing:
        raise DependencyError(f"still missing after the installation: {', '.join(stillMissing)}; restart Slicer "
                              "and try again")
    return True
