"""What a result records about how it was made: the command as typed, the machine it ran on and
the peak memory of its process (model files, evaluation JSONs, benchmarks, the progress stream)."""

from __future__ import annotations

import multiprocessing
import platform
import sys
from pathlib import Path

import torch


def peak_memory_mb() -> float | None:
    """This process's peak resident memory so far (MB; None where the system does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024**2  # Linux reports KiB, macOS bytes
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, 1)


def command_line() -> str:
    """The command as typed: ``mecca ...``, or ``python -m module ...`` for a module run with -m."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = Path(sys.argv[0]).name
    if spec is not None and spec.name not in ("mecca.cli", "mecca.__main__"):
        program = f"python -m {spec.name.removesuffix('.__main__')}"
    elif spec is not None:
        program = "mecca"
    return " ".join([program] + sys.argv[1:])


def machine_description(device: str) -> dict:
    """The machine and PyTorch a benchmark ran on."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": multiprocessing.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info
