"""`harness preserve`: general-ability suites (MMLU, BoolQ, CommonsenseQA, GSM8K) through lm-evaluation-harness.

Each (task, shots, method) is one cell in the result store; finished cells are skipped. The table printed at the
end is the paper's Table 2 layout (see :func:`harness.preserve.preservation_table`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from harness.console import console
from harness.registry import unknown_name

FORMATS = ("table", "md", "csv", "json")
# Which (plugged) variants each method evaluates: SPRING is evaluated unplugged (= the base model) and plugged.
METHOD_VARIANTS: dict[str, tuple[bool | None, ...]] = {"base": (None,), "lora": (None,), "spring": (False, True)}


def preservation_rich_table(frame: Any, title: str = "") -> Table:
    table = Table(title=title or None, title_justify="left")
    table.add_column(frame.index.name or "task")
    for column in frame.columns:
        table.add_column(str(column), justify="right")
    for index, row in frame.iterrows():
        cells = []
        for column, value in row.items():
            if value != value:  # NaN
                cells.append("-")
            elif column == "n":
                cells.append(str(int(value)))
            elif str(column).startswith("Δ"):
                cells.append(f"{value:+.1f}")
            else:
                cells.append(f"{value:.1f}")
        table.add_row(str(index), *cells)
    return table


def print_preservation(results: Path, model: str | None = None, fmt: str = "table") -> None:
    """Print the Table 2 layout from the store (also the body of `harness leaderboard --preserve`)."""
    from harness.preserve import preservation_table, render_preservation
    from harness.store import Store

    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)
    frame = preservation_table(Store(results), model=model)
    if fmt == "table":
        out = console()
        out.print("Preservation suites (lm-eval): accuracy / exact match x100; Δ = method - base on the same documents")
        out.print(preservation_rich_table(frame, ""))
    else:
        print(render_preservation(frame, fmt), end="")


def preserve_command(
    tasks: str = typer.Option("mmlu,boolq,csqa,gsm8k", "--tasks", help="comma-separated: mmlu, boolq, csqa, gsm8k"),
    method: str = typer.Option("base", "--method", help="comma-separated: base, lora, spring"),
    shots: str | None = typer.Option(
        None,
        "--shots",
        help="shots for every task ('0,5') or per task ('mmlu=0,5;csqa=4'); default: the paper's "
        "(mmlu 0,5; boolq 0; csqa 0,4; gsm8k 8)",
    ),
    limit: int | None = typer.Option(
        None,
        "--limit",
        min=1,
        help="N documents per task (the first N; MMLU: spread round-robin over its 57 subjects, "
        "so 57*m = lm-eval's per-subject --limit m); on a CPU use e.g. --limit 20",
    ),
    model: str = typer.Option("smollm2-135m", "--model", help="backbone: alias, local folder or hub id"),
    dtype: str = typer.Option("auto", "--dtype", help="auto, fp32, bf16 or fp16"),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="trained LoRA / SPRING checkpoint"),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="lm-eval batch size (not part of the keys)"),
    source: str = typer.Option("local", "--source", help="local (shipped tasks on the raw files) or hub (stock lm-eval tasks)"),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="raw-data folder (default: $HARNESS_DATA_DIR or ../shared/data)"
    ),
    results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
    force: bool = typer.Option(False, "--force", help="recompute cells that are already complete"),
    lm_eval_cache: Path | None = typer.Option(
        None, "--lm-eval-cache", help="folder for lm-eval's response cache (keyed by model + method hash); off by default"
    ),
    fmt: str = typer.Option("table", "--format", help="table, md, csv or json"),
) -> None:
    """Run the preservation suites (SPRING Table 2) through lm-evaluation-harness and print task x method."""
    from harness.models import load_model
    from harness.paths import writable_folder
    from harness.preserve import (
        SOURCES,
        parse_methods,
        parse_shots,
        parse_tasks,
        require_method,
        resolve_preserve_model,
        run_preservation,
    )
    from harness.store import Store

    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)
    writable_folder(results, "--results")
    if source not in SOURCES:
        raise unknown_name("task source", source, SOURCES)
    task_names = parse_tasks(tasks)
    method_names = parse_methods(method)
    shots_of = parse_shots(shots, task_names)
    for name in method_names:
        require_method(name)  # fail before loading the model when a method has no checkpoint hook
    out = console()
    store = Store(results)
    loaded = load_model(model, dtype=dtype)
    options = {"checkpoint": checkpoint} if checkpoint is not None else {}
    # Resolve every method first, so a missing checkpoint fails before hours of evaluation.
    variants = []
    for name in method_names:
        for plugged in METHOD_VARIANTS[name]:
            extra = dict(options) if plugged is None else {**options, "plugged": plugged}
            variants.append(resolve_preserve_model(name, loaded, store, **extra))
    for model_object, method_spec, virtual_tokens in variants:
        started = time.perf_counter()
        run_preservation(
            loaded,
            method_spec,
            task_names,
            shots_of,
            limit,
            store,
            virtual_tokens=virtual_tokens,
            force=force,
            model=model_object,
            batch_size=batch_size,
            data_dir=data_dir,
            source=source,
            progress=lambda message: out.print(f"[dim]{message}[/dim]"),
            lm_eval_cache=lm_eval_cache,
        )
        out.print(f"[dim]{method_spec['name']}: {time.perf_counter() - started:.0f} s[/dim]")
    print_preservation(results, model=loaded.model_id, fmt=fmt)


def register(app: typer.Typer) -> None:
    app.command("preserve")(preserve_command)
