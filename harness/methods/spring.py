"""``spring``: SPRING's scalable, pluggable virtual tokens (arXiv 2405.19670).

n trainable embeddings (fp32 master copy) sit between the passages block and ``Question: {q}\\nAnswer:``; the
backbone stays frozen. Training draws k ~ U{1..n} per micro-batch (``fixed_k``: always n) and m ~ U{1..5}
passages per example, and scores only `` answer</s>``. Any prefix of the tokens works at inference; with no
tokens the input is exactly the base model's.

Speed: in ``[R; T; Q]`` the passages never depend on the tokens, so the passages block runs once under
``no_grad`` (its KV cache), and only ``[T; Q; A]`` runs with gradients, with logits at answer positions only.
``naive=True`` runs the whole sequence with gradients (the official code's way) for tests and benchmarks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.errors import HarnessError
from harness.methods.base import Method, MethodContext
from harness.options import option
from harness.segments import EmbeddingSegment, Segment, build_segments, tokenize
from harness.templates import INSTRUCTION, SPRING, Template
from harness.types import Example, Passage

# torch and the training modules are imported where they are used: reading the class's attributes (`harness
# leaderboard`, `harness ls`) must not import torch.
if TYPE_CHECKING:
    import torch

    from harness.training import TrainingConfig, TrainingData, TrainingLog, TrainItem

INIT_TEXT = INSTRUCTION  # the paper initialises the tokens from the P1 instruction's embeddings
# The paper's placement ablation: where the tokens T sit relative to passages R and question Q.
PLACEMENTS: dict[str, Template] = {
    "rtq": SPRING,
    "trq": Template("spring-trq", "{T}{passages}Question: {q}\nAnswer:"),
    "rqt": Template("spring-rqt", "{passages}Question: {q}\n{T}Answer:"),
}
INITS = ("prompt", "random")


def initial_tokens(embedding: torch.nn.Embedding, tokenizer: Any, n: int, init: str, seed: int) -> torch.Tensor:
    """(n, d) fp32 start values: the embeddings of the P1 instruction repeated/truncated to n, or random."""
    import torch

    weight = embedding.weight.detach().float()
    if init == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(n, weight.shape[1], generator=generator) * weight.std()
    ids = torch.tensor(tokenize(tokenizer, INIT_TEXT))
    return weight[ids.repeat(-(-n // len(ids)))[:n]].clone().cpu()


@dataclass(frozen=True)
class SpringOptions:
    """SPRING's options (``--option spring.KEY=VALUE``); training hyper-parameters are TrainingConfig's."""

    n: int = option(50, "virtual tokens trained; --tokens k uses the first k of them")
    placement: str = option("rtq", "where the tokens sit: rtq (passages, tokens, question), trq or rqt")
    fixed_k: bool = option(False, "train with all n tokens every step instead of k ~ U{1..n}")
    init: str = option("prompt", "start values: prompt (the P1 instruction's embeddings) or random")
    checkpoint: str | None = option(None, "an official SPRING .pt or a harness .safetensors to use instead of training")

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            from harness.registry import unknown_name

            raise unknown_name("placement", self.placement, PLACEMENTS)
        if self.init not in INITS:
            raise HarnessError(f"unknown init {self.init!r}; use prompt or random")
        if self.n < 1:
            raise HarnessError(f"spring needs n >= 1 virtual tokens (got n={self.n})")


class Spring(Method):
    """Virtual tokens between passages and question; ``tokens`` is k, the prefix used at inference."""

    name = "spring"
    template = SPRING
    Options = SpringOptions
    trained = True
    sweep = "tokens"
    sweep_default = 50
    # One model serves every k (trained with k ~ U[1, n]), and every k shares one passages prefill per question, so
    # a few more k cost decoding only: the CPU default draws the tokens-sweep figure's ends and middle, --full the
    # paper's Fig. 3 points.
    sweep_values_cpu: ClassVar[tuple[int, ...]] = (1, 5, 50)
    sweep_values_full: ClassVar[tuple[int, ...]] = (1, 2, 5, 10, 20, 50)
    preserves = True
    label_defaults = {"placement": "rtq", "fixed_k": False}

    def __init__(self, tokens: int = 50, *, chat_template: bool = False, **options: Any) -> None:
        super().__init__(chat_template=chat_template)
        self.options = self.Options(**options)
        self.tokens, self.n = int(tokens), self.options.n
        self.placement, self.fixed_k, self.init = self.options.placement, self.options.fixed_k, self.options.init
        self.checkpoint = self.options.checkpoint
        if not 1 <= self.tokens <= self.n:
            raise HarnessError(f"{self.name} uses k = 1..n virtual tokens; got k={self.tokens} with n={self.n}")
        self.template = PLACEMENTS[self.placement]  # type: ignore[misc]  # the placement picks this instance's template
        self.weights: torch.Tensor | None = None  # (n, d) once prepared
        self.checkpoint_hash: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "tokens": self.tokens,
            "n": self.n,
            "placement": self.placement,
            "fixed_k": self.fixed_k,
            "init": self.init,
            "checkpoint_hash": self.checkpoint_hash,
            # Input truncation budgets all n tokens whatever k is (see build_input); keyed because it changes inputs.
            "reserve": self.n,
        }

    def token_settings(self) -> dict[str, Any]:
        """The virtual-token settings every token checkpoint's training spec and metadata carry."""
        return {"n": self.n, "placement": self.placement, "fixed_k": self.fixed_k, "init": self.init}

    def prepare(self, context: MethodContext, retriever: str) -> None:
        """Load or train the tokens for this backbone and retriever."""
        self.weights, self.checkpoint_hash = virtual_tokens(self, context, retriever)
        self.check_tokens()

    def checkpoint_location(self, results: Path) -> Path | None:
        from harness.checkpoints import find_checkpoint

        if self.checkpoint:  # an official or exported file passed with --option spring.checkpoint=PATH
            return Path(self.checkpoint)
        if self.checkpoint_hash is None:
            return None
        return find_checkpoint(Path(results) / "checkpoints", self.checkpoint_hash)

    def check_tokens(self) -> None:
        """The prepared checkpoint has at least k tokens."""
        if self.weights is not None and self.weights.shape[0] < self.tokens:
            raise HarnessError(
                f"the {self.name} checkpoint ({self.checkpoint or 'trained'}) has {self.weights.shape[0]} virtual tokens; "
                f"cannot use k={self.tokens}: pass --tokens 1..{self.weights.shape[0]}"
            )

    @classmethod
    def preserve_checkpoints(cls, loaded: Any, store: Any) -> list[Path]:
        """The store's SPRING token files trained on this backbone (by the weights hash in their metadata)."""
        from safetensors import safe_open

        found = []
        for file in (Path(store.root) / "checkpoints").glob(f"{cls.name}-*.safetensors"):
            if "-" in file.name.removeprefix(f"{cls.name}-"):  # another method's file (spring-plus-<hash>)
                continue
            with safe_open(str(file), framework="pt") as handle:
                if (handle.metadata() or {}).get("backbone_weights_hash") == loaded.weights_hash:
                    found.append(file)
        return found

    @classmethod
    def preserve_model(
        cls,
        loaded: Any,
        store: Any,
        *,
        checkpoint: str | None = None,
        plugged: bool | None = None,
        tokens: int | None = None,
        **_: Any,
    ) -> tuple[Any, dict, Any]:
        """SPRING for lm-eval: the base model, plus its trained tokens when ``plugged``."""
        from harness.checkpoints import import_official, load_virtual_tokens, tensor_hash
        from harness.weights import latest_checkpoint

        path = (
            Path(checkpoint)
            if checkpoint
            else latest_checkpoint(cls.preserve_checkpoints(loaded, store), "spring", Path(store.root))
        )
        hidden = loaded.model.get_input_embeddings().weight.shape[1]
        if path.suffix == ".pt":
            weights = import_official(path, hidden_size=hidden)
        else:
            weights, _ = load_virtual_tokens(path, hidden_size=hidden, weights_hash=loaded.weights_hash)
        k = tokens or weights.shape[0]
        spec = {"name": "spring", "plugged": bool(plugged), "tokens": k, "checkpoint_hash": tensor_hash(weights)}
        return loaded.model, spec, weights[:k] if plugged else None

    def virtual(self, k: int | None = None, weights: torch.Tensor | None = None, reserve: int = 0) -> EmbeddingSegment:
        rows = self.weights if weights is None else weights
        if rows is None:
            raise RuntimeError("spring tokens are not prepared: call prepare() first")
        return EmbeddingSegment(rows[: self.tokens if k is None else k], reserve=reserve)

    def build_input(self, example: Example, passages: Sequence[Passage], tokenizer: Any) -> list[Segment]:
        # Under --max-input-tokens the passages are cut as if all n tokens were plugged: every k of a sweep then
        # reads the same passage text, compares like with like, and shares one prefill of it.
        virtual = self.virtual(reserve=self.n)
        return build_segments(self.template, example.question, passages, tokenizer, virtual=virtual)


