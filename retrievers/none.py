"""``none``: closed-book "retrieval" that returns no hits, so no-retrieval rows come from the same runner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.errors import HarnessError
from harness.retrieval import RetrieverContext
from harness.retriever import Retriever
from harness.types import Example, Hit, Passage


class ClosedBook(Retriever):
    """Returns an empty hit list for every question."""

    name = "none"

    def spec(self) -> dict[str, Any]:
        # No corpus is read, so runs are shared across corpora.
        return {"retriever": "none", "corpus": None}

    def search(self, examples: Sequence[Example], k: int) -> list[list[Hit]]:
        return [[] for _ in examples]

    def passage(self, passage_id: str) -> Passage:
        raise HarnessError(f"closed-book retriever 'none' has no passages (asked for {passage_id!r})")


def closed_book(context: RetrieverContext) -> ClosedBook:
    context.check_options("none", ())
    return ClosedBook()
