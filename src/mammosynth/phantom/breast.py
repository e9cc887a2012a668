"""Procedural full-field mammograms: outline, skin, pectoral muscle, parenchyma, acquisition.

The breast is drawn as a tissue-composition map (display levels: FAT_LEVEL all fat,
GLAND_LEVEL the densest drawn column), then projected, detected and processed
(:func:`acquire`) into a for-presentation FFDM look (MONOCHROME2, 1 = dense, background 0)
or a digitised screen-film look (``style="film"``):

* **outline**: a semi-ellipse (CC) or an axillary-tail shape (MLO) with the chest wall at
  x = 0 for a left breast; the right breast is the mirror image;
* **thickness falloff**: the compressed breast thins over its last few millimetres, so the
  signal falls to 0 at the edge (a semicircular thickness profile);
* **skin line**: a bright band peaking 1.6-2.4 mm inside the edge, as peripheral
  equalisation shows it in processed images, then the darker subcutaneous fat (4-9 mm);
* **parenchyma**: a fibroglandular field from softly thresholded power-law noise, partly
  drawn on a polar grid around the nipple so structures converge on it, inside an
  anatomical envelope (cone behind the nipple, spared subcutaneous and retroglandular fat),
  whose area fraction sets the BI-RADS density category A-D; fat lobules (Voronoi cells of
  ~3-13 mm) that scallop the dense tissue, with thin septa; curvilinear fibrous strands
  (tortuous trabeculae converging on the nipple, Cooper's ligaments arching in the
  subcutaneous fat, broad ligament bands); fine power-law texture (beta 2.4) at full resolution;
* **pectoral muscle** on MLO: a bright triangle in the upper chest-wall corner with a sharp,
  slightly convex border, a thin dark fat plane outside it, and fibres along the muscle;
* **acquisition**: attenuation integrated along the beam (Johns & Yaffe 1987 coefficients,
  40-65 mm compressed thickness), Poisson quantum noise whose variance grows as pixels
  shrink and the dose falls, a detector noise term and PSF, then thickness equalisation,
  windowing and an unsharp mask (FFDM) or a film characteristic curve with grain (film).

Geometry is in canvas fractions and texture scales are in millimetres, so one seed gives the
same breast at any resolution (the noise, as in a real detector, depends on the pixel size).
By default the canvas is 204.8 mm tall: (1024, 832) is 0.2 mm/px (a 4x-downsampled FFDM),
(2048, 1664) is 0.1 mm/px. Smooth fields are drawn on a ~0.4 mm grid and upsampled; only
the fine texture, thin strands, outline, skin and noise are computed at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from mammosynth.errors import ConfigError

PHANTOM_VERSION = 2
DENSITIES: tuple[str, ...] = ("A", "B", "C", "D")
VIEWS: tuple[str, ...] = ("CC", "MLO")
#: Canvas height in millimetres when no pixel spacing is given: (1024, 832) -> 0.2 mm/px.
CANVAS_HEIGHT_MM = 204.8
#: Fraction of the breast area above the fibroglandular threshold per BI-RADS density
#: category (A: almost entirely fatty, B: scattered, C: heterogeneously dense, D: extremely
#: dense). Fat lobules and soft borders then lower the mean glandular weight actually drawn
#: (``meta["fibroglandular_fraction"]``, ~0.03 / 0.2 / 0.4 / 0.5 for A-D).
DENSITY_FRACTION: dict[str, float] = {"A": 0.10, "B": 0.30, "C": 0.55, "D": 0.80}
#: Power-law exponent of the anatomical noise (P(f) ~ 1/f^beta; real mammograms 2.5-3.5).
TEXTURE_BETA = 3.0
#: Exponent of the fine (< 8 mm) texture drawn at full resolution: processed FFDM is
#: flatter at fine scales (its curvilinear detail and the unsharp mask), so lower than 3.
FINE_BETA = 2.4

#: Display levels (processed image, [0, 1]) of the tissue classes.
FAT_LEVEL = 0.21
GLAND_LEVEL = 0.50
PECTORAL_LEVEL = 0.56

#: Rendering styles: a processed full-field digital mammogram, or digitised screen film.
STYLES: tuple[str, ...] = ("ffdm", "film")
#: Linear attenuation coefficients (1/mm) of adipose and fibroglandular tissue at ~20 keV
#: (Johns & Yaffe 1987, Phys Med Biol 32:675: 0.456 and 0.802 1/cm); the display levels
#: FAT_LEVEL and GLAND_LEVEL are the processed image of an all-fat / all-gland column.
MU_FAT = 0.0456
MU_GLAND = 0.0802
#: Volumetric glandular fraction of the column the phantom draws at display level
#: GLAND_LEVEL: screening populations' volumetric breast density is mostly ~5-30 % (mean
#: ~15-20 %), so FAT_LEVEL..GLAND_LEVEL spans 0..30 % glandular tissue along the beam.
MAX_GLANDULAR_FRACTION = 0.30
#: Compressed breast thickness (mm), uniform over this range (screening: ~40-65 mm).
COMPRESSED_THICKNESS_MM = (40.0, 65.0)
#: Noise-equivalent quanta per mm^2 behind 50 mm of 20 % glandular tissue at dose 1, and the
#: detector's own (electronic) noise in quanta per pixel. Calibrated so that the processed
#: image's pixel noise matches the reference FFDM views at 0.1 mm/px (docs/phantom.md); a
#: processed image amplifies noise, so these are far below the physical fluence.
QUANTA_PER_MM2 = 9.0e4
DETECTOR_NOISE_QUANTA = 4.0
#: Detector point-spread function (Gaussian sd, mm): correlates the noise of fine pixels.
DETECTOR_PSF_MM = 0.025
#: Unsharp-mask contrast of the processed look: gain and Gaussian sd (mm).
USM_GAIN = 0.3
USM_SIGMA_MM = 3.0
#: Screen-film look: fog and maximum optical density, gamma (OD per decade of exposure at
#: the curve's steepest point), speed point (log10 exposure, relative to the AEC point),
#: film granularity (OD sd of a 50 um sample) and the scanner's OD range (0 -> white).
FILM_FOG = 0.2
FILM_DMAX = 3.6
FILM_GAMMA = 3.0
FILM_LOG_E0 = 0.3
FILM_GRAIN_OD = 0.03
FILM_SCAN_MAX_OD = 3.2
#: Width (mm) of the compressed breast's rounded edge, which a film shows un-equalised.
FILM_EDGE_MM = 25.0


@dataclass
class PhantomBreast:
    """One phantom mammogram.

    ``image`` (H, W) float32 in [0, 1], 1 = dense (MONOCHROME2), background ~0;
    ``breast_mask`` (H, W) bool; ``pectoral_mask`` (H, W) bool (all False on CC);
    ``meta``: view, laterality, density, seed, pixel_spacing_mm, nipple_xy, phantom_version.
    ``glandular`` (H, W) float32 in [0, 1] is the fibroglandular fraction map (used to put
    dense tissue over obscured masses and to report the density actually drawn).
    """

    image: np.ndarray
    breast_mask: np.ndarray
    pectoral_mask: np.ndarray
    meta: dict
    glandular: np.ndarray | None = field(default=None, repr=False)


# -- small helpers ------------------------------------------------------------------------
def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float = TEXTURE_BETA,
                    f_min: float | None = None, stretch: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """Gaussian noise with a power spectrum P(f) ~ 1/f^beta.

    Filtered white noise made directly in the Fourier domain (one inverse real FFT).
    ``f_min`` (cycles/px) flattens the spectrum below it so the field has no single giant
    mode. ``stretch`` > 1 elongates the structures along direction ``angle`` (rad, from +x)
    (fibres); 1 is isotropic. Returns (H, W) float32, zero mean, unit standard deviation.
    """
    H, W = shape
    fy = sfft.fftfreq(H).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(W).astype(np.float32)[None, :]
    if stretch != 1.0:
        c, s_ = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        f_along = fx * c + fy * s_
        f_across = -fx * s_ + fy * c
        f = np.sqrt((f_along * np.float32(stretch)) ** 2 + f_across ** 2)
    else:
        f = np.sqrt(fy * fy + fx * fx)
    f_min = f_min if f_min is not None else 1.0 / max(H, W)
    amp = np.maximum(f, np.float32(f_min)) ** np.float32(-beta / 2.0)
    amp[0, 0] = 0.0
    spec = (rng.standard_normal(f.shape, dtype=np.float32) + 1j * rng.standard_normal(f.shape, dtype=np.float32)) * amp
    out = sfft.irfft2(spec, s=(H, W), workers=1).astype(np.float32)
    out -= out.mean()
    out /= out.std() + 1e-12
    return out


def power_spectrum_slope(image: np.ndarray, mask: np.ndarray, roi: int = 128,
                         band: tuple[float, float] = (1 / 64, 1 / 4), step: int | None = None) -> tuple[float, int]:
    """Radially averaged power-spectrum exponent beta of ``image`` inside ``mask``.

    Square ROIs of ``roi`` px lying wholly in ``mask`` (stride ``step``, default roi/2) are
    mean-subtracted, Hann-windowed and Fourier transformed; their power spectra are averaged,
    radially binned, and log P is fitted against log f over ``band`` (cycles/px). Returns
    (beta, number of ROIs); beta is NaN when no ROI fits.
    """
    step = step or roi // 2
    win = np.outer(np.hanning(roi), np.hanning(roi))
    acc = None
    n = 0
    H, W = image.shape
    for y in range(0, H - roi + 1, step):
        for x in range(0, W - roi + 1, step):
            if mask[y:y + roi, x:x + roi].all():
                p = image[y:y + roi, x:x + roi].astype(np.float64)
                p = (p - p.mean()) * win
                ps = np.abs(np.fft.fft2(p)) ** 2
                acc = ps if acc is None else acc + ps
                n += 1
    if acc is None:
        return float("nan"), 0
    f = np.fft.fftfreq(roi)
    fr = np.hypot(*np.meshgrid(f, f, indexing="ij")).ravel()
    edges = np.arange(1, roi // 2) / roi
    idx = np.digitize(fr, edges)
    radial = np.bincount(idx, acc.ravel()) / np.maximum(np.bincount(idx), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    radial = radial[1:len(edges)]
    sel = (centres >= band[0]) & (centres <= band[1]) & (radial > 0)
    slope = np.polyfit(np.log(centres[sel]), np.log(radial[sel]), 1)[0]
    return float(-slope), n


def _splat(shape: tuple[int, int], pts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Accumulate points (N, 2) as (x, y) with bilinear weights into an (H, W) float32 image."""
    H, W = shape
    x, y = pts[:, 0], pts[:, 1]
    ok = (x >= 0) & (x < W - 1) & (y >= 0) & (y < H - 1)
    x, y, w = x[ok], y[ok], weights[ok]
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    base = y0 * W + x0
    idx = np.concatenate([base, base + 1, base + W, base + W + 1])
    wts = np.concatenate([w * (1 - fx) * (1 - fy), w * fx * (1 - fy), w * (1 - fx) * fy, w * fx * fy])
    return np.bincount(idx, wts, minlength=H * W).reshape(H, W).astype(np.float32)


