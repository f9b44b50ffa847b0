"""The command line being run, kept by :func:`harness.cli.main` so that the cells it writes can record it."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from pathlib import Path

from harness import cache

_arguments: list[str] = []
_config: dict[str, str] = {}


def record(arguments: Sequence[str]) -> None:
    """Remember the arguments of the ``harness`` command now running (``main``'s argv)."""
    _arguments[:] = list(arguments)
    _config.clear()


def record_config(command: str, text: str) -> None:
    """Remember the running command's resolved flags as YAML text (:mod:`harness.config_file`)."""
    _config.update(command=command, text=text)


def recorded_config() -> tuple[str, str] | None:
    """``(command name, YAML text)`` of the running command's resolved flags; ``None`` when none was recorded."""
    return (_config["command"], _config["text"]) if _config else None


def command_line() -> str | None:
    """The command being run as a shell line (``harness run --suite qa12 ...``); ``None`` outside the CLI.

    Cells record it in their provenance, so a report can say how to re-run them."""
    return shlex.join(["harness", *_arguments]) if _arguments else None


def saved_config(results: Path) -> str | None:
    """Write the recorded flags of the running command to ``<results>/configs/<command>-<hash>.yaml`` (content
    addressed: the same resolved flags are one file) and return that path relative to ``results``; ``--config``
    that file re-runs the command. ``None`` when none was recorded (outside the CLI)."""
    recorded = recorded_config()
    if recorded is None:
        return None
    command, text = recorded
    relative = f"configs/{command}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}.yaml"
    path = Path(results) / relative
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        cache.atomic_write(path, text.encode("utf-8"))  # the same bytes from any writer: no lock needed
    return relative
