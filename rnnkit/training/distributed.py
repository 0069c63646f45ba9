"""Several processes, one model: torchrun + DistributedDataParallel.

``torchrun --nproc_per_node=N -m rnnkit train ...`` starts N copies of the program with
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. Each copy joins a process
group (gloo on the CPU, NCCL on GPUs), wraps the model in DDP, and takes its own slice of every
global batch (:func:`shard`). DDP averages the gradients over the processes, so with each
process' loss scaled to ``world * (its loss sum) / (global count)`` the averaged gradient is
that of the global batch's mean loss: a run on N processes takes the same steps as a run on one
process with the same global batch, up to float rounding. Only rank 0 logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world(device: str) -> World:
    """Join the process group torchrun describes in the environment; one process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return World(rank, size, local)


def close_world(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def all_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of ``value`` over the processes (itself, alone)."""
    if world.size > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def shard(global_batch: int, world: World) -> slice:
    """This process' rows of a global batch of ``global_batch`` rows (contiguous, equal)."""
    if global_batch % world.size:
        raise ValueError(f"data.batch_size: expected a multiple of the number of processes "
                         f"({world.size}), got {global_batch}")
    per = global_batch // world.size
    return slice(world.rank * per, (world.rank + 1) * per)
