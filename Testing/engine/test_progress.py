"""The progress stream's one schema: what the trainer writes is what the Slicer panel reads."""

import json

import pytest
from mecca.progress import STEP_FIELDS, event_line, parse_line, training_fraction


def test_a_step_event_round_trips_and_says_how_far_the_run_is():
    line = event_line("step", **{field: 1 for field in STEP_FIELDS} | {"epoch": 2, "epochs": 4, "step": 5, "steps": 10})
    event = parse_line(line)
    assert event["event"] == "step" and set(event) == {"event", *STEP_FIELDS}
    assert training_fraction(event) == pytest.approx(15 / 40)
    assert training_fraction(parse_line(event_line("info", message="hello"))) is None


def test_the_writer_refuses_what_readers_would_not_understand():
    with pytest.raises(ValueError, match="unknown progress event"):
        event_line("stepped", epoch=1)
    with pytest.raises(ValueError, match="a step event has the fields"):
        event_line("step", epoch=1)


def test_other_lines_read_as_log_messages():
    for text in ("Traceback (most recent call last):", "[1, 2]", "", json.dumps({"no": "event"})):
        assert parse_line(text) == {"event": "log", "message": text}
