"""``prefix``: the paper's prefix-tuning baseline, n trainable virtual tokens in front of everything, ``[T; R; Q]``.

The input is ``[T, BOS, passages, "Question: {q}\\nAnswer:"]``: the tokens come first, before the tokenizer's BOS
segment (Llama, Mistral; SmolLM2 has none), because that is what PEFT prompt tuning does: it prepends its prompt
embeddings to the whole ``input_ids``, BOS included. Standard prompt tuning trains all n tokens, so ``fixed_k``
defaults to true (k is never sampled); ``--option prefix.fixed_k=false`` samples k as SPRING does (``impl=spring``
only). The start values are the harness's own :func:`harness.methods.spring.initial_tokens` for both impls.

Two implementations, ``--option prefix.impl=spring|peft``, which give the same number
(``tests/test_prefix.py``: identical start, data, batches and answer draws; trained weights agree to float
rounding and the predictions are identical):

* ``spring`` (default): SPRING's own trainer on the frozen shared backbone, the full sequence with gradients (the
  whole input depends on T, so SPRING's passages-once reuse does not apply). Checkpoint:
  ``<results>/checkpoints/prefix-<spec hash>.safetensors``.
* ``peft``: ``peft.get_peft_model(copy, PromptTuningConfig(...))`` on a separate copy of the backbone, trained by
  the same loop (:func:`harness.training.train`) with the loss of PEFT's own forward (right-padded ids, labels
  only on `` answer</s>``). PEFT is created with RANDOM init and then given :func:`initial_tokens`, because PEFT's
  TEXT init tokenizes with special tokens (a BOS as first token on Llama). Checkpoint: PEFT's adapter folder
  ``<results>/checkpoints/prefix-peft-<spec hash>/``.

Either way inference feeds the (n, d) tokens through the harness's generation engine as an embedding segment.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.methods.base import MethodContext
from harness.methods.spring import Spring, SpringOptions, SpringTrainer, initial_tokens, virtual_tokens
from harness.options import option
from harness.registry import unknown_name
from harness.segments import EmbeddingSegment, Segment, TokenSegment
from harness.spec import content_hash
from harness.types import Example, Passage

# torch and the training modules are imported where they are used: reading the class's attributes (`harness
# leaderboard`, `harness ls`) must not import torch.
if TYPE_CHECKING:
    import torch

    from harness.training import TrainingConfig, TrainingData, TrainingLog, TrainItem

IMPLS = ("spring", "peft")


def virtual_first(segments: Sequence[Segment]) -> list[Segment]:
    """``segments`` with the virtual-token segment moved to the very front (before BOS), the rest in order."""
    virtual = [s for s in segments if isinstance(s, EmbeddingSegment)]
    return virtual + [s for s in segments if not isinstance(s, EmbeddingSegment)]


@dataclass(frozen=True)
class PrefixOptions(SpringOptions):
    """prefix's options: SPRING's, with the tokens always first and, by default, all n trained every step."""

    placement: str = option("trq", "always trq: the tokens come first, before BOS")
    fixed_k: bool = option(True, "train all n tokens every step (standard prompt tuning); false samples k as SPRING")
    impl: str = option("spring", "the trainer: spring (the harness's) or peft (PEFT prompt tuning)")

    def __post_init__(self) -> None:
        if self.placement != "trq":
            raise HarnessError(
                f"prefix always puts its tokens first (placement trq), got {self.placement!r}; use spring.placement for others"
            )
        super().__post_init__()
        if self.impl not in IMPLS:
            raise unknown_name("prefix impl", self.impl, IMPLS)
        if self.impl == "peft" and not self.fixed_k:
            raise HarnessError(
                "prefix.impl=peft always trains all n tokens (PEFT prompt tuning cannot sample k); "
                "drop fixed_k=false or use impl=spring"
            )


class Prefix(Spring):
    """Virtual tokens in front of the whole input; ``impl`` picks the trainer (``spring`` or ``peft``)."""

    name = "prefix"
    Options = PrefixOptions
    preserves = False
    # Trained for one fixed k by default (a model per k), so without --tokens it evaluates the headline k only.
    sweep_values_cpu = sweep_values_full = ()
    label_defaults = {"placement": "trq", "fixed_k": True, "impl": "spring"}

    def __init__(self, tokens: int = 50, **options: Any) -> None:
        super().__init__(tokens, **options)
        self.options: PrefixOptions
        self.impl = self.options.impl

    def params(self) -> dict[str, Any]:
        return {**super().params(), "impl": self.impl}

    def prepare(self, context: MethodContext, retriever: str) -> None:
        """Load or train the tokens with this ``impl``."""
        if self.impl == "peft":
            self.weights, self.checkpoint_hash = peft_prompt_tokens(self, context, retriever)
        else:
            self.weights, self.checkpoint_hash = virtual_tokens(
                self, context, retriever, trainer=PrefixTrainer, settings={"impl": "spring"}
            )
        self.check_tokens()

    def build_input(self, example: Example, passages: Sequence[Passage], tokenizer: Any) -> list[Segment]:
        return virtual_first(super().build_input(example, passages, tokenizer))


class PrefixTrainer(SpringTrainer):
    """``impl=spring``: SPRING's trainer (full sequence with gradients) with the tokens before BOS."""

    def inputs(self, batch: Sequence[TrainItem], rng: random.Random) -> tuple[list[list[Segment]], list[tuple[int, ...]]]:
        inputs, answers = super().inputs(batch, rng)
        return [virtual_first(segments) for segments in inputs], answers


