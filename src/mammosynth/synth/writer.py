"""Writes a synthetic set: ``images/`` (16-bit PNG), ``masks/`` (8-bit PNG, 0/255),
``annotations.json`` (COCO, loads in pycocotools) and ``manifest.csv`` (one row per image).

Every command that writes a synthetic set (``generate``, ``interpolate``, ``insert``, ...)
goes through :class:`SyntheticSetWriter`, so the format is written once.

A set appears whole or not at all. The writer fills a hidden temporary sibling of the output
folder (``.NAME.mammosynth-partial-<host>-<pid>-<token>``, exposed as ``writer.work_dir``) and
``close()`` renames it onto ``NAME``: a killed run leaves no half set under ``NAME``, a failed
run (an exception inside ``with``) leaves no set folder at all. A non-empty ``NAME`` is refused
unless ``overwrite=True``; then the old set is moved aside only once the new one is complete,
and deleted after the new one is in place. Temporary siblings left by killed runs are removed
when the next writer for ``NAME`` starts (:func:`clean_stale_siblings`): only ours, recognised
by name, and only when their process is gone or they have been idle for a day.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mammosynth.errors import DataError
from mammosynth.io import atomic_path, fsync_dir, pid_alive, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

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


# -- the output folder: refused when in use, filled in a temporary sibling, renamed at the end --
#: A temporary sibling idle this long is stale even when its process id is alive (pids are
#: reused) or it was made on another host (its pid means nothing here).
STALE_AFTER_S = 24 * 3600.0
_PARTIAL, _REPLACED = "mammosynth-partial", "mammosynth-replaced"
_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>mammosynth-partial|mammosynth-replaced)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}$")
#: What makes a folder a synthetic set: ``--overwrite`` replaces only such folders.
_SET_ENTRIES = ("manifest.csv", "annotations.json", "images")


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _sibling(final: Path, kind: str) -> Path:
    return final.parent / f".{final.name}.{kind}-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"


def _last_activity(path: Path) -> float:
    """Newest change of the folder or of its image/mask folders (each written image touches them)."""
    times = []
    for p in (path, path / "images", path / "masks", path / "dicom"):
        try:
            st = p.stat()
        except OSError:
            continue
        times.append(st.st_mtime)
    return max(times, default=0.0)


def _real(out: str | os.PathLike) -> Path:
    # a symlinked output folder is replaced at its target, so the link keeps pointing at the set
    return Path(os.path.realpath(out))


def clean_stale_siblings(out: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``out`` that killed writers left behind; returns them.

    Only folders named by this module for ``out`` count, and only when their process is gone
    (same host) or they have been idle for :data:`STALE_AFTER_S`. If a run was killed between
    moving an old set aside and renaming its new one into place, the old set is put back.
    """
    final = _real(out)
    if not final.parent.is_dir():
        return []
    host, now, removed = _host_tag(), time.time(), []
    for p in sorted(final.parent.iterdir()):
        m = _SIBLING.match(p.name)
        if m is None or m["name"] != final.name or p.is_symlink() or not p.is_dir():
            continue
        dead = m["host"] == host and not pid_alive(int(m["pid"]))
        if not (dead or now - _last_activity(p) > STALE_AFTER_S):
            continue
        if m["kind"] == _REPLACED and not os.path.lexists(final):
            os.rename(p, final)
            log.warning("%s: restored the set that a killed run had moved aside", final)
            continue
        shutil.rmtree(p, ignore_errors=True)
        log.info("removed %s, left by a killed run", p)
        removed.append(p)
    return removed


