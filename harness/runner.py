"""`harness run`: expand flags into cells, compute what the store lacks, resume what a crash left.

A cell is dataset x method (+ its token count) x retriever x passages m, on one backbone. Its key is the hash of
its :class:`~harness.spec.CellSpec`; a complete cell is skipped, a partial one resumes. Shared work is done once:
the model is loaded only when some cell needs computing, and one retrieval run per (retriever, dataset) at the
largest m serves every method and m.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from harness import __version__
from harness.corpus import DEFAULT_CORPUS
from harness.datasets import load_examples, sample_examples
from harness.errors import HarnessError
from harness.invocation import command_line, saved_config
from harness.metrics import METRICS, SCORER_VERSION
from harness.options import check_targets, declared_values, option_fields, options_for, parse_options, split_options, typed_value
from harness.plugins import DATASETS, METHODS, plugin_packages
from harness.registry import unknown_name
from harness.segments import render_segments
from harness.spec import CellSpec, example_ids_hash, examples_hash
from harness.store import CellRecord, Store
from harness.training import CPU_TRAINING, CPU_TRAINING_PER_METHOD, TrainingConfig
from harness.types import Example, Passage

# The CPU default's input length, without --limit/--full (its sample size is harness.power's rule; README, "CPU
# budget"): the question's passages get 384 - PASSAGE_RESERVE = 288 tokens of text in every method.
CPU_MAX_INPUT_TOKENS = 384
# The generation engines of `--backend`: transformers forward passes (default), or vLLM (an optional extra).
BACKENDS = ("hf", "vllm")
EXAMPLES_PER_FLUSH = 16  # predictions are written and fsync'ed after each chunk of this many examples


@dataclass(frozen=True)
class RunConfig:
    """Everything `harness run` was asked for, validated."""

    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    retrievers: tuple[str, ...] = ("bm25",)
    passages: tuple[int, ...] = (3,)
    tokens: tuple[int, ...] | None = None  # for methods with virtual tokens; None = the method's default
    shots: tuple[int, ...] | None = None  # for few-shot methods; None = the method's default
    model: str = "smollm2-135m"
    dtype: str = "auto"
    device: str | None = None  # None: cuda when available, else cpu (not keyed, as the batch size is not)
    trust_remote_code: bool = False
    limit: int | None = None  # None = full evaluation split
    seed: int = 0
    force: bool = False
    results: Path = Path("results")
    data_dir: Path | None = None
    corpus: str = "wiki-offline"
    batch_size: int = 8
    max_new_tokens: int = 32
    method_options: tuple[tuple[str, str], ...] = ()  # METHOD.KEY=VALUE pairs for trainable methods
    skip_unavailable: bool = True  # datasets a suite names but that cannot be loaded are skipped with a notice
    max_input_tokens: int | None = None  # passage text beyond this is cut (None: the model's context length)
    cpu_budget: bool = False  # use the CPU training budget (harness.training.CPU_TRAINING)
    backend: str = "hf"  # the generation engine (BACKENDS); training always runs on the HF backend


def select_examples(dataset: str, limit: int | None, seed: int, data_dir: Path | None) -> list[Example]:
    """The evaluated examples: all, or ``limit`` drawn with ``seed`` (kept in file order)."""
    return sample_examples(load_examples(dataset, data_dir=data_dir), dataset, limit, seed)


class RunContext:
    """Shared, lazily built resources of one run: model, backend, retrievers, retrieval runs."""

    def __init__(self, config: RunConfig, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.store = Store(config.results)
        self.log = log
        # What methods may read of the run (harness.methods.base.MethodContext), not the whole config.
        self.seed, self.data_dir, self.results = config.seed, config.data_dir, Path(config.results)
        self.model_name, self.max_passages = config.model, max(config.passages)
        self.progress: Any = None  # the run's rich Progress, when it has one (training adds its bar to it)
        self._retrievers: dict[tuple[str, str], Any] = {}
        self._runs: dict[tuple[str, str, str, str], Any] = {}
        self._artifacts: dict[Any, Any] = {}
        self._corpus_ready = False

    def artifact(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()`` once per run for ``key`` (trained weights shared by every token count and dataset)."""
        if key not in self._artifacts:
            self._artifacts[key] = build()
        return self._artifacts[key]

    def release_backend(self, key: Any) -> None:
        """Free a backend no cell about to run reads: the artifact under ``key`` (an adapted backbone, see
        :meth:`Method.backend_key`), or with ``None`` the base backend's bf16 prefill copy; either is built again
        if asked for later. Freed memory goes back to the OS, so the next phase does not stack on it."""
        from harness.models import release_memory

        if key is not None:
            released = self._artifacts.pop(key, None) is not None
        else:  # only a base backend this run has already built can hold a copy
            base = self.__dict__.get("training_backend")
            released = base is not None and base.drop_bf16_copy()
        if released:
            release_memory()

    @cached_property
    def model_spec(self) -> dict[str, str]:
        """The backbone's identity without loading its weights (the key needs it even for cached cells)."""
        from harness.models import resolve_dtype, resolve_model_path, weights_hash

        folder, model_id = resolve_model_path(self.config.model)
        return {
            "model": model_id,
            "weights_hash": weights_hash(folder),
            "dtype": resolve_dtype(self.config.dtype, self.config.device),
        }

    @property
    def tokenizer(self):
        """The backbone's tokenizer, without loading its weights unless they already are."""
        if "loaded" in self.__dict__:
            return self.loaded.tokenizer
        return self.artifact("tokenizer", self._load_tokenizer)

    def _load_tokenizer(self):
        from transformers import AutoTokenizer

        from harness.models import resolve_model_path

        folder, _ = resolve_model_path(self.config.model)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=self.config.trust_remote_code)

    @cached_property
    def loaded(self):
        from harness.models import load_model

        self.log(f"loading {self.config.model} ...")
        loaded = load_model(
            self.config.model, dtype=self.config.dtype, trust_remote_code=self.config.trust_remote_code, device=self.config.device
        )
        if loaded.spec() != self.model_spec:
            raise RuntimeError(f"loaded model {loaded.spec()} differs from its resolved identity {self.model_spec}")
        return loaded

    @cached_property
    def training_backend(self):
        """The HF backend over the frozen base model: what trained methods train on, whatever generates."""
        from harness.generation import HFBackend

        return HFBackend(self.loaded)

    @cached_property
    def backend(self):
        """The generation backend over the frozen base model (``--backend``)."""
        if self.config.backend == "hf":
            return self.training_backend
        from harness.models import resolve_model_path
        from harness.vllm_backend import VLLMBackend

        folder, _ = resolve_model_path(self.config.model, trust_remote_code=self.config.trust_remote_code)
        lora = any(METHODS.get(name).adapts_backbone for name in self.config.methods)
        options = vllm_options(self.config)
        return VLLMBackend(
            folder, self.model_spec, self.tokenizer, options, trust_remote_code=self.config.trust_remote_code, lora=lora
        )

    def training_config(self, method: str) -> TrainingConfig:
        """The run's training hyper-parameters for ``method`` (``--option spring.lr=...`` etc. over the defaults)."""
        return training_values(self.config, method)

    def backbone_copy(self, dtype: str | None = None):
        """A separate copy of the run's backbone, for a method that must not touch the shared one (LoRA)."""
        from harness.models import load_model

        return load_model(
            self.config.model,
            dtype=dtype or self.config.dtype,
            trust_remote_code=self.config.trust_remote_code,
            device=self.config.device,
        )

    @property
    def decoding(self):
        from harness.generation import DecodingConfig

        engine: tuple[tuple[str, Any], ...] = ()
        if self.config.backend == "vllm":
            from harness.vllm_backend import engine_spec

            engine = tuple(engine_spec(vllm_options(self.config)).items())
        return DecodingConfig(
            max_new_tokens=self.config.max_new_tokens,
            batch_size=self.config.batch_size,
            max_input_tokens=self.config.max_input_tokens,
            engine=engine,
        )

    def retriever(self, name: str, dataset: str):
        from harness.retrieval import RetrieverContext, make_retriever

        if (name, dataset) not in self._retrievers:
            if name != "none" and self.config.corpus == DEFAULT_CORPUS:
                self._ensure_default_corpus()
            options = options_for(self.config.method_options, name)
            context = RetrieverContext(corpus=self.config.corpus, data_dir=self.config.data_dir, dataset=dataset, options=options)
            self._retrievers[(name, dataset)] = make_retriever(name, context)
        return self._retrievers[(name, dataset)]

    def _ensure_default_corpus(self) -> None:
        """Build ``wiki-offline`` from the raw data on first use (a few seconds), so the main job needs no set-up."""
        if not self._corpus_ready:
            from harness.corpus import build_default_corpus
            from harness.paths import data_dir

            report = build_default_corpus(data_dir(self.config.data_dir))
            if report.rebuilt:
                self.log(f"built corpus {DEFAULT_CORPUS}: {len(report.corpus):,} passages in {report.seconds:.1f} s")
            self._corpus_ready = True

    def retrieval(self, name: str, dataset: str, split: str, examples: Sequence[Example], k: int):
        """The cached retrieval run of ``name`` over ``examples`` at depth ``k`` (one per question set)."""
        from harness.retrieval import get_run

        key = (name, dataset, split, example_ids_hash([e.id for e in examples]))
        run = self._runs.get(key)
        if run is None or run.k < k:
            run = get_run(self.retriever(name, dataset), dataset, split, examples, k, self.config.results)
            self._runs[key] = run
        return run


