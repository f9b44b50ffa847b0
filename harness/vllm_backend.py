"""``--backend vllm``: generation on vLLM, from the same segments, with the same stop rules and post-processing.

An input whose segments are all token ids goes through vLLM's token path (``{"prompt_token_ids": ids}``), so the
engine's automatic prefix caching reuses shared passages blocks; an input holding embedding rows (SPRING's and
prefix's virtual tokens) becomes ``{"prompt_embeds": (length, hidden)}``: the token segments looked up in the
backbone's own input-embedding table (read from its safetensors, not the whole model) and the rows as they are,
which is what :meth:`harness.generation.HFBackend.embed` feeds the HF model (tested equal).

Decoding is greedy (``temperature=0``), EOS ids are vLLM stop tokens, and the newline rule, which a stop string
cannot express (a newline before any visible text is skipped), is applied to the returned token ids by the same
:class:`harness.generation.StopRule` the HF backend steps through: answers are cut where the HF backend stops.
LoRA adapters (``lora``, ``spring-plus``) are served by vLLM's LoRA support from the PEFT folder, not merged.

vLLM is an optional extra (``pip install -e ".[vllm]"``), imported only when the engine is built. Its kernels are
not batch-invariant: a greedy tie can break differently than on the HF backend, so its cells are keyed apart
(backend name, vLLM version and tensor-parallel size in the decoding spec); ``benchmarks/gpu_check.sh`` measures
the agreement.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError
from harness.generation import DecodingConfig, Generation, StopRule, eos_ids, fit_inputs, postprocess
from harness.options import option
from harness.segments import EmbeddingSegment, Segment, TokenSegment, input_length

INSTALL = 'pip install -e ".[vllm]"'
# The harness's dtypes in vLLM's names; `mixed` is the HF backend's CPU mode (bf16 prefill, fp32 decoding).
VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# The LoRA ranks a vLLM engine can be built for (vllm/config/lora.py).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class VLLMOptions:
    """The engine's options (``--option vllm.KEY=VALUE`` with ``--backend vllm``)."""

    gpu_memory_utilization: float = option(
        0.6, "fraction of GPU memory the engine may take (the HF model that trains SPRING or LoRA shares the GPU)"
    )
    tensor_parallel_size: int = option(1, "GPUs the engine shards the model over (keyed: it changes the arithmetic)")
    enforce_eager: bool = option(False, "no CUDA graphs (less memory, slower decoding)")
    max_lora_rank: int = option(16, f"the largest LoRA rank the engine serves: one of {', '.join(map(str, LORA_RANKS))}")

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1 or self.tensor_parallel_size < 1:
            raise HarnessError(
                "vllm needs 0 < gpu_memory_utilization <= 1 and tensor_parallel_size >= 1 (got "
                f"{self.gpu_memory_utilization}, {self.tensor_parallel_size})"
            )
        if self.max_lora_rank not in LORA_RANKS:
            raise HarnessError(
                f"vllm.max_lora_rank={self.max_lora_rank} is no rank vLLM serves; use one of {', '.join(map(str, LORA_RANKS))}"
            )


def vllm_version() -> str:
    """The installed vLLM's version, or the one-line error naming the pip command that installs it."""
    try:
        return importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        raise HarnessError(f"--backend vllm needs vLLM, an optional extra for GPU machines: {INSTALL}") from None


def engine_spec(options: VLLMOptions) -> dict[str, Any]:
    """What of the engine changes answers (the cells' decoding spec holds it): name, version, tensor parallelism."""
    return {"backend": "vllm", "vllm": vllm_version(), "tensor_parallel_size": options.tensor_parallel_size}


def import_vllm() -> Any:
    vllm_version()
    import vllm

    return vllm


