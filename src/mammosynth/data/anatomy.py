"""Breast anatomy for lesion placement: breast region, pectoral muscle (MLO), skin-line distance.

Conventions as in :mod:`mammosynth.data.imaging`: images float32 ``(H, W)`` in [0, 1], bright =
dense, **left-oriented** (chest wall at ``x = 0``); masks bool ``(H, W)``.

Pectoral muscle (MLO views). The muscle is the bright, roughly triangular region in the upper
chest-wall corner, bounded by a nearly straight edge that runs from the top of the image down
to the chest wall. It is found in two steps, the classical straight-line-then-refine scheme of
Kwok et al. (IEEE TMI 23(9), 2004):

1. **line**: on a copy about 256 px high, lines from (chest wall + a, top) to
   (chest wall, top + b) (a 12 x 12 grid, then a 7 x 7 grid around the best) are scored by the contrast between a thin band just inside it and a
   band just outside it (mean intensity, breast pixels only); the best-scoring line whose
   contrast exceeds ``min_contrast`` times the breast's intensity spread is the muscle's edge;
2. **refine**: row by row, the edge is moved to the steepest bright-to-dark step within a
   window around the line, and the per-row positions are median-filtered, so a gently curved
   edge is followed.

Where no line passes the contrast test (a CC view, or an MLO without a visible muscle) the
pectoral mask is empty and :attr:`PectoralResult.found` is False, which also serves as the
image-content answer to "is this an MLO view?" (with a stricter threshold than when the
metadata already says MLO).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mammosynth.data.imaging import breast_mask as segment_breast
from mammosynth.errors import DataError

#: Longer side of the work grid on which insertion segments the breast, finds the muscle and
#: measures skin distances (a 4084-row mammogram: blocks of 8 px, 0.56 mm at 0.07 mm/px).
ANATOMY_WORK_SIZE = 512

#: Contrast a pectoral edge needs, as a fraction of the breast's intensity spread (std), when
#: the image must say whether it is an MLO view at all. On the phantom, MLO edges score
#: 0.7-1.3 and the best line of a CC view 0.26-0.52 (density D); on CBIS-DDSM, MLO 0.53-0.77
#: and CC 0.27-0.30 (docs/insert.md).
PECTORAL_MIN_CONTRAST = 0.5
#: ... and when the header, CSV or file name already says MLO: most real MLO films have a
#: fainter edge (mini-MIAS normal films: median 0.52, 5th percentile 0.30), and excluding a
#: wrong triangle only costs placement room, while missing the muscle puts lesions on it.
PECTORAL_MIN_CONTRAST_MLO = 0.3


@dataclass
class PectoralResult:
    """The pectoral muscle of a left-oriented view."""

    mask: np.ndarray  # (H, W) bool, empty when not found
    found: bool
    contrast: float  # best line's inner-minus-outer band contrast / breast std
    line: tuple[float, float] | None  # (a, b): the edge meets the top at x = x_cw + a, the chest wall at y = y_top + b (px)


def _work_copy(image: np.ndarray, breast: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Block-mean copies about ``rows`` high (integer factor, so coordinates map back exactly)."""
    f = max(1, int(image.shape[0] // rows))
    if f == 1:
        return image.astype(np.float32, copy=False), breast.astype(bool), 1
    size = int(math.ceil(max(image.shape) / f))
    return downsample(image, size)[0], downsample(breast.astype(np.float32), size)[0] >= 0.5, f


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
    band = max(2.0, 0.04 * min(Wb, Hb))  # band width, work pixels
    # only the upper chest-wall part of the breast can hold the muscle's edge
    y1, x1 = min(h, int(y_top + Hb + band + 2)), min(w, int(x_cw + 0.9 * Wb + band + 2))
    roi = small[:y1, :x1]
    yr, xr = np.mgrid[0:y1, 0:x1].astype(np.float32)
    xr -= x_cw
    yr -= y_top
    region = bsmall[:y1, :x1] & (xr >= 0) & (yr >= 0)

    def score(a: float, b: float) -> float:
        norm = math.hypot(a, b)
        d = (xr * b + yr * a - a * b) / norm  # signed distance to x/a + y/b = 1, negative on the muscle side
        inner = region & (d > -band) & (d <= 0)
        outer = region & (d > 0) & (d <= band)
        n_in, n_out = int(np.count_nonzero(inner)), int(np.count_nonzero(outer))
        # the edge must run through the breast over its length, not along the skin line
        if min(n_in, n_out) < max(20.0, 0.6 * band * norm):
            return -np.inf
        return (float(roi[inner].mean()) - float(roi[outer].mean())) / spread

    # coarse to fine: a muscle spans a good part of the breast's top and chest wall (smaller
    # triangles are dense-tissue corners of CC views)
    a_grid, b_grid = np.linspace(0.15, 0.85, 12) * Wb, np.linspace(0.2, 1.0, 12) * Hb
    best = max(((score(a, b), (float(a), float(b))) for a in a_grid for b in b_grid), key=lambda t: t[0])
    if best[1] is not None and np.isfinite(best[0]):
        da, db = a_grid[1] - a_grid[0], b_grid[1] - b_grid[0]
        a0, b0 = best[1]
        fine = ((score(a, b), (float(a), float(b))) for a in np.linspace(a0 - da, a0 + da, 7)
                for b in np.linspace(b0 - db, b0 + db, 7) if a > 0 and b > 0)
        best = max([best, *fine], key=lambda t: t[0])
    best_score, line = best
    if line is None or not np.isfinite(best_score) or best_score < min_contrast:
        return PectoralResult(empty.mask, False, float(max(best_score, 0.0)) if np.isfinite(best_score) else 0.0, None)
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
    return PectoralResult(mask, True, float(best_score), (a * f, b * f))


def _upsample_mask(small: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling by an integer factor to ``shape`` (edges copy their neighbour)."""
    if f == 1:
        return small[: shape[0], : shape[1]].copy()
    up = np.repeat(np.repeat(small, f, axis=0), f, axis=1)[: shape[0], : shape[1]]
    if up.shape != shape:
        up = np.pad(up, ((0, shape[0] - up.shape[0]), (0, shape[1] - up.shape[1])), mode="edge")
    return up


def downsample(image: np.ndarray, work_size: int = 1024) -> tuple[np.ndarray, int]:
    """Block-mean copy whose longer side is at most about ``work_size``, and its integer factor
    ``f``: small pixel (i, j) is the mean of full pixels [i f, (i + 1) f) x [j f, (j + 1) f);
    trailing rows/columns that do not fill a block are dropped. For even factors >= 4 the mean
    is over every other row and column of the block (a quarter of the memory reads: on a
    13-megapixel mammogram this halves the time, and a mean of 16+ pixels is smooth enough to
    segment). Pass a C-contiguous image (a mirrored view is several times slower); mirror the
    small copy instead."""
    f = max(1, int(math.ceil(max(image.shape) / float(work_size))))
    if f == 1:
        return np.asarray(image, np.float32), 1
    h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    step = 2 if f >= 4 and f % 2 == 0 else 1
    k = f // step
    blocks = np.asarray(image)[:h:step, :w:step].reshape(h // f, k, w // f, k)
    return blocks.sum(axis=(1, 3), dtype=np.float32) * np.float32(1.0 / (k * k)), f


def skin_distance_mm(breast: np.ndarray, spacing_mm: float, work_size: int = 1024) -> tuple[np.ndarray, int]:
    """Distance (mm) from every breast pixel to the skin line (the nearest non-breast pixel).

    Image borders do not count as skin (the chest wall and a cut-off breast are at the border).
    Computed on a copy whose longer side is about ``work_size`` (factor ``f``); returns the
    small distance map and ``f``. A breast pixel of the full image at (y, x) is at least
    ``dist[y // f, x // f] - f * spacing_mm`` from the skin.
    """
    from scipy import ndimage

    small, f = downsample(breast.astype(np.float32), work_size)
    return ndimage.distance_transform_edt(small >= 0.5).astype(np.float32) * np.float32(spacing_mm * f), f


@dataclass
class Anatomy:
    """Where a lesion may go in one left-oriented view.

    Masks are kept on the work grid (block factor ``f``; small bool arrays) and read at full
    resolution only where a lesion is tried (:meth:`crop`): full pixel (y, x) belongs to small
    pixel (y // f, (x - x_off) // f), clipped to the grid (edge rows and columns that fill no
    block copy their neighbour). ``x_off`` is nonzero for a mirrored view whose width is not a
    multiple of ``f``.
    """

    shape: tuple[int, int]  # full-resolution (H, W)
    f: int
    x_off: int
    breast: np.ndarray  # small bool masks
    pectoral: np.ndarray  # dilated by the pectoral margin
    core: np.ndarray  # breast, off the pectoral muscle, at least skin_margin_mm from the skin
    pectoral_found: bool
    pectoral_contrast: float
    skin_margin_mm: float

    def _small(self, which: str) -> np.ndarray:
        if which == "changeable":  # pixels a margin ring may touch: the breast off the muscle
            return self.breast & ~self.pectoral
        return getattr(self, which)

    def crop(self, which: str, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Full-resolution (h, w) bool crop of ``which`` (breast | pectoral | core | changeable)
        at (y0, x0); False outside the image."""
        small = self._small(which)
        H, W = self.shape
        ys, xs = np.arange(y0, y0 + h), np.arange(x0, x0 + w)
        out = small[np.ix_(np.clip(ys // self.f, 0, small.shape[0] - 1),
                           np.clip((xs - self.x_off) // self.f, 0, small.shape[1] - 1))]
        out &= ((ys >= 0) & (ys < H))[:, None] & ((xs >= 0) & (xs < W))[None, :]
        return out

    def full(self, which: str) -> np.ndarray:
        """Full-resolution (H, W) mask (for tests and pictures; insertion reads crops)."""
        return self.crop(which, 0, 0, *self.shape)

    def lookup(self, which: str, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Values of ``which`` at full-resolution points (ys, xs) inside the image (a cheap
        test before :meth:`crop`)."""
        small = self._small(which)
        return small[np.clip(ys // self.f, 0, small.shape[0] - 1), np.clip((xs - self.x_off) // self.f, 0, small.shape[1] - 1)]

    def small_points(self, which: str = "core") -> tuple[np.ndarray, np.ndarray]:
        """(ys, xs) full-resolution top-left corners of the work-grid pixels of ``which``."""
        ys, xs = np.nonzero(self._small(which))
        return ys * self.f, xs * self.f + self.x_off


def breast_anatomy(image: np.ndarray, spacing_mm: float, view: str | None, skin_margin_mm: float = 5.0,
                   pectoral_margin_mm: float = 2.0, breast: np.ndarray | None = None,
                   detect_muscle: bool | None = None, work_size: int = 1024) -> Anatomy:
    """Breast mask, pectoral muscle and the allowed lesion region of a left-oriented view
    given at full resolution (see :func:`anatomy_from_small` for the work-grid entry point)."""
    small, f = downsample(image, work_size)
    bsmall = None if breast is None else downsample(np.asarray(breast, np.float32), work_size)[0] >= 0.5
    return anatomy_from_small(small, f, image.shape, spacing_mm, view, skin_margin_mm, pectoral_margin_mm,
                              bsmall, detect_muscle)


def anatomy_from_small(small: np.ndarray, f: int, shape: tuple[int, int], spacing_mm: float, view: str | None,
                       skin_margin_mm: float = 5.0, pectoral_margin_mm: float = 2.0,
                       breast_small: np.ndarray | None = None, detect_muscle: bool | None = None,
                       x_off: int = 0) -> Anatomy:
    """:class:`Anatomy` of a left-oriented view from its block-mean copy ``small`` (factor ``f``
    of the full ``shape``; see :func:`downsample`).

    ``view``: "MLO" runs the pectoral detection (accepting fainter edges,
    ``PECTORAL_MIN_CONTRAST_MLO``), "CC" skips it, None/"other" runs it with the stricter
    ``PECTORAL_MIN_CONTRAST`` and lets the image decide (``detect_muscle`` overrides). The pectoral mask is dilated by
    ``pectoral_margin_mm`` so a lesion does not touch the muscle's edge. ``breast_small`` may be
    given (e.g. a store's breast mask); otherwise the breast is segmented (Otsu on log
    intensity, largest component; :func:`mammosynth.data.imaging.breast_mask`).
    """
    from scipy import ndimage

    if spacing_mm is None or not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise DataError(f"pixel spacing must be a positive number of mm, got {spacing_mm!r}")
    bmask = segment_breast(small) if breast_small is None else np.asarray(breast_small, bool)
    if detect_muscle is None:
        detect_muscle = view != "CC"
    pect = PectoralResult(np.zeros(bmask.shape, bool), False, 0.0, None)
    if detect_muscle and bmask.any():
        pect = detect_pectoral(small, bmask, PECTORAL_MIN_CONTRAST_MLO if view == "MLO" else PECTORAL_MIN_CONTRAST)
    pmask = pect.mask
    step = spacing_mm * f  # mm per work pixel
    if pect.found and pectoral_margin_mm > 0:
        pmask = ndimage.binary_dilation(pmask, iterations=max(1, int(math.ceil(pectoral_margin_mm / step)))) & bmask
    dist = ndimage.distance_transform_edt(bmask) * step
    # a work pixel's full-resolution pixels are within one work pixel of its centre
    core = bmask & ~pmask & (dist >= skin_margin_mm + step)
    return Anatomy(shape=(int(shape[0]), int(shape[1])), f=int(f), x_off=int(x_off), breast=bmask, pectoral=pmask,
                   core=core, pectoral_found=pect.found, pectoral_contrast=pect.contrast,
                   skin_margin_mm=float(skin_margin_mm))