def virtual_tokens(
    method: Spring,
    context: MethodContext,
    retriever: str,
    *,
    backend: Any = None,
    base: dict[str, Any] | None = None,
    trainer: type | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, str]:
    """The (n, d) tokens of ``method`` for this backbone and retriever, and their content hash.

    ``backend``/``base``: train on another frozen model than the shared base one (SPRING+ on a LoRA model),
    identified by ``base`` in the training spec. ``trainer``: the Trainable class (default :class:`SpringTrainer`);
    ``settings``: further settings that change training (prefix's ``impl``), in the spec and the metadata.
    """
    from harness.checkpoints import import_official, tensor_hash
    from harness.training import train
    from harness.weights import hidden_size, token_checkpoint

    if method.checkpoint:  # an official release or an exported checkpoint: nothing to train
        hidden = hidden_size(context)
        checkpoint = method.checkpoint
        weights = context.artifact(
            ("official", checkpoint),
            lambda: import_official(checkpoint, hidden_size=hidden, weights_hash=context.model_spec["weights_hash"]),
        )
        if weights.shape[0] != method.n:
            method.n = int(weights.shape[0])
        return weights, tensor_hash(weights)
    config = context.training_config(method.name)

    def train_tokens(data: TrainingData) -> tuple[torch.Tensor, TrainingLog]:
        trained_on = backend or context.training_backend
        embedding = trained_on.model.get_input_embeddings()
        initial = initial_tokens(embedding, trained_on.tokenizer, method.n, method.init, config.seed)
        trainable = (trainer or SpringTrainer)(method, trained_on, initial, config)
        log = train(trainable, data, config, log=context.log, progress=context.progress)
        return trainable.weight, log

    return token_checkpoint(
        context,
        method.name,
        retriever,
        config,
        settings={**method.token_settings(), **(settings or {})},
        describe=f"{method.name} (n={method.n}, {method.placement}, retriever {retriever})",
        train=train_tokens,
        base=base,
    )


