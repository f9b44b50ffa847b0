"""Where trained methods get their weights: the store's checkpoints, an imported file, or training on demand.

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
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from harness import __version__
from harness.errors import HarnessError
from harness.checkpoints import import_official, load_virtual_tokens, readable_checkpoint, save_virtual_tokens, tensor_hash
from harness.models import release_memory
from harness.spec import content_hash
from harness.suites import SUITES
from harness.training import TrainingConfig, TrainingData, TrainingLog, train, training_data

# Bump when the training procedure changes in a way that changes the trained weights.
TRAINING_VERSION = 3  # 2: dev slice and early stopping; passage budget of segments.fit_input; 3: dense LM-head input
# (bf16 training losses move in the 3rd decimal: a checkpoint trained before is not reused under the new key)
# The training budget of the CPU default (2 cores, ~15 minutes for the whole main job); --full lifts it.
# At most `examples` questions, fewer when the dev loss plateaus first (README, "CPU budget"). Early stopping is
# method-neutral: a trained method stops once 64 more questions lower its dev loss by less than 0.05. Measured on
# the default backbone (BM25 top-3, lr 2e-3): SPRING's dev loss was 5.55, 5.11, 4.88, 4.84 at 64..256 questions
# (it flattens at ~192, where the cap is); LoRA's 3.38, 3.29, 3.23 at 64..192, but its steps cost ~3x SPRING's,
# so its cap is 128 questions to keep the main job within 15 minutes on 2 cores.
CPU_TRAINING = {
    "examples": 192, "max_passages": 3, "max_input_tokens": 384, "dev_examples": 32, "eval_every": 64,
    "patience": 1, "min_delta": 0.05,
}
CPU_TRAINING_PER_METHOD: dict[str, dict[str, Any]] = {"lora": {"examples": 128}}


def training_config(context: Any, method_name: str) -> TrainingConfig:
    """The run's training hyper-parameters (``--option spring.lr=...`` etc. override the defaults)."""
    return training_values(context.config, method_name)


def training_values(config: Any, method_name: str) -> TrainingConfig:
    """:func:`training_config` from a :class:`~harness.runner.RunConfig` alone (checked before any work)."""
    from harness.options import split_options, typed_value

    fields = TrainingConfig.__dataclass_fields__
    budget = {**CPU_TRAINING, **CPU_TRAINING_PER_METHOD.get(method_name, {})} if config.cpu_budget else {}
    values: dict[str, Any] = {"seed": config.seed, **budget}
    defaults = TrainingConfig()
    for target, key, value in split_options(config.method_options):
        if target == method_name and key in fields:
            values[key] = typed_value(target, key, value, getattr(defaults, key))
    return TrainingConfig(**values)


def mixed_training_data(context: Any, retriever: str, config: TrainingConfig) -> tuple[TrainingData, dict[str, Any]]:
    """The in-domain training pools with passages from ``retriever``'s cached runs (none for ``none``), and the
    retriever spec used for each dataset."""
    specs: dict[str, Any] = {}

    def retrieve(dataset: str, examples: Any) -> dict[str, list]:
        specs[dataset] = context.retriever(retriever, dataset).spec()
        run = context.retrieval(retriever, dataset, "train", examples, config.max_passages)
        return {e.id: run.passages(e.id) for e in examples}

    data = training_data(
        SUITES["indomain"], config.examples, config.seed, None if retriever == "none" else retrieve, context.config.data_dir,
        dev=config.dev_examples if config.eval_every else 0,
    )
    return data, specs


def checkpoint_path(context: Any, method_name: str, spec_hash: str) -> Path:
    return Path(context.config.results) / "checkpoints" / f"{method_name}-{spec_hash}.safetensors"


def _token_settings(method: Any) -> dict[str, Any]:
    """The virtual-token settings every token checkpoint's training spec carries."""
    return {"n": method.n, "placement": method.placement, "fixed_k": method.fixed_k, "init": method.init}


