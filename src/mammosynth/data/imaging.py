"""Imaging operations shared by the readers: file decoding, breast segmentation, orientation,
lesion ROI extraction.

Conventions (see :mod:`mammosynth.data.records`): images are float32 ``(H, W)`` in [0, 1]
with 1 = dense/bright (MONOCHROME2); masks are bool ``(H, W)``; boxes are ``(x, y, w, h)``
in pixels. A left-oriented image has the chest wall at ``x = 0``.

The seed-001 margin ring and noise-corrupted tissue patch live in ``data/context.py``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from mammosynth.data.records import DEFAULT_CONTEXT
from mammosynth.errors import DataError

#: File suffixes :func:`read_image` understands (lower case).
IMAGE_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".png", ".tif", ".tiff", ".pgm")
_DICOM_SUFFIXES = (".dcm", ".dicom")


# --------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------
def one_line_error(err: BaseException) -> str:
    """``Type: message`` on one line (pydicom's plugin errors span several lines)."""
    return f"{type(err).__name__}: " + " ".join(str(err).split())


def _value_text(value: Any) -> str:
    """A DICOM value as written (multi-values joined by the DICOM separator ``\\``)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _dicom_number(ds: Any, keyword: str, path: Path, default: float | None = None) -> float | None:
    """First value of a numeric DICOM element (DS/IS/US) as a finite float; ``default`` when
    the element is absent or empty. A value that is not a number (``RescaleSlope = abc``: a
    broken exporter) raises :class:`DataError` naming the file, the element and the value."""
    import warnings

    if keyword not in ds:
        return default
    with warnings.catch_warnings():  # pydicom warns "Invalid value for VR DS"; we say it once, below
        warnings.simplefilter("ignore")
        try:
            value = ds[keyword].value
        except Exception as err:
            raise DataError(f"{path}: {keyword} is unreadable ({one_line_error(err)})") from err
    if value is None or value == "" or (isinstance(value, (list, tuple)) and len(value) == 0):
        return default
    first = value[0] if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else value
    try:
        number = float(first)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {keyword} '{_value_text(value)}' is not a number") from None
    if not math.isfinite(number):
        raise DataError(f"{path}: {keyword} '{_value_text(value)}' is not a finite number")
    return number


def _pixel_spacing(ds: Any, path: Path, warnings: list[str]) -> float | None:
    """Pixel spacing in mm (PixelSpacing, else ImagerPixelSpacing), or None when absent. An
    unreadable or non-positive value does not cost the image: the other element is used, or
    the spacing is left unknown (the store keeps NaN), and a warning says which."""
    problems: list[str] = []
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            spacing = _dicom_number(ds, keyword, path)
        except DataError as err:
            problems.append(str(err))
            continue
        if spacing is None:
            continue
        if spacing <= 0:
            problems.append(f"{path}: {keyword} {spacing:g} is not a positive spacing")
            continue
        warnings.extend(f"{problem}; {keyword} used instead" for problem in problems)
        return spacing
    warnings.extend(f"{problem}; pixel spacing left unknown" for problem in problems)
    return None


def _stored_range(ds: Any) -> tuple[float, float]:
    """(min, max) a stored pixel can take, from BitsStored and PixelRepresentation."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 0:
        return 0.0, float(2**bits - 1)
    return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)


