"""The errors the engine raises at its boundary; each message says what is wrong and what to do."""

import json
from pathlib import Path


class InputError(ValueError):
    """Bad user input (image, label, dataset, clicks, option): the message says what and what to do."""


class SessionError(RuntimeError):
    """An operation that the session's current state does not allow (e.g. undo with no history)."""


class CheckpointError(ValueError):
    """A model file that cannot be used; the message says why and what to do."""


def read_json_input(path, what: str):
    """A user's JSON file (``what`` names it: "clicks file", "recipe file"), or an InputError that
    says why it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise InputError(f"{path}: {what} not found") from error
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
