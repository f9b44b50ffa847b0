"""The `harness` command as a user runs it: exit codes, one-line errors, tables."""

import subprocess
import sys

import pytest

from harness.cli import main


def test_unknown_listing_exits_2_with_did_you_mean(capsys):
    assert main(["ls", "datasetz"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "error: unknown listing 'datasetz'. Did you mean 'datasets'? Valid listings: datasets, methods, metrics, retrievers, suites."
    )
    assert "Traceback" not in captured.err


def test_ls_suites_and_metrics(capsys):
    assert main(["ls", "suites"]) == 0
    out = capsys.readouterr().out
    assert "qa12" in out and "heldout" in out and "popqa, fermi, musique, bamboogle" in out
    assert main(["ls", "metrics"]) == 0
    out = capsys.readouterr().out
    assert "exact_match" in out and "regex_match" in out


def test_ls_methods_lists_every_method_with_its_options(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    assert main(["ls", "methods"]) == 0
    rows: dict[str, str] = {}
    last = ""
    for line in capsys.readouterr().out.splitlines():  # a wrapped row continues on lines with an empty first cell
        if line.startswith("│"):
            name = line.split("│")[1].strip()
            last = name or last
            rows[last] = rows.get(last, "") + line
    assert {"closed-book", "concat", "prompt", "prompt-chat", "prompt-fewshot", "spring", "lora", "spring-plus", "prefix"} <= set(
        rows
    )
    assert "--shots" in rows["prompt-fewshot"] and "seed=0, pool=None" in rows["prompt-fewshot"]
    assert "spring-trq" in rows["prefix"] and "impl" in rows["prefix"] and "--tokens" in rows["prefix"]


def test_ls_datasets_counts(capsys, real_data_dir):
    assert main(["ls", "datasets", "--data-dir", str(real_data_dir)]) == 0
    out = capsys.readouterr().out
    for count in ("3,610", "11,313", "14,267", "125"):
        assert count in out


def test_data_check_reports_missing_files_and_exits_1(tmp_path, capsys):
    (tmp_path / "bamboogle").mkdir()
    (tmp_path / "bamboogle" / "bamboogle_test_questions_and_answers.json").write_text('[{"question": "q", "answer": "a"}]')
    assert main(["data", "check", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bamboogle" in out and "missing" in out and "hub only" in out


def test_data_check_missing_dir_is_a_one_line_error(tmp_path, capsys):
    assert main(["data", "check", "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data directory") and err.count("\n") == 1


def test_console_script_entry_point():
    done = subprocess.run([sys.executable, "-m", "harness.cli", "ls", "suitez"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "Did you mean 'suites'?" in done.stderr


def test_debug_shows_the_traceback_of_a_user_error(capsys):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="names no suite or dataset"):
        main(["--debug", "run", "--suite", "", "--method", "closed-book"])
    assert main(["run", "--suite", "", "--method", "closed-book"]) == 2  # without it, one line again
    assert capsys.readouterr().err.startswith("error: --suite '' names no suite")


def test_usage_errors_are_one_line_and_help_still_prints(capsys):
    assert main(["run", "--limit", "x"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "error: Invalid value for '--limit': Input should be a valid integer, unable to parse string as an integer; see `harness run --help`\n"
    )
    assert main(["--bogus"]) == 2
    assert capsys.readouterr().err == "error: No such option: --bogus; see `harness --help`\n"
    assert main([]) == 2 and "Usage: harness" in capsys.readouterr().out  # no command: the help, exit 2 as before
    assert main(["run", "--help"]) == 0 and "--suite" in capsys.readouterr().out


def test_help_shows_flags_as_flags(capsys):
    assert main(["run", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (full,) = [line for line in lines if line.strip().startswith("--full")]
    assert "<bool>" not in full and "evaluate the full" in full
    assert main(["preserve", "--help"]) == 0
    assert "<bool>" not in capsys.readouterr().out


def test_version_flag(capsys):
    from harness import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"harness {__version__}\n"


@pytest.mark.parametrize("command", [["run", "--suite", "nq"], ["train", "--method", "spring"], ["preserve", "--tasks", "boolq"]])
def test_device_is_checked_on_run_train_and_preserve(command, tmp_path, capsys):
    import torch

    results = ["--results", str(tmp_path / "results")]
    assert main([*command, "--device", "gpu0", *results]) == 2
    assert capsys.readouterr().err.strip() == "error: --device 'gpu0' is not a device; pass cpu, cuda or cuda:N"
    if not torch.cuda.is_available():
        assert main([*command, "--device", "cuda", *results]) == 2
        assert "error: --device cuda: no CUDA GPU is visible on this machine; pass --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_verbosity_hides_the_libraries_warnings_unless_debug(capsys):
    import warnings

    def raised() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            # As PEFT raises transformers' deprecation of a renamed method, and as harness raises its own.
            warnings.warn_explicit("is deprecated", FutureWarning, "peft_model.py", 1, module="peft.peft_model", registry={})
            warnings.warn_explicit("ours", UserWarning, "runner.py", 1, module="harness.runner", registry={})
        return [str(w.message) for w in caught]

    try:
        assert main(["ls", "suites"]) == 0  # the default: info
        assert raised() == ["ours"]
        assert main(["--verbosity", "debug", "ls", "suites"]) == 0
        assert raised() == ["is deprecated", "ours"]
        assert main(["--verbosity", "loud", "ls", "suites"]) == 2
        assert "unknown verbosity level 'loud'. Valid verbosity levels: debug, info." in capsys.readouterr().err
    finally:
        main(["ls", "suites"])