def _window(arr: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing to [0, 1] in float32 (LINEAR, LINEAR_EXACT, SIGMOID)."""
    if function == "SIGMOID":
        # C.11.2.1.3.1: y = 1 / (1 + exp(-4 (x - c) / w))
        out = np.exp(-4.0 * (arr - np.float32(center)) / np.float32(max(width, 1e-6)))
        out += 1.0
        np.reciprocal(out, out=out)
        return out
    if function == "LINEAR_EXACT":
        c, w = center, max(width, 1e-6)
    else:  # LINEAR: the standard's half-pixel offsets
        c, w = center - 0.5, max(width - 1.0, 1e-6)
    out = arr - np.float32(c - w / 2.0)
    out *= np.float32(1.0 / w)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def read_dicom(path: str | os.PathLike, apply_voi: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a mammogram DICOM as float32 ``(H, W)`` in [0, 1], MONOCHROME2 (bright = dense).

    Steps: modality LUT (RescaleSlope/Intercept or a Modality LUT Sequence), then the VOI
    transform when present and ``apply_voi`` (Window Center/Width with the file's
    VOILUTFunction, or a VOI LUT Sequence), scaled to [0, 1] by the output range of the last
    transform applied (the window, the LUT's bit depth, or the rescaled BitsStored range, so
    that 8-, 12- and 16-bit files land on one scale); finally MONOCHROME1 is inverted.

    Returns ``(image, meta)``; ``meta`` holds photometric, bits_stored, rows, columns,
    pixel_spacing_mm, laterality, view, patient_id, voi ("window" | "lut" | "none") and
    ``warnings`` (what was worked around: an unreadable PixelSpacing is left unknown, an
    invalid window width ignored). A missing, corrupt or truncated file, or a rescale or
    window value that is not a number, raises :class:`DataError` naming the file.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        ds = pydicom.dcmread(p)
    except Exception as err:  # InvalidDicomError, EOFError, struct errors on truncation
        raise DataError(f"{p}: not a readable DICOM file ({one_line_error(err)})") from err
    if "PixelData" not in ds:
        raise DataError(f"{p}: DICOM file has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataError(f"{p}: photometric interpretation {photometric!r} is not a greyscale mammogram")
    try:
        raw = ds.pixel_array
    except Exception as err:  # truncated pixel data, missing decoder plugin, bad header
        hint = ""
        if "plugin" in str(err).lower() or "handler" in str(err).lower():
            hint = " (a compressed transfer syntax: install pylibjpeg and pylibjpeg-openjpeg)"
        raise DataError(f"{p}: cannot decode pixel data ({one_line_error(err)}){hint}") from err
    if raw.ndim != 2:
        raise DataError(f"{p}: expected one 2-D frame, got pixel array of shape {raw.shape}")

    warnings: list[str] = []
    lo, hi = _stored_range(ds)
    if "ModalityLUTSequence" in ds:
        try:
            arr = apply_modality_lut(raw, ds).astype(np.float32)
            bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        except Exception as err:
            raise DataError(f"{p}: cannot apply its Modality LUT Sequence ({one_line_error(err)})") from err
        lo, hi = 0.0, float(2**bits - 1)
    else:
        slope = _dicom_number(ds, "RescaleSlope", p, 1.0)
        intercept = _dicom_number(ds, "RescaleIntercept", p, 0.0)
        if slope == 0.0:
            raise DataError(f"{p}: RescaleSlope is 0, which maps every pixel to one value")
        arr = raw.astype(np.float32)
        if slope != 1.0 or intercept != 0.0:
            arr *= np.float32(slope)
            arr += np.float32(intercept)
            lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    del raw

    voi = "none"
    if apply_voi and "VOILUTSequence" in ds:
        try:
            item = ds.VOILUTSequence[0]
            bits = int(item.LUTDescriptor[2])
            # LUT entries are indexed by integer modality values
            arr = apply_voi_lut(np.rint(arr).astype(np.int32), ds, prefer_lut=True).astype(np.float32)
        except Exception as err:
            raise DataError(f"{p}: cannot apply its VOI LUT Sequence ({one_line_error(err)})") from err
        lo, hi = 0.0, float(2 ** min(max(bits, 8), 16) - 1)
        voi = "lut"
    elif apply_voi and "WindowCenter" in ds and "WindowWidth" in ds:
        center = _dicom_number(ds, "WindowCenter", p)
        width = _dicom_number(ds, "WindowWidth", p)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        # PS3.3 C.11.2.1.2: LINEAR needs a width >= 1, LINEAR_EXACT and SIGMOID a width > 0;
        # a zero width would threshold the image into black and white, so it is ignored.
        valid_width = width is not None and (width > 0.0 if function in ("LINEAR_EXACT", "SIGMOID") else width >= 1.0)
        if center is None or width is None:
            pass
        elif not valid_width:
            warnings.append(f"{p}: WindowWidth {width:g} is not a valid {function} window; window ignored, "
                            "the image is scaled to its stored range")
        else:
            # Own float32 windowing: pydicom's apply_windowing works in float64 with boolean
            # masks, ~4x the memory and time on a 3328 x 4084 mammogram; same formulas.
            arr = _window(arr, center, width, function)
            lo, hi = 0.0, 1.0
            voi = "window"
    if voi != "window":
        arr -= np.float32(lo)
        arr *= np.float32(1.0 / max(hi - lo, 1e-6))
        np.clip(arr, 0.0, 1.0, out=arr)
    if photometric == "MONOCHROME1":  # 0 = white in MONOCHROME1
        np.subtract(np.float32(1.0), arr, out=arr)

    spacing = _pixel_spacing(ds, p, warnings)
    lat = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").strip().upper()[:1]
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    meta = {
        "path": str(p),
        "photometric": photometric,
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "rows": int(arr.shape[0]),
        "columns": int(arr.shape[1]),
        "pixel_spacing_mm": spacing,
        "laterality": lat if lat in ("L", "R") else None,
        "view": view if view in ("CC", "MLO") else (None if not view else "other"),
        "patient_id": str(ds.get("PatientID", "") or ""),
        "voi": voi,
        "warnings": warnings,
    }
    return arr.astype(np.float32, copy=False), meta


# --------------------------------------------------------------------------------------
# Other image files
# --------------------------------------------------------------------------------------
def _effective_max(arr: np.ndarray) -> float:
    """Full-scale value of an integer image: its dtype's range for 8 bits; for wider
    integers the smallest of 10/12/14/16 bits that holds the maximum (16-bit PNG/TIFF
    mammograms often carry 12- or 14-bit values)."""
    if arr.dtype == np.uint8:
        return 255.0
    peak = float(arr.max()) if arr.size else 0.0
    for bits in (8, 10, 12, 14, 16):
        if peak <= 2**bits - 1:
            return float(2**bits - 1)
    return float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else max(peak, 1.0)


def _read_raster(p: Path) -> np.ndarray:
    """Decode PNG / TIFF / PGM into a 2-D numpy array (greyscale; colour is averaged)."""
    from PIL import Image

    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK"):
                im = im.convert("L")
            arr = np.asarray(im)
    except Exception as err:
        if p.suffix.lower() in (".tif", ".tiff"):
            try:  # float or exotic TIFFs Pillow cannot decode
                import tifffile

                arr = np.asarray(tifffile.imread(p))
            except Exception as err2:
                raise DataError(f"{p}: cannot read image ({one_line_error(err2)})") from err2
        else:
            raise DataError(f"{p}: cannot read image ({one_line_error(err)})") from err
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=-1) if arr.shape[-1] in (3, 4) else arr[0]
    if arr.ndim != 2:
        raise DataError(f"{p}: expected a 2-D greyscale image, got shape {arr.shape}")
    return arr


def read_image(path: str | os.PathLike, with_meta: bool = False):
    """Read a png / tif / pgm / dcm file as float32 ``(H, W)`` in [0, 1] (bright = dense).

    DICOM goes through :func:`read_dicom`. Integer rasters are divided by their full scale
    (see :func:`_effective_max`); float rasters are min-max scaled over their finite pixels,
    NaN/inf pixels become 0 with a warning in ``meta["warnings"]`` (an all-NaN image is a
    :class:`DataError`). Returns the image, or ``(image, meta)`` when ``with_meta``.
    Unreadable files raise :class:`DataError`.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in _DICOM_SUFFIXES:
        img, meta = read_dicom(p)
        return (img, meta) if with_meta else img
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"{p}: unsupported image type {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    arr = _read_raster(p)
    warnings: list[str] = []
    if arr.dtype == bool:
        img = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        img = arr.astype(np.float32) / np.float32(_effective_max(arr))
    else:
        a = arr.astype(np.float32)
        finite = np.isfinite(a)
        n_bad = int(a.size - np.count_nonzero(finite))
        if n_bad == a.size:
            raise DataError(f"{p}: no finite pixel values (every pixel is NaN or infinite)")
        lo, hi = (float(a.min()), float(a.max())) if n_bad == 0 else (float(a[finite].min()), float(a[finite].max()))
        img = (a - lo) / max(hi - lo, 1e-6)
        if n_bad:
            img[~finite] = 0.0
            warnings.append(f"{p}: {n_bad} of {a.size} pixels are NaN or infinite; set to 0 (background)")
    img = np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)
    meta = {"path": str(p), "rows": img.shape[0], "columns": img.shape[1], "dtype": str(arr.dtype),
            "pixel_spacing_mm": None, "laterality": None, "view": None, "warnings": warnings}
    return (img, meta) if with_meta else img


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file (png / tif / pgm / dcm) as bool: any non-zero pixel is lesion."""
    p = Path(path)
    if p.suffix.lower() in _DICOM_SUFFIXES:
        return read_dicom(p, apply_voi=False)[0] > 0.5
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    return _read_raster(p) > 0


def is_binary_mask(image: np.ndarray) -> bool:
    """True when an image holds only 0 and one other level (a 0/255 ROI mask), or only 0
    (an empty mask). Tells a CBIS-DDSM ROI mask from a cropped lesion image when both are
    named ``000000.dcm``: a crop of real tissue has many grey levels."""
    stride = max(1, image.size >> 20)
    sample = image.ravel()[::stride]
    values = np.unique(sample)
    if len(values) > 2 or values[0] != 0:
        return False
    if stride > 1:  # confirm on the whole image
        return bool(np.all((image == 0) | (image == values[-1])))
    return True


# --------------------------------------------------------------------------------------
# Breast segmentation and orientation
# --------------------------------------------------------------------------------------
def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Downsample by an integer factor with block means (fast, alias-free enough for masks)."""
    if factor <= 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3), dtype=np.float32)


