"""Operations on latent vectors / visual features (seed 000 section 2.2-3.4, eq. 2).

A visual feature is a (D,) tensor (D = 1024 for birads-aegan). Everything here is pure: it
takes features and weights and returns features, so any method with a latent space can
use it. Convex combinations follow eq. 2: ``v = sum_k alpha_k v_k`` with ``alpha_k >= 0``
and ``sum_k alpha_k = 1``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mammosynth.errors import ConfigError

#: Largest allowed extrapolation beyond a pair's ends, as a fraction of the pair distance.
MAX_EXTRAPOLATION = 0.5


def convex_weights(n: int, step: float = 0.05, rng: np.random.Generator | None = None) -> np.ndarray:
    """Random convex weights for ``n`` features on a ``step`` grid (section 3.4: 20 features,
    "randomly initialized in the unit of 0.05"). Returns (n,) float64, each a multiple of
    ``step``, summing to 1. Draws uniformly over all such weight vectors (stars and bars)."""
    if n < 1:
        raise ConfigError(f"need at least one feature to combine, got {n}")
    units = round(1.0 / step)
    if units < 1 or abs(units * step - 1.0) > 1e-6:
        raise ConfigError(f"weight step must divide 1 (e.g. 0.05), got {step}")
    rng = rng if rng is not None else np.random.default_rng()
    bars = np.sort(rng.choice(units + n - 1, n - 1, replace=False))
    parts = np.diff(np.concatenate([[-1], bars, [units + n - 1]])) - 1
    return parts.astype(np.float64) / units


def pair_positions(steps: int = 8, extrapolate: float = 0.0) -> np.ndarray:
    """Positions t along a pair (0 = first, 1 = second): both ends and ``steps`` (8, section
    3.3) equidistant points between. ``extrapolate`` e in (0, 0.5] adds points beyond each
    end, at the same spacing, up to t = -e and 1 + e (at least one each side). (K,) float64."""
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    if not 0.0 <= extrapolate <= MAX_EXTRAPOLATION:
        raise ConfigError(f"extrapolate must be in [0, {MAX_EXTRAPOLATION}] (a bounded step beyond the pair), got {extrapolate}")
    inner = np.linspace(0.0, 1.0, steps + 2)
    if extrapolate == 0.0:
        return inner
    spacing = 1.0 / (steps + 1)
    n_out = max(1, int(math.floor(extrapolate / spacing + 1e-9)))
    out = np.linspace(extrapolate / n_out, extrapolate, n_out)
    return np.concatenate([-out[::-1], inner, 1.0 + out])


def triangle_weights(divisions: int = 4) -> np.ndarray:
    """Barycentric grid over three features: all (i, j, k) / divisions with i + j + k =
    divisions, row by row from the first vertex. divisions = 4 gives 15 points: the 3
    vertices and the 12 interpolated points of section 3.3 (Fig. 4). (K, 3) float64."""
    if divisions < 1:
        raise ConfigError(f"divisions must be >= 1, got {divisions}")
    rows = []
    for i in range(divisions, -1, -1):
        for j in range(divisions - i, -1, -1):
            rows.append((i, j, divisions - i - j))
    return np.asarray(rows, np.float64) / divisions


def triangle_row_lengths(divisions: int = 4) -> list[int]:
    """Points per row of :func:`triangle_weights` (1, 2, ..., divisions + 1)."""
    return list(range(1, divisions + 2))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of directions with the norm interpolated linearly.

    a, b (D,); t (K,) (values outside [0, 1] extrapolate along the great circle) -> (K, D).
    Falls back to linear interpolation when a and b are (anti)parallel.
    """
    a64, b64, t64 = a.double(), b.double(), t.double().reshape(-1, 1)
    na, nb = a64.norm(), b64.norm()
    if na == 0 or nb == 0:
        return ((1 - t64) * a64 + t64 * b64).to(a.dtype)
    ua, ub = a64 / na, b64 / nb
    omega = torch.arccos((ua * ub).sum().clamp(-1.0, 1.0))
    if float(torch.sin(omega)) < 1e-6:
        direction = (1 - t64) * ua + t64 * ub
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    else:
        direction = (torch.sin((1 - t64) * omega) * ua + torch.sin(t64 * omega) * ub) / torch.sin(omega)
    norm = (1 - t64) * na + t64 * nb
    return (direction * norm).to(a.dtype)