@dataclass(frozen=True)
class Cell:
    """One planned cell: its spec plus what is needed to compute it."""

    spec: CellSpec
    method: Any = field(compare=False)
    retriever: str = "none"
    examples: tuple[Example, ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        return self.spec.key()


def method_instances(name: str, config: RunConfig) -> list[Any]:
    """The method objects for ``name``: one per requested value of the flag the method sweeps (--tokens, --shots)."""
    cls = METHODS.get(name)
    options = constructor_values(name, config)
    if cls.sweep == "tokens":
        return [cls(tokens=k, **options) for k in config.tokens or cls.default_sweep(config.cpu_budget)]
    if cls.sweep == "shots":
        return [cls(shots=n, **options) for n in config.shots or cls.default_sweep(config.cpu_budget)]
    return [cls(**options)]


def vllm_options(config: RunConfig) -> Any:
    """The ``--option vllm.KEY=VALUE`` engine options of a ``--backend vllm`` run, typed and checked."""
    from harness.vllm_backend import VLLMOptions

    return VLLMOptions(**declared_values("vllm", VLLMOptions, options_for(config.method_options, "vllm")))


def constructor_values(name: str, config: RunConfig) -> dict[str, Any]:
    """``--option`` values for method ``name``'s declared options, typed; unknown keys are refused."""
    cls = METHODS.get(name)
    training_keys = option_fields(TrainingConfig) if cls.trained else {}
    return declared_values(name, cls.Options, options_for(config.method_options, name), training_keys)


def training_values(config: RunConfig, method_name: str) -> TrainingConfig:
    """The training hyper-parameters of ``method_name`` in a run of ``config``: the CPU budget when it applies,
    then ``--option METHOD.KEY=VALUE`` for TrainingConfig's fields (checked before any work)."""
    fields = option_fields(TrainingConfig)
    budget = {**CPU_TRAINING, **CPU_TRAINING_PER_METHOD.get(method_name, {})} if config.cpu_budget else {}
    values: dict[str, Any] = {"seed": config.seed, **budget}
    for key, value in options_for(config.method_options, method_name):
        if key in fields:
            values[key] = typed_value(method_name, key, value, fields[key].kind, fields[key].default)
    return TrainingConfig(**values)


def check_options(config: RunConfig) -> None:
    """Every ``--option`` of ``config`` names a method or retriever of the run, an option it has and a value of
    its type. Run before any work: a bad option for the second trained method must not surface after the first
    trained; a retriever's keys are checked by its factory, when the run builds it."""
    engines: tuple[str, ...] = ()
    if config.backend not in BACKENDS:
        raise unknown_name("backend", config.backend, BACKENDS)
    if config.backend == "vllm":
        engines = ("vllm",)
        vllm_options(config)
    elif any(target == "vllm" for target, _, _ in split_options(config.method_options)):
        raise HarnessError("--option vllm.KEY=VALUE configures the vLLM engine; add --backend vllm")
    check_targets(config.method_options, config.methods, (*config.retrievers, *engines))
    for name in dict.fromkeys(config.methods):
        cls = METHODS.get(name)
        cls.Options(**constructor_values(name, config))  # the options' own validation (__post_init__)
        if cls.trained:
            training_values(config, name)


def cell_method_spec(method: Any) -> dict[str, Any]:
    """The method part of a cell spec: flat ``{"name", **params}`` (template identity is keyed separately)."""
    spec = method.spec()
    return {"name": spec["method"], **spec["params"]}


def plan(config: RunConfig, context: RunContext) -> tuple[list[Cell], list[str]]:
    """The cells of ``config`` (in dataset, method, retriever, m order) and notices for skipped datasets."""
    check_options(config)
    cells: list[Cell] = []
    notices: list[str] = []
    decoding_spec = context.decoding.spec()
    for dataset in config.datasets:
        try:
            examples = select_examples(dataset, config.limit, config.seed, config.data_dir)
        except HarnessError as error:
            if not config.skip_unavailable:
                raise
            notices.append(f"skipped {dataset}: {error}")
            continue
        task = DATASETS.get(dataset)
        for method_name in config.methods:
            uses_passages = METHODS.get(method_name).uses_passages
            for retriever_name in config.retrievers if uses_passages else ("none",):
                for method in method_instances(method_name, config):
                    method.prepare(context, retriever_name)  # trained methods load or train their weights
                    context.release_backend(None)  # a bf16 copy training made idles until the cells run
                    try:  # per-dataset inputs (few-shot examples, chat checks)
                        method.prepare_dataset(context, retriever_name, dataset)
                    except HarnessError as error:
                        if not config.skip_unavailable:
                            raise
                        notices.append(f"skipped {method_name} on {dataset}: {error}")
                        continue
                    # Closed-book cells (a method without passages, or the `none` retriever) have m = 0.
                    for m in config.passages if uses_passages and retriever_name != "none" else (0,):
                        retriever_spec = context.retriever(retriever_name, dataset).spec()
                        spec = CellSpec(
                            dataset=dataset,
                            split="eval",
                            example_ids_hash=example_ids_hash([e.id for e in examples]),
                            examples_hash=examples_hash(examples),
                            n_examples=len(examples),
                            retriever={"name": retriever_name, **retriever_spec},
                            passages=m,
                            model=context.model_spec,
                            method=cell_method_spec(method),
                            template_hash=method.template.hash,
                            decoding=decoding_spec,
                            scorer_version=SCORER_VERSION,
                            metrics=tuple(task.metrics),
                            dataset_sha256=task.file_sha256,
                        )
                        cells.append(Cell(spec, method, retriever_name, tuple(examples)))
    return cells, notices


def compute_cell(cell: Cell, context: RunContext, on_batch: Callable[[int], None] = lambda n: None) -> CellRecord | None:
    """Compute (or resume) one cell; ``None`` when the store already holds it complete."""
    return compute_cells([cell], context, on_batch=lambda _cell, n: on_batch(n))[0]


def share_key(cell: Cell, context: RunContext) -> tuple:
    """Cells with equal keys read the same passages of the same questions on the same backend.

    :func:`compute_cells` answers such cells together, so a passages block that their inputs share is prefilled
    once per question instead of once per cell: SPRING at every k of a token sweep always (its inputs are cut as
    if all n tokens were plugged), and prompt and concat too when their inputs are not cut.
    """
    spec = cell.spec
    return (spec.dataset, spec.example_ids_hash, cell.retriever, spec.passages, cell.method.backend_key(context))


def compute_cells(
    cells: Sequence[Cell], context: RunContext, on_batch: Callable[[Cell, int], None] = lambda cell, n: None
) -> list[CellRecord | None]:
    """Compute (or resume) cells of one :func:`share_key` group together, chunk by chunk of examples.

    Each chunk's inputs of every cell go to the backend in one call with prefix reuse, then each cell's rows are
    appended to its own partial folder: a crash leaves every cell resumable at its own point. Returns one record
    per cell (``None`` for a cell the store already held complete).
    """
    if len({share_key(cell, context) for cell in cells}) > 1:
        raise ValueError("compute_cells needs cells with the same dataset, examples, retriever, m and backend")
    config = context.config
    provenance: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "harness_version": __version__,
        "limit": config.limit,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "corpus": config.corpus,
        "command": command_line(),
    }
    config_file = saved_config(config.results)
    if config_file is not None:
        provenance["config"] = config_file
    plugins = plugin_packages([cells[0].spec.dataset], [cells[0].retriever], [cell.method.name for cell in cells])
    if plugins:
        provenance["plugins"] = plugins
    store = context.store
    records: list[CellRecord | None] = [None] * len(cells)
    with ExitStack() as stack:
        open_cells: list[tuple[int, Cell, Any, int]] = []  # (index, cell, writer, examples already stored)
        writers = stack.enter_context(
            store.writing_many(
                [cell.spec for cell in cells], provenance, config.force, [[e.id for e in cell.examples] for cell in cells]
            )
        )
        for index, (cell, writer) in enumerate(zip(cells, writers, strict=True)):
            if writer is None:
                continue
            ids = [e.id for e in cell.examples]
            if ids[: len(writer.done_ids)] != writer.done_ids:
                raise RuntimeError(f"cell {cell.key}: stored predictions are not a prefix of the example order")
            open_cells.append((index, cell, writer, len(writer.done_ids)))
        if not open_cells:
            return records
        first = open_cells[0][1]
        examples, m = first.examples, first.spec.passages
        # One retrieval run per (retriever, question set), at the run's largest m: every m and method reads it.
        depth = max(m, context.max_passages)
        run = context.retrieval(first.retriever, first.spec.dataset, "eval", examples, depth) if m > 0 else None
        # Methods that change the backbone itself (LoRA) bring their own backend; the others share the base one.
        backend = first.method.backend_for(context)
        start = min(done for _, _, _, done in open_cells)
        for begin in range(start, len(examples), EXAMPLES_PER_FLUSH):
            positions = range(begin, min(begin + EXAMPLES_PER_FLUSH, len(examples)))
            passages = {i: run.passages(examples[i].id)[:m] if run is not None else [] for i in positions}
            # Every (cell, example) this chunk still lacks, answered in one backend call.
            jobs = [(slot, i) for slot, (_, _, _, done) in enumerate(open_cells) for i in positions if i >= done]
            inputs = [open_cells[slot][1].method.build_input(examples[i], passages[i], backend.tokenizer) for slot, i in jobs]
            # Each answer with the text of the very input it answered (cut passages, shots, chat wrapping included).
            answered = iter(zip(inputs, backend.generate(inputs, context.decoding, reuse_prefix=m > 0), strict=True))
            for slot, (_, cell, writer, _) in enumerate(open_cells):
                rows = [
                    _prediction_row(cell, examples[i], passages[i], *next(answered), backend.tokenizer)
                    for s, i in jobs
                    if s == slot
                ]
                if rows:
                    writer.append(rows)
                    on_batch(cell, len(rows))
        for index, cell, _, _ in open_cells:
            records[index] = store.finish(cell.spec, [e.id for e in cell.examples])
    return records


