"""`harness preserve`: general-ability suites (MMLU, BoolQ, CommonsenseQA, GSM8K) through lm-evaluation-harness.

Each (task, shots, method) is one cell in the result store; finished cells are skipped. The table printed at the
end is the paper's Table 2 layout (see :func:`harness.preserve.preservation_table`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import ProgressColumn
from rich.table import Table
from rich.text import Text

from harness.activity import reporting
from harness.commands._common import DATA_DIR, DEVICE, DTYPE
from harness.console import console, rich_reporter
from harness.registry import unknown_name
from harness.verbosity import debug as verbosity_debug

FORMATS = ("table", "md", "csv", "json")
# Which (plugged) variants each method evaluates: SPRING is evaluated unplugged (= the base model) and plugged.
METHOD_VARIANTS: dict[str, tuple[bool | None, ...]] = {"base": (None,), "lora": (None,), "spring": (False, True)}


def preservation_rich_table(frame: Any, title: str = "") -> Table:
    """The Table 2 frame with its CIs (``preservation_table(..., intervals=True)``) as a rich table."""
    from harness.preserve import with_intervals_as_text

    shown = with_intervals_as_text(frame)
    table = Table(title=title or None, title_justify="left")
    table.add_column(shown.index.name or "task")
    for column in shown.columns:
        table.add_column(str(column), justify="right")
    for index, row in shown.iterrows():
        table.add_row(str(index), *(str(value) for value in row))
    return table


def print_preservation(results: Path, model: str | None = None, fmt: str = "table", note: str = "") -> None:
    """Print the Table 2 layout from the store (also the body of `harness leaderboard --preserve`)."""
    from harness.preserve import preservation_table, render_preservation
    from harness.store import Store

    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)
    frame = preservation_table(Store(results), model=model, intervals=True)
    if fmt == "table":
        out = console()
        out.print(
            "Preservation suites (lm-eval): accuracy / exact match x100 [95% bootstrap CI]; "
            "Δ = method - base on the same documents [paired bootstrap CI]" + (f" | {note}" if note else ""),
            soft_wrap=True,
            markup=False,  # the brackets are text, not rich markup
            highlight=False,
        )
        out.print(preservation_rich_table(frame, ""))
    else:
        print(render_preservation(frame, fmt), end="")


def preserve_command(
    tasks: str = typer.Option("mmlu,boolq,csqa,gsm8k", "--tasks", help="comma-separated: mmlu, boolq, csqa, gsm8k"),
    method: str | None = typer.Option(
        None,
        "--method",
        help="comma-separated: base, lora, spring (default: base and every method with a checkpoint in the store)",
    ),
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
        "so 57*m = lm-eval's per-subject --limit m); default on a CPU: the power rule's sample (see the header)",
    ),
    full: bool = typer.Option(False, "--full", help="every document of every task (no CPU budget)"),
    verbose: bool = typer.Option(False, "--verbose", help="keep lm-eval's and datasets' own progress bars"),
    model: str = typer.Option("smollm2-135m", "--model", help="backbone: alias, local folder or hub id"),
    dtype: str = DTYPE,
    device: str | None = DEVICE,
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="trained LoRA / SPRING checkpoint"),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="lm-eval batch size (not part of the keys)"),
    source: str = typer.Option("local", "--source", help="local (shipped tasks on the raw files) or hub (stock lm-eval tasks)"),
    data_dir: Path | None = DATA_DIR,
    results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
    force: bool = typer.Option(False, "--force", help="recompute cells that are already complete"),
    lm_eval_cache: Path | None = typer.Option(
        None, "--lm-eval-cache", help="folder for lm-eval's response cache (keyed by model + method hash); off by default"
    ),
    fmt: str = typer.Option("table", "--format", metavar="[table|md|csv|json]", help="table, md, csv or json"),
    output_path: Path | None = typer.Option(
        None,
        "--output-path",
        help="also write this backbone's preservation cells in lm-eval's shape here (a folder per method and shots)",
    ),
) -> None:
    """Run the preservation suites (SPRING Table 2) through lm-evaluation-harness and print task x method."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from harness.errors import HarnessError
    from harness.models import load_model
    from harness.paths import writable_folder
    from harness.plugins import METHODS
    from harness.preserve import (
        SOURCES,
        parse_methods,
        parse_shots,
        parse_tasks,
        preserve_methods,
        require_method,
        resolve_preserve_model,
        run_preservation,
    )
    from harness.store import Store

    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)
    if limit is not None and full:
        raise HarnessError("--limit and --full contradict each other; pass one")
    writable_folder(results, "--results")
    if output_path is not None:
        writable_folder(output_path, "--output-path")
    if source not in SOURCES:
        raise unknown_name("task source", source, SOURCES)
    task_names = parse_tasks(tasks)
    method_names = parse_methods(method) if method is not None else None
    shots_of = parse_shots(shots, task_names)
    for name in method_names or ():
        require_method(name)  # fail before loading the model when a method has no checkpoint hook
    # The CPU budget, as `harness run`'s: without a GPU and without --limit/--full, a sample sized by the power rule.
    note = ""
    from harness.models import check_device, uses_gpu

    if device is not None:
        check_device(device)
    if limit is None and not full and not uses_gpu(device):
        from harness.power import preserve_sample_size

        sample = preserve_sample_size()
        limit = sample.n
        note = f"CPU default: {sample.describe()}; MMLU spread over its 57 subjects; --limit N or --full to change"
    elif limit is not None:
        note = f"limit {limit} documents per task"
    out = console()
    store = Store(results)
    loaded = load_model(model, dtype=dtype, device=device)
    if method_names is None:  # base, and every method whose trained weights for this backbone the store holds
        found = [n for n in preserve_methods() if n != "base" and METHODS.get(n).preserve_checkpoints(loaded, store)]
        method_names = ["base", *found]
        missing = [n for n in preserve_methods() if n not in method_names]
        out.print(
            f"methods: {', '.join(method_names)} (checkpoints of {loaded.model_id} in {results})"
            + (f"; no checkpoint for {', '.join(missing)} (`harness run --method {missing[0]}` trains one)" if missing else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    options = {"checkpoint": checkpoint} if checkpoint is not None else {}
    # Resolve every method first, so a missing checkpoint fails before hours of evaluation.
    variants = []
    for name in method_names:
        for plugged in METHOD_VARIANTS.get(name, (None,)):
            extra = dict(options) if plugged is None else {**options, "plugged": plugged}
            variants.append(resolve_preserve_model(name, loaded, store, **extra))
    columns = (TextColumn("{task.description}"), BarColumn(), DocumentsColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    started = time.perf_counter()
    with Progress(*columns, console=out, transient=False) as progress, reporting(rich_reporter(out, progress)):
        per_method = sum(len(shots_of[t]) for t in task_names)
        tracker = CellTracker(progress, cells=len(variants) * per_method)
        for done, (model_object, method_spec, virtual_tokens) in enumerate(variants, start=1):
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
                progress=(lambda message: out.print(f"[dim]{message}[/dim]")) if verbose else None,
                lm_eval_cache=lm_eval_cache,
                tracker=tracker,
                quiet=not (verbose or verbosity_debug()),
            )
            tracker.cells_done(done * per_method)  # cells the store already held count as done too
    out.print(f"[dim]preserve: {time.perf_counter() - started:.0f} s[/dim]")
    print_preservation(results, model=loaded.model_id, fmt=fmt, note=note)
    if output_path is not None:
        from harness.export import export_preservation
        from harness.preserve import preservation_cells

        written = export_preservation(preservation_cells(store, loaded.model_id), output_path)
        out.print(f"lm-eval shape: {len(written)} files in {output_path}", markup=False, highlight=False, soft_wrap=True)


class DocumentsColumn(ProgressColumn):
    """``done/total docs`` and the rate in documents per second (a task's ``unit`` field names another unit)."""

    def render(self, task: Any) -> Text:
        unit = task.fields.get("unit", "docs")
        speed = task.finished_speed or task.speed
        rate = f" {speed:.1f} {unit}/s" if speed and unit == "docs" else ""
        return Text(f"{int(task.completed)}/{int(task.total or 0)} {unit}{rate}", style="progress.download")


class CellTracker:
    """One rich bar per evaluated (task, shots, method) cell under an overall bar of cells."""

    def __init__(self, progress: Any, cells: int) -> None:
        self.progress = progress
        self.overall = progress.add_task("preserve", total=cells, unit="cells")
        self.current: Any = None

    def start(self, label: str, documents: int) -> None:
        self.current = self.progress.add_task(label, total=documents)

    def advance(self, documents: float) -> None:
        self.progress.advance(self.current, documents)

    def finish(self) -> None:
        task = self.progress.tasks[self.current]
        self.progress.update(self.current, completed=task.total)
        self.progress.advance(self.overall, 1)

    def cells_done(self, cells: int) -> None:
        self.progress.update(self.overall, completed=cells)


def register(app: typer.Typer) -> None:
    app.command("preserve")(preserve_command)
