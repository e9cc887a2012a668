"""The user's own mammograms as insertion targets: discovery, reading at native resolution,
pixel spacing, laterality and view, and the map between stored pixel values and the model's
intensity scale (both ways).

Targets come from a folder (searched recursively; DICOM files are recognised by suffix or by
their ``DICM`` preamble), a list of files, or an ``.h5`` store's normals. Each one is read when
it is used, so memory stays flat however many there are.

Pixel spacing, in this order: DICOM PixelSpacing; ImagerPixelSpacing (divided by the
EstimatedRadiographicMagnificationFactor when present); NominalScannedPixelSpacing (digitised
film); a ``pixel_spacing_mm`` column of a CSV beside the images (keyed by ``file``); the
``--pixel-spacing`` fallback. An image with none of these is refused before anything is
written. Laterality and view: DICOM (ImageLaterality / Laterality, ViewPosition / the view
code, then the view words CBIS-DDSM writes into PatientID), the CSV, the file name, the image
content. The source used is recorded for every image.

Intensities: :class:`IntensityMap` normalises stored values exactly as the readers do for
training (:func:`mammosynth.data.imaging.read_dicom` / ``read_image``: modality LUT, VOI,
scaling to [0, 1], MONOCHROME1 inversion; integer rasters over their effective full scale) and
inverts that map, so infilled values go back into the image's own stored values and dtype.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mammosynth.data.anatomy import ANATOMY_WORK_SIZE, downsample
from mammosynth.data.imaging import IMAGE_SUFFIXES, laterality_from_image
from mammosynth.errors import DataError

_DICOM_SUFFIXES = (".dcm", ".dicom")
_RASTER_FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".pgm": "pgm"}
_SPACING_COLUMNS = ("pixel spacing mm", "pixel spacing", "spacing mm", "spacing")


# --------------------------------------------------------------------------------------
# stored values <-> model intensities
# --------------------------------------------------------------------------------------
def _first(value: Any) -> float:
    try:
        return float(value[0])
    except TypeError:
        return float(value)


@dataclass
class IntensityMap:
    """Stored pixel values <-> float32 intensities in [0, 1] (bright = dense), both ways.

    ``forward`` reproduces the readers' normalisation (so the model sees what it trained on);
    ``inverse`` maps model intensities back to (unrounded) stored values, clipped to the
    image's stored range. Values a VOI window clips (below or above it) have no inverse; they
    are never asked for, because only infilled pixels are mapped back and the compositing
    blends in stored values (see :func:`mammosynth.synth.insert.composite`).
    """

    dtype: np.dtype
    stored_lo: float  # smallest / largest value the stored pixels may take
    stored_hi: float
    slope: float = 1.0
    intercept: float = 0.0
    modality_lut: tuple[np.ndarray, np.ndarray] | None = None  # (stored values, output values)
    lo: float = 0.0  # range that maps to [0, 1] when no window applies
    hi: float = 1.0
    voi: str = "none"  # none | window | lut
    center: float = 0.0
    width: float = 1.0
    function: str = "LINEAR"
    voi_lut: tuple[np.ndarray, np.ndarray] | None = None  # (input values, output values)
    invert: bool = False  # MONOCHROME1

    def forward(self, raw: np.ndarray) -> np.ndarray:
        """(H, W) stored values -> float32 (H, W) in [0, 1]."""
        if self.modality_lut is not None:
            xs, ys = self.modality_lut
            arr = np.interp(raw, xs, ys).astype(np.float32)
        else:
            arr = raw.astype(np.float32)
            if self.slope != 1.0 or self.intercept != 0.0:
                arr *= np.float32(self.slope)
                arr += np.float32(self.intercept)
        if self.voi == "lut":
            xs, ys = self.voi_lut
            arr = np.interp(np.rint(arr), xs, ys).astype(np.float32)
        if self.voi == "window":
            if self.function == "SIGMOID":
                arr = 1.0 / (1.0 + np.exp(-4.0 * (arr - np.float32(self.center)) / np.float32(max(self.width, 1e-6))))
                arr = arr.astype(np.float32)
            else:
                c, w = self._window_cw()
                arr -= np.float32(c - w / 2.0)
                arr *= np.float32(1.0 / w)
                np.clip(arr, 0.0, 1.0, out=arr)
        else:
            arr -= np.float32(self.lo)
            arr *= np.float32(1.0 / max(self.hi - self.lo, 1e-6))
            np.clip(arr, 0.0, 1.0, out=arr)
        if self.invert:
            np.subtract(np.float32(1.0), arr, out=arr)
        return arr

    def _window_cw(self) -> tuple[float, float]:
        if self.function == "LINEAR_EXACT":
            return self.center, max(self.width, 1e-6)
        return self.center - 0.5, max(self.width - 1.0, 1e-6)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """float (...) in [0, 1] -> float64 stored values (not rounded), clipped to the stored range."""
        v = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
        if self.invert:
            v = 1.0 - v
        if self.voi == "window":
            if self.function == "SIGMOID":
                v = np.clip(v, 1e-6, 1 - 1e-6)
                arr = self.center - self.width / 4.0 * np.log(1.0 / v - 1.0)
            else:
                c, w = self._window_cw()
                arr = v * w + (c - w / 2.0)
        else:
            arr = self.lo + v * (self.hi - self.lo)
            if self.voi == "lut":
                xs, ys = self.voi_lut
                arr = _monotone_inverse(arr, xs, ys)
        if self.modality_lut is not None:
            xs, ys = self.modality_lut
            arr = _monotone_inverse(arr, xs, ys)
        elif self.slope != 1.0 or self.intercept != 0.0:
            arr = (arr - self.intercept) / self.slope
        return np.clip(arr, self.stored_lo, self.stored_hi)

    def to_stored(self, values: np.ndarray) -> np.ndarray:
        """Round float stored values to the image's dtype (clipped to its stored range)."""
        arr = np.clip(np.asarray(values, np.float64), self.stored_lo, self.stored_hi)
        if np.issubdtype(self.dtype, np.integer):
            arr = np.rint(arr)
        return arr.astype(self.dtype)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dtype": str(np.dtype(self.dtype)), "stored_range": [self.stored_lo, self.stored_hi],
                               "voi": self.voi, "monochrome1": self.invert}
        if self.modality_lut is not None:
            out["modality"] = "lut"
        elif self.slope != 1.0 or self.intercept != 0.0:
            out["modality"] = {"slope": self.slope, "intercept": self.intercept}
        if self.voi == "window":
            out["window"] = {"center": self.center, "width": self.width, "function": self.function}
        else:
            out["full_scale"] = [self.lo, self.hi]
        return out


