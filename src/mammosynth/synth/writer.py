"""Writes a synthetic set: ``images/`` (16-bit PNG), ``masks/`` (8-bit PNG, 0/255),
``annotations.json`` (COCO, loads in pycocotools) and ``manifest.csv`` (one row per image).

Every command that writes a synthetic set (``generate``, ``interpolate``, ``insert``, ...)
goes through :class:`SyntheticSetWriter`, so the format is written once. Image and mask PNGs
are written atomically as they come; the JSON and CSV are written atomically on ``close``.
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
)
CATEGORIES = [{"id": 1, "name": "mass", "supercategory": "lesion"}]


def save_png16(path: str | Path, img: np.ndarray) -> None:
    """(H, W) float in [0, 1] -> 16-bit grayscale PNG, atomically."""
    arr = np.round(np.clip(np.asarray(img, np.float64), 0, 1) * 65535).astype(np.uint16)
    with atomic_path(path, ".png") as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def save_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """(H, W) bool -> 8-bit PNG with 0/255, atomically."""
    with atomic_path(path, ".png") as tmp:
        Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255).save(tmp, format="PNG")


def save_dicom(path: str | Path, img: np.ndarray, description: str = "", seed: int | None = None) -> None:
    """(H, W) float in [0, 1] -> 16-bit MONOCHROME2 DICOM (Secondary Capture), atomically.

    The file is marked as synthetic so no one mistakes it for a patient image: ImageType
    DERIVED/SECONDARY/SYNTHETIC, SeriesDescription and ImageComments say so, patient fields
    are placeholders, and fresh UIDs are generated.
    """
    import datetime as _dt

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    arr = np.round(np.clip(np.asarray(img, np.float64), 0, 1) * 65535).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    now = _dt.datetime.now(_dt.timezone.utc)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "MG"
    ds.ConversionType = "SYN"  # synthetic image (DICOM PS3.3 C.8.6.1)
    ds.ImageType = ["DERIVED", "SECONDARY", "SYNTHETIC"]
    ds.PatientName, ds.PatientID = "SYNTHETIC^MAMMOSYNTH", "SYNTHETIC"
    ds.SeriesDescription = "mammosynth synthetic image - not a patient image"
    ds.ImageComments = f"SYNTHETIC. {description}" + (f" seed={seed}" if seed is not None else "")
    ds.BurnedInAnnotation = "NO"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = arr.tobytes()
    with atomic_path(path, ".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)


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
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a binary mask, with ``counts`` as str so it serialises to JSON."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
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
                 dicom: bool = False) -> None:
        self.out = Path(out_dir)
        (self.out / "images").mkdir(parents=True, exist_ok=True)
        (self.out / "masks").mkdir(parents=True, exist_ok=True)
        self.method = method
        self.run = run or ""
        self.description = description
        self.dicom = dicom
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
        image_id = len(self._images) + 1
        stem = stem or f"{self.method}_{image_id:06d}"
        fname = f"{stem}.png"
        save_png16(self.out / "images" / fname, image)
        if self.dicom:
            save_dicom(self.out / "dicom" / f"{stem}.dcm", image, description=f"method={self.method} run={self.run}", seed=seed)
        h, w = image.shape
        union = np.zeros((h, w), bool)
        first_bbox: tuple[int, int, int, int] | None = None
        for les in lesions:
            if les.mask.shape != image.shape:
                raise ValueError(f"lesion mask shape {les.mask.shape} differs from image shape {image.shape}")
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
        save_mask_png(self.out / "masks" / mask_name, union)
        self._images.append({"id": image_id, "file_name": f"images/{fname}", "width": int(w), "height": int(h),
                             "mask_file": f"masks/{mask_name}"})
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
        })
        return fname

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
