"""An example harness plugin: one dataset, one retriever and one method, registered by entry points only.

* ``capitals``: eight capital-city questions shipped in this package (FlashRAG's ``{id, question,
  golden_answers}`` JSONL), evaluation-only; the file's sha256 is keyed, so editing it makes a new dataset.
* ``random-passages``: k passages drawn from the corpus by a seeded hash of the question, a lower bound that any
  real retriever should beat (``--option random-passages.seed=N``).
* ``prompt-reversed``: the paper's prompt with the passages in reverse rank order, so the best passage sits next
  to the question.

Nothing here edits harness; ``pyproject.toml`` names the three objects under the ``harness.*`` entry-point groups.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.corpus import Corpus, open_corpus
from harness.errors import HarnessError
from harness.formats import read_jsonl, require_answers, require_text
from harness.methods.base import Method
from harness.retrieval import RetrieverContext
from harness.retriever import Retriever
from harness.segments import Segment, build_segments
from harness.task import Task
from harness.templates import PROMPT
from harness.types import Example, Hit, Passage

HERE = Path(__file__).resolve().parent


class Capitals(Task):
    """Capital cities of eight countries (evaluation only)."""

    name = "capitals"
    title = "Capitals (example plugin)"
    eval_split = "test"
    eval_count = 8
    eval_files = ("capitals.jsonl",)
    held_out = True
    license = "CC0 (facts)"
    file_sha256 = hashlib.sha256((HERE / "capitals.jsonl").read_bytes()).hexdigest()

    @classmethod
    def own_root(cls) -> Path:
        return HERE

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        path = HERE / cls.eval_files[0]
        for line, record in read_jsonl(path):
            question = require_text(record, "question", path, line)
            yield Example(f"capitals/{record['id']}", question, require_answers(record, "golden_answers", path, line))


class RandomPassages(Retriever):
    """k distinct passages per question, drawn by a hash of (seed, question): deterministic, and blind to content."""

    name = "random-passages"

    def __init__(self, corpus: Corpus, seed: int) -> None:
        self.corpus = corpus
        self.seed = seed

    def spec(self) -> dict[str, Any]:
        return {"retriever": self.name, "corpus": self.corpus.fingerprint, "seed": self.seed}

    def search(self, examples: Sequence[Example], k: int) -> list[list[Hit]]:
        if k < 1:
            raise HarnessError(f"k must be at least 1 (got {k})")
        results = []
        for example in examples:
            digest = hashlib.sha256(f"{self.seed}\0{example.question}".encode()).digest()
            rows = random.Random(digest).sample(range(len(self.corpus)), min(k, len(self.corpus)))
            ids = self.corpus.ids_at(rows)
            results.append([Hit(pid, 1.0 / rank, rank) for rank, pid in enumerate(ids, start=1)])
        return results

    def passage(self, passage_id: str) -> Passage:
        return self.corpus.passage(passage_id)


def random_passages(context: RetrieverContext) -> RandomPassages:
    """random-passages: k passages drawn from the corpus by a seeded hash of the question (a lower bound)."""
    context.check_options("random-passages", ("seed",))
    return RandomPassages(open_corpus(context.corpus), seed=context.option("seed", 0, int))


class PromptReversed(Method):
    """The paper's prompt P1 with the retrieved passages in reverse rank order (the best one last)."""

    name = "prompt-reversed"
    template = PROMPT

    def params(self) -> dict[str, Any]:
        return {**super().params(), "passage_order": "reversed"}

    def build_input(self, example: Example, passages: Sequence[Passage], tokenizer: Any) -> list[Segment]:
        return build_segments(self.template, example.question, passages[::-1], tokenizer, chat_template=self.chat_template)

    def render(self, example: Example, passages: Sequence[Passage]) -> str:
        return super().render(example, passages[::-1])
