"""MECCASegment's research room: the methods MECCA is compared with, the experiment scripts, their
recipes and their results. Not part of the product: the engine (``mecca``) and the Slicer module
never import it; it uses the engine's public pieces like any other program."""
