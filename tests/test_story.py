"""The README's story, its commands in sequence on the tiny world: run, then preserve, then plot, then report.

`harness run` trains SPRING and evaluates it at the CPU default's token counts (1, 5, 50) with the references;
`harness preserve`, with no --method, finds the checkpoint that run trained; `harness plot tokens-sweep`, with no --suite, draws the
sweep of what the store holds.
"""

from __future__ import annotations

import re

from tiny_model import tiny_model_dir
from tiny_store import PageReader

from harness.cli import main
from harness.leaderboard import cells_frame
from harness.store import Store

TINY_TRAINING = ["spring.examples=2", "spring.batch_size=2", "spring.dev_examples=0", "spring.eval_every=0"]


def test_run_then_preserve_then_plot(world, real_data_dir, capsys):
    model, results = str(tiny_model_dir()), str(world["results"])
    common = ["--model", model, "--dtype", "fp32", "--results", results, "--data-dir", str(world["data"])]
    options = [flag for option in TINY_TRAINING for flag in ("--option", option)]
    run = ["run", "--suite", "nq", "--method", "spring", "--corpus", str(world["corpus"]), "--limit", "3"]
    assert main([*run, "--max-new-tokens", "4", *options, *common]) == 0
    out = capsys.readouterr().out
    labels = set(cells_frame(Store(world["results"]))["method"])
    assert {"spring[tokens=1]", "spring[tokens=5]", "spring[tokens=50]", "prompt"} <= labels
    # The leaderboard shows SPRING's headline k and says where the other k went.
    board = out[out.index("EM x100") :]  # the leaderboard, after the progress bars (which name every cell)
    tables, note = " ".join(board.split()).split("also in the store, not shown: ")
    assert "tokens=50]" in tables and "tokens=5]" not in tables and "tokens=1]" not in tables
    assert note.startswith("spring[tokens=1], spring[tokens=5] (`harness plot tokens-sweep` draws them)")

    (world["data"] / "boolq").mkdir()
    (world["data"] / "boolq" / "boolq.jsonl").symlink_to(real_data_dir / "boolq" / "boolq.jsonl")
    assert main(["preserve", "--tasks", "boolq", "--limit", "2", *common]) == 0  # no --method: the store's
    out = " ".join(capsys.readouterr().out.split())
    assert "methods: base, spring (checkpoints of" in out and "no checkpoint for lora" in out
    assert "boolq 0-shot" in out and "spring (plugged, k=50)" in out

    assert main(["plot", "tokens-sweep", "--results", results]) == 0
    captured = capsys.readouterr()
    assert "suite nq (the datasets the store's cells cover" in captured.err
    png, svg = (line for line in captured.out.splitlines() if line.strip())
    assert png.endswith("-nq.png") and svg.endswith("-nq.svg")
    with open(png, "rb") as figure:
        assert figure.read(8) == b"\x89PNG\r\n\x1a\n"

    # Then the page of the whole store: the leaderboard, the figures this store feeds, SPRING vs its reference.
    assert main(["report", "--results", results]) == 0
    html = (world["results"] / "report.html").read_text(encoding="utf-8")
    page = PageReader(html)
    # The training run's record: its passages' answer recall beside the evaluation sample's.
    assert "<h3>Training runs</h3>" in html and re.search(r"<td>nq \d\.\d\d / \d\.\d\d</td>", html)
    drawn = {name for name, is_drawn in page.figures.items() if is_drawn}
    assert {"tokens-sweep", "preservation", "leaderboard", "training"} <= drawn
    assert set(page.counts) == {"pair-1"} and sum(page.counts["pair-1"]["nq"].values()) == 3  # --limit 3
    assert ("EM", "nq", "spring[tokens=50] EM") in page.values
