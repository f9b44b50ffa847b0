"""``oracle``: the gold passages a dataset ships for its questions (an upper bound for retrieval).

The oracle serves every dataset whose task card names a ``passages_file`` (read by its ``Task.read_passages``);
four do (see ``../shared/data/MANIFEST.md``):

* ``nq``: the gold DPR passage of ``nq_open_oracle/nq-open-oracle.jsonl.gz`` (2,655 of the 3,610 questions);
* ``hotpotqa``: the two supporting paragraphs of ``hotpotqa/dev_subsampled.jsonl`` (500 questions);
* ``squad``: the paragraph each question was asked about (``bigbench/squad_shifts/squaddev_v1.1.json``);
* ``coqa``: the story of the question (by the example's ``story_id`` metadata, else its question).

Questions are matched by normalised question text (SQuAD ``normalize_answer``); an unmatched question gets no
hits. Passage ids are content ids (:func:`harness.corpus.passage_id`), the ids ``wiki-offline`` gives the same
passages. Any other dataset has no gold passages: asking for it is a :class:`NotApplicable` error.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.corpus import passage_id
from harness.errors import HarnessError
from harness.metrics import normalize_answer
from harness.paths import data_dir as resolve_data_dir
from harness.plugins import DATASETS
from harness.retrieval import NotApplicable, RetrieverContext
from harness.retriever import Retriever
from harness.types import Example, Hit, Passage


def _with_passages() -> list[str]:
    """The datasets whose task card names a passages file (Task.passages_file): the oracle serves those."""
    return [name for name in DATASETS.names() if DATASETS.get(name).passages_file]


@functools.lru_cache(maxsize=8)
def _load(dataset: str, data_dir: Path) -> tuple[dict[str, tuple[str, ...]], dict[str, Passage], str]:
    """(normalised key -> gold passage ids, id -> passage, sha256 of the source file)."""
    task = DATASETS.get(dataset)
    source = data_dir / task.passages_file
    if not source.is_file():
        raise HarnessError(f"oracle for {dataset}: missing {source}; pass --data-dir DIR")
    gold: dict[str, list[str]] = {}
    passages: dict[str, Passage] = {}
    for keys, title, text in task.read_passages(data_dir, gold_only=True):
        pid = passage_id(title, text)
        passages.setdefault(pid, Passage(pid, title, text))
        for key in keys:
            ids = gold.setdefault(normalize_answer(key), [])
            if pid not in ids:
                ids.append(pid)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return {key: tuple(ids) for key, ids in gold.items() if key}, passages, digest


class Oracle(Retriever):
    """Gold passages of one dataset, matched to questions by normalised text."""

    name = "oracle"

    def __init__(self, dataset: str, data_dir: Path) -> None:
        self.dataset = dataset
        self._gold, self._passages, self._source_sha256 = _load(dataset, data_dir)

    def spec(self) -> dict[str, Any]:
        return {
            "retriever": "oracle",
            "dataset": self.dataset,
            "corpus": f"{DATASETS.get(self.dataset).passages_file}@sha256:{self._source_sha256}",
            "match": "normalize_answer(question)",
            "version": 1,
        }

    def _gold_ids(self, example: Example) -> tuple[str, ...]:
        story = example.metadata.get("story_id")  # CoQA: its story, which the questions alone do not name
        if story:
            return self._gold.get(normalize_answer(str(story)), ())
        return self._gold.get(normalize_answer(example.question), ())

    def search(self, examples: Sequence[Example], k: int) -> list[list[Hit]]:
        return [[Hit(pid, 1.0, rank) for rank, pid in enumerate(self._gold_ids(example)[:k], start=1)] for example in examples]

    def passage(self, passage_id: str) -> Passage:
        if passage_id not in self._passages:
            raise HarnessError(f"passage {passage_id!r} is not a gold passage of {self.dataset}")
        return self._passages[passage_id]


def oracle(context: RetrieverContext) -> Oracle:
    context.check_options("oracle", ())
    if context.dataset is None:
        raise HarnessError("the oracle retriever needs a dataset (its gold passages are per dataset)")
    if context.dataset not in _with_passages():
        raise NotApplicable(
            f"oracle: {context.dataset} ships no gold passages; the oracle works for {', '.join(_with_passages())}"
        )
    return Oracle(context.dataset, resolve_data_dir(context.data_dir))
