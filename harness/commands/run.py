"""`harness run`: the main job. Expands the flags into cells, computes what the store lacks, prints the board."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from harness.activity import reporting
from harness.commands._common import BACKEND, DATA_DIR, DEVICE, DTYPE, check_backend
from harness.commands._dataset_file import ANSWERS_FIELD, DATASET_FILE, DATASET_NAME, dataset_from_flags
from harness.config_file import CONFIG_OPTION, record_resolved
from harness.console import console, print_leaderboard, progress_columns, rich_reporter
from harness.errors import HarnessError
from harness.registry import unknown_name


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


def run_command(
    ctx: typer.Context,
    config_file: Path | None = CONFIG_OPTION,
    suite: str | None = typer.Option(
        None,
        "--suite",
        "--tasks",
        help="suite(s) or dataset(s), comma-separated (default qa12; none with --dataset-file); --tasks is an alias",
    ),
    dataset_file: Path | None = DATASET_FILE,
    dataset_name: str | None = DATASET_NAME,
    answers_field: str | None = ANSWERS_FIELD,
    method: str = typer.Option("closed-book,concat,prompt", "--method", help="method(s), comma-separated"),
    reference: str = typer.Option(
        "auto",
        "--reference",
        help="baselines evaluated beside trained methods, comma-separated; auto: prompt, plus prompt-chat and "
        "prompt-fewshot on a backbone with a chat template; '' for none",
    ),
    retriever: str = typer.Option("bm25", "--retriever", help="retriever(s), comma-separated"),
    passages: str = typer.Option("3", "--passages", help="passages m in the input, comma-separated"),
    tokens: str | None = typer.Option(None, "--tokens", help="virtual-token counts k for methods with tokens"),
    shots: str | None = typer.Option(None, "--shots", help="solved examples for few-shot methods (default 3)"),
    model: str = typer.Option("smollm2-135m", "--model", help="alias, local folder or hub id"),
    dtype: str = DTYPE,
    device: str | None = DEVICE,
    backend: str = BACKEND,
    limit: int | None = typer.Option(None, "--limit", min=1, help="examples per dataset (seeded sample)"),
    full: bool = typer.Option(False, "--full", help="evaluate the full evaluation splits (no CPU limit)"),
    seed: int = typer.Option(0, "--seed", help="seed of the example sample (and of training)"),
    force: bool = typer.Option(False, "--force", help="recompute cells the store already holds"),
    batch_size: int = typer.Option(
        16, "--batch-size", min=1, help="generation batch size (not in keys: answers do not depend on it)"
    ),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1, help="answer length limit"),
    max_input_tokens: int | None = typer.Option(None, "--max-input-tokens", min=16, help="cut passage text beyond this"),
    corpus: str = typer.Option("wiki-offline", "--corpus", help="'wiki-offline' or a passage file"),
    option: list[str] = typer.Option(
        [], "--option", "-o", help="NAME.KEY=VALUE for a method or retriever of the run (repeatable)"
    ),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="allow the model's own code"),
    results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
    output_path: Path | None = typer.Option(
        None,
        "--output-path",
        help="also write this run's cells in lm-eval's shape to this folder (results.json + samples_<dataset>.jsonl "
        "per setting), as `harness export --format lm-eval` does",
    ),
    data_dir: Path | None = DATA_DIR,
    executor: str = typer.Option(
        "local",
        "--executor",
        metavar="[local|ray]",
        help="local, or ray: checkpoints then datasets as Ray tasks (pip install -e '.[ray]')",
    ),
    address: str | None = typer.Option(
        None, "--address", help="with --executor ray: a running cluster (auto, or host:port); default: start a local one"
    ),
    ray_cpus_per_task: int = typer.Option(
        1, "--ray-cpus-per-task", min=1, help="with --executor ray: CPUs (torch threads) per task"
    ),
    ray_gpus_per_task: float = typer.Option(
        0.0, "--ray-gpus-per-task", min=0.0, help="with --executor ray: GPUs per task (e.g. 1 on a GPU cluster)"
    ),
) -> None:
    """Evaluate methods over a suite, with a retriever and m passages; resumable and cached in the store."""
    from rich.progress import Progress

    from harness.leaderboard import cells_frame, headline_variants
    from harness.paths import writable_folder
    from harness.plugins import METHODS, RETRIEVERS
    from harness.runner import CPU_MAX_INPUT_TOKENS, RunConfig, RunContext, parse_options, run
    from harness.suites import SUITES, resolve_suite

    if limit is not None and full:
        raise HarnessError("--limit and --full contradict each other; pass one")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under `accelerate launch` / torchrun
        raise HarnessError(
            "harness run evaluates in one process; train under the launcher with `accelerate launch -m harness.cli "
            "train --method ...`, then run `harness run` without it (it finds the checkpoint)"
        )
    from harness.executors import EXECUTORS, import_ray

    if executor not in EXECUTORS:
        raise unknown_name("executor", executor, EXECUTORS)
    if executor == "ray":
        import_ray()  # before any work: a missing extra is said at once
    if executor != "ray":
        given = [
            flag
            for flag, value, default in (
                ("--address", address, None),
                ("--ray-cpus-per-task", ray_cpus_per_task, 1),
                ("--ray-gpus-per-task", ray_gpus_per_task, 0.0),
            )
            if value != default
        ]
        if given:
            raise HarnessError(f"{', '.join(given)} configure the Ray executor; add --executor ray")
    check_backend(backend)
    writable_folder(results, "--results")
    if output_path is not None:
        writable_folder(output_path, "--output-path")
    own = dataset_from_flags(dataset_file, dataset_name, answers_field)
    # --dataset-file alone evaluates just the file; with --suite, the file is evaluated after the suite.
    suite_spec = ("qa12" if suite is None else suite) if own is None else ",".join(part for part in (suite, own) if part)
    methods = _names(method, "--method")
    for name in methods:
        METHODS.check(name)
    if reference and any(METHODS.get(m).trained for m in methods):
        # Trained methods are read against untrained references; on an instruct backbone the fair ones are the
        # chat-format and few-shot prompts (they fix the answer format at no training cost).
        references = _references(reference, model, trust_remote_code)
        methods = (*[r for r in references if r not in methods], *methods)
    retrievers = _names(retriever, "--retriever")
    for name in retrievers:
        RETRIEVERS.check(name)
    from harness.models import check_device, uses_gpu

    if device is not None:
        check_device(device)
    # The CPU budget (README): short inputs and a training budget whenever the run is not on a GPU and has no
    # --full, and, without --limit, a sample sized by the power rule. --limit changes only the sample, never the rest.
    cpu_budget = not full and not uses_gpu(device)
    sample = None
    if cpu_budget:
        max_input_tokens = max_input_tokens or CPU_MAX_INPUT_TOKENS
        if limit is None:
            from harness.power import cpu_sample_size

            sample = cpu_sample_size(_offline_in_domain(resolve_suite(suite_spec), data_dir))
            limit = sample.n
    parts = [p.strip() for p in suite_spec.split(",") if p.strip()]
    config = RunConfig(
        datasets=resolve_suite(suite_spec),
        methods=methods,
        retrievers=retrievers,
        passages=_integers(passages, "--passages", 1),
        tokens=_integers(tokens, "--tokens", 1) if tokens else None,
        shots=_integers(shots, "--shots", 1) if shots else None,
        model=model,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        limit=None if full else limit,
        seed=seed,
        force=force,
        results=results,
        data_dir=data_dir,
        corpus=corpus,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        method_options=parse_options(option),
        max_input_tokens=max_input_tokens,
        cpu_budget=cpu_budget,
        backend=backend,
        skip_unavailable=any(p in SUITES for p in parts),
    )
    # Written with the first cell (a refused run writes nothing); each cell's provenance names it.
    record_resolved(ctx)
    out = console()
    context = RunContext(config, log=lambda message: out.print(f"[dim]{message}[/dim]"))
    columns = progress_columns()
    if executor == "ray":
        from harness.executors import DatasetFile, RayOptions, run_on_ray

        run_on_ray(
            config,
            RayOptions(address, ray_cpus_per_task, ray_gpus_per_task),
            DatasetFile(dataset_file, dataset_name, answers_field),
            log=lambda line: out.print(line, markup=False, highlight=False, soft_wrap=True),
        )  # then the local pass below finds every cell in the store, and prints what a local run prints
    with Progress(*columns, console=out, transient=False) as progress, reporting(rich_reporter(out, progress)):
        cells, notices = run(config, context, progress)
    for notice in notices:
        # One line each, never wrapped: a notice names a file path to copy (a wrap could split it).
        out.print(notice, style="yellow", soft_wrap=True, markup=False, highlight=False)
    if not cells:
        raise HarnessError("nothing to run: every dataset of the suite was skipped")
    frame = cells_frame(context.store)
    frame = frame[frame["key"].isin({cell.key for cell in cells})]
    if output_path is not None:
        from harness.export import export

        written, export_notes = export(context.store, frame, "lm-eval", output_path)
        out.print(f"lm-eval shape: {len(written)} files in {output_path}", markup=False, highlight=False, soft_wrap=True)
        for line in export_notes:
            out.print(f"note: {line}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    variants_note = ""
    if config.tokens is None and config.shots is None:  # values the user asked for are all shown
        frame, variants_note = headline_variants(frame)
    datasets = [d for d in config.datasets if d in set(frame["dataset"])]
    if sample is not None:
        limit_note = f"CPU default: {sample.describe()} (seed {seed}; --limit N or --full to change)"
    elif config.limit is None:
        limit_note = "full evaluation sets"
    else:
        limit_note = f"limit {config.limit} examples per dataset (seed {seed}; --full for all)"
    if config.max_input_tokens:
        limit_note += f" | inputs cut to {config.max_input_tokens} tokens"
    if cpu_budget and any(METHODS.get(m).trained for m in methods):
        from harness.training import CPU_TRAINING, CPU_TRAINING_PER_METHOD

        limit_note += " | CPU training budget " + ", ".join(f"{k}={v}" for k, v in CPU_TRAINING.items())
        limit_note += "".join(
            f" ({name}: " + ", ".join(f"{k}={v}" for k, v in values.items()) + ")"
            for name, values in CPU_TRAINING_PER_METHOD.items()
            if name in methods
        )
    print_leaderboard(out, frame, datasets, ["exact_match", "f1"], context.store, note=limit_note)
    if variants_note:
        out.print(variants_note, markup=False, highlight=False, soft_wrap=True, style="dim")


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)


def _references(value: str, model: str, trust_remote_code: bool) -> tuple[str, ...]:
    """The untrained reference methods of ``--reference`` (``auto``: by whether the backbone is an instruct model)."""
    from harness.plugins import METHODS

    if value != "auto":
        names = _names(value, "--reference")
        for name in names:
            METHODS.check(name)
        return names
    from harness.models import load_tokenizer, resolve_model_path

    folder, _ = resolve_model_path(model, trust_remote_code=trust_remote_code)
    instruct = bool(getattr(load_tokenizer(folder, trust_remote_code=trust_remote_code), "chat_template", None))
    return ("prompt", "prompt-chat", "prompt-fewshot") if instruct else ("prompt",)


def _offline_in_domain(datasets: tuple[str, ...], data_dir: Path | None) -> int:
    """How many of ``datasets`` are in-domain and can be loaded here (the power rule's D)."""
    from harness.datasets import get_task, resolve_source
    from harness.errors import HarnessError
    from harness.paths import data_dir as resolve_data_dir
    from harness.suites import SUITES

    try:
        root = resolve_data_dir(data_dir)
    except HarnessError:
        root = None
    count = 0
    for name in datasets:
        if name not in SUITES["indomain"]:
            continue
        try:
            resolve_source(get_task(name), root, "auto")
        except HarnessError:
            continue
        count += 1
    return count
