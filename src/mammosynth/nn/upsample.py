"""2x upsampling layers for generators, with and without checkerboard artefacts.

* ``transposed``: ``ConvTranspose2d(k=4, s=2, p=1)``, the DCGAN / pix2pix layer the papers use.
  Its kernel overlaps unevenly (4 taps over stride 2 is even, but learned kernels still weight the
  two phases differently), which prints a period-2 pattern into the output (Odena, Dumoulin &
  Olah 2016, "Deconvolution and checkerboard artifacts").
* ``resize``: nearest-neighbour 2x upsampling then a 3x3 convolution (Odena et al.'s
  resize-convolution): every output pixel sees the same number of input taps, so no phase
  pattern can be learned.
* ``transposed_blur``: the transposed convolution followed by a fixed [1, 3, 3, 1] binomial
  low-pass filter per channel, which removes the energy a period-2 pattern puts at Nyquist
  (the filtered upsampling of StyleGAN2 / Karras et al. 2019, Zhang 2019 "Making convolutional
  networks shift-invariant again").

All three map (B, c_in, H, W) to (B, c_out, 2H, 2W); they differ in parameter count (4x4 vs 3x3
kernels) but not in receptive-field order, so a paper's layer count is kept.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mammosynth.errors import ConfigError

Upsampling = Literal["transposed", "resize", "transposed_blur"]
UPSAMPLING_MODES: tuple[str, ...] = ("transposed", "resize", "transposed_blur")


class Blur(nn.Module):
    """Depthwise separable binomial low-pass filter (taps [1, 3, 3, 1] / 8 per axis), output the
    same size as the input (a 4-tap filter pads 2 before and 1 after: a half-pixel shift that the
    transposed convolution's own half-pixel offset cancels)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k2 = torch.outer(k, k)
        k2 = k2 / k2.sum()
        self.register_buffer("kernel", k2[None, None].repeat(channels, 1, 1, 1), persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (2, 1, 2, 1), mode="replicate")  # replicate: works down to 1x1 maps
        return F.conv2d(x, self.kernel.to(x.dtype), groups=self.channels)


def up_conv(c_in: int, c_out: int, mode: str = "transposed", bias: bool = True) -> nn.Module:
    """A 2x upsampling convolution ``c_in -> c_out`` of the given ``mode`` (see module docstring)."""
    if mode == "transposed":
        return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)
    if mode == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias))
    if mode == "transposed_blur":
        return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias), Blur(c_out))
    raise ConfigError(f"upsampling must be one of {', '.join(UPSAMPLING_MODES)}, got {mode!r}")
