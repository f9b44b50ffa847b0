"""The report page in a real headless Chromium: its DOM after the page's own script ran shows the leaderboard
numbers of `harness leaderboard --format json`, the figures, and a question filter whose counts are the store's;
a screenshot of it is drawn. `.ci/run` installs Chromium from the system packages where it is missing."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from PIL import Image
from tiny_store import OUTCOMES, PageReader, write_store

from harness.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)

pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless Chromium on this machine (.ci/run installs it with apt-get; `apt-get install chromium` here)",
)


@pytest.fixture
def page(world, capsys, tmp_path):
    write_store(world["results"], world["corpus"])
    assert main(["report", "--results", str(world["results"])]) == 0
    capsys.readouterr()
    return world["results"] / "report.html"


def _chromium(tmp_path, *arguments: str) -> str:
    command = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    done = subprocess.run([*command, *arguments], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def _dom(tmp_path, page, fragment: str = "") -> PageReader:
    return PageReader(_chromium(tmp_path, "--dump-dom", f"{page.as_uri()}{fragment}"))


def _visible(reader: PageReader) -> list[tuple[str, str]]:
    return sorted((kind, dataset) for kind, dataset, hidden in reader.rows["pair-1"] if not hidden)


def test_browser_shows_the_leaderboard_figures_and_a_working_filter(world, page, tmp_path, capsys):
    dom = _dom(tmp_path, page)
    assert main(["leaderboard", "--results", str(world["results"]), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    expected = {
        (column.rsplit(" ", 1)[-1], record["dataset"], column): value
        for record in records
        for column, value in record.items()
        if column.endswith((" EM", " F1"))
    }
    assert {key: value for key, (value, _) in dom.values.items()} == pytest.approx(expected, abs=1e-6)
    assert all(text.split(" ")[0] == f"{expected[key]:.1f}" for key, (_, text) in dom.values.items())
    assert dom.figures["leaderboard"] and not dom.figures["training"]
    assert dom.counts["pair-1"] == OUTCOMES
    assert dom.shown["pair-1"] == 4 and len(_visible(dom)) == 4

    fixed = _dom(tmp_path, page, "#outcome=fixed")
    assert _visible(fixed) == [("fixed", "nq"), ("fixed", "nq"), ("fixed", "popqa")]
    assert fixed.shown["pair-1"] == sum(counts["fixed"] for counts in OUTCOMES.values())
    broken = _dom(tmp_path, page, "#outcome=broken&dataset=nq")
    assert _visible(broken) == [("broken", "nq")] and broken.shown["pair-1"] == OUTCOMES["nq"]["broken"]
    searched = _dom(tmp_path, page, "#text=capital%20of%20france")
    assert _visible(searched) == [("fixed", "nq")]


def test_browser_draws_the_page(page, tmp_path):
    shot = tmp_path / "report.png"
    _chromium(tmp_path, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri())
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    # A drawn page, not a blank one: text, table rules and the figures' colours.
    assert len(image.getcolors(maxcolors=1 << 16) or []) > 50
