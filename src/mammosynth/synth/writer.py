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

``insert`` writes the user's own mammograms back in their own format
(:meth:`SyntheticSetWriter.add_native`: DICOM, PNG, TIFF or PGM at native shape and dtype),
optionally with YOLO labels (``labels/<stem>.txt``); generated images may also be written as
DICOM (``dicom/``, one study and series per set, see :mod:`mammosynth.synth.dicom`).
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
    # insert: where the image came from and the first lesion's physical size and centre (pixels)
    "source_file", "pixel_spacing_mm", "lesion_h_mm", "lesion_w_mm", "center_x", "center_y",
    # the first lesion's type (mass | non_mass | calcification), its COCO category (mass |
    # calcification) and, for calcifications, BI-RADS morphology / distribution (evaluate per type)
    "lesion_type", "category", "morphology", "distribution",
)
#: Image formats :meth:`SyntheticSetWriter.add_native` writes, and their file suffixes.
NATIVE_SUFFIXES = {"png": ".png", "tiff": ".tif", "pgm": ".pgm", "dicom": ".dcm"}
CATEGORIES = [{"id": 1, "name": "mass", "supercategory": "lesion"}]
#: The category of an inserted calcification cluster, listed only in sets that hold one. Its
#: annotations carry COCO ``keypoints`` (x, y, 2 per calcification, in the image's pixels)
#: and ``num_keypoints``: one keypoint per calcification, so their number varies per cluster
#: (COCO's keypoint evaluation, made for fixed skeletons, does not apply; loaders read them).
CALCIFICATION_CATEGORY = {"id": 2, "name": "calcification", "supercategory": "lesion", "keypoints": ["calcification"],
                          "skeleton": []}
_CATEGORY_IDS = {"mass": 1, "calcification": 2}


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
            try:
                import tifffile
            except ImportError as err:  # only float TIFF inputs come back as float TIFFs
                raise DataError(f"{path}: writing a float TIFF needs the tifffile package (pip install tifffile)") from err

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
    #: "mass" or "calcification" (the COCO category).
    category: str = "mass"
    #: (K, 2) centres (x, y) of a cluster's calcifications in image pixels, written as COCO keypoints.
    points: np.ndarray | None = None


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
        if yolo:  # YOLO class = COCO category id - 1 (0 mass, 1 calcification)
            lines = "".join(yolo_lines([b], pixels.shape, _CATEGORY_IDS[les.category] - 1)
                            for les in lesions for b in [mask_bbox(les.mask)] if b is not None)
            write_text_atomic(self._file("labels", f"{stem}.txt"), lines)
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
                          "path: .\ntrain: images\nval: images\nnames:\n  0: mass\n"
                          + ("  1: calcification\n" if self._has_calcifications() else ""))

    def _has_calcifications(self) -> bool:
        return any(a["category_id"] == CALCIFICATION_CATEGORY["id"] for a in self._annotations)

    # -- one place for paths and bookkeeping -----------------------------------------
    def _file(self, *parts: str) -> Path:
        """Path of a file of the set (inside the temporary folder until ``close``); every file
        the writer makes is placed through here."""
        return self.work_dir.joinpath(*parts)

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
            ann = {
                "id": len(self._annotations) + 1,
                "image_id": image_id,
                "category_id": _CATEGORY_IDS[les.category],
                "bbox": [float(v) for v in bbox],
                "area": float(les.mask.sum()),
                "segmentation": mask_to_rle(les.mask),
                "iscrowd": 0,
                "attributes": attrs,
            }
            if les.points is not None:
                pts = np.asarray(les.points, np.float64).reshape(-1, 2)
                ann["keypoints"] = [round(float(v), 2) for x, y in pts for v in (x, y, 2)]
                ann["num_keypoints"] = int(len(pts))
            self._annotations.append(ann)
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
            **_type_columns(lesions),
            **(row or {}),
        })

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
            "categories": CATEGORIES + ([CALCIFICATION_CATEGORY] if self._has_calcifications() else []),
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


def _type_columns(lesions: list[Lesion]) -> dict[str, str]:
    """Manifest columns naming the first lesion's type and calcification labels ("" without a lesion)."""
    if not lesions:
        return {"lesion_type": "", "category": "", "morphology": "", "distribution": ""}
    first = lesions[0]
    attrs = first.attributes or {}
    return {"lesion_type": str(attrs.get("lesion_type") or first.category), "category": first.category,
            "morphology": str(attrs.get("morphology") or ""), "distribution": str(attrs.get("distribution") or "")}


def read_manifest(out_dir: str | Path) -> list[dict[str, str]]:
    """Rows of ``manifest.csv`` of a synthetic set."""
    with open(Path(out_dir) / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))
