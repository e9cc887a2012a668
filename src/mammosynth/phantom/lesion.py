"""Masses in every BI-RADS shape and margin, rendered into phantom tissue as projected 3-D bodies.

A mass is the body ``{(rho, theta, z): (rho / R(theta))^2 + (z / c)^2 < 1}``: the contour
``R(theta)`` sets its outline, ``2c`` (0.7-1.0 x its diameter) its depth along the beam, and
it projects to a thickness ``t = 2c sqrt(1 - q^2)`` (``q`` = radius over ``R(theta)``). It
displaces the tissue in its column, so it adds ``t (mu_mass - mu_background)`` of
attenuation, with ``mu_mass = mu_gland (1 + excess)`` (``excess`` drawn per lesion from
``contrast_range``, default 0-0.10: carcinoma is ~5 % more attenuating than fibroglandular
tissue, Johns & Yaffe 1987) and the background composition read from the local image. The
added attenuation goes through the breast's display gain and unsharp mask (FFDM) or the film
curve's local slope, so a mass is about as bright as glandular tissue: plain over fat,
hidden in dense tissue. Its own texture is damped by the share of the column it fills.

Shapes (the contour ``R(theta)``): round (aspect 0.88-1), oval (aspect 0.5-0.72), lobulated
(3-5 broad lobes with notches between), irregular (random harmonics plus angular
extensions, no symmetry).
Margins: circumscribed (sharp edge), obscured (sharp edge with 120-220 degrees of the border
hidden by overlying glandular tissue, added as real attenuation), microlobulated (8-13
uneven small scallops), ill_defined (density fading over 15-30% of the radius beyond a
frayed outline), spiculated (10-24 thin tapering spicules radiating 0.5-1.3 radii beyond the
border: fibrous sheets a good part of the mass's depth deep at their root).

The mask is the exact projected body ``q < 1`` (plus the spicule cores for spiculated
masses), restricted to the breast.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from mammosynth.data.birads import MARGINS, SHAPES
from mammosynth.errors import ConfigError
from mammosynth.phantom.breast import (
    FAT_LEVEL,
    GLAND_LEVEL,
    MAX_GLANDULAR_FRACTION,
    MU_FAT,
    MU_GLAND,
    USM_GAIN,
    USM_SIGMA_MM,
    PhantomBreast,
    _block_blur,
    _smoothstep,
    lesion_gain,
    power_law_noise,
)

_N_THETA = 720
#: Excess linear attenuation of mass tissue over fibroglandular tissue, drawn per lesion:
#: invasive ductal carcinoma 0.844 vs fibroglandular 0.802 1/cm at 20 keV (+5 %; Johns &
#: Yaffe 1987, Phys Med Biol 32:675). 0 (as dense as glandular tissue, like many benign
#: masses) to 0.10 (twice the carcinoma excess); lower it for subtler masses.
MASS_CONTRAST_RANGE = (0.0, 0.10)


def _check(shape: str, margin: str) -> None:
    if shape not in SHAPES:
        raise ConfigError(f"unknown mass shape {shape!r}; choose one of: {', '.join(SHAPES)}")
    if margin not in MARGINS:
        raise ConfigError(f"unknown mass margin {margin!r}; choose one of: {', '.join(MARGINS)}")


def _harmonics(rng: np.random.Generator, theta: np.ndarray, ks: np.ndarray, amps: np.ndarray) -> np.ndarray:
    phase = rng.uniform(0, 2 * np.pi, len(ks))
    return np.sum(amps[:, None] * np.cos(ks[:, None] * theta[None, :] + phase[:, None]), axis=0)


def mass_contour(rng: np.random.Generator, shape: str, margin: str) -> tuple[np.ndarray, float]:
    """Relative contour radius R(theta) (720,) around 1, and the aspect ratio (minor/major).

    The shape sets the large-scale contour; the margin adds its own small-scale structure
    (microlobulated scallops). Angles are uniformly spaced over [0, 2 pi).
    """
    _check(shape, margin)
    theta = np.linspace(0, 2 * np.pi, _N_THETA, endpoint=False)
    if shape == "round":
        aspect = rng.uniform(0.88, 1.0)
        r = 1.0 + _harmonics(rng, theta, np.arange(2, 5), rng.normal(0, 0.012, 3))
    elif shape == "oval":
        aspect = rng.uniform(0.5, 0.72)
        r = 1.0 + _harmonics(rng, theta, np.arange(2, 5), rng.normal(0, 0.015, 3))
    elif shape == "lobulated":
        aspect = rng.uniform(0.7, 0.95)
        n_lobes = int(rng.integers(3, 6))
        centres = (np.arange(n_lobes) + rng.uniform(-0.2, 0.2, n_lobes)) * 2 * np.pi / n_lobes + rng.uniform(0, 2 * np.pi)
        widths = rng.uniform(0.5, 0.8, n_lobes) * np.pi / n_lobes
        heights = rng.uniform(0.8, 1.0, n_lobes)
        d = np.angle(np.exp(1j * (theta[None, :] - centres[:, None])))
        bumps = np.max(heights[:, None] * np.exp(-0.5 * (d / widths[:, None]) ** 2), axis=0)
        # Broad lobes with notches between them: the radius dips ~35% at each notch.
        r = 0.66 + 0.40 * bumps
    else:  # irregular
        aspect = rng.uniform(0.6, 1.0)
        ks = np.arange(2, 12)
        amps = rng.normal(0, 1, len(ks)) * 0.14 * ks ** -0.6
        r = 1.0 + _harmonics(rng, theta, ks, amps)
        # Angular corners and jagged extensions, which a lobulated or oval mass does not have.
        for c in rng.uniform(0, 2 * np.pi, int(rng.integers(3, 6))):
            d = np.abs(np.angle(np.exp(1j * (theta - c))))
            r += rng.uniform(0.15, 0.35) * np.clip(1 - d / rng.uniform(0.25, 0.5), 0, 1) ** 1.2
    if margin == "microlobulated":
        # Few enough, deep enough scallops to survive a 64 px patch (~12 px each at 40 px).
        k = int(rng.integers(8, 14))
        amp = rng.uniform(0.14, 0.18)
        # Scallops with sharp inward cusps (|cos| bumps, not a sinusoid), of uneven width and
        # depth so the border does not look like a gear wheel.
        warp = theta + _harmonics(rng, theta, np.arange(1, 4), rng.normal(0, 0.6 / k, 3) * k / 4)
        depth = 1.0 + 0.4 * _harmonics(rng, theta, np.arange(1, 4), rng.normal(0, 0.6, 3))
        r = r * (1.0 + amp * np.clip(depth, 0.3, 1.6) * (np.abs(np.cos(0.5 * k * warp + rng.uniform(0, np.pi))) - 0.64))
    r = r / np.sqrt(np.mean(r * r))  # unit mean-square radius keeps the area comparable
    return r.astype(np.float32), float(aspect)


def _spicules(rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray, radius: float,
              to_contour) -> tuple[np.ndarray, np.ndarray]:
    """Tapering straight spicules radiating from the border; (intensity, core mask) in the window."""
    n = int(rng.integers(10, 25))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    out = np.zeros(dx.shape, np.float32)
    core = np.zeros(dx.shape, bool)
    ox, oy = float(-dx[0, 0]), float(-dy[0, 0])  # the mass centre in window px
    h, w = dx.shape
    for a in angles:
        a_dev = a + rng.normal(0, 0.12)  # spicules are not exactly radial
        rb = to_contour(a) * radius
        start = 0.75 * rb
        length = rb * 0.25 + rng.uniform(0.5, 1.3) * radius
        w0 = max(0.9, rng.uniform(0.045, 0.075) * radius)
        strength = rng.uniform(0.6, 1.0)
        ux, uy = np.cos(a_dev), np.sin(a_dev)
        sx, sy = start * np.cos(a), start * np.sin(a)
        # Work only in the spicule's bounding box (plus its width).
        ex, ey = sx + length * ux, sy + length * uy
        m = 3 * w0 + 2
        x0 = max(0, int(np.floor(ox + min(sx, ex) - m)))
        x1 = min(w, int(np.ceil(ox + max(sx, ex) + m)) + 1)
        y0 = max(0, int(np.floor(oy + min(sy, ey) - m)))
        y1 = min(h, int(np.ceil(oy + max(sy, ey) + m)) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        px, py = dx[y0:y1, x0:x1] - sx, dy[y0:y1, x0:x1] - sy
        t = (px * ux + py * uy) / length
        d = np.abs(-px * uy + py * ux)
        tc = np.clip(t, 0, 1)
        width = w0 * (1 - tc) + 0.35 * tc + 0.2
        along = (t >= 0) & (t <= 1)
        val = np.where(along, np.exp(-0.5 * (d / width) ** 2) * (1 - tc) ** 0.6, 0.0) * strength
        np.maximum(out[y0:y1, x0:x1], val.astype(np.float32), out=out[y0:y1, x0:x1])
        core[y0:y1, x0:x1] |= along & (d <= np.maximum(width * 0.8, 0.5)) & (tc < 0.5)
    return out, core


def render_mass_window(image: np.ndarray, breast: np.ndarray, center_xy: tuple[float, float], diameter_px: float,
                       shape: str, margin: str, rng: np.random.Generator,
                       pixel_spacing_mm: float, compressed_mm: float = 50.0, style: str = "ffdm",
                       contrast_range: tuple[float, float] = MASS_CONTRAST_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """Render one mass into a tissue window (the work behind :func:`render_mass`).

    ``image`` (h, w) float32 in [0, 1] tissue; ``breast`` (h, w) bool; ``center_xy`` in window
    px; ``diameter_px`` the body's mean diameter; ``compressed_mm`` the breast's thickness;
    ``style`` the breast's rendering style; ``contrast_range`` the range the mass's excess
    attenuation over fibroglandular tissue is drawn from (0.05 = 5 % more). Returns (image
    with the mass, mask (h, w) bool).
    """
    _check(shape, margin)
    h, w = image.shape
    radius = 0.5 * float(diameter_px)
    contour, aspect = mass_contour(rng, shape, margin)
    orient = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - np.float32(center_xy[0]), yy - np.float32(center_xy[1])
    c, s = np.cos(orient), np.sin(orient)
    # Elliptical frame: major axis along ``orient``; aspect keeps the area ~ pi radius^2.
    u = (dx * c + dy * s) * np.sqrt(aspect)
    v = (-dx * s + dy * c) / np.sqrt(aspect)
    rho = np.sqrt(u * u + v * v) / radius
    theta = np.mod(np.arctan2(v, u), 2 * np.pi)
    idx = theta / (2 * np.pi) * _N_THETA
    i0 = np.floor(idx).astype(np.int64) % _N_THETA
    frac = idx - np.floor(idx)
    r_theta = contour[i0] * (1 - frac) + contour[(i0 + 1) % _N_THETA] * frac
    q = rho / r_theta

    def to_contour(a: float) -> float:
        """Contour radius (in radii) in image direction ``a``."""
        ua, va = np.cos(a - orient) * np.sqrt(aspect), np.sin(a - orient) / np.sqrt(aspect)
        t = np.mod(np.arctan2(va, ua), 2 * np.pi)
        return float(contour[int(t / (2 * np.pi) * _N_THETA) % _N_THETA] / np.hypot(ua, va))

    px_per_mm = 1.0 / pixel_spacing_mm
    if margin == "ill_defined":
        # Frayed boundary: the edge wanders with noise, then blurs over 15-30% of the radius.
        fray = power_law_noise(rng, (h, w), 2.5)
        q = q * (1.0 + 0.08 * fray)
    # The 3-D body {(rho, theta, z): (rho / R(theta))^2 + (z / c)^2 < 1} projects to a
    # thickness 2 c sqrt(1 - q^2) (mm); c is the half-depth along the beam.
    radius_mm = radius * pixel_spacing_mm
    depth_mm = 2.0 * radius_mm * rng.uniform(0.7, 1.0)
    profile = np.sqrt(np.clip(1.0 - q * q, 0.0, 1.0))
    mask = q < 1.0
    if margin == "ill_defined":
        sigma = rng.uniform(0.15, 0.30) * radius
        # Infiltration: the body's density fades gradually beyond the outline.
        profile = ndi.gaussian_filter(np.clip(1.3 * profile, 0, 1), sigma)
    elif margin == "spiculated":
        profile = ndi.gaussian_filter(profile, max(0.5, 0.04 * radius))
    else:
        # Circumscribed, obscured, microlobulated: a sharp edge (detector blur only).
        profile = ndi.gaussian_filter(profile, max(0.3, 0.05 * px_per_mm))
    # Internal heterogeneity: a mass is not a uniform solid.
    thick_mm = depth_mm * profile * (1.0 + 0.08 * power_law_noise(rng, (h, w), 2.8))
    lo, hi = contrast_range
    excess = rng.uniform(lo, hi)  # the mass's attenuation over fibroglandular tissue
    mu_mass = MU_GLAND * (1.0 + excess)
    if margin == "spiculated":
        spic, core = _spicules(rng, dx, dy, radius, to_contour)
        spic = ndi.gaussian_filter(spic, 0.5)
        # Spicules are fibrous sheets radiating from the body: thin in the image plane,
        # a few mm deep along the beam near their root, tapering outwards.
        thick_mm = np.maximum(thick_mm, spic * depth_mm * rng.uniform(0.6, 0.9))
        mask |= core
    # Local background composition (a ~radius-wide box mean): the mass displaces that
    # tissue, so it adds (mu_mass - mu_background) per mm of its thickness.
    box = max(3, int(radius) | 1)
    local = ndi.uniform_filter(ndi.uniform_filter(image, box), box)
    g_local = np.clip((local - FAT_LEVEL) / (GLAND_LEVEL - FAT_LEVEL), 0.0, 1.0) * MAX_GLANDULAR_FRACTION
    added = thick_mm * (mu_mass - (MU_FAT + (MU_GLAND - MU_FAT) * g_local))
    if margin == "obscured":
        # Overlying fibroglandular tissue in front of a 120-220 degree sector of the border.
        centre_angle = rng.uniform(0, 2 * np.pi)
        half_width = np.radians(rng.uniform(60, 110))
        ang = np.arctan2(dy, dx)
        d_ang = np.abs(np.angle(np.exp(1j * (ang - centre_angle))))
        sector = 1.0 - _smoothstep(half_width * 0.6, half_width * 1.2, d_ang)
        band = _smoothstep(0.45, 0.85, q) * (1.0 - _smoothstep(1.4, 2.2, q))
        clouds = power_law_noise(rng, (h, w), 3.0, f_min=1.0 / max(8.0, 2 * radius))
        dense = _smoothstep(-0.6, 0.6, clouds + 0.5) * sector * band
        dense = ndi.gaussian_filter(dense, max(0.6, 0.04 * radius))
        # Replaces fat by gland over a depth comparable to the mass's own.
        added = added + dense * depth_mm * rng.uniform(0.8, 1.2) * (MU_GLAND - MU_FAT) * (1.0 + 0.15 * clouds)
    delta = added * lesion_gain(local, compressed_mm, style)
    if style == "ffdm":
        # The processed image's unsharp mask acts on the lesion's signal too (it is linear).
        s_px = USM_SIGMA_MM * px_per_mm
        delta = delta + USM_GAIN * (delta - _block_blur(delta, s_px, max(1, int(round(0.4 * px_per_mm)))))
    # The mass replaces part of the column it occupies: its own texture is damped.
    damp = np.clip(thick_mm / compressed_mm, 0.0, 0.5)
    out = image + damp * (local - image) + delta
    out = np.where(breast, np.clip(out, 0.0, 1.0), image).astype(np.float32)
    mask &= breast
    return out, mask


def render_mass(breast: PhantomBreast, center_xy: tuple[int, int], diameter_px: float, shape: str,
                margin: str, seed: int,
                contrast_range: tuple[float, float] = MASS_CONTRAST_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """Render a mass of ``shape`` and ``margin`` into a phantom breast.

    ``center_xy`` (x, y) px in the full image; ``diameter_px`` the body's mean diameter in
    px. Deterministic per (seed, shape, margin). Returns (image (H, W) float32 in [0, 1] with
    the mass, exact mass mask (H, W) bool); ``breast.image`` is left unchanged.
    """
    _check(shape, margin)
    if diameter_px <= 2:
        raise ConfigError(f"mass diameter must be more than 2 px, got {diameter_px}")
    H, W = breast.image.shape
    cx, cy = float(center_xy[0]), float(center_xy[1])
    if not (0 <= cx < W and 0 <= cy < H):
        raise ConfigError(f"mass centre {center_xy} lies outside the {W}x{H} image")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, SHAPES.index(shape), MARGINS.index(margin)]))
    half = int(np.ceil(window_half_size(diameter_px)))
    x0, x1 = max(0, int(cx) - half), min(W, int(cx) + half + 1)
    y0, y1 = max(0, int(cy) - half), min(H, int(cy) + half + 1)
    win, mwin = render_mass_window(breast.image[y0:y1, x0:x1], breast.breast_mask[y0:y1, x0:x1], (cx - x0, cy - y0),
                                   diameter_px, shape, margin, rng, float(breast.meta["pixel_spacing_mm"]),
                                   compressed_mm=float(breast.meta.get("compressed_thickness_mm", 50.0)),
                                   style=str(breast.meta.get("style", "ffdm")), contrast_range=contrast_range)
    image = breast.image.copy()
    mask = np.zeros((H, W), bool)
    image[y0:y1, x0:x1] = win
    mask[y0:y1, x0:x1] = mwin
    return image, mask


def window_half_size(diameter_px: float) -> float:
    """Half-side (px) of a window that holds a mass, its spicules and its crop context.

    Body radius <= ~1.4 r for the most elongated ovals, spicules reach <= 2.3 r, and the
    record crop adds 30% of the extent on each side: 2.3 r * 1.6 ~ 3.7 r.
    """
    return 3.8 * 0.5 * float(diameter_px) + 4
