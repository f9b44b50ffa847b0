"""Bad input through the CLI: one line on stderr naming the problem and the fix, exit code 2, nothing written.

``CASES`` is the bad-input corpus (issue #16): each case damages the tiny world (tests/tiny_world.py) or writes a
bad file, runs one command and names the substring its one error line must carry. Cases marked ``store`` run
against a copy of a finished store (cells, retrieval runs, corpus store and BM25 index in the cache), whose file
listing must come out unchanged; the others must leave no ``--results`` folder and no half-built cache entry.
Disk-level cases (read-only folder, full disk) and the interrupted index build follow the table.
"""

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from tiny_model import tiny_model_dir
from tiny_world import make_world

from harness.checkpoints import save_virtual_tokens
from harness.cli import main


@pytest.fixture(autouse=True, scope="module")
def _tiny_model_saved():
    tiny_model_dir()  # written once, before any test captures stderr (saving prints a progress bar)


def _run(world, *flags, method="spring"):
    return [
        "run",
        "--suite",
        "nq",
        "--method",
        method,
        "--model",
        str(tiny_model_dir()),
        "--data-dir",
        str(world["data"]),
        "--corpus",
        str(world["corpus"]),
        "--results",
        str(world["results"]),
        "--limit",
        "2",
        "--reference",
        "",
        *flags,
    ]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("spring.lr=abc", "--option spring.lr=abc: lr takes a finite number (e.g. spring.lr=0.002)"),
        ("spring.lr=nan", "--option spring.lr=nan: lr takes a finite number"),
        ("spring.examples=-5", "training option examples must be >= 1 (got -5)"),
        ("spring.batch_size=0", "training option batch_size must be >= 1 (got 0)"),
        ("spring.epochs=two", "--option spring.epochs=two: epochs takes a whole number (e.g. spring.epochs=1)"),
        (
            "spring.fixed_k=maybe",
            "--option spring.fixed_k=maybe: fixed_k is true or false (got 'maybe'); e.g. spring.fixed_k=true",
        ),
        (
            "sprng.lr=0.1",
            "--option sprng.lr=0.1: 'sprng' is no method or retriever of this run. Did you mean 'spring'? Methods: spring; retrievers: bm25",
        ),
        (
            "lora.r=8",
            "--option lora.r=8: 'lora' is no method or retriever of this run. Methods: spring; retrievers: bm25; add it to --method",
        ),
        (
            "spring.placment=trq",
            "unknown spring option 'placment'. Did you mean 'placement' or 'patience'? Valid spring options: batch_size,",
        ),
    ],
)
def test_bad_method_options_stop_the_run_before_any_work(world, capsys, option, message):
    assert main(_run(world, "--option", option)) == 2
    assert message in _one_error_line(capsys)
    assert not world["results"].exists()  # no retrieval run, checkpoint or partial cell


def test_bad_options_for_harness_train_too(world, capsys):
    flags = ["--model", str(tiny_model_dir()), "--data-dir", str(world["data"]), "--results", str(world["results"])]
    assert main(["train", "--method", "spring", *flags, "--option", "spring.fixed_k=maybe"]) == 2
    assert "fixed_k is true or false" in _one_error_line(capsys)
    assert main(["train", "--method", "spring", *flags, "--option", "lora.r=8"]) == 2
    assert "'lora' is no method or retriever of this run" in _one_error_line(capsys)


