"""`harness ls datasets|suites|metrics|methods|retrievers`: what the harness knows, as rich tables."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from harness.commands._common import DATA_DIR
from harness.console import console
from harness.registry import Registry, unknown_name

LISTABLE = ("datasets", "suites", "metrics", "methods", "retrievers")


def _packages(registry: Registry) -> list[str] | None:
    """The package of each name, in order ("harness" or the plugin's "distribution version"), or ``None`` when no
    other package registered any (the column is then left out)."""
    origins = [registry.origin(name) for name in registry.names()]
    return [origin or "harness" for origin in origins] if any(origins) else None


def _datasets_table(data_dir: Path | None) -> Table:
    from harness.datasets import summarize
    from harness.metrics import METRIC_LABELS
    from harness.plugins import DATASETS

    table = Table(title="Datasets")
    packages = _packages(DATASETS)
    for column in ("name", "title", "eval split", "eval", "train pool", "metrics", "held out", "source"):
        table.add_column(column, justify="right" if column in ("eval", "train pool") else "left")
    if packages:
        table.add_column("package")
    for index, name in enumerate(DATASETS.names()):
        s = summarize(name, data_dir)
        table.add_row(
            s.name,
            s.title,
            s.eval_split,
            f"{s.n_eval:,}" if s.n_eval is not None else "-",
            f"{s.n_train:,}" if s.n_train is not None else "-",
            ", ".join(METRIC_LABELS[m] for m in s.metrics),
            "yes" if s.held_out else "",
            s.source if s.problem is None else f"[red]{s.source}[/red]",
            *([packages[index]] if packages else []),
        )
    return table


def _suites_table() -> Table:
    from harness.suites import SUITE_DESCRIPTIONS, SUITES

    table = Table(title="Suites (every dataset name is also a suite of one)")
    for column in ("suite", "datasets", "n", "description"):
        table.add_column(column)
    for name, members in SUITES.items():
        table.add_row(name, ", ".join(members), str(len(members)), SUITE_DESCRIPTIONS[name])
    return table


def _metrics_table() -> Table:
    from harness.metrics import METRIC_DESCRIPTIONS, SCORER_VERSION

    table = Table(title=f"Metrics (scorer version {SCORER_VERSION})")
    table.add_column("metric")
    table.add_column("definition")
    for name, description in METRIC_DESCRIPTIONS.items():
        table.add_row(name, description)
    return table


def _methods_table() -> Table:
    from harness.options import option_fields
    from harness.plugins import METHODS
    from harness.training import TrainingConfig

    training = ", ".join(f"{f.name}={f.default}" for f in option_fields(TrainingConfig).values())
    table = Table(
        title="Methods (options: --option METHOD.KEY=VALUE)",
        caption=f"Trained methods also take the training options (defaults without the CPU budget): {training}",
    )
    packages = _packages(METHODS)
    for column in (
        "method",
        "what it is",
        "template",
        "trained",
        "sweeps",
        "preserve",
        "options",
        *(["package"] if packages else []),
    ):
        table.add_column(column)
    for index, name in enumerate(METHODS.names()):
        cls = METHODS.get(name)
        options = [f"{f.name}={f.default}" for f in option_fields(cls.Options).values()]
        summary = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "")
        template = cls().template.name  # the instance's: prefix sets its placement's template
        sweeps = ""
        if cls.sweep:
            cpu, full = (",".join(map(str, cls.default_sweep(budget))) for budget in (True, False))
            sweeps = f"--{cls.sweep} (default {cpu}" + (f"; --full {full}" if full != cpu else "") + ")"
        table.add_row(
            name,
            summary,
            template,
            "yes" if cls.trained else "",
            sweeps,
            "yes" if cls.preserves else "",
            ", ".join(options),
            *([packages[index]] if packages else []),
        )
    return table


def _retrievers_table() -> Table:
    import importlib

    from harness.plugins import RETRIEVERS

    table = Table(title="Retrievers (options: --option RETRIEVER.KEY=VALUE; a misspelt key is refused with the valid ones)")
    packages = _packages(RETRIEVERS)
    for column in ("retriever", "what it is", *(["package"] if packages else [])):
        table.add_column(column)
    for index, name in enumerate(RETRIEVERS.names()):
        factory = RETRIEVERS.get(name)
        doc = factory.__doc__ or importlib.import_module(factory.__module__).__doc__ or ""
        summary = doc.strip().splitlines()[0].replace("``", "") if doc.strip() else ""
        table.add_row(name, summary, *([packages[index]] if packages else []))
    return table


def ls(
    what: str = typer.Argument(..., help="datasets, suites, metrics, methods or retrievers"),
    data_dir: Path | None = DATA_DIR,
) -> None:
    """List datasets (with counts and source), suites, metrics, methods (with their options) or retrievers."""
    if what not in LISTABLE:
        raise unknown_name("listing", what, LISTABLE)
    if what == "datasets":
        table = _datasets_table(data_dir)
    elif what == "suites":
        table = _suites_table()
    elif what == "methods":
        table = _methods_table()
    elif what == "retrievers":
        table = _retrievers_table()
    else:
        table = _metrics_table()
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command("ls")(ls)
