"""The phantom as a dataset: lesion records, normal records, and the one-file store.

Lesions are rendered into whole phantom breasts (one breast per patient, several lesions at
separate sites), so lesion patches are the same tissue as the full mammograms. Each lesion
is rendered into its own copy of a window around its site only, so lesions of one patient do
not show in each other's crops and a 400-lesion set needs ~60 breasts, not 400.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
from scipy import ndimage as ndi

from mammosynth.data.birads import DISTRIBUTIONS, MARGINS, MORPHOLOGIES, NOT_MASS, SHAPES, Label
from mammosynth.data.records import DEFAULT_CONTEXT, LesionRecord, MammogramRecord
from mammosynth.errors import ConfigError
from mammosynth.phantom.breast import DENSITIES, PHANTOM_VERSION, STYLES, VIEWS, default_spacing, render_breast
from mammosynth.phantom.calcification import (
    CLUSTER_MARGIN_MM,
    calcification_malignancy_probability,
    cluster_extent_mm,
    render_cluster_window,
)
from mammosynth.phantom.lesion import MASS_CONTRAST_RANGE, render_mass_window, window_half_size

#: Mass diameter distribution (mm): log-normal, median 15 mm, clipped to 8-35 mm.
DIAMETER_MEDIAN_MM = 15.0
DIAMETER_SIGMA = 0.35
DIAMETER_RANGE_MM = (8.0, 35.0)
#: Lesions per phantom patient (one breast image each), inclusive range.
LESIONS_PER_PATIENT = (6, 14)
#: Calcification clusters per phantom patient (one breast image each), inclusive range.
CLUSTERS_PER_PATIENT = (2, 5)
#: Density mix of lesion patients (A, B, C, D): the screening population is mostly B/C.
DENSITY_MIX = (0.15, 0.40, 0.35, 0.10)
#: P(malignant) per margin, shifted per shape: spiculated/irregular mostly malignant,
#: circumscribed round/oval mostly benign (BI-RADS positive predictive values, rounded).
_P_MALIGNANT_MARGIN = {"circumscribed": 0.10, "obscured": 0.35, "microlobulated": 0.60, "ill_defined": 0.70, "spiculated": 0.90}
_P_MALIGNANT_SHAPE = {"round": -0.05, "oval": -0.05, "lobulated": 0.05, "irregular": 0.15}


def _label(term: str) -> Label:
    return Label(raw=term.upper(), value=term, status="exact")


def malignancy_probability(shape: str, margin: str) -> float:
    """P(malignant) the phantom draws a pathology with for a (shape, margin) pair."""
    return float(np.clip(_P_MALIGNANT_MARGIN[margin] + _P_MALIGNANT_SHAPE[shape], 0.03, 0.97))


def _cycled(rng: np.random.Generator, pairs: list[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Endless label pairs: all ``pairs`` cycled, each block shuffled (balanced)."""
    while True:
        yield from (pairs[i] for i in rng.permutation(len(pairs)))


def _patients(n: int, seed: int, stream: int, prefix: str, per_patient: tuple[int, int],
              pairs: list[tuple[str, str]], full_shape: tuple[int, int], style: str) -> Iterator[tuple]:
    """The patients of ``n`` phantom lesions: (patient id ``<prefix>0000``..., its lesions as
    [(record index, label pair)], the drawing rng, (view, laterality, density, breast_seed,
    breast), draw_site). Separate streams (from ``seed`` and ``stream``) for the
    label order and the drawing, so that the first k records of a run of n are the records of
    a run of k (a small set is a prefix of a bigger one)."""
    label_seq, draw_seq = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream]).spawn(2)
    combos = _cycled(np.random.default_rng(label_seq), pairs)
    rng = np.random.default_rng(draw_seq)
    i = patient = 0
    while i < n:
        k = min(n - i, int(rng.integers(per_patient[0], per_patient[1] + 1)))
        drawn = _draw_breast(rng, patient, full_shape, style)
        lesions = [(j, next(combos)) for j in range(i, i + k)]
        yield f"{prefix}{patient:04d}", lesions, rng, drawn, _site_sampler(drawn[4], full_shape, drawn[1])
        i += k
        patient += 1