def prepare_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check that a synthetic set may be written to ``out`` and clean its stale temporary
    siblings. Commands call it before any slow work, so a refusal comes at once; the writer
    calls it again. Returns the real path of ``out``.

    Raises DataError when ``out`` is a file, or a non-empty folder without ``overwrite``, or
    (with ``overwrite``) a non-empty folder that is not a synthetic set.
    """
    final = _real(out)
    if final.parent == final:
        raise DataError(f"{out}: cannot write a synthetic set to the root folder")
    if os.path.lexists(final) and not final.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if final.is_dir() and any(final.iterdir()):
        if not overwrite:
            raise DataError(f"{out}: output folder is not empty; pass --overwrite to replace it")
        if not any((final / name).exists() for name in _SET_ENTRIES):
            raise DataError(f"{out}: not a synthetic set (no manifest.csv, annotations.json or images/), so --overwrite "
                            "will not replace it; choose a new or empty folder")
        if _cwd().is_relative_to(final):
            raise DataError(f"{out}: holds the current folder, so it cannot be replaced; run from elsewhere")
    for parent in (final.parent, *final.parent.parents):
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise DataError(f"{out}: {parent} is not a folder")
            break
    clean_stale_siblings(final)
    return final


def _cwd() -> Path:
    try:
        return Path.cwd().resolve()
    except OSError:  # the current folder was deleted
        return Path("/nonexistent")


class SyntheticSetWriter:
    """Accumulates images and their lesions in a temporary sibling of ``out_dir``; ``close()``
    writes the COCO JSON and manifest there and renames the whole set onto ``out_dir``.

    Use it as a context manager: a clean exit closes it, an exception discards the temporary
    folder (so a failed run leaves no set). ``out`` is the final folder; ``work_dir`` is where
    files go until ``close()``: callers that add their own files (a strip, a report) write them
    under ``work_dir`` so they land in the set atomically with it. Raises DataError when
    ``out_dir`` is in use (see :func:`prepare_output_dir`).
    """

    def __init__(self, out_dir: str | Path, method: str, run: str | None = None, description: str = "",
                 dicom: bool = False, overwrite: bool = False) -> None:
        self.out = Path(out_dir)
        self.overwrite = overwrite
        self._final = prepare_output_dir(self.out, overwrite)
        self._made_parents = [p for p in (self._final.parent, *self._final.parent.parents) if not os.path.lexists(p)]
        self._final.parent.mkdir(parents=True, exist_ok=True)
        self.work_dir = _sibling(self._final, _PARTIAL)
        self.work_dir.mkdir()
        self._state = "open"
        (self.work_dir / "images").mkdir()
        (self.work_dir / "masks").mkdir()
        self.method = method
        self.run = run or ""
        self.description = description
        self.dicom = dicom
        if dicom:
            (self.work_dir / "dicom").mkdir()
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []

    def __enter__(self) -> "SyntheticSetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # a failed run leaves no set, and whatever was at ``out`` stays as it was
            self.discard()

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
        if self._state != "open":
            raise RuntimeError(f"{self.out}: the synthetic set is already {self._state}")
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"expected a (H, W) grayscale image, got shape {image.shape}")
        lesions = lesions or []
        image_id = len(self._images) + 1
        stem = stem or f"{self.method}_{image_id:06d}"
        fname = f"{stem}.png"
        save_png16(self.work_dir / "images" / fname, image)
        if self.dicom:
            save_dicom(self.work_dir / "dicom" / f"{stem}.dcm", image, description=f"method={self.method} run={self.run}", seed=seed)
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
        save_mask_png(self.work_dir / "masks" / mask_name, union)
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
        """Write annotations.json and manifest.csv, then rename the set onto ``out`` (replacing
        the old set there only if ``overwrite``). Returns ``out``. On failure nothing is renamed
        and the temporary folder is removed."""
        if self._state == "closed":
            return self.out
        if self._state != "open":
            raise RuntimeError(f"{self.out}: the synthetic set was discarded")
        coco = {
            "info": {"description": self.description or f"mammosynth synthetic set ({self.method})",
                     "version": "1.0", "contributor": "mammosynth"},
            "licenses": [],
            "images": self._images,
            "annotations": self._annotations,
            "categories": CATEGORIES,
        }
        try:
            write_json_atomic(self.work_dir / "annotations.json", coco, indent=None)
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS))
            writer.writeheader()
            writer.writerows(self._rows)
            write_text_atomic(self.work_dir / "manifest.csv", buf.getvalue())
            self._publish()
        except BaseException:
            self.discard()
            raise
        self._state = "closed"
        return self.out

    def _publish(self) -> None:
        final, aside = self._final, None
        if os.path.lexists(final) and not final.is_dir():
            raise DataError(f"{self.out}: exists and is not a folder")
        if final.is_dir() and any(final.iterdir()):
            if not self.overwrite:
                raise DataError(f"{self.out}: output folder was filled by another process during this run; "
                                "nothing was replaced (pass --overwrite to replace it)")
            aside = _sibling(final, _REPLACED)  # the old set stays whole until the new one is in place
            os.rename(final, aside)
        try:
            os.replace(self.work_dir, final)  # onto a missing or empty folder
        except OSError as err:
            if aside is not None:
                os.rename(aside, final)
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise DataError(f"{self.out}: output folder was filled by another process during this run; "
                                "nothing was replaced") from err
            raise
        fsync_dir(final.parent)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)

    def discard(self) -> None:
        """Remove the temporary folder (and the parent folders this writer created, if empty)."""
        if self._state != "open":
            return
        self._state = "discarded"
        shutil.rmtree(self.work_dir, ignore_errors=True)
        for parent in self._made_parents:  # deepest first
            try:
                parent.rmdir()
            except OSError:
                break


def read_manifest(out_dir: str | Path) -> list[dict[str, str]]:
    """Rows of ``manifest.csv`` of a synthetic set."""
    with open(Path(out_dir) / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))
