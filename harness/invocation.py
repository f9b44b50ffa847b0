"""The command line being run, kept by :func:`harness.cli.main` so that the cells it writes can record it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

_arguments: list[str] = []


def record(arguments: Sequence[str]) -> None:
    """Remember the arguments of the ``harness`` command now running (``main``'s argv)."""
    _arguments[:] = list(arguments)


def command_line() -> str | None:
    """The command being run as a shell line (``harness run --suite qa12 ...``); ``None`` outside the CLI.

    Cells record it in their provenance, so a report can say how to re-run them."""
    return shlex.join(["harness", *_arguments]) if _arguments else None
