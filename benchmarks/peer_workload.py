"""The harness on the reference peer's workload (FlashRAG 0.1.2's standard RAG pipeline, issue #18), row by row.

    python benchmarks/peer_workload.py [--template all|harness|flashrag] [--questions 200] [--dtype fp32]

The workload, as the issue measured the peer on it: the first 200 questions of
``nq_open_oracle/nq-open-oracle.jsonl.gz``; a corpus of that file's 2,655 gold Wikipedia passages plus FlashRAG's
1,000-passage ``flashrag_corpus/sample_data.jsonl`` (3,655 passages: the issue's "~3,600"); BM25 top-3;
SmolLM2-135M-Instruct; batch 8; greedy; at most 32 new tokens; no input cut. Both files are written once, in
FlashRAG's formats, under the user cache (``<cache>/benchmarks/peer_workload/``) and read back through the
user-data path (``--dataset-file`` and ``--corpus``), so this is also an end-to-end check of that path; the raw
data files are only read.

Rows: ``prompt``, ``prompt-chat`` and ``closed-book`` (the harness's own templates), and with ``--template
flashrag`` (or ``all``, the default) the peer's exact prompts rendered through the model's chat template, for an
accuracy comparison like for like: FlashRAG's "Standard RAG" (system: its instruction and ``Doc i(Title: "t")
text`` lines; user: ``Question: q``) and its no-retrieval prompt. The harness decodes as it always does: it stops at
a newline or end-of-turn, where the peer always generates all 32 tokens, and it batches longest-first. The backend
is called as ``harness run`` calls it: inputs that read passages continue their block's prefill (FlashRAG's system
message, reference included, counts as the block), which under ``--dtype mixed`` runs alone on the bf16 copy.

Per row: questions/s over retrieval + input building + generation + scoring (the BM25 index is built, or found in
the cache, before timing; the model load is excluded, as for the peer), the split, EM/F1/Acc (x100) and the
generated tokens per question. Then the process's peak RSS. The last line is the headline: the RAG q/s with the
peer's own prompt (like for like), or ``prompt``'s without it, and its ratio to the peer's 0.60-0.69 q/s.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.dataset_file import register_dataset_file
from harness.datasets import load_examples
from harness.generation import DecodingConfig, HFBackend
from harness.metrics import METRICS
from harness.models import load_model
from harness.paths import cache_dir, data_dir
from harness.plugins import METHODS
from harness.retrieval import RetrieverContext, make_retriever
from harness.segments import PASSAGES_END, TokenSegment
from harness.types import Example, Passage

PEER_RAG_QPS = (0.60, 0.69)  # FlashRAG 0.1.2 SequentialPipeline, measured by issue #18 on this machine kind
PEER_CLOSED_BOOK_QPS = (1.74, 2.03)
PEER_PEAK_RSS_GB = 2.7
# flashrag/prompt/base_prompt.py (0.1.2), verbatim, its missing space after "document." included.
FLASHRAG_SYSTEM = (
    "Answer the question based on the given document."
    "Only give me the answer and do not output any other words."
    "\nThe following are given documents.\n\n{reference}"
)
FLASHRAG_NO_RETRIEVAL_SYSTEM = (  # flashrag/pipeline/pipeline.py's zero-shot ("naive generation") prompt
    "Answer the question based on your own knowledge. Only give me the answer and do not output any other words."
)
FLASHRAG_USER = "Question: {question}"
Builder = Callable[[Example, Sequence[Passage], object], list]


def workload_files(questions: int, folder: Path | None = None) -> tuple[Path, Path]:
    """``(questions.jsonl, corpus.jsonl)`` of the peer workload in FlashRAG's formats (written once)."""
    folder = folder or cache_dir() / "benchmarks" / "peer_workload"
    folder.mkdir(parents=True, exist_ok=True)
    source = data_dir(None)
    with gzip.open(source / "nq_open_oracle" / "nq-open-oracle.jsonl.gz", "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    question_file, corpus_file = folder / f"nq_oracle_{questions}.jsonl", folder / "corpus.jsonl"
    rows = [{"id": f"test_{i}", "question": r["question"], "golden_answers": r["answers"]} for i, r in enumerate(records)]
    _write_once(question_file, rows[:questions])
    passages = [
        {"id": f"oracle-{i}-{j}", "contents": f'"{ctx["title"]}"\n{ctx["text"]}'}
        for i, record in enumerate(records)
        for j, ctx in enumerate(record["ctxs"])
        if ctx.get("isgold")
    ]
    with open(source / "flashrag_corpus" / "sample_data.jsonl", encoding="utf-8") as handle:
        passages += [{**json.loads(line), "id": f"sample-{json.loads(line)['id']}"} for line in handle if line.strip()]
    _write_once(corpus_file, passages)
    return question_file, corpus_file


def _write_once(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        partial = path.with_suffix(".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)


def flashrag_input(system: str, user: str, tokenizer) -> list:
    """The peer's prompt: its system and user messages through the tokenizer's chat template, as token ids.

    The ids, of the whole text, are split where the system message (whose end is FlashRAG's reference block) ends:
    that part is marked as ending a passages block, so the harness treats it as it treats its own methods' passages
    (a prefix prefilled once per distinct block, alone on the bf16 copy under ``--dtype mixed``)."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    cut = text.index(system) + len(system)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, ends = encoded["input_ids"], [end for _, end in encoded["offset_mapping"]]
    head = sum(end <= cut for end in ends)
    return [TokenSegment(ids[:head], PASSAGES_END), TokenSegment(ids[head:])]


def flashrag_reference(passages: Sequence[Passage]) -> str:
    """FlashRAG's ``format_reference``: ``Doc i(Title: <first line of contents>) <rest>`` per passage."""
    return "".join(f'Doc {i}(Title: "{p.title}") {p.text}\n' for i, p in enumerate(passages, start=1))


def rows_for(template: str) -> list[tuple[str, bool, Builder]]:
    """``(label, reads passages, input builder)`` per row of the chosen template family."""
    rows: list[tuple[str, bool, Builder]] = []
    if template in ("harness", "all"):
        for name in ("prompt", "prompt-chat", "closed-book"):
            method = METHODS.get(name)()
            rows.append((name, method.uses_passages, method.build_input))
    if template in ("flashrag", "all"):
        rows.append(
            (
                "flashrag standard RAG",
                True,
                lambda e, p, tok: flashrag_input(
                    FLASHRAG_SYSTEM.format(reference=flashrag_reference(p)), FLASHRAG_USER.format(question=e.question), tok
                ),
            )
        )
        rows.append(
            (
                "flashrag no retrieval",
                False,
                lambda e, p, tok: flashrag_input(FLASHRAG_NO_RETRIEVAL_SYSTEM, FLASHRAG_USER.format(question=e.question), tok),
            )
        )
    return rows


@dataclass(frozen=True)
class Row:
    """One measured row: its timings (s), scores (x100), mean input and generated tokens per question."""

    label: str
    questions: int
    retrieval: float
    inputs: float
    generate: float
    scoring: float
    scores: dict[str, float]
    input_tokens: float
    output_tokens: float

    @property
    def qps(self) -> float:
        return self.questions / (self.retrieval + self.inputs + self.generate + self.scoring)


@dataclass(frozen=True)
class Measurement:
    """The rows of one process, what they ran on, and the process's peak RSS (GB)."""

    setting: str
    rows: list[Row]
    peak_rss_gb: float


def measure(template: str, questions: int, model: str, dtype: str, batch_size: int) -> Measurement:
    """Run the rows of ``template`` (all, harness or flashrag) on the peer workload, timing each."""
    question_file, corpus_file = workload_files(questions)
    name = register_dataset_file(question_file, "peer-nq")
    examples = load_examples(name)
    retriever = make_retriever("bm25", RetrieverContext(corpus=str(corpus_file), dataset=name))
    retriever.search(examples[:1], 3)  # builds (or loads) the index before timing, as the peer's is prebuilt
    started = time.perf_counter()
    hits = retriever.search(examples, 3)
    passages = [[retriever.passage(hit.passage_id) for hit in row] for row in hits]
    retrieval_seconds = time.perf_counter() - started
    gold = sum(any(p.id.startswith(f"oracle-{i}-") for p in row) for i, row in enumerate(passages))

    loaded = load_model(model, dtype=dtype, device="cpu")
    backend = HFBackend(loaded)
    config = DecodingConfig(max_new_tokens=32, max_input_tokens=None, batch_size=batch_size)
    setting = (
        f"{len(examples)} questions, {len(retriever.corpus):,} passages (BM25 top-3; gold passage retrieved for "
        f"{gold}/{len(examples)}), {loaded.model_id} {loaded.dtype}, batch {batch_size}, greedy, <= 32 new tokens, "
        "no input cut"
    )
    rows = []
    for label, reads_passages, build in rows_for(template):
        started = time.perf_counter()
        inputs = [build(e, p if reads_passages else [], loaded.tokenizer) for e, p in zip(examples, passages, strict=True)]
        inputs_seconds = time.perf_counter() - started
        started = time.perf_counter()
        # As `harness run` calls it: rows that read passages share each distinct block's prefill.
        generations = backend.generate(inputs, config, reuse_prefix=reads_passages)
        generate_seconds = time.perf_counter() - started
        started = time.perf_counter()
        n = len(examples)
        scores = {
            metric: 100
            * sum(METRICS[metric](g.prediction, list(e.golds)) for e, g in zip(examples, generations, strict=True))
            / n
            for metric in ("exact_match", "f1", "accuracy")
        }
        rows.append(
            Row(
                label,
                n,
                retrieval_seconds if reads_passages else 0.0,
                inputs_seconds,
                generate_seconds,
                time.perf_counter() - started,
                scores,
                sum(g.input_tokens for g in generations) / n,
                sum(len(g.token_ids) for g in generations) / n,
            )
        )
    return Measurement(setting, rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2)


HEADER = (
    f"{'row':24s} {'q/s':>6s} {'retrieval':>9s} {'inputs':>7s} {'generate':>9s} {'scoring':>8s} "
    f"{'EM':>5s} {'F1':>5s} {'Acc':>5s} {'in tok':>6s} {'out tok':>7s}"
)


def row_line(row: Row) -> str:
    return (
        f"{row.label:24s} {row.qps:6.2f} {row.retrieval:8.1f}s {row.inputs:6.1f}s {row.generate:8.1f}s {row.scoring:7.2f}s "
        f"{row.scores['exact_match']:5.1f} {row.scores['f1']:5.1f} {row.scores['accuracy']:5.1f} "
        f"{row.input_tokens:6.0f} {row.output_tokens:7.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", choices=("all", "harness", "flashrag"), default="all")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="fp32", help="the peer's (fp32 on CPU); auto picks by capability")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    measured = measure(args.template, args.questions, args.model, args.dtype, args.batch_size)
    print(measured.setting)
    print(HEADER)
    for row in measured.rows:
        print(row_line(row))
    print(f"peak RSS {measured.peak_rss_gb:.2f} GB (peer: {PEER_PEAK_RSS_GB} GB)")
    by_label = {row.label: row for row in measured.rows}
    headline = by_label.get("flashrag standard RAG") or by_label["prompt"]
    low, high = PEER_RAG_QPS
    print(
        f"peer workload: {headline.qps:.2f} q/s ({headline.label}; {headline.qps / high:.2f}-{headline.qps / low:.2f}x "
        f"issue #18's peer figures of {low}-{high} q/s, taken on another machine: flashrag_side_by_side.py measures "
        "the ratio on this one)"
    )


if __name__ == "__main__":
    main()