#: ``open_frac`` of the breast masks the store keeps for full-field images (ingest, the
#: downstream benchmark's films): about 3 mm on a 20 cm film. At 0.02 it began to cut the thin
#: axillary tail of a real MLO view (reference-mammograms/0_L-MLO).
STORE_OPEN_FRAC = 0.015


def _largest_component(fg: np.ndarray) -> np.ndarray | None:
    """The largest (4-connected) component of a bool image, or None when it is empty."""
    from scipy import ndimage

    labels, n = ndimage.label(fg)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def breast_mask(image: np.ndarray, work_size: int = 1024, open_frac: float = 0.0) -> np.ndarray:
    """Breast region of a mammogram: Otsu threshold (on log intensity), the largest component
    after an opening that cuts thin bridges, back out to the skin line, holes filled.

    Film labels, scanner strips and markers are bright too, and on digitised film (mini-MIAS)
    they often touch the breast through a film-edge strip, so the largest Otsu component
    alone takes them in (34 of the 210 mini-MIAS films lose more than 0.5 % of their old mask,
    labels and film strips, once the bridges are cut). The opening (a disk of radius
    ``open_frac`` x the longer side) separates them; the breast's component is then grown
    back by the same radius inside the Otsu foreground, which restores the skin line and the
    nipple that the opening rounded, without reaching a label more than that radius away.
    Morphology runs on Euclidean distance transforms (linear time). ``open_frac=0`` (the
    default) gives the plain largest Otsu component; the store's full-field masks use
    :data:`STORE_OPEN_FRAC`. The pectoral search of ``insert`` keeps the plain component: its
    content-only MLO test was calibrated on it (CBIS-DDSM MLO edges 0.53-0.77), and on a
    framed CBIS-DDSM film the cut mask lowers one MLO edge to 0.41.

    ``image`` (H, W) in [0, 1]; returns bool (H, W). Large images are segmented on a
    block-mean copy whose longer side is about ``work_size`` and upsampled by nearest
    neighbour (the boundary is then exact to a few source pixels; the store keeps normals at
    about 1024 px anyway). An image with no contrast gives an all-False mask.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    img = np.asarray(image, dtype=np.float32)
    factor = max(1, int(math.ceil(max(img.shape) / float(work_size))))
    small = _block_mean(img, factor)
    if small.size == 0 or float(small.max()) - float(small.min()) < 1e-6:
        return np.zeros(img.shape, bool)
    # Otsu in the log domain: on linear intensities a mammogram's histogram has three modes
    # (air, fat, dense tissue) and Otsu splits fat from dense tissue; the log compresses the
    # tissue modes so the threshold falls between air and breast.
    log_small = np.log1p(np.float32(100.0) * np.clip(small, 0.0, None))
    fg = log_small > threshold_otsu(log_small)
    largest = _largest_component(fg)
    if largest is None:
        return np.zeros(img.shape, bool)
    r = float(open_frac) * max(fg.shape)
    if r >= 1.0:
        # opening = erosion then dilation by a disk of radius r, both as distance thresholds
        eroded = ndimage.distance_transform_edt(fg) > r
        opened = ndimage.distance_transform_edt(~eroded) <= r
        core = _largest_component(opened & largest)
        if core is not None:  # grow back to the skin line, never further than r from the core
            largest = _largest_component((ndimage.distance_transform_edt(~core) <= r) & fg)
    largest = ndimage.binary_fill_holes(largest)
    if factor == 1:
        return largest
    full = np.zeros(img.shape, bool)
    up = np.repeat(np.repeat(largest, factor, axis=0), factor, axis=1)
    hh, ww = min(up.shape[0], img.shape[0]), min(up.shape[1], img.shape[1])
    full[:hh, :ww] = up[:hh, :ww]
    if hh < img.shape[0]:  # remainder rows/cols beyond the last whole block copy their neighbour
        full[hh:, :ww] = full[hh - 1 : hh, :ww]
    if ww < img.shape[1]:
        full[:, ww:] = full[:, ww - 1 : ww]
    return full


def laterality_from_image(image: np.ndarray) -> str:
    """"L" if the left half of the image holds more tissue (chest wall at x = 0), else "R".

    Tissue is the image intensity summed per half on a block-mean copy; this follows the
    usual display, where a left breast's chest wall is on the image's left edge.
    """
    img = np.asarray(image, dtype=np.float32)
    small = _block_mean(img, max(1, max(img.shape) // 512))
    half = small.shape[1] // 2
    left = float(small[:, :half].sum())
    right = float(small[:, small.shape[1] - half :].sum())
    return "L" if left >= right else "R"


def flip_to_left(image: np.ndarray, laterality: str | None) -> np.ndarray:
    """Mirror a right breast so the chest wall is at x = 0; a left (or unknown) one is returned as is."""
    if laterality is not None and str(laterality).upper().startswith("R"):
        return np.ascontiguousarray(image[:, ::-1])
    return image


# --------------------------------------------------------------------------------------
# Lesion ROI
# --------------------------------------------------------------------------------------
def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the True pixels of ``mask``, or None if it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def roi_window(
    bbox: tuple[int, int, int, int], image_hw: tuple[int, int], context: float = DEFAULT_CONTEXT
) -> tuple[int, int, int]:
    """Square window (x0, y0, side) around a lesion box: side = larger box side x (1 + 2 context).

    The window is centred on the box, then shifted (not shrunk) to lie inside the image on
    every axis where the image is at least ``side`` long, so real tissue rather than padding
    fills it. On an axis where the image is shorter, it stays centred and spills over.
    """
    x, y, w, h = bbox
    H, W = image_hw
    side = max(1, int(math.ceil(max(w, h) * (1.0 + 2.0 * context))))
    starts = []
    for lo, length, extent in ((x, w, W), (y, h, H)):
        start = int(math.floor(lo + length / 2.0 - side / 2.0))
        if extent >= side:
            start = min(max(start, 0), extent - side)
        starts.append(start)
    return starts[0], starts[1], side


def _crop_pad(arr: np.ndarray, x0: int, y0: int, side: int, mode: str) -> np.ndarray:
    H, W = arr.shape
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, W), min(y0 + side, H)
    core = arr[ya:yb, xa:xb]
    pads = ((ya - y0, y0 + side - yb), (xa - x0, x0 + side - xb))
    if pads == ((0, 0), (0, 0)):
        return core.copy()
    if mode == "constant":
        return np.pad(core, pads, mode="constant")
    return np.pad(core, pads, mode="symmetric")


def extract_roi(
    image: np.ndarray, mask: np.ndarray, context: float = DEFAULT_CONTEXT
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Square, context-padded lesion crop at native resolution.

    ``image`` (H, W) float in [0, 1], ``mask`` (H, W) bool. The crop spans the mask's bbox
    enlarged by ``context`` x its larger side on each side (see :func:`roi_window`); where
    the image is too small the image is mirrored (symmetric padding) and the mask padded
    with False. Returns ``(patch (S, S) float32, patch_mask (S, S) bool, bbox)`` with
    ``bbox`` the lesion's (x, y, w, h) in the full image. Raises DataError on an empty mask
    or a size mismatch.
    """
    if image.shape != mask.shape:
        raise DataError(f"mask size {mask.shape} differs from image size {image.shape}")
    bbox = mask_bbox(mask)
    if bbox is None:
        raise DataError("the lesion mask is empty")
    x0, y0, side = roi_window(bbox, image.shape, context)
    patch = _crop_pad(np.asarray(image, np.float32), x0, y0, side, "symmetric")
    patch_mask = _crop_pad(mask.astype(bool), x0, y0, side, "constant")
    return patch.astype(np.float32, copy=False), patch_mask, bbox


