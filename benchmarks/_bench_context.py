"""Shared by the training benchmarks: a StepContext with the trainer's step semantics and
none of its bookkeeping, so a method's ``train_step`` can be timed against a plain loop."""

from __future__ import annotations

import contextlib

import torch

from mammosynth.train.method import StepContext

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


class BenchContext(StepContext):
    """One process, no GradScaler. ``amp``: "bf16", "fp16", a torch dtype, or None/"off"."""

    def __init__(self, nets, opts, device: torch.device, amp=None, seed: int = 0) -> None:
        self.nets, self.opts, self.device = nets, opts, device
        self.step, self.world_size, self.rank = 0, 1, 0
        self.amp_dtype = amp if isinstance(amp, torch.dtype) else _AMP.get(amp)
        self._gen = torch.Generator(device=device).manual_seed(seed)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def backward_step(self, loss, optimizer, retain_graph=False):
        opt = self.opts[optimizer]
        opt.zero_grad(set_to_none=True)
        loss.backward(retain_graph=retain_graph)
        opt.step()

    def generator(self):
        return self._gen


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