class SpringTrainer:
    """The :class:`harness.training.Trainable` of SPRING: an (n, d) fp32 parameter and the answer-only loss."""

    def __init__(self, method: Spring, backend: Any, initial: torch.Tensor, config: TrainingConfig, naive: bool = False) -> None:
        import torch

        self.method, self.backend, self.config = method, backend, config
        self.weight = torch.nn.Parameter(initial.to(backend.model.device, torch.float32).clone())
        # Prefix-once needs the passages before the tokens; with T first the whole input depends on T.
        self.naive = naive or method.placement == "trq"
        self.all_logits = naive  # the official code's full-logits path, only when asked for (tests, benchmark)
        # The frozen backbone gives the dev slice's passages blocks the same cache at every evaluation (the draws
        # are the same each time): computed at the first, reused after. Training batches never repeat in an epoch.
        self.scoring_dev = False
        self._dev_blocks: dict[tuple, Any] = {}

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.weight]

    def set_training(self, training: bool) -> None:
        """The frozen backbone always runs in eval mode; off training is the dev slice, whose blocks are reused."""
        self.scoring_dev = not training

    def inputs(self, batch: Sequence[TrainItem], rng: random.Random) -> tuple[list[list[Segment]], list[tuple[int, ...]]]:
        """The segment lists (answer last) and answer ids of one micro-batch; k is drawn once per batch."""
        from harness.training import draw_inputs

        k = self.method.n if self.method.fixed_k else rng.randint(1, self.method.n)
        virtual = self.method.virtual(k, self.weight)
        return draw_inputs(self.method.template, batch, rng, self.backend, self.config, virtual)

    def loss(self, batch: Sequence[TrainItem], rng: random.Random) -> torch.Tensor:
        inputs, answers = self.inputs(batch, rng)
        return self.answer_loss(inputs, answers)

    def micro_losses(self, batch: Sequence[TrainItem], rng: random.Random, size: int) -> Iterator[torch.Tensor]:
        from harness.training import micro_batch_losses

        inputs, answers = self.inputs(batch, rng)  # the draws of loss(): k once for the whole batch
        return micro_batch_losses(self.backend, inputs, answers, size, prefix_once=not self.naive, all_logits=self.all_logits)

    def answer_loss(self, inputs: Sequence[Sequence[Segment]], answers: Sequence[tuple[int, ...]]) -> torch.Tensor:
        from harness.training import answer_loss

        prefill = self._dev_prefill if self.scoring_dev else None
        return answer_loss(self.backend, inputs, answers, prefix_once=not self.naive, all_logits=self.all_logits, prefill=prefill)

    def _dev_prefill(self, prefixes: list[list[Segment]]) -> Any:
        """The passages blocks' cache of one dev batch: computed once, the same tensors at every evaluation."""
        from harness.generation import prefix_key

        key = tuple(prefix_key(prefix) for prefix in prefixes)
        if key not in self._dev_blocks:
            self._dev_blocks[key] = self.backend.prefill(prefixes)
        return self._dev_blocks[key]
