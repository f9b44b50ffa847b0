"""``prompt-fewshot``: the manual prompt (P1) after N solved examples, each with its own retrieved passages.

Input: ``[shot 1] ... [shot N] {passages}P1\\nQuestion: {q}\\nAnswer:``, where a shot is the same P1 input for a
training question followed by `` {answer}\\n\\n`` (its first gold answer). Shots are drawn once per dataset,
seeded (``--seed`` and ``--option prompt-fewshot.seed``), from that dataset's training pool (``pool``: another
in-domain pool for held-out datasets, which have none); their passages come from the same retriever, m of them,
like the question's. The shot ids, the pool and the seed are in the result key.

Under ``--max-input-tokens`` the shots' passages are cut first (from the last shot backwards), the question's own
passages only after them; instructions, questions and answers are never cut.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.methods.base import Method, MethodContext
from harness.options import option
from harness.segments import SHOT, Segment, TokenSegment, build_segments, passage_segments, tokenize
from harness.templates import PROMPT, PROMPT_FEWSHOT, SHOT_ANSWER
from harness.types import Example, Passage


@dataclass(frozen=True)
class FewshotOptions:
    """prompt-fewshot's options (``--option prompt-fewshot.KEY=VALUE``); the shot count is ``--shots``."""

    seed: int = option(0, "seed of the shot draw (with --seed and the dataset)")
    pool: str | None = option(
        None, "the training pool the shots come from (default: the dataset's own; needed for held-out sets)"
    )

    def __post_init__(self) -> None:
        if self.pool is not None:
            from harness.plugins import DATASETS

            DATASETS.check(self.pool)


class PromptFewshot(Method):
    """P1 with ``shots`` solved examples before the question's passages."""

    name = "prompt-fewshot"
    template = PROMPT_FEWSHOT
    Options = FewshotOptions
    sweep = "shots"
    sweep_default = 3

    def __init__(self, shots: int = 3, *, chat_template: bool = False, **options: Any) -> None:
        super().__init__(chat_template=chat_template)
        self.options = self.Options(**options)
        self.shots, self.seed = int(shots), self.options.seed
        if self.shots < 1:
            raise HarnessError(f"prompt-fewshot needs at least 1 shot (got {self.shots}); 0 shots is --method prompt")
        self.pool = self.options.pool
        self.examples: tuple[tuple[Example, tuple[Passage, ...]], ...] | None = None  # drawn per dataset

    def params(self) -> dict[str, Any]:
        shot_ids = None if self.examples is None else [example.id for example, _ in self.examples]
        return {
            **super().params(),
            "shots": self.shots,
            "seed": self.seed,
            "pool": self.pool,
            "shot_ids": shot_ids,
            "shot_answer": SHOT_ANSWER,
        }

    def prepare_dataset(self, context: MethodContext, retriever: str, dataset: str) -> None:
        """Draw the shots from the training pool (seeded by the run seed, this method's seed and the dataset)."""
        from harness.datasets import load_examples

        pool_name = self.pool or dataset
        try:
            pool = load_examples(pool_name, "train", data_dir=context.data_dir)
        except HarnessError as error:
            hint = "" if self.pool else " (take shots from an in-domain pool with --option prompt-fewshot.pool=nq)"
            raise HarnessError(f"prompt-fewshot has no shots for {dataset}: {error}{hint}") from None
        if len(pool) < self.shots:
            raise HarnessError(f"prompt-fewshot wants {self.shots} shots but the {pool_name} training pool has {len(pool)}")
        self.pool = pool_name
        rng = random.Random(f"{context.seed}:{self.seed}:{dataset}:{pool_name}")
        chosen = [pool[i] for i in rng.sample(range(len(pool)), self.shots)]
        depth = context.max_passages if retriever != "none" else 0
        if depth:
            run = context.retrieval(retriever, pool_name, "train", chosen, depth)
            self.examples = tuple((e, tuple(run.passages(e.id))) for e in chosen)
        else:
            self.examples = tuple((e, ()) for e in chosen)

    def shot_segments(self, m: int, tokenizer: Any) -> list[Segment]:
        """The solved examples, each with its first ``m`` passages, as segments."""
        if self.examples is None:
            raise HarnessError(
                "prompt-fewshot draws its shots per dataset inside `harness run`; use harness run --suite DATASET --method prompt-fewshot"
            )
        segments: list[Segment] = []
        for example, passages in self.examples:
            solved = TokenSegment(tokenize(tokenizer, _solved(example)), SHOT)
            segments += [*passage_segments(tokenizer, passages[:m], shot=True), solved]
        return segments

    def build_input(self, example: Example, passages: Sequence[Passage], tokenizer: Any) -> list[Segment]:
        shots = self.shot_segments(len(passages), tokenizer)
        return build_segments(self.template, example.question, passages, tokenizer, shots=shots, chat_template=self.chat_template)

    def render(self, example: Example, passages: Sequence[Passage]) -> str:
        from harness.segments import format_passages

        if self.examples is None:
            raise HarnessError("prompt-fewshot has no shots yet: they are drawn per dataset inside `harness run`")
        shots = "".join(format_passages(p[: len(passages)]) + _solved(e) for e, p in self.examples)
        return self.template.render(q=example.question, passages=format_passages(passages), shots=shots)


def _solved(example: Example) -> str:
    """A solved example after its passages: P1, its question, and its first gold answer."""
    return PROMPT.render(q=example.question) + SHOT_ANSWER.format(answer=example.golds[0])
