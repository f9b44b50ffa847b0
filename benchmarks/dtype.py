"""Compute dtypes on this CPU: fp32 vs bf16 vs mixed (bf16 passage prefills, fp32 decoding), side by side.

    python benchmarks/dtype.py [--model smollm2-135m] [--questions 48]

Real NQ questions, each with 3 BM25 passages of the offline corpus, the P1 prompt cut to the CPU default's 384
tokens, greedy decoding with the shared-passages path ``harness run`` uses. For each dtype: wall time at batch
size 8, and how many of the answers change when the same inputs are decoded at batch size 1 (a harness result
must not depend on batching). Prints whether this CPU has native bf16 matrix units (what ``--dtype auto``
decides by). The last line is the headline: mixed's speed-up over fp32 at batch size 8.
"""

from __future__ import annotations

import argparse
import time

from harness.generation import DecodingConfig, HFBackend
from harness.models import cpu_has_native_bf16, load_model, resolve_dtype
from harness.plugins import METHODS
from harness.runner import CPU_MAX_INPUT_TOKENS, RunConfig, RunContext, select_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", type=int, default=48)
    args = parser.parse_args()

    examples = select_examples("nq", args.questions, 0, None)
    context = RunContext(RunConfig(datasets=("nq",), methods=("prompt",), model=args.model), log=lambda line: None)
    run = context.retrieval("bm25", "nq", "eval", examples, 3)
    print(f"native bf16 matrix units: {cpu_has_native_bf16()} -> --dtype auto is {resolve_dtype('auto', 'cpu')}")
    seconds = {}
    for dtype in ("fp32", "bf16", "mixed"):
        backend = HFBackend(load_model(args.model, dtype=dtype, device="cpu"))
        method = METHODS.get("prompt")()
        inputs = [method.build_input(e, run.passages(e.id)[:3], backend.tokenizer) for e in examples]
        config = DecodingConfig(max_new_tokens=32, max_input_tokens=CPU_MAX_INPUT_TOKENS, batch_size=8)
        backend.generate(inputs[:2], config, reuse_prefix=True)  # warm-up (and the bf16 copy under mixed)
        started = time.perf_counter()
        batched = backend.generate(inputs, config, reuse_prefix=True)
        seconds[dtype] = time.perf_counter() - started
        single = backend.generate(
            inputs, DecodingConfig(max_new_tokens=32, max_input_tokens=CPU_MAX_INPUT_TOKENS, batch_size=1), reuse_prefix=True
        )
        changed = sum(a.prediction != b.prediction for a, b in zip(batched, single, strict=True))
        print(
            f"{dtype:6s} {seconds[dtype]:6.1f} s for {len(inputs)} questions at batch 8 "
            f"({len(inputs) / seconds[dtype]:.2f} q/s) | answers changed at batch 1: {changed}/{len(inputs)}"
        )
    print(f"bf16 vs fp32: {seconds['fp32'] / seconds['bf16']:.2f}x")
    print(f"mixed vs fp32: {seconds['fp32'] / seconds['mixed']:.2f}x")


if __name__ == "__main__":
    main()
