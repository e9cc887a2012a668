"""Device choice and data-parallel plumbing (``torchrun``: RANK / WORLD_SIZE / LOCAL_RANK).

We do not wrap networks in ``torch.nn.parallel.DistributedDataParallel``: GAN steps alternate
D and G updates with the other network frozen and reuse outputs across both backward passes,
which breaks the DDP reducer's assumption of one forward + one backward per iteration over a
fixed set of parameters. Instead :func:`all_reduce_grads_` averages exactly the gradients an
optimizer is about to apply, coalesced into a few flat buffers (see docs/training.md).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist

from mammosynth.errors import ConfigError

#: Size of one coalesced all-reduce buffer.
BUCKET_BYTES = 32 * 2**20


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """Rank facts set by ``torchrun`` (a plain ``python`` run is rank 0 of 1)."""
    try:
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as err:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({err})") from None


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU; ``cuda`` -> this
    process's GPU; ``cpu`` / ``cuda:N`` as given. Unavailable CUDA is a ConfigError."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} requested but CUDA is not available here; use --device cpu or auto")
        if spec == "cuda":
            return torch.device(f"cuda:{local_rank}")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r}: only {torch.cuda.device_count()} GPU(s) visible")
        return dev
    raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


def init_distributed(device_spec: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the ``torchrun`` process group if there is one (nccl on CUDA, gloo on CPU).

    The group lives until the process exits, so several trainings in one process (the demo)
    reuse it: re-initialising against torchrun's rendezvous store can deadlock.
    """
    info = dist_info_from_env()
    device = resolve_device(device_spec, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size, **kwargs)
        atexit.register(_destroy)
    return info, device


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _buckets(tensors: list[torch.Tensor]) -> Iterable[list[torch.Tensor]]:
    """Group tensors by (device, dtype) into lists of at most BUCKET_BYTES each."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for group in groups.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for t in group:
            nbytes = t.numel() * t.element_size()
            if bucket and size + nbytes > BUCKET_BYTES:
                yield bucket
                bucket, size = [], 0
            bucket.append(t)
            size += nbytes
        if bucket:
            yield bucket


def _flat(bucket: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in bucket])


def _scatter_back(flat: torch.Tensor, bucket: list[torch.Tensor]) -> None:
    offset = 0
    for t in bucket:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


@torch.no_grad()
def all_reduce_grads_(params: Iterable[torch.nn.Parameter], world_size: int) -> None:
    """Average ``p.grad`` over all processes, in place, coalesced into flat buckets.

    Every process must pass the same parameters with grads (they run the same code path).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if world_size <= 1 or not grads:
        return
    for bucket in _buckets(grads):
        flat = _flat(bucket)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world_size)
        _scatter_back(flat, bucket)


@torch.no_grad()
def broadcast_tensors_(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` on every process with rank ``src``'s values (coalesced)."""
    if not tensors:
        return
    for bucket in _buckets(tensors):
        flat = _flat(bucket)
        dist.broadcast(flat, src=src)
        _scatter_back(flat, bucket)


def broadcast_module_(module: torch.nn.Module, src: int = 0, buffers_only: bool = False) -> None:
    """Make parameters (and buffers, e.g. BatchNorm running statistics) equal to rank ``src``'s."""
    tensors = [b for b in module.buffers()]
    if not buffers_only:
        tensors = [p.data for p in module.parameters()] + tensors
    broadcast_tensors_(tensors, src)


def any_flag(flag: bool, device: torch.device, world_size: int) -> bool:
    """True if ``flag`` is true on any process (so all processes stop together)."""
    if world_size <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_bytes(payload: bytes, device: torch.device, world_size: int) -> list[bytes]:
    """Every process's ``payload`` (used to checkpoint per-rank RNG states on rank 0)."""
    if world_size <= 1:
        return [payload]
    n = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(n) for _ in range(world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(int(s.item()) for s in sizes))
    buf = torch.zeros(longest, dtype=torch.uint8, device=device)
    if payload:
        buf[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    out = [torch.zeros_like(buf) for _ in range(world_size)]
    dist.all_gather(out, buf)
    return [bytes(o[: int(s.item())].cpu().numpy().tobytes()) for o, s in zip(out, sizes)]


def broadcast_int(value: int, device: torch.device, world_size: int, src: int = 0) -> int:
    if world_size <= 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, src=src)
    return int(t.item())


def barrier(world_size: int) -> None:
    if world_size > 1 and dist.is_initialized():
        dist.barrier()
