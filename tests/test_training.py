"""The training loop's convergence machinery: a disjoint dev slice, dev-loss curve, early stopping, best weights."""

from dataclasses import replace

import pytest
from tiny_model import tiny_loaded

from harness.errors import HarnessError
from harness.generation import HFBackend
from harness.methods.spring import Spring, SpringTrainer, initial_tokens
from harness.suites import SUITES
from harness.training import TrainingConfig, TrainingData, TrainItem, dev_loss, train
from harness.types import Example, Passage

DARWIN = Passage("p1", "Darwin", "Charles Darwin wrote On the Origin of Species.")


def _item(i, answer):
    return TrainItem(Example(f"e{i}", f"who wrote book {i}", [answer]), (DARWIN,))


@pytest.fixture(scope="module")
def backend():
    return HFBackend(tiny_loaded())


def _trainer(backend):
    method = Spring(tokens=3, n=3, fixed_k=True)
    initial = initial_tokens(backend.model.get_input_embeddings(), backend.tokenizer, 3, "prompt", seed=0)
    return SpringTrainer(method, backend, initial, TrainingConfig(max_passages=1))


def test_early_stopping_keeps_the_best_dev_weights(backend):
    # Training answers are "Darwin"; the dev answers are "Paris": fitting the first soon stops helping the second.
    items = tuple(_item(i, "Darwin") for i in range(4))
    dev = tuple(_item(10 + i, "Paris Paris") for i in range(2))
    config = TrainingConfig(examples=4, epochs=40, batch_size=2, lr=0.5, max_passages=1, eval_every=2, patience=2, min_delta=0.0)
    trainer = _trainer(backend)
    log = train(trainer, TrainingData(items, ("toy",), (), dev), config, log=lambda _: None)
    assert log.stopped_early and log.steps < log.planned_steps == 80
    dev_curve = [point["dev_loss"] for point in log.curve]
    assert log.curve[0]["step"] == 0 and "train_loss" not in log.curve[0] and "train_loss" in log.curve[1]
    assert [point["examples"] for point in log.curve] == [2 * point["step"] for point in log.curve]
    best = min(range(len(dev_curve)), key=dev_curve.__getitem__)
    assert log.best_step == log.curve[best]["step"]
    # Patience 2: the run stopped exactly two evaluations after its best one.
    assert len(dev_curve) - 1 - best == 2 and all(d >= dev_curve[best] for d in dev_curve[best + 1 :])
    # The weights kept are those of the best step: their dev loss is the curve's minimum.
    assert dev_loss(trainer, dev, config) == pytest.approx(dev_curve[best], abs=1e-5)


def test_dev_loss_uses_the_same_draws_every_time_and_no_early_stop_without_dev(backend):
    trainer = _trainer(backend)
    dev = tuple(_item(i, "Darwin") for i in range(3))
    config = TrainingConfig(batch_size=2, max_passages=1)
    assert dev_loss(trainer, dev, config) == dev_loss(trainer, dev, config)
    items = tuple(_item(i, "Darwin") for i in range(4))
    log = train(
        trainer,
        TrainingData(items, ("toy",), ()),
        TrainingConfig(examples=4, epochs=3, batch_size=2, lr=0.1, max_passages=1),
        log=lambda _: None,
    )
    assert log.curve == [] and not log.stopped_early and log.steps == 6


def test_the_dev_slice_is_disjoint_from_training_and_keyed(monkeypatch):
    from harness import training

    pool = [Example(f"q{i}", f"question {i}", ["a"]) for i in range(40)]
    monkeypatch.setattr(training, "load_examples", lambda name, split, data_dir=None: pool)
    data = training.training_data(["nq"], 10, 0, None, dev=6)
    train_ids = {item.example.id for item in data.items}
    dev_ids = {item.example.id for item in data.dev}
    assert len(train_ids) == 10 and len(dev_ids) == 6 and not train_ids & dev_ids
    spec = data.spec()
    assert spec["n"] == 10 and spec["dev"]["n"] == 6
    assert training.training_data(["nq"], 10, 0, None, dev=5).spec() != spec  # another dev slice, another key
    assert "dev" not in training.training_data(["nq"], 10, 0, None).spec()


@pytest.mark.parametrize("field, value", [("examples", 0), ("batch_size", 0), ("lr", 0.0), ("patience", -1), ("eval_every", -2)])
def test_bad_training_options_are_one_line_errors(field, value):
    with pytest.raises(HarnessError, match=field):
        TrainingConfig(**{field: value})


