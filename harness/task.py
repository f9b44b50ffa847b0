"""What a QA dataset is to the harness: a task card plus readers for its raw files.

A task file in ``tasks/`` subclasses :class:`Task`, fills in the card fields and implements ``read_eval``
(and ``read_train`` where the data directory ships a training-side file). Splitting, carving a training pool,
de-duplication against the evaluation set and hub loading are done once, in :mod:`harness.datasets`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.types import Example


@dataclass(frozen=True)
class HubSource:
    """Where the task lives on the Hugging Face hub (FlashRAG's dataset collection by default)."""

    config: str
    eval_split: str
    train_split: str | None = None
    repo: str = "RUC-NLPIR/FlashRAG_datasets"


class Task:
    """A QA task card. Subclasses set the class attributes and implement the readers."""

    name: ClassVar[str]
    title: ClassVar[str]
    eval_split: ClassVar[str]  # the split the paper evaluates on ("test", "dev")
    # Expected counts, checked by the shared dataset contract test (tests/test_tasks.py) for every registered task
    # with local files: evaluation questions, and the training pool's size (None: no training pool).
    eval_count: ClassVar[int | None] = None
    train_count: ClassVar[int | None] = None
    eval_files: ClassVar[tuple[str, ...]] = ()  # relative to the data dir; empty = hub only
    train_files: ClassVar[tuple[str, ...]] = ()  # training-side files (disjoint source), if any
    metrics: ClassVar[tuple[str, ...]] = ("exact_match", "f1", "accuracy")
    held_out: ClassVar[bool] = False  # never used for training (popqa, fermi, musique, bamboogle)
    # When no training-side file exists, 1/carve_modulus of the evaluation questions (chosen by a hash of the
    # normalised question) is reserved for training and removed from evaluation.
    carve_modulus: ClassVar[int | None] = None
    hub: ClassVar[HubSource | None] = None
    # A file of the passages the questions were asked about (the oracle retriever's source; some also feed the
    # wiki-offline corpus), read by read_passages; None: the dataset ships none.
    passages_file: ClassVar[str | None] = None
    license: ClassVar[str] = ""
    # The sha256 of the one file a dataset named on the command line is (harness.dataset_file); None for the
    # built-in datasets, whose files are pinned by the data directory's manifest.
    file_sha256: ClassVar[str | None] = None

    @classmethod
    def own_root(cls) -> Path | None:
        """The folder ``eval_files`` are relative to when it is not the data directory (a ``--dataset-file``)."""
        return None

    @classmethod
    def available_offline(cls, data_dir: Path) -> bool:
        return bool(cls.eval_files) and all((data_dir / f).is_file() for f in cls.eval_files)

    @classmethod
    def missing_files(cls, data_dir: Path) -> list[str]:
        return [f for f in cls.eval_files + cls.train_files if not (data_dir / f).is_file()]

    @classmethod
    def has_train_pool(cls) -> bool:
        return bool(cls.train_files) or cls.carve_modulus is not None

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        """Yield every evaluation-file example with a stable id (before any carve-out)."""
        raise NotImplementedError(f"{cls.name} has no local evaluation file")

    @classmethod
    def read_passages(cls, data_dir: Path, gold_only: bool = True) -> Iterator[tuple[tuple[str, ...], str, str]]:
        """Yield ``(keys, title, text)`` for the passages of ``passages_file``: ``keys`` are the questions (or story
        ids) a passage answers; ``gold_only`` keeps only those the file marks gold or supporting, where it marks any."""
        raise NotImplementedError(f"{cls.name} ships no passages")

    @classmethod
    def read_train(cls, data_dir: Path) -> Iterator[Example]:
        """Yield the training-side file's examples (only called when ``train_files`` is set)."""
        raise NotImplementedError(f"{cls.name} ships no training-side file")
