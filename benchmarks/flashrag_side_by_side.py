"""FlashRAG 0.1.2's standard RAG pipeline and the harness on the same files, side by side in one run.

    python benchmarks/flashrag_side_by_side.py [--questions 200]

For users who have FlashRAG installed. The workload is ``peer_workload.py``'s (its files, written under the user
cache). Each side runs in its own child process, one after the other, so each peak RSS is its own: the peer's
``SequentialPipeline`` (``run`` for RAG, ``naive_run`` with FlashRAG's own no-retrieval prompt for closed-book)
with its HF generator and its bm25s retriever, and the harness with the peer's exact prompts (``peer_workload.py
--template flashrag``). Both at batch 8, greedy, at most 32 new tokens, no input cut, the model in fp32 on the CPU,
the BM25 index built and one search run before timing. Printed: q/s, EM/F1/Acc (each side scored by its own
evaluator) and peak RSS per side; the last line is the harness's RAG q/s over the peer's.

Installing FlashRAG 0.1.2 next to the harness (its wheel pins nothing usable here):

    pip install --no-deps flashrag-dev==0.1.2
    pip install tiktoken openai rouge base58 fschat  # what its imports need beyond the harness's own packages

What it needs and does not ship, which this script supplies without editing the installed package:

* ``flashrag/config/basic_config.yaml`` is missing from the wheel, and ``Config`` reads it unconditionally: the
  script gives ``Config`` an empty internal config and passes every key the pipeline reads (``peer_config``).
* Its BM25 index builder (``python -m flashrag.retriever.index_builder --retrieval_method bm25``) needs
  ``--instruction ""`` (it raises on the default), and it indexes the raw strings, so bm25s tokenises the corpus
  into characters while the retriever's queries are word-level (stemmed): retrieval then finds nothing useful. The
  script builds the index as the retriever reads it: ``bm25s.tokenize(contents, stemmer=Stemmer("english"))``,
  saved with the corpus rows.
* Its HF generator loads the model with ``trust_remote_code=True`` (FlashRAG's choice; the folder is the harness's
  converted SmolLM2, which has no code of its own) and decides chat formatting by "instruct" in the model path.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from peer_workload import HEADER, PEER_PEAK_RSS_GB, PEER_RAG_QPS, measure, row_line, workload_files

from harness.paths import cache_dir

PEER_FOLDER = cache_dir() / "benchmarks" / "peer_workload" / "flashrag"


def peer_config(question_file: Path, corpus_file: Path, index_dir: Path, model_path: str, batch_size: int) -> dict:
    """Every key FlashRAG 0.1.2's Config, SequentialPipeline, bm25s retriever, HF generator and evaluator read."""
    data_dir = PEER_FOLDER / "dataset"
    (data_dir / "peer-nq").mkdir(parents=True, exist_ok=True)
    link = data_dir / "peer-nq" / "test.jsonl"  # FlashRAG reads <data_dir>/<dataset_name>/<split>.jsonl
    link.unlink(missing_ok=True)
    link.symlink_to(question_file)
    return {
        "data_dir": str(data_dir),
        "dataset_name": "peer-nq",
        "split": ["test"],
        "test_sample_num": None,
        "random_sample": False,
        "seed": 2024,
        "save_dir": str(PEER_FOLDER / "output"),
        "save_note": "side-by-side",
        "save_intermediate_data": False,
        "save_metric_score": False,
        "gpu_id": None,  # the CPU
        "model2path": {},
        "model2pooling": {},
        "method2index": {},
        "retrieval_method": "bm25",
        "bm25_backend": "bm25s",
        "index_path": str(index_dir),
        "corpus_path": str(corpus_file),
        "retrieval_topk": 3,
        "retrieval_batch_size": 256,
        "retrieval_use_fp16": False,
        "retrieval_query_max_length": 128,
        "retrieval_pooling_method": None,
        "faiss_gpu": False,
        "use_sentence_transformer": False,
        "save_retrieval_cache": False,
        "use_retrieval_cache": False,
        "retrieval_cache_path": None,
        "use_reranker": False,
        "rerank_model_name": None,
        "rerank_model_path": None,
        "rerank_pooling_method": None,
        "instruction": "",
        "framework": "hf",
        "generator_model": "smollm2-135m-instruct",
        "generator_model_path": model_path,
        "generator_max_input_len": 8192,  # no input cut (the model's context)
        "generator_batch_size": batch_size,
        "generation_params": {"max_tokens": 32, "do_sample": False},
        "use_fid": False,
        "metrics": ["em", "f1", "acc"],
        "metric_setting": {"retrieval_recall_topk": 3, "tokenizer_name": "gpt-4"},
    }


