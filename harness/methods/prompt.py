"""``prompt``: the paper's "Prompt" baseline (P1), passages then a manual instruction then the question.

Template (exact): ``{passages}According to the previous relevant passages, please answer the following
question. Only return the answer without any other words.\\nQuestion: {q}\\nAnswer:``
"""

from __future__ import annotations

from harness.methods.base import Method
from harness.templates import PROMPT


class Prompt(Method):
    """Passages plus the paper's hand-written instruction P1."""

    name = "prompt"
    template = PROMPT
