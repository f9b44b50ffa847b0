"""SPRING token sweep at inference: k in {1,2,5,10,20,50} with one passages prefill per question (the runner's
shared path) vs the same six cells computed one at a time, both against a single k=50 run. Same model, questions,
passages and tokens, one process.

    python benchmarks/token_sweep.py [--model smollm2-135m] [--questions 100] [--checkpoint PATH]

Real NQ questions with 3 BM25 passages each, the CPU default input limit (384 tokens). The tokens are a trained
checkpoint (``--checkpoint``: a harness ``.safetensors`` or an official ``.pt``) or, by default, SPRING's
instruction-text initialisation (untrained tokens tend to give longer answers, so decoding weighs more and the
ratio is conservative). Cells go to a temporary store. The last line is the headline ratio: what the whole sweep
costs in units of one k=50 run (the issue's target is <= 2.5x; computed separately it is about 6x).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from harness.checkpoints import load_virtual_tokens
from harness.methods.spring import initial_tokens
from harness.runner import CPU_MAX_INPUT_TOKENS, RunConfig, RunContext, compute_cells, plan

SWEEP = (1, 2, 5, 10, 20, 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--checkpoint", default=None, help="trained tokens (.safetensors from the store or official .pt)")
    parser.add_argument("--max-input-tokens", type=int, default=CPU_MAX_INPUT_TOKENS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="harness-token-sweep-") as folder:
        tokens = Path(folder) / "tokens.pt"
        config = RunConfig(
            datasets=("nq",),
            methods=("spring",),
            tokens=SWEEP,
            model=args.model,
            limit=args.questions,
            passages=(3,),
            results=Path(folder) / "results",
            max_input_tokens=args.max_input_tokens,
            force=True,
            method_options=(("spring.checkpoint", str(tokens)),),
        )
        context = RunContext(config, log=lambda line: None)
        backend = context.backend
        if args.checkpoint and args.checkpoint.endswith(".safetensors"):
            hidden = backend.model.get_input_embeddings().weight.shape[1]
            weights, _ = load_virtual_tokens(Path(args.checkpoint), hidden_size=hidden)
        elif args.checkpoint:
            weights = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        else:
            weights = initial_tokens(backend.model.get_input_embeddings(), backend.tokenizer, 50, "prompt", 0)
        torch.save(weights, tokens)  # the official [n, d] format: the runner imports it like a released file
        cells, _ = plan(config, context)
        by_k = {cell.spec.method["tokens"]: cell for cell in cells}

        def timed(groups: list[list]) -> float:
            started = time.perf_counter()
            for cells_together in groups:
                compute_cells(cells_together, context)
            return time.perf_counter() - started

        run = context.retrieval("bm25", "nq", "eval", cells[0].examples, 3)
        warm = [by_k[50].method.build_input(e, run.passages(e.id)[:3], backend.tokenizer) for e in cells[0].examples[:4]]
        backend.generate(warm, context.decoding, reuse_prefix=True)  # untimed: warms kernels and the allocator
        one = timed([[by_k[50]]])
        separate = timed([[by_k[k]] for k in SWEEP])
        shared = timed([[by_k[k] for k in SWEEP]])

    n = args.questions
    print(f"{n} NQ questions, 3 BM25 passages, inputs <= {args.max_input_tokens} tokens, model {args.model}, k in {SWEEP}")
    print(f"one k=50 run          {one:7.1f} s  ({one / n:.3f} s/question)")
    print(f"sweep, cell by cell   {separate:7.1f} s  ({separate / one:.2f}x one run)")
    print(f"sweep, shared prefix  {shared:7.1f} s  ({shared / one:.2f}x one run)")
    print(f"shared vs cell by cell: {separate / shared:.2f}x faster")
    print(f"token sweep (6 k, shared prefix) vs one k=50 run: {shared / one:.2f}x")


if __name__ == "__main__":
    main()
