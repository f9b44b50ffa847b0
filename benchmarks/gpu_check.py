"""HF vs vLLM on one GPU: the same 200 prompts of the default backbone (SPRING tokens and the manual prompt),
their agreement, examples/s of each, and a bf16 SPRING training step rate. Run through ``benchmarks/gpu_check.sh``.

    python benchmarks/gpu_check.py [--model smollm2-135m] [--questions 200] [--steps 30]

NQ dev questions with BM25 top-3 passages over the default corpus, bf16, greedy, at most 32 new tokens, batch 32 on
the HF backend (vLLM batches itself). The SPRING tokens are trained here for ``--steps`` bf16 steps (batch 8) from
the prompt initialisation, which is also the step rate measured: a short run, for agreement, not for accuracy.
Both engines are timed after one warm-up call; the engine's start-up is printed apart. The last line is the headline.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from harness.generation import DecodingConfig, HFBackend
from harness.methods.spring import Spring, SpringTrainer, initial_tokens
from harness.runner import RunConfig, RunContext, select_examples
from harness.segments import EmbeddingSegment, build_segments
from harness.templates import PROMPT, SPRING
from harness.training import TrainingConfig, TrainItem
from harness.vllm_backend import VLLMBackend, VLLMOptions, vllm_version
from harness.weights import mixed_training_data


def train_rate(backend: HFBackend, context: RunContext, steps: int) -> tuple[torch.Tensor, float]:
    """(trained tokens, training steps/s) of ``steps`` SPRING steps of batch 8, k ~ U[1, 50], in bf16."""
    config = TrainingConfig(examples=8 * steps, batch_size=8, max_passages=3)
    data, _ = mixed_training_data(context, "bm25", config)
    items = [TrainItem(i.example, i.passages[:3]) for i in data.items]
    method = Spring(tokens=50)
    initial = initial_tokens(backend.model.get_input_embeddings(), backend.tokenizer, 50, "prompt", 0)
    trainer = SpringTrainer(method, backend, initial, config)
    optimizer = torch.optim.AdamW([trainer.weight], lr=config.lr)
    rng = random.Random(0)
    batches = [items[(8 * step) % len(items) :][:8] for step in range(steps + 2)]
    for index, batch in enumerate(batches):
        if index == 2:  # two warm-up steps (kernels, allocator), then the timed ones
            torch.cuda.synchronize()
            started = time.perf_counter()
        optimizer.zero_grad()
        trainer.loss(batch, rng).backward()
        optimizer.step()
    torch.cuda.synchronize()
    return trainer.weight.detach(), steps / (time.perf_counter() - started)


def timed(generate, inputs, config):
    generate(inputs[:8], config)  # warm-up: CUDA graphs, kernels
    torch.cuda.synchronize()
    started = time.perf_counter()
    answers = generate(inputs, config)
    torch.cuda.synchronize()
    return answers, len(inputs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--results", default="results")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; run it on a GPU machine")

    config = RunConfig(datasets=("nq",), methods=("spring",), model=args.model, dtype="bf16", device="cuda", results=args.results)
    context = RunContext(config)
    hf = context.training_backend
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | vLLM {vllm_version()} | {args.model} bf16")

    tokens, steps_per_second = train_rate(hf, context, args.steps)
    print(f"SPRING training, bf16, batch 8, k ~ U[1,50]: {steps_per_second:.2f} steps/s ({8 * steps_per_second:.1f} examples/s)")

    examples = select_examples("nq", args.questions, 0, None)
    retriever = context.retriever("bm25", "nq")
    passages = [[retriever.passage(hit.passage_id) for hit in hits] for hits in retriever.search(examples, 3)]
    virtual = EmbeddingSegment(tokens[:50])
    inputs = {
        "prompt": [build_segments(PROMPT, e.question, p, hf.tokenizer) for e, p in zip(examples, passages, strict=True)],
        "spring": [
            build_segments(SPRING, e.question, p, hf.tokenizer, virtual=virtual) for e, p in zip(examples, passages, strict=True)
        ],
    }
    decoding = DecodingConfig(max_new_tokens=32, batch_size=32)
    started = time.perf_counter()
    options = VLLMOptions(gpu_memory_utilization=args.gpu_memory_utilization)
    vllm = VLLMBackend.for_model(args.model, dtype="bf16", device="cuda", options=options)
    vllm.generate(inputs["prompt"][:1], decoding)
    print(f"vLLM engine start: {time.perf_counter() - started:.1f} s")

    agreements, speedups = {}, {}
    for name, method_inputs in inputs.items():
        hf_answers, hf_rate = timed(lambda i, c: hf.generate(i, c, reuse_prefix=True), method_inputs, decoding)
        vllm_answers, vllm_rate = timed(vllm.generate, method_inputs, decoding)
        same = [a.prediction == b.prediction for a, b in zip(hf_answers, vllm_answers, strict=True)]
        agreements[name], speedups[name] = sum(same) / len(same), vllm_rate / hf_rate
        print(
            f"{name:7s} HF {hf_rate:7.1f} ex/s | vLLM {vllm_rate:7.1f} ex/s ({speedups[name]:.1f}x) | "
            f"same prediction {sum(same)}/{len(same)} ({100 * agreements[name]:.1f}%)"
        )
        for a, b in [(a, b) for a, b, s in zip(hf_answers, vllm_answers, same, strict=True) if not s][:3]:
            print(f"    differs: HF {a.prediction!r} | vLLM {b.prediction!r}")
    print(
        "gpu check: HF vs vLLM agreement "
        + ", ".join(f"{name} {100 * value:.1f}%" for name, value in agreements.items())
        + "; vLLM "
        + ", ".join(f"{name} {value:.1f}x" for name, value in speedups.items())
        + f" HF examples/s; SPRING bf16 training {steps_per_second:.2f} steps/s"
    )


if __name__ == "__main__":
    main()
