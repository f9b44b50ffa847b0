"""Progress of the engine's long steps (building a corpus, indexing, encoding, retrieving), shown by whoever listens.

Engine code wraps a step in :func:`activity` and calls the ``advance`` it yields; it never draws anything itself.
The CLI installs a reporter (:func:`harness.console.rich_reporter`: a rich bar with count, rate, elapsed time and
ETA, joined to the command's own progress display when one is live); without one, as in library use and the
tests, a step costs a function call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Advance = Callable[[int], None]
Reporter = Callable[[str, "int | None", str], contextlib.AbstractContextManager[Advance]]

_reporters: list[Reporter] = []


def _ignore(count: int = 1) -> None:
    return None


@contextlib.contextmanager
def activity(description: str, total: int | None = None, unit: str = "items") -> Iterator[Advance]:
    """A long step: ``description`` ("bm25 index of wiki-offline"), ``total`` units if known; yields
    ``advance(n)`` to call as units finish."""
    if not _reporters:
        yield _ignore
        return
    with _reporters[-1](description, total, unit) as advance:
        yield advance


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    """Show the activities of the enclosed code through ``reporter``."""
    _reporters.append(reporter)
    try:
        yield
    finally:
        _reporters.remove(reporter)


__all__ = ["Advance", "Reporter", "activity", "reporting"]
