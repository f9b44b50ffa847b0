"""Commands that only read the store do not import torch (it costs seconds): leaderboard, ls, diff, report."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tiny_store import write_store

PROBE = """
import sys
from harness.cli import main
code = main(sys.argv[1:])
heavy = [name for name in ("torch", "transformers", "peft", "lm_eval") if name in sys.modules]
print("imported:", ",".join(heavy) or "none", "exit", code)
"""


@pytest.mark.parametrize(
    "command",
    [
        ["leaderboard", "--format", "json"],
        ["leaderboard", "--compare", "prompt,spring"],
        ["ls", "methods"],
        ["diff", "prompt,spring", "--format", "jsonl"],
        ["report"],
    ],
)
def test_read_only_commands_do_not_import_torch(world, command):
    write_store(world["results"], world["corpus"])
    arguments = [*command] if command[0] == "ls" else [*command, "--results", str(world["results"])]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *arguments], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    assert done.stdout.strip().splitlines()[-1] == "imported: none exit 0", done.stderr[-2000:]