def _crop_square(img: np.ndarray, cx: float, cy: float, side: int) -> tuple[np.ndarray, int, int]:
    """A side x side crop centred on (cx, cy), shifted to lie inside the image where it fits
    (the detector edge has no background beyond it), zero-padded only where the image is
    smaller than the crop. Returns (crop, x0, y0) with (x0, y0) the crop's corner in ``img``.
    """
    H, W = img.shape
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), W - side) if side <= W else (W - side) // 2
    y0 = min(max(y0, 0), H - side) if side <= H else (H - side) // 2
    out = np.zeros((side, side), img.dtype)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(W, x0 + side), min(H, y0 + side)
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out, x0, y0


def _check_n(n: int, what: str) -> None:
    if n < 0:
        raise ConfigError(f"number of phantom {what} must be >= 0, got {n}")


def _check_ranges(contrast_range: tuple[float, float], size_range_mm: tuple[float, float], style: str) -> None:
    lo, hi = (float(v) for v in contrast_range)
    if not -0.5 <= lo <= hi <= 2.0:
        raise ConfigError(f"mass contrast range must be (low, high) with -0.5 <= low <= high <= 2, got {tuple(contrast_range)}")
    lo, hi = (float(v) for v in size_range_mm)
    if not 2.0 <= lo <= hi <= 80.0:
        raise ConfigError(f"mass size range must be (low, high) mm with 2 <= low <= high <= 80, got {tuple(size_range_mm)}")
    if style not in STYLES:
        raise ConfigError(f"unknown phantom style {style!r}; choose one of: {', '.join(STYLES)}")


def _draw_breast(rng: np.random.Generator, patient: int, full_shape: tuple[int, int], style: str):
    """One lesion patient's breast: (view, laterality, density, breast_seed, PhantomBreast),
    drawn from ``rng`` (views alternate per patient, densities follow DENSITY_MIX)."""
    view = VIEWS[patient % 2]
    laterality = "L" if rng.random() < 0.5 else "R"
    density = DENSITIES[int(rng.choice(4, p=DENSITY_MIX))]
    breast_seed = int(rng.integers(0, 2**31 - 1))
    breast = render_breast(breast_seed, full_shape, view=view, laterality=laterality, density=density, style=style)
    return view, laterality, density, breast_seed, breast


