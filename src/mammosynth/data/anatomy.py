"""Breast anatomy for lesion placement: breast region, pectoral muscle (MLO), skin-line distance.

Conventions as in :mod:`mammosynth.data.imaging`: images float32 ``(H, W)`` in [0, 1], bright =
dense, **left-oriented** (chest wall at ``x = 0``); masks bool ``(H, W)``.

Pectoral muscle (MLO views). The muscle is the bright, roughly triangular region in the upper
chest-wall corner, bounded by a nearly straight edge that runs from the top of the image down
to the chest wall. It is found in two steps, the classical straight-line-then-refine scheme of
Kwok et al. (IEEE TMI 23(9), 2004):

1. **line**: on a copy about 256 px high, every line from (chest wall + a, top) to
   (chest wall, top + b) is scored by the contrast between a thin band just inside it and a
   band just outside it (mean intensity, breast pixels only); the best-scoring line whose
   contrast exceeds ``min_contrast`` times the breast's intensity spread is the muscle's edge;
2. **refine**: row by row, the edge is moved to the steepest bright-to-dark step within a
   window around the line, and the per-row positions are median-filtered, so a gently curved
   edge is followed.

Where no line passes the contrast test (a CC view, or an MLO without a visible muscle) the
pectoral mask is empty and :attr:`PectoralResult.found` is False, which also serves as the
image-content answer to "is this an MLO view?".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mammosynth.data.imaging import breast_mask as segment_breast
from mammosynth.errors import DataError

#: Contrast a pectoral edge needs, as a fraction of the breast's intensity spread (std).
#: Measured on the phantom (MLO edges 0.9-1.6, CC best lines 0.1-0.35) and on the real MLO
#: films of mini-MIAS and CBIS-DDSM (see tests/test_anatomy.py and docs/insert.md).
PECTORAL_MIN_CONTRAST = 0.5


@dataclass
class PectoralResult:
    """The pectoral muscle of a left-oriented view."""

    mask: np.ndarray  # (H, W) bool, empty when not found
    found: bool
    contrast: float  # best line's inner-minus-outer band contrast / breast std
    line: tuple[float, float] | None  # (a, b): the edge meets the top at x = x_cw + a, the chest wall at y = y_top + b (px)


def _work_copy(image: np.ndarray, breast: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Block-mean copies about ``rows`` high (integer factor, so coordinates map back exactly)."""
    from mammosynth.data.store import block_mean

    f = max(1, int(image.shape[0] // rows))
    if f == 1:
        return image.astype(np.float32, copy=False), breast.astype(bool), 1
    return block_mean(image, f), block_mean(breast.astype(np.float32), f) >= 0.5, f


def detect_pectoral(image: np.ndarray, breast: np.ndarray, min_contrast: float = PECTORAL_MIN_CONTRAST,
                    work_rows: int = 256) -> PectoralResult:
    """Pectoral muscle of a left-oriented mammogram (see the module docstring).

    ``image`` (H, W) float in [0, 1], ``breast`` (H, W) bool. Returns a :class:`PectoralResult`
    whose mask is at the input's resolution.
    """
    from scipy import ndimage

    H, W = image.shape
    empty = PectoralResult(np.zeros((H, W), bool), False, 0.0, None)
    small, bsmall, f = _work_copy(image, breast, work_rows)
    h, w = small.shape
    if bsmall.sum() < 100:
        return empty
    vals = small[bsmall]
    spread = float(vals.std())
    if spread < 1e-6:
        return empty
    cols = np.flatnonzero(bsmall.any(axis=0))
    x_cw = int(cols[0])  # chest-wall column of the breast
    rows_at_wall = np.flatnonzero(bsmall[:, x_cw: x_cw + max(2, w // 50)].any(axis=1))
    y_top = int(rows_at_wall[0])  # where the breast starts along the chest wall
    Wb = int(cols[-1]) - x_cw + 1
    Hb = int(np.flatnonzero(bsmall.any(axis=1))[-1]) - y_top + 1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xr, yr = xx - x_cw, yy - y_top
    region = bsmall & (xr >= 0) & (yr >= 0)
    band = max(2.0, 0.04 * min(Wb, Hb))  # band width, work pixels
    best = (-np.inf, None)
    # a muscle spans a good part of the breast's top and chest wall (smaller triangles are
    # dense-tissue corners of CC views)
    for a in np.linspace(0.15, 0.85, 22) * Wb:
        for b in np.linspace(0.2, 1.0, 25) * Hb:
            norm = math.hypot(a, b)
            # signed distance to the line x/a + y/b = 1 (negative on the muscle side)
            d = (xr * b + yr * a - a * b) / norm
            inner = region & (d > -band) & (d <= 0)
            outer = region & (d > 0) & (d <= band)
            n_in, n_out = int(inner.sum()), int(outer.sum())
            if n_in < 20 or n_out < 20:
                continue
            # the edge must run through the breast, not along the skin line
            expected = band * norm
            if n_out < 0.6 * expected or n_in < 0.6 * expected:
                continue
            score = (float(small[inner].mean()) - float(small[outer].mean())) / spread
            if score > best[0]:
                best = (score, (float(a), float(b)))
    score, line = best
    if line is None or score < min_contrast:
        return PectoralResult(empty.mask, False, float(max(score, 0.0)) if np.isfinite(score) else 0.0, None)
    a, b = line
    # refine row by row: the steepest bright-to-dark step near the line
    sm = ndimage.gaussian_filter(small, 1.0)
    edge = np.full(h, -1.0)
    half = max(3, int(0.08 * a))
    for y in range(y_top, min(h, int(math.ceil(y_top + b)))):
        x_line = x_cw + a * (1.0 - (y - y_top) / b)
        lo, hi = max(x_cw, int(x_line) - half), min(w - 1, int(x_line) + half)
        if hi - lo < 3:
            edge[y] = x_line
            continue
        prof = sm[y, lo: hi + 1]
        step = prof[:-2] - prof[2:]  # positive where intensity falls to the right
        k = int(np.argmax(step))
        edge[y] = lo + k + 1 if step[k] > 0 else x_line
    valid = edge >= 0
    if valid.sum() >= 5:
        edge[valid] = ndimage.median_filter(edge[valid], size=min(max(15, int(b) // 6) | 1, int(valid.sum()) | 1), mode="nearest")
    small_mask = np.zeros((h, w), bool)
    for y in np.flatnonzero(valid):
        small_mask[y, : max(0, int(round(edge[y])) + 1)] = True
    small_mask &= bsmall
    mask = _upsample_mask(small_mask, f, (H, W)) & breast
    return PectoralResult(mask, True, float(score), (a * f, b * f))


def _upsample_mask(small: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling by an integer factor to ``shape`` (edges copy their neighbour)."""
    if f == 1:
        return small[: shape[0], : shape[1]].copy()
    up = np.repeat(np.repeat(small, f, axis=0), f, axis=1)[: shape[0], : shape[1]]
    if up.shape != shape:
        up = np.pad(up, ((0, shape[0] - up.shape[0]), (0, shape[1] - up.shape[1])), mode="edge")
    return up


def skin_distance_mm(breast: np.ndarray, spacing_mm: float, work_size: int = 1024) -> tuple[np.ndarray, int]:
    """Distance (mm) from every breast pixel to the skin line (the nearest non-breast pixel).

    Image borders do not count as skin (the chest wall and a cut-off breast are at the border).
    Computed on a copy whose longer side is about ``work_size`` (factor ``f``); returns the
    small distance map and ``f``. A breast pixel of the full image at (y, x) is at least
    ``dist[y // f, x // f] - f * spacing_mm`` from the skin.
    """
    from scipy import ndimage

    from mammosynth.data.store import block_mean

    f = max(1, int(math.ceil(max(breast.shape) / float(work_size))))
    small = block_mean(breast.astype(np.float32), f) >= 0.5 if f > 1 else breast.astype(bool)
    return ndimage.distance_transform_edt(small).astype(np.float32) * np.float32(spacing_mm * f), f


@dataclass
class Anatomy:
    """Where a lesion may go in one left-oriented view (all masks (H, W) bool)."""

    breast: np.ndarray
    pectoral: np.ndarray
    core: np.ndarray  # breast, off the pectoral muscle, at least skin_margin_mm from the skin
    pectoral_found: bool
    pectoral_contrast: float
    skin_margin_mm: float

    @property
    def changeable(self) -> np.ndarray:
        """Pixels a lesion's margin ring may touch: the breast without the pectoral muscle."""
        return self.breast & ~self.pectoral


def breast_anatomy(image: np.ndarray, spacing_mm: float, view: str | None, skin_margin_mm: float = 5.0,
                   pectoral_margin_mm: float = 2.0, breast: np.ndarray | None = None,
                   detect_muscle: bool | None = None) -> Anatomy:
    """Breast mask, pectoral muscle and the allowed lesion region of a left-oriented view.

    ``view``: "MLO" runs the pectoral detection, "CC" skips it, None/"other" runs it and lets
    the image decide (``detect_muscle`` overrides). The pectoral mask is dilated by
    ``pectoral_margin_mm`` so a lesion does not touch the muscle's edge. ``breast`` may be
    given (e.g. a store's breast mask); otherwise it is segmented (Otsu, largest component).
    """
    from scipy import ndimage

    if spacing_mm is None or not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise DataError(f"pixel spacing must be a positive number of mm, got {spacing_mm!r}")
    bmask = segment_breast(image) if breast is None else np.asarray(breast, bool)
    if detect_muscle is None:
        detect_muscle = view != "CC"
    pect = PectoralResult(np.zeros(bmask.shape, bool), False, 0.0, None)
    if detect_muscle and bmask.any():
        pect = detect_pectoral(image, bmask)
    pmask = pect.mask
    if pect.found and pectoral_margin_mm > 0:
        # dilate on a coarse copy (cheap on a 13-megapixel view); the margin is approximate to a work pixel
        small, _, f = _work_copy(pmask.astype(np.float32), bmask, 512)
        r = max(1, int(round(pectoral_margin_mm / (spacing_mm * f))))
        grown = ndimage.binary_dilation(small >= 0.5, iterations=r)
        pmask = (_upsample_mask(grown, f, bmask.shape) | pmask) & bmask
    dist, f = skin_distance_mm(bmask, spacing_mm)
    far = _upsample_mask(dist >= skin_margin_mm + f * spacing_mm, f, bmask.shape)
    core = bmask & ~pmask & far
    return Anatomy(breast=bmask, pectoral=pmask, core=core, pectoral_found=pect.found,
                   pectoral_contrast=pect.contrast, skin_margin_mm=float(skin_margin_mm))
