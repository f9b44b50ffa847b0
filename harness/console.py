"""The rich console every command prints through."""

from __future__ import annotations

import sys

from rich.console import Console


def console() -> Console:
    """Stdout console; when stdout is not a terminal (pipes, files, CI logs) tables get 160 columns instead of
    rich's 80, so they are not wrapped into unreadable cells."""
    return Console() if sys.stdout.isatty() else Console(width=160)
