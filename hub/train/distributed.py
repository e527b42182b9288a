"""Process-group setup and the collectives the trainer uses (data parallelism without a wrapper).

One process: nothing is initialised and every helper is a no-op. Under ``torchrun`` (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` in the environment) the default
process group is created with NCCL on CUDA and gloo on the CPU.

Gradients are averaged explicitly with bucketed ``all_reduce`` after the last accumulation
micro-step instead of wrapping the model in ``DistributedDataParallel``: stages call arbitrary
sub-modules and methods and run one backward pass per optimizer group (generator and critic),
which DDP's reducer does not support. The arithmetic is the same as DDP (mean of per-rank
gradients); there is no all-reduce on the other micro-steps (what ``no_sync`` gives DDP).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

BUCKET_BYTES = 25 * 1024 * 1024  # same default bucket size as DDP


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, rank on its node, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"`` without a GPU is a ValueError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("train.device='cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"train.device={name!r}; accepted: auto, cpu, cuda")


def init_distributed(device: str = "auto") -> DistInfo:
    """Create the process group when launched by ``torchrun`` (or join an existing one)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def shutdown() -> None:
    """Destroy the process group if one exists."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers from rank ``src`` to every rank (as DDP does at construction)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=src)


def _buckets(tensors: list[torch.Tensor], bucket_bytes: int) -> Iterable[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (size + t.numel() * t.element_size() > bucket_bytes or t.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel() * t.element_size()
    if bucket:
        yield bucket


def average_gradients(params: Iterable[nn.Parameter], bucket_bytes: int = BUCKET_BYTES) -> None:
    """All-reduce (mean) the ``.grad`` of ``params`` across ranks, in flat buckets.

    A parameter without a gradient on this rank contributes zeros (so every rank issues the
    same collectives); its gradient is then set on every rank.
    """
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    world = dist.get_world_size()
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    for bucket in _buckets(grads, bucket_bytes):
        flat = torch.cat([g.reshape(-1) for g in bucket])  # (N,)
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (returns a new tensor; identity in one process)."""
    out = values.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out)
        out /= dist.get_world_size()
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on at least one rank (used to stop all ranks together)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (a list of length world size); ``[obj]`` in one process.

    Uses ``all_gather_object`` (pickle between our own processes; never on files).
    """
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
