"""`harness retrieve`: cached retrieval runs for a suite and recall@k per dataset.

Runs go to ``<results>/retrieval/`` (see :mod:`harness.retrieval`); indexes to the user cache. Datasets that
are unavailable offline (msmarco) or that a retriever cannot serve (``oracle`` without shipped passages) are
reported as skipped when they come from a suite, and are an error (exit 2) when named on their own.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from harness.commands._common import DATA_DIR
from harness.commands._dataset_file import ANSWERS_FIELD, DATASET_FILE, DATASET_NAME, dataset_from_flags
from harness.console import console


def retrieve(
    suite: str | None = typer.Option(None, "--suite", help="suite(s) and/or dataset(s), comma-separated (e.g. qa12, nq)"),
    dataset_file: Path | None = DATASET_FILE,
    dataset_name: str | None = DATASET_NAME,
    answers_field: str | None = ANSWERS_FIELD,
    retriever: str = typer.Option("bm25", "--retriever", help="retriever(s), comma-separated (e.g. bm25,minilm)"),
    k: int = typer.Option(5, "--k", min=1, help="passages per question"),
    split: str = typer.Option("eval", "--split", help="eval or train"),
    corpus: str = typer.Option("wiki-offline", "--corpus", help="'wiki-offline' or a passage file"),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="N questions of each dataset, a seeded sample as `harness run --limit N` draws"
    ),
    first: bool = typer.Option(False, "--first", help="with --limit: the first N questions in file order instead"),
    seed: int = typer.Option(0, "--seed", help="seed of the --limit sample"),
    option: list[str] = typer.Option([], "--option", "-o", help="retriever option RETRIEVER.KEY=VALUE (repeatable)"),
    trec: bool = typer.Option(False, "--trec", help="also write each run in TREC run format"),
    results: Path | None = typer.Option(None, "--results", help="result store (default results/)"),
    data_dir: Path | None = DATA_DIR,
) -> None:
    """Retrieve top-k passages for every question of the suite (cached) and print recall@k per dataset."""
    from harness.datasets import get_task, load_examples, sample_examples
    from harness.errors import HarnessError, NotAvailableOffline
    from harness.options import check_targets, options_for, parse_options
    from harness.paths import results_dir, writable_folder
    from harness.plugins import RETRIEVERS
    from harness.retrieval import (
        NotApplicable,
        RetrieverContext,
        get_run,
        make_retriever,
    )
    from harness.suites import SUITES, resolve_suite

    if split not in ("eval", "train"):
        raise HarnessError(f"unknown split {split!r}; use eval or train")
    names = [name.strip() for name in retriever.split(",") if name.strip()]
    if not names:
        raise HarnessError("--retriever needs at least one retriever name")
    for name in names:
        RETRIEVERS.check(name)
    pairs = parse_options(option, shape="RETRIEVER.KEY=VALUE (e.g. minilm.faiss=HNSW32)")
    check_targets(pairs, (), names)
    options = {name: options_for(pairs, name) for name in names}
    own = dataset_from_flags(dataset_file, dataset_name, answers_field)
    if suite is None and own is None:
        raise HarnessError("pass --suite (e.g. --suite nq) or --dataset-file FILE to say which questions to retrieve for")
    suite_spec = ",".join(part for part in (suite, own) if part)
    datasets = resolve_suite(suite_spec)
    parts = [part.strip() for part in suite_spec.split(",") if part.strip()]
    explicit_only = all(part not in SUITES for part in parts)
    store = writable_folder(results_dir(results), "--results")
    out = console()
    table = Table(title=f"recall@{k} ({split} split, corpus {corpus})")
    for column in ("dataset", "questions", "retriever", f"recall@{k}", "run", "seconds"):
        table.add_column(column, justify="right" if column in ("questions", f"recall@{k}", "seconds") else "left")
    skipped: list[str] = []
    started = time.perf_counter()
    for dataset in datasets:
        task = get_task(dataset)
        try:
            if split == "train" and (task.held_out or not task.has_train_pool()):
                reason = "a held-out dataset" if task.held_out else "a dataset without a training pool"
                raise NotApplicable(f"{dataset} is {reason}: it has no train split")
            examples = sample_examples(load_examples(dataset, split, data_dir=data_dir), dataset, limit, seed, first)  # type: ignore[arg-type]  # checked above
        except (NotAvailableOffline, NotApplicable) as error:
            if explicit_only:
                raise
            skipped.append(f"{dataset}: {error}")
            table.add_row(dataset, "-", "-", "-", "[yellow]skipped[/yellow]", "-")
            continue
        for name in names:
            context = RetrieverContext(corpus=corpus, data_dir=data_dir, dataset=dataset, options=options[name])
            try:
                built = make_retriever(name, context)
            except NotApplicable as error:
                if explicit_only:
                    raise
                skipped.append(f"{dataset} / {name}: {error}")
                table.add_row(dataset, f"{len(examples):,}", name, "-", "[yellow]skipped[/yellow]", "-")
                continue
            run = get_run(built, dataset, split, examples, k, store, trec=trec)
            state = "cached" if run.cached else "computed"
            if run.cached and run.stored_k != k:
                state += f" (k={run.stored_k})"
            table.add_row(dataset, f"{len(examples):,}", name, f"{run.recall_at_k:.3f}", state, f"{run.seconds:.1f}")
    out.print(table)
    for line in skipped:
        out.print(f"[yellow]skipped[/yellow] {line}")
    out.print(f"runs under {store / 'retrieval'} ({time.perf_counter() - started:.1f}s)")


def register(app: typer.Typer) -> None:
    """Mount this command on ``app``."""
    app.command("retrieve")(retrieve)
