"""Calcification clusters for the phantom: every BI-RADS morphology and distribution, with
the exact centre of each calcification and the cluster's mask.

A cluster is drawn in two steps, both in millimetres so it is the same physical object at
any pixel spacing:

1. **Distribution** (:data:`DISTRIBUTION_GEOMETRY`) places K calcification centres:
   clustered (grouped) within a few mm, linear along a line, segmental in a wedge of ducts,
   regional over a 2-3 cm area, diffuse over 3.5-4.5 cm.
2. **Morphology** (:data:`MORPHOLOGY_SHAPES`) draws each calcification at its centre as a
   small 3-D body (an ellipsoid, a shell, a rod, a crescent or a few merged lobes) 0.1-1 mm
   across, supersampled 5 x 5 per pixel, so a calcification smaller than a pixel still
   adds its true projected amount of calcium.

The projected calcium thickness (mm) times the attenuation of calcium over the tissue it
displaces (:data:`MU_CALCIUM_EXCESS`, per mm; fainter for amorphous calcifications) is the
added log attenuation, which goes to display levels through the same gain as a mass
(:func:`mammosynth.phantom.breast.lesion_gain`), after the detector's blur.

Labels: the centre (x, y) of each calcification (the point it was drawn around, in window
pixels, float), and the cluster mask: the convex hull of the drawn calcifications grown by
:data:`CLUSTER_MARGIN_MM`, the way a reader outlines a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from mammosynth.data.birads import DISTRIBUTIONS, MORPHOLOGIES
from mammosynth.errors import ConfigError
from mammosynth.phantom.breast import USM_GAIN, lesion_gain

#: Individual calcification size (largest extent, mm): the range the brief and BI-RADS give.
CALC_SIZE_MM = (0.1, 1.0)
#: Calcium (hydroxyapatite, ~3 g/cm^3) over glandular tissue at mammographic energies, per mm
#: of calcium along the beam (about 1.2 / mm against 0.08 / mm for gland); real deposits are
#: not pure, so each calcification draws a fraction of it.
MU_CALCIUM_EXCESS = 1.1
#: The cluster outline lies this far outside the drawn calcifications (mm).
CLUSTER_MARGIN_MM = 1.0
_SUPERSAMPLE = 5


@dataclass(frozen=True)
class CalcShape:
    """How one morphology looks: body ``kind`` (disc | ring | rod | blob | crescent),
    largest extent range (mm), width / length aspect range, ring's inner radius fraction,
    purity (fraction of :data:`MU_CALCIUM_EXCESS`) range, and extra blur (mm, amorphous haze).
    ``along_axis``: rods lie along the cluster's axis (vessels, ducts)."""

    kind: str
    size_mm: tuple[float, float]
    aspect: tuple[float, float] = (0.8, 1.0)
    inner: float = 0.0
    purity: tuple[float, float] = (0.7, 1.0)
    haze_mm: float = 0.0
    along_axis: bool = False


MORPHOLOGY_SHAPES: dict[str, CalcShape] = {
    "skin": CalcShape("ring", (0.4, 0.9), (0.8, 1.0), inner=0.5, purity=(0.5, 0.8)),
    "vascular": CalcShape("rod", (0.6, 1.0), (0.25, 0.4), purity=(0.6, 0.9), along_axis=True),
    "coarse": CalcShape("blob", (0.7, 1.0), (0.6, 1.0), purity=(0.9, 1.0)),
    "large_rodlike": CalcShape("rod", (0.8, 1.0), (0.3, 0.5), purity=(0.9, 1.0), along_axis=True),
    "round_and_regular": CalcShape("disc", (0.4, 1.0), (0.85, 1.0), purity=(0.8, 1.0)),
    "lucent_centered": CalcShape("ring", (0.6, 1.0), (0.85, 1.0), inner=0.55, purity=(0.8, 1.0)),
    "eggshell": CalcShape("ring", (0.7, 1.0), (0.85, 1.0), inner=0.8, purity=(0.8, 1.0)),
    "milk_of_calcium": CalcShape("crescent", (0.4, 1.0), (0.8, 1.0), purity=(0.7, 1.0)),
    "dystrophic": CalcShape("blob", (0.6, 1.0), (0.4, 0.9), purity=(0.9, 1.0)),
    "punctate": CalcShape("disc", (0.15, 0.5), (0.85, 1.0), purity=(0.7, 1.0)),
    # faint and hazy, yet seen: measured on real views (docs/insert.md), peak about the local tissue sd
    "amorphous": CalcShape("disc", (0.2, 0.5), (0.7, 1.0), purity=(0.6, 0.9), haze_mm=0.08),
    "pleomorphic": CalcShape("blob", (0.2, 0.8), (0.4, 1.0), purity=(0.6, 1.0)),
    # thin but dense casts of a duct: 0.1-0.3 mm wide
    "fine_linear_branching": CalcShape("rod", (0.5, 1.0), (0.25, 0.4), purity=(0.9, 1.0), along_axis=True),
}

