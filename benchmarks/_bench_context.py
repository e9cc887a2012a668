"""Shared by the training benchmarks: a StepContext with the trainer's step semantics and
none of its bookkeeping, so a method's ``train_step`` can be timed against a plain loop."""

from __future__ import annotations

import torch

from mammosynth.train.method import EagerContext as BenchContext  # noqa: F401  (re-exported for the benchmarks)


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
