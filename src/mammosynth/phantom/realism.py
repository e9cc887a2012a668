"""Image statistics that compare a phantom mammogram with real ones (issue #15).

All statistics are taken inside the breast of an image scaled to its maximum there (so a
16-bit FFDM, an 8-bit film and the phantom's [0, 1] compare):

* ``beta``: the radially averaged power-spectrum exponent of 128 px tiles that lie wholly in
  the breast more than ``skin_mm`` from its edge (:func:`power_spectrum_slope`);
* ``noise``: Immerkaer's (1996) fast noise estimate, the mean absolute response of the
  3x3 Laplacian-difference kernel (which cancels planes and most smooth texture), times
  sqrt(pi/2)/6, over pixels well inside the breast;
* ``p5`` / ``p50`` / ``p95``: intensity quantiles inside the breast;
* ``tile_cv``: the median over the same tiles of their standard deviation over their mean.

Real images need a breast mask: :func:`real_breast_mask` takes the largest bright
component (labels and markers on film are separate components and fall away).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from mammosynth.phantom.breast import power_spectrum_slope

def immerkaer_noise(image: np.ndarray, mask: np.ndarray) -> float:
    """Noise sd (image units) inside ``mask`` (eroded by 2 px so edges do not count), by
    Immerkaer's estimate (data.context.immerkaer_sd, in float64)."""
    import torch

    from mammosynth.data.context import immerkaer_sd

    inner = ndi.binary_erosion(mask, iterations=2)
    if not inner.any():
        return float("nan")
    sd = immerkaer_sd(torch.from_numpy(image.astype(np.float64))[None, None], torch.from_numpy(inner)[None, None])
    return float(sd[0])


def skin_depth_mm(mask: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Distance (mm) from each breast pixel to the breast edge; where the image border cuts
    through the breast (chest wall, axilla) is not skin."""
    pad = 8
    padded = np.pad(mask, pad, mode="edge")
    depth = ndi.distance_transform_edt(padded)[pad:-pad, pad:-pad]
    return (depth * spacing_mm).astype(np.float32)


def tiles_inside(mask: np.ndarray, depth_mm: np.ndarray, tile: int, skin_mm: float, step: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of ``tile`` px squares wholly inside ``mask`` and deeper than ``skin_mm``."""
    step = step or tile // 2
    ok = mask & (depth_mm > skin_mm)
    H, W = mask.shape
    # A summed-area table makes each "wholly inside" test O(1).
    sat = np.pad(ok.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    out = []
    for y in range(0, H - tile + 1, step):
        for x in range(0, W - tile + 1, step):
            if sat[y + tile, x + tile] - sat[y, x + tile] - sat[y + tile, x] + sat[y, x] == tile * tile:
                out.append((y, x))
    return out


def realism_stats(image: np.ndarray, mask: np.ndarray, spacing_mm: float, tile: int = 128,
                  skin_mm: float = 12.0) -> dict[str, float]:
    """The statistics of the module docstring for one image ((H, W), any range; ``mask`` bool)."""
    img = image.astype(np.float64)
    img = img / max(float(img[mask].max()), 1e-12)
    depth = skin_depth_mm(mask, spacing_mm)
    inner = mask & (depth > skin_mm)
    beta, n_roi = power_spectrum_slope(img, inner, roi=tile)
    corners = tiles_inside(mask, depth, tile, skin_mm)
    cvs = [float(img[y:y + tile, x:x + tile].std() / max(img[y:y + tile, x:x + tile].mean(), 1e-6)) for y, x in corners]
    p5, p50, p95 = np.percentile(img[mask], [5, 50, 95])
    return {
        "beta": beta, "n_tiles": n_roi, "noise": immerkaer_noise(img, inner),
        "p5": float(p5), "p50": float(p50), "p95": float(p95),
        "tile_cv": float(np.median(cvs)) if cvs else float("nan"),
    }


def real_breast_mask(image: np.ndarray, threshold: float | None = None, factor: int = 4) -> np.ndarray:
    """Breast region of a real mammogram, found on a ``factor``-times block-mean copy (which
    averages away film dust and scanner noise) and brought back to full size: above
    ``threshold`` (default: 8 % of the copy's 99.9th percentile), the largest connected
    component, holes filled, opened by 2 cells."""
    H, W = image.shape
    h, w = -(-H // factor), -(-W // factor)
    pad = np.pad(image.astype(np.float32), ((0, h * factor - H), (0, w * factor - W)), mode="edge")
    small = pad.reshape(h, factor, w, factor).mean(axis=(1, 3))
    thr = threshold if threshold is not None else 0.08 * float(np.percentile(small, 99.9))
    fg = ndi.binary_opening(small > thr, iterations=2)
    lab, n = ndi.label(fg)
    if n:
        fg = ndi.binary_fill_holes(lab == np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    return np.repeat(np.repeat(fg, factor, axis=0), factor, axis=1)[:H, :W]


def bin2(image: np.ndarray) -> np.ndarray:
    """2 x 2 block mean (trailing odd row/column dropped): half the resolution, as a detector
    binning would (noise sd halves for white noise)."""
    H, W = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    return image[:H, :W].reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3))
