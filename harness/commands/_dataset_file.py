"""The ``--dataset-file`` flags that ``run``, ``generate`` and ``retrieve`` share (see :mod:`harness.dataset_file`)."""

from __future__ import annotations

from pathlib import Path

import typer

DATASET_FILE = typer.Option(
    None,
    "--dataset-file",
    help="your questions: JSONL of FlashRAG {id, question, golden_answers} or NQ-open {question, answer}",
)
DATASET_NAME = typer.Option(None, "--dataset-name", help="name of the --dataset-file dataset (default: file stem)")
ANSWERS_FIELD = typer.Option(
    None, "--answers-field", help="the --dataset-file field holding the answer list (default: golden_answers, answer)"
)


def dataset_from_flags(dataset_file: Path | None, dataset_name: str | None, answers_field: str | None) -> str | None:
    """Register the ``--dataset-file`` dataset and return its name; None without the flag."""
    from harness.errors import HarnessError

    if dataset_file is None:
        if dataset_name is not None or answers_field is not None:
            flag = "--dataset-name" if dataset_name is not None else "--answers-field"
            raise HarnessError(f"{flag} describes a --dataset-file; pass --dataset-file FILE with it")
        return None
    from harness.dataset_file import register_dataset_file

    return register_dataset_file(dataset_file, dataset_name, answers_field)