#: Distribution -> (calcifications per cluster, inclusive range; extent range, mm). The
#: extent is the sd of a clustered group's centres, a line's or a wedge's length, or the
#: diameter of a regional / diffuse area.
DISTRIBUTION_GEOMETRY: dict[str, tuple[tuple[int, int], tuple[float, float]]] = {
    "clustered": ((5, 15), (1.2, 2.5)),
    "linear": ((6, 15), (8.0, 18.0)),
    "segmental": ((15, 30), (18.0, 28.0)),
    "regional": ((15, 30), (20.0, 30.0)),
    "diffuse": ((20, 40), (35.0, 45.0)),
}

#: P(malignant) per morphology, shifted per distribution (BI-RADS suspicion, rounded).
_P_MALIGNANT_MORPHOLOGY = {m: 0.03 for m in MORPHOLOGIES} | {
    "punctate": 0.15, "amorphous": 0.30, "pleomorphic": 0.60, "fine_linear_branching": 0.80}
_P_MALIGNANT_DISTRIBUTION = {"diffuse": -0.10, "regional": -0.05, "clustered": 0.0, "linear": 0.10, "segmental": 0.10}


def calcification_malignancy_probability(morphology: str, distribution: str) -> float:
    """P(malignant) the phantom draws a cluster's pathology with."""
    return float(np.clip(_P_MALIGNANT_MORPHOLOGY[morphology] + _P_MALIGNANT_DISTRIBUTION[distribution], 0.02, 0.95))


def _check(morphology: str, distribution: str) -> None:
    if morphology not in MORPHOLOGIES:
        raise ConfigError(f"unknown calcification morphology {morphology!r}; choose one of: {', '.join(MORPHOLOGIES)}")
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"unknown calcification distribution {distribution!r}; choose one of: {', '.join(DISTRIBUTIONS)}")


def cluster_extent_mm(distribution: str) -> float:
    """The largest distance (mm) a cluster of ``distribution`` reaches from its centre."""
    lo_hi = DISTRIBUTION_GEOMETRY[distribution][1]
    return 3.0 * lo_hi[1] if distribution == "clustered" else 0.5 * lo_hi[1] + 1.0


def cluster_centres_mm(rng: np.random.Generator, distribution: str,
                       extent_mm: float | None = None) -> tuple[np.ndarray, float]:
    """(K, 2) calcification centres (x, y) in mm about the cluster centre, and the cluster's
    axis angle (radians; the line, the wedge's direction, or any for round groups).
    ``extent_mm``: scale the centres about the cluster centre so that the larger side of
    their bounding box is that many mm (a size model's draw); None keeps the distribution's
    own size (:data:`DISTRIBUTION_GEOMETRY`)."""
    (k_lo, k_hi), (e_lo, e_hi) = DISTRIBUTION_GEOMETRY[distribution]
    k = int(rng.integers(k_lo, k_hi + 1))
    extent = float(rng.uniform(e_lo, e_hi))
    axis = float(rng.uniform(0, np.pi))
    if distribution == "clustered":
        pts = np.clip(rng.normal(0.0, extent, (k, 2)), -3 * extent, 3 * extent)
        along = cross = None
    elif distribution == "linear":
        along = rng.uniform(-0.5, 0.5, k) * extent
        cross = rng.normal(0.0, 0.25, k)
    elif distribution == "segmental":
        # a few ducts fanning out over ~30 degrees from the wedge's apex
        ducts = rng.uniform(-0.26, 0.26, int(rng.integers(3, 6)))
        angle = ducts[rng.integers(len(ducts), size=k)] + rng.normal(0.0, 0.02, k)
        r = rng.uniform(0.0, 1.0, k) * extent
        along, cross = r * np.cos(angle) - 0.5 * extent, r * np.sin(angle)
    else:  # regional, diffuse: scattered over an ellipse of that diameter
        r = 0.5 * extent * np.sqrt(rng.uniform(0, 1, k))
        t = rng.uniform(0, 2 * np.pi, k)
        along, cross = r * np.cos(t), 0.75 * r * np.sin(t)
    if along is not None:
        c, s = np.cos(axis), np.sin(axis)
        pts = np.stack([along * c - cross * s, along * s + cross * c], axis=1)
    pts = np.asarray(pts, np.float64)
    if extent_mm is not None:
        span = float((pts.max(axis=0) - pts.min(axis=0)).max())
        pts = (pts - 0.5 * (pts.max(axis=0) + pts.min(axis=0))) * (float(extent_mm) / max(span, 1e-6))
    return pts, axis


