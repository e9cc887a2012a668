"""The one-file dataset store (HDF5 via h5py, chunked and gzip-compressed).

Layout (N lesions, M normals, S = patch size, (H, W) = normal size)::

    /lesions/patch         (N, S, S)  uint16   intensity in [0, 1] scaled to 0..65535
    /lesions/mask          (N, S, S)  uint8    0/1
    /lesions/shape         (N,)       int8     index into birads.SHAPES, -1 = no mass shape
    /lesions/margin        (N,)       int8     index into birads.MARGINS, -1 = none
    /lesions/pathology     (N,)       int8     index into birads.PATHOLOGIES, -1 = none
    /lesions/{shape,margin,pathology}_raw, _status   (N,) str   raw label + mapping status
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
    /skips/{source_id,path,reason}   (K,) str
    attrs["manifest"]      JSON: format version, provenance, preprocessing parameters

Splits are patient-level: all records of one patient land in one split (no leakage). A
record's ``split_hint`` (e.g. CBIS-DDSM's official train/test) is honoured for all of that
patient's records; the rest are drawn with a seeded shuffle of patient ids.

The writer streams: memory stays flat however many records pass through. It writes to a
temporary file beside the target and renames only on a clean close, so a killed ingest
never leaves a half-written file under the final name.
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
from mammosynth.data.birads import MARGINS, PATHOLOGIES, SHAPES, index_of
from mammosynth.data.records import SPLITS, LesionRecord, MammogramRecord, SkipRecord
from mammosynth.errors import DataError

#: 2 added lesions/pixel_spacing_mm, lesions/patch_mm_per_px and normals/pixel_spacing_mm
#: (physical sizes); version-1 files still read, with those values unknown (NaN).
FORMAT_VERSION = 2
_STR = h5py.string_dtype("utf-8")
_COMP = dict(compression="gzip", compression_opts=4, shuffle=True)


def _spacing_or_nan(value: Any) -> float:
    """A record's pixel spacing in mm, or NaN when it is unknown or not a positive number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v if np.isfinite(v) and v > 0 else float("nan")


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
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
    ) -> None:
        if patch_size < 8:
            raise DataError(f"patch size must be at least 8 pixels, got {patch_size}")
        if abs(sum(split_fractions) - 1.0) > 1e-6:
            raise DataError(f"split fractions must sum to 1, got {split_fractions}")
        self.path = Path(path)
        self.patch_size = int(patch_size)
        self.normal_size = (int(normal_size[0]), int(normal_size[1]))
        self.provenance = dict(provenance or {})
        self.split_fractions = split_fractions
        self.split_seed = split_seed
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
        self._split_hints: dict[str, str] = {}
        self._closed = False
        S = self.patch_size
        H, W = self.normal_size
        les = self._h5.create_group("lesions")
        les.create_dataset("patch", (0, S, S), maxshape=(None, S, S), dtype=np.uint16, chunks=(1, S, S), **_COMP)
        les.create_dataset("mask", (0, S, S), maxshape=(None, S, S), dtype=np.uint8, chunks=(1, S, S), **_COMP)
        for name in ("shape", "margin", "pathology", "split"):
            les.create_dataset(name, (0,), maxshape=(None,), dtype=np.int8, chunks=(1024,))
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

    _LESION_STR = (
        "source_id", "patient_id", "laterality", "view", "source",
        "shape_raw", "shape_status", "margin_raw", "margin_status", "pathology_raw", "pathology_status",
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

    @staticmethod
    def _append(ds: h5py.Dataset, value: Any) -> None:
        n = ds.shape[0]
        ds.resize(n + 1, axis=0)
        ds[n] = value

    def add_lesion(self, rec: LesionRecord) -> None:
        """Resize the record's patch and mask to the store's patch size and append them."""
        if rec.patch.shape != rec.mask.shape:
            raise DataError(
                f"{rec.source_id}: mask size {rec.mask.shape} differs from image size {rec.patch.shape}"
            )
        if not np.any(rec.mask):
            raise DataError(f"{rec.source_id}: the lesion mask is empty")
        S = self.patch_size
        les = self._h5["lesions"]
        self._append(les["patch"], to_uint16(resize_image(rec.patch, (S, S))))
        self._append(les["mask"], resize_mask(rec.mask, (S, S)).astype(np.uint8))
        self._append(les["shape"], index_of(rec.shape.value, SHAPES))
        self._append(les["margin"], index_of(rec.margin.value, MARGINS))
        self._append(les["pathology"], index_of(rec.pathology.value, PATHOLOGIES))
        self._append(les["split"], -1)
        size = rec.lesion_size if rec.lesion_size is not None else (-1, -1)
        self._append(les["lesion_size"], np.asarray(size, dtype=np.int32))
        spacing = _spacing_or_nan(rec.pixel_spacing_mm)
        self._append(les["pixel_spacing_mm"], np.float32(spacing))
        self._append(les["patch_mm_per_px"], np.float32(spacing * rec.patch.shape[0] / S))
        strs = {
            "source_id": rec.source_id, "patient_id": rec.patient_id,
            "laterality": rec.laterality or "", "view": rec.view or "", "source": rec.source,
            "shape_raw": rec.shape.raw or "", "shape_status": rec.shape.status,
            "margin_raw": rec.margin.raw or "", "margin_status": rec.margin.status,
            "pathology_raw": rec.pathology.raw or "", "pathology_status": rec.pathology.status,
        }
        for k, v in strs.items():
            self._append(les[k], v)
        self._note_patient(rec.patient_id, rec.split_hint)
        self._n_lesions += 1

    def add_normal(self, rec: MammogramRecord) -> None:
        """Left-orient (chest wall at x = 0), downsample to fit the canvas, pad, append."""
        if rec.image.shape != rec.breast_mask.shape:
            raise DataError(
                f"{rec.source_id}: breast mask size {rec.breast_mask.shape} differs from image size {rec.image.shape}"
            )
        if not np.any(rec.breast_mask):
            raise DataError(f"{rec.source_id}: no breast found in the image")
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
        nor = self._h5["normals"]
        self._append(nor["image"], to_uint16(canvas))
        self._append(nor["breast_mask"], mcanvas.astype(np.uint8))
        self._append(nor["flipped"], int(flipped))
        self._append(nor["split"], -1)
        self._append(nor["valid_hw"], np.asarray((h, w), np.int32))
        self._append(nor["scale"], np.float32(scale))
        self._append(nor["pixel_spacing_mm"], np.float32(_spacing_or_nan(rec.pixel_spacing_mm)))
        for k, v in {
            "source_id": rec.source_id, "patient_id": rec.patient_id,
            "laterality": rec.laterality or "", "view": rec.view or "", "source": rec.source,
        }.items():
            self._append(nor[k], v)
        self._note_patient(rec.patient_id, rec.split_hint)
        self._n_normals += 1

    def add_skip(self, skip: SkipRecord) -> None:
        self._skips.append(skip)

    def add(self, rec: LesionRecord | MammogramRecord | SkipRecord) -> bool:
        """Add any record. A record the store rejects becomes a skip; returns True if kept."""
        try:
            if isinstance(rec, LesionRecord):
                self.add_lesion(rec)
            elif isinstance(rec, MammogramRecord):
                self.add_normal(rec)
            else:
                self.add_skip(rec)
                return False
        except DataError as err:
            self.add_skip(SkipRecord(rec.source, rec.source_id, str(rec.extra.get("path", "")), str(err)))
            return False
        return True

    def extend(self, records: Iterable[LesionRecord | MammogramRecord | SkipRecord]) -> None:
        for rec in records:
            self.add(rec)

    def _note_patient(self, patient_id: str, hint: str | None) -> None:
        if hint is not None:
            if hint not in SPLITS:
                raise DataError(f"unknown split {hint!r}; expected one of {SPLITS}")
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

    # -- finishing ---------------------------------------------------------------
    def _assign_splits(self) -> dict[str, int]:
        """Patient -> split index. Lesion patients and normal-only patients are split as two
        pools so that each group gets train/val/test; hinted patients keep their hint."""
        rng = np.random.default_rng(self.split_seed)
        mapping = {p: SPLITS.index(h) for p, h in self._split_hints.items() if h}
        lesion_patients = set(self._h5["lesions/patient_id"].asstr()[...])
        free = sorted(p for p, h in self._split_hints.items() if not h)
        for pool in ([p for p in free if p in lesion_patients], [p for p in free if p not in lesion_patients]):
            rng.shuffle(pool)
            n = len(pool)
            n_train = int(round(self.split_fractions[0] * n))
            n_val = int(round(self.split_fractions[1] * n))
            if n >= 3:  # every split gets at least one patient when there are enough
                n_val = max(n_val, 1)
                n_train = min(n_train, n - n_val - 1)
            for i, p in enumerate(pool):
                mapping[p] = 0 if i < n_train else (1 if i < n_train + n_val else 2)
        return mapping

    def close(self) -> dict[str, Any]:
        """Assign splits, write the manifest and skip report, rename into place."""
        if self._closed:
            return {}
        mapping = self._assign_splits()
        for group in ("lesions", "normals"):
            g = self._h5[group]
            pids = g["patient_id"].asstr()[...]
            if len(pids):
                g["split"][...] = np.asarray([mapping[p] for p in pids], np.int8)
        sk = self._h5.create_group("skips")
        for field in ("source_id", "path", "reason"):
            sk.create_dataset(field, data=np.asarray([getattr(s, field) for s in self._skips], dtype=object), dtype=_STR)
        manifest = {
            "format": "mammosynth-store",
            "format_version": FORMAT_VERSION,
            "mammosynth_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "patch_size": self.patch_size,
            "normal_size": list(self.normal_size),
            "split_fractions": list(self.split_fractions),
            "split_seed": self.split_seed,
            "n_lesions": self._n_lesions,
            "n_normals": self._n_normals,
            "n_skipped": len(self._skips),
            "vocabulary": {"shape": list(SHAPES), "margin": list(MARGINS), "pathology": list(PATHOLOGIES)},
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
        )

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

    def lesion_sizes_mm(self, split: str | None = None) -> np.ndarray:
        """(N, 2) lesion (h, w) in mm for the lesions of ``split`` whose size and spacing are known."""
        idx = self.split_indices("lesions", split)
        sizes = self._h5["lesions/lesion_size"][...][idx].astype(np.float64)
        spacing = self._float_column("lesions/pixel_spacing_mm", idx).astype(np.float64)
        ok = (sizes > 0).all(axis=1) & np.isfinite(spacing)
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

    def skips(self) -> list[SkipRecord]:
        g = self._h5.get("skips")
        if g is None or "source_id" not in g:
            return []
        ids, paths, reasons = (g[k].asstr()[...] for k in ("source_id", "path", "reason"))
        return [SkipRecord("", a, b, c) for a, b, c in zip(ids, paths, reasons)]

    def info(self) -> dict[str, Any]:
        """Counts per label and split, sizes and provenance, as a JSON-ready dict."""
        g = self._h5["lesions"]
        def counts(name: str, vocab: tuple[str, ...]) -> dict[str, int]:
            c = Counter(int(v) for v in g[name][...])
            out = {term: c.get(i, 0) for i, term in enumerate(vocab)}
            out["(none)"] = c.get(-1, 0)
            return out
        def split_counts(group: str) -> dict[str, int]:
            c = Counter(int(v) for v in self._h5[f"{group}/split"][...])
            return {s: c.get(i, 0) for i, s in enumerate(SPLITS)}
        n_patients = {grp: len(set(self._h5[f"{grp}/patient_id"].asstr()[...])) for grp in ("lesions", "normals")}
        return {
            "file": str(self.path),
            "format_version": self.manifest.get("format_version"),
            "patch_size": self.patch_size,
            "normal_size": self.manifest.get("normal_size"),
            "n_lesions": self.n_lesions,
            "n_normals": self.n_normals,
            "n_patients": n_patients,
            "n_skipped": len(self.skips()),
            "shape": counts("shape", SHAPES),
            "margin": counts("margin", MARGINS),
            "pathology": counts("pathology", PATHOLOGIES),
            "splits": {"lesions": split_counts("lesions"), "normals": split_counts("normals")},
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