def build_peer_index(corpus_file: Path) -> Path:
    """The bm25s index FlashRAG's retriever reads (word-level, stemmed), saved with the corpus rows."""
    import bm25s
    import Stemmer

    index_dir = PEER_FOLDER / f"bm25-{corpus_file.stat().st_size}"
    if not (index_dir / "params.index.json").is_file():
        rows = [json.loads(line) for line in corpus_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize([row["contents"] for row in rows], stemmer=Stemmer.Stemmer("english")))
        retriever.save(str(index_dir), corpus=rows)
    return index_dir


def run_peer(questions: int, batch_size: int) -> dict:
    """The peer's RAG and closed-book runs, timed, in this process."""
    from flashrag.config import Config
    from flashrag.pipeline import SequentialPipeline
    from flashrag.utils import get_dataset

    from harness.models import resolve_model_path

    question_file, corpus_file = workload_files(questions)
    index_dir = build_peer_index(corpus_file)
    model_path, _ = resolve_model_path("smollm2-135m")  # the harness's converted HF folder of the GGUF
    Config._get_internal_config = lambda self: {}  # its basic_config.yaml is missing from the wheel
    config = Config(config_dict=peer_config(question_file, corpus_file, index_dir, str(model_path), batch_size))
    pipeline = SequentialPipeline(config)
    pipeline.retriever.batch_search(["warm up the index"])  # the numba kernels compile on the first search
    rows = {}
    for label, prompt, run in (
        ("flashrag standard RAG", pipeline.prompt_template, pipeline.run),
        ("flashrag no retrieval", no_retrieval_prompt(config), pipeline.naive_run),
    ):
        pipeline.prompt_template = prompt  # naive_run reads the same attribute: one generator and retriever for both
        dataset = get_dataset(config)["test"]
        started = time.perf_counter()
        output = run(dataset, do_eval=True)
        seconds = time.perf_counter() - started
        scores = {
            name: 100 * sum(item.metric_score[key] for item in output) / len(output)
            for name, key in (("exact_match", "em"), ("f1", "f1"), ("accuracy", "acc"))
        }
        if len(output) != questions:
            raise RuntimeError(f"FlashRAG read {len(output)} questions, not {questions}")
        rows[label] = {"seconds": seconds, "questions": len(output), "scores": scores}
    return rows


def no_retrieval_prompt(config):
    """FlashRAG's naive-generation prompt (its quick-start's no-retrieval template)."""
    from flashrag.prompt import PromptTemplate

    return PromptTemplate(
        config,
        system_prompt="Answer the question based on your own knowledge. Only give me the answer and do not output any other words.",
        user_prompt="Question: {question}",
    )


def child(side: str, questions: int, batch_size: int) -> None:
    if side == "peer":
        result = {"rows": run_peer(questions, batch_size)}
    else:
        measured = measure("flashrag", questions, "smollm2-135m", "fp32", batch_size)
        result = {
            "rows": {
                row.label: {"seconds": row.questions / row.qps, "questions": row.questions, "scores": row.scores}
                for row in measured.rows
            },
            "lines": [measured.setting, HEADER, *map(row_line, measured.rows)],
        }
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--side", choices=("peer", "harness"), help=argparse.SUPPRESS)  # a child's side
    args = parser.parse_args()
    if args.side:
        child(args.side, args.questions, args.batch_size)
        return
    results = {}
    for side in ("peer", "harness"):
        done = subprocess.run(
            [sys.executable, __file__, "--side", side, "--questions", str(args.questions), "--batch-size", str(args.batch_size)],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            sys.exit(f"the {side} side failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        results[side] = json.loads(lines[-1].removeprefix("RESULT "))
    print("\n".join(results["harness"]["lines"]))
    print(f"{'side':8s} {'row':24s} {'q/s':>6s} {'EM':>5s} {'F1':>5s} {'Acc':>5s} {'peak RSS':>9s}")
    for side in ("peer", "harness"):
        for label, row in results[side]["rows"].items():
            scores = row["scores"]
            print(
                f"{side:8s} {label:24s} {row['questions'] / row['seconds']:6.2f} {scores['exact_match']:5.1f} "
                f"{scores['f1']:5.1f} {scores['accuracy']:5.1f} {results[side]['peak_rss_gb']:8.2f}G"
            )
    qps = {
        side: (lambda row: row["questions"] / row["seconds"])(results[side]["rows"]["flashrag standard RAG"]) for side in results
    }
    low, high = PEER_RAG_QPS
    print(f"(issue #18's peer figures: RAG {low}-{high} q/s, peak {PEER_PEAK_RSS_GB} GB)")
    print(f"harness vs FlashRAG, standard RAG, side by side: {qps['harness'] / qps['peer']:.2f}x")


if __name__ == "__main__":
    main()
