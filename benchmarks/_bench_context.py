"""Shared by the training benchmarks: a StepContext with the trainer's step semantics and
none of its bookkeeping, so a method's ``train_step`` can be timed against a plain loop."""

from __future__ import annotations

import torch

from mammosynth.train.method import EagerContext as BenchContext  # noqa: F401  (re-exported for the benchmarks)


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(batch: int, size: int, device: torch.device, seed: int = 0, labels: bool = False) -> dict[str, torch.Tensor]:
    """Random tissue in [-1,1] with an elliptical lesion mask per patch (timing only); with
    ``labels``, random shape/margin indices too (-1 = unknown)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 1, size, size, generator=g) * 2 - 1
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radii = (0.15 + 0.15 * torch.rand(batch, 2, generator=g)) * size
    mask = (((yy - size / 2) / radii[:, :1, None]) ** 2 + ((xx - size / 2) / radii[:, 1:, None]) ** 2 < 1).float()
    out = {"image": image.to(device), "mask": mask[:, None].to(device)}
    if labels:
        out.update(shape=torch.randint(-1, 4, (batch,), generator=g), margin=torch.randint(-1, 5, (batch,), generator=g))
    return out