def _prediction_row(
    cell: Cell, example: Example, used: Sequence[Passage], segments: Any, generation: Any, tokenizer: Any
) -> dict[str, Any]:
    scores = {name: METRICS[name](generation.prediction, list(example.golds)) for name in cell.spec.metrics}
    return {
        "id": example.id,
        "question": example.question,
        "golds": list(example.golds),
        "passage_ids": [p.id for p in used],
        "prompt": render_segments(segments, tokenizer),  # virtual tokens shown as <T×k>
        "prediction": generation.prediction,
        "raw": generation.raw,
        "input_tokens": generation.input_tokens,
        "stop": generation.stop,
        "metrics": scores,
    }


def run(config: RunConfig, context: RunContext | None = None, progress: Any = None) -> tuple[list[Cell], list[str]]:
    """Plan and compute every cell of ``config``; returns the cells and the notices.

    Cells that read the same passages on the same backend (:func:`share_key`) are computed together.
    """
    context = context or RunContext(config)
    context.progress = progress
    cells, notices = plan(config, context)
    todo = [cell for cell in cells if config.force or not context.store.is_complete(cell.key)]
    groups: dict[tuple, list[Cell]] = {}
    for cell in todo:
        groups.setdefault(share_key(cell, context), []).append(cell)
    computed = 0  # cells this process wrote; another run on the same store may finish some of `todo` first
    if progress is None:
        for group in _backend_by_backend(groups, context):
            computed += sum(record is not None for record in compute_cells(group, context))
        context.log(f"cells: {computed} computed, {len(cells) - computed} read from the store")
        return cells, notices
    from rich.markup import escape

    from harness.leaderboard import method_label

    # No overall bar for a run with nothing to compute; its speed is cells, not examples, per second (not shown).
    overall = progress.add_task("cells", total=len(todo), unit=None, visible=bool(todo))
    done = 0
    for group in _backend_by_backend(groups, context):
        tasks: dict[str, Any] = {}
        for cell in group:
            done += 1
            label = f"cell {done}/{len(todo)} {cell.spec.dataset} {method_label(cell.spec.method)} {cell.retriever} m={cell.spec.passages}"
            tasks[cell.key] = progress.add_task(escape(label), total=len(cell.examples))  # labels hold [...]

        def advance(cell: Cell, n: int, tasks: dict[str, Any] = tasks) -> None:
            progress.advance(tasks[cell.key], n)

        records = compute_cells(group, context, on_batch=advance)
        computed += sum(record is not None for record in records)
        for cell in group:
            progress.update(tasks[cell.key], completed=len(cell.examples))
            progress.advance(overall)
    context.log(f"cells: {computed} computed, {len(cells) - computed} read from the store")
    return cells, notices


def _backend_by_backend(groups: dict[tuple, list[Cell]], context: RunContext) -> Iterator[list[Cell]]:
    """The :func:`share_key` groups, those of one backend back to back: each adapted backbone's (LoRA's) in turn,
    released after its last, then the base backend's. So at most one adapted backbone is held beside the base
    one, and none while the base one runs its many groups (SmolLM2's merged copy is 0.54 GB in fp32, 0.81 GB
    with its bf16 prefill copy; the base's own bf16 copy, dropped by :func:`plan` after training, is made again
    by the first base group). Answers do not depend on the order: every cell's key and answers are its own."""
    adapted = [key for key in dict.fromkeys(key[-1] for key in groups) if key is not None]
    for backend in [*adapted, None]:
        for key, group in groups.items():
            if key[-1] == backend:
                yield group
        if backend is not None:
            context.release_backend(backend)


__all__ = [
    "CPU_MAX_INPUT_TOKENS",
    "Cell",
    "RunConfig",
    "RunContext",
    "compute_cell",
    "check_options",
    "compute_cells",
    "parse_options",
    "plan",
    "run",
    "select_examples",
    "share_key",
    "training_values",
]
