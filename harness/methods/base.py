"""The contract every method implements: turn (question, retrieved passages) into model input segments.

A method owns how it changes the input (like PEFT's prompt tuning owns its virtual tokens); the generation
engine, decoding rules and post-processing are shared, so methods differ only where they are meant to.

Everything the engine may call on a method is declared on :class:`Method`, with a no-op default, so a new method
overrides only what it needs and the engine never probes a plugin with ``hasattr``. What a method may use of the
run is the narrow :class:`MethodContext`, not the runner.
"""

from __future__ import annotations

import dataclasses
from abc import ABC
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from harness.errors import HarnessError
from harness.segments import Segment, build_segments, format_passages
from harness.templates import Template
from harness.types import Example, Passage


class MethodContext(Protocol):
    """What a method's hooks may use of the run (:class:`harness.runner.RunContext` implements it)."""

    seed: int  # the run seed (sample, training, shot draws)
    data_dir: Path | None  # the raw-data folder
    results: Path  # the result store's folder (checkpoints live under it)
    model_name: str  # the backbone as the user named it (alias, folder or hub id)
    max_passages: int  # the largest m of the run

    @property
    def tokenizer(self) -> Any: ...
    @property
    def backend(self) -> Any: ...  # the shared generation backend over the frozen base model (--backend)
    @property
    def training_backend(self) -> Any: ...  # the HF backend over the frozen base model, which training uses
    @property
    def model_spec(self) -> dict[str, str]: ...  # the backbone's identity (id, weights hash, dtype)
    @property
    def progress(self) -> Any: ...  # the run's rich Progress, or None

    def log(self, message: str) -> None: ...
    def artifact(self, key: Any, build: Callable[[], Any]) -> Any: ...  # build() once per run for key
    def retriever(self, name: str, dataset: str) -> Any: ...
    def retrieval(self, name: str, dataset: str, split: str, examples: Sequence[Example], k: int) -> Any: ...
    def training_config(self, method: str) -> Any: ...  # the run's TrainingConfig for a trained method
    def backbone_copy(self, dtype: str | None = None) -> Any: ...  # a LoadedModel no other method shares


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a method that takes none."""


class Method(ABC):
    """A method with its exact template. Subclasses set ``name``, ``template`` and what they differ in.

    ``chat_template`` wraps the rendered template in the tokenizer's chat template (off by default: the paper
    uses none). Subclasses with trainable parts set ``trained``, override :meth:`prepare` and extend
    :meth:`params`; their ``Options`` dataclass declares what ``--option NAME.KEY=VALUE`` may set.
    """

    name: ClassVar[str]
    template: ClassVar[Template]
    uses_passages: ClassVar[bool] = True
    Options: ClassVar[type] = NoOptions  # a frozen dataclass of typed fields made with harness.options.option()
    trained: ClassVar[bool] = False  # has weights that prepare() trains or loads (takes TrainingConfig options too)
    # A swept flag: one instance per value of --tokens (keyword ``tokens``) or --shots (``shots``).
    sweep: ClassVar[str | None] = None
    sweep_default: ClassVar[int | None] = None  # the headline value: the one a leaderboard shows
    # The values a run evaluates when the flag is not given: under the CPU budget, and otherwise (``--full``, a
    # GPU). Empty: the headline value alone.
    sweep_values_cpu: ClassVar[tuple[int, ...]] = ()
    sweep_values_full: ClassVar[tuple[int, ...]] = ()
    preserves: ClassVar[bool] = False  # preserve_model() gives an lm-eval model (`harness preserve --method`)
    adapts_backbone: ClassVar[bool] = False  # generates on the backbone with a LoRA adapter (vLLM serves adapters)
    label_defaults: ClassVar[dict[str, Any]] = {}  # parameter values a leaderboard label leaves out

    def __init__(self, *, chat_template: bool = False) -> None:
        self.chat_template = chat_template

    def params(self) -> dict[str, Any]:
        """Every parameter that changes the inputs (JSON-able)."""
        return {"chat_template": self.chat_template}

    def spec(self) -> dict[str, Any]:
        """Canonical identity for result keys: method, exact template (name, version, hash) and parameters."""
        return {"method": self.name, "template": self.template.spec(), "params": self.params()}

    @classmethod
    def default_sweep(cls, cpu_budget: bool) -> tuple[int, ...]:
        """The values of the swept flag a run evaluates when the user gives none (headline value included)."""
        values = cls.sweep_values_cpu if cpu_budget else cls.sweep_values_full
        if cls.sweep_default is None:
            return values
        return values if cls.sweep_default in values else (*values, cls.sweep_default)

    # ---- hooks the engine calls; the defaults do nothing ------------------------------------------------------

    def prepare(self, context: MethodContext, retriever: str) -> None:  # noqa: B027 - a hook: nothing by default
        """Load or train what the method needs for ``retriever`` (once per run; trained methods' weights)."""

    def prepare_dataset(self, context: MethodContext, retriever: str, dataset: str) -> None:  # noqa: B027 - a hook
        """Per-dataset inputs (few-shot examples, a chat-template check); a HarnessError skips the dataset."""

    def checkpoint_location(self, results: Path) -> Path | None:
        """The file or folder holding the weights :meth:`prepare` trained or found (`harness train` prints it);
        ``None`` for a method without weights, or when it cannot be named."""
        return None

    def backend_for(self, context: MethodContext) -> Any:
        """The generation backend this method's inputs run on: the shared base one unless it changes the model."""
        return context.backend

    def backend_key(self, context: MethodContext) -> Hashable | None:
        """Which backend :meth:`backend_for` gives, to group cells by: ``None`` for the shared base one. A method
        that brings its own returns the :meth:`MethodContext.artifact` key it keeps it under (without building it),
        which the runner releases after the last cell reading it; this default builds the backend to tell."""
        backend = self.backend_for(context)
        return None if backend is context.backend else ("backend", id(backend))

    @classmethod
    def preserve_checkpoints(cls, loaded: Any, store: Any) -> list[Path]:
        """This backbone's checkpoints of the method in ``store`` (`harness preserve` evaluates a method that has one)."""
        return []

    @classmethod
    def preserve_model(cls, loaded: Any, store: Any, **options: Any) -> tuple[Any, dict[str, Any], Any]:
        """``(model, method spec, virtual tokens or None)`` for `harness preserve` (only when ``preserves``)."""
        raise HarnessError(f"method {cls.name!r} has no preservation model; `harness ls methods` shows the ones that have")

    # ---- inputs -----------------------------------------------------------------------------------------------

    def build_input(self, example: Example, passages: Sequence[Passage], tokenizer: Any) -> list[Segment]:
        """The model input as segments. Methods that do not read passages ignore them."""
        return build_segments(
            self.template,
            example.question,
            passages if self.uses_passages else (),
            tokenizer,
            chat_template=self.chat_template,
        )

    def render(self, example: Example, passages: Sequence[Passage]) -> str:
        """The input as plain text (for display; virtual tokens shown as ``T``)."""
        return self.template.render(q=example.question, passages=format_passages(passages) if self.uses_passages else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"