def _site_sampler(breast, full_shape: tuple[int, int], laterality: str):
    """``draw(rng, need_px)``: a lesion centre (x, y) at least ``need_px`` inside the breast
    (off the pectoral muscle, away from the skin and the image edge), preferring less dense
    tissue, or None when no site is that deep."""
    H, W = full_shape
    # Sites: inside the breast, off the pectoral muscle, away from the skin; candidates
    # on a grid ``g`` px apart (a site is a mass centre, so sub-grid precision is moot).
    g = 2 if min(H, W) >= 256 else 1
    usable = (breast.breast_mask & ~ndi.binary_dilation(breast.pectoral_mask, iterations=3))[g // 2::g, g // 2::g]
    gh, gw = usable.shape
    chest_pad = 4
    pad = ((0, 0), (chest_pad, 0)) if laterality == "L" else ((0, 0), (0, chest_pad))
    depth = ndi.distance_transform_edt(np.pad(usable, pad, mode="edge")).astype(np.float32) * g
    depth = depth[:, chest_pad:] if laterality == "L" else depth[:, :gw]
    # Keep the mass itself inside the image too (the chest wall and top edge are no skin).
    grid_x, grid_y = np.arange(gw) * g + g // 2, np.arange(gh) * g + g // 2
    border = np.minimum(np.minimum(grid_x, W - 1 - grid_x)[None, :], np.minimum(grid_y, H - 1 - grid_y)[:, None])
    depth = np.minimum(depth, border)
    # Candidates sorted by depth once, so each lesion draws a site with one searchsorted.
    order = np.argsort(-depth, axis=None, kind="stable")
    gland_flat = breast.glandular[g // 2::g, g // 2::g].ravel()
    depth_sorted = -depth.ravel()[order]

    def draw(rng: np.random.Generator, need: float) -> tuple[float, float] | None:
        n_ok = int(np.searchsorted(depth_sorted, -need, side="left"))
        if not n_ok:
            return None
        # Reported lesions are the visible ones: prefer sites in less dense tissue (accept
        # with 1 - 0.75 x glandular weight), as a reader would.
        for _try in range(20):
            j = int(order[int(rng.integers(n_ok))])
            if rng.random() < 1.0 - 0.75 * float(gland_flat[j]):
                break
        return (float(grid_x[j % gw]), float(grid_y[j // gw]))

    return draw


def _patch_from_window(image: np.ndarray, win: np.ndarray, mwin: np.ndarray, x0: int, y0: int, x1: int, y1: int):
    """The square, context-padded crop around a lesion drawn into the window
    ``image[y0:y1, x0:x1]`` (``win`` with lesion mask ``mwin``): (patch, mask, px0, py0,
    bbox (x, y, w, h) in the full image)."""
    ys, xs = np.nonzero(mwin)
    by0, by1, bx0, bx1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    bh, bw = by1 - by0, bx1 - bx0
    side = int(round(max(bh, bw) * (1.0 + 2.0 * DEFAULT_CONTEXT)))
    # Crop the breast, then lay the rendered window over it (the window alone may be
    # too small once the crop is shifted off an image edge).
    ccx, ccy = x0 + (bx0 + bx1) / 2, y0 + (by0 + by1) / 2
    patch, px0, py0 = _crop_square(image, ccx, ccy, side)
    mask = np.zeros_like(patch, dtype=bool)
    ox0, oy0 = max(x0, px0), max(y0, py0)
    ox1, oy1 = min(x1, px0 + side), min(y1, py0 + side)
    patch[oy0 - py0:oy1 - py0, ox0 - px0:ox1 - px0] = win[oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0]
    mask[oy0 - py0:oy1 - py0, ox0 - px0:ox1 - px0] = mwin[oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0]
    return patch, mask, px0, py0, (x0 + bx0, y0 + by0, bw, bh)


def phantom_lesion_records(n: int, seed: int = 0, full_shape: tuple[int, int] = (1024, 832), *,
                           contrast_range: tuple[float, float] = MASS_CONTRAST_RANGE,
                           size_range_mm: tuple[float, float] = DIAMETER_RANGE_MM,
                           style: str = "ffdm") -> Iterator[LesionRecord]:
    """Stream ``n`` phantom mass records, balanced over the 20 shape x margin pairs.

    ``contrast_range``: the range each mass's excess attenuation over fibroglandular tissue
    is drawn from (0.05 = 5 % more; default 0-0.10, see ``lesion.MASS_CONTRAST_RANGE``);
    lower it for subtler masses. ``size_range_mm``: mass diameters (mm), log-normal around
    15 mm (or the range's geometric mean when 15 mm lies outside it), clipped to the range.
    ``style``: "ffdm" or "film" (see :func:`render_breast`).

    Each record holds a square crop (at native pixel spacing, 204.8 mm / H per px) around the
    lesion with ``DEFAULT_CONTEXT`` padding (shifted to stay inside the image next to its
    edge), its exact mask, labels, bbox (x, y, w, h) and lesion_size (h, w) in full-image
    px. Patients ``PH0000``... hold 6-14 lesions each, all
    in one breast image. Deterministic per (seed, full_shape); the first k records do not
    depend on ``n``.
    """
    _check_n(n, "lesions")
    _check_ranges(contrast_range, size_range_mm, style)
    size_lo, size_hi = float(size_range_mm[0]), float(size_range_mm[1])
    median_mm = DIAMETER_MEDIAN_MM if size_lo <= DIAMETER_MEDIAN_MM <= size_hi else float(np.sqrt(size_lo * size_hi))
    H, W = int(full_shape[0]), int(full_shape[1])
    spacing = default_spacing((H, W))
    for pid, lesions, rng, drawn, draw_site in _patients(n, seed, 0xA11, "PH", LESIONS_PER_PATIENT,
                                                         [(s, m) for s in SHAPES for m in MARGINS], (H, W), style):
        view, laterality, density, breast_seed, breast = drawn
        for i, (shape, margin) in lesions:
            diameter_mm = float(np.clip(np.exp(rng.normal(np.log(median_mm), DIAMETER_SIGMA)), size_lo, size_hi))
            site = None
            for _shrink in range(6):
                diameter_px = diameter_mm / spacing
                site = draw_site(rng, 0.75 * diameter_px + 2.0 / spacing)
                if site is not None:
                    break
                diameter_mm *= 0.8  # a big mass in a small breast: draw it smaller
            if site is None:
                raise ConfigError(f"phantom breast {pid} is too small ({H}x{W}) for a {diameter_mm:.0f} mm mass")
            mass_seed = int(rng.integers(0, 2**31 - 1))
            mrng = np.random.default_rng(np.random.SeedSequence([mass_seed, SHAPES.index(shape), MARGINS.index(margin)]))
            half = int(np.ceil(window_half_size(diameter_px)))
            cx, cy = site
            x0, y0 = max(0, int(cx) - half), max(0, int(cy) - half)
            x1, y1 = min(W, int(cx) + half + 1), min(H, int(cy) + half + 1)
            win, mwin = render_mass_window(breast.image[y0:y1, x0:x1], breast.breast_mask[y0:y1, x0:x1],
                                           (cx - x0, cy - y0), diameter_px, shape, margin, mrng, spacing,
                                           compressed_mm=float(breast.meta["compressed_thickness_mm"]), style=style,
                                           contrast_range=contrast_range)
            patch, mask, px0, py0, bbox = _patch_from_window(breast.image, win, mwin, x0, y0, x1, y1)
            bh, bw = bbox[3], bbox[2]
            pathology = "malignant" if rng.random() < malignancy_probability(shape, margin) else "benign"
            yield LesionRecord(
                source="phantom",
                source_id=f"phantom-s{seed}-{i:05d}",
                patient_id=pid,
                patch=patch,
                mask=mask,
                shape=_label(shape),
                margin=_label(margin),
                pathology=_label(pathology),
                laterality=laterality,  # type: ignore[arg-type]
                view=view,  # type: ignore[arg-type]
                bbox=bbox,
                lesion_size=(bh, bw),
                pixel_spacing_mm=spacing,
                density=density,
                extra={"diameter_mm": round(diameter_mm, 2), "center_xy": (int(cx), int(cy)),
                       "crop_xy": (px0, py0), "breast_seed": breast_seed, "mass_seed": mass_seed},
            )


def phantom_calcification_records(n: int, seed: int = 0, full_shape: tuple[int, int] = (1024, 832), *,
                                   style: str = "ffdm") -> Iterator[LesionRecord]:
    """Stream ``n`` phantom calcification clusters, balanced over the 13 x 5 morphology x
    distribution pairs (:mod:`mammosynth.phantom.calcification`).

    Each record is a calcification lesion like a mass record (square context-padded crop at
    native spacing, exact cluster mask, bbox and lesion_size in full-image px), with
    morphology and distribution labels, shape and margin ``non_mass``, and ``points``: the
    exact centre of every calcification, (K, 2) (x, y) in patch px (``extra["points_xy"]``
    has them in full-image px, ``extra["calc_sizes_mm"]`` their sizes, 0.1-1 mm). Patients
    ``PC0000``... hold 2-5 clusters each, in one breast image. Deterministic per (seed,
    full_shape), with random streams of its own: masses drawn with the same seed are the
    same whether or not calcifications are drawn; the first k records do not depend on ``n``.
    """
    _check_n(n, "calcification clusters")
    _check_ranges(MASS_CONTRAST_RANGE, DIAMETER_RANGE_MM, style)
    H, W = int(full_shape[0]), int(full_shape[1])
    spacing = default_spacing((H, W))
    pairs = [(m, d) for m in MORPHOLOGIES for d in DISTRIBUTIONS]
    for pid, clusters, rng, (view, laterality, density, breast_seed, breast), draw_site in _patients(
            n, seed, 0xCA1C, "PC", CLUSTERS_PER_PATIENT, pairs, (H, W), style):
        for i, (morphology, distribution) in clusters:
            reach_px = cluster_extent_mm(distribution) / spacing
            for depth_scale in (1.0, 0.5, 0.25, 0.0):  # a wide cluster in a small breast: let it reach the skin
                site = draw_site(rng, depth_scale * reach_px + 2.0 / spacing)
                if site is not None:
                    break
            if site is None:
                raise ConfigError(f"phantom breast {pid} is too small ({H}x{W}) for a calcification cluster")
            cx, cy = site
            half = int(np.ceil(reach_px + (CLUSTER_MARGIN_MM + 2.0) / spacing))
            x0, y0 = max(0, int(cx) - half), max(0, int(cy) - half)
            x1, y1 = min(W, int(cx) + half + 1), min(H, int(cy) + half + 1)
            for _attempt in range(8):  # a cluster whose calcifications all fell outside the breast is redrawn
                cluster_seed = int(rng.integers(0, 2**31 - 1))
                crng = np.random.default_rng(np.random.SeedSequence(
                    [cluster_seed, MORPHOLOGIES.index(morphology), DISTRIBUTIONS.index(distribution)]))
                win, mwin, points, sizes = render_cluster_window(
                    breast.image[y0:y1, x0:x1], breast.breast_mask[y0:y1, x0:x1], (cx - x0, cy - y0), morphology,
                    distribution, crng, spacing, compressed_mm=float(breast.meta["compressed_thickness_mm"]), style=style)
                if len(points) and mwin.any():
                    break
            else:
                raise ConfigError(f"phantom breast {pid}: no calcification of a {distribution} cluster fell inside the breast")
            patch, mask, px0, py0, bbox = _patch_from_window(breast.image, win, mwin, x0, y0, x1, y1)
            pathology = "malignant" if rng.random() < calcification_malignancy_probability(morphology, distribution) else "benign"
            points_full = points + np.float64([x0, y0])
            yield LesionRecord(
                source="phantom", source_id=f"phantom-s{seed}-calc-{i:05d}", patient_id=pid, patch=patch, mask=mask,
                shape=NOT_MASS, margin=NOT_MASS, pathology=_label(pathology), lesion_type="calcification",
                morphology=_label(morphology), distribution=_label(distribution),
                points=(points_full - np.float64([px0, py0])).astype(np.float32),
                laterality=laterality,  # type: ignore[arg-type]
                view=view,  # type: ignore[arg-type]
                bbox=bbox, lesion_size=(bbox[3], bbox[2]), pixel_spacing_mm=spacing, density=density,
                extra={"points_xy": points_full.round(3).tolist(), "calc_sizes_mm": sizes.round(3).tolist(),
                       "center_xy": (int(cx), int(cy)), "crop_xy": (px0, py0), "breast_seed": breast_seed,
                       "cluster_seed": cluster_seed},
            )


def phantom_normal_records(n: int, seed: int = 0, full_shape: tuple[int, int] = (1024, 832), *,
                           style: str = "ffdm", markers: bool = False,
                           nipple_marker: bool = True) -> Iterator[MammogramRecord]:
    """Stream ``n`` normal phantom mammograms (H, W) = ``full_shape`` in ``style`` ("ffdm"/"film").

    ``markers`` (default off): draw radio-opaque markers (:func:`markers.draw_markers`): the
    laterality/view letters ("L CC") outside the breast and, with ``nipple_marker``, a metal
    bead on the nipple; the record's ``markers`` list labels each (category "marker"). Their
    random stream is their own, so the images are otherwise those drawn without markers.

    Views alternate CC/MLO every image, laterality L/R every second image, and the density
    cycles A-D every second image, so each patient ``PN0000``... is one breast seen CC and
    MLO, and every view x density pair occurs. Deterministic per (n, seed, full_shape).
    """
    _check_n(n, "normals")
    _check_ranges(MASS_CONTRAST_RANGE, DIAMETER_RANGE_MM, style)
    H, W = int(full_shape[0]), int(full_shape[1])
    for i in range(n):
        pair = i // 2
        view = VIEWS[i % 2]
        laterality = "L" if pair % 2 == 0 else "R"
        density = DENSITIES[pair % 4]
        breast_seed = int(np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xB0D, i])).integers(0, 2**31 - 1))
        breast = render_breast(breast_seed, (H, W), view=view, laterality=laterality, density=density, style=style)
        image, marks = breast.image, []
        if markers:
            from mammosynth.phantom.markers import draw_markers

            mrng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x3A4C, i]))
            image, marks = draw_markers(breast, mrng, nipple_marker=nipple_marker)
        yield MammogramRecord(
            source="phantom",
            source_id=f"phantom-s{seed}-normal-{i:04d}",
            patient_id=f"PN{pair:04d}",
            image=image,
            breast_mask=breast.breast_mask,
            laterality=laterality,  # type: ignore[arg-type]
            view=view,  # type: ignore[arg-type]
            density=density,
            pixel_spacing_mm=float(breast.meta["pixel_spacing_mm"]),
            extra={"breast_seed": breast_seed, "pectoral_mask": breast.pectoral_mask},
            markers=marks,
        )


