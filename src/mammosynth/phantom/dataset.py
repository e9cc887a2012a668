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

from mammosynth.data.birads import MARGINS, SHAPES, Label
from mammosynth.data.records import DEFAULT_CONTEXT, LesionRecord, MammogramRecord
from mammosynth.errors import ConfigError
from mammosynth.phantom.breast import DENSITIES, PHANTOM_VERSION, STYLES, VIEWS, default_spacing, render_breast
from mammosynth.phantom.lesion import MASS_CONTRAST_RANGE, render_mass_window, window_half_size

#: Mass diameter distribution (mm): log-normal, median 15 mm, clipped to 8-35 mm.
DIAMETER_MEDIAN_MM = 15.0
DIAMETER_SIGMA = 0.35
DIAMETER_RANGE_MM = (8.0, 35.0)
#: Lesions per phantom patient (one breast image each), inclusive range.
LESIONS_PER_PATIENT = (6, 14)
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


def _combos(rng: np.random.Generator) -> Iterator[tuple[str, str]]:
    """Endless (shape, margin) pairs: the 20 combinations cycled, each block of 20 shuffled."""
    all_pairs = [(s, m) for s in SHAPES for m in MARGINS]
    while True:
        yield from (all_pairs[i] for i in rng.permutation(len(all_pairs)))


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
    # Separate streams for the label order and the drawing, so that the first k records of a
    # run of n are the records of a run of k (a small set is a prefix of a bigger one).
    label_seq, draw_seq = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xA11]).spawn(2)
    combos = _combos(np.random.default_rng(label_seq))
    rng = np.random.default_rng(draw_seq)
    i = 0
    patient = 0
    while i < n:
        k = min(n - i, int(rng.integers(LESIONS_PER_PATIENT[0], LESIONS_PER_PATIENT[1] + 1)))
        view = VIEWS[patient % 2]
        laterality = "L" if rng.random() < 0.5 else "R"
        density = DENSITIES[int(rng.choice(4, p=DENSITY_MIX))]
        breast_seed = int(rng.integers(0, 2**31 - 1))
        breast = render_breast(breast_seed, (H, W), view=view, laterality=laterality, density=density, style=style)
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
        pid = f"PH{patient:04d}"
        for _ in range(k):
            shape, margin = next(combos)
            diameter_mm = float(np.clip(np.exp(rng.normal(np.log(median_mm), DIAMETER_SIGMA)), size_lo, size_hi))
            site = None
            for _shrink in range(6):
                diameter_px = diameter_mm / spacing
                need = 0.75 * diameter_px + 2.0 / spacing
                n_ok = int(np.searchsorted(depth_sorted, -need, side="left"))
                if n_ok:
                    # Reported masses are the visible ones: prefer sites in less dense
                    # tissue (accept with 1 - 0.75 x glandular weight), as a reader would.
                    for _try in range(20):
                        j = int(order[int(rng.integers(n_ok))])
                        if rng.random() < 1.0 - 0.75 * float(gland_flat[j]):
                            break
                    site = (float(grid_x[j % gw]), float(grid_y[j // gw]))
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
            ys, xs = np.nonzero(mwin)
            by0, by1, bx0, bx1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            bh, bw = by1 - by0, bx1 - bx0
            side = int(round(max(bh, bw) * (1.0 + 2.0 * DEFAULT_CONTEXT)))
            # Crop the breast, then lay the rendered window over it (the window alone may be
            # too small once the crop is shifted off an image edge).
            ccx, ccy = x0 + (bx0 + bx1) / 2, y0 + (by0 + by1) / 2
            patch, px0, py0 = _crop_square(breast.image, ccx, ccy, side)
            mask = np.zeros_like(patch, dtype=bool)
            ox0, oy0 = max(x0, px0), max(y0, py0)
            ox1, oy1 = min(x1, px0 + side), min(y1, py0 + side)
            patch[oy0 - py0:oy1 - py0, ox0 - px0:ox1 - px0] = win[oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0]
            mask[oy0 - py0:oy1 - py0, ox0 - px0:ox1 - px0] = mwin[oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0]
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
                bbox=(x0 + bx0, y0 + by0, bw, bh),
                lesion_size=(bh, bw),
                pixel_spacing_mm=spacing,
                density=density,
                extra={"diameter_mm": round(diameter_mm, 2), "center_xy": (int(cx), int(cy)),
                       "crop_xy": (px0, py0), "breast_seed": breast_seed, "mass_seed": mass_seed},
            )
            i += 1
        patient += 1


def phantom_normal_records(n: int, seed: int = 0, full_shape: tuple[int, int] = (1024, 832), *,
                           style: str = "ffdm") -> Iterator[MammogramRecord]:
    """Stream ``n`` normal phantom mammograms (H, W) = ``full_shape`` in ``style`` ("ffdm"/"film").

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
        yield MammogramRecord(
            source="phantom",
            source_id=f"phantom-s{seed}-normal-{i:04d}",
            patient_id=f"PN{pair:04d}",
            image=breast.image,
            breast_mask=breast.breast_mask,
            laterality=laterality,  # type: ignore[arg-type]
            view=view,  # type: ignore[arg-type]
            density=density,
            pixel_spacing_mm=float(breast.meta["pixel_spacing_mm"]),
            extra={"breast_seed": breast_seed, "pectoral_mask": breast.pectoral_mask},
        )


def write_phantom_store(out: str | Path, n_lesions: int = 400, n_normals: int = 24, patch_size: int = 64,
                        full_shape: tuple[int, int] = (1024, 832), normal_size: tuple[int, int] | None = None,
                        seed: int = 0, progress: bool = True,
                        split_fractions: tuple[float, float, float] | str | None = None, *,
                        mass_contrast_range: tuple[float, float] = MASS_CONTRAST_RANGE,
                        mass_size_range_mm: tuple[float, float] = DIAMETER_RANGE_MM,
                        style: str = "ffdm") -> dict[str, Any]:
    """Draw the phantom dataset into one store file (atomic: the file appears when complete).

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
    les_opts = {"contrast_range": tuple(mass_contrast_range), "size_range_mm": tuple(mass_size_range_mm), "style": style}
    size = tuple(normal_size) if normal_size is not None else (H, W)
    split_opts = {} if split_fractions is None else {"split_fractions": split_fractions}
    writer = StoreWriter(out, patch_size=patch_size, normal_size=size, provenance=provenance, split_seed=seed, **split_opts)
    try:
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
                t_les = bar.add_task("phantom lesions", total=n_lesions)
                for rec in phantom_lesion_records(n_lesions, seed, (H, W), **les_opts):
                    writer.add_lesion(rec)
                    bar.advance(t_les)
                t_nor = bar.add_task("phantom normals", total=n_normals)
                for rec in phantom_normal_records(n_normals, seed, (H, W), style=style):
                    writer.add_normal(rec)
                    bar.advance(t_nor)
        else:
            for rec in phantom_lesion_records(n_lesions, seed, (H, W), **les_opts):
                writer.add_lesion(rec)
            for rec in phantom_normal_records(n_normals, seed, (H, W), style=style):
                writer.add_normal(rec)
    except BaseException:
        writer.abort()
        raise
    return writer.close()
