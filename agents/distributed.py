"""Multi-process training with ``torchrun`` (DistributedDataParallel), and its single-process case.

Run ``torchrun --nproc_per_node N -m glimpse.cli train ...``: every process runs its own batch of
episodes (``--batch-size`` is per process, so the effective batch is N times larger), gradients
are averaged by DDP, and process 0 alone writes the run directory and evaluates. Without
``torchrun`` everything here is a no-op: rank 0 of a world of 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> None:
    """Joins the process group that ``torchrun`` set up (gloo on CPU, NCCL on CUDA)."""
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def any_process(flags: list[bool]) -> list[bool]:
    """Element-wise OR of ``flags`` over all processes (one small all-reduce per call)."""
    if world_size() == 1:
        return flags
    tensor = torch.tensor([float(f) for f in flags])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` inside DistributedDataParallel when running under torchrun."""
    if world_size() == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
