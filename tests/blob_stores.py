"""Tiny lesion stores for the infilling methods' tests (GAN and diffusion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammosynth.data.birads import Label
from mammosynth.data.records import LesionRecord
from mammosynth.data.store import StoreWriter


def blob_store(path: Path, n: int = 10, size: int = 32) -> Path:
    """Tiny store: smooth tissue with a brighter elliptical mass and its mask, two shapes."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    with StoreWriter(path, patch_size=size, provenance={"source": "test-blobs"}) as w:
        for i in range(n):
            tissue = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2)
            tissue = 0.35 + 0.12 * tissue / (np.abs(tissue).max() + 1e-6)
            cy, cx = size / 2 + rng.uniform(-2, 2, 2)
            a, b = rng.uniform(0.18, 0.3, 2) * size
            mask = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 < 1
            img = np.clip(tissue + 0.4 * ndimage.gaussian_filter(mask.astype(float), 1.0), 0, 1).astype(np.float32)
            shape = ("OVAL", "oval") if i % 2 else ("ROUND", "round")
            w.add_lesion(LesionRecord(
                source="test", source_id=f"L{i}", patient_id=f"P{i}", patch=img, mask=mask,
                shape=Label(shape[0], shape[1], "exact"), margin=Label("SPICULATED", "spiculated", "exact"),
                pathology=Label("MALIGNANT", "malignant", "exact")))
    return path