def _body_thickness(u: np.ndarray, v: np.ndarray, shape: CalcShape, a: float, b: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Projected thickness (mm) of one calcification body on coordinates (u, v) (mm, its own
    frame: u along its length). ``a``, ``b`` are its half-length and half-width (mm)."""
    def ellipsoid(uu: np.ndarray, vv: np.ndarray, aa: float, bb: float) -> np.ndarray:
        q = (uu / aa) ** 2 + (vv / bb) ** 2
        return 2.0 * min(aa, bb) * np.sqrt(np.clip(1.0 - q, 0.0, None))

    if shape.kind == "ring":  # a shell: the outer body minus its lucent core
        return np.clip(ellipsoid(u, v, a, b) - ellipsoid(u, v, shape.inner * a, shape.inner * b), 0.0, None)
    if shape.kind == "crescent":  # milk of calcium: sediment in the lower part of a cyst
        return ellipsoid(u, v, a, b) * (v > b * rng.uniform(-0.1, 0.3))
    if shape.kind == "blob":  # irregular: two to four merged lobes inside the extent
        body = ellipsoid(u, v, a, b)
        for _ in range(int(rng.integers(1, 4))):
            ou, ov = rng.uniform(-0.5, 0.5) * a, rng.uniform(-0.5, 0.5) * b
            la = rng.uniform(0.3, 0.5) * a
            body = np.maximum(body, ellipsoid(u - ou, v - ov, la, la * rng.uniform(0.6, 1.0)))
        return body
    if shape.kind == "rod" and shape.along_axis and shape.aspect[1] < 0.3 and rng.random() < 0.4:
        # fine linear branching: a side branch leaves the rod at 30-60 degrees
        t = rng.uniform(0.5, 1.0) * np.sign(rng.uniform(-1, 1))
        cu, cv = np.cos(t), np.sin(t)
        ub, vb = (u - 0.2 * a) * cu + v * cv, -(u - 0.2 * a) * cv + v * cu
        return np.maximum(ellipsoid(u, v, a, b), ellipsoid(ub, vb, 0.6 * a, b))
    return ellipsoid(u, v, a, b)  # disc, rod


def render_cluster_window(image: np.ndarray, breast: np.ndarray, center_xy: tuple[float, float], morphology: str,
                          distribution: str, rng: np.random.Generator, pixel_spacing_mm: float,
                          compressed_mm: float = 50.0, style: str = "ffdm"
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw one calcification cluster into a tissue window.

    ``image`` (h, w) float32 in [0, 1]; ``breast`` (h, w) bool; ``center_xy`` the cluster
    centre in window px; ``pixel_spacing_mm`` mm per px. Returns (image with the cluster,
    cluster mask (h, w) bool, points (K, 2) float64: each calcification's centre (x, y) in
    window px, sizes (K,) float64: each calcification's largest extent in mm, within
    :data:`CALC_SIZE_MM`). Calcifications whose centre falls outside the breast are not drawn.
    """
    _check(morphology, distribution)
    centres_mm, axis = cluster_centres_mm(rng, distribution)
    pts = centres_mm / float(pixel_spacing_mm) + np.asarray(center_xy, np.float64)[None, :]
    return draw_calcifications(image, breast, pts, axis, morphology, rng, pixel_spacing_mm, compressed_mm, style)


def draw_calcifications(image: np.ndarray, breast: np.ndarray, pts: np.ndarray, axis: float, morphology: str,
                        rng: np.random.Generator, pixel_spacing_mm: float, compressed_mm: float = 50.0,
                        style: str = "ffdm") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw calcifications of ``morphology`` centred on ``pts`` (K, 2) (x, y) window px into
    ``image`` (h, w) in [0, 1] where ``breast`` allows; ``axis`` (radians) orients rods.
    Returns what :func:`render_cluster_window` returns."""
    if morphology not in MORPHOLOGIES:
        _check(morphology, DISTRIBUTIONS[0])
    h, w = image.shape
    shape = MORPHOLOGY_SHAPES[morphology]
    spacing = float(pixel_spacing_mm)
    thick = np.zeros((h, w), np.float64)  # calcium along the beam (mm) x purity
    drawn = np.zeros((h, w), bool)
    keep_pts, keep_sizes = [], []
    f = _SUPERSAMPLE
    for (x, y) in pts:
        length = float(np.clip(rng.uniform(*shape.size_mm), *CALC_SIZE_MM))
        aspect = float(rng.uniform(*shape.aspect))
        angle = axis + rng.normal(0.0, 0.15) if shape.along_axis else rng.uniform(0, np.pi)
        purity = float(rng.uniform(*shape.purity))
        a, b = 0.5 * length, 0.5 * length * aspect
        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        if not (0 <= ix < w and 0 <= iy < h and breast[iy, ix]):
            continue
        r = int(np.ceil(0.5 * length / spacing)) + 1
        x0, x1, y0, y1 = max(0, ix - r), min(w, ix + r + 1), max(0, iy - r), min(h, iy + r + 1)
        # supersampled pixel centres of the box, in mm about the calcification's centre
        fx = (np.arange(x0 * f, x1 * f) + 0.5) / f - 0.5 - x
        fy = (np.arange(y0 * f, y1 * f) + 0.5) / f - 0.5 - y
        dx, dy = np.meshgrid(fx * spacing, fy * spacing)
        c, s = np.cos(angle), np.sin(angle)
        body = _body_thickness(dx * c + dy * s, -dx * s + dy * c, shape, a, b, rng)
        coarse = body.reshape(y1 - y0, f, x1 - x0, f).mean(axis=(1, 3))
        if not coarse.any():  # smaller than the subsamples' spacing: its calcium in its pixel
            coarse[iy - y0, ix - x0] = 4.0 / 3.0 * np.pi * a * b * min(a, b) / spacing**2
        thick[y0:y1, x0:x1] += purity * coarse
        drawn[y0:y1, x0:x1] |= coarse > 0
        drawn[iy, ix] = True
        keep_pts.append((x, y))
        keep_sizes.append(length)
    points = np.asarray(keep_pts, np.float64).reshape(-1, 2)
    sizes = np.asarray(keep_sizes, np.float64)
    if not len(points):
        return image.copy(), np.zeros((h, w), bool), points, sizes
    if shape.haze_mm > 0:  # amorphous: hazy, indistinct
        thick = ndi.gaussian_filter(thick, shape.haze_mm / spacing)
    thick = ndi.gaussian_filter(thick, 0.5)  # the detector's blur (about half a pixel)
    local = ndi.uniform_filter(image, max(3, int(round(2.0 / spacing)) | 1))
    delta = thick * MU_CALCIUM_EXCESS * lesion_gain(local, compressed_mm, style)
    if style == "ffdm":
        delta = delta * (1.0 + USM_GAIN)  # the unsharp mask passes small detail at 1 + gain
    out = np.where(breast, np.clip(image + delta, 0.0, 1.0), image).astype(np.float32)
    mask = cluster_outline(drawn, spacing) & breast
    return out, mask, points, sizes


def cluster_outline(drawn: np.ndarray, spacing: float, margin_mm: float = CLUSTER_MARGIN_MM) -> np.ndarray:
    """The cluster outline: convex hull of the drawn calcifications (bool (h, w)), grown by
    ``margin_mm`` (default :data:`CLUSTER_MARGIN_MM`)."""
    from skimage.morphology import convex_hull_image

    hull = convex_hull_image(drawn) if drawn.sum() >= 3 else drawn
    return ndi.distance_transform_edt(~hull) <= margin_mm / spacing
