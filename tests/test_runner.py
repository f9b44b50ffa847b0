"""`harness run` on a tiny random model, a tiny corpus and a tiny dataset: cells, caching, resume."""

import json

import pytest
from tiny_model import tiny_model_dir
from tiny_world import QUESTIONS
from tiny_world import run_config as _config

import harness.runner as runner_module
from harness.cli import main
from harness.errors import HarnessError
from harness.methods.lora import Lora
from harness.methods.prompt import Prompt
from harness.models import load_model
from harness.runner import RunConfig, RunContext, run
from harness.store import Store


def _predictions(store_root):
    store = Store(store_root)
    return {(c.spec.dataset, c.spec.method["name"]): c.predictions() for c in store.cells()}


def test_run_writes_cells_and_a_second_run_loads_nothing(world, monkeypatch):
    cells, notices = run(_config(world))
    assert notices == []
    assert [(c.spec.method["name"], c.retriever, c.spec.passages) for c in cells] == [
        ("closed-book", "none", 0),
        ("prompt", "bm25", 2),
    ]
    predictions = _predictions(world["results"])
    closed, prompt = predictions[("nq", "closed-book")], predictions[("nq", "prompt")]
    assert [row["id"] for row in prompt] == [f"nq/test/{i}" for i in range(1, 6)]
    assert all(row["passage_ids"] == [] for row in closed)
    # bm25 returns only passages sharing a term with the question, best first, at most m = 2.
    assert [row["passage_ids"] for row in prompt] == [["p1"], ["p2"], ["p3"], ["p4"], ["p5", "p4"]]
    assert set(prompt[0]["metrics"]) == {"exact_match", "f1", "accuracy"}

    # Cached: planning the same run must not even load the model.
    monkeypatch.setattr(RunContext, "loaded", property(lambda self: pytest.fail("model loaded for a cached run")))
    again, _ = run(_config(world))
    assert [c.key for c in again] == [c.key for c in cells]


