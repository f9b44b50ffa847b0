"""Loading a task's examples: local raw files first, the hub when reachable, a clear error otherwise.

Two harness-level splits exist: ``"eval"`` (the split the paper evaluates on, minus any carve-out) and
``"train"`` (the training pool). The training pool never shares a normalised question with the evaluation
split: questions that appear in both are dropped from training.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import HarnessError, NotAvailableOffline
from harness.hub import hub_online
from harness.metrics import normalize_answer
from harness.paths import data_dir as resolve_data_dir
from harness.plugins import DATASETS
from harness.task import Task
from harness.types import Example

Split = Literal["eval", "train"]
Source = Literal["auto", "local", "hub"]
SPLITS: tuple[str, ...] = ("eval", "train")
SOURCES: tuple[str, ...] = ("auto", "local", "hub")


def get_task(name: str) -> type[Task]:
    return DATASETS.get(name)


def in_carve_out(question: str, modulus: int) -> bool:
    """True when ``question`` belongs to the training carve-out (stable across runs and machines)."""
    digest = hashlib.sha256(normalize_answer(question).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % modulus == 0


def load_examples(
    name: str,
    split: Split = "eval",
    *,
    data_dir: str | Path | None = None,
    source: Source = "auto",
    limit: int | None = None,
) -> list[Example]:
    """The examples of dataset ``name`` for ``split`` (first ``limit`` of them, in file order)."""
    if split not in SPLITS:
        raise HarnessError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if source not in SOURCES:
        raise HarnessError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    task = get_task(name)
    if split == "train" and task.held_out:
        raise HarnessError(f"{name} is a held-out dataset: it is never used for training")
    root = task.own_root() or (None if source == "hub" else _resolve_data_dir_if_present(data_dir, required=source == "local"))
    examples = _load(task.name, split, root, source)
    return list(examples if limit is None else examples[:limit])


def _resolve_data_dir_if_present(data_dir: str | Path | None, required: bool) -> Path | None:
    try:
        return resolve_data_dir(data_dir)
    except HarnessError:
        if required or data_dir is not None:
            raise
        return None


def resolve_source(task: type[Task], root: Path | None, source: Source) -> Literal["local", "hub"]:
    """Which source ``source`` means for ``task``; raises a one-line error if neither can serve it."""
    local_ok = root is not None and task.available_offline(root)
    if source == "auto":
        if local_ok:
            return "local"
        if task.hub is not None and task.eval_files and not hub_online():
            source = "local"  # neither works: the missing local files are the useful thing to report
        else:
            source = "hub"
    if source == "local":
        if not task.eval_files:
            raise NotAvailableOffline(f"{task.name} is not available offline: it is hub-only (--source hub)")
        if not local_ok:
            missing = task.missing_files(root) if root is not None else list(task.eval_files)
            raise HarnessError(
                f"{task.name}: missing {', '.join(missing)} under {root or 'the data directory'}; "
                "pass --data-dir DIR pointing at the raw data folder"
            )
        return "local"
    if task.hub is None:
        raise HarnessError(f"{task.name} has no hub source; provide its local files under the data directory")
    if not hub_online():
        raise NotAvailableOffline(
            f"{task.name} is not available offline: it needs the Hugging Face hub ({task.hub.repo}), which cannot be reached"
        )
    return "hub"


def forget_loaded() -> None:
    """Drop the loaded examples of this process (a ``--dataset-file`` dataset was registered again)."""
    _load.cache_clear()


@functools.lru_cache(maxsize=64)
def _load(name: str, split: Split, root: Path | None, source: Source) -> tuple[Example, ...]:
    task = get_task(name)
    if resolve_source(task, root, source) == "hub":
        return _load_hub(task, split)
    assert root is not None
    evaluation = list(task.read_eval(root))
    _check_examples(task, evaluation, task.eval_files, root)
    if task.carve_modulus is not None:
        carved = [e for e in evaluation if in_carve_out(e.question, task.carve_modulus)]
        evaluation = [e for e in evaluation if not in_carve_out(e.question, task.carve_modulus)]
    if split == "eval":
        return tuple(evaluation)
    if task.train_files:
        pool = list(task.read_train(root))
    elif task.carve_modulus is not None:
        pool = carved
    else:
        raise HarnessError(f"{task.name} has no training pool (no training-side file and no carve-out)")
    _check_examples(task, pool, task.train_files or task.eval_files, root)
    seen = {normalize_answer(e.question) for e in evaluation}
    return tuple(e for e in pool if normalize_answer(e.question) not in seen)


def _check_examples(task: type[Task], examples: list[Example], files: Sequence[str], root: Path) -> None:
    """What every reader must deliver: some examples, unique ids, question text and answer strings."""
    where = ", ".join(str(root / f) for f in files)
    if not examples:
        raise HarnessError(f"{task.name}: {where} holds no examples; restore the dataset's original file")
    _check_unique_ids(task.name, examples, where)
    for example in examples:
        if not isinstance(example.question, str) or not example.question.strip():
            raise HarnessError(f"{task.name}: example {example.id} in {where} has no question text; fix that record")
        if not example.golds or not all(isinstance(gold, str) for gold in example.golds):
            raise HarnessError(
                f"{task.name}: example {example.id} in {where} needs a non-empty list of answer strings, has {list(example.golds)!r}"
            )


def _check_unique_ids(name: str, examples: list[Example], where: str) -> None:
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i, count in Counter(ids).items() if count > 1)
        raise HarnessError(
            f"{name}: example id {duplicate!r} occurs twice in {where}; every record needs a unique id "
            "(restore the dataset's original file, or fix the task reader's ids)"
        )


def _load_hub(task: type[Task], split: Split) -> tuple[Example, ...]:
    import datasets  # heavy import, only for the hub path

    assert task.hub is not None
    hub_split = task.hub.eval_split if split == "eval" else task.hub.train_split
    if hub_split is None:
        raise HarnessError(f"{task.name} has no training split on the hub")
    rows = datasets.load_dataset(task.hub.repo, task.hub.config, split=hub_split)
    return tuple(
        Example(
            id=f"{task.name}/hub-{hub_split}/{row.get('id', index)}",
            question=row["question"],
            golds=list(row["golden_answers"]),
            metadata={"source": f"hub:{task.hub.repo}/{task.hub.config}/{hub_split}"},
        )
        for index, row in enumerate(rows)
    )


@dataclass(frozen=True)
class DatasetSummary:
    """What ``harness ls datasets`` and ``harness data check`` report for one dataset."""

    name: str
    title: str
    eval_split: str
    n_eval: int | None
    n_train: int | None  # None: no training pool (held out, or none ships)
    metrics: tuple[str, ...]
    held_out: bool
    source: str  # "local", "hub", or "unavailable"
    problem: str | None  # one line, when the dataset cannot be loaded


def summarize(name: str, data_dir: str | Path | None = None) -> DatasetSummary:
    """Load ``name`` (local files first) and count its splits; problems are reported, not raised."""
    task = get_task(name)
    root = task.own_root() or _resolve_data_dir_if_present(data_dir, required=data_dir is not None)
    n_eval = n_train = None
    problem = None
    try:
        source = resolve_source(task, root, "auto")
        n_eval = len(_load(name, "eval", root, "auto"))
        if task.has_train_pool() and not task.held_out:
            n_train = len(_load(name, "train", root, "auto"))
    except HarnessError as error:
        source, problem = "unavailable", str(error)  # type: ignore[assignment]  # the summary's third source value
    return DatasetSummary(
        name=name,
        title=task.title,
        eval_split=task.eval_split,
        n_eval=n_eval,
        n_train=n_train,
        metrics=task.metrics,
        held_out=task.held_out,
        source=source,
        problem=problem,
    )


def sample_examples(
    examples: list[Example], dataset: str, limit: int | None, seed: int = 0, first: bool = False
) -> list[Example]:
    """``limit`` of ``examples`` (all when ``None`` or at least as many): a sample drawn with ``seed`` and kept in
    file order, or with ``first`` the first ``limit``. The one meaning of ``--limit`` for run, generate and
    retrieve, so `harness generate --dataset nq --limit 20` shows the questions `harness run --limit 20` scores."""
    if limit is None or limit >= len(examples):
        return examples
    if first:
        return examples[:limit]
    chosen = sorted(random.Random(f"{seed}:{dataset}").sample(range(len(examples)), limit))
    return [examples[i] for i in chosen]
