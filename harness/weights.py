"""Where trained methods get their weights: the store's checkpoints, or training on demand (the engine's half).

A trained method owns its trainer (``harness/methods/spring.py``, ``lora.py``, ``prefix.py``); this module owns the
generic step around it: build the training spec, find the checkpoint for that spec in the store, or take its lock,
call the method's trainer and publish the result. It never imports a method.

Checkpoints live in ``<results>/checkpoints/<method>-<training spec hash>.safetensors`` beside a JSON with the
full training spec and loss curve; PEFT-trained ones (``lora``, ``prefix`` with ``impl=peft``) are PEFT adapter
folders ``<results>/checkpoints/{lora,prefix-peft}-<training spec hash>/`` with a ``harness-training.json``. The
training spec covers the backbone (id + weights hash), the retriever (spec with corpus fingerprint), the training
data (ids and passage ids), every hyper-parameter and the method's own settings, so a checkpoint is reused exactly
when retraining would be asked to do the same thing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from harness import __version__
from harness.cache import atomic_write_json, build_once, file_hash
from harness.checkpoints import load_virtual_tokens, readable_checkpoint, save_virtual_tokens
from harness.distributed import build_once_together
from harness.errors import HarnessError
from harness.models import release_memory
from harness.spec import content_hash
from harness.training import ANSWER_BEARING_PREFIX, TrainingConfig, TrainingData, TrainingLog, training_data

# Bump when the training procedure changes in a way that changes the trained weights.
TRAINING_VERSION = 3  # 2: dev slice and early stopping; passage budget of segments.fit_input; 3: dense LM-head input
# (bf16 training losses move in the 3rd decimal: a checkpoint trained before is not reused under the new key)
RECALL_SAMPLE = 200  # evaluation questions per dataset for the recall printed beside training's, without --limit
PEFT_WEIGHTS = "adapter_model.safetensors"  # PEFT's adapter file; its presence marks a finished folder


def mixed_training_data(context: Any, retriever: str, config: TrainingConfig) -> tuple[TrainingData, dict[str, Any]]:
    """The training pools of ``config.mix`` (the in-domain ones by default) with passages from ``retriever``'s
    cached runs (none for ``none``), and the retriever spec used for each dataset; drawn once per run and config
    (``train_passages=auto`` looks at the retrieved draw before the spec uses it)."""
    return context.artifact(("training-data", retriever, config), lambda: _draw_training_data(context, retriever, config))


def _draw_training_data(context: Any, retriever: str, config: TrainingConfig) -> tuple[TrainingData, dict[str, Any]]:
    specs: dict[str, Any] = {}

    def retrieve(dataset: str, examples: Any) -> dict[str, list]:
        specs[dataset] = context.retriever(retriever, dataset).spec()
        run = context.retrieval(retriever, dataset, "train", examples, config.max_passages)
        return {e.id: run.passages(e.id) for e in examples}

    data = training_data(
        config.mix,
        config.examples,
        config.seed,
        None if retriever == "none" else retrieve,
        context.data_dir,
        dev=config.dev_examples if config.eval_every else 0,
        strict=config.mix_is_chosen,
        answer_bearing=config.answer_bearing,
    )
    return data, specs


def _evaluation_recall(context: Any, retriever: str, dataset: str, m: int, limit: int | None = None) -> float | None:
    """Answer recall@m of ``retriever`` on an evaluation sample of ``dataset`` (None if it cannot load): ``limit``
    questions, by default the run's sample; a run over full splits, and ``harness train``, use a seeded sample of
    RECALL_SAMPLE questions instead (a recall estimate need not retrieve 11,000 TriviaQA questions)."""
    from harness.runner import select_examples

    limit = limit or getattr(getattr(context, "config", None), "limit", None) or RECALL_SAMPLE
    try:
        examples = select_examples(dataset, limit, context.seed, context.data_dir)
    except HarnessError:
        return None
    run = context.retrieval(retriever, dataset, "eval", examples, m)
    return run.recall.get(m, run.recall_at_k)


def announce(context: Any, what: str, data: TrainingData, config: TrainingConfig, retriever: str) -> TrainingData:
    """Print what a training run is about to do (what trains, the mix, the training passages' answer recall beside
    the evaluation sample's) and return ``data`` with that evaluation recall, which the training log keeps.

    Only a run that trains calls it: a cached checkpoint's spec never retrieves evaluation questions for it."""
    data = replace(
        data,
        answer_recall=tuple(
            (name, train, _evaluation_recall(context, retriever, name, config.max_passages))
            for name, train, _ in data.answer_recall
        ),
    )
    context.log(f"training {what}")
    context.log(f"  training mix: {data.describe()}")
    if data.choice:
        context.log(f"  training passages: {data.choice}")
    if data.answer_recall:
        context.log(f"  {data.describe_recall(config.max_passages)}")
    for note in data.skipped:
        context.log(f"  training pool skipped: {note}")
    return data


AUTO_RECALL_RATIO = 0.5  # train_passages=auto: answer-bearing when training recall is below half the evaluation's


def resolve_train_passages(context: Any, retriever: str, config: TrainingConfig) -> tuple[TrainingConfig, str]:
    """``config`` with ``train_passages=auto`` resolved, and the line saying why.

    Answer-bearing for each dataset of the mix whose training questions' passages hold a gold answer (recall at
    max_passages) for fewer than AUTO_RECALL_RATIO as many questions as its evaluation passages do (a seeded
    sample of RECALL_SAMPLE evaluation questions, whatever the run's --limit, so the choice, which is keyed, does
    not depend on it): trained there on passages that rarely hold the answer, a method would be tested on ones
    that do. Retrieved, the paper's setting, for the others, and always without passages."""
    if config.train_passages != "auto":
        return config, ""
    retrieved = replace(config, train_passages="retrieved")
    if retriever == "none":
        return retrieved, "retrieved (auto: no passages)"
    data, _ = mixed_training_data(context, retriever, retrieved)
    gaps = []
    for name, train, _ in data.answer_recall:
        evaluation = _evaluation_recall(context, retriever, name, config.max_passages, limit=RECALL_SAMPLE)
        if evaluation is not None and train < AUTO_RECALL_RATIO * evaluation:
            gaps.append((name, train, evaluation))
    rule = f"training recall below {AUTO_RECALL_RATIO:.0%} of the evaluation recall@{config.max_passages}"
    if not gaps:
        return retrieved, f"retrieved (auto: no dataset of the mix has {rule})"
    every = len(gaps) == len(data.answer_recall)
    names = [name for name, _, _ in gaps]
    chosen = replace(config, train_passages="answer-bearing" if every else ANSWER_BEARING_PREFIX + ",".join(names))
    shown = ", ".join(f"{name} {train:.2f} vs {evaluation:.2f}" for name, train, evaluation in gaps)
    why = (
        f"answer-bearing for {', '.join(names)}{'' if every else ', retrieved for the rest'} (auto: {rule}: {shown}; "
        "--option METHOD.train_passages=retrieved|answer-bearing to choose)"
    )
    return chosen, why


def training_spec(
    context: Any, method_name: str, retriever: str, config: TrainingConfig, settings: dict[str, Any], **extra: Any
) -> tuple[dict[str, Any], TrainingData]:
    """The training spec (what the checkpoint's key hashes) and the training data it names."""
    config, why = resolve_train_passages(context, retriever, config)
    data, retriever_specs = mixed_training_data(context, retriever, config)
    data = replace(data, choice=why)
    spec = {
        "method": method_name,
        "training_version": TRAINING_VERSION,
        "backbone": context.model_spec,
        **extra,
        "retriever": {"name": retriever, "per_dataset": retriever_specs},
        "data": data.spec(),
        "training": config.spec(),
        "settings": settings,
    }
    return spec, data


def checkpoint_path(results: Path, method_name: str, spec_hash: str) -> Path:
    return Path(results) / "checkpoints" / f"{method_name}-{spec_hash}.safetensors"


def token_checkpoint(
    context: Any,
    method_name: str,
    retriever: str,
    config: TrainingConfig,
    *,
    settings: dict[str, Any],
    describe: str,
    train: Callable[[TrainingData], tuple[torch.Tensor, TrainingLog]],
    base: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, str]:
    """The (n, d) virtual tokens a method trains, and their content hash: read from the store's checkpoint for this
    training spec, or ``train(data)`` under the checkpoint's lock and published (record first, then the tensor).

    ``settings``: the method's settings that change training (also the checkpoint's metadata); ``base``: the frozen
    model trained on when it is not the shared base one (SPRING+ names its LoRA adapter).
    """

    def build() -> tuple[torch.Tensor, str]:
        spec, data = training_spec(context, method_name, retriever, config, settings, base=base)
        spec_hash = content_hash(spec)
        path = checkpoint_path(context.results, method_name, spec_hash)

        def set_aside(damaged: Path) -> None:
            aside = damaged.with_name(f".damaged-{damaged.name}")
            os.replace(damaged, aside)
            context.log(f"warning: {damaged} was damaged; moved to {aside.name} and trained again")

        def train_and_publish(target: Path) -> None:
            weights, log = train(announce(context, f"{describe} -> {target.name}", data, config, retriever))
            release_memory()
            metadata = {
                "backbone": context.model_spec["model"],
                "backbone_weights_hash": context.model_spec["weights_hash"],
                "hidden_size": weights.shape[1],
                **settings,
                "training_spec_hash": spec_hash,
                "data_hash": data.spec()["ids_hash"],
                "harness_version": __version__,
            }
            # The record first: the tensor's presence means "trained", so it must never exist without its
            # training spec and curve (a kill between the two writes leaves only a record, and retrains).
            atomic_write_json(
                target.with_suffix(".json"), {"spec": spec, "log": log.__dict__}, indent=2, sort_keys=True, newline=True
            )
            save_virtual_tokens(target, weights, metadata)

        # Under `accelerate launch` every process trains (data parallel); the main one publishes.
        build_once_together(
            path,
            train_and_publish,
            build_once,
            is_built=lambda p: p.is_file() and readable_checkpoint(p),
            on_stale=set_aside,
            in_place=True,
        )
        weights, metadata = load_virtual_tokens(
            path, hidden_size=hidden_size(context), weights_hash=context.model_spec["weights_hash"]
        )
        return weights, metadata["tensor_hash"]

    return context.artifact((method_name, retriever, content_hash(settings), content_hash(base)), build)


def adapter_folder(
    context: Any,
    method_name: str,
    folder_name: str,
    retriever: str,
    config: TrainingConfig,
    settings: dict[str, Any],
    describe: str,
    train_into: Callable[[TrainingData, Path, dict], None],
) -> Path:
    """The PEFT adapter folder ``<results>/checkpoints/<folder_name>-<training spec hash>/``; when absent,
    ``train_into(data, staging, spec)`` writes it into a staging folder (with :func:`save_peft`), published under
    the folder's lock."""
    spec, data = training_spec(context, method_name, retriever, config, settings)
    folder = Path(context.results) / "checkpoints" / f"{folder_name}-{content_hash(spec)}"

    def train_into_staging(staging: Path) -> None:
        train_into(announce(context, f"{describe} -> {folder.name}", data, config, retriever), staging, spec)

    # A fixed staging name (under the adapter's lock): what a SIGKILL leaves is cleared by the next build.
    staging = folder.parent / f".{folder.name}.staging"
    build_once_together(folder, train_into_staging, build_once, is_built=lambda f: (f / PEFT_WEIGHTS).is_file(), staging=staging)
    return folder


def save_peft(peft_model: Any, folder: Path, spec: dict, log: TrainingLog, base_model: str) -> None:
    """``peft_model``'s adapter in PEFT's format plus ``harness-training.json`` (spec, loss log), written into
    ``folder`` (the staging folder :func:`adapter_folder` publishes). ``base_model`` is the backbone as the run
    named it; the adapter records :func:`harness.models.peft_base_name` of it, not the cache folder PEFT saw."""
    from harness.models import peft_base_name

    for adapter_config in peft_model.peft_config.values():
        adapter_config.base_model_name_or_path = peft_base_name(base_model)
    peft_model.save_pretrained(folder)
    (folder / "harness-training.json").write_text(
        json.dumps({"spec": spec, "log": log.__dict__, "harness_version": __version__}, indent=2, sort_keys=True) + "\n",
        encoding="utf-8",
    )


def hidden_size(context: Any) -> int:
    """The backbone's hidden size, from its config alone (no weights loaded)."""
    from transformers import AutoConfig

    from harness.models import resolve_model_path

    folder, _ = resolve_model_path(context.model_name)
    config = AutoConfig.from_pretrained(folder)
    return int(getattr(config, "hidden_size", None) or config.get_text_config().hidden_size)


def adapter_hash(path: Path) -> str:
    """sha256 (20 hex) of an adapter file's bytes: its identity in result keys."""
    return file_hash(path, length=20)


def latest_checkpoint(paths: list[Path], what: str, store_root: Path) -> Path:
    """The newest of ``paths`` (checkpoints of method ``what`` for one backbone), or a one-line error."""
    if not paths:
        raise HarnessError(
            f"no {what} checkpoint for this backbone in {store_root / 'checkpoints'}; run `harness run --method {what}` first "
            "(with the same --results and --model) or pass --checkpoint PATH"
        )
    return max(paths, key=lambda p: p.stat().st_mtime)


__all__ = [
    "PEFT_WEIGHTS",
    "TRAINING_VERSION",
    "adapter_folder",
    "checkpoint_path",
    "adapter_hash",
    "hidden_size",
    "latest_checkpoint",
    "mixed_training_data",
    "save_peft",
    "token_checkpoint",
    "training_spec",
]