def test_the_training_mix_is_chosen_checked_and_counted(monkeypatch):
    from harness import training

    with pytest.raises(HarnessError, match="popqa is a held-out dataset"):
        TrainingConfig(train_datasets="nq,popqa")
    with pytest.raises(HarnessError, match="Did you mean 'nq'"):
        TrainingConfig(train_datasets="nqq")
    assert TrainingConfig(train_datasets="nq,triviaqa").mix == ("nq", "triviaqa")
    assert TrainingConfig().mix == SUITES["indomain"] and not TrainingConfig().mix_is_chosen
    # The mix is keyed through the training data (datasets, ids), so the default keeps the keys it had.
    retrieved = TrainingConfig(train_passages="retrieved")
    assert "train_datasets" not in retrieved.spec() and retrieved.spec() == replace(retrieved, train_datasets="nq").spec()

    pools = {"nq": [Example(f"nq/{i}", f"question {i}", ["a"]) for i in range(30)]}

    def load(name, split, data_dir=None):
        if name not in pools:
            raise HarnessError(f"{name}: missing files")
        return pools[name]

    monkeypatch.setattr(training, "load_examples", load)
    data = training.training_data(["nq", "triviaqa"], 10, 0, None, dev=4)
    assert data.skipped == ("triviaqa: triviaqa: missing files",) and data.describe() == "nq 10 (+4 dev)"
    with pytest.raises(HarnessError, match="training pool triviaqa cannot be loaded"):
        training.training_data(["nq", "triviaqa"], 10, 0, None, strict=True)


def test_answer_bearing_training_passages_keep_only_questions_whose_passages_hold_an_answer(monkeypatch):
    from harness import training

    pool = [Example(f"nq/{i}", f"question {i}", [f"answer{i}"]) for i in range(40)]
    monkeypatch.setattr(training, "load_examples", lambda name, split, data_dir=None: pool)

    def retrieve(name, examples):  # every third question's passage holds its answer
        return {
            e.id: [Passage(f"p-{e.id}", "t", f"text with {e.golds[0] if int(e.id[3:]) % 3 == 0 else 'nothing'}")]
            for e in examples
        }

    plain = training.training_data(["nq"], 9, 0, retrieve, dev=3)
    ((name, share, _),) = plain.answer_recall
    expected = sum(int(item.example.id[3:]) % 3 == 0 for item in (*plain.items, *plain.dev)) / 12
    assert name == "nq" and share == expected and plain.describe() == "nq 9 (+3 dev)"
    kept = training.training_data(["nq"], 9, 0, retrieve, dev=3, answer_bearing=True)
    ids = [int(item.example.id[3:]) for item in (*kept.items, *kept.dev)]
    assert len(kept.items) == 9 and len(kept.dev) == 3 and all(i % 3 == 0 for i in ids) and len(set(ids)) == 12
    assert kept.answer_recall[0][1] == 1.0 and kept.describe() == "nq 9 (+3 dev; 12 of 40 drawn)"
    # Fewer answer-bearing questions than the budget: all of them, said in the counts.
    few = training.training_data(["nq"], 30, 0, retrieve, answer_bearing=True)
    assert len(few.items) == 14 and few.describe() == "nq 14 (14 of 40 drawn)"
    with pytest.raises(HarnessError, match="train_passages=gold is none of auto, retrieved, answer-bearing"):
        TrainingConfig(train_passages="gold")
    assert TrainingConfig(train_passages="answer-bearing").spec()["train_passages"] == "answer-bearing"
    assert "train_passages" not in TrainingConfig(train_passages="retrieved").spec()  # the keys from before
    with pytest.raises(ValueError, match="resolved"):  # auto is never keyed as such
        TrainingConfig().spec()


def test_auto_training_passages_follow_the_recall_gap(world, monkeypatch):
    from tiny_world import run_config

    from harness import weights
    from harness.runner import RunContext

    context = RunContext(run_config(world, methods=("spring",)), log=lambda line: None)
    config = TrainingConfig(examples=4, batch_size=2, dev_examples=0, max_passages=2)
    resolved, why = weights.resolve_train_passages(context, "bm25", config)
    assert resolved.train_passages == "retrieved"
    assert why == "retrieved (auto: no dataset of the mix has training recall below 50% of the evaluation recall@2)"
    # The tiny world's training recall is not below half its evaluation recall; a stricter ratio flips the choice.
    monkeypatch.setattr(weights, "AUTO_RECALL_RATIO", 0.99)
    resolved, why = weights.resolve_train_passages(context, "bm25", config)
    assert resolved.train_passages == "answer-bearing" and resolved.answer_bearing == resolved.mix
    assert why.startswith("answer-bearing for nq (auto: training recall below 99% of the evaluation recall@2: nq 0.50 vs 0.60;")
    # For some datasets of the mix only: keyed with their names; a name outside the mix is refused.
    some = TrainingConfig(train_passages="answer-bearing:nq,squad")
    assert some.answer_bearing == ("nq", "squad") and some.spec()["train_passages"] == "answer-bearing:nq,squad"
    with pytest.raises(HarnessError, match="popqa is not in the training mix"):
        TrainingConfig(train_passages="answer-bearing:nq,popqa")
    assert weights.resolve_train_passages(context, "none", config) == (
        replace(config, train_passages="retrieved"),
        "retrieved (auto: no passages)",
    )
    chosen = replace(config, train_passages="retrieved")
    assert weights.resolve_train_passages(context, "bm25", chosen) == (chosen, "")  # a choice is kept as made
