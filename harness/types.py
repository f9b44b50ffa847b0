"""Frozen value types shared by tasks, retrievers, methods and the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError


@dataclass(frozen=True)
class Example:
    """One question: a stable ``id``, the question text, every acceptable answer and free metadata."""

    id: str
    question: str
    golds: Sequence[str]  # stored as a tuple (__post_init__); files give lists
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        # Accept any sequence of answers but store a tuple so examples stay immutable and hashable. A bare
        # string would become a tuple of its letters (each one a gold answer), so it is refused.
        if isinstance(self.golds, str):
            raise HarnessError(f"example {self.id}: golds must be a list of answer strings, not the string {self.golds!r}")
        object.__setattr__(self, "golds", tuple(self.golds))


@dataclass(frozen=True)
class Passage:
    """One retrievable passage."""

    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Hit:
    """A retrieved passage id with its score and 1-based rank."""

    passage_id: str
    score: float
    rank: int
