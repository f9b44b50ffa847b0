"""The contract every retriever implements (``retrievers/`` holds the implementations)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from harness.types import Example, Hit, Passage


class Retriever(ABC):
    """A configured retriever over one corpus. Built by the factory registered in ``RETRIEVERS``."""

    name: str

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """Canonical, JSON-able identity: retriever id, every parameter that changes results, corpus fingerprint.

        It goes verbatim into retrieval-run and result keys, so anything that changes the hits must be in it.
        """

    @abstractmethod
    def search(self, examples: Sequence[Example], k: int) -> list[list[Hit]]:
        """The top-``k`` hits for each example, best first (an empty list per example for closed-book)."""

    @abstractmethod
    def passage(self, passage_id: str) -> Passage:
        """The passage with this id (for hits this retriever returned)."""
