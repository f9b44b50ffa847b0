"""The project's own tooling passes on the tree: ruff (lint and format) and mypy, as configured in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("check", [("check", "."), ("format", "--check", ".")], ids=["lint", "format"])
def test_ruff(check):
    result = _run(sys.executable, "-m", "ruff", *check)  # both are in the dev extras
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy():
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
