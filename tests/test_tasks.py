"""Every registered dataset against the manifest: counts, stable unique ids, disjoint train/eval pools."""

import json
import sys

import pytest

from harness.datasets import in_carve_out, load_examples
from harness.errors import HarnessError, NotAvailableOffline
from harness.metrics import METRICS, normalize_answer
from harness.plugins import DATASETS
from harness.suites import SUITES, resolve_suite
from harness.types import Example

# The contract covers every registered dataset: a new task file + its registration line is loaded, counted against
# the counts on its own card (eval_count, train_count) and checked here without editing this file.
LOCAL = [name for name in DATASETS.names() if DATASETS.get(name).eval_files]
WITH_TRAIN_POOL = [name for name in LOCAL if DATASETS.get(name).has_train_pool()]


def test_registry_holds_the_papers_twelve():
    assert set(SUITES["qa12"]) <= set(DATASETS.names())
    assert {"curatedtrec", "strategyqa"} <= set(DATASETS.names())


@pytest.mark.parametrize("name", DATASETS.names())
def test_task_card_is_complete(name):
    task = DATASETS.get(name)
    assert task.name == name
    assert task.title and task.eval_split
    assert task.metrics and all(metric in METRICS for metric in task.metrics)
    if DATASETS.origin(name) is None:  # the paper's split; a plugin's dataset is in no built-in suite
        assert task.held_out == (name in SUITES["heldout"])
    assert sys.modules[task.__module__].__doc__, "every task file carries a task card docstring"
    if task.eval_files:  # local files: the card states how many questions they hold
        assert isinstance(task.eval_count, int) and task.eval_count > 0
        assert (task.train_count is not None) == task.has_train_pool() and not (task.held_out and task.train_count)


@pytest.mark.parametrize("name", LOCAL)
def test_eval_counts_match_manifest_and_ids_are_unique(name, real_data_dir):
    examples = load_examples(name, data_dir=real_data_dir)
    assert len(examples) == DATASETS.get(name).eval_count
    assert len({e.id for e in examples}) == len(examples)
    assert all(e.question.strip() and e.golds and all(isinstance(g, str) for g in e.golds) for e in examples)


def test_ids_and_contents_are_stable(real_data_dir):
    nq = load_examples("nq", data_dir=real_data_dir, limit=2)
    assert [(e.id, e.question, e.golds) for e in nq] == [
        ("nq/test/1", "when was the last time anyone was on the moon", ("14 December 1972 UTC", "December 1972")),
        ("nq/test/2", "who wrote he ain't heavy he's my brother lyrics", ("Bobby Scott", "Bob Russell")),
    ]
    webq = load_examples("webq", data_dir=real_data_dir, limit=1)[0]
    assert webq.id == "webq/wqs000000" and webq.golds == ("Jamaican Creole English Language", "Jamaican English")
    coqa = load_examples("coqa", data_dir=real_data_dir, limit=1)[0]
    assert coqa.id == "coqa/3qilpralq5vi87zcuu9wth7dbav8nv/1"
    assert coqa.question == "who is the most famous mouse?" and coqa.golds == ("Mickey Mouse.", "Mickey Mouse")
    squad = load_examples("squad", data_dir=real_data_dir, limit=1)[0]
    assert squad.golds == ("Denver Broncos",)  # three identical annotator answers kept once
    strategy = load_examples("strategyqa", data_dir=real_data_dir, limit=1)[0]
    assert strategy.id == "strategyqa/b8677742616fef051f00" and strategy.golds == ("yes",)


@pytest.mark.parametrize("name", WITH_TRAIN_POOL)
def test_train_and_eval_never_share_a_normalised_question(name, real_data_dir):
    evaluation = {normalize_answer(e.question) for e in load_examples(name, data_dir=real_data_dir)}
    train = load_examples(name, "train", data_dir=real_data_dir)
    assert len(train) > 100
    assert not evaluation & {normalize_answer(e.question) for e in train}
    assert not {e.id for e in train} & {e.id for e in load_examples(name, data_dir=real_data_dir)}


@pytest.mark.parametrize("name", WITH_TRAIN_POOL)
def test_training_pool_size_matches_the_card(name, real_data_dir):
    # Files minus questions that also occur (after normalisation) in the evaluation split.
    assert len(load_examples(name, "train", data_dir=real_data_dir)) == DATASETS.get(name).train_count


def test_the_cards_hold_the_manifest_counts():
    # MANIFEST.md's counts (2wiki: 12,576 minus its training carve-out), so a card cannot drift from the data.
    expected = {
        "triviaqa": (11313, 8829),
        "nq": (3610, 10549),
        "hotpotqa": (7405, 500),
        "squad": (10570, 500),
        "webq": (2032, 3771),
        "2wiki": (11310, 1266),
        "coqa": (500, 200),
        "popqa": (14267, None),
        "fermi": (1000, None),
        "musique": (2417, None),
        "bamboogle": (125, None),
        "curatedtrec": (694, None),
        "strategyqa": (2290, None),
    }
    assert {name: (DATASETS.get(name).eval_count, DATASETS.get(name).train_count) for name in expected} == expected


def test_carve_out_is_deterministic(real_data_dir):
    # The first 2wiki dev question is carved out for training, the second is kept for evaluation.
    assert in_carve_out("Who is the mother of the director of film Polish-Russian War (Film)?", 10)
    assert not in_carve_out("Which film came out first, Blind Shaft or The Mask Of Fu Manchu?", 10)
    assert load_examples("2wiki", data_dir=real_data_dir)[0].id == "2wiki/dev/2"
    # Normalisation makes the carve-out insensitive to case and punctuation.
    question = load_examples("2wiki", "train", data_dir=real_data_dir)[0].question
    assert in_carve_out(question.upper() + "?!", 10)


