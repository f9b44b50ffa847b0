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


def _uneven_items():
    """Answers of 1 to 6 words: a micro-batch mean that weighted questions, not tokens, would differ."""
    answers = ["Darwin", "Charles Darwin", "Charles Robert Darwin the naturalist", "Paris", "a b c d e f"]
    return [TrainItem(Example(f"u{i}", f"who wrote book {i}", [answer]), (DARWIN,)) for i, answer in enumerate(answers)]


def _lora_trainer(backend64, config):
    import dataclasses

    from peft import get_peft_model

    from harness.methods.lora import Lora, LoraTrainer

    peft_model = get_peft_model(backend64.model, Lora().peft_config())
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero, where A gets no gradient; any nonzero B makes both move
            parameter.data.normal_(0, 0.1)
    peft_model.eval()  # no LoRA dropout: both paths must see the same function
    backend = HFBackend(dataclasses.replace(backend64.loaded, model=peft_model.get_base_model()))
    return LoraTrainer(peft_model, backend, config), peft_model


@pytest.mark.parametrize("method", ["spring", "lora"])
def test_micro_batches_give_the_whole_batch_loss_and_gradient(method):
    import random

    from tiny_model import tiny_model_dir

    from harness.models import load_model
    from harness.training import backward

    loaded = load_model(str(tiny_model_dir()), dtype="fp32", device="cpu")
    loaded.model.double()
    backend64 = HFBackend(loaded)
    config = TrainingConfig(max_passages=1, micro_batch_size=2)
    if method == "spring":
        spring = Spring(tokens=3, n=3)
        initial = initial_tokens(backend64.model.get_input_embeddings(), backend64.tokenizer, 3, "prompt", seed=0)
        trainer = SpringTrainer(spring, backend64, initial, config)
        parameters = trainer.parameters()
    else:
        trainer, peft_model = _lora_trainer(backend64, config)
        parameters = trainer.parameters()
    results = []
    for size in (0, 2):  # the whole batch of 5 at once, then micro-batches of 2, 2 and 1
        for parameter in parameters:
            parameter.grad = None
        loss = backward(trainer, _uneven_items(), random.Random(0), size)
        results.append((loss, [parameter.grad.clone() for parameter in parameters]))
    (whole, whole_grads), (micro, micro_grads) = results
    assert micro == pytest.approx(whole, abs=1e-10) and whole > 0
    assert max(float(g.abs().max()) for g in whole_grads) > 1e-3
    for a, b in zip(whole_grads, micro_grads, strict=True):  # SPRING's tokens are fp32 parameters, LoRA's float64
        assert float((a - b).abs().max()) <= 1e-6 * float(a.abs().max())


def test_micro_batch_size_is_keyed_only_when_set_and_refused_where_unsupported(backend):
    assert "micro_batch_size" not in TrainingConfig(train_passages="retrieved").spec()
    assert TrainingConfig(train_passages="retrieved", micro_batch_size=2).spec()["micro_batch_size"] == 2

    class WholeBatchOnly:
        def __init__(self, trainer):
            self.trainer = trainer

        def parameters(self):
            return self.trainer.parameters()

        def loss(self, batch, rng):
            return self.trainer.loss(batch, rng)

        def set_training(self, training):
            self.trainer.set_training(training)

    items = tuple(_item(i, "Darwin") for i in range(4))
    config = TrainingConfig(examples=4, batch_size=4, max_passages=1, micro_batch_size=2)
    with pytest.raises(HarnessError, match="WholeBatchOnly cannot split a batch: drop the training option micro_batch_size=2"):
        train(WholeBatchOnly(_trainer(backend)), TrainingData(items, ("toy",), ()), config, log=lambda _: None)


def test_spring_scores_its_dev_passages_blocks_once(backend, monkeypatch):
    """The frozen backbone's cache of a dev block is computed at the first evaluation and reused after."""
    dev = tuple(
        TrainItem(Example(f"d{i}", f"who wrote book {i}", ["Darwin"]), (Passage(f"p{i}", "Book", f"Book {i}."),))
        for i in range(5)
    )
    config = TrainingConfig(batch_size=2, max_passages=1)
    trainer = _trainer(backend)
    calls = []
    prefill = backend.prefill
    monkeypatch.setattr(backend, "prefill", lambda prefixes: calls.append(len(prefixes)) or prefill(prefixes))
    first = dev_loss(trainer, dev, config)
    assert calls == [2, 2, 1]
    trainer.weight.data.add_(0.5)  # the tokens change between evaluations; the blocks before them do not
    second = dev_loss(trainer, dev, config)
    assert calls == [2, 2, 1] and second != first
    fresh = _trainer(backend)
    fresh.weight.data.copy_(trainer.weight.data)
    assert dev_loss(fresh, dev, config) == second  # cached blocks score exactly as recomputed ones