def pad_to_square(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre a non-square crop in a square (mirrored image, False mask) so resizing keeps its aspect."""
    H, W = image.shape
    side = max(H, W)
    x0, y0 = -((side - W) // 2), -((side - H) // 2)
    return _crop_pad(np.asarray(image, np.float32), x0, y0, side, "symmetric"), _crop_pad(mask.astype(bool), x0, y0, side, "constant")


def ellipse_in_box(shape_hw: tuple[int, int], box_xyxy: tuple[float, float, float, float]) -> np.ndarray:
    """Bool mask (H, W) of the ellipse inscribed in the box (xmin, ymin, xmax, ymax), in pixels."""
    from skimage.draw import ellipse

    x0, y0, x1, y1 = box_xyxy
    mask = np.zeros(shape_hw, bool)
    rr, cc = ellipse((y0 + y1) / 2.0, (x0 + x1) / 2.0, max((y1 - y0) / 2.0, 0.5), max((x1 - x0) / 2.0, 0.5), shape=shape_hw)
    mask[rr, cc] = True
    return mask


def polygon_mask(shape_hw: tuple[int, int], points_xy: np.ndarray) -> np.ndarray:
    """Bool mask (H, W) of a polygon given as (N, 2) (x, y) vertices in pixels."""
    from skimage.draw import polygon

    mask = np.zeros(shape_hw, bool)
    pts = np.asarray(points_xy, dtype=np.float64)
    rr, cc = polygon(pts[:, 1], pts[:, 0], shape=shape_hw)
    mask[rr, cc] = True
    return mask


def disk_mask(shape_hw: tuple[int, int], center_xy: tuple[float, float], radius: float) -> np.ndarray:
    """Bool mask (H, W) of a filled circle (mini-MIAS lesion annotations)."""
    from skimage.draw import disk

    mask = np.zeros(shape_hw, bool)
    rr, cc = disk((center_xy[1], center_xy[0]), max(radius, 0.5), shape=shape_hw)
    mask[rr, cc] = True
    return mask