def _monotone_inverse(y: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Invert a monotone table y = f(x) by interpolation (decreasing tables are reversed)."""
    order = np.argsort(ys, kind="stable")
    ys_sorted, xs_sorted = np.asarray(ys, np.float64)[order], np.asarray(xs, np.float64)[order]
    return np.interp(y, ys_sorted, xs_sorted)


def _lut_table(item: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """(input values, output values, bits) of a Modality or VOI LUT Sequence item."""
    desc = [int(v) for v in item.LUTDescriptor]
    n = desc[0] or 65536
    first = desc[1]
    bits = desc[2]
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, dtype=np.uint16 if bits > 8 else np.uint8)
    table = np.asarray(data, np.float64).reshape(-1)[:n]
    return first + np.arange(len(table), dtype=np.float64), table, bits


def dicom_intensity_map(ds: Any) -> IntensityMap:
    """The :class:`IntensityMap` of a DICOM dataset (modality LUT or rescale, VOI LUT or
    window, MONOCHROME1), following :func:`mammosynth.data.imaging.read_dicom` step by step."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    alloc = int(ds.get("BitsAllocated", 16))
    dtype = np.dtype(("int" if signed else "uint") + str(8 if alloc <= 8 else 16 if alloc <= 16 else 32))
    s_lo, s_hi = (float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)) if signed else (0.0, float(2**bits - 1))
    m = IntensityMap(dtype=dtype, stored_lo=s_lo, stored_hi=s_hi, lo=s_lo, hi=s_hi)
    if "ModalityLUTSequence" in ds:
        xs, ys, lut_bits = _lut_table(ds.ModalityLUTSequence[0])
        m.modality_lut = (xs, ys)
        m.lo, m.hi = 0.0, float(2**lut_bits - 1)
    else:
        m.slope = _first(ds.get("RescaleSlope", 1.0) or 1.0)
        m.intercept = _first(ds.get("RescaleIntercept", 0.0) or 0.0)
        if m.slope != 1.0 or m.intercept != 0.0:
            m.lo, m.hi = sorted((s_lo * m.slope + m.intercept, s_hi * m.slope + m.intercept))
    if "VOILUTSequence" in ds:
        xs, ys, lut_bits = _lut_table(ds.VOILUTSequence[0])
        m.voi, m.voi_lut = "lut", (xs, ys)
        m.lo, m.hi = 0.0, float(2 ** min(max(lut_bits, 8), 16) - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        m.voi = "window"
        m.center, m.width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        m.function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    m.invert = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper() == "MONOCHROME1"
    return m


def raster_intensity_map(arr: np.ndarray) -> IntensityMap:
    """The :class:`IntensityMap` of a PNG/TIFF/PGM array, as :func:`~mammosynth.data.imaging.read_image`
    normalises it: 8-bit over 255; wider integers over the smallest of 8/10/12/14/16 bits
    that holds the maximum; floats min-max."""
    if arr.dtype == bool:
        return IntensityMap(dtype=np.dtype(bool), stored_lo=0.0, stored_hi=1.0, lo=0.0, hi=1.0)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if arr.dtype == np.uint8:
            full = 255.0
        else:
            peak = float(arr.max()) if arr.size else 0.0
            full = next((float(2**b - 1) for b in (8, 10, 12, 14, 16) if peak <= 2**b - 1), float(info.max))
        # clip to the image's bit depth, so a 12-bit image stays 12-bit
        return IntensityMap(dtype=arr.dtype, stored_lo=float(max(info.min, 0)), stored_hi=full, lo=0.0, hi=full)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    return IntensityMap(dtype=arr.dtype, stored_lo=lo, stored_hi=hi, lo=lo, hi=max(hi, lo + 1e-6))


# --------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetRef:
    """Where one target lives: a file, or normal number ``index`` of an ``.h5`` store."""

    path: Path
    index: int | None = None

    @property
    def name(self) -> str:
        return f"{self.path}#normals/{self.index}" if self.index is not None else str(self.path)


def _is_dicom_file(p: Path) -> bool:
    if p.suffix.lower() in _DICOM_SUFFIXES:
        return True
    if p.suffix:  # other suffixes: images we know, or not images
        return False
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _is_image_file(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and (
        p.suffix.lower() in IMAGE_SUFFIXES or _is_dicom_file(p))


def discover_targets(inputs: Sequence[str | Path], split: str | None = None) -> list[TargetRef]:
    """Targets in ``inputs``: folders (recursive, sorted; ``masks/`` folders and hidden files
    skipped), image/DICOM files, or ``.h5`` stores (their normals of ``split``; None = all)."""
    refs: list[TargetRef] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if "masks" not in f.relative_to(p).parts[:-1]
                           and not any(part.startswith(".") for part in f.relative_to(p).parts) and _is_image_file(f))
            if not found:
                raise DataError(f"{p}: no DICOM, PNG, TIFF or PGM mammograms in this folder")
            refs.extend(TargetRef(f) for f in found)
        elif p.suffix.lower() in (".h5", ".hdf5"):
            from mammosynth.data.store import Store

            with Store(p) as store:
                idx = store.split_indices("normals", split)
            if len(idx) == 0:
                raise DataError(f"{p}: no normal mammograms{'' if split is None else f' in split {split!r}'}; "
                                "ingest normals or use `mammosynth data phantom`")
            refs.extend(TargetRef(p, int(i)) for i in idx)
        elif _is_image_file(p):
            refs.append(TargetRef(p))
        else:
            raise DataError(f"{p}: not a DICOM, PNG, TIFF or PGM image, nor an .h5 dataset file")
    return refs


# --------------------------------------------------------------------------------------
# metadata: spacing, laterality, view
# --------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^A-Za-z0-9]+", text.upper()) if w]


_LAT_WORDS = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}
_VIEW_WORDS = {"CC": "CC", "MLO": "MLO", "ML": "MLO"}


