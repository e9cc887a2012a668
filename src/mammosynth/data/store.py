"""The one-file dataset store (HDF5 via h5py, chunked and gzip-compressed).

Layout (N lesions, M normals, S = patch size, (H, W) = normal size)::

    /lesions/patch         (N, S, S)  uint16   intensity in [0, 1] scaled to 0..65535
    /lesions/mask          (N, S, S)  uint8    0/1
    /lesions/shape         (N,)       int8     index into birads.SHAPES, -1 = no mass shape
    /lesions/margin        (N,)       int8     index into birads.MARGINS, -1 = none
    /lesions/pathology     (N,)       int8     index into birads.PATHOLOGIES, -1 = none
    /lesions/{shape,margin,pathology}_raw, _status   (N,) str   raw label + mapping status
    /lesions/lesion_type   (N,)       str      birads.LESION_TYPES: mass | non_mass | calcification
    /lesions/morphology    (N,)       int8     index into birads.MORPHOLOGIES, -1 = none
    /lesions/distribution  (N,)       int8     index into birads.DISTRIBUTIONS, -1 = none
    /lesions/{morphology,distribution}_raw, _status  (N,) str   as for shape and margin
    /lesions/points        (N,)       vlen float32  centres of a cluster's calcifications,
                                               x0, y0, x1, y1, ... in store patch pixels
                                               (empty where unknown)
    /lesions/{source_id,patient_id,laterality,view}  (N,) str
    /lesions/lesion_size   (N, 2)     int32    lesion (h, w) in full-image pixels, -1 unknown
    /lesions/pixel_spacing_mm (N,)    float32  source image spacing (mm per pixel), NaN unknown
    /lesions/patch_mm_per_px  (N,)    float32  mm per *store* pixel of the patch (the crop's
                                               physical side / S), NaN unknown
    /lesions/split         (N,)       int8     index into records.SPLITS
    /normals/image         (M, H, W)  uint16   left-oriented (chest wall at x = 0), padded
    /normals/breast_mask   (M, H, W)  uint8
    /normals/{source_id,patient_id,laterality,view}  (M,) str
    /normals/flipped       (M,)       uint8    1 if the source image was a right breast
    /normals/valid_hw      (M, 2)     int32    (h, w) of the image inside the padded canvas
    /normals/scale         (M,)       float32  canvas pixels per source pixel
    /normals/pixel_spacing_mm (M,)    float32  source image spacing (mm per source pixel), NaN unknown
    /normals/split         (M,)       int8
    /normals/marker_mask   (M, H, W)  uint8    optional (stores written with markers=True):
                                               0 = no marker, k = the image's k-th row in /markers
    /markers/{normal,label}        (K,) int32, uint8   the normal's index, its marker_mask value
    /markers/{kind,text,category}  (K,) str    "laterality" ("L CC") | "nipple"; category "marker"
    /markers/bbox                  (K, 4) int32 (x, y, w, h) in store canvas pixels
    /skips/{source_id,path,reason}      (K,) str   records that could not be used
    /warnings/{source_id,path,reason}   (K',) str  kept, but worth a look (optional group:
                                                   absent in files written before it)
    attrs["manifest"]      JSON: format version, provenance, preprocessing parameters,
                           split fractions, seed and method

Splits are patient-level: all records of one patient land in one split (no leakage), and
stratified by label (margin, then shape, then morphology and distribution for
calcifications, then pathology, then lesion type for calcifications) with the iterative method of
:mod:`mammosynth.data.splits`. A record's ``split_hint`` is honoured for all of that
patient's records: train/val/test fix the split, ``trainval`` (an official training set)
allows train or val. Patients with lesions and normal-only patients are split as two
pools, so each group gets every split.

The writer streams: memory stays flat however many records pass through (only a few label
counts per patient are kept, and rows are staged in batches of at most 512 rows or 32 MB
before they are written). A record is appended to every column or to none: any error while
adding one becomes a skip and the columns are rolled back to their previous length; an error
writing a batch stops the writer (the file never appears).
It writes to a temporary file beside the target and renames only on a clean close, so a
killed ingest never leaves a half-written file under the final name.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np

from mammosynth import __version__
from mammosynth.data.birads import DISTRIBUTIONS, LESION_TYPES, MARGINS, MORPHOLOGIES, PATHOLOGIES, SHAPES, index_of
from mammosynth.data.imaging import one_line_error
from mammosynth.data.records import SPLIT_HINTS, SPLITS, LesionRecord, MammogramRecord, SkipRecord, WarningRecord
from mammosynth.data.splits import DEFAULT_FRACTIONS, FAMILIES, METHOD, Patient, label_coverage_warnings, parse_fractions
from mammosynth.data.splits import stratified_splits
from mammosynth.errors import DataError

#: 2 added lesions/pixel_spacing_mm, lesions/patch_mm_per_px and normals/pixel_spacing_mm
#: (physical sizes); version-1 files still read, with those values unknown (NaN).
#: 3 added calcifications: lesions/lesion_type, morphology, distribution (+ _raw, _status)
#: and points; version-1/2 files still read: every lesion a mass (non_mass where its shape
#: status says so), morphology and distribution none, no points.
FORMAT_VERSION = 3
_STR = h5py.string_dtype("utf-8")
_COMP = dict(compression="gzip", compression_opts=4, shuffle=True)


def _spacing_or_nan(value: Any) -> float:
    """A record's pixel spacing in mm, or NaN when it is unknown or not a positive number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v if np.isfinite(v) and v > 0 else float("nan")