def test_a_results_path_that_is_a_file_or_under_a_file(world, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(_run(world, "--results", str(afile), method="closed-book")) == 2
    assert f"--results {afile} is a file, not a folder; pass a folder" in _one_error_line(capsys)
    assert main(_run(world, "--results", str(afile / "store"), method="closed-book")) == 2
    assert f"--results {afile / 'store'} cannot be created: {afile} is a file" in _one_error_line(capsys)
    assert main(["leaderboard", "--results", str(afile)]) == 2
    assert f"--results {afile} is a file, not a result store folder" in _one_error_line(capsys)
    assert main(["plot", "tokens-sweep", "--results", str(world["results"]), "--out", str(afile / "plots")]) == 2
    assert f"--out {afile / 'plots'} cannot be created: {afile} is a file" in _one_error_line(capsys)
    assert afile.read_text() == "x"


def test_an_empty_suite_names_the_fix(capsys):
    assert main(["run", "--suite", "", "--method", "closed-book"]) == 2
    assert "--suite '' names no suite or dataset; pass e.g. --suite qa12" in _one_error_line(capsys)


@pytest.mark.parametrize("flags", [["--batch-size", "0"], ["--limit", "-1"], ["--max-new-tokens", "0"], ["--k", "-1"]])
def test_generate_refuses_out_of_range_numbers(flags, capsys):
    assert main(["generate", "--dataset", "nq", *flags]) == 2
    assert "Invalid value" in capsys.readouterr().err


def test_a_corrupt_dataset_inside_a_suite_is_skipped_with_a_notice(world, capsys):
    # triviaqa's DPR TSV gets bytes that are not UTF-8; the suite goes on with nq.
    (world["data"] / "dpr_qas" / "topics.dpr.trivia.test.txt").write_bytes(b"who is it\t['me']\nwho \xff\xfe\t['you']\n")
    flags = _run(world, method="closed-book")
    flags[flags.index("nq")] = "indomain"
    assert main(flags) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert (
        "skipped triviaqa:" in out
        and "topics.dpr.trivia.test.txt:2: not UTF-8 text (invalid start byte); restore" in out.replace("\n", "")
    )
    cells = list((world["results"] / "runs").glob("*/spec.json"))
    assert [json.loads(p.read_text())["spec"]["dataset"] for p in cells] == ["nq"]


def test_the_real_process_prints_one_line_and_exits_2(world, tmp_path):
    # Through `python -m harness.cli`, as a user's shell sees it: no traceback, exit 2, nothing written.
    import os
    import subprocess
    import sys

    (world["data"] / "nq_open" / "NQ-open.dev.jsonl").write_text('{"question": "who?", "answer": "Paris"}\n')
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (
            _run(world, method="closed-book"),
            "NQ-open.dev.jsonl:1: 'answer' must be a non-empty list of answer strings, found a string",
        ),
        (_run(world, "--option", "spring.batch_size=0"), "training option batch_size must be >= 1 (got 0)"),
        (_run(world, "--results", str(afile), method="closed-book"), f"--results {afile} is a file, not a folder"),
    ]
    for flags, message in cases:
        done = subprocess.run(
            [sys.executable, "-m", "harness.cli", *flags], capture_output=True, text=True, check=False, env=os.environ
        )
        assert (done.returncode, done.stderr.count("\n"), message in done.stderr) == (2, 1, True), done.stderr
    assert not world["results"].exists() and afile.read_text() == "x"


# ------------------------------------------------------------------------------------------- the corpus table


def _model() -> str:
    return str(tiny_model_dir())


def _retrieve(w, *flags):
    return [
        "retrieve",
        "--suite",
        "nq",
        "--data-dir",
        str(w["data"]),
        "--corpus",
        str(w["corpus"]),
        "--results",
        str(w["results"]),
        *flags,
    ]


def _leaderboard(w, *flags):
    return ["leaderboard", "--suite", "nq", "--results", str(w["results"]), *flags]


def _preserve(w, *flags):
    return ["preserve", "--tasks", "boolq", "--model", _model(), "--results", str(w["results"]), *flags]


def _generate(w, *flags):
    return ["generate", "--model", _model(), "--data-dir", str(w["data"]), "--limit", "1", *flags]


def _checkpoint_run(w, name, *flags):
    return _run(w, "--option", f"spring.checkpoint={w['tmp'] / name}", *flags, method="spring")


def _write(relative: str, content: str | bytes) -> Callable[[dict], None]:
    def setup(w):
        path = w["tmp"] / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    return setup


def _remove(relative: str) -> Callable[[dict], None]:
    return lambda w: (w["tmp"] / relative).unlink()


def _torch_file(relative: str, value) -> Callable[[dict], None]:
    return lambda w: torch.save(value, w["tmp"] / relative)


def _tokens_file(
    relative: str, n: int = 5, metadata: dict | None = None, keep_bytes: int | None = None
) -> Callable[[dict], None]:
    """A harness virtual-token checkpoint for the tiny model (hidden size 64), optionally cut to its first bytes."""

    def setup(w):
        path = w["tmp"] / relative
        save_virtual_tokens(path, torch.randn(n, 64), metadata or {"backbone": "tiny"})
        if keep_bytes is not None:
            path.write_bytes(path.read_bytes()[:keep_bytes])

    return setup


def _damage(pattern: str, content: bytes | None = None, keep_bytes: int | None = None) -> Callable[[dict], None]:
    """Overwrite (or cut to ``keep_bytes``) the one file of the tiny world matching ``pattern``."""

    def setup(w):
        matches = sorted(w["tmp"].glob(pattern))
        assert len(matches) == 1, (pattern, matches)
        data = matches[0].read_bytes()
        matches[0].write_bytes(content if content is not None else data[:keep_bytes])

    return setup


NQ = "data/nq_open/NQ-open.dev.jsonl"
NQ_PATH = "{tmp}/" + NQ
GOOD = '{"question": "who?", "answer": ["me"]}\n'
P1 = '{"id": "p1", "title": "t", "text": "one"}\n'
RUN_FILE = "results/retrieval/bm25-*/nq/eval/q*.k4.jsonl"  # `harness retrieve --k 4` of finished_store
CORPUS_STORE = "cache/corpora/stores/*/"
BM25_INDEX = "cache/indexes/bm25-*/"


class Case(NamedTuple):
    id: str
    setup: Callable[[dict], None] | None
    argv: Callable[[dict], list[str]]
    expected: str | tuple[str, ...]  # substring(s) of the error line; {tmp} is the test's folder
    store: bool = False  # runs on a copy of a finished store, which must come out unchanged


