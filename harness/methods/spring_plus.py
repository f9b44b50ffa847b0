"""``spring-plus``: SPRING tokens trained on top of the trained LoRA model (the LoRA weights stay frozen).

It stacks the two: the backbone with the ``lora`` adapter merged in is the frozen model, and the virtual tokens
are trained on it exactly as ``spring`` trains them on the base model. Its checkpoint's training spec names the
LoRA adapter's hash, so retraining the adapter retrains the tokens.
"""

from __future__ import annotations

from typing import Any

from harness.methods.base import MethodContext
from harness.methods.lora import Lora
from harness.methods.spring import Spring, virtual_tokens


class SpringPlus(Spring):
    """SPRING on the LoRA-adapted backbone."""

    name = "spring-plus"
    preserves = False
    adapts_backbone = True

    def __init__(self, tokens: int = 50, **options: Any) -> None:
        super().__init__(tokens, **options)
        self.lora = Lora()  # the default LoRA baseline: the same adapter `--method lora` evaluates

    def params(self) -> dict[str, Any]:
        return {**super().params(), "lora_checkpoint_hash": self.lora.checkpoint_hash}

    def prepare(self, context: MethodContext, retriever: str) -> None:
        """Load or train the LoRA adapter, then the tokens on the backbone with it merged in."""
        self.lora.prepare(context, retriever)
        backend = self.lora.merged_backend(context)  # training runs on the HF backend, whatever generates
        base = {"lora": self.lora.checkpoint_hash}
        self.weights, self.checkpoint_hash = virtual_tokens(self, context, retriever, backend=backend, base=base)
        self.check_tokens()

    def backend_for(self, context: MethodContext) -> Any:
        return self.lora.backend_for(context)

    def backend_key(self, context: MethodContext) -> tuple[str, str]:
        return self.lora.backend_key(context)
