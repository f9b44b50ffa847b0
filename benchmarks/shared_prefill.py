"""Methods that read the same passages share one prefill of them, also under the CPU input cut: the prompt
reference and SPRING (k=50) computed as one group (the runner's path) vs each cell on its own. One process, the
same model, questions, passages and tokens.

    python benchmarks/shared_prefill.py [--model smollm2-135m] [--questions 64] [--dtype auto]

Real NQ questions with 3 BM25 passages, inputs cut to the CPU default's 384 tokens: every method's question
passages are cut to the same 288 tokens (``harness.segments.fit_input``), so both inputs start with the same
passages block. The tokens are SPRING's instruction-text initialisation (the speed does not depend on training).
Cells go to a temporary store. The last line is the headline: the two cells computed together vs one by one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from harness.methods.spring import initial_tokens
from harness.runner import CPU_MAX_INPUT_TOKENS, RunConfig, RunContext, compute_cells, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="harness-shared-prefill-") as folder:
        tokens = Path(folder) / "tokens.pt"
        config = RunConfig(
            datasets=("nq",),
            methods=("prompt", "spring"),
            model=args.model,
            dtype=args.dtype,
            limit=args.questions,
            passages=(3,),
            results=Path(folder) / "results",
            max_input_tokens=CPU_MAX_INPUT_TOKENS,
            force=True,
            method_options=(("spring.checkpoint", str(tokens)),),
        )
        context = RunContext(config, log=lambda line: None)
        backend = context.backend
        torch.save(initial_tokens(backend.model.get_input_embeddings(), backend.tokenizer, 50, "prompt", 0), tokens)
        cells, _ = plan(config, context)
        run = context.retrieval("bm25", "nq", "eval", cells[0].examples, 3)
        warm = [cells[0].method.build_input(e, run.passages(e.id)[:3], backend.tokenizer) for e in cells[0].examples[:4]]
        backend.generate(warm, context.decoding, reuse_prefix=True)  # untimed: kernels, allocator, bf16 copy

        def timed(groups: list[list]) -> float:
            started = time.perf_counter()
            for together in groups:
                compute_cells(together, context)
            return time.perf_counter() - started

        def predictions() -> list[list[str]]:
            return [[row["prediction"] for row in context.store.load(cell.key).predictions()] for cell in cells]

        separate = timed([[cell] for cell in cells])
        alone = predictions()
        shared = timed([cells])
        same = predictions() == alone

    n = args.questions
    print(
        f"{n} NQ questions, 3 BM25 passages, inputs <= {CPU_MAX_INPUT_TOKENS} tokens, {args.model}, dtype {context.model_spec['dtype']}"
    )
    print(f"prompt and spring, cell by cell  {separate:7.1f} s  ({separate / n:.3f} s/question)")
    print(f"prompt and spring, one group     {shared:7.1f} s  ({shared / n:.3f} s/question)")
    print(f"identical predictions either way: {same}")
    print(f"shared passages prefill (prompt + spring) vs cell by cell: {separate / shared:.2f}x")


if __name__ == "__main__":
    main()
