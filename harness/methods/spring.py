"""``spring``: SPRING's scalable, pluggable virtual tokens (arXiv 2405.19670).

n trainable embeddings (fp32 master copy) sit between the passages block and ``Question: {q}\\nAnswer:``; the
backbone stays frozen. Training draws k ~ U{1..n} per micro-batch (``fixed_k``: always n) and m ~ U{1..5}
passages per example, and scores only `` answer</s>``. Any prefix of the tokens works at inference; with no
tokens the input is exactly the base model's.

Speed: in ``[R; T; Q]`` the passages never depend on the tokens, so the passages block runs once under
``no_grad`` (its KV cache), and only ``[T; Q; A]`` runs with gradients, with logits at answer positions only.
``naive=True`` runs the whole sequence with gradients (the official code's way) for tests and benchmarks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from harness.errors import HarnessError
from harness.methods.base import Method
from harness.segments import EmbeddingSegment, Segment, build_segments, tokenize
from harness.templates import INSTRUCTION, SPRING, Template
from harness.training import TrainingConfig, TrainItem, answer_loss, draw_inputs
from harness.types import Example, Passage

INIT_TEXT = INSTRUCTION  # the paper initialises the tokens from the P1 instruction's embeddings
# The paper's placement ablation: where the tokens T sit relative to passages R and question Q.
PLACEMENTS: dict[str, Template] = {
    "rtq": SPRING,
    "trq": Template("spring-trq", "{T}{passages}Question: {q}\nAnswer:"),
    "rqt": Template("spring-rqt", "{passages}Question: {q}\n{T}Answer:"),
}
INITS = ("prompt", "random")


def initial_tokens(embedding: torch.nn.Embedding, tokenizer: Any, n: int, init: str, seed: int) -> torch.Tensor:
    """(n, d) fp32 start values: the embeddings of the P1 instruction repeated/truncated to n, or random."""
    weight = embedding.weight.detach().float()
    if init == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(n, weight.shape[1], generator=generator) * weight.std()
    ids = torch.tensor(tokenize(tokenizer, INIT_TEXT))
    return weight[ids.repeat(-(-n // len(ids)))[:n]].clone().cpu()


class Spring(Method):
    """Virtual tokens between passages and question; ``tokens`` is k, the prefix used at inference."""

    name = "spring"
    template = SPRING
    uses_tokens = True
    default_tokens = 50
    label_defaults = {"placement": "rtq", "fixed_k": False}

    def __init__(
        self,
        tokens: int = 50,
        *,
        n: int = 50,
        placement: str = "rtq",
        fixed_k: bool | str = False,
        init: str = "prompt",
        checkpoint: str | None = None,
        chat_template: bool = False,
    ) -> None:
        super().__init__(chat_template=chat_template)
        self.tokens, self.n = int(tokens), int(n)
        self.fixed_k = fixed_k if isinstance(fixed_k, bool) else str(fixed_k).lower() in ("1", "true", "yes")
        if placement not in PLACEMENTS:
            from harness.registry import unknown_name

            raise unknown_name("placement", placement, PLACEMENTS)
        if init not in INITS:
            raise HarnessError(f"unknown init {init!r}; use prompt or random")
        if not 1 <= self.tokens <= self.n:
            raise HarnessError(f"spring uses k = 1..n virtual tokens; got k={self.tokens} with n={self.n}")
        self.placement, self.init, self.checkpoint = placement, init, checkpoint
        self.template = PLACEMENTS[placement]
        self.weights: torch.Tensor | None = None  # (n, d) once prepared
        self.checkpoint_hash: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "tokens": self.tokens,
            "n": self.n,
            "placement": self.placement,
            "fixed_k": self.fixed_k,
            "init": self.init,
            "checkpoint_hash": self.checkpoint_hash,
            # Input truncation budgets all n tokens whatever k is (see build_input); keyed because it changes inputs.
            "reserve": self.n,
        }

    def prepare(self, context: Any, retriever: str) -> None:
        """Load or train the tokens for this backbone and retriever (see :mod:`harness.methods.trained`)."""
        from harness.methods.trained import spring_tokens

        self.weights, self.checkpoint_hash = spring_tokens(self, context, retriever)
        if self.weights.shape[0] < self.tokens:
            raise HarnessError(
                f"the {self.name} checkpoint ({getattr(self, 'checkpoint', None) or 'trained'}) has {self.weights.shape[0]} virtual tokens; "
                f"cannot use k={self.tokens}: pass --tokens 1..{self.weights.shape[0]}"
            )

    def virtual(self, k: int | None = None, weights: torch.Tensor | None = None, reserve: int = 0) -> EmbeddingSegment:
        rows = self.weights if weights is None else weights
        if rows is None:
            raise RuntimeError("spring tokens are not prepared: call prepare() first")
        return EmbeddingSegment(rows[: self.tokens if k is None else k], reserve=reserve)

    def build_input(self, example: Example, passages: Sequence[Passage], tokenizer: Any) -> list[Segment]:
        # Under --max-input-tokens the passages are cut as if all n tokens were plugged: every k of a sweep then
        # reads the same passage text, compares like with like, and shares one prefill of it.
        virtual = self.virtual(reserve=self.n)
        return build_segments(self.template, example.question, passages, tokenizer, virtual=virtual)


class SpringTrainer:
    """The :class:`harness.training.Trainable` of SPRING: an (n, d) fp32 parameter and the answer-only loss."""

    def __init__(self, method: Spring, backend: Any, initial: torch.Tensor, config: TrainingConfig, naive: bool = False) -> None:
        self.method, self.backend, self.config = method, backend, config
        self.weight = torch.nn.Parameter(initial.to(backend.model.device, torch.float32).clone())
        # Prefix-once needs the passages before the tokens; with T first the whole input depends on T.
        self.naive = naive or method.placement == "trq"
        self.all_logits = naive  # the official code's full-logits path, only when asked for (tests, benchmark)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.weight]

    def set_training(self, training: bool) -> None:
        """Nothing to switch: the frozen backbone always runs in eval mode."""

    def inputs(self, batch: Sequence[TrainItem], rng: random.Random) -> tuple[list[list[Segment]], list[tuple[int, ...]]]:
        """The segment lists (answer last) and answer ids of one micro-batch; k is drawn once per batch."""
        k = self.method.n if self.method.fixed_k else rng.randint(1, self.method.n)
        virtual = self.method.virtual(k, self.weight)
        return draw_inputs(self.method.template, batch, rng, self.backend, self.config, virtual)

    def loss(self, batch: Sequence[TrainItem], rng: random.Random) -> torch.Tensor:
        inputs, answers = self.inputs(batch, rng)
        return self.answer_loss(inputs, answers)

    def answer_loss(self, inputs: Sequence[Sequence[Segment]], answers: Sequence[tuple[int, ...]]) -> torch.Tensor:
        return answer_loss(self.backend, inputs, answers, prefix_once=not self.naive, all_logits=self.all_logits)
