"""The one training loop shared by trained methods (SPRING, LoRA, ...), and their training data.

The loop is deliberately short: AdamW, linear warm-up then linear decay, gradient clipping, a loss the method
computes on a micro-batch. A method plugs in through :class:`Trainable`; what it trains and how its loss is
computed (answer-only) is its own business.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from harness.datasets import load_examples
from harness.errors import HarnessError
from harness.segments import Segment, split_after_passages
from harness.spec import content_hash, example_ids_hash
from harness.types import Example, Passage


@dataclass(frozen=True)
class TrainItem:
    """One training question with its retrieved passages (best first, up to the maximum m)."""

    example: Example
    passages: tuple[Passage, ...]


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of a training run. All of them are part of the training-spec hash."""

    examples: int = 600  # budget: questions drawn from the mixed in-domain pools
    epochs: int = 1
    batch_size: int = 8
    lr: float = 2e-3  # the paper uses 1e-4 for 7B models over ~100k examples; a CPU budget needs more
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    max_passages: int = 5  # each example uses m ~ U{1..max_passages} of its retrieved passages
    max_input_tokens: int | None = None  # passage text beyond this is cut (None: the model's context length)
    seed: int = 0

    def spec(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingData:
    """The mixed training set and its identity."""

    items: tuple[TrainItem, ...]
    datasets: tuple[str, ...]
    skipped: tuple[str, ...]  # datasets of the mix that could not be loaded (with the reason)

    def spec(self) -> dict[str, Any]:
        ids = [item.example.id for item in self.items]
        passages = [[p.id for p in item.passages] for item in self.items]
        return {"datasets": list(self.datasets), "n": len(ids), "ids_hash": example_ids_hash(ids), "passages_hash": content_hash(passages)}


def training_data(
    datasets: Sequence[str],
    budget: int,
    seed: int,
    retrieve: Callable[[str, Sequence[Example]], Mapping[str, Sequence[Passage]]] | None,
    data_dir: Any = None,
) -> TrainingData:
    """``budget`` questions drawn evenly (seeded) from the training pools of ``datasets``, with their passages.

    ``retrieve(dataset, examples) -> {example id: passages}`` serves the passages (the evaluation retriever's
    cached runs); ``None`` trains without passages (closed-book tokens).
    """
    pools: dict[str, list[Example]] = {}
    skipped: list[str] = []
    for name in datasets:
        try:
            pools[name] = load_examples(name, "train", data_dir=data_dir)
        except HarnessError as error:
            skipped.append(f"{name}: {error}")
    if not pools:
        raise HarnessError(f"no training pool could be loaded from {', '.join(datasets)}")
    rng = random.Random(seed)
    share, extra = divmod(budget, len(pools))
    items: list[TrainItem] = []
    for index, (name, pool) in enumerate(pools.items()):
        want = min(len(pool), share + (index < extra))
        chosen = sorted(rng.sample(range(len(pool)), want))
        examples = [pool[i] for i in chosen]
        passages = retrieve(name, examples) if retrieve is not None else {}
        items += [TrainItem(e, tuple(passages.get(e.id, ()))) for e in examples]
    return TrainingData(tuple(items), tuple(pools), tuple(skipped))


class Trainable(Protocol):
    """What the loop trains: some parameters and an answer-only loss on a micro-batch."""

    def parameters(self) -> list[torch.nn.Parameter]: ...

    def loss(self, batch: Sequence[TrainItem], rng: random.Random) -> torch.Tensor: ...


@dataclass
class TrainingLog:
    """What a run printed, kept with the checkpoint."""

    trainable_parameters: int = 0
    steps: int = 0
    seconds: float = 0.0
    examples_per_second: float = 0.0
    losses: list[float] = field(default_factory=list)


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


def train(trainable: Trainable, data: TrainingData, config: TrainingConfig, log: Callable[[str], None] = print) -> TrainingLog:
    """Train ``trainable`` on ``data``: AdamW, warm-up + linear decay, clipping; returns the loss curve."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    parameters = trainable.parameters()
    record = TrainingLog(trainable_parameters=sum(p.numel() for p in parameters))
    log(f"trainable parameters: {record.trainable_parameters:,} | {len(data.items)} examples x {config.epochs} epoch(s)")
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * math.ceil(len(data.items) / config.batch_size)
    warmup = max(1, int(config.warmup_ratio * total))

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
        return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    started = time.perf_counter()
    seen = 0
    for epoch in range(config.epochs):
        for batch in batches(data.items, config.batch_size, rng):
            loss = trainable.loss(batch, rng)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            record.steps += 1
            record.losses.append(round(loss.item(), 5))
            seen += len(batch)
            if record.steps % 10 == 0 or record.steps == total:
                window = record.losses[-10:]
                rate = seen / (time.perf_counter() - started)
                log(f"epoch {epoch + 1} step {record.steps}/{total} loss {sum(window) / len(window):.4f} | {rate:.1f} ex/s")
    record.seconds = round(time.perf_counter() - started, 2)
    record.examples_per_second = round(seen / max(record.seconds, 1e-9), 3)
    return record


def answer_loss(
    backend: Any,
    inputs: Sequence[Sequence[Segment]],
    answers: Sequence[tuple[int, ...]],
    prefix_once: bool,
    all_logits: bool = False,
) -> torch.Tensor:
    """Mean cross-entropy over answer tokens; each input ends with its answer (left padding right-aligns them).

    ``prefix_once``: the passages block runs once under ``no_grad`` and only the rest runs with gradients and
    LM-head logits at answer positions; valid only when nothing trained touches the passages (SPRING's
    ``[R; T; Q]``). Otherwise the whole sequence runs with gradients; ``all_logits`` also computes the LM head at
    every position, as the official SPRING code does (kept for the naive path and its benchmark).
    """
    longest = max(len(answer) for answer in answers)
    if prefix_once:
        split = [split_after_passages(segments) for segments in inputs]
        prefix = backend.prefill([p for p, _ in split])
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
    return F.cross_entropy(picked.float() if picked.dtype in (torch.float16, torch.bfloat16) else picked, labels)


def draw_inputs(
    template: Any, batch: Sequence[TrainItem], rng: random.Random, backend: Any, config: TrainingConfig, virtual: Any = None
) -> tuple[list[list[Segment]], list[tuple[int, ...]]]:
    """Training inputs of one micro-batch: m ~ U{1..max_passages} passages, one random gold as `` answer</s>``."""
    from harness.segments import TokenSegment, build_segments, tokenize, truncate

    tokenizer = backend.tokenizer
    max_passages = config.max_passages
    limit = config.max_input_tokens or backend.context_length()
    inputs, answers = [], []
    for item in batch:
        m = rng.randint(1, min(max_passages, len(item.passages))) if item.passages else 0
        answer = (*tokenize(tokenizer, " " + rng.choice(item.example.golds)), tokenizer.eos_token_id)
        segments = build_segments(template, item.example.question, item.passages[:m], tokenizer, virtual=virtual)
        inputs.append(truncate([*segments, TokenSegment(answer, "answer")], limit))
        answers.append(answer)
    return inputs, answers