def test_interrupted_cell_resumes_to_the_uninterrupted_predictions(world, tmp_path, monkeypatch):
    uninterrupted = tmp_path / "uninterrupted"
    run(_config(world, results=uninterrupted, methods=("prompt",)))

    monkeypatch.setattr(runner_module, "EXAMPLES_PER_FLUSH", 2)
    from harness.generation import HFBackend

    real_generate = HFBackend.generate
    calls = {"n": 0}

    def crash_on_second_chunk(self, *args, **kwargs):
        calls["n"] += kwargs.get("reuse_prefix", False)  # one outer call per chunk (it recurses internally)
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stands in for a kill between two flushed chunks
        return real_generate(self, *args, **kwargs)

    monkeypatch.setattr(HFBackend, "generate", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run(_config(world, methods=("prompt",)))
    partial = next((world["results"] / "runs").glob(".partial-*")) / "predictions.jsonl"
    assert len(partial.read_text().splitlines()) == 2
    run(_config(world, methods=("prompt",)))
    assert _predictions(world["results"]) == _predictions(uninterrupted)


def test_limit_is_a_seeded_sample_and_changes_the_key(world):
    cells_a, _ = run(_config(world, methods=("closed-book",), limit=3, seed=0))
    cells_b, _ = run(_config(world, methods=("closed-book",), limit=3, seed=1))
    ids_a = [e.id for e in cells_a[0].examples]
    assert len(ids_a) == 3 and ids_a == sorted(ids_a)
    assert cells_a[0].key != cells_b[0].key or ids_a == [e.id for e in cells_b[0].examples]


def test_an_answer_corrected_in_place_changes_the_cell_key(world):
    # Ids alone once keyed a cell: a fixed answer file kept serving the cell scored against the broken golds.
    import harness.datasets

    before, _ = run(_config(world, methods=("closed-book",)))
    path = world["data"] / "nq_open" / "NQ-open.dev.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["answer"] = ["Paris, France"]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    harness.datasets._load.cache_clear()  # a new process would read the file afresh
    after, _ = run(_config(world, methods=("closed-book",)))
    assert before[0].spec.example_ids_hash == after[0].spec.example_ids_hash
    assert before[0].key != after[0].key
    store = Store(world["results"])
    assert store.load(before[0].key).predictions()[1]["golds"] == ["Paris"]
    assert store.load(after[0].key).predictions()[1]["golds"] == ["Paris, France"]


def test_cli_run_prints_the_leaderboard_and_rejects_bad_flags(world, capsys):
    args = [
        "run",
        "--suite",
        "nq",
        "--method",
        "closed-book",
        "--model",
        str(tiny_model_dir()),
        "--dtype",
        "fp32",
        "--results",
        str(world["results"]),
        "--data-dir",
        str(world["data"]),
        "--corpus",
        str(world["corpus"]),
        "--max-new-tokens",
        "4",
        "--full",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "closed-book" in out and "full evaluation sets" in out
    assert main([*args[:3], "--method", "promt", *args[5:]]) == 2
    assert "Did you mean 'prompt'" in capsys.readouterr().err
    assert main([*args, "--passages", "0"]) == 2
    assert "--passages values must be integers >= 1" in capsys.readouterr().err


def test_spring_trains_once_and_serves_every_token_count(world, monkeypatch):
    options = (
        ("spring.n", "3"),
        ("spring.examples", "4"),
        ("spring.batch_size", "2"),
        ("spring.lr", "0.01"),
        ("spring.dev_examples", "0"),
    )
    config = _config(world, methods=("spring",), tokens=(1, 3), method_options=options)
    cells, notices = run(config)
    assert [(c.spec.method["name"], c.spec.method["tokens"]) for c in cells] == [("spring", 1), ("spring", 3)]
    checkpoints = list((world["results"] / "checkpoints").glob("spring-*.safetensors"))
    assert len(checkpoints) == 1
    hashes = {c.spec.method["checkpoint_hash"] for c in cells}
    assert len(hashes) == 1 and None not in hashes
    trained = json.loads(checkpoints[0].with_suffix(".json").read_text())
    # No dev slice asked for: all 4 pool questions train, no curve, no early stopping.
    assert trained["spec"]["data"]["n"] == 4 and "dev" not in trained["spec"]["data"]
    assert trained["spec"]["data"]["datasets"] == ["nq"] and trained["log"]["curve"] == []
    assert trained["log"]["trainable_parameters"] == 3 * 64

    # A second run finds the checkpoint and the cells: nothing is trained, generated or even loaded.
    monkeypatch.setattr(RunContext, "loaded", property(lambda self: pytest.fail("model loaded for a cached run")))
    again, _ = run(config)
    assert [c.key for c in again] == [c.key for c in cells]

    # A different training budget is a different checkpoint, hence different cell keys.
    monkeypatch.undo()
    other, _ = run(
        _config(world, methods=("spring",), tokens=(1,), method_options=(*options[:1], ("spring.examples", "3"), *options[2:]))
    )
    assert other[0].key != cells[0].key
    assert len(list((world["results"] / "checkpoints").glob("spring-*.safetensors"))) == 2


def test_a_token_sweep_prefills_each_question_once_and_equals_separate_cells(world, monkeypatch):
    """SPRING at every k reads the same (cut) passages, so the sweep prefills each question's passages once."""
    from harness.generation import HFBackend

    options = (("spring.n", "3"), ("spring.examples", "4"), ("spring.batch_size", "2"), ("spring.lr", "0.01"))
    from harness.segments import PASSAGE_RESERVE

    limit = PASSAGE_RESERVE + 20  # each question's passage text is cut to 20 tokens, whatever k is
    config = _config(world, methods=("spring",), tokens=(1, 2, 3), method_options=options, max_input_tokens=limit)
    prefilled = []
    original = HFBackend.prefill
    monkeypatch.setattr(HFBackend, "prefill", lambda self, prefixes: prefilled.append(len(prefixes)) or original(self, prefixes))
    context = RunContext(config)
    runner_module.plan(config, context)  # trains the tokens (training prefills too), then count evaluation only
    prefilled.clear()
    cells, _ = run(config, context)

    def stored(cell):
        return [
            (r["id"], r["prediction"], r["passage_ids"], r["input_tokens"])
            for r in Store(world["results"]).load(cell.key).predictions()
        ]

    assert len(cells) == 3 and sum(prefilled) == len(QUESTIONS)  # 5 questions x 3 token counts: 5 prefills
    together = {cell.spec.method["tokens"]: stored(cell) for cell in cells}
    # Every k reads the same 20 passage tokens: k tokens fewer means exactly 3 - k positions fewer.
    lengths = {k: [row[3] for row in rows] for k, rows in together.items()}
    assert lengths[1] == [n - 2 for n in lengths[3]] and lengths[2] == [n - 1 for n in lengths[3]]
    assert all(n <= limit for n in lengths[3]) and {row[2][0] for row in together[1]} == {row[2][0] for row in together[3]}

    # The same cells computed one at a time, each with its own prefills, give the same predictions.
    prefilled.clear()
    forced = RunContext(RunConfig(**{**config.__dict__, "force": True}))
    forced.__dict__["loaded"] = context.loaded  # the same weights, loaded once
    for cell in cells:
        runner_module.compute_cell(cell, forced)
    assert sum(prefilled) == len(cells) * len(QUESTIONS)
    assert {cell.spec.method["tokens"]: stored(cell) for cell in cells} == together


def test_a_chosen_training_mix_must_load_and_is_printed(world):
    options = (("spring.examples", "3"), ("spring.batch_size", "2"), ("spring.dev_examples", "0"))
    logged: list[str] = []
    config = _config(world, methods=("spring",), tokens=(1,), method_options=(*options, ("spring.train_datasets", "nq")))
    cells, _ = run(config, RunContext(config, log=logged.append))
    assert "  training mix: nq 3" in logged
    # The training passages' answer recall beside the evaluation sample's (3 of the 5 tiny questions have an
    # answer-bearing passage; of the 4 training questions, the Darwin and Paris ones do, the spider's '8' does not).
    line = next(entry for entry in logged if "answer recall@" in entry)
    recall = json.loads(next((world["results"] / "checkpoints").glob("spring-*.json")).read_text())["log"]["answer_recall"]
    assert recall["nq"]["eval"] == 0.6 and round(recall["nq"]["train"], 2) in (0.33, 0.67)
    assert line == f"  answer recall@5 of the passages, training / evaluation: nq {recall['nq']['train']:.2f} / 0.60"
    # The tiny world's default mix loads only nq too: the same training data, so the same checkpoint.
    default, _ = run(_config(world, methods=("spring",), tokens=(1,), method_options=options))
    assert default[0].key == cells[0].key
    assert len(list((world["results"] / "checkpoints").glob("spring-*.safetensors"))) == 1
    # Answer-bearing training passages: only the Darwin and Paris training questions are kept, a new checkpoint.
    logged.clear()
    bearing = _config(
        world, methods=("spring",), tokens=(1,), method_options=(*options, ("spring.train_passages", "answer-bearing"))
    )
    kept, _ = run(bearing, RunContext(bearing, log=logged.append))
    assert "  training mix: nq 2 (2 of 4 drawn)" in logged and kept[0].key != cells[0].key
    assert any(entry.endswith(": nq 1.00 / 0.60") for entry in logged)
    with pytest.raises(HarnessError, match="training pool triviaqa cannot be loaded"):
        run(_config(world, methods=("spring",), tokens=(1,), method_options=(*options, ("spring.train_datasets", "nq,triviaqa"))))


def test_lora_and_spring_plus_train_through_the_same_loop(world):
    import torch

    options = (
        ("lora.examples", "4"),
        ("lora.batch_size", "2"),
        ("lora.lr", "0.01"),
        ("lora.dev_examples", "0"),
        ("spring-plus.n", "2"),
        ("spring-plus.examples", "4"),
        ("spring-plus.batch_size", "2"),
    )
    config = _config(world, methods=("lora", "spring-plus"), tokens=(2,), method_options=options)
    context = RunContext(config)
    cells, _ = run(config, context)
    adapters = list((world["results"] / "checkpoints").glob("lora-*"))
    adapters = [a for a in adapters if a.is_dir()]
    assert len(adapters) == 1 and (adapters[0] / "adapter_config.json").is_file()  # PEFT's own format
    lora_cell, plus_cell = cells
    assert lora_cell.spec.method["checkpoint_hash"] == plus_cell.spec.method["lora_checkpoint_hash"]
    assert len(list((world["results"] / "checkpoints").glob("spring-plus-*.safetensors"))) == 1

    # The merged LoRA model answers a non-RAG prompt differently from the base model; the base is untouched.
    probe = context.loaded.tokenizer("Question: what is two plus two?\nAnswer:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = context.loaded.model(input_ids=probe).logits
        adapted = lora_cell.method.backend_for(context).model(input_ids=probe).logits
        fresh = load_model(str(tiny_model_dir()), dtype="fp32").model(input_ids=probe).logits
    assert not torch.allclose(base, adapted)
    assert torch.equal(base, fresh)

    # The adapter is PEFT's own, portable: it names the weights it was trained on (not a cache folder PEFT saw),
    # its files are world-readable, and AutoPeftModelForCausalLM loads it from elsewhere, merging to the same model.
    import json
    import os
    import stat

    from peft import AutoPeftModelForCausalLM

    adapter_config = json.loads((adapters[0] / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir().resolve())
    assert stat.S_IMODE(adapters[0].stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in adapters[0].iterdir()} == {0o644}
    elsewhere = world["results"].parent / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(elsewhere)
        loaded = AutoPeftModelForCausalLM.from_pretrained(str(adapters[0])).merge_and_unload().eval()
    finally:
        os.chdir(cwd)
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=probe).logits, adapted, atol=1e-5)


def test_an_adapted_backbone_answers_first_and_is_freed_before_the_base_cells(world, tmp_path, monkeypatch):
    options = (("lora.examples", "4"), ("lora.batch_size", "2"), ("lora.lr", "0.01"), ("lora.dev_examples", "0"))
    config = _config(world, methods=("prompt", "lora"), method_options=options, dtype="mixed")
    context = RunContext(config)
    seen = []
    real_compute = runner_module.compute_cells

    def merged_copies() -> int:
        return sum(key[0] == "lora-backend" for key in context._artifacts)

    def recording(cells, context, **kwargs):
        before = merged_copies(), context.training_backend._bf16_model is not None
        records = real_compute(cells, context, **kwargs)
        seen.append(([c.spec.method["name"] for c in cells], *before, merged_copies()))
        return records

    def train_on_the_base_copy(self, context, retriever):  # what SPRING's training does under mixed
        context.training_backend._bf16()

    real_train = Lora._train

    def recording_train(self, context, *args):
        seen.append(("lora training", context.training_backend._bf16_model is not None))
        real_train(self, context, *args)

    monkeypatch.setattr(runner_module, "compute_cells", recording)
    monkeypatch.setattr(Prompt, "prepare", train_on_the_base_copy)  # prompt is prepared before lora
    monkeypatch.setattr(Lora, "_train", recording_train)
    run(config, context)
    # LoRA trains without the base bf16 copy an earlier training made (dropped once that prepare ended); the LoRA
    # cell runs first, building the merged copy, which is gone before the base cells; their bf16 copy is made
    # again on first use.
    assert seen == [("lora training", False), (["lora"], 0, False, 1), (["prompt"], 0, False, 0)]
    assert merged_copies() == 0 and context.training_backend._bf16_model is not None

    # The order changes no answer: each method alone, in a fresh store with the same checkpoint, answers the same.
    import shutil

    alone = tmp_path / "alone"
    shutil.copytree(world["results"] / "checkpoints", alone / "checkpoints")
    monkeypatch.setattr(runner_module, "compute_cells", real_compute)
    run(_config(world, methods=("lora",), method_options=options, dtype="mixed", results=alone))
    run(_config(world, methods=("prompt",), dtype="mixed", results=alone))
    together, separate = _predictions(world["results"]), _predictions(alone)
    assert set(together) == {("nq", "prompt"), ("nq", "lora")}
    for key, rows in together.items():
        assert [r["prediction"] for r in rows] == [r["prediction"] for r in separate[key]]


def test_method_options_are_checked_once_for_run_and_train(capsys):
    from harness.runner import parse_options

    assert parse_options(["spring.lr=0.01", "lora.r=16"]) == (("spring.lr", "0.01"), ("lora.r", "16"))
    assert main(["run", "--suite", "nq", "--option", "spring.lr"]) == 2
    assert "--option 'spring.lr' must look like METHOD.KEY=VALUE" in capsys.readouterr().err
    assert main(["train", "--option", "lr=0.01"]) == 2
    assert "method option lr=0.01 must look like METHOD.KEY=VALUE" in capsys.readouterr().err


SMALL_SPRING = (("spring.n", "3"), ("spring.examples", "4"), ("spring.batch_size", "2"), ("spring.dev_examples", "0"))


def test_a_checkpoint_never_exists_without_its_training_record(world, monkeypatch):
    import harness.weights as trained

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the record, before the tensor is published

    config = _config(world, methods=("spring",), tokens=(3,), method_options=SMALL_SPRING)
    with monkeypatch.context() as patch:
        patch.setattr(trained, "save_virtual_tokens", killed)
        with pytest.raises(KeyboardInterrupt):
            run(config)
    folder = world["results"] / "checkpoints"
    assert [p.suffix for p in folder.glob("spring-*") if p.suffix != ".lock"] == [
        ".json"
    ]  # a record alone means "not trained": retrained
    run(config)
    tensors = list(folder.glob("spring-*.safetensors"))
    assert len(tensors) == 1 and tensors[0].with_suffix(".json").is_file()


def _tensor_hash_of(data: bytes) -> str:
    from safetensors.torch import load as load_bytes

    from harness.checkpoints import TENSOR_NAME, tensor_hash

    return tensor_hash(load_bytes(data)[TENSOR_NAME])


def test_a_truncated_checkpoint_is_set_aside_and_trained_again(world, capsys):
    config = _config(world, methods=("spring",), tokens=(3,), method_options=SMALL_SPRING)
    first, _ = run(config)
    tensor = next((world["results"] / "checkpoints").glob("spring-*.safetensors"))
    whole = tensor.read_bytes()
    tensor.write_bytes(whole[: len(whole) // 2])
    logged = []
    again, _ = run(config, RunContext(config, log=logged.append))
    assert f"warning: {tensor} was damaged; moved to .damaged-{tensor.name} and trained again" in logged
    assert (tensor.parent / f".damaged-{tensor.name}").read_bytes() == whole[: len(whole) // 2]
    assert _tensor_hash_of(tensor.read_bytes()) == _tensor_hash_of(whole)  # the same seed and data train the same tokens
    assert again[0].key == first[0].key


def test_a_checkpoint_from_harness_train_serves_harness_run_with_a_limit(world, capsys):
    # `train` and `run --limit N` apply the same CPU budget (input cut included), so run finds what train wrote.
    flags = ["--model", str(tiny_model_dir()), "--data-dir", str(world["data"]), "--results", str(world["results"])]
    options = [flag for key, value in SMALL_SPRING for flag in ("--option", f"{key}={value}")]
    assert main(["train", "--method", "spring", "--tokens", "3", "--corpus", str(world["corpus"]), *flags, *options]) == 0
    written = sorted(p.name for p in (world["results"] / "checkpoints").iterdir())
    out = capsys.readouterr().out
    assert "training spring" in out
    (tensor,) = (world["results"] / "checkpoints").glob("spring-*.safetensors")
    assert f"spring: checkpoint {tensor} (hash " in out  # the file to copy or pass as spring.checkpoint
    run_flags = [
        "run",
        "--suite",
        "nq",
        "--method",
        "spring",
        "--tokens",
        "3",
        "--corpus",
        str(world["corpus"]),
        "--limit",
        "2",
        "--reference",
        "",
        "--dtype",
        "auto",
        *flags,
        *options,
    ]
    assert main(run_flags) == 0
    assert "training spring" not in capsys.readouterr().out
    assert sorted(p.name for p in (world["results"] / "checkpoints").iterdir()) == written


def test_retriever_options_reach_the_retriever_and_its_key(world):
    # --option bm25.k1=0.5 reaches bm25 through the same router as method options, and changes the cell key.
    plain, _ = run(_config(world, methods=("prompt",)))
    tuned, _ = run(_config(world, methods=("prompt",), method_options=(("bm25.k1", "0.5"),)))
    assert tuned[0].spec.retriever["k1"] == 0.5 != plain[0].spec.retriever["k1"]
    assert tuned[0].key != plain[0].key


def test_one_retrieval_run_at_the_largest_m_serves_every_m(world):
    cells, _ = run(_config(world, methods=("prompt",), passages=(1, 2)))
    assert sorted(cell.spec.passages for cell in cells) == [1, 2]
    runs = sorted(p.name.split(".")[1] for p in (world["results"] / "retrieval").rglob("q*.jsonl") if "/eval/" in str(p))
    assert runs == ["k2"]  # m=1 read the first passage of the k=2 run instead of retrieving again


def test_spring_sweeps_a_few_token_counts_by_default(world):
    from harness.methods.prefix import Prefix
    from harness.methods.prompt_fewshot import PromptFewshot
    from harness.methods.spring import Spring
    from harness.runner import method_instances

    assert Spring.default_sweep(cpu_budget=True) == (1, 5, 50)
    assert Spring.default_sweep(cpu_budget=False) == (1, 2, 5, 10, 20, 50)  # the paper's Fig. 3 (--full, a GPU)
    assert Prefix.default_sweep(True) == Prefix.default_sweep(False) == (50,)  # a model per k: the headline only
    assert PromptFewshot.default_sweep(True) == (3,)
    cpu = [m.tokens for m in method_instances("spring", _config(world, methods=("spring",), cpu_budget=True))]
    assert cpu == [1, 5, 50]
    asked = _config(world, methods=("spring",), cpu_budget=True, tokens=(2,))
    assert [m.tokens for m in method_instances("spring", asked)] == [2]


def test_progress_labels_keep_their_brackets_and_the_cells_bar_shows_no_example_speed(world):
    from types import SimpleNamespace

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from harness.console import SpeedColumn

    console = Console(record=True, width=160, force_terminal=False)
    config = _config(world, methods=("prompt-fewshot",), shots=(1,))
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), SpeedColumn(), console=console
    ) as progress:
        run(config, RunContext(config, log=lambda line: None), progress)
    lines = console.export_text().splitlines()
    cell = next(line for line in lines if line.startswith("cell 1/1"))
    assert "nq prompt-fewshot[shots=1] bm25 m=2" in cell  # not eaten as rich markup
    speed = SpeedColumn()
    assert str(speed.render(SimpleNamespace(fields={}, finished_speed=None, speed=2.5))) == "2.50 ex/s"
    assert str(speed.render(SimpleNamespace(fields={"unit": None}, finished_speed=5759.4, speed=None))) == ""  # cells bar
    console = Console(record=True, width=160, force_terminal=False)  # all cached: no empty 0/0 bar
    with Progress(TextColumn("{task.description}"), MofNCompleteColumn(), console=console) as progress:
        run(config, RunContext(config, log=lambda line: None), progress)
    assert "0/0" not in console.export_text()
