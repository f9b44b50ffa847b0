"""Bad input through the CLI: one line on stderr naming the problem and the fix, exit code 2, nothing written."""

import json

import pytest
from tiny_model import tiny_model_dir

from harness.cli import main


@pytest.fixture(autouse=True, scope="module")
def _tiny_model_saved():
    tiny_model_dir()  # written once, before any test captures stderr (saving prints a progress bar)


def _run(world, *flags, method="spring"):
    return [
        "run", "--suite", "nq", "--method", method, "--model", str(tiny_model_dir()), "--data-dir", str(world["data"]),
        "--corpus", str(world["corpus"]), "--results", str(world["results"]), "--limit", "2", "--reference", "", *flags,
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
        ("spring.fixed_k=maybe", "--option spring.fixed_k=maybe: fixed_k is true or false (got 'maybe'); e.g. spring.fixed_k=true"),
        ("sprng.lr=0.1", "--option sprng.lr=0.1: method 'sprng' is not in this run. Did you mean 'spring'? Methods of the run: spring"),
        ("lora.r=8", "--option lora.r=8: method 'lora' is not in this run. Methods of the run: spring; add it to --method"),
        ("spring.placment=trq", "unknown spring option 'placment'. Did you mean 'placement' or 'patience'? Valid spring options: batch_size,"),
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
    assert "method 'lora' is not in this run" in _one_error_line(capsys)


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
    assert "skipped triviaqa:" in out and "topics.dpr.trivia.test.txt:2: not UTF-8 text (invalid start byte); restore" in out.replace("\n", "")
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
        (_run(world, method="closed-book"), "NQ-open.dev.jsonl:1: 'answer' must be a non-empty list of answer strings, found a string"),
        (_run(world, "--option", "spring.batch_size=0"), "training option batch_size must be >= 1 (got 0)"),
        (_run(world, "--results", str(afile), method="closed-book"), f"--results {afile} is a file, not a folder"),
    ]
    for flags, message in cases:
        done = subprocess.run([sys.executable, "-m", "harness.cli", *flags], capture_output=True, text=True, check=False, env=os.environ)
        assert (done.returncode, done.stderr.count("\n"), message in done.stderr) == (2, 1, True), done.stderr
    assert not world["results"].exists() and afile.read_text() == "x"