def storable_text(name: str, value: str) -> str:
    """``value`` if an HDF5 UTF-8 string can hold it, else :class:`DataError` naming ``name``
    (h5py's variable-length strings cannot hold a NUL byte; a surrogate escape from a
    non-UTF-8 file name cannot be encoded)."""
    if "\x00" in value:
        raise DataError(f"{name} {value!r} contains a NUL byte, which the store cannot hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{name} {value!r} is not valid UTF-8 text") from None
    return value


def report_text(value: object) -> str:
    """Text for the skip/warning tables, which must never fail: NUL bytes and undecodable
    characters are written as backslash escapes."""
    text = str(value).replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def to_uint16(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 65535.0).astype(np.uint16)


def from_uint16(arr: np.ndarray) -> np.ndarray:
    return arr.astype(np.float32) / 65535.0


def resize_image(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Anti-aliased resize of a float image to ``shape`` (h, w)."""
    from skimage.transform import resize

    if img.shape == tuple(shape):
        return img.astype(np.float32, copy=False)
    return resize(img.astype(np.float32), shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def block_mean(img: np.ndarray, factor: int) -> np.ndarray:
    """Downsample by an integer ``factor`` with block means (exact area averaging, fast);
    the trailing rows/columns that do not fill a block are dropped."""
    if factor <= 1:
        return img.astype(np.float32, copy=False)
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    return img[:h, :w].astype(np.float32).reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def shrink(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize to ``shape``; large reductions first take whole-number block means (3-4x faster
    than an anti-aliased resize of the full image, same result up to interpolation error)."""
    factor = int(min(img.shape[0] / shape[0], img.shape[1] / shape[1]) // 1)
    if factor >= 2:
        img = block_mean(img, factor)
    return resize_image(img, shape)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a binary mask by area-averaging then thresholding at 0.5 (keeps thin parts fairer than nearest)."""
    if mask.shape == tuple(shape):
        return mask.astype(bool)
    return resize_image(mask.astype(np.float32), shape) >= 0.5


def store_digest(path: str | Path) -> str:
    """sha256 over every dataset of an HDF5 store (its path, then its bytes; string and vlen
    columns by their values): equal digests mean the same stored data. Attributes (the
    provenance manifest, which holds a timestamp) are left out."""
    import hashlib

    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                h.update(name.encode())
                a = obj[...]
                if a.dtype == object:
                    h.update(repr([x.tolist() if hasattr(x, "tolist") else x for x in a]).encode())
                else:
                    h.update(np.ascontiguousarray(a).tobytes())
        f.visititems(visit)
    return h.hexdigest()


class StoreWriter:
    """Stream records into a new store file.

    >>> with StoreWriter("data.h5", patch_size=64, provenance={"source": "phantom"}) as w:
    ...     w.add_lesion(rec)
    ...     w.add_normal(normal_rec)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        patch_size: int = 64,
        normal_size: tuple[int, int] = (1024, 832),
        provenance: dict[str, Any] | None = None,
        split_fractions: tuple[float, float, float] | str = DEFAULT_FRACTIONS,
        split_seed: int = 0,
        markers: bool = False,
    ) -> None:
        if patch_size < 8:
            raise DataError(f"patch size must be at least 8 pixels, got {patch_size}")
        self.split_fractions = parse_fractions(split_fractions)  # ConfigError when malformed
        self.path = Path(path)
        self.patch_size = int(patch_size)
        self.normal_size = (int(normal_size[0]), int(normal_size[1]))
        self.provenance = dict(provenance or {})
        self.split_seed = int(split_seed)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        from mammosynth.io import _umask

        os.chmod(self._tmp, 0o666 & ~_umask())
        self._h5 = h5py.File(self._tmp, "w")
        self._n_lesions = 0
        self._n_normals = 0
        self._skips: list[SkipRecord] = []
        self._warnings: list[WarningRecord] = []
        self._split_hints: dict[str, str] = {}
        self._patients: dict[str, Patient] = {}  # lesion patients: label counts for the splits
        self._closed = False
        self._markers = bool(markers)
        self._n_markers = 0
        self._staged: dict[str, dict[str, list]] = {}
        self._staged_bytes = 0
        self._written: dict[str, int] = {}  # rows of each group already in the file
        self._broken = False
        S = self.patch_size
        H, W = self.normal_size
        les = self._h5.create_group("lesions")
        les.create_dataset("patch", (0, S, S), maxshape=(None, S, S), dtype=np.uint16, chunks=(1, S, S), **_COMP)
        les.create_dataset("mask", (0, S, S), maxshape=(None, S, S), dtype=np.uint8, chunks=(1, S, S), **_COMP)
        for name in ("shape", "margin", "pathology", "split", "morphology", "distribution"):
            les.create_dataset(name, (0,), maxshape=(None,), dtype=np.int8, chunks=(1024,))
        les.create_dataset("points", (0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.float32), chunks=(1024,))
        les.create_dataset("lesion_size", (0, 2), maxshape=(None, 2), dtype=np.int32, chunks=(1024, 2))
        for name in ("pixel_spacing_mm", "patch_mm_per_px"):
            les.create_dataset(name, (0,), maxshape=(None,), dtype=np.float32, chunks=(1024,))
        for name in self._LESION_STR:
            les.create_dataset(name, (0,), maxshape=(None,), dtype=_STR, chunks=(1024,))
        nor = self._h5.create_group("normals")
        nor.create_dataset("image", (0, H, W), maxshape=(None, H, W), dtype=np.uint16, chunks=(1, min(H, 256), min(W, 256)), **_COMP)
        nor.create_dataset("breast_mask", (0, H, W), maxshape=(None, H, W), dtype=np.uint8, chunks=(1, min(H, 256), min(W, 256)), **_COMP)
        nor.create_dataset("flipped", (0,), maxshape=(None,), dtype=np.uint8, chunks=(1024,))
        nor.create_dataset("split", (0,), maxshape=(None,), dtype=np.int8, chunks=(1024,))
        nor.create_dataset("valid_hw", (0, 2), maxshape=(None, 2), dtype=np.int32, chunks=(1024, 2))
        nor.create_dataset("scale", (0,), maxshape=(None,), dtype=np.float32, chunks=(1024,))
        nor.create_dataset("pixel_spacing_mm", (0,), maxshape=(None,), dtype=np.float32, chunks=(1024,))
        for name in self._NORMAL_STR:
            nor.create_dataset(name, (0,), maxshape=(None,), dtype=_STR, chunks=(1024,))
        if self._markers:  # radio-opaque markers: labelled apart from the lesions (category "marker")
            nor.create_dataset("marker_mask", (0, H, W), maxshape=(None, H, W), dtype=np.uint8,
                               chunks=(1, min(H, 256), min(W, 256)), **_COMP)
            mk = self._h5.create_group("markers")
            mk.create_dataset("normal", (0,), maxshape=(None,), dtype=np.int32, chunks=(1024,))
            mk.create_dataset("label", (0,), maxshape=(None,), dtype=np.uint8, chunks=(1024,))
            mk.create_dataset("bbox", (0, 4), maxshape=(None, 4), dtype=np.int32, chunks=(1024, 4))
            for name in ("kind", "text", "category"):
                mk.create_dataset(name, (0,), maxshape=(None,), dtype=_STR, chunks=(1024,))

    _LESION_STR = (
        "source_id", "patient_id", "laterality", "view", "source",
        "shape_raw", "shape_status", "margin_raw", "margin_status", "pathology_raw", "pathology_status",
        "lesion_type", "morphology_raw", "morphology_status", "distribution_raw", "distribution_status",
    )
    _NORMAL_STR = ("source_id", "patient_id", "laterality", "view", "source")

    # -- writing -----------------------------------------------------------------
    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    #: Rows are staged in memory and written a batch at a time (one resize and one write per
    #: column instead of one per record and column: h5py's per-call overhead was a third of
    #: the demo phantom's build time). A batch is written at this many staged bytes or rows.
    FLUSH_BYTES = 32 << 20
    FLUSH_ROWS = 512

    @staticmethod
    def _append(column: list, value: Any) -> None:
        """Stage one value of one column (written by :meth:`_flush`)."""
        column.append(value)

    def _append_row(self, group: str, n: int, row: dict[str, Any], flush: bool = True) -> None:
        """Stage one value for each named column of ``group``; on any error every column is
        cut back to ``n`` rows, so the store never holds half a record. With ``flush``, a full
        batch is written afterwards."""
        staged = self._staged.setdefault(group, {})
        keep = n - self._written.get(group, 0)  # rows of this group already staged
        try:
            for name, value in row.items():
                self._append(staged.setdefault(name, []), value)
                if isinstance(value, np.ndarray):
                    self._staged_bytes += value.nbytes
        except BaseException:
            for column in staged.values():
                del column[keep:]
            raise
        if flush and (self._staged_bytes >= self.FLUSH_BYTES or keep + 1 >= self.FLUSH_ROWS):
            self._flush()

    def _flush(self) -> None:
        """Write every staged row (one resize and one write per column). An error here is
        not one record's: it stops the writer (``add`` re-raises it rather than skipping)."""
        try:
            for group, staged in self._staged.items():
                g = self._h5[group]
                for name, values in staged.items():
                    if not values:
                        continue
                    ds = g[name]
                    n, k = ds.shape[0], len(values)
                    base = h5py.check_vlen_dtype(ds.dtype)
                    ds.resize(n + k, axis=0)
                    if base is str:  # strings: one object array
                        data = np.empty(k, object)
                        data[:] = values
                        ds[n:n + k] = data
                    elif base is not None:  # vlen arrays (h5py would broadcast equal-length ones): row by row
                        for i, v in enumerate(values):
                            ds[n + i] = np.asarray(v, base)
                    else:
                        ds[n:n + k] = np.stack([np.asarray(v, ds.dtype) for v in values])
                    values.clear()
                self._written[group] = g[next(iter(g))].shape[0] if len(g) else 0
            self._staged_bytes = 0
        except BaseException:
            self._broken = True
            raise

    @staticmethod
    def _check_hint(hint: str | None) -> None:
        if hint is not None and hint not in SPLIT_HINTS:
            raise DataError(f"unknown split {hint!r}; expected one of {', '.join(SPLIT_HINTS)}")

    def add_lesion(self, rec: LesionRecord) -> None:
        """Resize the record's patch and mask to the store's patch size and append them.
        Raises :class:`DataError` (nothing appended) for a record the store cannot hold."""
        if rec.patch.shape != rec.mask.shape:
            raise DataError(
                f"{rec.source_id}: mask size {rec.mask.shape} differs from image size {rec.patch.shape}"
            )
        if not np.any(rec.mask):
            raise DataError(f"{rec.source_id}: the lesion mask is empty")
        bad = int(rec.patch.size - np.count_nonzero(np.isfinite(rec.patch)))
        if bad:
            raise DataError(f"{rec.source_id}: the patch has {bad} non-finite (NaN/inf) pixels")
        self._check_hint(rec.split_hint)
        if rec.lesion_type not in LESION_TYPES:
            raise DataError(f"{rec.source_id}: unknown lesion type {rec.lesion_type!r}; expected one of {', '.join(LESION_TYPES)}")
        S = self.patch_size
        points = np.zeros((0, 2), np.float32) if rec.points is None else np.asarray(rec.points, np.float32).reshape(-1, 2)
        size = rec.lesion_size if rec.lesion_size is not None else (-1, -1)
        spacing = _spacing_or_nan(rec.pixel_spacing_mm)
        strs = {
            "source_id": rec.source_id, "patient_id": rec.patient_id,
            "laterality": rec.laterality or "", "view": rec.view or "", "source": rec.source,
            "shape_raw": rec.shape.raw or "", "shape_status": rec.shape.status,
            "margin_raw": rec.margin.raw or "", "margin_status": rec.margin.status,
            "pathology_raw": rec.pathology.raw or "", "pathology_status": rec.pathology.status,
            "lesion_type": rec.lesion_type,
            "morphology_raw": rec.morphology.raw or "", "morphology_status": rec.morphology.status,
            "distribution_raw": rec.distribution.raw or "", "distribution_status": rec.distribution.status,
        }
        row = {
            "patch": to_uint16(resize_image(rec.patch, (S, S))),
            "mask": resize_mask(rec.mask, (S, S)).astype(np.uint8),
            "shape": index_of(rec.shape.value, SHAPES),
            "margin": index_of(rec.margin.value, MARGINS),
            "pathology": index_of(rec.pathology.value, PATHOLOGIES),
            "morphology": index_of(rec.morphology.value, MORPHOLOGIES),
            "distribution": index_of(rec.distribution.value, DISTRIBUTIONS),
            # patch pixels -> store pixels (pixel centres scale about the corner at -0.5)
            "points": ((points + 0.5) * (S / rec.patch.shape[0]) - 0.5).ravel(),
            "split": -1,
            "lesion_size": np.asarray(size, dtype=np.int32),
            "pixel_spacing_mm": np.float32(spacing),
            "patch_mm_per_px": np.float32(spacing * rec.patch.shape[0] / S),
            **{k: storable_text(k, v) for k, v in strs.items()},
        }
        self._append_row("lesions", self._n_lesions, row)
        self._note_patient(rec.patient_id, rec.split_hint)
        patient = self._patients.setdefault(rec.patient_id, Patient())
        patient.size += 1
        if rec.lesion_type == "calcification":  # stratified by its own labels, and as a type
            labels = {"morphology": rec.morphology.value, "distribution": rec.distribution.value,
                      "pathology": rec.pathology.value, "type": rec.lesion_type}
        else:  # the families a mass had before calcifications existed: same splits as then
            labels = {"margin": rec.margin.value, "shape": rec.shape.value, "pathology": rec.pathology.value}
        for family, value in labels.items():
            key = f"{family}:{value or 'none'}"
            patient.labels[key] = patient.labels.get(key, 0) + 1
        self._n_lesions += 1

    def add_normal(self, rec: MammogramRecord) -> None:
        """Left-orient (chest wall at x = 0), downsample to fit the canvas, pad, append.
        Raises :class:`DataError` (nothing appended) for a record the store cannot hold."""
        if rec.image.shape != rec.breast_mask.shape:
            raise DataError(
                f"{rec.source_id}: breast mask size {rec.breast_mask.shape} differs from image size {rec.image.shape}"
            )
        if not np.any(rec.breast_mask):
            raise DataError(f"{rec.source_id}: no breast found in the image")
        bad = int(rec.image.size - np.count_nonzero(np.isfinite(rec.image)))
        if bad:
            raise DataError(f"{rec.source_id}: the image has {bad} non-finite (NaN/inf) pixels")
        self._check_hint(rec.split_hint)
        if rec.markers and not self._markers:
            raise DataError(f"{rec.source_id}: the record carries markers; open the StoreWriter with markers=True to keep them")
        if len(rec.markers) > 255:
            raise DataError(f"{rec.source_id}: {len(rec.markers)} markers; the store holds at most 255 per image")
        for m in rec.markers:
            if m.mask.shape != rec.image.shape:
                raise DataError(f"{rec.source_id}: marker mask size {m.mask.shape} differs from image size {rec.image.shape}")
        strs = {
            "source_id": rec.source_id, "patient_id": rec.patient_id,
            "laterality": rec.laterality or "", "view": rec.view or "", "source": rec.source,
        }
        strs = {k: storable_text(k, v) for k, v in strs.items()}
        img, bmask = rec.image, rec.breast_mask
        flipped = rec.laterality == "R"
        if flipped:
            img, bmask = img[:, ::-1], bmask[:, ::-1]
        H, W = self.normal_size
        scale = min(H / img.shape[0], W / img.shape[1])
        h, w = max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale))
        canvas = np.zeros((H, W), np.float32)
        mcanvas = np.zeros((H, W), bool)
        canvas[:h, :w] = shrink(img, (h, w))
        mcanvas[:h, :w] = shrink(bmask.astype(np.float32), (h, w)) >= 0.5
        marker_rows = []
        if self._markers:
            labels = np.zeros((H, W), np.uint8)
            for k, m in enumerate(rec.markers, start=1):
                mm = m.mask[:, ::-1] if flipped else m.mask
                ys, xs = np.nonzero(mm)
                if not len(ys):
                    raise DataError(f"{rec.source_id}: marker {k} ({m.kind}) has an empty mask")
                small = np.zeros((H, W), bool)
                small[:h, :w] = shrink(mm.astype(np.float32), (h, w)) >= 0.5
                labels[small & (labels == 0)] = k
                # The box scales with the image (pixel edges at -0.5 and n - 0.5), so a marker
                # too small to keep a pixel after a large reduction still has its place.
                bx0, bx1 = int(np.floor(xs.min() * scale)), int(np.ceil((xs.max() + 1) * scale))
                by0, by1 = int(np.floor(ys.min() * scale)), int(np.ceil((ys.max() + 1) * scale))
                marker_rows.append({"normal": self._n_normals, "label": k,
                                    "bbox": np.asarray((bx0, by0, max(1, bx1 - bx0), max(1, by1 - by0)), np.int32),
                                    "kind": storable_text("marker kind", m.kind), "text": storable_text("marker text", m.text),
                                    "category": storable_text("marker category", m.category)})
        row = {
            "image": to_uint16(canvas),
            "breast_mask": mcanvas.astype(np.uint8),
            "flipped": int(flipped),
            "split": -1,
            "valid_hw": np.asarray((h, w), np.int32),
            "scale": np.float32(scale),
            "pixel_spacing_mm": np.float32(_spacing_or_nan(rec.pixel_spacing_mm)),
            **strs,
        }
        if self._markers:
            row["marker_mask"] = labels
        # Its markers first (only staged until the normal is), so an error leaves neither.
        staged = self._staged.get("markers", {})
        before = {name: len(col) for name, col in staged.items()}
        try:
            for k, mrow in enumerate(marker_rows):
                self._append_row("markers", self._n_markers + k, mrow, flush=False)
            self._append_row("normals", self._n_normals, row)
        except BaseException:
            if not self._broken:
                for name, col in self._staged.get("markers", {}).items():
                    del col[before.get(name, 0):]
            raise
        self._n_markers += len(marker_rows)
        self._note_patient(rec.patient_id, rec.split_hint)
        self._n_normals += 1

    def add_skip(self, skip: SkipRecord) -> None:
        self._skips.append(SkipRecord(*(report_text(v) for v in (skip.source, skip.source_id, skip.path, skip.reason))))

    def add_warning(self, warning: WarningRecord) -> None:
        self._warnings.append(WarningRecord(*(report_text(v) for v in (warning.source, warning.source_id, warning.path,
                                                                       warning.reason))))

    def add(self, rec: LesionRecord | MammogramRecord | SkipRecord | WarningRecord) -> bool:
        """Add any record; returns True if it was kept. A record the store cannot hold, for
        whatever reason (a DataError, or any other exception while appending it), becomes a
        skip naming the record's file and the reason; the ingest goes on. The warnings a
        kept record carries are listed as WarningRecords."""
        if isinstance(rec, SkipRecord):
            self.add_skip(rec)
            return False
        if isinstance(rec, WarningRecord):
            self.add_warning(rec)
            return False
        path = str(rec.extra.get("path", "")) if isinstance(getattr(rec, "extra", None), dict) else ""
        try:
            if isinstance(rec, LesionRecord):
                self.add_lesion(rec)
            elif isinstance(rec, MammogramRecord):
                self.add_normal(rec)
            else:
                raise DataError(f"not a record: {type(rec).__name__}")
        except DataError as err:
            if self._broken:
                raise
            self.add_skip(SkipRecord(getattr(rec, "source", ""), getattr(rec, "source_id", ""), path, str(err)))
            return False
        except Exception as err:  # noqa: BLE001 - one record never stops an ingest
            if self._broken:  # writing a batch failed: not this record's fault, and rows are lost
                raise
            self.add_skip(SkipRecord(getattr(rec, "source", ""), getattr(rec, "source_id", ""), path,
                                     f"{path or rec.source_id}: unexpected {one_line_error(err)} while storing"))
            return False
        for message in rec.warnings or ():
            self.add_warning(WarningRecord(rec.source, rec.source_id, path, message))
        return True

    def extend(self, records: Iterable[LesionRecord | MammogramRecord | SkipRecord | WarningRecord]) -> None:
        for rec in records:
            self.add(rec)

    def _note_patient(self, patient_id: str, hint: str | None) -> None:
        if hint is not None:
            self._split_hints[patient_id] = hint
        else:
            self._split_hints.setdefault(patient_id, "")

    @property
    def n_lesions(self) -> int:
        return self._n_lesions

    @property
    def n_normals(self) -> int:
        return self._n_normals

    @property
    def skips(self) -> list[SkipRecord]:
        return list(self._skips)

    @property
    def warnings(self) -> list[WarningRecord]:
        return list(self._warnings)

    # -- finishing ---------------------------------------------------------------
    def _assign_splits(self) -> dict[str, int]:
        """Patient -> split index: lesion patients stratified by their labels, normal-only
        patients as a pool of their own (:func:`splits.stratified_splits`); hints honoured."""
        allowed_by_hint = {"": (0, 1, 2), "trainval": (0, 1), **{s: (i,) for i, s in enumerate(SPLITS)}}
        lesion_pool = {p: Patient(dict(info.labels), info.size, allowed_by_hint[self._split_hints.get(p, "")])
                       for p, info in self._patients.items()}
        normal_pool: dict[str, Patient] = {}
        counts = Counter(self._h5["normals/patient_id"].asstr()[...]) if self._n_normals else Counter()
        for p, hint in self._split_hints.items():
            if p not in lesion_pool:
                normal_pool[p] = Patient({"normal": counts.get(p, 1)}, counts.get(p, 1), allowed_by_hint[hint])
        mapping = stratified_splits(lesion_pool, self.split_fractions, self.split_seed)
        mapping.update(stratified_splits(normal_pool, self.split_fractions, self.split_seed))
        return mapping

    def close(self) -> dict[str, Any]:
        """Assign splits, write the manifest and skip report, rename into place."""
        if self._closed:
            return {}
        if self._broken:
            raise DataError(f"{self.path}: an earlier write to the dataset file failed; nothing was written")
        self._flush()
        mapping = self._assign_splits()
        for group in ("lesions", "normals"):
            g = self._h5[group]
            pids = g["patient_id"].asstr()[...]
            if len(pids):
                g["split"][...] = np.asarray([mapping[p] for p in pids], np.int8)
        for name, rows in (("skips", self._skips), ("warnings", self._warnings)):
            grp = self._h5.create_group(name)
            for field in ("source_id", "path", "reason"):
                grp.create_dataset(field, data=np.asarray([getattr(r, field) for r in rows], dtype=object), dtype=_STR)
        manifest = {
            "format": "mammosynth-store",
            "format_version": FORMAT_VERSION,
            "mammosynth_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "patch_size": self.patch_size,
            "normal_size": list(self.normal_size),
            "split_fractions": [round(f, 6) for f in self.split_fractions],
            "split_seed": self.split_seed,
            "split_method": METHOD,
            "n_lesions": self._n_lesions,
            "n_normals": self._n_normals,
            "n_skipped": len(self._skips),
            "n_warnings": len(self._warnings),
            **({"n_markers": self._n_markers} if self._markers else {}),
            "vocabulary": {"shape": list(SHAPES), "margin": list(MARGINS), "pathology": list(PATHOLOGIES),
                           "morphology": list(MORPHOLOGIES), "distribution": list(DISTRIBUTIONS),
                           "lesion_type": list(LESION_TYPES)},
            "provenance": self.provenance,
        }
        self._h5.attrs["manifest"] = json.dumps(manifest)
        self._h5.close()
        os.replace(self._tmp, self.path)
        self._closed = True
        return manifest

    def abort(self) -> None:
        """Drop the temporary file; an existing file at the target path is untouched."""
        if self._closed:
            return
        try:
            self._h5.close()
        finally:
            self._tmp.unlink(missing_ok=True)
            self._closed = True


