"""`harness generate`: answer a few questions with one model, method and retriever; print a per-example table.

A quick look at the generation engine end to end (nothing is written to the result store)::

    harness generate --model smollm2-135m --dataset nq --limit 20 --method prompt --retriever oracle
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from harness.commands._common import BACKEND, DATA_DIR, DEVICE, DTYPE, check_backend
from harness.commands._dataset_file import ANSWERS_FIELD, DATASET_FILE, DATASET_NAME, dataset_from_flags
from harness.console import console


@dataclass(frozen=True)
class Row:
    """One answered question."""

    question: str
    golds: tuple[str, ...]
    prediction: str
    exact_match: float
    f1: float
    passages: int
    input_tokens: int


@dataclass(frozen=True)
class GenerateResult:
    rows: tuple[Row, ...]
    model: dict[str, str]
    method: dict[str, Any]
    retriever: dict[str, Any]
    decoding: dict[str, Any]
    first_input: str  # the first example's input as text, for --show-input
    load_seconds: float
    retrieve_seconds: float
    generate_seconds: float


def generate_answers(
    *,
    model: str,
    dataset: str,
    method: str,
    retriever: str,
    k: int,
    limit: int | None,
    split: str = "eval",
    seed: int = 0,
    first: bool = False,
    data_dir: Path | None = None,
    corpus: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    chat_template: bool = False,
    batch_size: int = 8,
    max_new_tokens: int = 32,
    max_input_tokens: int | None = None,
    backend: str = "hf",
) -> GenerateResult:
    """Load, retrieve, build inputs, generate and score (the work behind the command, for tests and scripts)."""
    from harness.datasets import load_examples, sample_examples
    from harness.errors import HarnessError
    from harness.generation import DecodingConfig, HFBackend
    from harness.metrics import exact_match, f1
    from harness.models import load_model
    from harness.plugins import METHODS
    from harness.retrieval import RetrieverContext, make_retriever
    from harness.segments import render_segments

    check_backend(backend)  # a missing vLLM is said before any work
    if k < 1:
        raise HarnessError(f"--k must be at least 1 (got {k})")
    if device is not None:
        from harness.models import check_device

        check_device(device)
    # Validate names before any heavy work; chat_template is passed only when asked (prompt-chat always uses it).
    method_object = METHODS.get(method)(**({"chat_template": True} if chat_template else {}))
    from harness.corpus import DEFAULT_CORPUS

    context = RetrieverContext(dataset=dataset, data_dir=data_dir, corpus=corpus or DEFAULT_CORPUS)
    retriever_object = make_retriever(retriever, context)
    examples = sample_examples(load_examples(dataset, split, data_dir=data_dir), dataset, limit, seed, first)  # type: ignore[arg-type]  # it refuses other splits

    started = time.perf_counter()
    engine: Any
    if backend == "vllm":
        from harness.vllm_backend import VLLMBackend, engine_spec

        engine = VLLMBackend.for_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        model_spec, tokenizer, engine_key = engine.model_spec, engine.tokenizer, tuple(engine_spec(engine.options).items())
    else:
        loaded = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code, device=device)
        engine, model_spec, tokenizer, engine_key = HFBackend(loaded), loaded.spec(), loaded.tokenizer, ()
    load_seconds = time.perf_counter() - started

    started = time.perf_counter()
    hits = retriever_object.search(examples, k) if method_object.uses_passages else [[] for _ in examples]
    passages = [[retriever_object.passage(hit.passage_id) for hit in example_hits] for example_hits in hits]
    retrieve_seconds = time.perf_counter() - started

    started = time.perf_counter()
    config = DecodingConfig(
        max_new_tokens=max_new_tokens, max_input_tokens=max_input_tokens, batch_size=batch_size, engine=engine_key
    )
    inputs = [method_object.build_input(e, p, tokenizer) for e, p in zip(examples, passages, strict=True)]
    generations = engine.generate(inputs, config)
    generate_seconds = time.perf_counter() - started

    rows = tuple(
        Row(
            e.question,
            tuple(e.golds),
            g.prediction,
            exact_match(g.prediction, e.golds),
            f1(g.prediction, e.golds),
            len(p),
            g.input_tokens,
        )
        for e, p, g in zip(examples, passages, generations, strict=True)
    )
    return GenerateResult(
        rows=rows,
        model=model_spec,
        method=method_object.spec(),
        retriever=retriever_object.spec(),
        decoding=config.spec(),
        first_input=render_segments(inputs[0], tokenizer) if inputs else "",
        load_seconds=load_seconds,
        retrieve_seconds=retrieve_seconds,
        generate_seconds=generate_seconds,
    )


def results_table(result: GenerateResult, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("question", max_width=48)
    table.add_column("gold", max_width=28)
    table.add_column("prediction", max_width=40)
    table.add_column("EM", justify="right")
    table.add_column("F1", justify="right")
    for index, row in enumerate(result.rows, start=1):
        golds = " | ".join(row.golds[:3]) + (f" (+{len(row.golds) - 3})" if len(row.golds) > 3 else "")
        table.add_row(
            str(index), row.question, golds, row.prediction or "[dim](empty)[/dim]", f"{row.exact_match:.0f}", f"{row.f1:.2f}"
        )
    n = max(len(result.rows), 1)
    table.add_section()
    table.add_row(
        "",
        f"[bold]mean over {len(result.rows)}[/bold]",
        "",
        "",
        f"[bold]{sum(r.exact_match for r in result.rows) / n:.3f}[/bold]",
        f"[bold]{sum(r.f1 for r in result.rows) / n:.3f}[/bold]",
    )
    return table


def generate(
    model: str = typer.Option("smollm2-135m", "--model", help="alias, hub id or local model folder"),
    dataset: str = typer.Option("nq", "--dataset", help="dataset name (harness ls datasets)"),
    dataset_file: Path | None = DATASET_FILE,
    dataset_name: str | None = DATASET_NAME,
    answers_field: str | None = ANSWERS_FIELD,
    method: str = typer.Option("prompt", "--method", help="closed-book, concat, prompt, ..."),
    retriever: str = typer.Option("none", "--retriever", help="none, oracle, bm25, minilm, ..."),
    k: int = typer.Option(5, "--k", min=0, help="passages per question"),
    limit: int | None = typer.Option(
        20, "--limit", min=0, help="N questions, a seeded sample as `harness run --limit N` draws (0 = all)"
    ),
    first: bool = typer.Option(False, "--first", help="with --limit: the first N questions in file order instead"),
    seed: int = typer.Option(0, "--seed", help="seed of the --limit sample"),
    split: str = typer.Option("eval", "--split", help="eval or train"),
    data_dir: Path | None = DATA_DIR,
    corpus: str | None = typer.Option(None, "--corpus", help="passage corpus for bm25/dense retrievers"),
    dtype: str = DTYPE,
    device: str | None = DEVICE,
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="allow the model folder's own code"),
    chat_template: bool = typer.Option(False, "--chat-template", help="wrap inputs in the model's chat template"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="inputs per batch (results do not depend on it)"),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1),
    max_input_tokens: int | None = typer.Option(
        None, "--max-input-tokens", help="cut passage text beyond this (default: model limit)"
    ),
    show_input: bool = typer.Option(False, "--show-input", help="print the first example's full input"),
    backend: str = BACKEND,
) -> None:
    """Answer --limit questions greedily; print question, gold, prediction, EM and F1 per example."""
    dataset = dataset_from_flags(dataset_file, dataset_name, answers_field) or dataset
    result = generate_answers(
        model=model,
        dataset=dataset,
        method=method,
        retriever=retriever,
        k=k,
        limit=limit or None,
        split=split,
        seed=seed,
        first=first,
        data_dir=data_dir,
        corpus=corpus,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        chat_template=chat_template,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        max_input_tokens=max_input_tokens,
        backend=backend,
    )
    out = console()
    if show_input:
        out.rule("first input")
        out.print(result.first_input, markup=False, highlight=False)
        out.rule()
    chat = " + chat template" if chat_template else ""
    title = f"{dataset}/{split} · {method}{chat} · retriever {retriever} (k={k}) · {model} ({result.model['dtype']})"
    out.print(results_table(result, title))
    tokens = sum(r.input_tokens for r in result.rows)
    with_passages = sum(1 for r in result.rows if r.passages)
    out.print(
        f"{len(result.rows)} questions ({with_passages} with passages, {tokens:,} input tokens): "
        f"load {result.load_seconds:.1f}s, retrieve {result.retrieve_seconds:.1f}s, "
        f"generate {result.generate_seconds:.1f}s · template {result.method['template']['hash']} · "
        f"weights {result.model['weights_hash'][:19]}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
