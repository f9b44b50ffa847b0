"""Preservation suites through lm-eval: the shipped local tasks on the real raw files, a tiny random Llama, the
store and the Table 2 layout — the same code path as `harness preserve`."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from tiny_model import tiny_loaded

from harness import preserve
from harness.errors import HarnessError
from harness.preserve import lm as preserve_lm
from harness.preserve import run as preserve_run
from harness.store import Store

K = 3  # virtual tokens in the plugged tests


@pytest.fixture(scope="module")
def loaded():
    return tiny_loaded()


@pytest.fixture(scope="module")
def small_data(real_data_dir: Path, tmp_path_factory) -> Path:
    """A data folder of links to the real files, with only two MMLU subjects (one has literal "None" choices)."""
    root = tmp_path_factory.mktemp("preserve-data")
    for sub in ("mmlu/test", "mmlu/dev", "boolq", "commonsenseqa", "gsm8k"):
        (root / sub).mkdir(parents=True)
    for subject in ("abstract_algebra", "college_computer_science"):
        for split in ("test", "dev"):
            (root / "mmlu" / split / f"{subject}_{split}.csv").symlink_to(
                real_data_dir / "mmlu" / split / f"{subject}_{split}.csv"
            )
    for rel in ("boolq/boolq.jsonl", "commonsenseqa/dev_rand_split.jsonl", "gsm8k/test.jsonl"):
        (root / rel).symlink_to(real_data_dir / rel)
    return root


def _vt(loaded, k: int = K, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(k, loaded.model.config.hidden_size, generator=generator)


# ---- argument parsing -----------------------------------------------------------------------------------------


def test_parse_tasks_methods_and_shots():
    assert preserve.parse_tasks("mmlu, boolq,commonsense_qa") == ["mmlu", "boolq", "csqa"]
    with pytest.raises(HarnessError, match="Did you mean 'boolq'"):
        preserve.parse_tasks("bolq")
    with pytest.raises(HarnessError, match="Did you mean 'spring'"):
        preserve.parse_methods("sprng")
    assert preserve.parse_shots(None, ["mmlu", "boolq", "csqa", "gsm8k"]) == {
        "mmlu": (0, 5),
        "boolq": (0,),
        "csqa": (0, 4),
        "gsm8k": (8,),
    }
    assert preserve.parse_shots("0,5", ["mmlu", "boolq"]) == {"mmlu": (0, 5), "boolq": (0, 5)}
    assert preserve.parse_shots("csqa=4", ["mmlu", "csqa"]) == {"mmlu": (0, 5), "csqa": (4,)}
    with pytest.raises(HarnessError, match="0-5 shots"):
        preserve.parse_shots("8", ["mmlu"])  # MMLU's dev pool holds 5 exemplars per subject


def test_trained_methods_need_a_checkpoint(loaded, tmp_path):
    from harness.store import Store

    with pytest.raises(HarnessError, match=r"no lora checkpoint for this backbone .*; run `harness run --method lora` first"):
        preserve.resolve_preserve_model("lora", loaded, Store(tmp_path))


def test_spring_unplugged_is_the_base_model_and_plugged_adds_its_tokens(loaded, tmp_path):
    import torch

    from harness.checkpoints import save_virtual_tokens
    from harness.store import Store

    hidden = loaded.model.config.hidden_size
    tokens = torch.randn(4, hidden)
    save_virtual_tokens(tmp_path / "checkpoints" / "spring-x.safetensors", tokens, {"backbone_weights_hash": loaded.weights_hash})
    model, spec, virtual = preserve.resolve_preserve_model("spring", loaded, Store(tmp_path), plugged=False)
    assert model is loaded.model and virtual is None and spec["plugged"] is False
    model, spec, virtual = preserve.resolve_preserve_model("spring", loaded, Store(tmp_path), plugged=True)
    assert model is loaded.model and torch.equal(virtual, tokens) and spec["tokens"] == 4
    model, spec, tokens = preserve.resolve_preserve_model("base", loaded)
    assert model is loaded.model and spec == {"name": "base"} and tokens is None


def test_limit_is_spread_round_robin_over_a_group():
    from types import SimpleNamespace

    loaded = {"tasks": {name: SimpleNamespace(eval_docs=[0] * size) for name, size in (("b", 5), ("a", 2), ("c", 1))}}
    assert preserve.doc_counts(loaded, None) == {"a": 2, "b": 5, "c": 1}
    assert preserve.doc_counts(loaded, 2) == {"a": 1, "b": 1}
    assert preserve.doc_counts(loaded, 6) == {"a": 2, "b": 3, "c": 1}
    assert preserve.doc_counts(loaded, 100) == {"a": 2, "b": 5, "c": 1}
    assert preserve.doc_counts({"tasks": {"t": SimpleNamespace(eval_docs=[0] * 9)}}, 4) == {"t": 4}


# ---- task configs ---------------------------------------------------------------------------------------------


def test_task_configs_fill_in_the_data_dir(small_data, tmp_path):
    folder = preserve.write_task_configs(tmp_path / "cfg", small_data)
    names = sorted(p.name for p in folder.iterdir())
    assert "utils.py" in names and "harness_boolq.yaml" in names and "harness_mmlu_abstract_algebra.yaml" in names
    for path in folder.glob("*.yaml"):
        text = path.read_text()
        assert "__DATA_DIR__" not in text and "__SUBJECT" not in text
    assert str(small_data) in (folder / "harness_gsm8k.yaml").read_text()
    # The key hashes the templates, not the machine-specific paths; shots and subjects change it.
    task = preserve.PRESERVE_TASKS["mmlu"]
    assert preserve.template_hash(task, 0) != preserve.template_hash(task, 5)
    assert preserve.template_hash(task, 0, subjects=["a"]) != preserve.template_hash(task, 0, subjects=["b"])


# ---- PluggedHFLM ----------------------------------------------------------------------------------------------

CONTEXT = (
    "Question: who wrote the origin of species?\nAnswer: Charles Darwin\n\nQuestion: what is the capital of France?\nAnswer:"
)
QUESTION = "Question: what is the capital of France?\nAnswer:"


def _requests(kind: str = "loglikelihood"):
    from lm_eval.api.instance import Instance

    if kind == "generate_until":
        args = [(CONTEXT, {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False})]
    else:
        args = [(CONTEXT, c) for c in (" Paris", " Charles Darwin", " the quick brown fox")]
    return [Instance(kind, {"q": QUESTION}, a, i, ("toy", 0, 1)) for i, a in enumerate(args)]


def _plugged(loaded, virtual_tokens, batch_size=2):
    return preserve_lm.PluggedHFLM(
        pretrained=loaded.model,
        tokenizer=loaded.tokenizer,
        virtual_tokens=virtual_tokens,
        question_of=lambda instance: instance.doc["q"],
        batch_size=batch_size,
    )


def test_unplugged_equals_hflm_bit_for_bit(loaded):
    from lm_eval.models.huggingface import HFLM

    plain = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=2).loglikelihood(_requests())
    unplugged = _plugged(loaded, None).loglikelihood(_requests())
    assert unplugged == plain  # exact floats, not approx
    plugged = _plugged(loaded, _vt(loaded)).loglikelihood(_requests())
    assert all(a[0] != b[0] for a, b in zip(plugged, plain))
    assert all(math.isfinite(score) for score, _ in plugged)


def test_virtual_tokens_sit_right_before_the_question(loaded):
    """Virtual tokens equal to real token embeddings give exactly the scores of those tokens written in the input
    at the question's first token; the slot index is the token boundary at the question's first character."""
    lm = _plugged(loaded, None, batch_size=1)
    text = CONTEXT
    context_enc, continuation_enc = lm._encode_pair(CONTEXT, " Paris")
    ids = [5, 50, 77]
    with_slots = _plugged(loaded, loaded.model.get_input_embeddings().weight[ids].detach(), batch_size=1)
    boundary = with_slots._boundary(text, context_enc, text.rfind(QUESTION))
    assert loaded.tokenizer.decode(context_enc[boundary:]) == QUESTION
    full = context_enc[:boundary] + ids + context_enc[boundary:] + continuation_enc
    with torch.no_grad():
        logprobs = torch.log_softmax(loaded.model(torch.tensor([full[:-1]])).logits[0], dim=-1)
    start = len(full) - 1 - len(continuation_enc)
    manual = sum(logprobs[start + j, t].item() for j, t in enumerate(continuation_enc))
    assert with_slots.loglikelihood(_requests()[:1])[0][0] == pytest.approx(manual, abs=1e-5)
    assert with_slots.split_fallbacks == 0


def test_truncation_keeps_the_virtual_tokens(loaded):
    lm = _plugged(loaded, _vt(loaded))
    v = preserve_lm.VIRTUAL_TOKEN_ID
    tokens = [1, 2, 3, v, v, v, 7, 8]
    assert lm.fit(tokens, 8) == tokens
    assert lm.fit(tokens, 6) == [3, v, v, v, 7, 8]  # prefix first
    assert lm.fit(tokens, 4) == [v, v, v, 8]  # then the question's start
    with pytest.raises(ValueError, match="no room for the question"):
        lm.fit(tokens, 3)


def test_plugged_generation(loaded):
    unplugged = _plugged(loaded, None).generate_until(_requests("generate_until"))
    ids = [5, 50, 77]
    as_text = _plugged(loaded, loaded.model.get_input_embeddings().weight[ids].detach())
    generated = as_text.generate_until(_requests("generate_until"))
    # the same continuation as writing those tokens into the prompt before the question
    context_enc = as_text.tok_encode(CONTEXT)
    boundary = as_text._boundary(CONTEXT, context_enc, CONTEXT.rfind(QUESTION))
    prompt = torch.tensor([context_enc[:boundary] + ids + context_enc[boundary:]])
    with torch.no_grad():
        out = loaded.model.generate(
            input_ids=prompt, max_new_tokens=6, do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id
        )
    expected = loaded.tokenizer.decode(out[0, prompt.shape[1] :], skip_special_tokens=True).split("\n\n")[0]
    assert generated == [expected]
    assert isinstance(unplugged[0], str)


# ---- run_preservation -> store -> table -----------------------------------------------------------------------


def test_run_preservation_store_and_table(loaded, small_data, tmp_path, real_data_dir):
    store = Store(tmp_path / "results")
    shots = {"boolq": [0], "csqa": [0], "mmlu": [0]}
    records = preserve.run_preservation(loaded, {"name": "base"}, ["boolq", "csqa", "mmlu"], shots, 2, store, data_dir=small_data)
    assert [r.spec.dataset for r in records] == ["harness_boolq", "harness_csqa", "harness_mmlu"]
    boolq, csqa, mmlu = records
    assert boolq.spec.n_examples == 2 and csqa.spec.n_examples == 2
    assert [r["id"] for r in mmlu.predictions()] == [  # the limit is spread over the subjects
        "harness_mmlu_abstract_algebra/0",
        "harness_mmlu_college_computer_science/0",
    ]
    for record in records:
        rows = record.predictions()
        assert len(rows) == record.spec.n_examples == record.metrics["n"]
        assert 0.0 <= record.metrics["metrics"]["acc"]["mean"] <= 1.0
        assert all(row["metrics"]["acc"] in (0.0, 1.0) for row in rows)
        assert all(row["metrics"]["acc"] == float(row["prediction"] == row["target"]) for row in rows)
        assert record.spec.method == {"name": "base"} and record.spec.scorer_version.startswith("lm-eval/")
    # documents are the real rows: BoolQ skips the 10-row few-shot pool; MMLU targets are the CSV answers
    boolq_rows = [json.loads(line) for line in (real_data_dir / "boolq/boolq.jsonl").read_text().splitlines()[10:12]]
    assert [r["target"] for r in boolq.predictions()] == [["no", "yes"][row["gold"]] for row in boolq_rows]
    assert [(r["id"], r["row"]) for r in boolq.predictions()] == [("harness_boolq/0", 10), ("harness_boolq/1", 11)]
    with open(real_data_dir / "mmlu/test/college_computer_science_test.csv", newline="", encoding="utf-8") as handle:
        answers = ["ABCD"[int(row["answer"])] for row in csv.DictReader(handle)][:1]
    ccs = [r for r in mmlu.predictions() if r["task"] == "harness_mmlu_college_computer_science"]
    assert [r["target"] for r in ccs] == answers

    # second call: every cell comes from the store (identical keys, nothing re-run)
    again = preserve.run_preservation(loaded, {"name": "base"}, ["boolq", "csqa", "mmlu"], shots, 2, store, data_dir=small_data)
    assert [r.key for r in again] == [r.key for r in records]
    assert [r.provenance["created"] for r in again] == [r.provenance["created"] for r in records]

    # SPRING unplugged (= base) and plugged, same documents
    # (unplugged is a second, independent computation of base: a deterministic re-run gives identical floats)
    unplugged = preserve.run_preservation(
        loaded, {"name": "spring", "plugged": False, "tokens": K}, ["csqa"], {"csqa": [0]}, 2, store, data_dir=small_data
    )[0]
    plugged = preserve.run_preservation(
        loaded, {"name": "spring"}, ["csqa"], {"csqa": [0]}, 2, store, virtual_tokens=_vt(loaded), data_dir=small_data
    )[0]
    assert unplugged.key != csqa.key and plugged.key != unplugged.key
    assert plugged.spec.method["plugged"] is True and plugged.spec.method["tokens"] == K
    assert plugged.spec.method["virtual_tokens_hash"].startswith("sha256:")
    assert [r["loglikelihoods"] for r in unplugged.predictions()] == [r["loglikelihoods"] for r in csqa.predictions()]
    assert [r["loglikelihoods"] for r in plugged.predictions()] != [r["loglikelihoods"] for r in csqa.predictions()]

    table = preserve.preservation_table(store)
    assert list(table.index) == ["mmlu 0-shot", "boolq 0-shot", "csqa 0-shot"]
    assert list(table.columns) == [
        "n",
        "base",
        "spring (unplugged)",
        "Δ spring (unplugged)",
        f"spring (plugged, k={K})",
        f"Δ spring (plugged, k={K})",
    ]
    assert table.loc["csqa 0-shot", "Δ spring (unplugged)"] == 0.0
    assert table.loc["csqa 0-shot", "base"] == pytest.approx(100 * csqa.metrics["metrics"]["acc"]["mean"])
    assert table.loc["mmlu 0-shot", "n"] == 2
    assert "| csqa 0-shot" in preserve.render_preservation(table, "md")


def test_gsm8k_generation_cell(loaded, small_data, tmp_path):
    store = Store(tmp_path / "results")
    (record,) = preserve.run_preservation(loaded, {"name": "base"}, ["gsm8k"], {"gsm8k": [1]}, 1, store, data_dir=small_data)
    (row,) = record.predictions()
    assert row["id"] == "harness_gsm8k/0" and row["row"] == 10
    assert set(row["metrics"]) == {"exact_match", "exact_match_flexible"}
    assert row["target"] == "366"  # GSM8K test row 10 ends "#### 366"
    assert isinstance(row["generation"], str)
    assert record.metrics["metrics"]["exact_match"]["mean"] in (0.0, 1.0)


def test_cli_command_runs_base_and_prints_the_table(loaded, small_data, tmp_path, monkeypatch, capsys):
    import typer
    from typer.testing import CliRunner

    from harness.commands import preserve as command

    monkeypatch.setattr("harness.models.load_model", lambda *a, **k: loaded)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    command.register(app)
    args = [
        "preserve",
        "--tasks",
        "boolq",
        "--method",
        "base",
        "--limit",
        "2",
        "--data-dir",
        str(small_data),
        "--results",
        str(tmp_path / "r"),
        "--format",
        "csv",
        "--lm-eval-cache",
        str(tmp_path / "cache"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "boolq 0-shot,2," in result.output
    (db,) = (tmp_path / "cache").iterdir()  # lm-eval's response cache, named by model + method hash
    assert db.name.startswith("lm-eval-") and db.suffix == ".db"
    assert preserve_run._cache_path(tmp_path, {"id": "m"}, {"name": "base"}) != preserve_run._cache_path(
        tmp_path, {"id": "m"}, {"name": "spring", "plugged": True, "virtual_tokens_hash": "x"}
    )
    failing = CliRunner().invoke(
        app,
        [
            "preserve",
            "--tasks",
            "boolq",
            "--method",
            "base,lora",
            "--data-dir",
            str(small_data),
            "--results",
            str(tmp_path / "r"),
        ],
    )
    assert isinstance(failing.exception, HarnessError) and "run `harness run --method lora` first" in str(failing.exception)


def _preservation_cell(store: Store, method: dict, accs: list[int]) -> None:
    """A synthetic BoolQ 0-shot cell of ``method`` with these per-document accuracies."""
    from harness.spec import CellSpec, example_ids_hash

    ids = [f"harness_boolq/{i}" for i in range(len(accs))]
    spec = CellSpec(
        dataset="harness_boolq",
        split="validation",
        example_ids_hash=example_ids_hash(ids),
        examples_hash="docs",
        n_examples=len(ids),
        retriever={"name": "none"},
        passages=0,
        model={"id": "tiny", "weights_hash": "w", "dtype": "fp32"},
        method=method,
        template_hash="t",
        decoding={"harness": "lm-eval", "num_fewshot": 0, "fewshot_sampler": "first_n", "source": "local"},
        scorer_version="lm-eval/x",
        metrics=("acc",),
    )
    with store.writing(spec, {"created": "2026-12-07T00:00:00"}) as writer:
        writer.append([{"id": i, "metrics": {"acc": float(a)}} for i, a in zip(ids, accs)])
        store.finish(spec, ids)


def test_the_table_gives_each_score_and_each_difference_to_base_its_ci(tmp_path, capsys):
    from harness.commands.preserve import print_preservation
    from harness.metrics import bootstrap_ci, standard_error

    store = Store(tmp_path)
    base = [1, 0, 1, 0, 1, 1, 0, 0]
    _preservation_cell(store, {"name": "base"}, base)
    _preservation_cell(store, {"name": "spring", "plugged": False, "tokens": 50, "checkpoint_hash": "c"}, base)
    lora = [0, 0, 1, 0, 0, 1, 0, 0]  # two documents lost, none gained: -25 points
    _preservation_cell(store, {"name": "lora", "checkpoint_hash": "l"}, lora)
    table = preserve.preservation_table(store, intervals=True)
    row = table.loc["boolq 0-shot"]
    assert list(table.columns[:4]) == ["n", "base", "base low", "base high"]
    assert (row["base"], row["lora"], row["Δ lora"]) == (50.0, 25.0, -25.0)
    # The difference's CI is the paired bootstrap of the per-document differences, not of the two means.
    _, low, high = bootstrap_ci([b - a for a, b in zip(base, lora)])
    assert (row["Δ lora low"], row["Δ lora high"]) == (100 * low, 100 * high)
    assert high <= 0 < -low  # every document moved down or stayed: the CI lies at or below 0
    # Unplugged SPRING is the base model: a zero difference with a zero-width CI.
    assert (row["Δ spring (unplugged)"], row["Δ spring (unplugged) low"], row["Δ spring (unplugged) high"]) == (0.0, 0.0, 0.0)
    _, base_low, base_high = bootstrap_ci(base)
    assert (row["base low"], row["base high"]) == (100 * base_low, 100 * base_high)

    print_preservation(tmp_path, fmt="md")
    md = capsys.readouterr().out
    assert f"| -25.0 [{100 * low:+.1f}, {100 * high:+.1f}]" in md and "| +0.0 [+0.0, +0.0]" in md
    print_preservation(tmp_path, fmt="csv")
    header = "task,n,base,base low,base high,base stderr,lora,lora low,lora high,lora stderr,Δ lora,Δ lora low,Δ lora high,Δ lora stderr,"
    assert capsys.readouterr().out.splitlines()[0].startswith(header)
    # lm-eval's *_stderr beside each CI: sample standard deviation / sqrt(n), x100 (base: 4 of 8 right).
    assert row["base stderr"] == pytest.approx(100 * (8 * 0.25 / 7 / 8) ** 0.5)
    assert row["Δ lora stderr"] == pytest.approx(100 * standard_error([b - a for a, b in zip(base, lora)]))


def test_as_typed_the_command_takes_the_cpu_sample_and_the_store_s_methods(loaded, small_data, tmp_path, monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.setattr("harness.models.load_model", lambda *a, **k: loaded)
    monkeypatch.setattr("harness.power.PRESERVE_CPU_AFFORDABLE", 3)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    args = ["preserve", "--tasks", "boolq", "--data-dir", str(small_data), "--results", str(tmp_path / "r")]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "methods: base (checkpoints of" in out and "no checkpoint for lora, spring" in out
    assert "Δ = method - base on the same documents [paired bootstrap CI] | CPU default: 3 documents per task (expected" in out
    assert "boolq 0-shot │ 3 │" in out and "docs" in out  # the table, after the progress bar's documents
    (cell,) = preserve.preservation_cells(Store(tmp_path / "r"))
    assert cell.spec.n_examples == 3 and cell.spec.method == {"name": "base"}
    assert main([*args, "--full", "--limit", "2"]) == 2
    assert "--limit and --full contradict each other" in capsys.readouterr().err


def test_preservation_cells_stay_out_of_the_qa_leaderboard(world, capsys):
    """A store after `harness preserve` holds lm-eval cells; the QA leaderboard's default suite leaves them out."""
    from tiny_store import write_store

    from harness.cli import main

    store = write_store(world["results"], world["corpus"])
    _preservation_cell(store, {"name": "base"}, [1, 0, 1])
    assert main(["leaderboard", "--format", "json", "--results", str(store.root)]) == 0
    rows = [row["dataset"] for row in json.loads(capsys.readouterr().out)]
    assert rows == ["nq", "popqa *", "avg in-domain (1)", "avg held-out (1)", "avg all (2)"]


def test_preservation_cells_in_lm_evals_shape(tmp_path):
    import json

    from harness.export import export_preservation
    from harness.metrics import standard_error

    store = Store(tmp_path)
    base, lora = [1, 0, 1, 0, 1, 1, 0, 0], [0, 0, 1, 0, 0, 1, 0, 0]
    _preservation_cell(store, {"name": "base"}, base)
    _preservation_cell(store, {"name": "lora", "checkpoint_hash": "l"}, lora)
    written = export_preservation(preserve.preservation_cells(store), tmp_path / "out")
    documents = {path.parent.name: json.loads(path.read_text()) for path in written if path.name == "results.json"}
    assert sorted(documents) == ["tiny_base_0-shot", "tiny_lora_0-shot"]
    (task,) = documents["tiny_lora_0-shot"]["results"]
    entry = documents["tiny_lora_0-shot"]["results"][task]
    assert entry["acc,none"] == 0.25 and entry["acc_stderr,none"] == pytest.approx(standard_error([float(v) for v in lora]))
    samples = [path for path in written if path.name.startswith("samples_") and "lora" in path.parent.name]
    assert len(samples[0].read_text().splitlines()) == 8
