"""Scores for full-mammogram generators (mask-embedding, stylegan).

``mask_adherence``: how much of a generated image's breast signal lies inside the skin mask it
was generated for. Signal is intensity (air is 0 in mammosynth's normalised images, so a grey
background painted outside the breast counts against the score); the score is
sum(signal inside the mask) / sum(signal), 1 = everything inside. Real normals score ~1.
"""

from __future__ import annotations

import numpy as np


def mask_adherence(images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """(N, H, W) images in [0, 1] and their (N, H, W) skin masks -> mean/min fraction of
    the breast signal inside the mask, and the fraction of images at >= 0.95."""
    x = np.asarray(images, np.float64)
    m = np.asarray(masks, bool)
    if x.shape != m.shape or x.ndim != 3:
        raise ValueError(f"images {x.shape} and masks {m.shape} must both be (N, H, W)")
    signal = np.clip(x, 0, None)
    total = signal.sum(axis=(1, 2))
    inside = (signal * m).sum(axis=(1, 2))
    frac = np.where(total > 0, inside / np.maximum(total, 1e-12), 1.0)
    return {"mean": float(frac.mean()), "min": float(frac.min()), "fraction_at_least_0.95": float((frac >= 0.95).mean()),
            "n": int(len(frac))}