def write_phantom_store(out: str | Path, n_lesions: int = 400, n_normals: int = 24, patch_size: int = 64,
                        full_shape: tuple[int, int] = (1024, 832), normal_size: tuple[int, int] | None = None,
                        seed: int = 0, progress: bool = True,
                        split_fractions: tuple[float, float, float] | str | None = None, *,
                        mass_contrast_range: tuple[float, float] = MASS_CONTRAST_RANGE,
                        mass_size_range_mm: tuple[float, float] = DIAMETER_RANGE_MM,
                        style: str = "ffdm", n_calcifications: int = 0, markers: bool = False,
                        nipple_marker: bool = True) -> dict[str, Any]:
    """Draw the phantom dataset into one store file (atomic: the file appears when complete).

    ``n_calcifications`` calcification clusters (:func:`phantom_calcification_records`) are
    stored after the masses; with 0 (the default) the file holds what it always held.

    ``markers`` (default False): the normal mammograms carry radio-opaque markers (laterality/
    view letters outside the breast, and a nipple bead unless ``nipple_marker`` is False),
    stored with their own labels (``/markers``, category "marker"; ``Store.markers``), never
    as lesions. With False the file holds what it always held.

    ``mass_contrast_range`` (excess attenuation of mass tissue over fibroglandular tissue,
    default 0-0.10) and ``mass_size_range_mm`` (diameters, default 8-35 mm) make the masses
    subtler or smaller; ``style`` "ffdm" (default) or "film" (see :func:`phantom_lesion_records`).

    ``normal_size`` (H, W) of the stored normals; None keeps ``full_shape``. Shows a rich
    progress bar when ``progress``. ``split_fractions`` (train, val, test) for the store's
    stratified patient-level split; None keeps the store's default (0.8, 0.1, 0.1).
    Returns the store manifest (dict).
    """
    from mammosynth.data.store import StoreWriter

    _check_n(n_lesions, "lesions")
    _check_n(n_normals, "normals")
    _check_n(n_calcifications, "calcification clusters")
    _check_ranges(mass_contrast_range, mass_size_range_mm, style)
    H, W = int(full_shape[0]), int(full_shape[1])
    provenance = {
        "source": "phantom", "seed": int(seed), "phantom_version": PHANTOM_VERSION,
        "n_lesions": int(n_lesions), "n_normals": int(n_normals), "full_shape": [H, W],
        "pixel_spacing_mm": default_spacing((H, W)), "context": DEFAULT_CONTEXT,
        "diameter_mm": {"median": DIAMETER_MEDIAN_MM, "sigma_log": DIAMETER_SIGMA, "range": [float(v) for v in mass_size_range_mm]},
        "mass_contrast_range": [float(v) for v in mass_contrast_range], "style": style,
        "lesions_per_patient": list(LESIONS_PER_PATIENT), "density_mix": dict(zip(DENSITIES, DENSITY_MIX)),
    }
    if markers:
        provenance.update({"markers": {"laterality": True, "nipple": bool(nipple_marker), "on": "normals"}})
    if n_calcifications:
        provenance.update({"n_calcifications": int(n_calcifications), "clusters_per_patient": list(CLUSTERS_PER_PATIENT)})
    les_opts = {"contrast_range": tuple(mass_contrast_range), "size_range_mm": tuple(mass_size_range_mm), "style": style}
    size = tuple(normal_size) if normal_size is not None else (H, W)
    split_opts = {} if split_fractions is None else {"split_fractions": split_fractions}
    nor_opts = {"style": style, **({"markers": True, "nipple_marker": bool(nipple_marker)} if markers else {})}
    writer = StoreWriter(out, patch_size=patch_size, normal_size=size, provenance=provenance, split_seed=seed,
                         markers=bool(markers), **split_opts)
    try:
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
                t_les = bar.add_task("phantom lesions", total=n_lesions)
                for rec in phantom_lesion_records(n_lesions, seed, (H, W), **les_opts):
                    writer.add_lesion(rec)
                    bar.advance(t_les)
                if n_calcifications:
                    t_calc = bar.add_task("phantom calcification clusters", total=n_calcifications)
                    for rec in phantom_calcification_records(n_calcifications, seed, (H, W), style=style):
                        writer.add_lesion(rec)
                        bar.advance(t_calc)
                t_nor = bar.add_task("phantom normals", total=n_normals)
                for rec in phantom_normal_records(n_normals, seed, (H, W), **nor_opts):
                    writer.add_normal(rec)
                    bar.advance(t_nor)
        else:
            for rec in phantom_lesion_records(n_lesions, seed, (H, W), **les_opts):
                writer.add_lesion(rec)
            for rec in phantom_calcification_records(n_calcifications, seed, (H, W), style=style):
                writer.add_lesion(rec)
            for rec in phantom_normal_records(n_normals, seed, (H, W), **nor_opts):
                writer.add_normal(rec)
    except BaseException:
        writer.abort()
        raise
    return writer.close()
