"""``prompt-chat``: the manual prompt (P1) inside the backbone's chat template, the fair reference for instruct
models.

The user turn is ``{passages}{P1 instruction}\\nQuestion: {q}`` (the P1 template without its trailing
``\\nAnswer:``, since the assistant turn that follows is the answer). No system message is given, so the chat
template's own default applies (SmolLM2-Instruct inserts its "You are a helpful AI assistant named SmolLM..."
system turn, as in its training). The generation prompt (the assistant header) is added; decoding and
post-processing are the shared ones. Backbones without a chat template are refused when the run is planned.
"""

from __future__ import annotations

import hashlib
from typing import Any

from harness.errors import HarnessError
from harness.methods.base import Method, MethodContext
from harness.segments import chat_wrapper
from harness.templates import PROMPT_CHAT


class PromptChat(Method):
    """P1, passages and question as the user message of the tokenizer's chat template."""

    name = "prompt-chat"
    template = PROMPT_CHAT

    def __init__(self, *, chat_template: bool = True) -> None:
        if not chat_template:
            raise HarnessError("prompt-chat is the chat-template prompt; for the raw-text prompt use --method prompt")
        super().__init__(chat_template=True)
        self.chat_template_hash: str | None = None  # the tokenizer's template text, part of the result key

    def params(self) -> dict[str, Any]:
        return {**super().params(), "chat_template_hash": self.chat_template_hash}

    def prepare_dataset(self, context: MethodContext, retriever: str, dataset: str) -> None:
        """Check the backbone has a chat template (before any cell runs) and key its exact text."""
        tokenizer = context.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise HarnessError(
                f"prompt-chat needs a chat template and {context.model_name}'s tokenizer has none; "
                "use --method prompt, or an instruct backbone"
            )
        chat_wrapper(tokenizer)  # the template must echo the user message
        self.chat_template_hash = hashlib.sha256(str(tokenizer.chat_template).encode("utf-8")).hexdigest()[:16]