CASES = [
    # --- dataset files
    Case(
        "dataset-malformed-json-line",
        _write(NQ, GOOD + "{oops\n"),
        lambda w: _run(w, method="closed-book"),
        f"{NQ_PATH}:2: not valid JSON (Expecting property name enclosed in double quotes)",
    ),
    Case(
        "dataset-empty-file",
        _write(NQ, ""),
        lambda w: _run(w, method="closed-book"),
        f"nq: {NQ_PATH} holds no examples; restore the dataset's original file",
    ),
    Case(
        "dataset-only-blank-lines",
        _write(NQ, "\n  \n\n"),
        lambda w: _run(w, method="closed-book"),
        f"nq: {NQ_PATH} holds no examples; restore the dataset's original file",
    ),
    Case(
        "dataset-not-utf8",
        _write(NQ, GOOD.encode() + b'{"question": "caf\xe9?", "answer": ["b"]}\n'),
        lambda w: _run(w, method="closed-book"),
        (f"{NQ_PATH}:2: not UTF-8 text (", "); restore the original file"),
    ),
    Case(
        "dataset-record-not-an-object",
        _write(NQ, '["who?", ["me"]]\n'),
        lambda w: _run(w, method="closed-book"),
        f"{NQ_PATH}:1: expected a JSON object with a 'question' field, found a list",
    ),
    Case(
        "dataset-missing-question",
        _write(NQ, '{"answer": ["me"]}\n'),
        lambda w: _run(w, method="closed-book"),
        f"{NQ_PATH}:1: record has no 'question' field",
    ),
    Case(
        "dataset-missing-answer",
        _write(NQ, '{"question": "who?"}\n'),
        lambda w: _run(w, method="closed-book"),
        f"{NQ_PATH}:1: record has no 'answer' field",
    ),
    Case(
        "dataset-blank-question",
        _write(NQ, '{"question": "  ", "answer": ["me"]}\n'),
        lambda w: _run(w, method="closed-book"),
        f"{NQ_PATH}:1: 'question' must be a non-empty string, found a string",
    ),
    Case(
        "dataset-answer-not-a-list",
        _write(NQ, '{"question": "who?", "answer": "me"}\n'),
        lambda w: _run(w, method="closed-book"),
        f"{NQ_PATH}:1: 'answer' must be a non-empty list of answer strings, found a string",
    ),
    Case(
        "dataset-duplicate-example-ids",
        _write(
            "data/webquestions/test.json",
            json.dumps([{"qId": "q1", "qText": "who?", "answers": ["me"]}, {"qId": "q1", "qText": "what?", "answers": ["it"]}]),
        ),
        lambda w: _run(w, "--suite", "webq", method="closed-book"),
        "webq: example id 'webq/q1' occurs twice in {tmp}/data/webquestions/test.json; every record needs a unique id",
    ),
    Case(
        "dataset-top-level-not-a-list",
        _write("data/bamboogle/bamboogle_test_questions_and_answers.json", '{"question": "who?", "answer": "me"}'),
        lambda w: _run(w, "--suite", "bamboogle", method="closed-book"),
        "bamboogle_test_questions_and_answers.json: the top level must be a JSON list of records, found an object",
    ),
    Case(
        "dataset-file-missing",
        _remove(NQ),
        lambda w: _run(w, method="closed-book"),
        "nq: missing nq_open/NQ-open.dev.jsonl under {tmp}/data; pass --data-dir DIR pointing at the raw data folder",
    ),
    Case(
        "training-tsv-wrong-field-count",
        _write("data/dpr_qas/topics.nq.dev.txt", "who?\t['me']\textra\n"),
        lambda w: _retrieve(w, "--split", "train"),
        "{tmp}/data/dpr_qas/topics.nq.dev.txt:1: expected 2 tab-separated fields, found 3",
    ),
    Case(
        "data-dir-missing",
        None,
        lambda w: _run(w, "--data-dir", str(w["tmp"] / "nodata"), method="closed-book"),
        "data directory {tmp}/nodata (--data-dir) does not exist; pass --data-dir DIR or set HARNESS_DATA_DIR",
    ),
    # --- corpus files (--corpus FILE)
    Case(
        "corpus-not-utf8",
        _write("corpus.jsonl", P1.encode() + b'{"id": "p2", "title": "t", "text": "x\xff"}\n'),
        lambda w: _run(w, method="concat"),
        "{tmp}/corpus.jsonl:2: line is not UTF-8 (invalid start byte); re-encode the file as UTF-8",
    ),
    Case(
        "corpus-malformed-json",
        _write("corpus.jsonl", '{"id": "p1", "title"\n'),
        lambda w: _run(w, method="concat"),
        "{tmp}/corpus.jsonl:1: not valid JSON (Expecting ':' delimiter)",
    ),
    Case(
        "corpus-empty",
        _write("corpus.jsonl", ""),
        lambda w: _retrieve(w),
        "{tmp}/corpus.jsonl: corpus is empty; it needs at least one passage",
    ),
    Case(
        "corpus-passage-without-text",
        _write("corpus.jsonl", P1 + '{"id": "p2", "title": "t"}\n'),
        lambda w: _retrieve(w),
        "{tmp}/corpus.jsonl:2: passage has no text; give it a 'text' (or FlashRAG 'contents') field",
    ),
    Case(
        "corpus-passage-without-id",
        _write("corpus.jsonl", '{"title": "t", "text": "x"}\n'),
        lambda w: _retrieve(w),
        "{tmp}/corpus.jsonl:1: passage has no id; every passage needs a non-empty 'id'",
    ),
    Case(
        "corpus-duplicate-passage-id",
        _write("corpus.jsonl", P1 + P1.replace("one", "two")),
        lambda w: _retrieve(w),
        "{tmp}/corpus.jsonl:2: duplicate passage id 'p1'; passage ids must be unique",
    ),
    Case(
        "corpus-file-missing",
        None,
        lambda w: _retrieve(w, "--corpus", str(w["tmp"] / "nope.jsonl")),
        "corpus '{tmp}/nope.jsonl' is neither 'wiki-offline' nor an existing passage file",
    ),
    Case(
        "corpus-unknown-format",
        _write("corpus.txt", "p1 one\n"),
        lambda w: _retrieve(w, "--corpus", str(w["tmp"] / "corpus.txt")),
        "{tmp}/corpus.txt: unknown corpus format; use .jsonl",
    ),
    Case(
        "corpus-dpr-tsv-without-header",
        _write("psgs.tsv", "1\tsome text\tTitle\n"),
        lambda w: ["corpus", "info", str(w["tmp"] / "psgs.tsv")],
        "{tmp}/psgs.tsv:1: expected DPR's header 'id<TAB>text<TAB>title'",
    ),
    # --- unknown names, each with its did-you-mean
    Case(
        "unknown-dataset",
        None,
        lambda w: _run(w, "--suite", "nqq", method="closed-book"),
        "unknown suite or dataset 'nqq'. Did you mean 'nq'?",
    ),
    Case(
        "unknown-method", None, lambda w: _run(w, method="clsed-book"), "unknown method 'clsed-book'. Did you mean 'closed-book'?"
    ),
    Case(
        "unknown-retriever", None, lambda w: _retrieve(w, "--retriever", "bm52"), "unknown retriever 'bm52'. Did you mean 'bm25'?"
    ),
    Case(
        "unknown-model-alias",
        None,
        lambda w: _run(w, "--model", "smollm2-136m", method="closed-book"),
        "unknown model alias 'smollm2-136m'. Did you mean 'smollm2-135m'",
    ),
    Case(
        "unknown-dtype",
        None,
        lambda w: _run(w, "--dtype", "fp8", method="closed-book"),
        "unknown dtype 'fp8'; use one of auto, fp32, bf16, fp16",
    ),
    Case(
        "unknown-metric",
        None,
        lambda w: _leaderboard(w, "--metrics", "exact_mach"),
        "unknown metric 'exact_mach'. Did you mean 'exact_match'",
    ),
    Case(
        "unknown-plot",
        None,
        lambda w: ["plot", "token-sweep", "--results", str(w["results"])],
        "unknown plot 'token-sweep'. Did you mean 'tokens-sweep'? Valid plots:",
    ),
    Case("unknown-listing", None, lambda w: ["ls", "dataset"], "unknown listing 'dataset'. Did you mean 'datasets'?"),
    Case(
        "unknown-preserve-task",
        None,
        lambda w: _preserve(w, "--tasks", "mmluu"),
        "unknown preservation task 'mmluu'. Did you mean 'mmlu'? Valid preservation tasks: boolq, csqa, gsm8k, mmlu.",
    ),
    Case(
        "unknown-output-format",
        None,
        lambda w: _leaderboard(w, "--format", "xml"),
        "unknown format 'xml'. Valid formats: csv, json, md, table.",
    ),
    Case(
        "unknown-generate-dataset", None, lambda w: _generate(w, "--dataset", "nqq"), "unknown dataset 'nqq'. Did you mean 'nq'?"
    ),
    Case("unknown-split", None, lambda w: _retrieve(w, "--split", "dev"), "unknown split 'dev'; use eval or train"),
    # --- numbers out of range (k = 0, k > n, ...)
    Case(
        "passages-zero",
        None,
        lambda w: _run(w, "--passages", "0", method="concat"),
        "--passages values must be integers >= 1 (got '0')",
    ),
    Case(
        "passages-not-a-number",
        None,
        lambda w: _run(w, "--passages", "three", method="concat"),
        "--passages takes comma-separated integers, e.g. --passages 1,5,50 (got 'three')",
    ),
    Case(
        "tokens-zero",
        None,
        lambda w: _run(w, "--tokens", "0", method="spring"),
        "--tokens values must be integers >= 1 (got '0')",
    ),
    Case(
        "tokens-above-n",
        None,
        lambda w: _run(w, "--tokens", "60", method="spring"),
        "spring uses k = 1..n virtual tokens; got k=60 with n=50",
    ),
    Case(
        "shots-zero",
        None,
        lambda w: _run(w, "--shots", "0", method="prompt-fewshot"),
        "--shots values must be integers >= 1 (got '0')",
    ),
    Case("generate-k-zero", None, lambda w: _generate(w, "--k", "0"), "--k must be at least 1 (got 0)"),
    # --- --option values
    Case(
        "retriever-option-not-a-number",
        None,
        lambda w: _retrieve(w, "--option", "bm25.k1=abc"),
        "retriever option k1='abc' is invalid (could not convert string to float: 'abc')",
    ),
    Case(
        "retriever-option-unknown",
        None,
        lambda w: _retrieve(w, "--option", "bm25.kk=1"),
        "retriever 'bm25' has no option 'kk'; valid options: b, backend, index, k1, method, stemmer, stopwords",
    ),
    Case(
        "retriever-option-out-of-range",
        None,
        lambda w: _retrieve(w, "--option", "bm25.b=2"),
        "bm25: need k1 >= 0 and 0 <= b <= 1 (got k1=0.9, b=2.0)",
    ),
    Case(
        "method-option-unknown-value",
        None,
        lambda w: _run(w, "--option", "spring.placement=xyz", method="spring"),
        "unknown placement 'xyz'. Valid placements: rqt, rtq, trq.",
    ),
    Case(
        "method-option-without-value",
        None,
        lambda w: _run(w, "--option", "spring.lr", method="spring"),
        "--option 'spring.lr' must look like METHOD.KEY=VALUE (e.g. spring.lr=0.002)",
    ),
    Case(
        "method-option-for-a-method-without-options",
        None,
        lambda w: _run(w, "--option", "closed-book.x=1", method="closed-book"),
        "method 'closed-book' takes no options (got x)",
    ),
    Case(
        "train-an-untrainable-method",
        None,
        lambda w: [
            "train",
            "--method",
            "prompt",
            "--model",
            _model(),
            "--data-dir",
            str(w["data"]),
            "--results",
            str(w["results"]),
        ],
        "method 'prompt' has nothing to train; trained methods: spring, lora, spring-plus, prefix",
    ),
    # --- SPRING checkpoints passed by the user
    Case(
        "checkpoint-wrong-hidden-size",
        _torch_file("ckpt.pt", torch.randn(5, 7)),
        lambda w: _checkpoint_run(w, "ckpt.pt"),
        "{tmp}/ckpt.pt: virtual tokens have hidden size 7, the backbone has 64; they belong to another model",
    ),
    Case(
        "checkpoint-wrong-rank",
        _torch_file("ckpt.pt", torch.randn(2, 5, 64)),
        lambda w: _checkpoint_run(w, "ckpt.pt"),
        "{tmp}/ckpt.pt: virtual tokens must be a [n, d] tensor, got shape (2, 5, 64)",
    ),
    Case(
        "checkpoint-pickle-not-a-tensor",
        _torch_file("ckpt.pt", {"weights": [1, 2], "step": 3}),
        lambda w: _checkpoint_run(w, "ckpt.pt"),
        "{tmp}/ckpt.pt holds a dict, expected one [n, d] tensor",
    ),
    Case(
        "checkpoint-not-a-pickle",
        _write("ckpt.pt", b"not a pickle at all"),
        lambda w: _checkpoint_run(w, "ckpt.pt"),
        "{tmp}/ckpt.pt is not a tensor file loadable with weights_only=True (UnpicklingError); pass an official *.added_token_embeddings.pt",
    ),
    Case(
        "checkpoint-missing",
        None,
        lambda w: _checkpoint_run(w, "missing.pt"),
        "SPRING checkpoint {tmp}/missing.pt does not exist; check the path",
    ),
    Case(
        "checkpoint-truncated-safetensors",
        _tokens_file("ckpt.safetensors", keep_bytes=-10),
        lambda w: _checkpoint_run(w, "ckpt.safetensors"),
        ("checkpoint {tmp}/ckpt.safetensors is damaged (", "file not fully covered); pass an intact checkpoint file"),
    ),
    Case(
        "checkpoint-fewer-tokens-than-k",
        _torch_file("ckpt.pt", torch.randn(3, 64)),
        lambda w: _checkpoint_run(w, "ckpt.pt", "--tokens", "5"),
        "checkpoint ({tmp}/ckpt.pt) has 3 virtual tokens; cannot use k=5: pass --tokens 1..3",
    ),
    Case(
        "checkpoint-of-another-backbone",
        _tokens_file("ckpt.safetensors", metadata={"backbone": "other-model", "backbone_weights_hash": "0" * 16}),
        lambda w: _preserve(w, "--method", "spring", "--checkpoint", str(w["tmp"] / "ckpt.safetensors")),
        (
            "{tmp}/ckpt.safetensors was trained on backbone other-model (weights 0000000000000000), not on the loaded one",
            "; train it for this backbone",
        ),
    ),
    Case(
        "preserve-checkpoint-truncated",
        _tokens_file("ckpt.safetensors", keep_bytes=100),
        lambda w: _preserve(w, "--method", "spring", "--checkpoint", str(w["tmp"] / "ckpt.safetensors")),
        ("checkpoint {tmp}/ckpt.safetensors is damaged (", "); delete it to train it again, or pass an intact file"),
    ),
    # --- models and devices
    Case(
        "model-folder-missing",
        None,
        lambda w: _run(w, "--model", str(w["tmp"] / "nomodel"), method="closed-book"),
        "model folder {tmp}/nomodel does not exist; pass an existing folder, a hub id (owner/name) or an alias",
    ),
    Case(
        "model-folder-without-config",
        lambda w: (w["tmp"] / "emptymodel").mkdir(),
        lambda w: _run(w, "--model", str(w["tmp"] / "emptymodel"), method="closed-book"),
        "{tmp}/emptymodel is not a model folder: it has no config.json",
    ),
    Case(
        "generate-unknown-device",
        None,
        lambda w: _generate(w, "--device", "tpu"),
        "--device 'tpu' is not a device; pass cpu, cuda or cuda:N",
    ),
    # --- reading a store
    Case(
        "plot-on-an-empty-store",
        None,
        lambda w: ["plot", "tokens-sweep", "--results", str(w["results"])],
        "the result store {tmp}/results holds no finished cell; run `harness run` first",
    ),
    Case(
        "compare-unknown-label",
        None,
        lambda w: _leaderboard(w, "--compare", "concatt,closed-book"),
        "no finished cell of method 'concatt' among the selected cells. Did you mean 'concat'? Methods present: closed-book, concat",
        store=True,
    ),
    Case(
        "leaderboard-unknown-method-filter",
        None,
        lambda w: _leaderboard(w, "--method", "concta"),
        "--method 'concta': the store has no finished cell of that method. Did you mean 'concat'? In the store: closed-book, concat",
        store=True,
    ),
    Case(
        "leaderboard-unknown-retriever-filter",
        None,
        lambda w: _leaderboard(w, "--retriever", "bm52"),
        "--retriever 'bm52': the store has no finished cell of that retriever. Did you mean 'bm25'? In the store: bm25, none",
        store=True,
    ),
    Case(
        "leaderboard-preserve-without-cells",
        None,
        lambda w: _leaderboard(w, "--preserve"),
        "the result store holds no preservation cell; run `harness preserve` first",
        store=True,
    ),
    Case(
        "plot-missing-cells",
        None,
        lambda w: ["plot", "passages", "--suite", "nq", "--results", str(w["results"])],
        "no Prompt or SPRING cells of nq in the store; run `harness run --suite nq --method prompt,spring --passages 1,3,5,10`",
        store=True,
    ),
    # --- corrupted store and cache files
    Case(
        "corrupt-retrieval-run",
        _damage(RUN_FILE, b'{"id": "nq/test/1", "hits": [["p1", 1.5]\n'),
        lambda w: _retrieve(w, "--k", "4"),
        (".k4.jsonl:1: corrupt retrieval run (", "); delete the file to recompute it"),
        store=True,
    ),
    Case(
        "empty-retrieval-run",
        _damage(RUN_FILE, b""),
        lambda w: _retrieve(w, "--k", "4"),
        (".k4.jsonl: run has no hits for example 'nq/test/1'; delete the file to recompute it"),
        store=True,
    ),
    Case(
        "corrupt-corpus-store-meta",
        _damage(CORPUS_STORE + "meta.json", b"{torn"),
        lambda w: _retrieve(w, "--k", "5"),
        ("{tmp}/cache/corpora/stores/", "is unreadable (", "); delete it and prepare it again"),
        store=True,
    ),
    Case(
        "corrupt-corpus-store-sqlite",
        _damage(CORPUS_STORE + "store.sqlite", keep_bytes=100),
        lambda w: _retrieve(w, "--k", "5"),
        "is damaged (database disk image is malformed); delete that folder; the next command prepares the corpus again",
        store=True,
    ),
    Case(
        "corrupt-bm25-index",
        _damage(BM25_INDEX + "data.csc.index.npy", keep_bytes=60),
        lambda w: _retrieve(w, "--k", "5"),
        ("{tmp}/cache/indexes/bm25-", "is damaged (ValueError: ", "); delete that folder to rebuild it"),
        store=True,
    ),
    Case(
        "corrupt-bm25-index-meta",
        _damage(BM25_INDEX + "harness.json", b"{"),
        lambda w: _retrieve(w, "--k", "5"),
        ("{tmp}/cache/indexes/bm25-", "is unreadable (", "); delete it to rebuild"),
        store=True,
    ),
]


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory) -> Path:
    """A tiny world after `harness run` (concat and closed-book, m=2) and `harness retrieve --k 4`: cells, retrieval
    runs, the prepared corpus store and the BM25 index (``cache/``)."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE_DIR", str(root / "cache"))
        w = {**make_world(root), "tmp": root}
        assert main(_run(w, "--passages", "2", method="concat,closed-book")) == 0
        assert main(_retrieve(w, "--k", "4")) == 0
    return root


def _listing(folder: Path) -> list[tuple[str, int]] | None:
    """Every file under ``folder`` with its size (``None``: no folder)."""
    if not folder.exists():
        return None
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def _half_built(cache: Path) -> list[str]:
    """Temporary or staging folders in the cache: what an interrupted preparation or index build leaves."""
    if not cache.exists():
        return []
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_dir() and p.name.startswith((".", "staging-")))


def test_the_bad_input_corpus_has_at_least_40_distinct_cases():
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, world, tmp_path, capsys, request):
    w = {**world, "tmp": tmp_path}
    if case.store:
        stored = request.getfixturevalue("finished_store")
        shutil.copytree(stored / "results", w["results"])
        shutil.copytree(stored / "cache", tmp_path / "cache", dirs_exist_ok=True)
    if case.setup is not None:
        case.setup(w)
    before = _listing(w["results"])
    capsys.readouterr()
    assert main(case.argv(w)) == 2
    line = _one_error_line(capsys)
    for expected in (case.expected,) if isinstance(case.expected, str) else case.expected:
        assert expected.format(tmp=tmp_path) in line
    if case.store:
        assert _listing(w["results"]) == before  # no file added, removed, grown or cut
    else:
        assert not w["results"].exists()
    assert _half_built(tmp_path / "cache") == []


# ------------------------------------------------------------------------- numbers the parser itself refuses


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        pytest.param(lambda w: _run(w, "--limit", "0", method="closed-book"), "--limit", id="run-limit-zero"),
        pytest.param(lambda w: _run(w, "--limit", "-1", method="closed-book"), "--limit", id="run-limit-negative"),
        pytest.param(
            lambda w: _run(w, "--max-input-tokens", "8", method="concat"),
            "--max-input-tokens",
            id="run-max-input-tokens-below-16",
        ),
        pytest.param(lambda w: _retrieve(w, "--k", "0"), "--k", id="retrieve-k-zero"),
        pytest.param(lambda w: _retrieve(w, "--limit", "-3"), "--limit", id="retrieve-limit-negative"),
        pytest.param(lambda w: _generate(w, "--limit", "-1"), "--limit", id="generate-limit-negative"),
        pytest.param(
            lambda w: ["train", "--tokens", "0", "--model", _model(), "--results", str(w["results"])],
            "--tokens",
            id="train-tokens-zero",
        ),
        pytest.param(lambda w: _preserve(w, "--limit", "0"), "--limit", id="preserve-limit-zero"),
    ],
)
def test_out_of_range_numbers_are_refused_before_any_work(argv, flag, world, tmp_path, capsys):
    # click refuses these while parsing; cli.main prints its message as the one `error:` line, with the help to read.
    w = {**world, "tmp": tmp_path}
    assert main(argv(w)) == 2
    line = _one_error_line(capsys)
    assert f"Invalid value for '{flag}'" in line and line.endswith("--help`")
    assert not w["results"].exists()


# ---------------------------------------------------------------------------------- the disk under the store


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"needs mount privileges ({done.stderr.decode(errors='replace').strip() or 'mount failed'})")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write in: mode 0555 for a user; for root, who ignores modes, a read-only tmpfs."""
    folder = tmp_path / "readonly"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    _mount_tmpfs(folder, "ro,size=64k")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize(
    ("argv", "flag", "inside"),
    [
        pytest.param(lambda w, ro: _run(w, "--results", str(ro), method="closed-book"), "--results", False, id="run"),
        pytest.param(
            lambda w, ro: _run(w, "--results", str(ro / "store"), method="closed-book"), "--results", True, id="run-new-subfolder"
        ),
        pytest.param(lambda w, ro: _retrieve(w, "--results", str(ro)), "--results", False, id="retrieve"),
        pytest.param(
            lambda w, ro: ["train", "--model", _model(), "--data-dir", str(w["data"]), "--results", str(ro)],
            "--results",
            False,
            id="train",
        ),
        pytest.param(
            lambda w, ro: ["plot", "tokens-sweep", "--results", str(w["results"]), "--out", str(ro / "plots")],
            "--out",
            True,
            id="plot-out",
        ),
    ],
)
def test_a_read_only_results_folder(argv, flag, inside, read_only_folder, world, tmp_path, capsys):
    w = {**world, "tmp": tmp_path}
    args = argv(w, read_only_folder)
    target = args[len(args) - args[::-1].index(flag)]  # the last --results wins
    assert main(args) == 2
    assert f"{flag} {target}: {read_only_folder} is not writable; pass a folder you can write to" in _one_error_line(capsys)
    assert list(read_only_folder.iterdir()) == [] and not w["results"].exists()