def laterality_view_from_text(text: str) -> tuple[str | None, str | None]:
    """(laterality, view) from words in a name: ``LEFT_CC``, ``R-MLO``, ``0_L-CC``, ``RCC``, ``lmlo``."""
    lat = view = None
    for w in _words(text):
        if w in _LAT_WORDS and lat is None:
            lat = _LAT_WORDS[w]
        elif w in _VIEW_WORDS and view is None:
            view = _VIEW_WORDS[w]
        elif len(w) >= 3 and w[0] in "LR" and w[1:] in _VIEW_WORDS:  # LCC, RMLO
            lat = lat or w[0]
            view = view or _VIEW_WORDS[w[1:]]
    return lat, view


@dataclass
class SideCsv:
    """Per-file metadata from CSVs beside the images: pixel spacing, laterality, view."""

    rows: dict[str, dict[str, str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @classmethod
    def for_folders(cls, folders: Sequence[Path]) -> "SideCsv":
        from mammosynth.data.readers import read_csv_rows

        out = cls()
        for folder in folders:
            for csv_path in sorted(Path(folder).glob("*.csv")):
                rows = list(read_csv_rows(csv_path))
                if not rows or "file" not in rows[0]:
                    continue
                out.files.append(str(csv_path))
                for row in rows:
                    name = row.get("file", "")
                    if name:
                        out.rows.setdefault(name, row)
                        out.rows.setdefault(Path(name).name, row)
                        out.rows.setdefault(Path(name).stem, row)
        return out

    def row(self, path: Path) -> dict[str, str]:
        return self.rows.get(path.name) or self.rows.get(path.stem) or {}

    def spacing(self, path: Path) -> float | None:
        row = self.row(path)
        for col in _SPACING_COLUMNS:
            if row.get(col):
                try:
                    v = float(row[col])
                except ValueError as err:
                    raise DataError(f"{path}: pixel spacing {row[col]!r} in the CSV is not a number") from err
                if v > 0 and math.isfinite(v):
                    return v
        return None


def dicom_spacing(ds: Any) -> tuple[float | None, str]:
    """(mm per pixel, source) of a DICOM dataset, or (None, "")."""
    if ds.get("PixelSpacing"):
        return _first(ds.PixelSpacing), "dicom:PixelSpacing"
    if ds.get("ImagerPixelSpacing"):
        emf = ds.get("EstimatedRadiographicMagnificationFactor")
        if emf:
            return _first(ds.ImagerPixelSpacing) / float(emf), "dicom:ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
        return _first(ds.ImagerPixelSpacing), "dicom:ImagerPixelSpacing"
    if ds.get("NominalScannedPixelSpacing"):
        return _first(ds.NominalScannedPixelSpacing), "dicom:NominalScannedPixelSpacing"
    return None, ""


def dicom_laterality_view(ds: Any) -> tuple[tuple[str | None, str], tuple[str | None, str]]:
    """((laterality, source), (view, source)) from a DICOM dataset's own attributes."""
    lat, lat_src = None, ""
    for key in ("ImageLaterality", "Laterality"):
        v = str(ds.get(key, "") or "").strip().upper()[:1]
        if v in ("L", "R"):
            lat, lat_src = v, f"dicom:{key}"
            break
    view, view_src = None, ""
    vp = str(ds.get("ViewPosition", "") or "").strip().upper()
    if vp in _VIEW_WORDS:
        view, view_src = _VIEW_WORDS[vp], "dicom:ViewPosition"
    if view is None and "ViewCodeSequence" in ds and len(ds.ViewCodeSequence):
        meaning = str(ds.ViewCodeSequence[0].get("CodeMeaning", "")).lower()
        if "cranio" in meaning:
            view, view_src = "CC", "dicom:ViewCodeSequence"
        elif "oblique" in meaning:
            view, view_src = "MLO", "dicom:ViewCodeSequence"
    if view is None or lat is None:
        # CBIS-DDSM and other converted archives write the view into identifiers (..._LEFT_CC)
        for key in ("PatientID", "SeriesDescription", "ProtocolName", "StudyDescription"):
            t_lat, t_view = laterality_view_from_text(str(ds.get(key, "") or ""))
            if lat is None and t_lat:
                lat, lat_src = t_lat, f"dicom:{key}"
            if view is None and t_view:
                view, view_src = t_view, f"dicom:{key}"
    return (lat, lat_src), (view, view_src)


@dataclass
class TargetInfo:
    """What is known of a target before its pixels are read (for the up-front checks)."""

    ref: TargetRef
    fmt: str  # dicom | png | tiff | pgm | store
    spacing_mm: float | None
    spacing_source: str
    laterality: str | None
    laterality_source: str
    view: str | None
    view_source: str


def probe_target(ref: TargetRef, side: SideCsv, fallback_spacing: float | None) -> TargetInfo:
    """Metadata of one target (DICOM header only, no pixels), with each value's source."""
    if ref.index is not None:
        from mammosynth.data.store import Store

        with Store(ref.path) as store:
            g = store.h5["normals"]
            scale = float(g["scale"][ref.index])
            sp = float(g["pixel_spacing_mm"][ref.index]) if "pixel_spacing_mm" in g else float("nan")
            lat = g["laterality"].asstr()[ref.index] or None
            view = g["view"].asstr()[ref.index] or None
        # the store keeps normals resized by `scale`: mm per store pixel = source spacing / scale
        if math.isfinite(sp) and sp > 0:
            spacing, src = sp / scale, "store:pixel_spacing_mm/scale"
        elif fallback_spacing:
            spacing, src = fallback_spacing / scale, "--pixel-spacing/scale"
        else:
            spacing, src = None, ""
        return TargetInfo(ref, "store", spacing, src, lat, "store" if lat else "", view, "store" if view else "")
    p = ref.path
    lat = view = None
    lat_src = view_src = ""
    spacing, src = None, ""
    fmt = "dicom" if _is_dicom_file(p) else _RASTER_FORMATS.get(p.suffix.lower(), "png")
    if fmt == "dicom":
        import pydicom

        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as err:
            raise DataError(f"{p}: not a readable DICOM file ({type(err).__name__}: {' '.join(str(err).split())})") from err
        spacing, src = dicom_spacing(ds)
        (lat, lat_src), (view, view_src) = dicom_laterality_view(ds)
    row = side.row(p)
    if spacing is None:
        spacing = side.spacing(p)
        src = "csv:pixel_spacing_mm" if spacing else ""
    if spacing is None and fallback_spacing:
        spacing, src = float(fallback_spacing), "--pixel-spacing"
    if lat is None and row.get("laterality", "").strip()[:1].upper() in ("L", "R"):
        lat, lat_src = row["laterality"].strip()[:1].upper(), "csv:laterality"
    if view is None and row.get("view", "").strip().upper() in _VIEW_WORDS:
        view, view_src = _VIEW_WORDS[row["view"].strip().upper()], "csv:view"
    n_lat, n_view = laterality_view_from_text(p.stem)
    if lat is None and n_lat:
        lat, lat_src = n_lat, "file name"
    if view is None and n_view:
        view, view_src = n_view, "file name"
    return TargetInfo(ref, fmt, spacing, src, lat, lat_src, view, view_src)


def probe_targets(refs: Sequence[TargetRef], fallback_spacing: float | None = None) -> list[TargetInfo]:
    """Probe every target; refuse (DataError, one line) when any has no known pixel spacing."""
    folders = sorted({r.path.parent for r in refs if r.index is None})
    side = SideCsv.for_folders(folders)
    infos = [probe_target(r, side, fallback_spacing) for r in refs]
    missing = [i for i in infos if not i.spacing_mm]
    if missing:
        first = missing[0].ref.name
        csv_note = f" nor in {', '.join(side.files)}" if side.files else " and no CSV with a pixel_spacing_mm column beside it"
        raise DataError(f"{first}: pixel spacing unknown ({len(missing)} of {len(infos)} images): not in the DICOM header"
                        f"{csv_note}; pass --pixel-spacing MM")
    return infos


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
@dataclass
class Target:
    """One mammogram ready for insertion, in its original orientation.

    ``stored``: (H, W) pixels as stored (native dtype); ``imap`` maps them to [0, 1] as the
    model's training data was normalised (applied to the windows the model sees, not to the
    whole image); ``small``: a block-mean copy in [0, 1] for segmentation (the block means
    of the stored values, then ``imap``); ``flipped``: the chest wall is on the right, so the
    image is mirrored for placement (seed 001) and restored afterwards.
    """

    info: TargetInfo
    stored: np.ndarray
    imap: IntensityMap
    flipped: bool
    chest_wall_source: str
    dataset: Any = None  # the pydicom Dataset of a DICOM target (written back with new pixels)
    breast_mask: np.ndarray | None = None  # known breast mask (store normals), original orientation
    source_id: str = ""
    notes: list[str] = field(default_factory=list)
    small: np.ndarray | None = None  # block-mean copy in [0, 1] (longer side ~ANATOMY_WORK_SIZE), factor small_f
    small_f: int = 1

    @property
    def stem(self) -> str:
        ref = self.info.ref
        return f"{ref.path.stem}_n{ref.index}" if ref.index is not None else ref.path.stem


def _read_raster_native(p: Path) -> np.ndarray:
    """PNG / TIFF / PGM pixels as stored (no scaling); colour images are refused."""
    from PIL import Image

    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            if mode in ("RGB", "RGBA", "P", "CMYK", "LA", "YCbCr"):
                raise DataError(f"{p}: colour image (mode {mode}); insert needs greyscale mammograms")
            arr = np.asarray(im)
    except DataError:
        raise
    except Exception as err:
        if p.suffix.lower() in (".tif", ".tiff"):
            try:
                import tifffile

                arr = np.asarray(tifffile.imread(p))
            except Exception as err2:
                raise DataError(f"{p}: cannot read image ({type(err2).__name__}: {err2})") from err2
        else:
            raise DataError(f"{p}: cannot read image ({type(err).__name__}: {err})") from err
    if arr.ndim != 2:
        raise DataError(f"{p}: expected a 2-D greyscale image, got shape {arr.shape}")
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)  # Pillow's mode I for 16-bit PGM
    return arr


def read_target(info: TargetInfo) -> Target:
    """Read one target's pixels (see :class:`Target`)."""
    ref = info.ref
    dataset = None
    breast = None
    source_id = ref.path.stem
    if info.fmt == "store":
        from mammosynth.data.store import Store

        with Store(ref.path) as store:
            g = store.h5["normals"]
            h, w = (int(v) for v in g["valid_hw"][ref.index])
            stored = g["image"][ref.index][:h, :w]
            breast = g["breast_mask"][ref.index][:h, :w].astype(bool)
            flipped_in_store = bool(g["flipped"][ref.index])
            source_id = g["source_id"].asstr()[ref.index]
        if flipped_in_store:  # the store keeps normals left-oriented; give back the original view
            stored, breast = np.ascontiguousarray(stored[:, ::-1]), np.ascontiguousarray(breast[:, ::-1])
        imap = IntensityMap(dtype=np.dtype(np.uint16), stored_lo=0.0, stored_hi=65535.0, lo=0.0, hi=65535.0)
        small, f = downsample(stored, ANATOMY_WORK_SIZE)
        return Target(info, stored, imap, flipped_in_store, "store", None, breast, source_id, [], imap.forward(small), f)
    if info.fmt == "dicom":
        import pydicom

        try:
            dataset = pydicom.dcmread(ref.path)
            stored = dataset.pixel_array
        except Exception as err:
            raise DataError(f"{ref.path}: cannot decode the DICOM pixel data ({type(err).__name__}: {' '.join(str(err).split())})") from err
        photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        if photometric not in ("MONOCHROME1", "MONOCHROME2") or stored.ndim != 2:
            raise DataError(f"{ref.path}: not a single-frame greyscale mammogram ({photometric}, shape {stored.shape})")
        imap = dicom_intensity_map(dataset)
        stored = np.ascontiguousarray(stored.astype(imap.dtype, copy=False))
    else:
        stored = _read_raster_native(ref.path)
        imap = raster_intensity_map(stored)
    if not stored.flags.writeable:  # Pillow hands out read-only buffers; insertion writes into the pixels
        stored = stored.copy()
    # block means of the stored values, then the intensity map: the same as mapping first for
    # rescale and full-scale maps; a VOI window only differs in blocks that straddle its edges
    small, f = downsample(stored, ANATOMY_WORK_SIZE)
    small = imap.forward(small)
    side = laterality_from_image(small)  # where the chest wall is, from the tissue
    notes = []
    if info.laterality is None:
        info.laterality, info.laterality_source = side, "image content"
    elif info.laterality != side:
        notes.append(f"laterality {info.laterality} ({info.laterality_source}) but the tissue lies on the "
                     f"{'left' if side == 'L' else 'right'}: the image decides the orientation")
    return Target(info, stored, imap, side == "R", "image", dataset, None, source_id, notes, small, f)


def iter_targets(infos: Sequence[TargetInfo], order: Sequence[int]) -> Iterator[tuple[int, Target | DataError]]:
    """Read targets one at a time in ``order`` (flat memory); unreadable ones yield their error."""
    for k in order:
        try:
            yield k, read_target(infos[k])
        except DataError as err:
            yield k, err
