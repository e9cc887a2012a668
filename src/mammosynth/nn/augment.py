"""Differentiable augmentation for GAN training on small datasets (DiffAugment; Zhao, Liu, Lin,
Zhu & Han, NeurIPS 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random transform family is applied to real and generated images *every time the
discriminator sees them* (D step and G step), and it is differentiable, so the generator is
trained through it. D then cannot memorise a few hundred real images, and because fake images
are augmented the same way, the augmentations do not leak into what G learns (unlike
augmenting only the reals). Zhao et al. recommend ``color,translation,cutout`` for 100-shot
data; for grayscale mammograms ``color`` is brightness + contrast (no saturation), and
``flip`` (horizontal, and 90-degree rotations for square patches) is added: tissue has no
preferred orientation within a patch.

Conditional discriminators (pix2pix pairs: condition channels + image) must see the condition
and the image transformed *together*: pass the concatenated tensor and say which channels carry
intensities (``intensity_channels``; brightness/contrast only touch those, geometry touches all).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from mammosynth.errors import ConfigError

POLICIES = ("color", "translation", "cutout", "flip")


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """"color,translation,cutout" -> ("color", "translation", "cutout"); "" / "none" -> ()."""
    items = [p.strip() for p in (policy.split(",") if isinstance(policy, str) else policy) if p and p.strip()]
    items = [p for p in items if p != "none"]
    bad = [p for p in items if p not in POLICIES]
    if bad:
        raise ConfigError(f"unknown augmentation {', '.join(bad)}; choose from {', '.join(POLICIES)} (comma-separated)")
    return tuple(items)


def _rand(shape: tuple[int, ...], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, device=x.device, dtype=torch.float32, generator=generator).to(x.dtype)


def diff_augment(x: torch.Tensor, policy: str | Sequence[str] = "color,translation,cutout",
                 intensity_channels: Sequence[int] | None = None, generator: torch.Generator | None = None,
                 translation: float = 0.125, cutout: float = 0.5) -> torch.Tensor:
    """Augment a batch (B, C, H, W) in [-1, 1] with per-sample random transforms.

    ``policy``: any of color, translation, cutout, flip. ``intensity_channels``: channels that
    brightness/contrast change (default: all). ``translation``: max shift as a fraction of the
    side (zero padding, as in DiffAugment); ``cutout``: side of the erased square as a fraction
    of the image side. Differentiable with respect to ``x``; the draws come from ``generator``.
    """
    ops = parse_policy(policy)
    if not ops:
        return x
    B, C, H, W = x.shape
    chans = list(range(C)) if intensity_channels is None else list(intensity_channels)
    if "color" in ops and chans:
        sel = torch.zeros(1, C, 1, 1, device=x.device, dtype=x.dtype)
        sel[:, chans] = 1
        # brightness: +U(-0.5, 0.5) on a [0,1] scale = +U(-1, 1)/... on [-1, 1]: shift by (r-0.5)
        shift = (_rand((B, 1, 1, 1), x, generator) - 0.5) * sel
        x = x + shift
        # contrast: scale around each image's mean by U(0.5, 1.5)
        mean = x.mean(dim=(2, 3), keepdim=True)
        scale = 1 + (_rand((B, 1, 1, 1), x, generator) - 0.5) * sel
        x = (x - mean) * scale + mean
    if "flip" in ops:
        flip = _rand((B,), x, generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if H == W:
            k = (torch.rand((B,), generator=generator, device=x.device) * 4).long().clamp(max=3)
            rotated = [torch.rot90(x, int(r), dims=(2, 3)) for r in range(4)]
            x = torch.stack(rotated, 0)[k, torch.arange(B, device=x.device)]
    if "translation" in ops:
        sy, sx = int(H * translation + 0.5), int(W * translation + 0.5)
        ty = (torch.rand((B,), generator=generator, device=x.device) * (2 * sy + 1)).long() - sy
        tx = (torch.rand((B,), generator=generator, device=x.device) * (2 * sx + 1)).long() - sx
        gy, gx = torch.meshgrid(torch.arange(H, device=x.device), torch.arange(W, device=x.device), indexing="ij")
        yy = (gy[None] - ty[:, None, None]).clamp(-1, H)  # -1 / H index the zero padding
        xx = (gx[None] - tx[:, None, None]).clamp(-1, W)
        padded = F.pad(x, (1, 1, 1, 1))
        idx = ((yy + 1) * (W + 2) + (xx + 1)).view(B, 1, H * W).expand(B, C, H * W)
        x = padded.flatten(2).gather(2, idx).view(B, C, H, W)
    if "cutout" in ops:
        ch, cw = int(H * cutout + 0.5), int(W * cutout + 0.5)
        cy = (torch.rand((B,), generator=generator, device=x.device) * (H + 1 - ch % 2)).long()
        cx = (torch.rand((B,), generator=generator, device=x.device) * (W + 1 - cw % 2)).long()
        gy = torch.arange(H, device=x.device)[None, :, None]
        gx = torch.arange(W, device=x.device)[None, None, :]
        top, left = (cy - ch // 2)[:, None, None], (cx - cw // 2)[:, None, None]
        inside = (gy >= top) & (gy < top + ch) & (gx >= left) & (gx < left + cw)
        x = x * (~inside)[:, None].to(x.dtype)
    return x
