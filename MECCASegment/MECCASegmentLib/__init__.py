"""The MECCASegment module's helpers (Slicer glue), beside MECCASegment.py as Slicer modules keep
theirs in ``<Module>Lib/``: dependency install, MRML geometry and node transfer, the segment-editing
session, fine-tuning in background processes, and stand-ins for Slicer's base classes where only
the slicer-core wheel is present. The engine they drive is the ``mecca`` package beside them."""
