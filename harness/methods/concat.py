"""``concat``: the paper's "Concat" baseline, retrieved passages followed directly by the question.

Template (exact): ``{passages}{q}`` where the passages block is ``[i] {title} {text}\\n`` per passage plus a
blank line (:func:`harness.segments.format_passages`).
"""

from __future__ import annotations

from harness.methods.base import Method
from harness.templates import CONCAT


class Concat(Method):
    """Passages, then the bare question, with no instruction."""

    name = "concat"
    template = CONCAT
