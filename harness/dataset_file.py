"""A dataset from a file named on the command line (``--dataset-file``): your own questions, no task file needed.

The file is JSON lines in FlashRAG's dataset format, ``{"id", "question", "golden_answers": [...]}``, or the
NQ-open form ``{"question", "answer": [...]}`` (a record without ``id`` is named by its line number). It becomes
a dataset of the process's registry under ``--dataset-name`` (default: the file's stem), scored with the same
metrics as the built-in QA datasets. It is evaluation-only: nothing trains on it. The file's sha256 is part of
every cell key built on it (:attr:`harness.spec.CellSpec.dataset_sha256`), so an edited file is a new dataset.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from harness.errors import HarnessError
from harness.formats import read_jsonl, require_answers, require_text
from harness.plugins import DATASETS
from harness.task import Task
from harness.types import Example

ANSWER_FIELDS = ("golden_answers", "answer")  # FlashRAG's, then NQ-open's; the first a record has is read
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class FileTask(Task):
    """The task card of a ``--dataset-file`` dataset (one subclass per registered file)."""

    eval_split = "file"
    held_out = True  # never trained on: it has no training pool
    path: ClassVar[Path]
    file_sha256: ClassVar[str]
    answers_field: ClassVar[str | None] = None  # None: the first of ANSWER_FIELDS each record has

    @classmethod
    def own_root(cls) -> Path:
        return cls.path.parent

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        for line, record in read_jsonl(cls.path):
            question = require_text(record, "question", cls.path, line)
            answers = require_answers(record, cls._answers_key(record, line), cls.path, line)
            record_id = record.get("id", line)
            if not isinstance(record_id, (str, int)) or isinstance(record_id, bool) or str(record_id).strip() == "":
                raise HarnessError(f"{cls.path}:{line}: 'id' must be a non-empty string or number, or be left out")
            yield Example(f"{cls.name}/{record_id}", question, answers, {"source": f"{cls.path.name}:{line}"})

    @classmethod
    def _answers_key(cls, record: dict, line: int) -> str:
        if cls.answers_field is not None:
            return cls.answers_field
        found = next((key for key in ANSWER_FIELDS if isinstance(record, dict) and key in record), None)
        if found is None:
            raise HarnessError(
                f"{cls.path}:{line}: record has no 'golden_answers' (FlashRAG) or 'answer' (NQ-open) list; "
                "name its answers field with --answers-field FIELD"
            )
        return found


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def register_dataset_file(path: str | Path, name: str | None = None, answers_field: str | None = None) -> str:
    """Register ``path`` as dataset ``name`` (default: the file's stem) for this process; returns the name.

    Registering the same name again (another file, or the same file edited) replaces the earlier file dataset; a
    built-in dataset's name is refused.
    """
    from harness.datasets import forget_loaded

    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise HarnessError(f"--dataset-file {path}: no such file; pass a JSONL file of {{id, question, golden_answers}}")
    name = name or file.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
    if not _NAME.match(name):
        raise HarnessError(f"dataset name {name!r} must be letters, digits, '_', '-' or '.'; pass --dataset-name NAME")
    if name in DATASETS and not issubclass(DATASETS.get(name), FileTask):
        raise HarnessError(f"{name!r} is a built-in dataset; give your file another name with --dataset-name NAME")
    if answers_field is not None and not answers_field.strip():
        raise HarnessError("--answers-field needs a field name, e.g. --answers-field golden_answers")
    card = type(
        f"FileTask_{name}",
        (FileTask,),
        {
            "name": name,
            "title": f"{file.name} (--dataset-file)",
            "eval_files": (file.name,),
            "path": file,
            "file_sha256": file_sha256(file),
            "answers_field": answers_field,
            "license": "user-provided",
        },
    )
    DATASETS.register(name, card, replace=name in DATASETS)
    forget_loaded()  # a replaced file may keep its folder and name
    return name


__all__ = ["ANSWER_FIELDS", "FileTask", "register_dataset_file"]