def input_embedding_table(folder: Path, trust_remote_code: bool = False) -> torch.nn.Embedding:
    """The backbone's input-embedding table, read alone from its safetensors (the model is built on the meta
    device only to learn the tensor's name)."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    weight = skeleton.get_input_embeddings().weight
    name = next(n for n, parameter in skeleton.named_parameters(remove_duplicate=False) if parameter is weight)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = [folder / json.loads(index.read_text())["weight_map"].get(name, "model.safetensors")]
    else:
        files = sorted(folder.glob("*.safetensors"))
    for file in files:
        with safe_open(str(file), framework="pt") as weights:
            if name in weights.keys():  # noqa: SIM118  # safe_open has no __contains__
                return torch.nn.Embedding.from_pretrained(weights.get_tensor(name), freeze=True)
    raise HarnessError(f"{folder} has no tensor {name!r} (the input embeddings) in its safetensors; --backend vllm needs it")


@dataclass
class _Engine:
    """The one vLLM engine that the base backend and its LoRA views share, built on first use."""

    build: Callable[[bool], Any]
    llm: Any = None
    lora: bool = False  # whether it was built with LoRA support
    adapter_ids: dict[str, int] = field(default_factory=dict)  # vLLM's int id of each adapter, from 1

    def get(self, lora: bool) -> Any:
        if self.llm is None:
            self.llm, self.lora = self.build(lora), lora
        elif lora and not self.lora:
            raise HarnessError("the vLLM engine was built without LoRA support; run the LoRA methods in their own run")
        return self.llm


class VLLMBackend:
    """Greedy decoding of segment lists on a vLLM engine (see the module docstring)."""

    name = "vllm"

    def __init__(
        self,
        folder: Path,
        model_spec: dict[str, str],
        tokenizer: Any,
        options: VLLMOptions = VLLMOptions(),
        *,
        trust_remote_code: bool = False,
        lora: bool = False,
        engine: Any = None,
        sampling_params: Callable[..., Any] | None = None,
    ) -> None:
        """``lora``: build the engine with LoRA support (the run has LoRA methods). ``engine`` and
        ``sampling_params`` replace ``vllm.LLM`` and ``vllm.SamplingParams`` (the CPU tests' HF-backed engine)."""
        from transformers import AutoConfig, GenerationConfig

        if model_spec["dtype"] not in VLLM_DTYPES:
            raise HarnessError(
                f"--dtype {model_spec['dtype']} is the HF backend's CPU mode; pass --dtype bf16 with --backend vllm"
            )
        self.folder, self.model_spec, self.tokenizer, self.options = Path(folder), model_spec, tokenizer, options
        self.trust_remote_code, self.wants_lora = trust_remote_code, lora
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        generation = GenerationConfig.from_pretrained(folder) if (self.folder / "generation_config.json").is_file() else None
        self.stop_rule = StopRule(eos_ids(tokenizer, config, generation), tokenizer)
        self._context_length = int(getattr(config, "max_position_embeddings", None) or 2048)
        self._engine = _Engine(self._build, llm=engine)
        self._sampling_params = sampling_params
        self._table: torch.nn.Embedding | None = None
        self.adapter: tuple[str, int, str] | None = None  # (name, id, PEFT folder) of a LoRA view

    @classmethod
    def for_model(
        cls,
        model: str,
        dtype: str = "auto",
        device: str | None = None,
        options: VLLMOptions = VLLMOptions(),
        trust_remote_code: bool = False,
    ) -> VLLMBackend:
        """The backend of an alias, local folder or hub id, as `harness generate --backend vllm` names it."""
        from harness.models import load_tokenizer, resolve_dtype, resolve_model_path, weights_hash

        folder, model_id = resolve_model_path(model, trust_remote_code=trust_remote_code)
        spec = {"model": model_id, "weights_hash": weights_hash(folder), "dtype": resolve_dtype(dtype, device)}
        return cls(folder, spec, load_tokenizer(folder, trust_remote_code), options, trust_remote_code=trust_remote_code)

    def spec(self) -> dict[str, Any]:
        return {**engine_spec(self.options), **self.model_spec}

    def context_length(self) -> int:
        return self._context_length

    def max_input_tokens(self, config: DecodingConfig) -> int:
        return config.max_input_tokens or self.context_length() - config.max_new_tokens

    # ---- requests -----------------------------------------------------------------------------------------------

    def embed(self, segments: Sequence[Segment]) -> torch.Tensor:
        """``(length, hidden)`` prompt embeddings of one input in the engine's dtype, on the CPU."""
        if self._table is None:
            self._table = input_embedding_table(self.folder, self.trust_remote_code)
        table = self._table
        parts = [
            segment.rows.detach().to("cpu", table.weight.dtype)
            if isinstance(segment, EmbeddingSegment)
            else table(torch.tensor(segment.ids, dtype=torch.long))
            for segment in segments
            if len(segment)
        ]
        embeds = torch.cat(parts) if parts else table.weight.new_zeros(0, table.weight.shape[1])
        return embeds.to(getattr(torch, VLLM_DTYPES[self.model_spec["dtype"]]))

    def prompt(self, segments: Sequence[Segment]) -> dict[str, Any]:
        """One request: token ids when the input is all tokens (prefix caching applies), else prompt embeddings."""
        if all(isinstance(segment, TokenSegment) for segment in segments):
            return {"prompt_token_ids": [i for segment in segments for i in segment.ids]}  # type: ignore[union-attr]
        return {"prompt_embeds": self.embed(segments)}

    def sampling_kwargs(self, config: DecodingConfig) -> dict[str, Any]:
        """Greedy, at most ``max_new_tokens``, ending on any EOS id; the tokens are decoded here (as HF's are)."""
        return {
            "n": 1,
            "temperature": 0.0,
            "max_tokens": config.max_new_tokens,
            "stop_token_ids": sorted(self.stop_rule.eos_ids),
            "detokenize": False,
        }

    # ---- decoding -----------------------------------------------------------------------------------------------

    def generate(
        self, inputs: Sequence[Sequence[Segment]], config: DecodingConfig = DecodingConfig(), *, reuse_prefix: bool = False
    ) -> list[Generation]:
        """Greedy answers for ``inputs``, in input order; all requests go to the engine at once, which batches
        them itself (``config.batch_size`` does not apply) and reuses shared prefixes (``reuse_prefix`` is moot)."""
        inputs = fit_inputs(inputs, config, self.max_input_tokens(config))
        if any(input_length(segments) == 0 for segments in inputs):
            raise ValueError("an input is empty: there is nothing to continue from")
        llm = self._engine.get(lora=self.wants_lora)
        params = (self._sampling_params or import_vllm().SamplingParams)(**self.sampling_kwargs(config))
        extra: dict[str, Any] = {}
        if self.adapter is not None:
            from vllm.lora.request import LoRARequest

            name, number, path = self.adapter
            extra["lora_request"] = LoRARequest(lora_name=name, lora_int_id=number, lora_path=path)
        outputs = llm.generate([self.prompt(segments) for segments in inputs], params, use_tqdm=False, **extra)
        return [self.generation(out.outputs[0], input_length(s), config) for out, s in zip(outputs, inputs, strict=True)]

    def generation(self, completion: Any, input_tokens: int, config: DecodingConfig) -> Generation:
        """The answer in one of vLLM's ``CompletionOutput``: its token ids cut by the stop rule, decoded here."""
        stopped_on_eos = completion.finish_reason == "stop"  # vLLM leaves a stop token out of token_ids or not
        tokens, stop = self.stop_rule.cut(list(completion.token_ids), config, stopped_on_eos=stopped_on_eos)
        raw = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Generation(postprocess(raw), raw, tuple(tokens), input_tokens, stop)

    def with_lora(self, adapter: Path, checkpoint_hash: str, rank: int) -> VLLMBackend:
        """This backend with a PEFT LoRA adapter applied by the engine (the same engine, built with LoRA support)."""
        if rank > self.options.max_lora_rank:
            fits = next((r for r in LORA_RANKS if r >= rank), None)
            fix = f"add --option vllm.max_lora_rank={fits}" if fits else f"vLLM serves ranks up to {LORA_RANKS[-1]}"
            raise HarnessError(f"LoRA rank r={rank} exceeds vllm.max_lora_rank={self.options.max_lora_rank}; {fix}")
        view = copy.copy(self)
        ids = self._engine.adapter_ids
        view.adapter = (checkpoint_hash, ids.setdefault(checkpoint_hash, len(ids) + 1), str(adapter))
        view.wants_lora = True
        return view

    def _build(self, lora: bool) -> Any:
        vllm = import_vllm()
        options = self.options
        return vllm.LLM(
            model=str(self.folder),
            tokenizer=str(self.folder),
            dtype=VLLM_DTYPES[self.model_spec["dtype"]],
            seed=0,
            trust_remote_code=self.trust_remote_code,
            max_model_len=self._context_length,
            enable_prompt_embeds=True,
            enable_prefix_caching=True,
            gpu_memory_utilization=options.gpu_memory_utilization,
            tensor_parallel_size=options.tensor_parallel_size,
            enforce_eager=options.enforce_eager,
            **({"enable_lora": True, "max_lora_rank": options.max_lora_rank} if lora else {}),
        )


__all__ = ["INSTALL", "VLLMBackend", "VLLMOptions", "engine_spec", "import_vllm", "input_embedding_table", "vllm_version"]
