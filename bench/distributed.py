"""Process-group plumbing for runs under ``torchrun`` (gloo on CPU, nccl on CUDA).

Outside torchrun everything here is a no-op for a single process of rank 0.
Under torchrun the process group is joined even with one process
(``--nproc_per_node=1``), so that the collectives (nccl on CUDA) really run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        """True in a process group (under torchrun), even of one process."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def launched_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when not launched by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) sets TORCHELASTIC_RUN_ID in every process it starts."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "MASTER_ADDR" in os.environ


def init(device: str) -> Dist:
    """Join the process group torchrun set up; the backend follows ``device``."""
    world = launched_world_size()
    if world <= 1 and not launched_by_torchrun():
        return SINGLE
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local_rank, backend=backend)


def shutdown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.active:
        return obj
    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_true(flag: bool, d: Dist) -> bool:
    """True on every rank when ``flag`` is true on every rank (a minimum over ranks)."""
    if not d.active:
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int64, device="cuda" if d.backend == "nccl" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())


def reduce_sum_to_main(values: list[int], d: Dist, device: str) -> list[int]:
    """Element-wise sum over all ranks, valid on rank 0 (other ranks get their own values back)."""
    if not d.active:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device="cuda" if d.backend == "nccl" else "cpu")
    dist.reduce(tensor, dst=0, op=dist.ReduceOp.SUM)
    return [int(v) for v in tensor.tolist()] if d.is_main else list(values)
