"""``closed-book``: the question alone, no passages (the paper's no-retrieval baseline).

Template (exact): ``Question: {q}\\nAnswer:``
"""

from __future__ import annotations

from harness.methods.base import Method
from harness.templates import CLOSED_BOOK


class ClosedBook(Method):
    """Answers from the model's parametric knowledge; retrieved passages are ignored."""

    name = "closed-book"
    template = CLOSED_BOOK
    uses_passages = False