def spring_tokens(
    method: Any,
    context: Any,
    retriever: str,
    backend: Any = None,
    base: dict[str, Any] | None = None,
    trainer: Any = None,
    settings: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, str]:
    """SPRING's (n, d) tokens for this backbone and retriever, and their content hash.

    ``backend``/``base``: train on another frozen model than the shared base one (SPRING+ on a LoRA model),
    identified by ``base`` in the training spec. ``trainer``: the Trainable class (default
    :class:`harness.methods.spring.SpringTrainer`); ``settings``: further method settings that change training
    (prefix's ``impl``), part of the training spec and the checkpoint metadata.
    """
    from harness.methods.spring import SpringTrainer, initial_tokens

    settings = settings or {}
    if method.checkpoint:  # an official release: nothing to train
        hidden = _hidden_size(context)
        weights = context.artifact(("official", method.checkpoint), lambda: import_official(
            method.checkpoint, hidden_size=hidden, weights_hash=context.model_spec["weights_hash"]))
        if weights.shape[0] != method.n:
            method.n = int(weights.shape[0])
        return weights, tensor_hash(weights)
    config = training_config(context, method.name)

    def build() -> tuple[torch.Tensor, str]:
        data, retriever_specs = mixed_training_data(context, retriever, config)
        spec = {
            "method": method.name,
            "training_version": TRAINING_VERSION,
            "backbone": context.model_spec,
            "base": base,
            "retriever": {"name": retriever, "per_dataset": retriever_specs},
            "data": data.spec(),
            "training": config.spec(),
            "settings": {**_token_settings(method), **settings},
        }
        spec_hash = content_hash(spec)
        path = checkpoint_path(context, method.name, spec_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.is_file() and not readable_checkpoint(path):
                aside = path.with_name(f".damaged-{path.name}")
                os.replace(path, aside)
                context.log(f"warning: {path} was damaged; moved to {aside.name} and trained again")
            if not path.is_file():
                trained_on = backend or context.backend
                context.log(f"training {method.name} (n={method.n}, {method.placement}, retriever {retriever}) -> {path.name}")
                for note in data.skipped:
                    context.log(f"  training pool skipped: {note}")
                embedding = trained_on.model.get_input_embeddings()
                initial = initial_tokens(embedding, trained_on.tokenizer, method.n, method.init, config.seed)
                trainable = (trainer or SpringTrainer)(method, trained_on, initial, config)
                log = train(trainable, data, config, log=context.log, progress=context.progress)
                release_memory()
                metadata = {
                    "backbone": context.model_spec["model"],
                    "backbone_weights_hash": context.model_spec["weights_hash"],
                    "hidden_size": initial.shape[1],
                    "n": method.n,
                    "init": method.init,
                    "placement": method.placement,
                    "fixed_k": method.fixed_k,
                    **settings,
                    "training_spec_hash": spec_hash,
                    "data_hash": data.spec()["ids_hash"],
                    "harness_version": __version__,
                }
                # The record first: the tensor's presence means "trained", so it must never exist without its
                # training spec and curve (a kill between the two writes leaves only a record, and retrains).
                record = path.with_suffix(".json")
                tmp = record.with_name(f".{record.name}.tmp")
                tmp.write_text(json.dumps({"spec": spec, "log": log.__dict__}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
                os.replace(tmp, record)
                save_virtual_tokens(path, trainable.weight, metadata)
        weights, metadata = load_virtual_tokens(path, hidden_size=_hidden_size(context), weights_hash=context.model_spec["weights_hash"])
        return weights, metadata["tensor_hash"]

    key = (
        method.name, retriever, method.n, method.placement, method.fixed_k, method.init, content_hash(base), content_hash(settings)
    )
    return context.artifact(key, build)


def _hidden_size(context: Any) -> int:
    from transformers import AutoConfig

    from harness.models import resolve_model_path

    folder, _ = resolve_model_path(context.config.model)
    config = AutoConfig.from_pretrained(folder)
    return int(getattr(config, "hidden_size", None) or config.get_text_config().hidden_size)


PEFT_WEIGHTS = "adapter_model.safetensors"  # PEFT's adapter file; its presence marks a finished folder
PEFT_PROMPT_KEY = "prompt_embeddings"  # the tensor PEFT's save_pretrained writes for a prompt-tuning adapter


def _adapter_folder(
    context: Any, method_name: str, folder_name: str, retriever: str, config: TrainingConfig, settings: dict[str, Any],
    describe: str, train_into: Callable[[TrainingData, Path, dict], None],
) -> Path:
    """The PEFT adapter folder ``<results>/checkpoints/<folder_name>-<training spec hash>/``; when absent,
    ``train_into(data, folder, spec)`` writes it, under a file lock."""
    data, retriever_specs = mixed_training_data(context, retriever, config)
    spec = {
        "method": method_name,
        "training_version": TRAINING_VERSION,
        "backbone": context.model_spec,
        "retriever": {"name": retriever, "per_dataset": retriever_specs},
        "data": data.spec(),
        "training": config.spec(),
        "settings": settings,
    }
    folder = Path(context.config.results) / "checkpoints" / f"{folder_name}-{content_hash(spec)}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / PEFT_WEIGHTS).is_file():
            context.log(f"training {describe} -> {folder.name}")
            for note in data.skipped:
                context.log(f"  training pool skipped: {note}")
            train_into(data, folder, spec)
    return folder


def _save_peft(peft_model: Any, folder: Path, spec: dict, log: TrainingLog) -> None:
    """``peft_model``'s adapter in PEFT's format plus ``harness-training.json`` (spec, loss log), published atomically."""
    # A fixed staging name (the caller holds the adapter's lock): what a SIGKILL leaves is cleared by the next save.
    staging = folder.parent / f".{folder.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        peft_model.save_pretrained(staging)
        (staging / "harness-training.json").write_text(
            json.dumps({"spec": spec, "log": log.__dict__, "harness_version": __version__}, indent=2, sort_keys=True) + "\n",
            encoding="utf-8",
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _backbone_copy(context: Any, dtype: str | None = None) -> Any:
    """A separate copy of the run's backbone, for training that must not touch the shared one."""
    from harness.models import load_model

    return load_model(context.config.model, dtype=dtype or context.config.dtype, trust_remote_code=context.config.trust_remote_code)


def lora_adapter(method: Any, context: Any, retriever: str) -> tuple[Path, str]:
    """The trained LoRA adapter folder (PEFT format) for this backbone and retriever, and its content hash."""
    config = training_config(context, "lora")
    settings = {k: v for k, v in method.params().items() if k != "checkpoint_hash"}

    def build() -> tuple[Path, str]:
        def train_into(data: TrainingData, folder: Path, spec: dict) -> None:
            _train_lora(method, context, data, config, folder, spec)

        describe = f"lora (r={method.r}, retriever {retriever})"
        folder = _adapter_folder(context, "lora", "lora", retriever, config, settings, describe, train_into)
        return folder, _file_hash(folder / PEFT_WEIGHTS)

    return context.artifact(("lora", retriever, content_hash(method.params())), build)


def _train_lora(method: Any, context: Any, data: TrainingData, config: TrainingConfig, folder: Path, spec: dict) -> None:
    import dataclasses

    from peft import get_peft_model

    from harness.generation import HFBackend
    from harness.models import resolve_dtype
    from harness.templates import PROMPT
    from harness.training import answer_loss, draw_inputs

    mixed = resolve_dtype(context.config.dtype) == "mixed"
    # Mixed precision trains in bf16 (as SPRING's tokens do); the adapter's own weights stay fp32 (PEFT's autocast).
    copy = _backbone_copy(context, dtype="bf16" if mixed else None)
    peft_model = get_peft_model(copy.model, method.peft_config())  # injects the adapter into this copy only
    # Full backprop through every layer: keep activations only at layer boundaries (recomputed in backward). One
    # CPU-default step (8 questions, 384 tokens, bf16) peaked at 4.6 GB without it and 2.0 GB with it, and was
    # no slower (9.9 s vs 9.1 s).
    copy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.train()  # LoRA dropout on; the backbone's own weights stay frozen
    backend = HFBackend(dataclasses.replace(copy, model=peft_model.get_base_model()))

    class LoraTrainer:
        def parameters(self) -> list[torch.nn.Parameter]:
            return [p for p in peft_model.parameters() if p.requires_grad]

        def set_training(self, training: bool) -> None:
            peft_model.train(training)  # LoRA dropout only while training, not while the dev slice is scored

        def loss(self, batch: Any, rng: Any) -> torch.Tensor:
            inputs, answers = draw_inputs(PROMPT, batch, rng, backend, config)
            return answer_loss(backend, inputs, answers, prefix_once=False)  # LoRA changes the passages' states

    log = train(LoraTrainer(), data, config, log=context.log, progress=context.progress)
    _save_peft(peft_model, folder, spec, log)
    del peft_model, backend, copy
    release_memory()


def prefix_peft_tokens(method: Any, context: Any, retriever: str) -> tuple[torch.Tensor, str]:
    """``prefix`` with ``impl=peft``: the (n, d) fp32 prompt-tuning tokens of PEFT's adapter folder for this backbone
    and retriever (trained when absent), and their content hash. ``method.checkpoint`` names a PEFT
    prompt-tuning folder to use as it is."""
    hidden = _hidden_size(context)
    if method.checkpoint:  # an existing PEFT prompt-tuning adapter: nothing to train
        weights = load_peft_prompt(Path(method.checkpoint), hidden_size=hidden)
        method.n = int(weights.shape[0])
        return weights, tensor_hash(weights)
    config = training_config(context, method.name)
    settings = {**_token_settings(method), "impl": method.impl}

    def build() -> tuple[torch.Tensor, str]:
        def train_into(data: TrainingData, folder: Path, spec: dict) -> None:
            train_prefix_peft(method, _backbone_copy(context), data, config, folder, spec, log=context.log, progress=context.progress)

        describe = f"prefix with PEFT prompt tuning (n={method.n}, retriever {retriever})"
        folder = _adapter_folder(context, method.name, "prefix-peft", retriever, config, settings, describe, train_into)
        weights = load_peft_prompt(folder, hidden_size=hidden)
        return weights, tensor_hash(weights)

    return context.artifact(("prefix-peft", retriever, content_hash(settings)), build)


def train_prefix_peft(
    method: Any,
    copy: Any,
    data: TrainingData,
    config: TrainingConfig,
    folder: Path,
    spec: dict,
    log: Callable[[str], None] = print,
    progress: Any = None,
) -> TrainingLog:
    """Train ``prefix`` with PEFT prompt tuning on ``copy`` (a LoadedModel used by nothing else) with the harness's
    loop, and save PEFT's adapter folder (plus ``harness-training.json``) as ``folder``."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    from harness.generation import HFBackend
    from harness.methods.prefix import PeftPromptTrainer
    from harness.methods.spring import initial_tokens

    # RANDOM, then overwritten with the harness's start values: one definition of the initialisation for both
    # impls (PEFT's TEXT init tokenizes with special tokens, so on Llama its first token would be BOS).
    peft_config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=method.n, prompt_tuning_init=PromptTuningInit.RANDOM
    )
    peft_model = get_peft_model(copy.model, peft_config)
    peft_model.eval()  # no dropout anywhere: the same function of the tokens as the spring impl's frozen backbone
    (prompt,) = [p for p in peft_model.parameters() if p.requires_grad]
    initial = initial_tokens(copy.model.get_input_embeddings(), copy.tokenizer, method.n, method.init, config.seed)
    with torch.no_grad():
        prompt.copy_(initial.to(prompt.device, prompt.dtype))
    record = train(PeftPromptTrainer(method, peft_model, HFBackend(copy), config), data, config, log=log, progress=progress)
    _save_peft(peft_model, folder, spec, record)
    return record


def load_peft_prompt(folder: Path, *, hidden_size: int) -> torch.Tensor:
    """The (n, d) fp32 prompt embeddings of a PEFT prompt-tuning adapter folder, checked against the backbone."""
    from peft import PeftConfig, PeftType
    from safetensors import safe_open

    # Check the folder first: PeftConfig.from_pretrained would take a missing local path for a hub id.
    if not (folder / "adapter_config.json").is_file() or not (folder / PEFT_WEIGHTS).is_file():
        raise HarnessError(f"{folder} is not a PEFT adapter folder (adapter_config.json and {PEFT_WEIGHTS} expected)")
    peft_type = PeftConfig.from_pretrained(str(folder)).peft_type
    if peft_type != PeftType.PROMPT_TUNING:
        raise HarnessError(f"{folder} holds a {peft_type} adapter; prefix.impl=peft needs PROMPT_TUNING")
    with safe_open(str(folder / PEFT_WEIGHTS), framework="pt") as handle:
        if PEFT_PROMPT_KEY not in handle.keys():  # noqa: SIM118 - safe_open has no __contains__
            raise HarnessError(f"{folder / PEFT_WEIGHTS} holds no {PEFT_PROMPT_KEY!r} tensor")
        weights = handle.get_tensor(PEFT_PROMPT_KEY).to(torch.float32)
    if weights.dim() != 2 or weights.shape[1] != hidden_size:
        raise HarnessError(
            f"{folder}: prompt embeddings of shape {tuple(weights.shape)} do not fit a backbone of hidden size {hidden_size}"
        )
    return weights


def lora_backend(method: Any, context: Any) -> Any:
    """An HFBackend over a separate copy of the backbone with ``method``'s adapter merged in."""

    def build() -> Any:
        import dataclasses

        from peft import PeftModel

        from harness.generation import HFBackend

        copy = _backbone_copy(context)
        merged = PeftModel.from_pretrained(copy.model, str(method.adapter)).merge_and_unload()
        merged.eval()
        merged.requires_grad_(False)
        return HFBackend(dataclasses.replace(copy, model=merged))

    return context.artifact(("lora-backend", method.checkpoint_hash), build)


def _file_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:20]


# ---- preservation (harness preserve): the trained methods as lm-eval models ----------------------------------


def _latest(paths: list[Path], what: str, store_root: Path) -> Path:
    if not paths:
        raise HarnessError(
            f"no {what} checkpoint for this backbone in {store_root / 'checkpoints'}; run `harness run --method {what}` first "
            "(with the same --results and --model) or pass --checkpoint PATH"
        )
    return max(paths, key=lambda p: p.stat().st_mtime)


def preserve_spring(loaded: Any, store: Any, *, checkpoint: str | None = None, plugged: bool | None = None, tokens: int | None = None) -> tuple[Any, dict, Any]:
    """SPRING for lm-eval: the base model, plus its trained tokens when ``plugged``."""
    root = Path(store.root)
    if checkpoint:
        path = Path(checkpoint)
    else:
        candidates = []
        for file in (root / "checkpoints").glob("spring-*.safetensors"):
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                if (handle.metadata() or {}).get("backbone_weights_hash") == loaded.weights_hash:
                    candidates.append(file)
        path = _latest(candidates, "spring", root)
    hidden = loaded.model.get_input_embeddings().weight.shape[1]
    if path.suffix == ".pt":
        weights = import_official(path, hidden_size=hidden)
    else:
        weights, _ = load_virtual_tokens(path, hidden_size=hidden, weights_hash=loaded.weights_hash)
    k = tokens or weights.shape[0]
    spec = {"name": "spring", "plugged": bool(plugged), "tokens": k, "checkpoint_hash": tensor_hash(weights)}
    return loaded.model, spec, weights[:k] if plugged else None


def preserve_lora(loaded: Any, store: Any, *, checkpoint: str | None = None, **_: Any) -> tuple[Any, dict, Any]:
    """LoRA for lm-eval: a separate copy of the backbone with the adapter merged in."""
    from peft import PeftModel

    from harness.models import load_model

    root = Path(store.root)
    if checkpoint:
        folder = Path(checkpoint)
    else:
        candidates = []
        for folder in (root / "checkpoints").glob("lora-*"):
            meta = folder / "harness-training.json"
            if meta.is_file() and json.loads(meta.read_text())["spec"]["backbone"]["weights_hash"] == loaded.weights_hash:
                candidates.append(folder)
        folder = _latest(candidates, "lora", root)
    copy = load_model(str(loaded.path), dtype=loaded.dtype)
    merged = PeftModel.from_pretrained(copy.model, str(folder)).merge_and_unload().eval()
    spec = {"name": "lora", "checkpoint_hash": _file_hash(folder / "adapter_model.safetensors")}
    return merged, spec, None