def random_curves(rng: np.random.Generator, starts: np.ndarray, headings: np.ndarray, lengths: np.ndarray,
                  curvature: float, step: float = 0.5, pull: tuple[float, float] | None = None,
                  pull_strength: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth random curves (a persistent random walk of the heading), vectorised over curves.

    ``starts`` (K, 2) x,y px; ``headings`` (K,) rad; ``lengths`` (K,) px; ``curvature`` is
    the heading's random drift in rad per sqrt(px). ``pull`` an optional (x, y) point that
    bends every curve towards it. Returns the points (N, 2), each point's position along its
    curve in [0, 1] (N,) (to taper width and intensity) and its curve index (N,).
    """
    K = len(starts)
    if K == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    n_steps = int(np.ceil(lengths.max() / step)) + 1
    dtheta = rng.standard_normal((K, n_steps)).astype(np.float32) * np.float32(curvature * np.sqrt(step))
    # Low-pass the heading drift so curves bend smoothly rather than jitter.
    dtheta = ndi.uniform_filter1d(dtheta, size=9, axis=1)
    pos = starts.astype(np.float32).copy()
    head = headings.astype(np.float32).copy()
    out = np.empty((K, n_steps, 2), np.float32)
    for i in range(n_steps):
        out[:, i] = pos
        if pull is not None and pull_strength > 0:
            want = np.arctan2(pull[1] - pos[:, 1], pull[0] - pos[:, 0])
            head += np.float32(pull_strength * step) * np.sin(want - head)
        head += dtheta[:, i]
        pos[:, 0] += step * np.cos(head)
        pos[:, 1] += step * np.sin(head)
    t = (np.arange(n_steps, dtype=np.float32) * step)[None, :] / lengths[:, None].astype(np.float32)
    keep = t <= 1.0
    owner = np.broadcast_to(np.arange(K)[:, None], keep.shape)
    return out[keep], t[keep], owner[keep]


def _upsample(a: np.ndarray, f: int, H: int, W: int) -> np.ndarray:
    """Bilinear upsampling of a coarse (ceil(H/f), ceil(W/f)) grid by integer ``f`` to (H, W)."""
    if f == 1:
        return a[:H, :W].astype(np.float32, copy=False)

    def axis_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out, dtype=np.float32) + 0.5) / f - 0.5, 0, n_in - 1)
        i0 = np.minimum(pos.astype(np.int64), n_in - 2) if n_in > 1 else np.zeros(n_out, np.int64)
        w = (pos - i0).astype(np.float32) if n_in > 1 else np.zeros(n_out, np.float32)
        return i0, np.minimum(i0 + 1, n_in - 1), w

    r0, r1, wr = axis_weights(H, a.shape[0])
    rows = a[r0] * (1 - wr)[:, None] + a[r1] * wr[:, None]
    c0, c1, wc = axis_weights(W, a.shape[1])
    return (rows[:, c0] * (1 - wc)[None, :] + rows[:, c1] * wc[None, :]).astype(np.float32)


def _coarse(a: np.ndarray, f: int) -> np.ndarray:
    """Sample (H, W) at the centres of the f x f cells of the coarse (ceil(H/f), ceil(W/f)) grid."""
    H, W = a.shape
    h, w = -(-H // f), -(-W // f)
    out = a[f // 2::f, f // 2::f]
    return np.pad(out, ((0, h - out.shape[0]), (0, w - out.shape[1])), mode="edge")


def _depth_px(mask: np.ndarray, f: int) -> np.ndarray:
    """Distance (px) from each pixel of ``mask`` to the nearest False pixel, float32.

    Computed on a grid ``f`` times coarser and upsampled bilinearly (the distance is smooth
    and the transform at full resolution costs ~6x more); 0 outside the mask.
    """
    if f == 1:
        return ndi.distance_transform_edt(mask).astype(np.float32)
    H, W = mask.shape
    coarse = ndi.distance_transform_edt(_coarse(mask, f)).astype(np.float32) * f
    # Shift so 0 falls on the outline, not half a coarse cell outside it.
    up = _upsample(coarse, f, H, W) - 0.5 * f
    return np.where(mask, np.maximum(up, 0.5), 0.0).astype(np.float32)


# -- geometry -----------------------------------------------------------------------------
@dataclass
class _Geometry:
    mask: np.ndarray          # (H, W) bool breast
    depth_mm: np.ndarray      # (H, W) float32 distance to the skin (chest wall / top excluded)
    nipple: tuple[float, float]
    chest: tuple[float, float]  # a point on the chest wall behind the nipple
    pectoral: np.ndarray      # (H, W) float32 soft pectoral weight in [0, 1]
    pect_size: tuple[float, float] = (1.0, 1.0)  # pectoral border's x- and y-intercepts (px)


def _outline(rng: np.random.Generator, view: str, H: int, W: int, spacing: float, f: int) -> _Geometry:
    yy = np.arange(H, dtype=np.float32)[:, None]
    xx = np.arange(W, dtype=np.float32)[None, :]
    # Smooth random wobble of the outline (a few percent), as real breasts are not ellipses.
    k = np.arange(2, 6)
    amps = rng.normal(0, 0.012, size=(len(k), 2)).astype(np.float32)

    def wobble(theta: np.ndarray) -> np.ndarray:
        return 1.0 + sum(amps[i, 0] * np.cos(k[i] * theta) + amps[i, 1] * np.sin(k[i] * theta) for i in range(len(k)))

    pect = np.zeros((H, W), np.float32)
    pect_size = (1.0, 1.0)
    if view == "CC":
        cy = H * rng.uniform(0.47, 0.53)
        a = W * rng.uniform(0.66, 0.80)
        b = H * rng.uniform(0.38, 0.46)
        u, v = xx / a, (yy - cy) / b
        lut_t = np.linspace(-np.pi, np.pi, 721, dtype=np.float32)
        mask = np.sqrt(u * u + v * v) < np.interp(np.arctan2(v, u), lut_t, wobble(lut_t)).astype(np.float32)
        nipple = (float(a * wobble(np.float32(0.0))), float(cy))
        chest = (0.0, float(cy))
        pad_top = False
    elif view == "MLO":
        x_top = W * rng.uniform(0.55, 0.72)
        x_max = W * rng.uniform(0.76, 0.86)
        y_c = H * rng.uniform(0.52, 0.62)
        y_end = H * rng.uniform(0.90, 0.97)
        yn = yy[:, 0]
        upper = x_max - (x_max - x_top) * ((y_c - yn) / y_c) ** 2
        lower = x_max * np.sqrt(np.clip(1 - ((yn - y_c) / (y_end - y_c)) ** 2, 0, 1))
        xb = np.where(yn < y_c, upper, lower) * wobble(np.linspace(0, np.pi, H, dtype=np.float32))
        mask = xx < xb[:, None]
        nipple = (float(xb[int(y_c)]), float(y_c))
        chest = (0.0, float(y_c * 0.8))
        pad_top = True
        # Pectoral: the upper chest-wall corner under a slightly convex line.
        px_top = x_top * rng.uniform(0.45, 0.75)
        py_left = H * rng.uniform(0.38, 0.58)
        bulge = rng.uniform(0.04, 0.12)
        s = xx / px_top + yy / py_left
        along = np.clip(xx / px_top - yy / py_left, -1, 1)
        edge = 1.0 + bulge * (1 - along * along)   # bows out most half-way along the border
        soft = 0.25 / spacing / min(px_top, py_left)  # a sharp (~0.25 mm) border, in units of s
        pect = (1.0 - _smoothstep(edge - soft, edge + soft, s)).astype(np.float32)
        pect_size = (float(px_top), float(py_left))
    else:
        raise ConfigError(f"unknown view {view!r}; choose one of: {', '.join(VIEWS)}")
    # Distance to the skin: the chest wall (x = 0) and, on MLO, the top edge are cut by the
    # detector edge, not skin, so pad them with breast before the distance transform.
    pad = 2 * f
    top = pad if pad_top else 0
    padded = np.pad(mask, ((top, 0), (pad, 0)), mode="edge")
    # At most 2x coarser: the skin profile is steep, and coarser distances show as steps.
    depth = _depth_px(padded, min(f, 2))[top:, pad:] * np.float32(spacing)
    return _Geometry(mask=mask, depth_mm=depth, nipple=nipple, chest=chest, pectoral=pect * mask, pect_size=pect_size)


def _lobules(rng: np.random.Generator, h: int, w: int, cell_px: float, size_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi fat lobules on a coarse (h, w) grid; cell size varies with ``size_var`` (h, w).

    Seeds are drawn with a density that follows ``size_var`` (a smooth field in [0, 1]: 0
    gives cells ~0.6 ``cell_px`` across, 1 gives ~2.2x that), so lobules come in many sizes.
    Returns (core, septa) (h, w) float32: ``core`` is ~1 inside a round lobule and 0 at its
    wall, scaled by a random per-cell darkness (not every cell is fat); ``septa`` is 1 on
    the walls, with a random per-wall strength.
    """
    scale = 0.6 + 2.0 * size_var
    p_seed = 1.0 / (cell_px * scale) ** 2
    seeds = rng.random((h, w)) < p_seed
    to_seed, (iy, ix) = ndi.distance_transform_edt(~seeds, return_indices=True)
    label = iy * w + ix
    edge = np.zeros((h, w), bool)
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    to_wall = ndi.distance_transform_edt(~edge).astype(np.float32)
    # Relative position between seed (0) and wall (1): round lobules inside polygonal cells.
    q = (to_seed / (to_seed + to_wall + 1e-6)).astype(np.float32)
    dark = rng.random(h * w).astype(np.float32)[label]
    core = (1.0 - _smoothstep(0.35, 0.9, q)) * np.clip((dark - 0.25) * 1.6, 0, 1)
    wall = rng.random(h * w).astype(np.float32)[label]
    septa = edge * (0.3 + 0.7 * wall)
    return core.astype(np.float32), septa.astype(np.float32)


def _radial_noise(rng: np.random.Generator, H: int, W: int, nipple: tuple[float, float],
                  beta: float, stretch: float, cell: float, f: int = 1) -> np.ndarray:
    """1/f^beta noise drawn on a polar grid around the nipple and warped back to (H, W).

    Structures are ``stretch`` times longer along the radius than across it, so they
    converge on the nipple like the ducts and trabeculae of a real breast. ``cell`` is the
    polar grid step in px. The warp is evaluated on the coarse (ceil(H/f), ceil(W/f)) grid
    (the field has no detail finer than ``cell``). Coarse-grid float32, zero mean, unit sd.
    """
    nx, ny = nipple
    r_max = float(np.hypot(max(nx, W - nx), max(ny, H - ny)))
    n_r = int(r_max / cell) + 2
    n_phi = int(np.pi * 0.5 * r_max / cell) + 2   # one cell per ``cell`` px at mid radius
    grid = power_law_noise(rng, (n_r, n_phi), beta, f_min=1.0 / 400.0, stretch=1.0 / stretch, angle=0.0)
    h, w = -(-H // f), -(-W // f)
    yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) * f - 0.5 - np.float32(ny)
    xx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) * f - 0.5 - np.float32(nx)
    pr = np.sqrt(xx * xx + yy * yy) / np.float32(cell)
    # Angle measured from the direction pointing back into the breast (-x for a left breast).
    pp = (np.arctan2(yy, -xx) / np.float32(np.pi) + 1.0) * np.float32(0.5 * (n_phi - 1))
    r0 = np.minimum(pr.astype(np.int64), n_r - 2)
    p0 = np.minimum(pp.astype(np.int64), n_phi - 2)
    wr = pr - r0
    wp = pp - p0
    flat = grid.ravel()
    i00 = r0 * n_phi + p0
    top = flat[i00] * (1 - wp) + flat[i00 + 1] * wp
    bot = flat[i00 + n_phi] * (1 - wp) + flat[i00 + n_phi + 1] * wp
    out = top * (1 - wr) + bot * wr
    # The polar grid pinches at the nipple; fade the streaks out over the first ~25 px.
    return (out * _smoothstep(0.0, 25.0 / cell, pr)).astype(np.float32)


