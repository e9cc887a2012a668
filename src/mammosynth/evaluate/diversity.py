"""MS-SSIM (Wang, Simoncelli & Bovik 2003) and the MS-SSIM diversity of an image set.

MS-SSIM(x, y) = [l_M(x,y)]^{w_M} * prod_{j=1..M} [c_j(x,y) s_j(x,y)]^{w_j}  (Wang et al. 2003, eq. 7)

computed as usual: an 11x11 Gaussian window (sigma 1.5, "valid" filtering), K1 = 0.01, K2 = 0.03,
a 2x2 average-pool between scales, and the standard weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333) for M = 5 scales. Five scales need the coarsest scale
to hold the window, i.e. images of at least 11*2^4 = 176 px; smaller images use the largest M with
floor(min(H,W) / 2^(M-1)) >= 11 (3 scales at 64 px, 4 at 128 px) and the first M weights renormalised to sum to 1. Images under 11 px use a
single SSIM scale with the window shrunk to the image. Negative contrast terms are clipped to 0
(as in common implementations) so fractional powers stay real.

Diversity (Odena et al. 2017): mean of 1 - MS-SSIM over random pairs of distinct images from one
set; higher = more diverse. Compare a synthetic set with the real set (mode collapse -> lower).

Inputs: torch (N,1,H,W) in [-1,1] (data range 2) or numpy in [0,1] (see evaluate.features).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mammosynth.errors import MammosynthError
from mammosynth.evaluate.features import pick_device, to_model_range

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03


def msssim_scales(size: int, window: int = WINDOW_SIZE) -> int:
    """Number of scales used for images whose shorter side is ``size`` px (1..5)."""
    scales = 1
    while scales < len(MSSSIM_WEIGHTS) and size // (2 ** scales) >= window:
        scales += 1
    return scales


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g


def _band_matrix(n: int, g: torch.Tensor) -> torch.Tensor:
    """(n, n-k+1) matrix M with (v @ M)[j] = sum_t g[t] v[j+t]: 'valid' 1-D filtering as a matmul."""
    k = g.numel()
    m = torch.zeros(n, n - k + 1, dtype=g.dtype, device=g.device)
    cols = torch.arange(n - k + 1, device=g.device)
    for t in range(k):
        m[cols + t, cols] = g[t]
    return m


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter of (B,C,H,W) -> (B,C,H-k+1,W-k+1).

    Done as two banded matrix products, much faster on CPU than a 1-channel conv2d.
    """
    rows = _band_matrix(x.shape[-2], g)
    cols = _band_matrix(x.shape[-1], g)
    return rows.T @ x @ cols


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and mean contrast-structure term: (B,), (B,)."""
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mu_x ** 2
    syy = _filter(y * y, g) - mu_y ** 2
    sxy = _filter(x * y, g) - mu_x * mu_y
    cs_map = (2 * sxy + c2) / (sxx + syy + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1) * cs_map
    return ssim_map.flatten(1).mean(1), cs_map.flatten(1).mean(1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, scales: int | None = None) -> torch.Tensor:
    """MS-SSIM of two batches (B,C,H,W) (same shape) -> (B,) in [0,1]; 1 for identical images.

    ``data_range``: max - min of the pixel range (2 for [-1,1]). ``scales``: override the automatic count.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise MammosynthError(f"MS-SSIM needs two (B,C,H,W) batches of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    x, y = x.double(), y.double()  # float64: the power product is sensitive near 1
    size = min(x.shape[-2:])
    window = min(WINDOW_SIZE, size if size % 2 else size - 1)
    m = scales or msssim_scales(size, window)
    weights = torch.tensor(MSSSIM_WEIGHTS[:m], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    g = _gaussian_window(window, WINDOW_SIGMA, x.device, x.dtype)
    result = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for j in range(m):
        ssim_val, cs_val = _ssim_cs(x, y, g, data_range)
        if j == m - 1:
            result = result * ssim_val.clamp_min(0) ** weights[j]
        else:
            result = result * cs_val.clamp_min(0) ** weights[j]
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return result.float()


@dataclass
class Diversity:
    """Mean (and std) of 1 - MS-SSIM over random within-set pairs."""

    mean: float
    std: float
    n_pairs: int
    n_images: int
    scales: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def msssim_diversity(images, n_pairs: int = 1000, seed: int = 0, batch_size: int = 256,
                     device: str | torch.device | None = None) -> Diversity:
    """MS-SSIM diversity of one set: mean 1 - MS-SSIM over ``n_pairs`` random pairs i != j.

    Uses every distinct pair when the set has fewer than ``n_pairs`` of them.
    """
    x = to_model_range(images)
    n = x.shape[0]
    if n < 2:
        raise MammosynthError(f"MS-SSIM diversity needs at least 2 images, got {n}")
    rng = np.random.default_rng(seed)
    total = n * (n - 1) // 2
    if total <= n_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        i = rng.integers(0, n, n_pairs)
        j = (i + rng.integers(1, n, n_pairs)) % n  # j != i by construction
    dev = pick_device(device)
    values = []
    for s in range(0, len(i), batch_size):
        a = x[torch.from_numpy(i[s:s + batch_size])].to(dev)
        b = x[torch.from_numpy(j[s:s + batch_size])].to(dev)
        values.append(1.0 - ms_ssim(a, b).cpu())
    v = torch.cat(values).double()
    return Diversity(mean=float(v.mean()), std=float(v.std()) if v.numel() > 1 else 0.0, n_pairs=int(v.numel()),
                     n_images=n, scales=msssim_scales(min(x.shape[-2:])))


__all__ = ["ms_ssim", "msssim_scales", "msssim_diversity", "Diversity", "MSSSIM_WEIGHTS"]
