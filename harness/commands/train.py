"""`harness train`: train (or find) a trained method's weights without evaluating; `harness run` reuses them."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.commands._common import DATA_DIR, DEVICE
from harness.console import console
from harness.errors import HarnessError


def train_command(
    method: str = typer.Option("spring", "--method", help="a trained method: spring, lora, spring-plus, prefix"),
    model: str = typer.Option("smollm2-135m", "--model", help="alias, local folder or hub id"),
    retriever: str = typer.Option("bm25", "--retriever", help="retriever whose passages the training reads"),
    tokens: int = typer.Option(50, "--tokens", min=1, help="n, the number of virtual tokens trained"),
    examples: int | None = typer.Option(None, "--examples", min=1, help="training questions (mixed in-domain pools)"),
    epochs: int | None = typer.Option(None, "--epochs", min=1),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    lr: float | None = typer.Option(None, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    device: str | None = DEVICE,
    full: bool = typer.Option(False, "--full", help="no CPU training budget"),
    option: list[str] = typer.Option([], "--option", "-o", help="METHOD.KEY=VALUE (repeatable)"),
    results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
    data_dir: Path | None = DATA_DIR,
    corpus: str = typer.Option("wiki-offline", "--corpus", help="'wiki-offline' or a passage file (as for `harness run`)"),
) -> None:
    """Train METHOD on the in-domain training pools and store its checkpoint (skipped if it exists)."""
    from harness.models import check_device, uses_gpu
    from harness.paths import writable_folder
    from harness.plugins import METHODS, RETRIEVERS
    from harness.runner import RunConfig, RunContext, check_options, method_instances, parse_options

    if device is not None:
        check_device(device)
    writable_folder(results, "--results")
    cls = METHODS.get(method)
    if not cls.trained:
        trained = ", ".join(name for name in METHODS.names() if METHODS.get(name).trained)
        raise HarnessError(f"method {method!r} has nothing to train; trained methods: {trained}")
    RETRIEVERS.check(retriever)
    pairs = list(parse_options(option))
    for key, value in (("examples", examples), ("epochs", epochs), ("batch_size", batch_size), ("lr", lr)):
        if value is not None:
            pairs.append((f"{method}.{key}", str(value)))
    if cls.sweep == "tokens":
        pairs.append((f"{method}.n", str(tokens)))
    config = RunConfig(
        datasets=(),
        methods=(method,),
        retrievers=(retriever,),
        tokens=(tokens,) if cls.sweep == "tokens" else None,
        model=model,
        seed=seed,
        results=results,
        data_dir=data_dir,
        corpus=corpus,
        method_options=tuple(pairs),
        device=device,
        cpu_budget=not full and not uses_gpu(device),
    )
    check_options(config)
    out = console()
    context = RunContext(config, log=lambda message: out.print(message))
    for instance in method_instances(method, config):
        instance.prepare(context, retriever)
        location = instance.checkpoint_location(results)
        where = location if location is not None else f"in {results / 'checkpoints'}"
        out.print(
            f"{method}: checkpoint {where} (hash {instance.checkpoint_hash})", markup=False, highlight=False, soft_wrap=True
        )


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