@pytest.mark.parametrize("name", SUITES["heldout"])
def test_held_out_datasets_have_no_training_split(name, real_data_dir):
    with pytest.raises(HarnessError, match="held-out dataset"):
        load_examples(name, "train", data_dir=real_data_dir)


def test_msmarco_reports_not_available_offline(real_data_dir, monkeypatch):
    monkeypatch.setattr("harness.datasets.hub_online", lambda: False)
    with pytest.raises(NotAvailableOffline, match="msmarco is not available offline"):
        load_examples("msmarco", data_dir=real_data_dir)


def test_limit_takes_the_first_examples(real_data_dir):
    assert [e.id for e in load_examples("bamboogle", data_dir=real_data_dir, limit=3)] == [
        "bamboogle/test/0",
        "bamboogle/test/1",
        "bamboogle/test/2",
    ]


def test_other_data_dir_and_missing_file(tmp_path):
    (tmp_path / "nq_open").mkdir()
    rows = [{"question": "who?", "answer": ["me"]}, {"question": "what?", "answer": ["it", "that"]}]
    (tmp_path / "nq_open" / "NQ-open.dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_examples("nq", data_dir=tmp_path)
    assert [(e.id, e.question, e.golds) for e in examples] == [
        ("nq/test/1", "who?", ("me",)),
        ("nq/test/2", "what?", ("it", "that")),
    ]
    with pytest.raises(HarnessError, match=r"popqa: missing popqa/test\.jsonl under .*; pass --data-dir DIR"):
        load_examples("popqa", data_dir=tmp_path, source="local")


def test_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / "musique").mkdir()
    (tmp_path / "musique" / "dev.jsonl").write_text('{"question": "q", "answer": ["a"]}\n{"question": \n')
    with pytest.raises(HarnessError, match=r"musique/dev\.jsonl:2: not valid JSON"):
        load_examples("musique", data_dir=tmp_path)
    (tmp_path / "musique" / "dev.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(HarnessError, match=r"dev\.jsonl:1: record has no 'answer' field"):
        load_examples("musique", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"question": "q", "answer": "Paris"}\n',
            r"dev\.jsonl:1: 'answer' must be a non-empty list of answer strings, found a string \"Paris\"",
        ),
        ('{"question": "q", "answer": null}\n', r"dev\.jsonl:1: 'answer' must be a non-empty list of answer strings, found null"),
        (
            '{"question": "q", "answer": []}\n',
            r"dev\.jsonl:1: 'answer' must be a non-empty list of answer strings, found a list \[\]",
        ),
        ('{"question": 42, "answer": ["a"]}\n', r"dev\.jsonl:1: 'question' must be a non-empty string, found a number 42"),
        ('["q", ["a"]]\n', r"dev\.jsonl:1: expected a JSON object with a 'question' field, found a list"),
        ("", r"musique: .*musique/dev\.jsonl holds no examples; restore the dataset's original file"),
    ],
)
def test_wrong_field_types_name_the_file_line_and_type(tmp_path, content, message):
    # A string answer was once split into letters (each a gold) and scored accuracy 1.0.
    (tmp_path / "musique").mkdir()
    (tmp_path / "musique" / "dev.jsonl").write_text(content)
    with pytest.raises(HarnessError, match=message):
        load_examples("musique", data_dir=tmp_path)


def test_json_records_files_check_their_top_level_and_types(tmp_path):
    (tmp_path / "bamboogle").mkdir()
    path = tmp_path / "bamboogle" / "bamboogle_test_questions_and_answers.json"
    path.write_text('{"question": "q", "answer": "a"}')
    with pytest.raises(HarnessError, match=r"answers\.json: the top level must be a JSON list of records, found an object"):
        load_examples("bamboogle", data_dir=tmp_path)
    path.write_text('[{"question": "q", "answer": 7}]')
    with pytest.raises(
        HarnessError, match=r"answers\.json:record 0: 'answer' must be a non-empty answer string, found a number 7"
    ):
        load_examples("bamboogle", data_dir=tmp_path)
    with pytest.raises(HarnessError, match="golds must be a list of answer strings, not the string 'Paris'"):
        Example("x/1", "where?", "Paris")


def test_suites():
    assert len(SUITES["qa12"]) == 12 and SUITES["qa9"] == SUITES["qa12"][:9]
    assert len(SUITES["indomain"]) == 8 and not set(SUITES["indomain"]) & set(SUITES["heldout"])
    assert resolve_suite("heldout,nq,popqa") == ("popqa", "fermi", "musique", "bamboogle", "nq")
    with pytest.raises(HarnessError, match="Did you mean 'qa12'"):
        resolve_suite("qa13")


@pytest.mark.parametrize("name", [n for n in DATASETS.names() if DATASETS.get(n).passages_file])
def test_a_passages_file_reads_as_keyed_passages(name, real_data_dir):
    # Every task card naming a passages_file serves the oracle retriever: keyed (title, text) passages whose keys
    # include some of its evaluation questions (or story ids).
    task = DATASETS.get(name)
    passages = list(task.read_passages(real_data_dir, gold_only=True))
    assert passages and all(keys and text for keys, _title, text in passages)
    keys = {normalize_answer(key) for keys, _t, _x in passages for key in keys}
    questions = load_examples(name, data_dir=real_data_dir)
    assert sum(normalize_answer(e.question) in keys or e.metadata.get("story_id") in keys for e in questions) >= 100
