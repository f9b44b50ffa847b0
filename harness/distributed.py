"""Data-parallel training under ``accelerate launch`` or ``torchrun``: which process this is, and the few
collective operations the training loop needs.

A process started without a launcher is rank 0 of 1, and every operation here is then the identity, so the
single-process path is the same code. With several processes (``WORLD_SIZE`` > 1 and the rendezvous variables
both launchers set), this joins their ``torch.distributed`` process group: NCCL with one GPU per process
(``LOCAL_RANK``), gloo on CPUs.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Processes:
    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0


@functools.lru_cache(maxsize=1)
def processes() -> Processes:
    """This process's rank and the number of processes training together (1 without a launcher)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes(0, 1)
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():  # the launcher's rendezvous variables (MASTER_ADDR, RANK, ...) say where
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size())


def average_gradients(parameters: list[Any]) -> None:
    """Replace each parameter's gradient by its mean over the processes (a parameter without one counts as 0)."""
    group = processes()
    if group.world == 1:
        return
    import torch
    import torch.distributed as dist

    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)
        parameter.grad /= group.world


def weighted_mean(value: float, weight: float) -> float:
    """The mean of ``value`` over the processes, each weighted by its ``weight`` (e.g. its examples)."""
    if processes().world == 1:
        return value
    import torch
    import torch.distributed as dist

    totals = torch.tensor([value * weight, weight], dtype=torch.float64)
    dist.all_reduce(totals)
    return float(totals[0] / totals[1]) if totals[1] > 0 else 0.0


def _broadcast(value: Any) -> Any:
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def build_once_together(target: Path, build: Callable[[Path], Any], build_once: Callable[..., Any], **options: Any) -> None:
    """``build_once(target, build, **options)`` where every process takes part in ``build`` (a training with
    collective steps) and only the main one publishes.

    The main process takes the lock and tells the others whether it builds (another run may have published the
    target meanwhile); they then run the same ``build`` into a scratch folder, dropped afterwards, so that the
    collective operations of every step are matched. All wait until the target is published."""
    group = processes()
    if group.world == 1:
        build_once(target, build, **options)
        return
    import torch.distributed as dist

    if group.main:
        started: list[bool] = []

        def announced(path: Path) -> Any:
            started.append(_broadcast(True))
            return build(path)

        build_once(target, announced, **options)
        if not started:
            _broadcast(False)
    elif _broadcast(None):
        with tempfile.TemporaryDirectory(prefix="harness-rank-") as scratch:
            build(Path(scratch) / target.name)
    dist.barrier()
