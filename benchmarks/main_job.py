"""The README's main job, timed as a newcomer runs it: a fresh result store, then the same command again (cached).

    python benchmarks/main_job.py [--results DIR] [-- extra harness run flags]

Runs ``harness run --suite qa12 --method spring,lora`` in a subprocess on an empty store (retrieval, SPRING and
LoRA training, every cell), then once more on that store, and reads each run's peak resident memory from the
kernel (``RUSAGE_CHILDREN``). The corpus, its BM25 index and the converted SmolLM2 live in the user cache, so a
first-ever run on a machine adds their one-time build (about 1-3 minutes). The last line is the headline figure:
``main job: <s> s, cached <s> s, peak <GB> GB`` (the targets: <= 900 s and <= 4 GB on 2 cores).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAIN_JOB = ["run", "--suite", "qa12", "--method", "spring,lora"]


def timed(command: list[str], log: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of ``command``, its output appended to ``log``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as out:
        process = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {process.returncode}; see {log}")
    # ru_maxrss of the children is the largest child so far; a smaller second run leaves it unchanged.
    return seconds, max(peak_kb, before) / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=None, help="store folder (default: a new temporary one)")
    parser.add_argument("extra", nargs="*", help="further `harness run` flags, after --")
    args = parser.parse_args()
    folder = args.results or Path(tempfile.mkdtemp(prefix="harness-main-job-"))
    folder.parent.mkdir(parents=True, exist_ok=True)
    log = folder.parent / f"{folder.name}.log"
    command = [sys.executable, "-m", "harness.cli", *MAIN_JOB, "--results", str(folder), *args.extra]
    print(f"store {folder}, output in {log}", flush=True)
    fresh, peak = timed(command, log)
    print(f"fresh store: {fresh:.0f} s, peak RSS {peak:.2f} GB", flush=True)
    cached, _ = timed(command, log)
    print(f"cached: {cached:.1f} s", flush=True)
    tail = log.read_text(encoding="utf-8").splitlines()
    verdicts = [line for line in tail if " EM [" in line and "paired questions" in line]
    for line in dict.fromkeys(verdicts):  # both runs print the same verdicts
        print(line)
    print(f"main job: {fresh:.0f} s, cached {cached:.0f} s, peak {peak:.1f} GB")


if __name__ == "__main__":
    main()
