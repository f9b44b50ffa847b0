"""Where `harness run` computes what the store lacks: in this process (``local``) or as tasks on a Ray cluster.

The Ray executor fans a run out in two waves of tasks, each writing into the same content-addressed store (its
locks keep two workers from writing one cell or one checkpoint; a killed task's cell resumes in the next run):

1. one task per trained method and retriever the run needs: the method's ``prepare`` trains (or finds) its
   checkpoint, so every later task finds it instead of training it again;
2. one task per dataset: :func:`harness.runner.run` on that dataset alone. A dataset's cells are planned and
   grouped (:func:`harness.runner.share_key`) exactly as in a local run, so their generations, batches and
   files are the same.

The driver then plans the whole run locally, finds every cell in the store and prints the leaderboard as usual.
Each task sets torch's thread count to its CPUs, so results do not depend on how many tasks share a machine.
Ray is an optional extra (``pip install -e ".[ray]"``); workers need harness installed, the data and the same
``--results`` folder (a shared file system on a cluster).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

EXECUTORS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """How the Ray executor asks for resources: ``address`` of a running cluster (``auto``: the one this machine
    joined; ``None``: start a local one), CPUs and GPUs per task."""

    address: str | None = None
    cpus_per_task: int = 1
    gpus_per_task: float = 0.0


@dataclasses.dataclass(frozen=True)
class DatasetFile:
    """The ``--dataset-file`` flags, so that a worker registers the same file dataset as the driver."""

    path: Path | None = None
    name: str | None = None
    answers_field: str | None = None


def import_ray() -> Any:
    """The ``ray`` module, or the one-line error naming the pip command that installs it."""
    try:
        import ray
    except ImportError:
        raise HarnessError(
            "--executor ray needs Ray, an optional extra: pip install -e \".[ray]\" (or pip install 'ray>=2.40')"
        ) from None
    return ray


def _in_worker(cpus: int, dataset_file: DatasetFile) -> None:
    """A task's setup: torch's threads are the task's CPUs; the driver's file dataset is registered here too."""
    import torch

    torch.set_num_threads(max(1, cpus))
    if dataset_file.path is not None:
        from harness.dataset_file import register_dataset_file

        register_dataset_file(dataset_file.path, dataset_file.name, dataset_file.answers_field)


def train_task(config: Any, method: str, retriever: str, cpus: int, dataset_file: DatasetFile) -> str:
    """Train (or find) ``method``'s checkpoints for ``retriever``'s passages; returns a line saying which."""
    _in_worker(cpus, dataset_file)
    from harness.runner import RunContext, method_instances

    started = time.monotonic()
    context = RunContext(config, log=lambda message: print(message, flush=True))
    hashes = []
    for instance in method_instances(method, config):
        instance.prepare(context, retriever)
        hashes.append(str(getattr(instance, "checkpoint_hash", "")))
    return f"{method} on {retriever} passages: checkpoint {', '.join(dict.fromkeys(hashes))} ({time.monotonic() - started:.0f} s)"


def dataset_task(config: Any, cpus: int, dataset_file: DatasetFile) -> tuple[str, list[str]]:
    """Compute what the store lacks of ``config`` (one dataset); returns a line and the run's notices."""
    _in_worker(cpus, dataset_file)
    from harness.runner import RunContext, run

    started = time.monotonic()
    lines: list[str] = []
    cells, notices = run(config, RunContext(config, log=lines.append))
    done = lines[-1] if lines else f"{len(cells)} cells"
    return f"{', '.join(config.datasets)}: {done} ({time.monotonic() - started:.0f} s)", notices


def trainings(config: Any) -> list[tuple[str, str]]:
    """(trained method, retriever) pairs of ``config``: the checkpoints its cells need."""
    from harness.plugins import METHODS

    pairs = []
    for name in config.methods:
        cls = METHODS.get(name)
        if cls.trained:
            pairs += [(name, retriever) for retriever in (config.retrievers if cls.uses_passages else ("none",))]
    return pairs


def run_on_ray(
    config: Any,
    options: RayOptions,
    dataset_file: DatasetFile = DatasetFile(),
    log: Callable[[str], None] = print,
) -> list[str]:
    """Compute ``config``'s missing checkpoints, then its datasets' cells, as Ray tasks; returns the notices."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        # A local cluster gets this machine's CPUs; `auto` (or an address) joins a running cluster.
        local = options.address is None
        ray.init(
            address=options.address,
            num_cpus=os.cpu_count() if local else None,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=True,
        )
    try:
        remote = {"num_cpus": options.cpus_per_task, "num_gpus": options.gpus_per_task}
        train = ray.remote(**remote)(train_task)
        evaluate = ray.remote(**remote)(dataset_task)
        waves = [
            [train.remote(config, m, r, options.cpus_per_task, dataset_file) for m, r in trainings(config)],
            [
                evaluate.remote(dataclasses.replace(config, datasets=(d,)), options.cpus_per_task, dataset_file)
                for d in config.datasets
            ],
        ]
        notices: list[str] = []
        for wave, name in zip(waves, ("training", "datasets")):
            if wave:
                log(f"ray: {len(wave)} {name} task(s) on {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
            pending = list(wave)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayTaskError as error:
                    if isinstance(error.cause, HarnessError):  # the user's error, said as a local run says it
                        raise HarnessError(str(error.cause)) from None
                    raise
                line, found = (result, []) if isinstance(result, str) else result
                notices += [notice for notice in found if notice not in notices]
                log(f"ray: done {line}")
        return notices
    finally:
        if started_here:
            ray.shutdown()