def test_a_full_disk_is_one_line_and_the_next_run_finishes_the_cell(world, tmp_path, capsys):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=64k")
    try:
        filler = disk / "filler"
        with pytest.raises(OSError) as full, open(filler, "wb") as handle:
            while True:
                handle.write(b"x" * 4096)
                handle.flush()
        assert full.value.errno == errno.ENOSPC
        argv = _run(world, "--results", str(disk / "results"), method="closed-book")
        assert main(argv) == 2
        assert "No space left on device; free space or pick a folder you can write to" in _one_error_line(capsys)
        assert not list((disk / "results").rglob("metrics.json"))  # no cell published from half its files
        filler.unlink()  # space freed: the same command finishes, from a clean partial folder
        assert main(argv) == 0
        cells = [p for p in (disk / "results" / "runs").iterdir()]
        assert [p.name.startswith(".") for p in cells] == [False]
        assert len((cells[0] / "predictions.jsonl").read_text().splitlines()) == 2
        assert not [p for p in (disk / "results").rglob("*.tmp")]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_disk_filling_up_mid_cell_is_one_line_and_resumes(world, capsys, monkeypatch):
    # No mount needed: the predictions' fsync reports ENOSPC, as a full disk does on a delayed-allocation file system.
    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    argv = _run(world, method="closed-book")
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full_disk)
        assert main(argv) == 2
    assert _one_error_line(capsys) == "error: cannot write: No space left on device; free space or pick a folder you can write to"
    assert not list(world["results"].rglob("metrics.json"))
    assert main(argv) == 0  # resumes the partial cell
    assert main(_run(world, "--results", str(world["results"].with_name("clean")), method="closed-book")) == 0
    (resumed,) = (world["results"] / "runs").iterdir()
    (clean,) = (world["results"].with_name("clean") / "runs").iterdir()
    assert resumed.name == clean.name
    assert (resumed / "predictions.jsonl").read_bytes() == (clean / "predictions.jsonl").read_bytes()


