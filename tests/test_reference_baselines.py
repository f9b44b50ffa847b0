"""The fair references for instruct backbones: prompt-chat and prompt-fewshot (exact inputs, shots, runner)."""

from types import SimpleNamespace

import pytest
from tiny_model import build_tokenizer
from tiny_world import QUESTIONS
from tiny_world import run_config as _config

from harness.cli import main
from harness.errors import HarnessError
from harness.leaderboard import cells_frame
from harness.plugins import METHODS
from harness.runner import RunContext, run
from harness.segments import BOS, PASSAGE_LINES, SHOT_PASSAGE_LINES, input_length, render_segments, truncate
from harness.store import Store
from harness.types import Example, Passage

P1 = "According to the previous relevant passages, please answer the following question. Only return the answer without any other words."
PASSAGES = [Passage("a", "Darwin", "Charles Darwin was a naturalist."), Passage("b", "Paris", "Paris is in France.")]
QUESTION = Example("t/1", "who was darwin?", ("a naturalist",))


def _fewshot():
    method = METHODS.get("prompt-fewshot")(shots=2)
    method.examples = (
        (Example("s/1", "capital of france?", ("Paris", "paris")), (PASSAGES[1], PASSAGES[0])),
        (Example("s/2", "a spider's legs?", ("eight",)), (PASSAGES[0],)),
    )
    return method


def test_prompt_chat_is_p1_as_the_user_turn_of_the_chat_template():
    tokenizer = build_tokenizer()
    segments = METHODS.get("prompt-chat")().build_input(QUESTION, PASSAGES, tokenizer)
    assert render_segments(segments, tokenizer) == (
        "<s>[system] You are helpful.\n<s>[user] "
        "[1] Darwin Charles Darwin was a naturalist.\n[2] Paris Paris is in France.\n\n"
        f"{P1}\nQuestion: who was darwin?</s>\n<s>[assistant] "
    )


def test_prompt_chat_refuses_a_backbone_without_chat_template_and_keys_the_template():
    tokenizer = build_tokenizer()
    context = SimpleNamespace(tokenizer=tokenizer, model_name="tiny")
    method = METHODS.get("prompt-chat")()
    method.prepare_dataset(context, "bm25", "nq")
    keyed = method.spec()["params"]["chat_template_hash"]
    assert len(keyed) == 16
    tokenizer.chat_template = tokenizer.chat_template.replace("helpful", "terse")
    method.prepare_dataset(context, "bm25", "nq")
    assert method.spec()["params"]["chat_template_hash"] != keyed  # another chat template, another result key
    tokenizer.chat_template = None
    with pytest.raises(
        HarnessError, match="prompt-chat needs a chat template and tiny's tokenizer has none; use --method prompt"
    ):
        method.prepare_dataset(context, "bm25", "nq")
    with pytest.raises(HarnessError, match="for the raw-text prompt use --method prompt"):
        METHODS.get("prompt-chat")(chat_template=False)


def test_prompt_fewshot_puts_solved_examples_with_their_passages_first():
    tokenizer = build_tokenizer()
    segments = _fewshot().build_input(QUESTION, PASSAGES[:1], tokenizer)  # m = 1: each shot keeps 1 passage too
    assert render_segments(segments, tokenizer) == (
        "<s>[1] Paris Paris is in France.\n\n"
        f"{P1}\nQuestion: capital of france?\nAnswer: Paris\n\n"
        "[1] Darwin Charles Darwin was a naturalist.\n\n"
        f"{P1}\nQuestion: a spider's legs?\nAnswer: eight\n\n"
        "[1] Darwin Charles Darwin was a naturalist.\n\n"
        f"{P1}\nQuestion: who was darwin?\nAnswer:"
    )
    assert segments[0].role == BOS


def test_fewshot_truncation_cuts_the_shots_passages_before_the_questions():
    tokenizer = build_tokenizer()
    segments = _fewshot().build_input(QUESTION, PASSAGES[:1], tokenizer)
    shot_lines = [s for s in segments if s.role == SHOT_PASSAGE_LINES]
    own = next(s for s in segments if s.role == PASSAGE_LINES)
    full = input_length(segments)
    # Cutting 3 tokens takes them from the last shot's passage; the question's passage is intact.
    cut = truncate(segments, full - 3)
    assert [s.ids for s in cut if s.role == SHOT_PASSAGE_LINES] == [shot_lines[0].ids, shot_lines[1].ids[:-3]]
    assert next(s for s in cut if s.role == PASSAGE_LINES) == own
    # With every shot passage gone (and their blank lines), the question's own passage is cut next.
    without_shots = full - sum(len(s) + 1 for s in shot_lines)
    cut = truncate(segments, without_shots - 2)
    assert not [s for s in cut if s.role.startswith("shot-passages")]
    assert next(s for s in cut if s.role == PASSAGE_LINES).ids == own.ids[:-2]
    assert render_segments(cut, tokenizer).startswith(f"<s>{P1}\nQuestion: capital of france?\nAnswer: Paris\n\n{P1}")


