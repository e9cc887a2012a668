"""Read a synthetic set (``images/``, ``masks/``, ``manifest.csv``) as lesion patches.

Patch sets (``generate``) are used whole. Full mammograms with inserted lesions (``insert``)
are cropped around each lesion with the store's context padding, so real and synthetic
patches are framed alike before any comparison.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammosynth.data.birads import LESION_TYPES

from mammosynth.data.records import DEFAULT_CONTEXT
from mammosynth.data.store import resize_image, resize_mask
from mammosynth.errors import DataError
from mammosynth.data.imaging import read_image
from mammosynth.synth.writer import load_png, read_manifest


@dataclass
class SyntheticPatches:
    images: np.ndarray  # (N, S, S) float32 [0, 1]
    masks: np.ndarray  # (N, S, S) bool (all False where the set has no mask)
    rows: list[dict[str, str]]  # manifest rows, aligned

    @property
    def lesion_types(self) -> np.ndarray:
        """(N,) lesion type of each image (:func:`row_lesion_type`), as str."""
        return np.asarray([row_lesion_type(r) for r in self.rows], dtype=object)

    def subset(self, keep: np.ndarray) -> "SyntheticPatches":
        """The images where the boolean ``keep`` is True."""
        keep = np.asarray(keep, bool)
        return SyntheticPatches(self.images[keep], self.masks[keep], [r for r, k in zip(self.rows, keep) if k])


def _extra(row: dict[str, str]) -> dict:
    try:
        extra = json.loads(row.get("extra") or "{}")
    except (TypeError, ValueError):
        return {}
    return extra if isinstance(extra, dict) else {}


def row_label(row: dict[str, str], key: str) -> str:
    """A manifest row's label ``key`` (``morphology``, ``distribution``, ``lesion_type``): its
    own column, else the same key in its ``extra`` JSON (sets written before those columns); "" if none."""
    value = (row.get(key) or "").strip()
    return value or str(_extra(row).get(key) or "").strip()


def row_lesion_type(row: dict[str, str], manifest: str | Path = "manifest.csv") -> str:
    """A synthetic image's lesion type: its ``lesion_type`` column (or ``extra`` key), else its
    COCO ``category`` column, else mass (every set written before lesion types held masses).
    Raises DataError for a type outside :data:`LESION_TYPES`."""
    t = row_label(row, "lesion_type") or (row.get("category") or "").strip() or "mass"
    if t not in LESION_TYPES:
        raise DataError(f"{manifest}: {row.get('file', '?')} has lesion type {t!r}; expected one of {', '.join(LESION_TYPES)}")
    return t


def crop_around(image: np.ndarray, mask: np.ndarray, context: float = DEFAULT_CONTEXT) -> tuple[np.ndarray, np.ndarray]:
    """Square crop centred on the mask's bbox, side = (1 + 2 context) x its larger side,
    padded with zeros at the image border."""
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    side = int(round(max(np.ptp(ys) + 1, np.ptp(xs) + 1) * (1 + 2 * context)))
    y0, x0 = int(round(cy - side / 2)), int(round(cx - side / 2))
    out_i = np.zeros((side, side), np.float32)
    out_m = np.zeros((side, side), bool)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + side, image.shape[0]), min(x0 + side, image.shape[1])
    out_i[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    out_m[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = mask[sy0:sy1, sx0:sx1]
    return out_i, out_m


def load_synthetic_patches(directory: str | Path, size: int, limit: int | None = None,
                           lesion_type: str | None = None) -> SyntheticPatches:
    """All images of a synthetic set as (N, size, size) patches with their requested masks;
    with ``lesion_type`` only the rows of that type (:func:`row_lesion_type`), before ``limit``."""
    d = Path(directory)
    if not (d / "manifest.csv").exists():
        raise DataError(f"{d}: not a synthetic set (no manifest.csv); write one with `mammosynth generate` or `insert`")
    rows = read_manifest(d)
    types = [row_lesion_type(r, d / "manifest.csv") for r in rows]
    if lesion_type is not None:
        present = sorted(set(types))
        rows = [r for r, t in zip(rows, types) if t == lesion_type]
        if not rows:
            raise DataError(f"{d / 'manifest.csv'}: no synthetic image of lesion type {lesion_type!r} (the set holds "
                            f"{', '.join(present) or 'no images'}); choose --lesion-type among those or all")
    rows = rows[:limit]
    images, masks = [], []
    for r in rows:
        path = d / r["file"]
        if not path.exists():
            raise DataError(f"{path}: listed in manifest.csv but missing")
        # native-format insert outputs (a source_file column: the user's own DICOM/PNG/TIFF/PGM
        # written back at its dtype) are normalised as ingest normalises them; mammosynth's own
        # 16-bit PNGs hold [0, 1] scaled to 0..65535
        img = read_image(path) if r.get("source_file") else load_png(path)
        mpath = d / r.get("mask_file", "") if r.get("mask_file") else None
        mask = load_png(mpath) > 0.5 if mpath is not None and mpath.exists() else np.zeros(img.shape, bool)
        if mask.any():
            ys, xs = np.nonzero(mask)
            extent = max(np.ptp(ys), np.ptp(xs)) + 1
            if extent < 0.4 * min(img.shape):  # a lesion inside a larger image: frame it like a store patch
                img, mask = crop_around(img, mask)
        images.append(resize_image(img, (size, size)))
        masks.append(resize_mask(mask, (size, size)) if mask.any() else np.zeros((size, size), bool))
    if not images:
        raise DataError(f"{d}: the synthetic set holds no images")
    return SyntheticPatches(np.stack(images), np.stack(masks), rows)
