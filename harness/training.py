"""The one training loop shared by trained methods (SPRING, LoRA, ...), and their training data.

The loop is deliberately short: AdamW, linear warm-up then linear decay, gradient clipping, a loss the method
computes on a micro-batch. A method plugs in through :class:`Trainable`; what it trains and how its loss is
computed (answer-only) is its own business.

Convergence is measured, not assumed: a dev slice held out of the training pools (disjoint, recorded) is scored
every ``eval_every`` training questions with the same inputs each time; training stops once the dev loss has not
improved by ``min_delta`` for ``patience`` evaluations, and the best weights are kept. The curve (step, questions
seen, train loss, dev loss) goes into the checkpoint's record; ``harness plot training`` draws it.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from harness.datasets import load_examples
from harness.errors import HarnessError
from harness.registry import did_you_mean
from harness.segments import Segment, split_after_passages
from harness.spec import content_hash, example_ids_hash
from harness.types import Example, Passage

if TYPE_CHECKING:  # torch is imported by the functions that run (TrainingConfig is read without it: `harness ls`)
    import torch

DEFAULT_TRAINING_MIX = "indomain"  # the suite trained methods train on unless train_datasets names another mix
TRAIN_PASSAGES = ("auto", "retrieved", "answer-bearing")  # train_passages' choices (TrainingConfig)
ANSWER_BEARING_PREFIX = "answer-bearing:"  # answer-bearing:nq,squad: for those datasets of the mix only

# The training budget of the CPU default (2 cores, ~15 minutes for the whole main job); --full lifts it.
# At most `examples` questions, fewer when the dev loss plateaus first (README, "CPU budget"). Early stopping is
# method-neutral: a trained method stops once 64 more questions lower its dev loss by less than 0.05. Measured on
# the default backbone (BM25 top-3, lr 2e-3): SPRING's dev loss was 5.55, 5.11, 4.88, 4.84 at 64..256 questions
# (it flattens at ~192, where the cap is); LoRA's 3.38, 3.29, 3.23 at 64..192, but its steps cost ~3x SPRING's,
# so its cap is 128 questions to keep the main job within 15 minutes on 2 cores.
CPU_TRAINING = {
    "examples": 192,
    "max_passages": 3,
    "max_input_tokens": 384,
    "dev_examples": 32,
    "eval_every": 64,
    "patience": 1,
    "min_delta": 0.05,
}
# LoRA trains in micro-batches of 2 without recomputing activations: 1.35x faster than checkpointing on fp32 CPUs at
# the same peak memory (harness/methods/lora.py). SPRING in micro-batches of 4: the main job's training (fp32, AMD
# EPYC) peaked at 2.71 GB instead of 3.95 GB in the same 217 s, with the same losses to the 4 decimals logged.
CPU_TRAINING_PER_METHOD: dict[str, dict[str, Any]] = {
    "spring": {"micro_batch_size": 4},
    "lora": {"examples": 128, "micro_batch_size": 2},
}


@dataclass(frozen=True)
class TrainItem:
    """One training question with its retrieved passages (best first, up to the maximum m)."""

    example: Example
    passages: tuple[Passage, ...]


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of a training run. All of them are part of the training-spec hash."""

    examples: int = 600  # budget: at most this many questions drawn from the mixed in-domain pools
    epochs: int = 1
    batch_size: int = 8
    lr: float = 2e-3  # the paper uses 1e-4 for 7B models over ~100k examples; a CPU budget needs more
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    max_passages: int = 5  # each example uses m ~ U{1..max_passages} of its retrieved passages
    max_input_tokens: int | None = None  # passage text beyond this is cut (None: the model's context length)
    seed: int = 0
    dev_examples: int = 64  # a dev slice held out of the same pools, disjoint from training (0: none)
    eval_every: int = 64  # training questions between dev-loss evaluations (0: never; no early stopping)
    patience: int = 3  # evaluations without a dev-loss gain of min_delta before stopping (0: never stop early)
    min_delta: float = 0.01
    # The training pools: a suite or comma-separated datasets (the paper's in-domain mix by default). Keyed
    # through the training data (its datasets and example ids), not here, so the default keeps earlier keys.
    train_datasets: str = DEFAULT_TRAINING_MIX
    # Which training questions keep their retrieved passages: "retrieved" (all drawn ones, the paper's setting),
    # "answer-bearing" (only those with a gold answer among their passages; same for every trained method),
    # "answer-bearing:nq,squad" (so for those datasets of the mix only), or "auto" (the default): answer-bearing
    # for each dataset whose training passages hold the answer far less often than its evaluation passages do
    # (harness.weights.resolve_train_passages), retrieved for the others. Keyed as resolved.
    train_passages: str = "auto"
    # The data-parallel processes that train (torchrun / accelerate launch); their draws and averaged gradients
    # give other weights than one process, so it is keyed (when not 1) and a run names it to find them.
    processes: int = 1
    # Questions per forward/backward pass inside a batch (0: the whole batch at once). The gradient is the same
    # token-weighted mean as the whole batch's, up to float rounding (so it is keyed when set); activations are held
    # for one micro-batch only, which lets LoRA train without recomputing them (README, "CPU budget").
    micro_batch_size: int = 0

    def spec(self) -> dict[str, Any]:
        from harness.segments import CUT_VERSION, PASSAGE_RESERVE

        # Under a cut, the passage budget rule (segments.fit_input) shapes every training input: keyed as at inference.
        cut = {"passage_reserve": PASSAGE_RESERVE, "cut_version": CUT_VERSION} if self.max_input_tokens else {}
        spec = {**asdict(self), **cut}
        del spec["train_datasets"]
        if self.train_passages == "auto":
            raise ValueError("train_passages=auto is resolved (harness.weights.resolve_train_passages) before keying")
        if self.train_passages == "retrieved":  # keeps the keys it had before the option existed
            del spec["train_passages"]
        if self.processes == 1:
            del spec["processes"]
        if not self.micro_batch_size:  # keeps the keys checkpoints had before the option existed
            del spec["micro_batch_size"]
        return spec

    @property
    def mix(self) -> tuple[str, ...]:
        """The datasets of ``train_datasets``."""
        from harness.suites import resolve_suite

        return resolve_suite(self.train_datasets)

    @property
    def answer_bearing(self) -> tuple[str, ...]:
        """The datasets of the mix whose training questions keep only answer-bearing passages."""
        if self.train_passages == "answer-bearing":
            return self.mix
        if self.train_passages.startswith(ANSWER_BEARING_PREFIX):
            return tuple(self.train_passages.removeprefix(ANSWER_BEARING_PREFIX).split(","))
        return ()

    @property
    def mix_is_chosen(self) -> bool:
        """True when the user named the mix: then every dataset of it must load (no silent skip)."""
        return self.train_datasets != DEFAULT_TRAINING_MIX

    def __post_init__(self) -> None:
        for name in ("examples", "epochs", "batch_size", "max_passages", "processes"):
            if getattr(self, name) < 1:
                raise HarnessError(f"training option {name} must be >= 1 (got {getattr(self, name)})")
        for name in ("dev_examples", "eval_every", "patience", "micro_batch_size"):
            if getattr(self, name) < 0:
                raise HarnessError(f"training option {name} must be >= 0 (got {getattr(self, name)})")
        if not self.lr > 0:
            raise HarnessError(f"training option lr must be > 0 (got {self.lr})")
        if self.train_passages.startswith(ANSWER_BEARING_PREFIX):
            named = self.train_passages.removeprefix(ANSWER_BEARING_PREFIX).split(",")
            outside = [name for name in named if name not in self.mix]
            if outside or not all(named):
                raise HarnessError(
                    f"training option train_passages={self.train_passages}: {', '.join(outside) or 'an empty name'} "
                    f"is not in the training mix ({', '.join(self.mix)})"
                )
        elif self.train_passages not in TRAIN_PASSAGES:
            raise HarnessError(
                f"training option train_passages={self.train_passages} is none of {', '.join(TRAIN_PASSAGES)}."
                f"{did_you_mean(self.train_passages, TRAIN_PASSAGES)}"
            )
        from harness.plugins import DATASETS

        for name in self.mix:  # unknown names: resolve_suite's did-you-mean
            if DATASETS.get(name).held_out:
                raise HarnessError(
                    f"training option train_datasets={self.train_datasets}: {name} is a held-out dataset, never "
                    "trained on; choose in-domain ones (e.g. train_datasets=nq,triviaqa)"
                )