@dataclass
class LesionArrays:
    """Lesions read from a store: patches (N,S,S) float32 in [0,1], masks (N,S,S) bool, labels."""

    index: np.ndarray
    patch: np.ndarray
    mask: np.ndarray
    shape: np.ndarray
    margin: np.ndarray
    pathology: np.ndarray
    source_id: list[str]
    patient_id: list[str]
    #: (N,) indices into birads.MORPHOLOGIES / DISTRIBUTIONS (-1 none) and lesion types.
    morphology: np.ndarray | None = None
    distribution: np.ndarray | None = None
    lesion_type: list[str] | None = None


#: Label families a store counts per split, and their vocabularies (``type`` is the lesion type).
_FAMILY_VOCAB: dict[str, tuple[str, ...]] = {"shape": SHAPES, "margin": MARGINS, "pathology": PATHOLOGIES,
                                              "morphology": MORPHOLOGIES, "distribution": DISTRIBUTIONS,
                                              "type": LESION_TYPES}


class Store:
    """Read-only access to a store file. Cheap to open; arrays are read on demand."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such dataset file; create one with `mammosynth data phantom` or `mammosynth data ingest`")
        try:
            self._h5 = h5py.File(self.path, "r")
            self.manifest: dict[str, Any] = json.loads(self._h5.attrs["manifest"])
        except (OSError, KeyError, json.JSONDecodeError) as err:
            raise DataError(f"{self.path}: not a mammosynth dataset file ({err})") from err
        if self.manifest.get("format") != "mammosynth-store":
            raise DataError(f"{self.path}: not a mammosynth dataset file (format={self.manifest.get('format')!r})")

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def h5(self) -> h5py.File:
        return self._h5

    @property
    def patch_size(self) -> int:
        return int(self.manifest["patch_size"])

    @property
    def n_lesions(self) -> int:
        return int(self._h5["lesions/patch"].shape[0])

    @property
    def n_normals(self) -> int:
        return int(self._h5["normals/image"].shape[0])

    def split_indices(self, group: str, split: str | None) -> np.ndarray:
        """Indices of ``group`` ("lesions"/"normals") in ``split`` (None = all), ascending."""
        s = self._h5[f"{group}/split"][...]
        if split is None:
            return np.arange(len(s))
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return np.flatnonzero(s == SPLITS.index(split))

    def lesions(self, indices: Sequence[int] | np.ndarray | None = None, split: str | None = None) -> LesionArrays:
        idx = self.split_indices("lesions", split) if indices is None else np.asarray(indices, dtype=np.int64)
        g = self._h5["lesions"]
        order = np.argsort(idx)
        sorted_idx = idx[order]
        inv = np.argsort(order)

        def take(name: str) -> np.ndarray:
            if name not in g:  # a column added in format 3, read from an older file
                return self._label_column(name)[sorted_idx][inv]
            if len(sorted_idx) == 0:
                return g[name][:0]
            return g[name][sorted_idx][inv]

        return LesionArrays(
            index=idx,
            patch=from_uint16(take("patch")),
            mask=take("mask").astype(bool),
            shape=take("shape").astype(np.int64),
            margin=take("margin").astype(np.int64),
            pathology=take("pathology").astype(np.int64),
            source_id=[s.decode() if isinstance(s, bytes) else s for s in take("source_id")],
            patient_id=[s.decode() if isinstance(s, bytes) else s for s in take("patient_id")],
            morphology=take("morphology").astype(np.int64),
            distribution=take("distribution").astype(np.int64),
            lesion_type=[t.decode() if isinstance(t, bytes) else str(t) for t in take("lesion_type")],
        )

    def _label_column(self, name: str) -> np.ndarray:
        """A whole per-lesion label column; for files before format 3, the values it implies:
        lesion_type from the shape status (mass or non_mass), morphology/distribution -1."""
        g = self._h5["lesions"]
        if name in g:
            col = g[name]
            return col.asstr()[...] if name == "lesion_type" else col[...]
        if name == "lesion_type":
            status = g["shape_status"].asstr()[...]
            return np.where(status == "non_mass", "non_mass", "mass").astype(object)
        return np.full(self.n_lesions, -1, np.int8)

    def label_codes(self, name: str) -> np.ndarray:
        """A whole per-lesion label column as int64 codes (-1 = unknown): the stored indices for
        shape, margin, pathology, morphology and distribution; for ``lesion_type`` its index in
        :data:`birads.LESION_TYPES` (what datasets and class-conditioned models consume)."""
        col = self._label_column(name)
        if name == "lesion_type":
            return np.array([LESION_TYPES.index(str(v)) for v in col], np.int64)
        return np.asarray(col).astype(np.int64)

    def lesion_types(self, split: str | None = None) -> list[str]:
        """Lesion type (mass | non_mass | calcification) of each lesion of ``split``."""
        return [str(t) for t in self._label_column("lesion_type")[self.split_indices("lesions", split)]]

    def lesion_points(self, i: int) -> np.ndarray:
        """(K, 2) centres (x, y) of lesion ``i``'s individual calcifications in store patch
        pixels; (0, 2) when unknown (a mass, a source without points, a file before format 3)."""
        g = self._h5["lesions"]
        if "points" not in g:
            return np.zeros((0, 2), np.float32)
        return np.asarray(g["points"][i], np.float32).reshape(-1, 2)

    def lesion_sizes(self, split: str | None = None) -> np.ndarray:
        """(N, 2) lesion (h, w) in full-image pixels for lesions where it is known."""
        idx = self.split_indices("lesions", split)
        sizes = self._h5["lesions/lesion_size"][...][idx]
        return sizes[(sizes > 0).all(axis=1)]

    def _float_column(self, name: str, indices: np.ndarray) -> np.ndarray:
        """Values of a float dataset added in format 2 (NaN for every row of a version-1 file)."""
        if name not in self._h5:
            return np.full(len(indices), np.nan, np.float32)
        return self._h5[name][...][indices].astype(np.float32)

    def lesion_spacing_mm(self, split: str | None = None) -> np.ndarray:
        """(N,) source pixel spacing (mm) of the lesions of ``split``; NaN where unknown."""
        return self._float_column("lesions/pixel_spacing_mm", self.split_indices("lesions", split))

    def patch_mm_per_px(self, split: str | None = None) -> np.ndarray:
        """(N,) mm per store pixel of each lesion patch of ``split``; NaN where unknown."""
        return self._float_column("lesions/patch_mm_per_px", self.split_indices("lesions", split))

    def lesion_sizes_mm(self, split: str | None = None, lesion_type: str | None = None) -> np.ndarray:
        """(N, 2) lesion (h, w) in mm for the lesions of ``split`` (of ``lesion_type`` only,
        when given: mass | non_mass | calcification) whose size and spacing are known."""
        idx = self.split_indices("lesions", split)
        sizes = self._h5["lesions/lesion_size"][...][idx].astype(np.float64)
        spacing = self._float_column("lesions/pixel_spacing_mm", idx).astype(np.float64)
        ok = (sizes > 0).all(axis=1) & np.isfinite(spacing)
        if lesion_type is not None:
            ok &= self._label_column("lesion_type")[idx] == lesion_type
        return sizes[ok] * spacing[ok, None]

    def normal(self, i: int) -> dict[str, Any]:
        """One normal: image (H,W) float32 [0,1], breast_mask (H,W) bool, plus placement info."""
        g = self._h5["normals"]
        return {
            "image": from_uint16(g["image"][i]),
            "breast_mask": g["breast_mask"][i].astype(bool),
            "flipped": bool(g["flipped"][i]),
            "valid_hw": tuple(int(v) for v in g["valid_hw"][i]),
            "scale": float(g["scale"][i]),
            "pixel_spacing_mm": float(g["pixel_spacing_mm"][i]) if "pixel_spacing_mm" in g else float("nan"),
            "source_id": g["source_id"].asstr()[i],
            "patient_id": g["patient_id"].asstr()[i],
            "laterality": g["laterality"].asstr()[i],
            "view": g["view"].asstr()[i],
        }

    @property
    def n_markers(self) -> int:
        """Radio-opaque markers in the store (0 for a store written without markers)."""
        return int(self._h5["markers/normal"].shape[0]) if "markers" in self._h5 else 0

    def markers(self, normal: int | None = None) -> list[dict[str, Any]]:
        """The markers of normal ``normal`` (None = all): dicts with ``normal`` (index),
        ``kind`` ("laterality" | "nipple"), ``text``, ``category`` ("marker"), ``bbox``
        (x, y, w, h) in store canvas pixels and ``label`` (its value in the normal's
        ``marker_mask``; :meth:`marker_mask`). Empty for stores written without markers.
        Markers are never lesions: nothing that reads ``/lesions`` sees them."""
        if "markers" not in self._h5:
            return []
        g = self._h5["markers"]
        idx = g["normal"][...]
        rows = np.arange(len(idx)) if normal is None else np.flatnonzero(idx == int(normal))
        kind, text, cat = (g[k].asstr()[...] for k in ("kind", "text", "category"))
        bbox, label = g["bbox"][...], g["label"][...]
        return [{"normal": int(idx[r]), "kind": str(kind[r]), "text": str(text[r]), "category": str(cat[r]),
                 "bbox": tuple(int(v) for v in bbox[r]), "label": int(label[r])} for r in rows]

    def marker_mask(self, i: int) -> np.ndarray:
        """(H, W) uint8 marker label map of normal ``i`` (0 = none; see :meth:`markers`);
        all zero for a store written without markers."""
        g = self._h5["normals"]
        if "marker_mask" not in g:
            return np.zeros(g["breast_mask"].shape[1:], np.uint8)
        return g["marker_mask"][i]

    def _report_rows(self, name: str) -> list[tuple[str, str, str]]:
        g = self._h5.get(name)
        if g is None or "source_id" not in g:
            return []
        ids, paths, reasons = (g[k].asstr()[...] for k in ("source_id", "path", "reason"))
        return list(zip(ids, paths, reasons))

    def skips(self) -> list[SkipRecord]:
        return [SkipRecord("", *row) for row in self._report_rows("skips")]

    def warnings(self) -> list[WarningRecord]:
        """What the ingest kept but flagged (empty for files written before warnings existed)."""
        return [WarningRecord("", *row) for row in self._report_rows("warnings")]

    def split_label_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Lesions per split and label: ``{split: {family: {value or "(none)": count}}}``."""
        split = self._h5["lesions/split"][...]
        out: dict[str, dict[str, dict[str, int]]] = {}
        for i, name in enumerate(SPLITS):
            sel = split == i
            out[name] = {family: self._label_counts(family, sel) for family in FAMILIES}
        return out

    def _label_counts(self, family: str, select: np.ndarray | None = None) -> dict[str, int]:
        """Lesions per term of ``family`` (shape, margin, pathology, morphology, distribution,
        type), over ``select`` (a boolean row mask; None = all), with "(none)" for no term."""
        vocab = _FAMILY_VOCAB[family]
        column = self._label_column("lesion_type" if family == "type" else family)
        if family == "type":
            column = np.asarray([vocab.index(t) if t in vocab else -1 for t in column], np.int64)
        c = Counter(int(v) for v in (column if select is None else column[select]))
        return {**{t: c.get(k, 0) for k, t in enumerate(vocab)}, "(none)": c.get(-1, 0)}

    def info(self) -> dict[str, Any]:
        """Counts per label and split, sizes and provenance, as a JSON-ready dict."""
        def split_counts(group: str) -> dict[str, int]:
            c = Counter(int(v) for v in self._h5[f"{group}/split"][...])
            return {s: c.get(i, 0) for i, s in enumerate(SPLITS)}
        n_patients = {grp: len(set(self._h5[f"{grp}/patient_id"].asstr()[...])) for grp in ("lesions", "normals")}
        per_split = self.split_label_counts()
        return {
            "file": str(self.path),
            "format_version": self.manifest.get("format_version"),
            "patch_size": self.patch_size,
            "normal_size": self.manifest.get("normal_size"),
            "n_lesions": self.n_lesions,
            "n_normals": self.n_normals,
            "n_patients": n_patients,
            "n_skipped": len(self.skips()),
            "n_warnings": len(self.warnings()),
            **({"n_markers": self.n_markers} if "markers" in self._h5 else {}),
            "shape": self._label_counts("shape"),
            "margin": self._label_counts("margin"),
            "pathology": self._label_counts("pathology"),
            "lesion_type": self._label_counts("type"),
            "morphology": self._label_counts("morphology"),
            "distribution": self._label_counts("distribution"),
            "splits": {"lesions": split_counts("lesions"), "normals": split_counts("normals")},
            "split_fractions": self.manifest.get("split_fractions"),
            "split_seed": self.manifest.get("split_seed"),
            "split_method": self.manifest.get("split_method", "patient-level shuffle"),
            "split_labels": per_split,
            "split_warnings": label_coverage_warnings(per_split) if self.n_lesions else [],
            "provenance": self.manifest.get("provenance", {}),
        }


def read_lesion_split(path: str | os.PathLike, split: str, purpose: str) -> LesionArrays:
    """All lesions of one split of the store at ``path``; a :class:`DataError` naming the file,
    the split and ``purpose`` (e.g. "measure real accuracy on") when the split is empty."""
    with Store(path) as s:
        les = s.lesions(split=split)
    if len(les.index) == 0:
        raise DataError(f"{path}: split {split!r} has no lesions to {purpose}")
    return les
