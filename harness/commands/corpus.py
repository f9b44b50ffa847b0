"""`harness corpus`: build the default offline Wikipedia corpus and inspect corpora.

``harness corpus build`` writes ``wiki-offline`` to ``<cache>/corpora/wiki-offline/`` (the user cache,
``$HARNESS_CACHE_DIR`` or ``~/.cache/harness``), where ``harness retrieve`` finds it.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from harness.commands._common import DATA_DIR
from harness.console import console


def build(
    data_dir: Path | None = DATA_DIR,
    force: bool = typer.Option(False, "--force", help="rebuild even if wiki-offline already exists"),
) -> None:
    """Assemble wiki-offline from the real Wikipedia passage files listed in MANIFEST.md (de-duplicated)."""
    from harness.corpus import build_default_corpus
    from harness.paths import data_dir as resolve_data_dir

    out = console()
    report = build_default_corpus(resolve_data_dir(data_dir), force=force)
    corpus = report.corpus
    table = Table(title=f"{corpus.name}: {len(corpus):,} passages")
    table.add_column("source")
    table.add_column("passages kept", justify="right")
    for source, kept in report.kept.items():
        table.add_row(source, f"{kept:,}")
    table.add_row("[dim]duplicates dropped[/dim]", f"[dim]{report.duplicates:,}[/dim]")
    out.print(table)
    state = "built" if report.rebuilt else "already built (use --force to rebuild)"
    out.print(f"{corpus.name} {state} in {report.seconds:.1f}s: {corpus.directory}")
    out.print(f"fingerprint sha256:{corpus.fingerprint}")


def info(
    corpus: str = typer.Argument("wiki-offline", help="'wiki-offline' or a passage file (.jsonl, FlashRAG .jsonl, DPR .tsv)"),
) -> None:
    """Prepare a corpus if needed and print its size, fingerprint and store location."""
    from harness.corpus import open_corpus

    opened = open_corpus(corpus)
    out = console()
    out.print(f"{opened.name}: {len(opened):,} passages, fingerprint sha256:{opened.fingerprint}")
    out.print(f"store: {opened.directory}")


def register(app: typer.Typer) -> None:
    """Mount this command on ``app``."""
    corpus_app = typer.Typer(help="Build and inspect retrieval corpora.", no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(corpus_app, name="corpus")
    corpus_app.command("build")(build)
    corpus_app.command("info")(info)