def test_fewshot_without_shots_and_bad_options_are_one_line_errors():
    with pytest.raises(HarnessError, match="draws its shots per dataset inside `harness run`"):
        METHODS.get("prompt-fewshot")().build_input(QUESTION, PASSAGES, build_tokenizer())
    with pytest.raises(HarnessError, match="at least 1 shot"):
        METHODS.get("prompt-fewshot")(shots=0)
    context = SimpleNamespace(data_dir=None, seed=0, max_passages=3)
    with pytest.raises(HarnessError, match="bamboogle is a held-out dataset.*--option prompt-fewshot.pool=nq"):
        METHODS.get("prompt-fewshot")().prepare_dataset(context, "bm25", "bamboogle")


def test_run_prints_prompt_chat_and_fewshot_beside_prompt_with_shots_in_the_key(world, capsys):
    config = _config(world, methods=("prompt", "prompt-chat", "prompt-fewshot"), shots=(2,), max_new_tokens=4)
    context = RunContext(config)
    cells, notices = run(config, context)
    assert notices == []
    by_name = {cell.spec.method["name"]: cell for cell in cells}
    assert set(by_name) == {"prompt", "prompt-chat", "prompt-fewshot"}
    fewshot = by_name["prompt-fewshot"].spec.method
    # The nq training pool of the tiny world has 4 questions; 2 are drawn, seeded, and keyed.
    assert fewshot["shots"] == 2 and fewshot["pool"] == "nq" and len(fewshot["shot_ids"]) == 2
    assert all(i.startswith("nq/train-") for i in fewshot["shot_ids"])
    assert len(by_name["prompt-chat"].spec.method["chat_template_hash"]) == 16
    store = Store(world["results"])
    tokens = {name: [r["input_tokens"] for r in store.load(cell.key).predictions()] for name, cell in by_name.items()}
    assert all(f > p for f, p in zip(tokens["prompt-fewshot"], tokens["prompt"], strict=True))
    assert len(tokens["prompt"]) == len(QUESTIONS)

    # The same draw again (the run is cached), another seed draws other shots and is another cell.
    again, _ = run(config, RunContext(config))
    assert [c.key for c in again] == [c.key for c in cells]
    other = _config(
        world, methods=("prompt-fewshot",), shots=(2,), max_new_tokens=4, method_options=(("prompt-fewshot.seed", "1"),)
    )
    reseeded, _ = run(other, RunContext(other))
    assert reseeded[0].key != by_name["prompt-fewshot"].key

    assert {"prompt", "prompt-chat", "prompt-fewshot[shots=2]"} <= set(cells_frame(store)["method"])
    capsys.readouterr()
    assert main(["leaderboard", "--results", str(world["results"]), "--compare", "prompt,prompt-chat"]) == 0
    assert "prompt-chat - prompt, paired bootstrap 95% CI" in capsys.readouterr().out

    # The CLI: --shots, and the leaderboard rows.
    code = main(
        [
            "run",
            "--suite",
            "nq",
            "--method",
            "prompt-fewshot",
            "--shots",
            "1,2",
            "--model",
            str(config.model),
            "--results",
            str(world["results"]),
            "--data-dir",
            str(world["data"]),
            "--corpus",
            str(world["corpus"]),
            "--passages",
            "2",
            "--limit",
            "5",
            "--max-new-tokens",
            "4",
            "--dtype",
            "fp32",
        ]
    )
    assert code == 0
    assert "prompt-fewshot[shots=1]" in capsys.readouterr().out


def test_under_a_cut_every_method_reads_the_same_passage_text_for_the_question():
    import torch

    from harness.segments import PASSAGE_RESERVE, budget_length, fit_input

    tokenizer = build_tokenizer()
    long_passages = [
        Passage(str(i), f"Title {i}", "Charles Darwin was an English naturalist and biologist. " * 4) for i in range(3)
    ]
    spring = METHODS.get("spring")()
    spring.weights = torch.zeros(spring.n, 8)
    methods = [METHODS.get("prompt")(), METHODS.get("concat")(), METHODS.get("prompt-chat")(), spring, _fewshot()]
    for method in methods[2:3]:
        method.prepare_dataset(SimpleNamespace(tokenizer=tokenizer), "bm25", "nq")
    limit = PASSAGE_RESERVE + 60
    seen = []
    for method in methods:
        segments = fit_input(method.build_input(QUESTION, long_passages, tokenizer), limit)
        seen.append(next(s for s in segments if s.role == PASSAGE_LINES).ids)
        shots_text = sum(len(s) for s in segments if s.role in ("shot", "shot-passages-end"))
        assert budget_length(segments) <= limit + shots_text
    assert all(ids == seen[0] for ids in seen) and len(seen[0]) == 60  # the same 60 tokens everywhere
    # The few-shot examples' own passages were cut to make room, never the question's.
    fewshot = fit_input(methods[-1].build_input(QUESTION, long_passages, tokenizer), limit)
    assert sum(len(s) for s in fewshot if s.role == SHOT_PASSAGE_LINES) < sum(
        len(s) for s in methods[-1].build_input(QUESTION, long_passages, tokenizer) if s.role == SHOT_PASSAGE_LINES
    )
