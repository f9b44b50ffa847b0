"""`harness run`: the main job. Expands the flags into cells, computes what the store lacks, prints the board."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.console import SpeedColumn, console, frame_table
from harness.errors import HarnessError


def _names(value: str, flag: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names:
        raise HarnessError(f"{flag} needs at least one name")
    return names


def _integers(value: str, flag: str, minimum: int) -> tuple[int, ...]:
    try:
        numbers = tuple(dict.fromkeys(int(part) for part in value.split(",") if part.strip()))
    except ValueError:
        raise HarnessError(f"{flag} takes comma-separated integers, e.g. {flag} 1,5,50 (got {value!r})") from None
    if not numbers or min(numbers) < minimum:
        raise HarnessError(f"{flag} values must be integers >= {minimum} (got {value!r})")
    return numbers


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        suite: str = typer.Option("qa12", "--suite", help="suite(s) or dataset(s), comma-separated"),
        method: str = typer.Option("closed-book,concat,prompt", "--method", help="method(s), comma-separated"),
        reference: str = typer.Option(
            "prompt", "--reference", help="baseline evaluated beside trained methods (the table's reference row); '' for none"
        ),
        retriever: str = typer.Option("bm25", "--retriever", help="retriever(s), comma-separated"),
        passages: str = typer.Option("3", "--passages", help="passages m in the input, comma-separated"),
        tokens: Optional[str] = typer.Option(None, "--tokens", help="virtual-token counts k for methods with tokens"),
        shots: Optional[str] = typer.Option(None, "--shots", help="solved examples for few-shot methods (default 3)"),
        model: str = typer.Option("smollm2-135m", "--model", help="alias, local folder or hub id"),
        dtype: str = typer.Option("auto", "--dtype", help="auto, fp32, bf16 or fp16"),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="examples per dataset (seeded sample)"),
        full: bool = typer.Option(False, "--full", help="evaluate the full evaluation splits (no CPU limit)"),
        seed: int = typer.Option(0, "--seed", help="seed of the example sample (and of training)"),
        force: bool = typer.Option(False, "--force", help="recompute cells the store already holds"),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="generation batch size (not in keys)"),
        max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1, help="answer length limit"),
        max_input_tokens: Optional[int] = typer.Option(None, "--max-input-tokens", min=16, help="cut passage text beyond this"),
        corpus: str = typer.Option("wiki-offline", "--corpus", help="'wiki-offline' or a passage file"),
        option: list[str] = typer.Option([], "--option", "-o", help="method option METHOD.KEY=VALUE (repeatable)"),
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="allow the model's own code"),
        results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="raw data folder (default ../shared/data)"),
    ) -> None:
        """Evaluate methods over a suite, with a retriever and m passages; resumable and cached in the store."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from harness.leaderboard import cells_frame, leaderboard
        from harness.plugins import METHODS, RETRIEVERS
        from harness.runner import CPU_DEFAULT_LIMIT, CPU_MAX_INPUT_TOKENS, RunConfig, RunContext, parse_method_options, run
        from harness.suites import SUITES, resolve_suite

        if limit is not None and full:
            raise HarnessError("--limit and --full contradict each other; pass one")
        methods = _names(method, "--method")
        if reference and any(getattr(METHODS.get(m), "prepare", None) for m in methods) and reference not in methods:
            methods = (reference, *methods)  # trained methods are read against the untrained reference
        for name in methods:
            METHODS.check(name)
        retrievers = _names(retriever, "--retriever")
        for name in retrievers:
            RETRIEVERS.check(name)
        import torch

        cpu_budget = not full and limit is None and not torch.cuda.is_available()
        if cpu_budget:  # the CPU default: a small sample, short inputs, a small training budget (see README)
            limit = CPU_DEFAULT_LIMIT
            max_input_tokens = max_input_tokens or CPU_MAX_INPUT_TOKENS
        parts = [p.strip() for p in suite.split(",") if p.strip()]
        config = RunConfig(
            datasets=resolve_suite(suite),
            methods=methods,
            retrievers=retrievers,
            passages=_integers(passages, "--passages", 1),
            tokens=_integers(tokens, "--tokens", 1) if tokens else None,
            shots=_integers(shots, "--shots", 1) if shots else None,
            model=model,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            limit=None if full else limit,
            seed=seed,
            force=force,
            results=results,
            data_dir=data_dir,
            corpus=corpus,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            method_options=parse_method_options(option),
            max_input_tokens=max_input_tokens,
            cpu_budget=cpu_budget,
            skip_unavailable=any(p in SUITES for p in parts),
        )
        out = console()
        context = RunContext(config, log=lambda message: out.print(f"[dim]{message}[/dim]"))
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            SpeedColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=out, transient=False) as progress:
            cells, notices = run(config, context, progress)
        for notice in notices:
            out.print(f"[yellow]{notice}[/yellow]")
        if not cells:
            raise HarnessError("nothing to run: every dataset of the suite was skipped")
        frame = cells_frame(context.store)
        frame = frame[frame["key"].isin({cell.key for cell in cells})]
        datasets = [d for d in config.datasets if d in set(frame["dataset"])]
        board = leaderboard(frame, datasets, ["exact_match", "f1"], method_order=config.methods)
        limit_note = "full evaluation sets" if config.limit is None else f"limit {config.limit} examples per dataset (seed {seed}; --full for all)"
        if config.max_input_tokens:
            limit_note += f" | inputs cut to {config.max_input_tokens} tokens"
        if cpu_budget and any(getattr(METHODS.get(m), "prepare", None) for m in methods):
            from harness.methods.trained import CPU_TRAINING

            limit_note += " | CPU training budget " + ", ".join(f"{k}={v}" for k, v in CPU_TRAINING.items())
        out.print(frame_table(board.table, f"{board.header} | {limit_note}"))
