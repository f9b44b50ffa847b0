"""`harness generate` end to end on the tiny model (real nq questions, no passages / oracle passages)."""

import pytest
from tiny_model import tiny_model_dir

from harness.cli import main
from harness.commands.generate import generate_answers


def test_generate_prints_a_table_with_averages(capsys, real_data_dir):
    code = main(
        [
            "generate",
            "--model",
            str(tiny_model_dir()),
            "--dataset",
            "nq",
            "--limit",
            "3",
            "--method",
            "closed-book",
            "--retriever",
            "none",
            "--max-new-tokens",
            "4",
            "--show-input",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mean over 3" in out and "EM" in out and "F1" in out
    assert "Question: " in out and "Answer:" in out  # --show-input shows the exact closed-book template


def test_generate_answers_with_oracle_passages(real_data_dir):
    result = generate_answers(
        model=str(tiny_model_dir()), dataset="nq", method="prompt", retriever="oracle", k=2, limit=4, max_new_tokens=3
    )
    assert len(result.rows) == 4
    assert any(row.passages for row in result.rows)
    assert result.method["template"]["name"] == "prompt"
    assert "According to the previous relevant passages" in result.first_input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "promt"], "Did you mean 'prompt'"),
        (["--model", "smollm2-13m"], "Did you mean 'smollm2-135m'"),
        (["--retriever", "orcle"], "Did you mean 'oracle'"),
    ],
)
def test_bad_names_are_one_line_errors(args, message, capsys, real_data_dir):
    code = main(["generate", "--dataset", "nq", "--limit", "1", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_limit_is_the_runs_seeded_sample_and_first_is_file_order(real_data_dir):
    from harness.datasets import load_examples
    from harness.runner import select_examples

    common = dict(model=str(tiny_model_dir()), dataset="nq", method="closed-book", retriever="none", k=1, max_new_tokens=1)
    sampled = generate_answers(**common, limit=3)
    in_order = generate_answers(**common, limit=3, first=True)
    assert [row.question for row in sampled.rows] == [e.question for e in select_examples("nq", 3, 0, None)]
    assert [row.question for row in in_order.rows] == [e.question for e in load_examples("nq")[:3]]
    assert [row.question for row in sampled.rows] != [row.question for row in in_order.rows]
