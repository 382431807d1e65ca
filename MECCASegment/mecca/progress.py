"""The progress stream of ``mecca train --progress jsonl``, defined once for its writer (the
trainer) and its readers (the Slicer module's fine-tuning panel): one JSON object per line on
stdout, ``{"event": <name>, ...fields}``. Standard library only, so a reader needs no PyTorch.

Events and their fields:

- ``info``: ``message`` (what the run is doing);
- ``step`` (after each optimiser step): ``epoch``, ``epochs`` (1-based epoch of how many),
  ``step``, ``steps`` (steps done in this epoch, of how many), ``elapsed_s``, ``eta_s``, ``loss``,
  ``dice`` (of the step's episodes), ``peak_memory_mb`` (the process's peak resident memory, None
  where the system does not say);
- ``epoch`` (after each epoch): the epoch's log entry (``epoch``, ``elapsed_s``, ``validation``, ...);
- ``done``: ``model`` (the file written), ``validation``.

Any other line (a warning, a traceback) reads as ``{"event": "log", "message": line}``.
"""

from __future__ import annotations

import json

EVENTS = ("info", "step", "epoch", "done")
STEP_FIELDS = ("epoch", "epochs", "step", "steps", "elapsed_s", "eta_s", "loss", "dice", "peak_memory_mb")


def event_line(event: str, **fields) -> str:
    """One line of the stream (the writer's side)."""
    if event not in EVENTS:
        raise ValueError(f"unknown progress event {event!r}; events are {', '.join(EVENTS)}")
    if event == "step" and set(fields) != set(STEP_FIELDS):
        raise ValueError(f"a step event has the fields {', '.join(STEP_FIELDS)}, got {', '.join(sorted(fields))}")
    return json.dumps({"event": event, **fields})


def parse_line(line: str) -> dict:
    """A line of the stream -> its event dict; any other text -> {"event": "log", "message": line}."""
    text = line.strip()
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return {"event": "log", "message": text}
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return {"event": "log", "message": text}
    return event


def training_fraction(event: dict) -> float | None:
    """How much of the training a step event says is done (0..1); None for other events."""
    if event.get("event") != "step":
        return None
    try:
        done = (int(event["epoch"]) - 1) * int(event["steps"]) + int(event["step"])
        return min(max(done / (int(event["epochs"]) * int(event["steps"])), 0.0), 1.0)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
