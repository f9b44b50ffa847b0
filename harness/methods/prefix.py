"""``prefix``: the paper's prefix-tuning baseline, n trainable virtual tokens in front of everything, ``[T; R; Q]``.

The input is ``[T, BOS, passages, "Question: {q}\\nAnswer:"]``: the tokens come first, before the tokenizer's BOS
segment (Llama, Mistral; SmolLM2 has none), because that is what PEFT prompt tuning does: it prepends its prompt
embeddings to the whole ``input_ids``, BOS included. Standard prompt tuning trains all n tokens, so ``fixed_k``
defaults to true (k is never sampled); ``--option prefix.fixed_k=false`` samples k as SPRING does (``impl=spring``
only). The start values are the harness's own :func:`harness.methods.spring.initial_tokens` for both impls.

Two implementations, ``--option prefix.impl=spring|peft``, which give the same number
(``tests/test_prefix.py``: identical start, data, batches and answer draws; trained weights agree to float
rounding and the predictions are identical):

* ``spring`` (default): SPRING's own trainer on the frozen shared backbone, the full sequence with gradients (the
  whole input depends on T, so SPRING's passages-once reuse does not apply). Checkpoint:
  ``<results>/checkpoints/prefix-<spec hash>.safetensors``.
* ``peft``: ``peft.get_peft_model(copy, PromptTuningConfig(...))`` on a separate copy of the backbone, trained by
  the same loop (:func:`harness.training.train`) with the loss of PEFT's own forward (right-padded ids, labels
  only on `` answer</s>``). PEFT is created with RANDOM init and then given :func:`initial_tokens`, because PEFT's
  TEXT init tokenizes with special tokens (a BOS as first token on Llama). Checkpoint: PEFT's adapter folder
  ``<results>/checkpoints/prefix-peft-<spec hash>/``.

Either way inference feeds the (n, d) tokens through the harness's generation engine as an embedding segment.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from harness.errors import HarnessError
from harness.methods.spring import Spring, SpringTrainer
from harness.registry import unknown_name
from harness.segments import EmbeddingSegment, Segment, TokenSegment
from harness.training import TrainingConfig, TrainItem, draw_inputs
from harness.types import Example, Passage

IMPLS = ("spring", "peft")


def virtual_first(segments: Sequence[Segment]) -> list[Segment]:
    """``segments`` with the virtual-token segment moved to the very front (before BOS), the rest in order."""
    virtual = [s for s in segments if isinstance(s, EmbeddingSegment)]
    return virtual + [s for s in segments if not isinstance(s, EmbeddingSegment)]


class Prefix(Spring):
    """Virtual tokens in front of the whole input; ``impl`` picks the trainer (``spring`` or ``peft``)."""

    name = "prefix"
    label_defaults = {"placement": "trq", "fixed_k": True, "impl": "spring"}

    def __init__(
        self, tokens: int = 50, *, impl: str = "spring", fixed_k: bool | str = True, placement: str = "trq", **options: Any
    ) -> None:
        if placement != "trq":
            raise HarnessError(
                f"prefix always puts its tokens first (placement trq), got {placement!r}; use spring.placement for others"
            )
        super().__init__(tokens, placement="trq", fixed_k=fixed_k, **options)
        if impl not in IMPLS:
            raise unknown_name("prefix impl", impl, IMPLS)
        if impl == "peft" and not self.fixed_k:
            raise HarnessError(
                "prefix.impl=peft always trains all n tokens (PEFT prompt tuning cannot sample k); "
                "drop fixed_k=false or use impl=spring"
            )
        self.impl = impl

    def params(self) -> dict[str, Any]:
        return {**super().params(), "impl": self.impl}

    def prepare(self, context: Any, retriever: str) -> None:
        """Load or train the tokens with this ``impl`` (see :mod:`harness.methods.trained`)."""
        from harness.methods.trained import prefix_peft_tokens, spring_tokens

        if self.impl == "peft":
            self.weights, self.checkpoint_hash = prefix_peft_tokens(self, context, retriever)
        else:
            self.weights, self.checkpoint_hash = spring_tokens(
                self, context, retriever, trainer=PrefixTrainer, settings={"impl": "spring"}
            )
        if self.weights.shape[0] < self.tokens:
            raise HarnessError(
                f"the {self.name} checkpoint ({getattr(self, 'checkpoint', None) or 'trained'}) has {self.weights.shape[0]} virtual tokens; "
                f"cannot use k={self.tokens}: pass --tokens 1..{self.weights.shape[0]}"
            )

    def build_input(self, example: Example, passages: Sequence[Passage], tokenizer: Any) -> list[Segment]:
        return virtual_first(super().build_input(example, passages, tokenizer))


class PrefixTrainer(SpringTrainer):
    """``impl=spring``: SPRING's trainer (full sequence with gradients) with the tokens before BOS."""

    def inputs(self, batch: Sequence[TrainItem], rng: random.Random) -> tuple[list[list[Segment]], list[tuple[int, ...]]]:
        inputs, answers = super().inputs(batch, rng)
        return [virtual_first(segments) for segments in inputs], answers


class PeftPromptTrainer:
    """``impl=peft``: the :class:`harness.training.Trainable` of a PEFT prompt-tuning model, loss from PEFT's forward."""

    def __init__(self, method: Prefix, peft_model: Any, backend: Any, config: TrainingConfig) -> None:
        self.method, self.peft_model, self.backend, self.config = method, peft_model, backend, config

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.peft_model.parameters() if p.requires_grad]

    def set_training(self, training: bool) -> None:
        """Nothing to switch: the PEFT model stays in eval mode (no dropout), like SPRING's frozen backbone."""

    def loss(self, batch: Sequence[TrainItem], rng: random.Random) -> torch.Tensor:
        # An n-row placeholder in T's slot: truncation and rng draws are then exactly PrefixTrainer's; PEFT
        # prepends the real tokens itself, in front of everything, which is where virtual_first puts them.
        placeholder = EmbeddingSegment(torch.empty(self.method.n, 0))
        inputs, answers = draw_inputs(self.method.template, batch, rng, self.backend, self.config, placeholder)
        rows = [[i for s in segments if isinstance(s, TokenSegment) for i in s.ids] for segments in inputs]
        width = max(len(row) for row in rows)
        # Right padding: PEFT drops position_ids, so positions are arange(L), right only when each row starts at 0.
        # The pad id is irrelevant (masked out and unlabelled).
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for b, (row, answer) in enumerate(zip(rows, answers, strict=True)):
            ids[b, : len(row)] = torch.tensor(row)
            mask[b, : len(row)] = 1
            labels[b, len(row) - len(answer) : len(row)] = torch.tensor(answer)  # only `` answer</s>`` is scored
        device = self.backend.model.device
        # HF's causal-LM loss is the mean over labelled tokens: the same reduction as harness.training.answer_loss.
        return self.peft_model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
