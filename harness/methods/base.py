"""The contract every method implements: turn (question, retrieved passages) into model input segments.

A method owns how it changes the input (like PEFT's prompt tuning owns its virtual tokens); the generation
engine, decoding rules and post-processing are shared, so methods differ only where they are meant to.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from typing import Any, ClassVar

from harness.segments import Segment, build_segments, format_passages
from harness.templates import Template
from harness.types import Example, Passage


class Method(ABC):
    """A method with its exact template. Subclasses set ``name``, ``template`` and ``uses_passages``.

    ``chat_template`` wraps the rendered template in the tokenizer's chat template (off by default: the paper
    uses none). Subclasses with trainable parts override :meth:`build_input` and extend :meth:`params`.
    """

    name: ClassVar[str]
    template: ClassVar[Template]
    uses_passages: ClassVar[bool] = True
    label_defaults: ClassVar[dict[str, Any]] = {}  # parameter values a leaderboard label leaves out

    def __init__(self, *, chat_template: bool = False) -> None:
        self.chat_template = chat_template

    def params(self) -> dict[str, Any]:
        """Every parameter that changes the inputs (JSON-able)."""
        return {"chat_template": self.chat_template}

    def spec(self) -> dict[str, Any]:
        """Canonical identity for result keys: method, exact template (name, version, hash) and parameters."""
        return {"method": self.name, "template": self.template.spec(), "params": self.params()}

    def build_input(self, example: Example, passages: Sequence[Passage], tokenizer: Any) -> list[Segment]:
        """The model input as segments. Methods that do not read passages ignore them."""
        return build_segments(
            self.template,
            example.question,
            passages if self.uses_passages else (),
            tokenizer,
            chat_template=self.chat_template,
        )

    def render(self, example: Example, passages: Sequence[Passage]) -> str:
        """The input as plain text (for display; virtual tokens shown as ``T``)."""
        return self.template.render(q=example.question, passages=format_passages(passages) if self.uses_passages else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"