@dataclass(frozen=True)
class TrainingData:
    """The mixed training set and its identity."""

    items: tuple[TrainItem, ...]
    datasets: tuple[str, ...]
    skipped: tuple[str, ...]  # datasets of the mix that could not be loaded (with the reason)
    dev: tuple[TrainItem, ...] = ()  # held out of the same pools, disjoint from ``items``: the dev-loss slice
    counts: tuple[tuple[str, int, int], ...] = ()  # (dataset, training questions, dev questions), in mix order
    # (dataset, answer recall@m of its training passages, of its evaluation sample's): the training side from the
    # drawn questions' passages, the evaluation side added by the engine (harness.weights), which holds the run's
    # sample (None where unknown); not keyed: the ids and passages are.
    answer_recall: tuple[tuple[str, float, float | None], ...] = ()
    choice: str = ""  # why these training passages (train_passages=auto's decision), printed, not keyed
    drawn: tuple[tuple[str, int], ...] = ()  # (dataset, questions drawn to find them): more than kept under answer-bearing

    def describe(self) -> str:
        """The mix as printed before training: ``nq 96 (+16 dev), triviaqa 96 (+16 dev)``."""
        drawn = dict(self.drawn)

        def one(name: str, n: int, dev: int) -> str:
            kept = f"{n + dev} of {drawn[name]} drawn" if drawn.get(name, n + dev) != n + dev else ""
            notes = "; ".join(part for part in (f"+{dev} dev" if dev else "", kept) if part)
            return f"{name} {n}" + (f" ({notes})" if notes else "")

        return ", ".join(one(*count) for count in self.counts)

    def describe_recall(self, m: int) -> str:
        """``answer recall@3 of the passages, training / evaluation: nq 0.21 / 0.64, ...`` ("" without passages)."""
        if not self.answer_recall:
            return ""
        pairs = ", ".join(
            f"{name} {train:.2f} / {'-' if evaluation is None else f'{evaluation:.2f}'}"
            for name, train, evaluation in self.answer_recall
        )
        return f"answer recall@{m} of the passages, training / evaluation: {pairs}"

    def spec(self) -> dict[str, Any]:
        spec = _items_spec(self.items)
        if self.dev:
            spec["dev"] = _items_spec(self.dev)
        return {"datasets": list(self.datasets), **spec}


