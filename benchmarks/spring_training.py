"""SPRING training speed: prefix-once (passages under no_grad, logits at answer positions) vs naive (the whole
sequence with gradients and full logits, as the official code). Same model, batches and draws, one run.

    python benchmarks/spring_training.py [--model smollm2-135m] [--examples 16] [--batch-size 4]

Real NQ training questions with 3 BM25 passages each. The last line is the headline ratio.
"""

from __future__ import annotations

import argparse
import random
import time

from harness.methods.spring import Spring, SpringTrainer, initial_tokens
from harness.runner import RunConfig, RunContext
from harness.training import TrainingConfig, TrainItem
from harness.weights import mixed_training_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--results", default="results")
    args = parser.parse_args()

    context = RunContext(RunConfig(datasets=(), methods=("spring",), model=args.model, results=args.results))
    config = TrainingConfig(examples=args.examples, batch_size=args.batch_size, max_passages=3)
    data, _ = mixed_training_data(context, "bm25", config)
    # Always 3 passages (m fixed), so both paths see ~440 passage tokens as in the setting.
    items = [TrainItem(i.example, i.passages[:3]) for i in data.items if len(i.passages) >= 3][: args.examples]
    backend = context.backend
    method = Spring(tokens=50)
    initial = initial_tokens(backend.model.get_input_embeddings(), backend.tokenizer, 50, "prompt", 0)
    rates = {}
    for naive in (False, True, False):  # prefix-once twice: the first pass warms caches and kernels
        trainer = SpringTrainer(method, backend, initial, TrainingConfig(max_passages=3), naive=naive)
        rng = random.Random(0)
        started = time.perf_counter()
        for begin in range(0, len(items), args.batch_size):
            loss = trainer.loss(items[begin : begin + args.batch_size], rng)
            loss.backward()
        rates["naive" if naive else "prefix-once"] = len(items) / (time.perf_counter() - started)
    print(f"{len(items)} examples, batch {args.batch_size}, model {args.model}")
    for name, rate in rates.items():
        print(f"{name:12s} {rate:6.2f} examples/s")
    print(f"prefix-once vs naive: {rates['prefix-once'] / rates['naive']:.2f}x")


if __name__ == "__main__":
    main()