def interpolate_pair(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, spherical: bool = False) -> torch.Tensor:
    """Features at positions t between a (t=0) and b (t=1): (D,), (D,), (K,) -> (K, D)."""
    if spherical:
        return slerp(a, b, t)
    t = t.to(a.dtype).reshape(-1, 1)
    return (1 - t) * a + t * b


def combine(features: torch.Tensor, weights: torch.Tensor, spherical: bool = False) -> torch.Tensor:
    """Weighted combinations of N features (eq. 2): (N, D), (K, N) -> (K, D).

    ``spherical``: combine unit directions, renormalise, and give the result the weighted
    mean norm (the N-feature analogue of slerp; equals slerp's endpoints at the vertices).
    """
    if features.dim() != 2 or weights.dim() != 2 or weights.shape[1] != features.shape[0]:
        raise ConfigError(f"weights {tuple(weights.shape)} do not fit features {tuple(features.shape)}")
    w = weights.to(torch.float64)
    f = features.to(torch.float64)
    if not spherical:
        return (w @ f).to(features.dtype)
    norms = f.norm(dim=1, keepdim=True)
    units = f / norms.clamp_min(1e-12)
    direction = w @ units
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (direction * (w @ norms)).to(features.dtype)


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) float64 signed Euclidean distance in pixels: < 0 inside, > 0 outside."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.full(mask.shape, float(max(mask.shape)))
    if mask.all():
        return np.full(mask.shape, -float(max(mask.shape)))
    return ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)


def blend_masks(masks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Masks for combined features: the same weights applied to the sources' signed distance
    maps, thresholded at 0 (shape interpolation that returns each source mask at its vertex).

    masks (N, H, W) bool; weights (K, N) (may be negative when extrapolating) -> (K, H, W) bool.
    An approximation of the decoded lesion's outline: the decoder itself outputs no mask.
    """
    masks = np.asarray(masks, bool)
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 2 or weights.shape[1] != masks.shape[0]:
        raise ConfigError(f"weights {weights.shape} do not fit {masks.shape[0]} masks")
    used = np.flatnonzero(np.abs(weights).sum(0) > 0)
    sdf = np.stack([signed_distance(masks[i]) for i in used])  # only sources with a non-zero weight
    return np.einsum("kn,nhw->khw", weights[:, used], sdf) < 0


def save_strip(images: Sequence[np.ndarray] | np.ndarray | torch.Tensor, path: str | Path, nrow: int | None = None,
               pad: int = 2, row_lengths: Sequence[int] | None = None) -> Path:
    """Write images side by side as one 8-bit grayscale PNG, atomically.

    ``images``: K arrays (H, W) in [0, 1] (or a (K,H,W) / (K,1,H,W) array in [0, 1]).
    ``nrow``: images per row (default: all in one row). ``row_lengths``: explicit images per
    row (e.g. a triangle 1, 2, 3, ... from :func:`triangle_row_lengths`), rows centred.
    """
    from PIL import Image

    from mammosynth.io import atomic_path

    arr = [np.asarray(im.detach().cpu() if isinstance(im, torch.Tensor) else im, np.float32).squeeze() for im in images]
    if not arr:
        raise ConfigError("save_strip: no images to write")
    h, w = arr[0].shape
    if row_lengths is None:
        per = nrow or len(arr)
        row_lengths = [min(per, len(arr) - i) for i in range(0, len(arr), per)]
    if sum(row_lengths) != len(arr):
        raise ConfigError(f"save_strip: row lengths {list(row_lengths)} do not add up to {len(arr)} images")
    cols = max(row_lengths)
    canvas = np.ones((len(row_lengths) * (h + pad) + pad, cols * (w + pad) + pad), np.float32)
    k = 0
    for r, n_in_row in enumerate(row_lengths):
        x0 = pad + (cols - n_in_row) * (w + pad) // 2
        for c in range(n_in_row):
            y, x = pad + r * (h + pad), x0 + c * (w + pad)
            canvas[y:y + h, x:x + w] = np.clip(arr[k], 0, 1)
            k += 1
    with atomic_path(path, ".png") as tmp:
        Image.fromarray(np.round(canvas * 255).astype(np.uint8)).save(tmp, format="PNG")
    return Path(path)
