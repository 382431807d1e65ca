"""The methods compared with MECCA. Importing this package registers each with the engine's
harness (``mecca.harness.register_method``), so ``research.compare`` can run them by name."""

from . import automatic, bs_iris, intercnn, seeded_tools  # noqa: F401  (each registers its methods)
