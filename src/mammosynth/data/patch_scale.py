"""The physical scale of the lesion patches a model trains on, and how they were cut.

Every source cuts a lesion patch as a square window around the lesion's box, of side
``max(h, w) * (1 + 2 * context)`` source pixels (:func:`mammosynth.data.imaging.roi_window`),
and the store resizes it to S x S. A model that trains on those patches at its own side S_m
(after a random crop of ``crop_scale`` of the side) therefore sees lesions at

    mm per model pixel = patch_mm_per_px * S / S_m * crop fraction

which varies from lesion to lesion with the lesion's size and its image's spacing.
``insert`` cuts the same relative window around an insertion site and compares the target's
mm per model pixel with this range (see docs/insert.md).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mammosynth.data.records import DEFAULT_CONTEXT


def patch_scale_info(store_path: str | os.PathLike, model_size: int | None = None,
                     crop_scale: tuple[float, float] = (1.0, 1.0), split: str = "train") -> dict[str, Any]:
    """How the store's lesion patches were cut and the mm per model pixel a model trained on
    them saw (JSON-ready; saved in a run's ``config.json`` under ``data``).

    ``model_size``: the model's input side (default: the store's patch size);
    ``crop_scale``: the training crop's side fraction range (1, 1 = no crop).
    Returns ``{"patch_cut": {...}, "mm_per_model_px": {min, p05, median, p95, max, n} | None}``;
    ``mm_per_model_px`` is None when no lesion of ``split`` (or of any split) has a known spacing.
    """
    from mammosynth.data.store import Store

    with Store(store_path) as store:
        S = store.patch_size
        context = float((store.manifest.get("provenance") or {}).get("context", DEFAULT_CONTEXT))
        mm = store.patch_mm_per_px(split)
        if not np.isfinite(mm).any():
            mm = store.patch_mm_per_px(None)
    S_m = int(model_size or S)
    lo_crop, hi_crop = float(crop_scale[0]), float(crop_scale[1])
    info: dict[str, Any] = {
        "patch_cut": {
            "window": "square, centred on the lesion box",
            "context": context,  # padding per side, as a fraction of the lesion's larger side
            "lesion_fraction": round(1.0 / (1.0 + 2.0 * context), 6),  # larger lesion side / window side
            "store_patch_size": S,
            "model_size": S_m,
            "crop_scale": [lo_crop, hi_crop],
        },
        "mm_per_model_px": None,
    }
    mm = mm[np.isfinite(mm)].astype(np.float64) * (S / S_m)
    if len(mm):
        info["mm_per_model_px"] = {
            "min": float(mm.min() * lo_crop), "p05": float(np.percentile(mm, 5) * lo_crop),
            "median": float(np.median(mm) * (lo_crop + hi_crop) / 2.0),
            "p95": float(np.percentile(mm, 95) * hi_crop), "max": float(mm.max() * hi_crop), "n": int(len(mm)),
        }
    return info
