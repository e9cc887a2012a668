"""Writes a synthetic set: ``images/`` (16-bit PNG), ``masks/`` (8-bit PNG, 0/255),
``annotations.json`` (COCO, loads in pycocotools) and ``manifest.csv`` (one row per image).

Every command that writes a synthetic set (``generate``, ``interpolate``, ``insert``, ...)
goes through :class:`SyntheticSetWriter`, so the format is written once. Image and mask PNGs
are written atomically as they come; the JSON and CSV are written atomically on ``close``.

``insert`` writes the user's own mammograms back in their own format
(:meth:`SyntheticSetWriter.add_native`: DICOM, PNG, TIFF or PGM at native shape and dtype),
optionally with YOLO labels (``labels/<stem>.txt``); generated images may also be written as
DICOM (``dicom/``, one study and series per set, see :mod:`mammosynth.synth.dicom`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mammosynth.io import atomic_path, write_json_atomic, write_text_atomic

MANIFEST_COLUMNS = (
    "file", "mask_file", "method", "run", "seed", "shape", "margin", "pathology",
    "bbox_x", "bbox_y", "bbox_w", "bbox_h", "source_ids", "weights", "extra",
    # insert: where the image came from and the first lesion's physical size and centre (pixels)
    "source_file", "pixel_spacing_mm", "lesion_h_mm", "lesion_w_mm", "center_x", "center_y",
)
#: Image formats :meth:`SyntheticSetWriter.add_native` writes, and their file suffixes.
NATIVE_SUFFIXES = {"png": ".png", "tiff": ".tif", "pgm": ".pgm", "dicom": ".dcm"}
CATEGORIES = [{"id": 1, "name": "mass", "supercategory": "lesion"}]


def save_png16(path: str | Path, img: np.ndarray) -> None:
    """(H, W) float in [0, 1] -> 16-bit grayscale PNG, atomically."""
    arr = np.round(np.clip(np.asarray(img, np.float64), 0, 1) * 65535).astype(np.uint16)
    with atomic_path(path, ".png") as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def save_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """(H, W) bool -> 8-bit PNG with 0/255, atomically."""
    with atomic_path(path, ".png") as tmp:
        # compress_level 1: a full-field mask is mostly zeros, so it stays small and encodes ~3x faster
        Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255).save(tmp, format="PNG", compress_level=1)


def save_dicom(path: str | Path, img: np.ndarray, description: str = "", seed: int | None = None,
               uids: Any = None, pixel_spacing_mm: float | None = None) -> None:
    """(H, W) float in [0, 1] -> 16-bit MONOCHROME2 Secondary Capture DICOM marked SYNTHETIC,
    atomically. ``uids`` (a :class:`mammosynth.synth.dicom.SetUIDs`) puts the files of one set
    into one study and series; see :func:`mammosynth.synth.dicom.secondary_capture`."""
    from mammosynth.synth.dicom import SetUIDs, save_dataset, secondary_capture

    arr = np.round(np.clip(np.asarray(img, np.float64), 0, 1) * 65535).astype(np.uint16)
    ds = secondary_capture(arr, uids if uids is not None else SetUIDs(), description=description, seed=seed,
                           pixel_spacing_mm=pixel_spacing_mm)
    save_dataset(path, ds)


def save_native(path: str | Path, pixels: np.ndarray, fmt: str) -> None:
    """(H, W) pixels as stored (uint8/uint16/float) -> PNG, TIFF or PGM at that dtype, atomically."""
    arr = np.ascontiguousarray(pixels)
    suffix = NATIVE_SUFFIXES[fmt]
    with atomic_path(path, suffix) as tmp:
        if fmt == "tiff" and arr.dtype.kind == "f":
            import tifffile

            tifffile.imwrite(tmp, arr.astype(np.float32))
            return
        Image.fromarray(arr).save(tmp, format={"png": "PNG", "tiff": "TIFF", "pgm": "PPM"}[fmt])


def yolo_lines(boxes: list[tuple[int, int, int, int]], shape_hw: tuple[int, int], category: int = 0) -> str:
    """YOLO label text: one ``class cx cy w h`` line per (x, y, w, h) pixel box, normalised to [0, 1]."""
    H, W = shape_hw
    return "".join(f"{category} {(x + w / 2) / W:.6f} {(y + h / 2) / H:.6f} {w / W:.6f} {h / H:.6f}\n"
                   for x, y, w, h in boxes)


def load_png(path: str | Path) -> np.ndarray:
    """PNG (8 or 16 bit grayscale) -> (H, W) float32 in [0, 1]."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=-1)
    scale = 65535.0 if arr.dtype == np.uint16 or arr.max() > 255 else 255.0
    return arr.astype(np.float32) / scale


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight (x, y, w, h) box of a binary mask in pixels, or None if empty."""
    rows = np.flatnonzero(np.asarray(mask).any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(np.asarray(mask)[rows[0]: rows[-1] + 1].any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a binary mask, with ``counts`` as str so it serialises to JSON.

    The column-major runs are counted inside the mask's bounding box only (a full-field
    mammogram's mask is mostly empty, and a Fortran-order copy of 13 megapixels costs more
    than the rest of the encoding), then compressed by pycocotools."""
    from pycocotools import mask as mask_utils

    mask = np.asarray(mask)
    H, W = mask.shape
    bbox = mask_bbox(mask)
    if bbox is None:
        runs = [H * W]
    else:
        x, y, w, h = bbox
        cols = np.zeros((w, H), np.uint8)  # the box's columns, each a full image column
        cols[:, y: y + h] = mask[y: y + h, x: x + w].T
        flat = cols.ravel()
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        edges = np.concatenate([[0], change, [flat.size]])
        lengths = np.diff(edges)  # runs alternate 0/1; COCO's first run counts zeros
        if flat[0]:
            lengths = np.concatenate([[0], lengths])
        lengths[0] += x * H  # the empty columns before the box
        runs = lengths.tolist()
        after = (W - x - w) * H  # the empty columns after it
        if flat[-1] and after:
            runs.append(after)
        elif not flat[-1]:
            runs[-1] += after
    rle = mask_utils.frPyObjects({"counts": [int(r) for r in runs], "size": [H, W]}, H, W)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@dataclass