# ------------------------------------------------------------------ an interrupted index build is no error


def _run_file_and_index(w) -> tuple[str, Path]:
    """The hits of `harness retrieve --k 3` over the tiny world (a fresh store each time) and the index folder."""
    results = w["tmp"] / f"results-{len(list(w['tmp'].glob('results-*')))}"
    assert main(_retrieve(w, "--k", "3", "--results", str(results))) == 0
    (run_file,) = results.rglob("q*.k3.jsonl")
    (index,) = [
        p for p in (Path(os.environ["HARNESS_CACHE_DIR"]) / "indexes").iterdir() if p.is_dir() and not p.name.startswith(".")
    ]
    return run_file.read_text(), index


def test_an_index_build_stopped_by_ctrl_c_is_rebuilt_next_time(world, tmp_path, monkeypatch):
    import bm25s

    w = {**world, "tmp": tmp_path}
    clean, clean_index = _run_file_and_index(w)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache-2"))
    original = bm25s.BM25.save

    def interrupted(self, *args, **kwargs):
        original(self, *args, **kwargs)  # half the index is on disk when the user presses Ctrl-C
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(bm25s.BM25, "save", interrupted)
        assert main(_retrieve(w, "--k", "3", "--results", str(tmp_path / "stopped"))) == 130  # the shell's code for Ctrl-C
    indexes = tmp_path / "cache-2" / "indexes"
    assert [p.name for p in indexes.iterdir() if p.is_dir()] == []  # the temporary build folder is gone
    assert not (tmp_path / "stopped").exists()  # nor any trace in the store
    again, index = _run_file_and_index(w)
    assert again == clean and index.name == clean_index.name and (index / "harness.json").is_file()