def _items_spec(items: Sequence[TrainItem]) -> dict[str, Any]:
    ids = [item.example.id for item in items]
    passages = [[p.id for p in item.passages] for item in items]
    return {"n": len(ids), "ids_hash": example_ids_hash(ids), "passages_hash": content_hash(passages)}


def training_data(
    datasets: Sequence[str],
    budget: int,
    seed: int,
    retrieve: Callable[[str, Sequence[Example]], Mapping[str, Sequence[Passage]]] | None,
    data_dir: Any = None,
    dev: int = 0,
    strict: bool = False,
    answer_bearing: bool | Collection[str] = False,
) -> TrainingData:
    """``budget`` questions drawn evenly (seeded) from the training pools of ``datasets``, with their passages,
    and ``dev`` more, drawn first and disjoint from them, as the dev slice.

    ``retrieve(dataset, examples) -> {example id: passages}`` serves the passages (the evaluation retriever's
    cached runs); ``None`` trains without passages (closed-book tokens). ``strict``: a pool that cannot be loaded
    is an error (a mix the user chose), not a skipped dataset (the default mix, where msmarco is hub-only).
    ``answer_bearing`` (True: every dataset; or the datasets it names): only questions whose retrieved passages
    hold a gold answer are kept, drawn in the same
    seeded order until the budget is met or the pool is exhausted (``drawn`` counts how many were looked at).
    """
    pools: dict[str, list[Example]] = {}
    skipped: list[str] = []
    for name in datasets:
        try:
            pools[name] = load_examples(name, "train", data_dir=data_dir)
        except HarnessError as error:
            if strict:
                raise HarnessError(f"training pool {name} cannot be loaded: {error}") from None
            skipped.append(f"{name}: {error}")
    if not pools:
        raise HarnessError(f"no training pool could be loaded from {', '.join(datasets)}")
    rng = random.Random(seed)
    dev_share, dev_extra = divmod(dev, len(pools))
    share, extra = divmod(budget, len(pools))
    items: list[TrainItem] = []
    dev_items: list[TrainItem] = []
    counts: list[tuple[str, int, int]] = []
    drawn_counts: list[tuple[str, int]] = []
    recall: list[tuple[str, float, float | None]] = []
    for index, (name, pool) in enumerate(pools.items()):
        order = rng.sample(range(len(pool)), len(pool))  # one seeded shuffle: dev first, then training
        n_dev = min(len(pool) // 2, dev_share + (index < dev_extra))
        n_train = min(len(pool) - n_dev, share + (index < extra))
        passages: Mapping[str, Sequence[Passage]]
        filtered = answer_bearing is True or (not isinstance(answer_bearing, bool) and name in answer_bearing)
        if filtered and retrieve is not None:
            kept, passages, drawn = _answer_bearing(name, pool, order, n_dev + n_train, retrieve)
            n_dev = min(n_dev, len(kept) // 2)
            dev_chosen, chosen = sorted(kept[:n_dev]), sorted(kept[n_dev : n_dev + n_train])
        else:
            dev_chosen, chosen = sorted(order[:n_dev]), sorted(order[n_dev : n_dev + n_train])
            passages = retrieve(name, [pool[i] for i in dev_chosen + chosen]) if retrieve is not None else {}
            drawn = len(dev_chosen) + len(chosen)
        dev_items += [TrainItem(pool[i], tuple(passages.get(pool[i].id, ()))) for i in dev_chosen]
        items += [TrainItem(pool[i], tuple(passages.get(pool[i].id, ()))) for i in chosen]
        counts.append((name, len(chosen), len(dev_chosen)))
        drawn_counts.append((name, drawn))
        if retrieve is not None:
            recall.append((name, _answer_share(name, [pool[i] for i in dev_chosen + chosen], passages), None))
    return TrainingData(
        tuple(items),
        tuple(pools),
        tuple(skipped),
        tuple(dev_items),
        tuple(counts),
        answer_recall=tuple(recall),
        drawn=tuple(drawn_counts),
    )


def _holds_answer(example: Example, passages: Sequence[Passage], regex: bool) -> bool:
    """Whether one of ``passages`` holds a gold answer of ``example`` (DPR has_answer, as retrieval recall)."""
    from harness.retrieval import has_answer

    return any(has_answer(p.text, example.golds, regex) for p in passages)


def _answer_share(name: str, examples: Sequence[Example], passages: Mapping[str, Sequence[Passage]]) -> float:
    """The fraction of ``examples`` with a gold answer in their passages."""
    from harness.retrieval import golds_are_regexes

    regex = golds_are_regexes(name)
    found = sum(_holds_answer(e, passages.get(e.id, ()), regex) for e in examples)
    return found / len(examples) if examples else 0.0


def _answer_bearing(
    name: str,
    pool: Sequence[Example],
    order: Sequence[int],
    wanted: int,
    retrieve: Callable[[str, Sequence[Example]], Mapping[str, Sequence[Passage]]],
) -> tuple[list[int], dict[str, Sequence[Passage]], int]:
    """The first ``wanted`` questions of ``order`` whose retrieved passages hold a gold answer, drawn in chunks;
    returns their pool indexes (in draw order), every drawn question's passages, and how many were drawn."""
    from harness.retrieval import golds_are_regexes

    regex = golds_are_regexes(name)
    kept: list[int] = []
    passages: dict[str, Sequence[Passage]] = {}
    position = 0
    while len(kept) < wanted and position < len(order):
        chunk = list(order[position : position + max(4 * (wanted - len(kept)), 64)])
        position += len(chunk)
        found = retrieve(name, [pool[i] for i in chunk])
        passages.update(found)
        for i in chunk:
            if len(kept) < wanted and _holds_answer(pool[i], found.get(pool[i].id, ()), regex):
                kept.append(i)
    return kept, passages, position


class Trainable(Protocol):
    """What the loop trains: some parameters, an answer-only loss on a batch, and a switch for the
    dropout-like behaviour of what it wraps (off while the dev slice is scored).

    A trainable that can split a batch (``micro_batch_size``) also has ``micro_losses(batch, rng, size)``: the
    batch's loss as terms over micro-batches of ``size`` questions that sum to :meth:`loss` (see
    :func:`micro_batch_losses`)."""

    def parameters(self) -> list[torch.nn.Parameter]: ...

    def loss(self, batch: Sequence[TrainItem], rng: random.Random) -> torch.Tensor: ...

    def set_training(self, training: bool) -> None: ...


def backward(trainable: Trainable, batch: Sequence[TrainItem], rng: random.Random, micro_batch_size: int) -> float:
    """Accumulate the gradients of ``trainable``'s loss on ``batch`` and return the loss; with ``micro_batch_size``,
    one micro-batch's graph at a time (the same gradient: the terms are token-weighted to sum to the batch's mean)."""
    if not micro_batch_size or micro_batch_size >= len(batch):
        loss = trainable.loss(batch, rng)
        loss.backward()
        return float(loss.item())
    total = 0.0
    for term in trainable.micro_losses(batch, rng, micro_batch_size):  # type: ignore[attr-defined]  # checked in train()
        term.backward()
        total += float(term.item())
    return total


@dataclass
class TrainingLog:
    """What a run printed, kept with the checkpoint."""

    trainable_parameters: int = 0
    steps: int = 0
    seconds: float = 0.0
    examples_per_second: float = 0.0
    losses: list[float] = field(default_factory=list)
    # One point per dev evaluation: {"step", "examples", "train_loss" (mean since the last point), "dev_loss"}.
    curve: list[dict[str, float]] = field(default_factory=list)
    dev_examples: int = 0
    best_step: int = 0  # the step whose weights were kept (the lowest dev loss)
    stopped_early: bool = False
    planned_steps: int = 0
    # Per dataset of the mix: the answer recall@m of the training passages and of the evaluation sample's, at
    # m = max_passages (TrainingData.answer_recall); a large gap means training reads passages that rarely hold
    # the answer while evaluation reads ones that do.
    answer_recall: dict[str, dict[str, float | None]] = field(default_factory=dict)


def batches(items: Sequence[TrainItem], size: int, rng: random.Random) -> Iterator[list[TrainItem]]:
    """Shuffled micro-batches of similar input length (sorted within windows of 8 batches, as HF's
    ``group_by_length``), so left padding wastes little compute; the order of the batches is shuffled too."""
    order = list(range(len(items)))
    rng.shuffle(order)
    length = [sum(len(p.text) for p in item.passages) for item in items]
    window = 8 * size
    chunks = []
    for begin in range(0, len(order), window):
        part = sorted(order[begin : begin + window], key=lambda i: length[i])
        chunks += [part[j : j + size] for j in range(0, len(part), size)]
    rng.shuffle(chunks)
    for chunk in chunks:
        yield [items[i] for i in chunk]


def _silent(message: str) -> None:
    """The log of a training process other than the main one."""


def train(
    trainable: Trainable, data: TrainingData, config: TrainingConfig, log: Callable[[str], None] = print, progress: Any = None
) -> TrainingLog:
    """Train ``trainable`` on ``data``: AdamW, warm-up + linear decay, clipping, dev-loss early stopping.

    ``progress``: a running :class:`rich.progress.Progress` to add the training bar to (``harness run`` has one);
    without it the loop shows its own. Returns the loss curve; the trainable ends with its best dev weights.
    """
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from harness.distributed import average_gradients, processes, weighted_mean

    group = processes()  # under `accelerate launch` / torchrun: each process takes its share of every batch
    if group.world != config.processes:
        if group.world > 1:
            raise HarnessError(
                f"{group.world} processes train together: add --option METHOD.processes={group.world} (it keys the "
                "checkpoint, and `harness run` names it the same way to find it)"
            )
        raise HarnessError(
            f"the checkpoint of training option processes={config.processes} is not in the store, and one process "
            f"cannot train it: train it with `torchrun --nproc_per_node {config.processes} -m harness.cli train ...` "
            "(or accelerate launch) first"
        )
    if config.batch_size < group.world:
        raise HarnessError(f"batch_size {config.batch_size} is below the {group.world} training processes; raise it")
    if config.micro_batch_size and not hasattr(trainable, "micro_losses"):
        raise HarnessError(
            f"{type(trainable).__name__} cannot split a batch: drop the training option micro_batch_size={config.micro_batch_size}"
        )
    if not group.main:
        log = _silent  # one process reports
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)  # the batch order: the same in every process
    # Which k (and which shots) each example draws: one process uses the batch-order generator, as it always did;
    # several processes draw from their own, so the batch order stays the same in all of them.
    draws = rng if group.world == 1 else random.Random(f"{config.seed}:rank{group.rank}")
    parameters = trainable.parameters()
    evaluate = config.eval_every > 0 and bool(data.dev)
    record = TrainingLog(
        trainable_parameters=sum(p.numel() for p in parameters),
        dev_examples=len(data.dev) if evaluate else 0,
        answer_recall={
            name: {"train": train_recall, "eval": eval_recall} for name, train_recall, eval_recall in data.answer_recall
        },
    )
    total = config.epochs * math.ceil(len(data.items) / config.batch_size)
    record.planned_steps = total
    log(
        f"trainable parameters: {record.trainable_parameters:,} | {len(data.items)} examples x {config.epochs} epoch(s), "
        f"{total} steps | dev slice {record.dev_examples}"
        + (f", scored every {config.eval_every} examples, patience {config.patience}" if evaluate else "")
    )
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup_ratio * total))

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
        return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    best_loss, best_weights, stale = math.inf, None, 0
    reference = math.inf  # the dev loss that a gain of min_delta is measured from
    since: list[float] = []

    def checkpoint_dev(seen: int) -> bool:
        """Score the dev slice; keep the best weights; True when patience has run out."""
        nonlocal best_loss, best_weights, stale, reference
        share = list(data.dev[group.rank :: group.world])
        dev = weighted_mean(dev_loss(trainable, share, config) if share else 0.0, len(share))
        point = {"step": record.steps, "examples": seen, "dev_loss": round(dev, 5)}
        if since:
            point["train_loss"] = round(sum(since) / len(since), 5)
        record.curve.append(point)
        since.clear()
        if dev < best_loss:  # the weights kept are the lowest dev loss's, however small the gain
            best_loss, best_weights, record.best_step = dev, [p.detach().clone() for p in parameters], record.steps
        if dev < reference - config.min_delta:  # stopping asks for a real gain
            reference, stale = dev, 0
        else:
            stale += 1
        return config.patience > 0 and stale >= config.patience

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    own = progress is None
    bar = Progress(*columns, console=_console(), disable=not group.main) if own else progress
    with bar if own else contextlib.nullcontext():
        task = bar.add_task("training", total=total, status="")
        started = time.perf_counter()
        seen = 0
        if evaluate:
            checkpoint_dev(0)
            log(f"dev loss before training {record.curve[-1]['dev_loss']:.4f} ({len(data.dev)} held-out questions)")
            bar.update(task, status=f"dev loss {record.curve[-1]['dev_loss']:.3f}")
        stop = False
        for epoch in range(config.epochs):
            for batch in batches(data.items, config.batch_size, rng):
                part = batch[group.rank :: group.world]
                # A process with no example in this batch still joins the gradient average, with zeros.
                if part:
                    loss = backward(trainable, part, draws, config.micro_batch_size)
                else:
                    torch.stack([p.sum() * 0.0 for p in parameters]).sum().backward()
                    loss = 0.0
                average_gradients(parameters)  # data parallel: the mean gradient, as DDP's all-reduce
                torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                record.steps += 1
                record.losses.append(round(weighted_mean(loss, len(part)), 5))
                since.append(record.losses[-1])
                before, seen = seen, seen + len(batch)
                rate = seen / (time.perf_counter() - started)
                if evaluate and (seen // config.eval_every > before // config.eval_every or record.steps == total):
                    stop = checkpoint_dev(seen)
                    point = record.curve[-1]
                    log(
                        f"epoch {epoch + 1} step {record.steps}/{total} loss {point.get('train_loss', math.nan):.4f} "
                        f"dev loss {point['dev_loss']:.4f} (best {best_loss:.4f} at step {record.best_step}) | {rate:.1f} ex/s"
                    )
                elif not evaluate and (record.steps % 10 == 0 or record.steps == total):
                    window = record.losses[-10:]
                    log(f"epoch {epoch + 1} step {record.steps}/{total} loss {sum(window) / len(window):.4f} | {rate:.1f} ex/s")
                dev_text = f" | dev {record.curve[-1]['dev_loss']:.3f}" if record.curve else ""
                bar.update(task, advance=1, status=f"loss {record.losses[-1]:.3f}{dev_text} | {rate:.1f} ex/s")
                if stop and record.steps < total:  # patience ran out before the planned end
                    break
                stop = False
            if stop:
                record.stopped_early = True
                log(
                    f"early stop at step {record.steps}: no dev-loss gain of {config.min_delta} in {config.patience} "
                    f"evaluations; keeping step {record.best_step} (dev loss {best_loss:.4f})"
                )
                break
        bar.update(task, completed=total)
        if best_weights is not None:  # the lowest dev loss wins, not the last step
            with torch.no_grad():
                for parameter, weights in zip(parameters, best_weights, strict=True):
                    parameter.copy_(weights)
    record.seconds = round(time.perf_counter() - started, 2)
    record.examples_per_second = round(seen / max(record.seconds, 1e-9), 3)
    return record


def dev_loss(trainable: Trainable, dev: Sequence[TrainItem], config: TrainingConfig) -> float:
    """Mean answer loss over the dev slice, with the same draws (m, k, gold) at every evaluation and no dropout."""
    import torch

    rng = random.Random(f"{config.seed}:dev")
    total, count = 0.0, 0
    trainable.set_training(False)
    try:
        with torch.no_grad():
            for begin in range(0, len(dev), config.batch_size):
                batch = list(dev[begin : begin + config.batch_size])
                total += float(trainable.loss(batch, rng)) * len(batch)
                count += len(batch)
    finally:
        trainable.set_training(True)
    return total / max(count, 1)


def _console() -> Any:
    from harness.console import console

    return console()


def answer_loss(
    backend: Any,
    inputs: Sequence[Sequence[Segment]],
    answers: Sequence[tuple[int, ...]],
    prefix_once: bool,
    all_logits: bool = False,
    tokens: int | None = None,
    prefill: Callable[[list[list[Segment]]], Any] | None = None,
) -> torch.Tensor:
    """Mean cross-entropy over answer tokens; each input ends with its answer (left padding right-aligns them).

    ``tokens``: divide the summed cross-entropy by this many tokens instead (a micro-batch's share of its whole
    batch's mean). ``prefill``: what computes the passages blocks' cache under ``prefix_once`` (default
    ``backend.prefill``; SPRING's dev slice reuses the same blocks at every evaluation).

    ``prefix_once``: the passages block runs once under ``no_grad`` and only the rest runs with gradients and
    LM-head logits at answer positions; valid only when nothing trained touches the passages (SPRING's
    ``[R; T; Q]``). Otherwise the whole sequence runs with gradients; ``all_logits`` also computes the LM head at
    every position, as the official SPRING code does (kept for the naive path and its benchmark).
    """
    import torch
    import torch.nn.functional as F

    longest = max(len(answer) for answer in answers)
    if prefix_once:
        split = [split_after_passages(segments) for segments in inputs]
        prefix = (prefill or backend.prefill)([p for p, _ in split])
        logits, _ = backend.forward([s for _, s in split], prefix=prefix, logits_to_keep=longest + 1)
    else:
        logits, _ = backend.forward(inputs, logits_to_keep=None if all_logits else longest + 1)
        logits = logits[:, -(longest + 1) :]
    width = logits.shape[1]
    rows = [b for b, answer in enumerate(answers) for _ in answer]
    # Answer token j of a row is predicted at position width - len(answer) - 1 + j of the kept window.
    columns = [width - len(answer) - 1 + j for answer in answers for j in range(len(answer))]
    labels = torch.tensor([t for answer in answers for t in answer], device=logits.device)
    picked = logits[rows, columns]
    picked = picked.float() if picked.dtype in (torch.float16, torch.bfloat16) else picked
    if tokens is None:
        return F.cross_entropy(picked, labels)
    return F.cross_entropy(picked, labels, reduction="sum") / tokens


def micro_batch_losses(
    backend: Any,
    inputs: Sequence[Sequence[Segment]],
    answers: Sequence[tuple[int, ...]],
    size: int,
    prefix_once: bool,
    all_logits: bool = False,
) -> Iterator[torch.Tensor]:
    """:func:`answer_loss` of the whole batch as one term per micro-batch of ``size`` inputs, each its summed
    cross-entropy over the batch's answer tokens, so the terms add up to the batch's mean (and so do gradients)."""
    tokens = sum(len(answer) for answer in answers)
    for begin in range(0, len(inputs), size):
        yield answer_loss(
            backend, inputs[begin : begin + size], answers[begin : begin + size], prefix_once, all_logits, tokens=tokens
        )


def draw_inputs(
    template: Any, batch: Sequence[TrainItem], rng: random.Random, backend: Any, config: TrainingConfig, virtual: Any = None
) -> tuple[list[list[Segment]], list[tuple[int, ...]]]:
    """Training inputs of one micro-batch: m ~ U{1..max_passages} passages, one random gold as `` answer</s>``."""
    from harness.segments import TokenSegment, build_segments, fit_input, tokenize, truncate

    tokenizer = backend.tokenizer
    max_passages = config.max_passages
    limit = config.max_input_tokens or backend.context_length()
    inputs, answers = [], []
    for item in batch:
        m = rng.randint(1, min(max_passages, len(item.passages))) if item.passages else 0
        answer = (*tokenize(tokenizer, " " + rng.choice(item.example.golds)), tokenizer.eos_token_id)
        segments = build_segments(template, item.example.question, item.passages[:m], tokenizer, virtual=virtual)
        cut = fit_input if config.max_input_tokens else truncate  # the same passage budget as at inference
        inputs.append(cut([*segments, TokenSegment(answer, "answer")], limit))
        answers.append(answer)
    return inputs, answers