class Lesion:
    """One annotated lesion inside a written image."""

    mask: np.ndarray  # (H, W) bool, in image coordinates
    shape: str | None = None
    margin: str | None = None
    pathology: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


class SyntheticSetWriter:
    """Accumulates images and their lesions; ``close()`` writes the COCO JSON and manifest."""

    def __init__(self, out_dir: str | Path, method: str, run: str | None = None, description: str = "",
                 dicom: bool = False, overwrite: bool = False) -> None:
        self.out = Path(out_dir)
        (self.out / "images").mkdir(parents=True, exist_ok=True)
        (self.out / "masks").mkdir(parents=True, exist_ok=True)
        self.method = method
        self.run = run or ""
        self.description = description
        self.dicom = dicom
        self.overwrite = overwrite
        if dicom:
            (self.out / "dicom").mkdir(parents=True, exist_ok=True)
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []

    def __enter__(self) -> "SyntheticSetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Even after an error, write what is complete so nothing already written is lost.
        self.close()

    def add(
        self,
        image: np.ndarray,
        lesions: list[Lesion] | None = None,
        seed: int | None = None,
        source_ids: list[str] | None = None,
        weights: list[float] | None = None,
        extra: dict[str, Any] | None = None,
        stem: str | None = None,
    ) -> str:
        """Write one image (float [0,1], (H,W)) and its lesions; returns the image file name."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"expected a (H, W) grayscale image, got shape {image.shape}")
        lesions = lesions or []
        self._check_lesions(lesions, image.shape)
        stem = stem or f"{self.method}_{len(self._images) + 1:06d}"
        fname = f"{stem}.png"
        save_png16(self._file("images", fname), image)
        if self.dicom:
            spacing = (extra or {}).get("pixel_spacing_mm")
            save_dicom(self._file("dicom", f"{stem}.dcm"), image, description=f"method={self.method} run={self.run}",
                       seed=seed, uids=self._set_uids(), pixel_spacing_mm=float(spacing) if spacing else None)
        self._register(fname, stem, image.shape, lesions, seed, source_ids, weights, extra)
        return fname

    def add_native(
        self,
        pixels: np.ndarray,
        fmt: str,
        lesions: list[Lesion],
        *,
        seed: int | None = None,
        source_ids: list[str] | None = None,
        extra: dict[str, Any] | None = None,
        stem: str,
        dicom_source: Any = None,
        pixel_spacing_mm: float | None = None,
        source_file: str = "",
        row: dict[str, Any] | None = None,
        yolo: bool = False,
        note: str = "",
    ) -> str:
        """Write one image at native shape and dtype in format ``fmt`` (png | tiff | pgm | dicom)
        with its lesions (masks in the image's own pixel frame); returns the image file name.

        DICOM: with ``dicom_source`` (the original pydicom Dataset) the file is that dataset
        with new pixels, new instance/series UIDs and the synthetic-lesion marker
        (:func:`mammosynth.synth.dicom.derived_dicom`); without one, a Secondary Capture.
        ``row`` adds manifest columns (``lesion_h_mm``, ``center_x``, ...); ``yolo`` also writes
        ``labels/<stem>.txt``.
        """
        if fmt not in NATIVE_SUFFIXES:
            raise ValueError(f"unknown image format {fmt!r}; use one of {', '.join(NATIVE_SUFFIXES)}")
        pixels = np.asarray(pixels)
        if pixels.ndim != 2:
            raise ValueError(f"expected a (H, W) grayscale image, got shape {pixels.shape}")
        self._check_lesions(lesions, pixels.shape)
        fname = f"{stem}{NATIVE_SUFFIXES[fmt]}"
        if fmt == "dicom":
            from mammosynth.synth.dicom import derived_dicom, save_dataset, secondary_capture

            if dicom_source is not None:
                ds = derived_dicom(dicom_source, pixels, self._set_uids(), f"mammosynth {self.method} run={self.run}", note)
            else:
                arr = pixels if pixels.dtype in (np.uint8, np.uint16) else np.round(np.clip(pixels, 0, 65535)).astype(np.uint16)
                ds = secondary_capture(arr, self._set_uids(), description=f"method={self.method} run={self.run}. {note}",
                                       seed=seed, pixel_spacing_mm=pixel_spacing_mm)
            save_dataset(self._file("images", fname), ds)
        else:
            save_native(self._file("images", fname), pixels, fmt)
        if yolo:
            boxes = [b for b in (mask_bbox(les.mask) for les in lesions) if b is not None]
            write_text_atomic(self._file("labels", f"{stem}.txt"), yolo_lines(boxes, pixels.shape))
        self._register(fname, stem, pixels.shape, lesions, seed, source_ids, None, extra,
                       image_extra={"source_file": source_file, "pixel_spacing_mm": pixel_spacing_mm},
                       row={"source_file": source_file, "pixel_spacing_mm": "" if pixel_spacing_mm is None else pixel_spacing_mm,
                            **(row or {})})
        return fname

    def write_json(self, name: str, obj: Any) -> None:
        """Write a JSON file into the set (e.g. ``insert_report.json``), atomically."""
        write_json_atomic(self._file(name), obj)

    def write_yolo_dataset(self) -> None:
        """``yolo.yaml`` for detection libraries that read YOLO labels (images/ beside labels/)."""
        write_text_atomic(self._file("yolo.yaml"), "# mammosynth synthetic set: YOLO labels in labels/, one line per lesion\n"
                          "path: .\ntrain: images\nval: images\nnames:\n  0: mass\n")

    # -- one place for paths and bookkeeping -----------------------------------------
    def _file(self, *parts: str) -> Path:
        """Path of a file of the set; every file the writer makes is placed through here."""
        return self.out.joinpath(*parts)

    def _set_uids(self) -> Any:
        """UIDs shared by this set's DICOM files (one study; one series per source series)."""
        uids = getattr(self, "_dicom_uids", None)
        if uids is None:
            from mammosynth.synth.dicom import SetUIDs

            uids = self._dicom_uids = SetUIDs()
        return uids

    @staticmethod
    def _check_lesions(lesions: list[Lesion], shape: tuple[int, ...]) -> None:
        for les in lesions:
            if les.mask.shape != tuple(shape):
                raise ValueError(f"lesion mask shape {les.mask.shape} differs from image shape {tuple(shape)}")

    def _register(self, fname: str, stem: str, shape: tuple[int, ...], lesions: list[Lesion], seed: int | None,
                  source_ids: list[str] | None, weights: list[float] | None, extra: dict[str, Any] | None,
                  image_extra: dict[str, Any] | None = None, row: dict[str, Any] | None = None) -> None:
        """Write the mask PNG and record the COCO image, its annotations and the manifest row."""
        image_id = len(self._images) + 1
        h, w = shape
        union = np.zeros((h, w), bool)
        first_bbox: tuple[int, int, int, int] | None = None
        for les in lesions:
            bbox = mask_bbox(les.mask)
            if bbox is None:
                continue
            first_bbox = first_bbox or bbox
            union |= les.mask
            attrs = {"shape": les.shape, "margin": les.margin, "pathology": les.pathology,
                     "method": self.method, "run": self.run, "seed": seed}
            attrs.update(les.attributes)
            self._annotations.append({
                "id": len(self._annotations) + 1,
                "image_id": image_id,
                "category_id": 1,
                "bbox": [float(v) for v in bbox],
                "area": float(les.mask.sum()),
                "segmentation": mask_to_rle(les.mask),
                "iscrowd": 0,
                "attributes": attrs,
            })
        mask_name = f"{stem}_mask.png"
        save_mask_png(self._file("masks", mask_name), union)
        self._images.append({"id": image_id, "file_name": f"images/{fname}", "width": int(w), "height": int(h),
                             "mask_file": f"masks/{mask_name}", **(image_extra or {})})
        first = lesions[0] if lesions else Lesion(mask=union)
        bx = first_bbox or ("", "", "", "")
        self._rows.append({
            "file": f"images/{fname}", "mask_file": f"masks/{mask_name}", "method": self.method,
            "run": self.run, "seed": "" if seed is None else seed,
            "shape": first.shape or "", "margin": first.margin or "", "pathology": first.pathology or "",
            "bbox_x": bx[0], "bbox_y": bx[1], "bbox_w": bx[2], "bbox_h": bx[3],
            "source_ids": ";".join(source_ids or []),
            "weights": ";".join(f"{x:.6g}" for x in (weights or [])),
            "extra": json.dumps(extra or {}, sort_keys=True, default=str),
            **(row or {}),
        })

    def close(self) -> Path:
        coco = {
            "info": {"description": self.description or f"mammosynth synthetic set ({self.method})",
                     "version": "1.0", "contributor": "mammosynth"},
            "licenses": [],
            "images": self._images,
            "annotations": self._annotations,
            "categories": CATEGORIES,
        }
        write_json_atomic(self.out / "annotations.json", coco, indent=None)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS))
        writer.writeheader()
        writer.writerows(self._rows)
        write_text_atomic(self.out / "manifest.csv", buf.getvalue())
        return self.out


def read_manifest(out_dir: str | Path) -> list[dict[str, str]]:
    """Rows of ``manifest.csv`` of a synthetic set."""
    with open(Path(out_dir) / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))
