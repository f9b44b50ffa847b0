"""``lora``: the paper's LoRA baseline, trained by the harness through PEFT with the manual prompt (P1).

``LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"])`` (llama-recipes'
defaults, all configurable with ``--option lora.r=16`` etc.), the same training loop, data, budget and seed as
SPRING, answer-only loss. The adapter is saved in PEFT's own format; evaluation merges it into a separate copy
of the backbone, so the shared base model that other methods use is never modified.
"""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError
from harness.methods.base import Method
from harness.templates import PROMPT


class Lora(Method):
    """The prompt baseline's input on a LoRA-adapted backbone."""

    name = "lora"
    template = PROMPT

    def __init__(
        self,
        *,
        r: int | str = 8,
        alpha: int | str = 32,
        dropout: float | str = 0.05,
        target_modules: str = "q_proj,v_proj",
        chat_template: bool = False,
    ) -> None:
        super().__init__(chat_template=chat_template)
        try:
            self.r, self.alpha, self.dropout = int(r), int(alpha), float(dropout)
        except ValueError as error:
            raise HarnessError(f"lora options r, alpha and dropout must be numbers ({error})") from None
        self.target_modules = tuple(m.strip() for m in str(target_modules).split(",") if m.strip())
        self.adapter: Any = None  # the adapter folder, once prepared
        self.checkpoint_hash: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "r": self.r,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target_modules": list(self.target_modules),
            "checkpoint_hash": self.checkpoint_hash,
        }

    def peft_config(self) -> Any:
        from peft import LoraConfig, TaskType

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            task_type=TaskType.CAUSAL_LM,
        )

    def prepare(self, context: Any, retriever: str) -> None:
        """Load or train the adapter for this backbone and retriever (see :mod:`harness.methods.trained`)."""
        from harness.methods.trained import lora_adapter

        self.adapter, self.checkpoint_hash = lora_adapter(self, context, retriever)

    def backend_for(self, context: Any) -> Any:
        """The generation backend over the backbone with this adapter merged in (one copy per adapter)."""
        from harness.methods.trained import lora_backend

        return lora_backend(self, context)