def test_a_killed_index_build_is_rebuilt_next_time(world, tmp_path, monkeypatch):
    # What SIGKILL leaves (no clean-up runs): the build's temporary folder, the lock file, a half-written corpus
    # store, and, as from a copy that stopped midway, the index folder without its harness.json.
    w = {**world, "tmp": tmp_path}
    clean, clean_index = _run_file_and_index(w)
    cache = tmp_path / "cache-2"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    indexes = cache / "indexes"
    shutil.copytree(clean_index, indexes / f".{clean_index.name}.k1ll3d")
    half = indexes / f".{clean_index.name}.k1ll3d" / "data.csc.index.npy"
    half.write_bytes(half.read_bytes()[:40])
    (indexes / f".{clean_index.name}.k1ll3d" / "harness.json").unlink()
    (indexes / clean_index.name).mkdir()
    (indexes / clean_index.name / "data.csc.index.npy").write_bytes(half.read_bytes())
    (indexes / f"{clean_index.name}.lock").touch()
    (cache / "corpora" / "stores" / ".staging-k1ll3d").mkdir(parents=True)
    (cache / "corpora" / "stores" / ".staging-k1ll3d" / "store.sqlite").write_bytes(b"SQLite format 3\x00")
    again, index = _run_file_and_index(w)
    assert again == clean and index == indexes / clean_index.name
    assert sorted(p.name for p in index.iterdir()) == sorted(p.name for p in clean_index.iterdir())
