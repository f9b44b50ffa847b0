"""``lora``: the paper's LoRA baseline, trained by the harness through PEFT with the manual prompt (P1).

``LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"])`` (llama-recipes'
defaults, all configurable with ``--option lora.r=16`` etc.), the same training loop, data, budget and seed as
SPRING, answer-only loss. The adapter is saved in PEFT's own format; evaluation merges it into a separate copy
of the backbone, so the shared base model that other methods use is never modified.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.methods.base import Method, MethodContext
from harness.options import option
from harness.spec import content_hash
from harness.templates import PROMPT

# torch and the training modules are imported where they are used: reading the class's attributes (`harness
# leaderboard`, `harness ls`) must not import torch.
if TYPE_CHECKING:
    import torch

    from harness.training import TrainingConfig, TrainingData


@dataclass(frozen=True)
class LoraOptions:
    """LoRA's options (``--option lora.KEY=VALUE``); training hyper-parameters are TrainingConfig's."""

    r: int = option(8, "the adapter's rank")
    alpha: int = option(32, "lora_alpha, the scale of the adapter's update")
    dropout: float = option(0.05, "lora_dropout while training")
    target_modules: str = option("q_proj,v_proj", "comma-separated module names that get an adapter")

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1 or not 0 <= self.dropout < 1:
            raise HarnessError(
                f"lora needs r >= 1, alpha >= 1 and 0 <= dropout < 1 (got r={self.r}, alpha={self.alpha}, dropout={self.dropout})"
            )
        if not any(m.strip() for m in self.target_modules.split(",")):
            raise HarnessError("lora.target_modules names no module; e.g. --option lora.target_modules=q_proj,v_proj")


class Lora(Method):
    """The prompt baseline's input on a LoRA-adapted backbone."""

    name = "lora"
    template = PROMPT
    Options = LoraOptions
    trained = True
    preserves = True
    adapts_backbone = True

    def __init__(self, *, chat_template: bool = False, **options: Any) -> None:
        super().__init__(chat_template=chat_template)
        self.options = self.Options(**options)
        self.r, self.alpha, self.dropout = self.options.r, self.options.alpha, self.options.dropout
        self.target_modules = tuple(m.strip() for m in self.options.target_modules.split(",") if m.strip())
        self.adapter: Path | None = None  # the adapter folder, once prepared
        self.checkpoint_hash: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "r": self.r,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target_modules": list(self.target_modules),
            "checkpoint_hash": self.checkpoint_hash,
        }

    def peft_config(self) -> Any:
        from peft import LoraConfig, TaskType

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            task_type=TaskType.CAUSAL_LM,
        )

    def prepare(self, context: MethodContext, retriever: str) -> None:
        """Load or train the adapter (PEFT format) for this backbone and retriever."""
        from harness.weights import PEFT_WEIGHTS, adapter_folder, adapter_hash

        config = context.training_config(self.name)
        settings = {k: v for k, v in self.params().items() if k != "checkpoint_hash"}

        def build() -> tuple[Path, str]:
            def train_into(data: TrainingData, folder: Path, spec: dict) -> None:
                self._train(context, data, config, folder, spec)

            describe = f"lora (r={self.r}, retriever {retriever})"
            folder = adapter_folder(context, "lora", "lora", retriever, config, settings, describe, train_into)
            return folder, adapter_hash(folder / PEFT_WEIGHTS)

        self.adapter, self.checkpoint_hash = context.artifact(("lora", retriever, content_hash(self.params())), build)

    def _train(self, context: MethodContext, data: TrainingData, config: TrainingConfig, folder: Path, spec: dict) -> None:
        from peft import get_peft_model

        from harness.generation import HFBackend
        from harness.models import release_memory
        from harness.training import train
        from harness.weights import save_peft

        mixed = context.model_spec["dtype"] == "mixed"
        # Mixed precision trains in bf16 (as SPRING's tokens do); the adapter's own weights stay fp32 (PEFT's autocast).
        copy = context.backbone_copy(dtype="bf16" if mixed else None)
        peft_model = get_peft_model(copy.model, self.peft_config())  # injects the adapter into this copy only
        # Full backprop through every layer holds every layer's activations. A whole batch at once keeps them only at
        # layer boundaries and recomputes the rest in backward (one CPU-default step, 8 questions x 384 tokens, bf16:
        # 4.6 GB without, 2.0 GB with, no slower); micro-batches hold one micro-batch's activations and recompute
        # nothing (fp32, 2 cores: micro-batches of 2 took 8.6 s a step and 2.6 GB, checkpointing 11.7 s and 2.6 GB).
        if not config.micro_batch_size or config.micro_batch_size >= config.batch_size:
            if hasattr(copy.model, "activation_checkpointing_enable"):  # transformers >= 5.x renamed it (the old warns)
                copy.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                copy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.train()  # LoRA dropout on; the backbone's own weights stay frozen
        backend = HFBackend(dataclasses.replace(copy, model=peft_model.get_base_model()))

        log = train(LoraTrainer(peft_model, backend, config), data, config, log=context.log, progress=context.progress)
        save_peft(peft_model, folder, spec, log, copy.model_id)
        del peft_model, backend, copy
        release_memory()

    def checkpoint_location(self, results: Path) -> Path | None:
        return self.adapter  # PEFT's adapter folder (AutoPeftModelForCausalLM.from_pretrained reads it)

    def backend_for(self, context: MethodContext) -> Any:
        """The generation backend with this adapter: vLLM serving it from its PEFT folder under ``--backend vllm``,
        else :meth:`merged_backend`."""
        if context.backend.name == "vllm":
            adapter, checkpoint_hash = self.adapter, self.checkpoint_hash
            return context.artifact(
                self.backend_key(context), lambda: context.backend.with_lora(adapter, checkpoint_hash, self.r)
            )
        return self.merged_backend(context)

    def backend_key(self, context: MethodContext) -> tuple[str, str]:
        assert self.adapter is not None and self.checkpoint_hash is not None, "backend_key() before prepare()"
        return ("lora-vllm" if context.backend.name == "vllm" else "lora-backend", self.checkpoint_hash)

    def merged_backend(self, context: MethodContext) -> Any:
        """The HF backend over a separate copy of the backbone with this adapter merged in (one per adapter)."""

        def build() -> Any:
            from peft import PeftModel

            from harness.generation import HFBackend

            copy = context.backbone_copy()
            merged = PeftModel.from_pretrained(copy.model, str(self.adapter)).merge_and_unload()
            merged.eval()
            merged.requires_grad_(False)
            return HFBackend(dataclasses.replace(copy, model=merged))

        return context.artifact(("lora-backend", self.checkpoint_hash), build)

    @classmethod
    def preserve_checkpoints(cls, loaded: Any, store: Any) -> list[Path]:
        """The store's LoRA adapters trained on this backbone (by the weights hash in their training record)."""
        found = []
        for folder in (Path(store.root) / "checkpoints").glob("lora-*"):
            meta = folder / "harness-training.json"
            if meta.is_file() and json.loads(meta.read_text())["spec"]["backbone"]["weights_hash"] == loaded.weights_hash:
                found.append(folder)
        return found

    @classmethod
    def preserve_model(cls, loaded: Any, store: Any, *, checkpoint: str | None = None, **_: Any) -> tuple[Any, dict, Any]:
        """LoRA for lm-eval: a separate copy of the backbone with the adapter merged in."""
        from peft import PeftModel

        from harness.models import load_model
        from harness.weights import PEFT_WEIGHTS, adapter_hash, latest_checkpoint

        folder = (
            Path(checkpoint)
            if checkpoint
            else latest_checkpoint(cls.preserve_checkpoints(loaded, store), "lora", Path(store.root))
        )
        copy = load_model(str(loaded.path), dtype=loaded.dtype)
        merged = PeftModel.from_pretrained(copy.model, str(folder)).merge_and_unload().eval()
        spec = {"name": "lora", "checkpoint_hash": adapter_hash(folder / PEFT_WEIGHTS)}
        return merged, spec, None


class LoraTrainer:
    """The :class:`harness.training.Trainable` of LoRA: the adapter's weights, the P1 input, the answer-only loss."""

    def __init__(self, peft_model: Any, backend: Any, config: TrainingConfig) -> None:
        self.peft_model, self.backend, self.config = peft_model, backend, config

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.peft_model.parameters() if p.requires_grad]

    def set_training(self, training: bool) -> None:
        self.peft_model.train(training)  # LoRA dropout only while training, not while the dev slice is scored

    def loss(self, batch: Any, rng: Any) -> torch.Tensor:
        from harness.training import answer_loss, draw_inputs

        inputs, answers = draw_inputs(PROMPT, batch, rng, self.backend, self.config)
        return answer_loss(self.backend, inputs, answers, prefix_once=False)  # LoRA changes the passages' states

    def micro_losses(self, batch: Any, rng: Any, size: int) -> Iterator[torch.Tensor]:
        from harness.training import draw_inputs, micro_batch_losses

        inputs, answers = draw_inputs(PROMPT, batch, rng, self.backend, self.config)  # the draws of loss()
        return micro_batch_losses(self.backend, inputs, answers, size, prefix_once=False)