class PeftPromptTrainer:
    """``impl=peft``: the :class:`harness.training.Trainable` of a PEFT prompt-tuning model, loss from PEFT's forward."""

    def __init__(self, method: Prefix, peft_model: Any, backend: Any, config: TrainingConfig) -> None:
        self.method, self.peft_model, self.backend, self.config = method, peft_model, backend, config

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.peft_model.parameters() if p.requires_grad]

    def set_training(self, training: bool) -> None:
        """Nothing to switch: the PEFT model stays in eval mode (no dropout), like SPRING's frozen backbone."""

    def loss(self, batch: Sequence[TrainItem], rng: random.Random) -> torch.Tensor:
        import torch

        from harness.training import draw_inputs

        # An n-row placeholder in T's slot: truncation and rng draws are then exactly PrefixTrainer's; PEFT
        # prepends the real tokens itself, in front of everything, which is where virtual_first puts them.
        placeholder = EmbeddingSegment(torch.empty(self.method.n, 0))
        inputs, answers = draw_inputs(self.method.template, batch, rng, self.backend, self.config, placeholder)
        rows = [[i for s in segments if isinstance(s, TokenSegment) for i in s.ids] for segments in inputs]
        width = max(len(row) for row in rows)
        # Right padding: PEFT drops position_ids, so positions are arange(L), right only when each row starts at 0.
        # The pad id is irrelevant (masked out and unlabelled).
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for b, (row, answer) in enumerate(zip(rows, answers, strict=True)):
            ids[b, : len(row)] = torch.tensor(row)
            mask[b, : len(row)] = 1
            labels[b, len(row) - len(answer) : len(row)] = torch.tensor(answer)  # only `` answer</s>`` is scored
        device = self.backend.model.device
        # HF's causal-LM loss is the mean over labelled tokens: the same reduction as harness.training.answer_loss.
        return self.peft_model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss


PEFT_PROMPT_KEY = "prompt_embeddings"  # the tensor PEFT's save_pretrained writes for a prompt-tuning adapter


def peft_prompt_tokens(method: Prefix, context: MethodContext, retriever: str) -> tuple[torch.Tensor, str]:
    """``impl=peft``: the (n, d) fp32 prompt-tuning tokens of PEFT's adapter folder for this backbone and retriever
    (trained when absent), and their content hash. ``method.checkpoint`` names a PEFT prompt-tuning folder to use
    as it is."""
    from harness.checkpoints import tensor_hash
    from harness.weights import adapter_folder, hidden_size

    hidden = hidden_size(context)
    if method.checkpoint:  # an existing PEFT prompt-tuning adapter: nothing to train
        weights = load_peft_prompt(Path(method.checkpoint), hidden_size=hidden)
        method.n = int(weights.shape[0])
        return weights, tensor_hash(weights)
    config = context.training_config(method.name)
    settings = {**method.token_settings(), "impl": method.impl}

    def build() -> tuple[torch.Tensor, str]:
        def train_into(data: TrainingData, folder: Path, spec: dict) -> None:
            train_prefix_peft(
                method, context.backbone_copy(), data, config, folder, spec, log=context.log, progress=context.progress
            )

        describe = f"prefix with PEFT prompt tuning (n={method.n}, retriever {retriever})"
        folder = adapter_folder(context, method.name, "prefix-peft", retriever, config, settings, describe, train_into)
        weights = load_peft_prompt(folder, hidden_size=hidden)
        return weights, tensor_hash(weights)

    return context.artifact(("prefix-peft", retriever, content_hash(settings)), build)


def train_prefix_peft(
    method: Prefix,
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
    import torch
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    from harness.generation import HFBackend
    from harness.training import train
    from harness.weights import save_peft

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
    save_peft(peft_model, folder, spec, record, copy.model_id)
    return record


def load_peft_prompt(folder: Path, *, hidden_size: int) -> torch.Tensor:
    """The (n, d) fp32 prompt embeddings of a PEFT prompt-tuning adapter folder, checked against the backbone."""
    import torch
    from peft import PeftConfig, PeftType
    from safetensors import safe_open

    from harness.weights import PEFT_WEIGHTS

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