# -- acquisition: attenuation, quanta, detector, processing --------------------------------
def _block_blur(a: np.ndarray, sigma_px: float, f: int) -> np.ndarray:
    """Gaussian blur of sd ``sigma_px`` done on an f-times coarser block-mean grid (a wide
    smooth kernel loses nothing there) and upsampled back to ``a``'s shape."""
    H, W = a.shape
    if f <= 1:
        return ndi.gaussian_filter(a, sigma_px)
    h, w = -(-H // f), -(-W // f)
    pad = np.pad(a, ((0, h * f - H), (0, w * f - W)), mode="edge")
    small = pad.reshape(h, f, w, f).mean(axis=(1, 3))
    return _upsample(ndi.gaussian_filter(small, sigma_px / f), f, H, W)


def display_gain(compressed_mm: float) -> float:
    """Processed-image units per unit of added log attenuation (for a lesion's extra
    attenuation): the FAT..GLAND window spans the all-fat to all-gland column."""
    return (GLAND_LEVEL - FAT_LEVEL) / ((MU_GLAND - MU_FAT) * MAX_GLANDULAR_FRACTION * compressed_mm)


def lesion_gain(local: np.ndarray, compressed_mm: float, style: str = "ffdm") -> np.ndarray | float:
    """Display change per unit of added log attenuation at local display level ``local``.

    "ffdm": the window's constant gain (:func:`display_gain`). "film": the slope of the
    characteristic curve at the local optical density (steepest mid-curve, flat in the toe
    and shoulder), so a lesion loses contrast where the film saturates.
    """
    if style != "film":
        return display_gain(compressed_mm)
    od = (1.0 - np.clip(local, 0.0, 1.0)) * FILM_SCAN_MAX_OD
    sig = np.clip((od - FILM_FOG) / (FILM_DMAX - FILM_FOG), 1e-3, 1 - 1e-3)
    k = FILM_GAMMA * 4.0 / (FILM_DMAX - FILM_FOG)
    # gray = 1 - OD / scan_max; dOD/dpath = -(Dmax - fog) sig (1 - sig) k / ln 10
    return ((FILM_DMAX - FILM_FOG) * sig * (1.0 - sig) * k / np.log(10.0) / FILM_SCAN_MAX_OD).astype(np.float32)


def acquire(composition: np.ndarray, thickness: np.ndarray, mask: np.ndarray, spacing: float, compressed_mm: float,
            rng: np.random.Generator, dose: float = 1.0, style: str = "ffdm") -> np.ndarray:
    """Project, detect and process: tissue composition -> the displayed image (H, W) in [0, 1].

    ``composition`` (H, W) is the column's tissue in display levels (FAT_LEVEL all fat,
    GLAND_LEVEL all fibroglandular); ``thickness`` (H, W) in [0, 1] the relative compressed
    thickness (falls to 0 at the skin); ``compressed_mm`` the full thickness.

    1. Log attenuation along the beam: ``A = t T mu``, ``mu = mu_fat + (mu_gland - mu_fat) g``.
    2. Detected quanta per pixel ``N = Q dose s^2 exp(-(A - A_ref))``: Poisson noise in the
       log signal has variance 1/N (so it grows as pixels shrink, the dose falls or the
       tissue gets denser), plus a detector term (e/N)^2; then the detector PSF.
    3. "ffdm": thickness equalisation (A / t: the periphery shows the same tissue scale as
       the centre), the FAT..GLAND window, the skin roll-off, and an unsharp mask
       (USM_GAIN, USM_SIGMA_MM) computed inside the breast only. "film": no equalisation; the exposure goes
       through a film characteristic curve (gamma ~3) set by automatic exposure on the
       dense tissue, film grain in optical density, and the scanner's blur.
    """
    g = (composition - FAT_LEVEL) / (GLAND_LEVEL - FAT_LEVEL) * MAX_GLANDULAR_FRACTION
    mu = MU_FAT + (MU_GLAND - MU_FAT) * g
    ref = 50.0 * (MU_FAT + 0.2 * (MU_GLAND - MU_FAT))
    if style == "film":
        # Without equalisation the compressed breast's rounded edge (~20 mm) darkens the periphery.
        depth_mm = ndi.distance_transform_edt(np.pad(mask, 4, mode="edge"))[4:-4, 4:-4].astype(np.float32) * spacing
        t_film = 0.2 + 0.8 * np.clip(depth_mm / FILM_EDGE_MM, 0.0, 1.0) ** 0.8
        thickness = np.minimum(thickness, t_film)
    path = thickness * np.float32(compressed_mm) * mu
    # 1 / quanta per pixel; the log signal's variance is 1/N (Poisson) + (e/N)^2 (detector).
    inv_quanta = np.exp(np.minimum(path - np.float32(ref), 30.0)) * np.float32(1.0 / (QUANTA_PER_MM2 * dose * spacing * spacing))
    sd = np.sqrt(inv_quanta * (1.0 + np.float32(DETECTOR_NOISE_QUANTA ** 2) * inv_quanta))
    path = path + sd * rng.standard_normal(path.shape, dtype=np.float32)
    psf = DETECTOR_PSF_MM / spacing
    if psf > 0.15:
        path = ndi.gaussian_filter(path, psf)
    f = max(1, int(round(0.4 / spacing)))
    if style == "ffdm":
        eq = path / (np.maximum(thickness, 0.05) * np.float32(compressed_mm))
        img = thickness * (FAT_LEVEL + (GLAND_LEVEL - FAT_LEVEL) * (eq - MU_FAT) / ((MU_GLAND - MU_FAT) * MAX_GLANDULAR_FRACTION))
        m = mask.astype(np.float32)
        s_px = USM_SIGMA_MM / spacing
        local = _block_blur(img * m, s_px, f) / np.maximum(_block_blur(m, s_px, f), 1e-3)
        img = img + np.float32(USM_GAIN) * (img - local)
        return np.clip(img, 0.0, 1.0).astype(np.float32)
    # Film: H&D curve of the log exposure (-path); AEC puts the 70th percentile of the
    # breast's attenuation at optical density 1.0 (gray 0.6 of a 0..2.5 OD scan range).
    inside = path[mask] if mask.any() else path.ravel()
    p_aec = float(np.percentile(inside[:: max(1, inside.size // 20000)], 70))
    log10_e = -(path - p_aec) / np.log(10.0)
    od = FILM_FOG + (FILM_DMAX - FILM_FOG) / (1.0 + np.exp(-FILM_GAMMA * 4.0 / (FILM_DMAX - FILM_FOG) * (log10_e - FILM_LOG_E0)))
    od = od + np.float32(FILM_GRAIN_OD * 0.05 / spacing) * rng.standard_normal(od.shape, dtype=np.float32)
    od = ndi.gaussian_filter(od, 0.5)
    gray = 1.0 - od / FILM_SCAN_MAX_OD
    return np.clip(gray, 0.0, 1.0).astype(np.float32)


# -- the full breast ----------------------------------------------------------------------
def _check_args(view: str, laterality: str, density: str, shape: tuple[int, int]) -> None:
    if view not in VIEWS:
        raise ConfigError(f"unknown view {view!r}; choose one of: {', '.join(VIEWS)}")
    if laterality not in ("L", "R"):
        raise ConfigError(f"unknown laterality {laterality!r}; choose L or R")
    if density not in DENSITIES:
        raise ConfigError(f"unknown density {density!r}; choose one of: {', '.join(DENSITIES)}")
    if len(shape) != 2 or min(shape) < 64:
        raise ConfigError(f"phantom shape must be (H, W) with both at least 64 px, got {shape}")


def default_spacing(shape: tuple[int, int]) -> float:
    """Pixel spacing (mm) that makes the canvas 204.8 mm tall (0.2 mm/px at 1024 rows)."""
    return CANVAS_HEIGHT_MM / shape[0]


def render_breast(seed: int, shape: tuple[int, int] = (1024, 832), view: str = "CC", laterality: str = "L",
                  density: str = "B", pixel_spacing_mm: float | None = None, dose: float = 1.0,
                  style: str = "ffdm") -> PhantomBreast:
    """Draw one normal phantom mammogram, deterministic per (seed, arguments).

    ``shape`` (H, W) px; ``pixel_spacing_mm`` defaults to 204.8 mm / H. Laterality L puts the
    chest wall at x = 0; R is its mirror image. ``dose`` scales the detected quanta (1 = the
    calibrated screening dose; quantum noise sd goes as 1/sqrt(dose)). ``style`` "ffdm" (a
    processed full-field digital image) or "film" (digitised screen-film, like mini-MIAS).
    Returns a :class:`PhantomBreast`.
    """
    _check_args(view, laterality, density, shape)
    if style not in STYLES:
        raise ConfigError(f"unknown phantom style {style!r}; choose one of: {', '.join(STYLES)}")
    if not 0.01 <= float(dose) <= 100.0:
        raise ConfigError(f"phantom dose must be between 0.01 and 100 (1 = screening dose), got {dose}")
    H, W = int(shape[0]), int(shape[1])
    spacing = float(pixel_spacing_mm) if pixel_spacing_mm is not None else default_spacing((H, W))
    if not 0.005 <= spacing <= 5.0:
        raise ConfigError(f"pixel spacing must be between 0.005 and 5 mm, got {spacing}")
    root = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, VIEWS.index(view), DENSITIES.index(density)])
    r_geo, r_gland, r_lob, r_str, r_fine, r_pect, r_q = (np.random.default_rng(s) for s in root.spawn(7))
    # Smooth fields are drawn on a ~0.4 mm grid and upsampled: same look, a fraction of the cost.
    f = max(1, int(round(0.4 / spacing)))
    h, w = -(-H // f), -(-W // f)
    cs = spacing * f  # coarse grid spacing, mm

    geo = _outline(r_geo, view, H, W, spacing, f)
    mask, depth = geo.mask, geo.depth_mm
    nx, ny = geo.nipple
    cx, cy = geo.chest

    # Anatomical envelope (coarse grid): glandular tissue fills a cone from the nipple back
    # to the chest wall and spares the subcutaneous and retroglandular fat.
    ys = (np.arange(h, dtype=np.float32)[:, None] + 0.5) * f - 0.5
    xs = (np.arange(w, dtype=np.float32)[None, :] + 0.5) * f - 0.5
    axis = np.array([nx - cx, ny - cy], np.float32)
    L = float(np.hypot(*axis))
    axis /= L
    along = ((xs - cx) * axis[0] + (ys - cy) * axis[1]) / L            # 0 chest wall .. 1 nipple
    across = np.abs(-(xs - cx) * axis[1] + (ys - cy) * axis[0]) / L
    cone = np.clip(0.95 - 0.55 * along, 0.15, 1.0)
    envelope = np.exp(-((across / cone) ** 2) * 2.2) * _smoothstep(-0.05, 0.15, along)
    sub_fat = r_gland.uniform(4.0, 9.0)
    depth_c = _coarse(depth, f)
    envelope *= _smoothstep(sub_fat * 0.6, sub_fat * 1.8, depth_c)
    fraction = float(np.clip(DENSITY_FRACTION[density] + r_gland.normal(0, 0.03), 0.03, 0.95))

    # Fibroglandular field (coarse grid): envelope + radially streaked and isotropic 1/f^3
    # noise, softly thresholded at the density quantile: clouds with soft borders.
    streaks_c = _radial_noise(r_gland, H, W, geo.nipple, TEXTURE_BETA, stretch=3.0, cell=1.0 * f, f=f)
    blobs_c = power_law_noise(r_gland, (h, w), 3.2, f_min=cs / 80.0)
    score_c = 1.5 * envelope + 0.35 * blobs_c + 0.30 * streaks_c
    pect_c = _coarse(geo.pectoral, f)
    inside_c = _coarse(mask, f) & (pect_c < 0.5)
    thr = float(np.quantile(score_c[inside_c], 1.0 - fraction)) if inside_c.any() else 0.0
    gland_c = _smoothstep(thr - 0.35, thr + 0.45, score_c) * (0.85 + 0.15 * np.tanh(blobs_c))

    # Fat lobules (~3-13 mm, several sizes) scallop the dense tissue; their septa are thin walls.
    size_var = _smoothstep(-1.0, 1.0, power_law_noise(r_lob, (h, w), 3.0, f_min=cs / 30.0))
    core_c, septa_c = _lobules(r_lob, h, w, 6.5 / cs, size_var)
    gland_c *= 1.0 - 0.4 * ndi.gaussian_filter(core_c, 0.5 / cs)
    strength = 0.5 + 0.5 * np.tanh(power_law_noise(r_lob, (h, w), 3.0, f_min=cs / 20.0) + 0.3)
    septa_c = ndi.gaussian_filter(septa_c * strength, max(0.35 / cs, 0.5))
    septa_c /= np.float32(septa_c.max() + 1e-6)

    # Fibrous strands: trabeculae running towards the nipple, and Cooper's ligaments that
    # arch out to the skin through the subcutaneous fat (curves, in px).
    area_mm2 = float(mask.sum()) * spacing * spacing
    pick = np.flatnonzero(mask.ravel())
    n_tr = int(area_mm2 / 300.0)
    sel = r_str.choice(pick, n_tr)
    starts = np.stack([sel % W, sel // W], 1).astype(np.float32)
    # Fewer strands right behind the nipple, where they would pile up into a star.
    far = np.hypot(starts[:, 0] - nx, starts[:, 1] - ny) * spacing > r_str.uniform(10.0, 60.0, n_tr)
    starts = starts[far]
    n_tr = len(starts)
    heads = np.arctan2(ny - starts[:, 1], nx - starts[:, 0]) + r_str.normal(0, 0.25, n_tr)
    lengths = r_str.uniform(10.0, 50.0, n_tr) / spacing
    step = 0.7 * max(1.0, 0.2 / spacing)
    pts, t, owner = random_curves(r_str, starts, heads, lengths, curvature=0.03 * spacing / 0.2, step=step,
                                  pull=(nx, ny), pull_strength=0.002 * spacing / 0.2)
    per = (r_str.uniform(0.2, 1.0, n_tr) ** 2).astype(np.float32)
    lines = _splat((H, W), pts, per[owner] * np.maximum(np.sin(np.pi * t), 0) ** 0.5)
    rim = np.flatnonzero((mask & (depth > 2.0) & (depth < sub_fat * 1.6)).ravel())
    n_co = int(len(rim) * spacing * spacing / 45.0)
    if n_co > 0:
        sel = r_str.choice(rim, n_co)
        starts = np.stack([sel % W, sel // W], 1).astype(np.float32)
        gy, gx = np.gradient(depth_c)
        sy = np.minimum(starts[:, 1].astype(int) // f, h - 1)
        sx = np.minimum(starts[:, 0].astype(int) // f, w - 1)
        # Along the skin (perpendicular to the depth gradient), wandering towards it.
        heads = np.arctan2(gy[sy, sx], gx[sy, sx]) + np.pi / 2 * np.where(r_str.random(n_co) < 0.5, 1, -1)
        heads += r_str.normal(0, 0.5, n_co)
        lengths = r_str.uniform(4.0, 12.0, n_co) / spacing
        pts, t, _ = random_curves(r_str, starts, heads, lengths, curvature=0.12 * spacing / 0.2, step=step)
        lines += _splat((H, W), pts, (0.5 * np.maximum(np.sin(np.pi * t), 0) ** 0.8).astype(np.float32))
    lines *= np.float32(step / 0.7)  # same line density whatever the step
    thin = ndi.gaussian_filter(lines, 0.12 / spacing)
    thin /= np.float32(np.percentile(thin[mask][::7], 99.7) + 1e-6)
    # The broad halo of each strand is smooth: blur it on the coarse grid.
    thin_pad = np.pad(thin, ((0, h * f - H), (0, w * f - W)))
    halo_c = ndi.gaussian_filter(thin_pad.reshape(h, f, w, f).mean(axis=(1, 3)), 0.4 / cs)
    halo_c /= np.float32(np.percentile(halo_c, 99.9) + 1e-6)

    # Ligaments: fewer, broad (~1-2 mm) curvilinear bands running tens of millimetres through
    # fat and gland alike; smooth, so drawn on the coarse grid.
    n_lig = int(area_mm2 / 1200.0)
    sel = r_str.choice(pick, n_lig)
    starts = np.stack([sel % W, sel // W], 1).astype(np.float32) / f
    heads = np.arctan2(ny / f - starts[:, 1], nx / f - starts[:, 0]) + r_str.normal(0, 0.5, n_lig)
    heads += np.where(r_str.random(n_lig) < 0.5, 0.0, np.pi)
    pts, t, owner = random_curves(r_str, starts, heads, r_str.uniform(20.0, 70.0, n_lig) / cs,
                                  curvature=0.05 * cs / 0.2, step=0.7)
    per = r_str.uniform(0.3, 1.0, n_lig).astype(np.float32)
    lig_c = _splat((h, w), pts, per[owner] * np.maximum(np.sin(np.pi * t), 0) ** 0.7)
    lig_c = ndi.gaussian_filter(lig_c, 0.45 / cs)
    lig_c /= np.float32(np.percentile(lig_c[lig_c > 0], 99.5) + 1e-6) if (lig_c > 0).any() else 1.0
    lig_c = np.minimum(lig_c, 1.2) * _coarse(mask, f)

    # Tissue density: fat + glandular + anatomical texture + strands + septa. Everything
    # smooth is summed on the coarse grid; only the fine texture and thin strands are full-res.
    fat_var_c = power_law_noise(r_fine, (h, w), 3.0, f_min=cs / 40.0)
    tissue_c = (FAT_LEVEL + 0.03 * fat_var_c + (GLAND_LEVEL - FAT_LEVEL) * gland_c
                + 0.04 * streaks_c * (0.5 + gland_c)
                + 0.08 * np.minimum(halo_c, 1.3) * (1.0 - 0.4 * gland_c)
                + 0.26 * septa_c * (1.0 - 0.15 * gland_c)
                + 0.16 * lig_c * (1.0 - 0.3 * gland_c))
    if view == "MLO":
        # Pectoral muscle: bright, fibres along its border, brighter in the chest-wall corner.
        along_muscle = float(np.arctan2(-geo.pect_size[1], geo.pect_size[0]))
        fibres_c = power_law_noise(r_pect, (h, w), 3.0, stretch=4.0, angle=along_muscle)
        corner = 1.0 - np.clip(np.hypot(xs / geo.pect_size[0], ys / geo.pect_size[1]), 0, 1)
        muscle_c = PECTORAL_LEVEL + 0.10 * corner + 0.05 * fibres_c + 0.03 * streaks_c + 0.03 * fat_var_c
        tissue_c = tissue_c + pect_c * (muscle_c - tissue_c)  # a cheap coarse pre-blend ...
        gland_c = gland_c * (1.0 - pect_c)
    gland = _upsample(gland_c, f, H, W)
    tissue = _upsample(tissue_c, f, H, W)
    if view == "MLO":
        # ... sharpened at full resolution with the exact pectoral border.
        muscle = _upsample(muscle_c, f, H, W)
        # Fine striations along the fibres, at full resolution.
        striae = power_law_noise(r_pect, (H, W), 2.4, stretch=6.0, angle=along_muscle, f_min=spacing / 6.0)
        muscle = muscle + 0.03 * striae
        tissue += geo.pectoral * (muscle - tissue)
        # The fat plane just outside the muscle shows as a thin dark line along its edge.
        rim = geo.pectoral * (1.0 - geo.pectoral)
        tissue -= 0.5 * ndi.gaussian_filter(rim, 0.3 / spacing) * (tissue - FAT_LEVEL + 0.1)
    # Fine texture at full resolution (structures below ~8 mm), where the coarse fields stop.
    fine = power_law_noise(r_fine, (H, W), FINE_BETA, f_min=spacing / 8.0)
    tissue += 0.05 * fine * (0.7 + 0.4 * gland) + 0.08 * np.minimum(thin, 1.3) * (1.0 - 0.4 * gland)

    # Thickness falloff over the last ~3 mm (semicircular edge of the compressed breast),
    # then the skin line as peripheral equalisation shows it.
    edge_mm = r_geo.uniform(2.5, 3.5)
    rel = np.clip(depth / edge_mm, 0, 1)
    thickness = np.sqrt(np.clip(1.0 - (1.0 - rel) ** 2, 0.0, None))  # rel can leave [0, 1] at the mask edge
    skin_mm = r_geo.uniform(1.6, 2.4)
    skin = 0.32 * np.exp(-0.5 * ((depth - skin_mm) / (0.55 * skin_mm)) ** 2) + 0.12 * _smoothstep(sub_fat * 1.5, 0.0, depth)
    composition = tissue + skin * (1.0 - 0.5 * gland)
    compressed_mm = float(r_geo.uniform(*COMPRESSED_THICKNESS_MM))
    img = acquire(composition, thickness, mask, spacing, compressed_mm, r_q, dose=dose, style=style)
    img = np.where(mask, img, 0.0).astype(np.float32)
    gland = (gland * mask).astype(np.float32)
    pect_mask = (geo.pectoral >= 0.5) & mask

    if laterality == "R":
        img, mask, pect_mask, gland = img[:, ::-1], mask[:, ::-1], pect_mask[:, ::-1], gland[:, ::-1]
        nipple = (W - 1 - geo.nipple[0], geo.nipple[1])
    else:
        nipple = geo.nipple
    meta = {
        "view": view, "laterality": laterality, "density": density, "seed": int(seed),
        "pixel_spacing_mm": spacing, "nipple_xy": (float(nipple[0]), float(nipple[1])),
        "fibroglandular_fraction": float(gland[mask].mean()) if mask.any() else 0.0,
        "phantom_version": PHANTOM_VERSION, "compressed_thickness_mm": compressed_mm, "dose": float(dose),
        "style": style,
    }
    return PhantomBreast(image=np.ascontiguousarray(img), breast_mask=np.ascontiguousarray(mask),
                         pectoral_mask=np.ascontiguousarray(pect_mask), meta=meta,
                         glandular=np.ascontiguousarray(gland))
