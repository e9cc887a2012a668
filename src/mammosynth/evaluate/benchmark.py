"""Full-film downstream detection benchmark (issue #16; seed 001 sec. 4.5 on real mammograms).

Protocol (``mammosynth benchmark downstream``; docs/downstream.md):

1. **Films.** Every lesion film and every normal film of a store, at one physical resolution
   (``resolution_mm``, default 0.4 mm/px). Lesion films are read back through the source reader
   recorded in the store's manifest (the store keeps only lesion patches; the reader gives each
   lesion's full image and mask, :attr:`LesionRecord.full_image`), so the same code serves
   mini-MIAS, CBIS-DDSM, INbreast, VinDr and folder stores. Normal films come from the store
   (left-oriented canvases; their spacing is the source spacing / the canvas scale). A phantom
   store has no reader: its lesion films are drawn by the phantom renderer with the benchmark's
   own lesion settings (small, low-contrast masses: a non-saturated task) and its normals are the
   store's.
2. **Folds.** Patient-level k-fold cross-validation, stratified by margin (each patient's most
   common margin), normal-only patients dealt to every fold: every lesion is tested exactly once,
   and every test fold holds normals, so false positives per image mean what they say.
3. **Regimes.** 25/50/100 % of a fold's training lesion patients (nested subsets, stratified by
   margin, fixed per fold so that every arm and seed sees the same real data).
4. **Arms.** The same detector, budget and seeds; each arm adds N = ratio x (real training masses
   in the regime) lesion tiles to the real ones:

   - ``real``: nothing (the detector's own flips and random crops apply to every arm);
   - ``traditional``: rotated (any angle), scaled (0.8-1.25) and flipped copies of real tiles,
     seed 001's baseline;
   - ``copy-paste``: real training lesions pasted into real training normals with the insert
     module's feathered blending (:func:`~mammosynth.synth.insert.blend_weights`,
     :func:`~mammosynth.synth.insert.composite`);
   - a generator method name (``infill``, ``diffusion-infill``, any registered method with an
     ``infill()`` API, as ``insert --infill RUN`` takes): a run trained per fold and regime on
     that regime's training lesions only (no test lesion is ever seen), then the same masks,
     placement and blending as copy-paste with the texture drawn by the model. A method that is
     not registered is skipped with a message.
5. **Detector.** The ``segmenter`` U-Net trained through the one trainer on lesion tiles (side
   ``tile`` px at the benchmark resolution, lesion centre jittered) plus as many lesion-free tiles
   from the training normals, then run fully convolutionally on each whole test film; connected
   components of probability >= ``threshold`` inside the breast are the boxes, scored by their
   mean probability.
6. **Metrics**, pooled over the folds' test films per (regime, arm, seed): recall at IoU > 0.5
   (strictly greater, as seed 001 says) overall and at 0.5, 1 and 2 false positives per image,
   the FROC curve and its normalised area (mean sensitivity over 0-8 FPPI), COCO AP@0.5 (strict
   IoU). Mean and t-interval over seeds; a bootstrap over test films (seed-averaged); the paired
   gain of each arm over ``real`` and over ``traditional`` with both CIs; the minimum detectable
   gain (80 % power, two-sided 5 %) from the bootstrap SE of the paired gain.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mammosynth.data.birads import Label
from mammosynth.data.records import LesionRecord, MammogramRecord
from mammosynth.data.store import Store, StoreWriter, resize_image, resize_mask, shrink
from mammosynth.errors import ConfigError, DataError
from mammosynth.evaluate.detection import Detections, average_precision, boxes_from_probability, froc, froc_on_grid, match_per_image
from mammosynth.evaluate.downstream import _mean_ci, _save, write_coco
from mammosynth.io import write_json_atomic
from mammosynth.synth.writer import mask_bbox

BASELINE_ARMS = ("real", "traditional", "copy-paste")
DEFAULT_ARMS = ("real", "traditional", "copy-paste", "infill", "diffusion-infill")
FPPI_REPORT = (0.5, 1.0, 2.0)
MARGIN_FACTOR = 296 / 256  # seed 001's margin ring, as insert uses it
_NONE = Label(None, None, "missing")


@dataclass
class Film:
    """One film at the benchmark resolution: image (H, W) float32 in [0, 1], breast (H, W)
    bool, the union of its lesion masks, one box (x, y, w, h) per lesion and their margins."""

    film_id: str
    patient_id: str
    image: np.ndarray
    breast: np.ndarray
    lesion_mask: np.ndarray
    boxes: np.ndarray
    margins: list[str] = field(default_factory=list)
    lesion_masks: list[np.ndarray] = field(default_factory=list)

    @property
    def n_lesions(self) -> int:
        return len(self.boxes)


@dataclass
class BenchmarkConfig:
    """Settings of one benchmark run (the CLI's options; ``quick()`` gives the smoke settings)."""

    folds: int = 5
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    arms: tuple[str, ...] = DEFAULT_ARMS
    ratios: tuple[float, ...] = (1.0,)
    resolution_mm: float = 0.4
    tile: int = 64
    steps: int = 200
    batch_size: int = 8
    width: int = 8
    depth: int = 3
    threshold: float = 0.5
    gen_steps: int = 100
    bootstrap: int = 1000
    fold_seed: int = 0
    device: str = "cpu"
    # phantom stores only: the lesion films the benchmark draws
    phantom_films: int = 60
    phantom_diameter_mm: tuple[float, float] = (4.0, 9.0)
    phantom_contrast: float = 0.35

    @classmethod
    def quick(cls, **over: Any) -> "BenchmarkConfig":
        base = dict(folds=2, seeds=(0, 1), fractions=(0.5, 1.0), steps=60, gen_steps=40, bootstrap=200, phantom_films=24)
        base.update(over)
        return cls(**base)

    def validate(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"--folds must be at least 2, got {self.folds}")
        if not self.seeds:
            raise ConfigError("--seeds: need at least one seed")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"--fractions must be in (0, 1], got {list(self.fractions)}")
        if not self.arms or "real" not in self.arms:
            raise ConfigError(f"--arms must include 'real' (the reference every gain is paired with), got {list(self.arms)}")
        if any(r <= 0 for r in self.ratios):
            raise ConfigError(f"--ratios must be positive, got {list(self.ratios)}")
        if self.resolution_mm <= 0:
            raise ConfigError(f"--resolution-mm must be positive, got {self.resolution_mm}")
        if self.tile % 2 ** self.depth or self.tile < 16:
            raise ConfigError(f"--tile {self.tile} must be >= 16 and divisible by 2**depth = {2 ** self.depth}")


# --------------------------------------------------------------------------------------
# films
# --------------------------------------------------------------------------------------
def _resample(image: np.ndarray, spacing: float, res: float) -> np.ndarray:
    h, w = image.shape
    f = spacing / res
    shape = (max(1, round(h * f)), max(1, round(w * f)))
    return shrink(image, shape) if f < 1 else resize_image(image, shape)


def _film_shape(shape: tuple[int, int], spacing: float, res: float) -> tuple[int, int]:
    f = spacing / res
    return max(1, round(shape[0] * f)), max(1, round(shape[1] * f))


def store_normal_films(store_path: str | Path, res: float) -> list[Film]:
    """The store's normal mammograms as films at ``res`` mm/px (spacing from the manifest's
    source spacing and the canvas scale); DataError when a normal's spacing is unknown."""
    films = []
    with Store(store_path) as st:
        for i in range(st.n_normals):
            n = st.normal(i)
            h, w = (int(v) for v in n["valid_hw"])
            spacing = float(n["pixel_spacing_mm"]) / float(n["scale"])
            if not np.isfinite(spacing) or spacing <= 0:
                raise DataError(f"{store_path}: normal {n['source_id']} has no pixel spacing; the benchmark needs physical sizes")
            img = np.asarray(n["image"], np.float32)[:h, :w]
            breast = np.asarray(n["breast_mask"], bool)[:h, :w]
            shape = _film_shape((h, w), spacing, res)
            films.append(Film(f"normal:{n['source_id']}", str(n["patient_id"]), _resample(img, spacing, res),
                              resize_mask(breast, shape), np.zeros(shape, bool), np.zeros((0, 4))))
    return films


def reader_lesion_films(store_path: str | Path, res: float, progress: bool = False) -> list[Film]:
    """Lesion films read back through the source reader recorded in the store's manifest: one
    film per image file, holding every lesion of it that the store kept."""
    from mammosynth.data.imaging import STORE_OPEN_FRAC, breast_mask
    from mammosynth.data.readers import iter_records

    with Store(store_path) as st:
        prov = dict(st.manifest.get("provenance", {}))
        kept = set(st.h5["lesions/source_id"].asstr()[...].tolist()) if st.n_lesions else set()
    source, root = prov.get("source"), prov.get("root")
    if not source or not root:
        raise DataError(f"{store_path}: the manifest records no source reader and root, so its full films cannot be read back")
    if not Path(root).exists():
        raise DataError(f"{store_path}: its source folder {root} is not here, so its full films cannot be read back")
    csv = [m["file"] for m in prov.get("metadata", [])]
    opts = {k: v for k, v in dict(prov.get("reader_options", {})).items() if k != "include_normals"}
    films: dict[str, Film] = {}
    for rec in iter_records(source, root, csv, include_normals=False, **opts):
        if not isinstance(rec, LesionRecord) or rec.source_id not in kept:
            continue
        if "non_mass" in (rec.margin.status, rec.shape.status):
            continue  # the protocol detects masses (architectural distortions, asymmetries are not)
        if rec.full_image is None or rec.full_mask is None:
            raise DataError(f"{store_path}: the {source} reader gives no full image for {rec.source_id}")
        spacing = float(rec.pixel_spacing_mm or float("nan"))
        if not np.isfinite(spacing) or spacing <= 0:
            raise DataError(f"{rec.extra.get('path', rec.source_id)}: no pixel spacing; the benchmark needs physical sizes")
        key = str(rec.extra.get("path", rec.source_id))
        shape = _film_shape(rec.full_image.shape, spacing, res)
        if key not in films:
            img = _resample(np.asarray(rec.full_image, np.float32), spacing, res)
            films[key] = Film(f"lesion:{Path(key).name}", rec.patient_id, img, resize_mask(breast_mask(img, open_frac=STORE_OPEN_FRAC), shape),
                              np.zeros(shape, bool), np.zeros((0, 4)))
        f = films[key]
        m = resize_mask(rec.full_mask, shape)
        b = mask_bbox(m)
        if b is None:
            continue
        f.lesion_mask |= m
        f.breast |= m
        f.lesion_masks.append(m)
        f.boxes = np.vstack([f.boxes, np.asarray([b], np.float64)])
        f.margins.append(rec.margin.value or rec.margin.raw or "none")
    out = [f for f in films.values() if f.n_lesions]
    if not out:
        raise DataError(f"{store_path}: no lesion film could be read back through the {source} reader")
    return out


def phantom_lesion_films(store_path: str | Path, cfg: BenchmarkConfig) -> list[Film]:
    """Lesion films for a phantom store: phantom breasts (the store's film size and seed) with one
    small mass each, drawn by the phantom renderer with the benchmark's settings: diameter uniform
    in ``phantom_diameter_mm`` and the mass's contrast scaled by ``phantom_contrast`` (a blend of
    the rendered mass with the tissue under it), so the task is not saturated."""
    from scipy import ndimage as ndi

    from mammosynth.data.birads import MARGINS, SHAPES
    from mammosynth.phantom.breast import render_breast
    from mammosynth.phantom.lesion import render_mass_window, window_half_size

    with Store(store_path) as st:
        prov = dict(st.manifest.get("provenance", {}))
    H, W = (int(v) for v in prov.get("full_shape", (1024, 832)))
    spacing = float(prov.get("pixel_spacing_mm", 204.8 / H))
    seed = int(prov.get("seed", 0))
    rng = np.random.default_rng([seed, 0xB16])
    films = []
    for i in range(cfg.phantom_films):
        view, lat = ("CC", "MLO")[i % 2], ("L", "R")[(i // 2) % 2]
        density = ("A", "B", "C", "D")[(i // 4) % 4]
        breast = render_breast(int(rng.integers(2**31 - 1)), (H, W), view=view, laterality=lat, density=density)
        shape, margin = SHAPES[i % len(SHAPES)], MARGINS[(i // len(SHAPES) + i) % len(MARGINS)]
        d_mm = float(rng.uniform(*cfg.phantom_diameter_mm))
        d_px = d_mm / spacing
        usable = breast.breast_mask & ~ndi.binary_dilation(breast.pectoral_mask, iterations=3)
        depth = ndi.distance_transform_edt(usable)
        ys, xs = np.nonzero(depth > d_px + 2)
        if not len(ys):
            raise ConfigError(f"phantom film {i}: no room for a {d_mm:.1f} mm mass in a {H}x{W} breast")
        k = int(rng.integers(len(ys)))
        cx, cy = float(xs[k]), float(ys[k])
        half = int(math.ceil(window_half_size(d_px)))
        x0, y0 = max(0, int(cx) - half), max(0, int(cy) - half)
        x1, y1 = min(W, int(cx) + half + 1), min(H, int(cy) + half + 1)
        tissue = breast.image[y0:y1, x0:x1]
        win, mwin = render_mass_window(tissue, breast.breast_mask[y0:y1, x0:x1], (cx - x0, cy - y0), d_px, shape, margin,
                                       np.random.default_rng([seed, i, 7]), spacing)
        image = breast.image.astype(np.float32).copy()
        image[y0:y1, x0:x1] = tissue + cfg.phantom_contrast * (win - tissue)
        mask = np.zeros((H, W), bool)
        mask[y0:y1, x0:x1] = mwin
        if not mask.any():
            continue
        fshape = _film_shape((H, W), spacing, cfg.resolution_mm)
        m = resize_mask(mask, fshape)
        b = mask_bbox(m)
        if b is None:
            continue
        films.append(Film(f"lesion:phantom{i:04d}", f"PB{i:04d}", _resample(image, spacing, cfg.resolution_mm),
                          resize_mask(breast.breast_mask, fshape) | m, m, np.asarray([b], np.float64), [margin], [m]))
    return films


def load_films(store_path: str | Path, cfg: BenchmarkConfig, progress: bool = False) -> tuple[list[Film], str]:
    """(films, source name): lesion films (reader or phantom renderer) + the store's normals."""
    with Store(store_path) as st:
        source = str(dict(st.manifest.get("provenance", {})).get("source", ""))
        n_normals = st.n_normals
    if n_normals == 0:
        raise DataError(f"{store_path}: the store has no normal mammograms; the benchmark needs normals in every fold")
    lesions = phantom_lesion_films(store_path, cfg) if source == "phantom" else reader_lesion_films(store_path, cfg.resolution_mm, progress)
    return lesions + store_normal_films(store_path, cfg.resolution_mm), source


# --------------------------------------------------------------------------------------
# folds and regimes
# --------------------------------------------------------------------------------------
def _patient_margin(films: Sequence[Film]) -> str:
    from collections import Counter

    return Counter(m for f in films for m in f.margins).most_common(1)[0][0]


def make_folds(films: Sequence[Film], k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) of every film: patient-level (all films of a patient in one fold),
    lesion patients stratified by margin (each to the fold with the fewest lesions of its margin,
    then the fewest lesions), normal-only patients dealt to the fold with the fewest normal films.
    ConfigError when there are fewer lesion patients or normal patients than folds."""
    by_patient: dict[str, list[int]] = {}
    for i, f in enumerate(films):
        by_patient.setdefault(f.patient_id, []).append(i)
    rng = np.random.default_rng([seed, 0xF01D])
    names = sorted(by_patient)
    rng.shuffle(names)
    lesion_p = [p for p in names if any(films[i].n_lesions for i in by_patient[p])]
    normal_p = [p for p in names if p not in set(lesion_p)]
    if len(lesion_p) < k:
        raise ConfigError(f"{len(lesion_p)} patients with lesions cannot fill {k} folds; use fewer --folds")
    if len(normal_p) < k:
        raise ConfigError(f"{len(normal_p)} patients with normal films only cannot put normals in each of {k} folds; use fewer --folds")
    fold = np.full(len(films), -1, np.int64)
    margin_of = {p: _patient_margin([films[i] for i in by_patient[p]]) for p in lesion_p}
    counts = {m: sum(1 for p in lesion_p if margin_of[p] == m) for m in set(margin_of.values())}
    per_margin = np.zeros((k, len(counts)), np.int64)
    col = {m: j for j, m in enumerate(sorted(counts, key=lambda m: (counts[m], m)))}
    total = np.zeros(k, np.int64)
    # rarest margin first, larger patients first within it (the usual iterative stratification)
    order = sorted(lesion_p, key=lambda p: (counts[margin_of[p]], -sum(films[i].n_lesions for i in by_patient[p])))
    for p in order:
        j = col[margin_of[p]]
        n = sum(films[i].n_lesions for i in by_patient[p])
        f = min(range(k), key=lambda q: (per_margin[q, j], total[q], q))
        per_margin[f, j] += n
        total[f] += n
        fold[by_patient[p]] = f
    n_norm = np.zeros(k, np.int64)
    for p in normal_p:
        f = min(range(k), key=lambda q: (n_norm[q], q))
        n_norm[f] += len(by_patient[p])
        fold[by_patient[p]] = f
    return fold


def regime_subsets(films: Sequence[Film], train_idx: Sequence[int], fractions: Sequence[float], seed: int) -> dict[float, list[int]]:
    """Nested lesion-film subsets of a fold's training films for each fraction of its lesion
    patients: one seeded order, margins interleaved (so each prefix is stratified), prefix of
    ceil(fraction x patients) patients."""
    by_patient: dict[str, list[int]] = {}
    for i in train_idx:
        if films[i].n_lesions:
            by_patient.setdefault(films[i].patient_id, []).append(i)
    rng = np.random.default_rng([seed, 0x5EB])
    groups: dict[str, list[str]] = {}
    for p in sorted(by_patient):
        groups.setdefault(_patient_margin([films[i] for i in by_patient[p]]), []).append(p)
    for g in groups.values():
        rng.shuffle(g)
    order: list[str] = []
    # interleave by rank within margin: patient r of a margin with m patients sits at (r + 0.5) / m
    ranked = sorted(((r + 0.5) / len(g), m, p) for m, g in groups.items() for r, p in enumerate(g))
    order = [p for _, _, p in ranked]
    return {fr: sorted(i for p in order[:max(1, math.ceil(fr * len(order)))] for i in by_patient[p]) for fr in fractions}


# --------------------------------------------------------------------------------------
# training tiles per arm
# --------------------------------------------------------------------------------------
def _cut(arr: np.ndarray, cy: float, cx: float, side: int, fill: float = 0.0) -> np.ndarray:
    """Square (side, side) crop centred on (cy, cx), padded with ``fill`` outside the array."""
    y0, x0 = int(round(cy - side / 2)), int(round(cx - side / 2))
    out = np.full((side, side), fill, arr.dtype)
    H, W = arr.shape
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(H, y0 + side), min(W, x0 + side)
    if ye > ys and xe > xs:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = arr[ys:ye, xs:xe]
    return out


def _crop_box(arr: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    return np.ascontiguousarray(arr[y0:y0 + h, x0:x0 + w])


def _centre(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


def lesion_tiles(films: Sequence[Film], idx: Sequence[int], tile: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (tile, mask) per lesion of the given films: a ``tile``-px square around the lesion,
    its centre jittered by up to a quarter tile (a detector must not learn 'lesions sit in the
    middle'); the mask is every lesion of the film inside the tile."""
    out = []
    for i in idx:
        f = films[i]
        for m in f.lesion_masks:
            cy, cx = _centre(m)
            cy += rng.uniform(-tile / 4, tile / 4)
            cx += rng.uniform(-tile / 4, tile / 4)
            out.append((_cut(f.image, cy, cx, tile), _cut(f.lesion_mask, cy, cx, tile, False)))
    return out


def traditional_tiles(films: Sequence[Film], idx: Sequence[int], tile: int, n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seed 001's traditional augmentation: ``n`` copies of real training lesions, each rotated
    by a uniform angle, scaled by 0.8-1.25 and flipped with probability 1/2 (a window 1.5 tiles
    wide is transformed, then the centre tile kept, so no corner is empty)."""
    from skimage.transform import AffineTransform, warp

    lesions = [(i, m) for i in idx for m in films[i].lesion_masks]
    out = []
    big = int(math.ceil(tile * 1.5))
    for _ in range(n):
        i, m = lesions[int(rng.integers(len(lesions)))]
        f = films[i]
        cy, cx = _centre(m)
        cy += rng.uniform(-tile / 4, tile / 4)
        cx += rng.uniform(-tile / 4, tile / 4)
        img, msk = _cut(f.image, cy, cx, big), _cut(f.lesion_mask, cy, cx, big, False).astype(np.float32)
        if rng.random() < 0.5:
            img, msk = img[:, ::-1], msk[:, ::-1]
        c = (big - 1) / 2.0
        t = (AffineTransform(translation=(-c, -c)) + AffineTransform(rotation=rng.uniform(0, 2 * np.pi), scale=rng.uniform(0.8, 1.25))
             + AffineTransform(translation=(c, c)))
        img = warp(img, t.inverse, order=1, mode="reflect", preserve_range=True).astype(np.float32)
        msk = warp(msk, t.inverse, order=1, mode="constant", cval=0.0, preserve_range=True) >= 0.5
        o = (big - tile) // 2
        out.append((img[o:o + tile, o:o + tile], msk[o:o + tile, o:o + tile]))
    return out


def _float_map():
    from mammosynth.synth.targets import IntensityMap

    return IntensityMap(dtype=np.dtype(np.float32), stored_lo=0.0, stored_hi=1.0, lo=0.0, hi=1.0)


def _site(normal: Film, footprint: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """Top-left (y, x) where ``footprint`` lies wholly inside the normal's breast, or None."""
    from scipy import ndimage as ndi

    fh, fw = footprint.shape
    H, W = normal.breast.shape
    if fh >= H or fw >= W:
        return None
    inside = ndi.binary_erosion(normal.breast, np.ones((3, 3), bool), iterations=1)
    # top-left positions whose whole footprint box is inside the breast
    ok = ndi.minimum_filter(inside.astype(np.uint8), size=(fh, fw), origin=(-(fh // 2), -(fw // 2)))[:H - fh + 1, :W - fw + 1]
    ys, xs = np.nonzero(ok)
    if not len(ys):
        return None
    k = int(rng.integers(len(ys)))
    return int(ys[k]), int(xs[k])


def pasted_tiles(films: Sequence[Film], lesion_idx: Sequence[int], normal_idx: Sequence[int], tile: int, n: int,
                 rng: np.random.Generator, fill: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray] | None = None,
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` lesions inserted into training normals, one per copy of a normal, each cut as a
    training tile. The mask is a real training lesion's (flipped at random); the placement keeps
    the lesion and its margin ring inside the breast; the blending is the insert module's
    (cosine-feathered margin ring, :func:`blend_weights` + :func:`composite`). ``fill=None`` is
    copy-paste (the real lesion's own pixels and surround); otherwise ``fill(window, mask, rng)``
    draws the texture (a generator's infill) for a context window around the lesion."""
    from mammosynth.synth.insert import blend_weights, composite, lesion_footprint

    lesions = [(i, m) for i in lesion_idx for m in films[i].lesion_masks]
    imap = _float_map()
    out: list[tuple[np.ndarray, np.ndarray]] = []
    tries = 0
    while len(out) < n and tries < 20 * max(n, 1):
        tries += 1
        i, m = lesions[int(rng.integers(len(lesions)))]
        src = films[i]
        bx, by, bw, bh = (int(v) for v in mask_bbox(m))
        tight = m[by:by + bh, bx:bx + bw]
        pad, alpha = blend_weights(tight, MARGIN_FACTOR, lesion_footprint(tight, MARGIN_FACTOR))
        side_h, side_w = alpha.shape
        lesion = np.zeros(alpha.shape, bool)
        lesion[pad:pad + bh, pad:pad + bw] = tight
        # copy-paste texture: the source film's own pixels over the footprint (reflected at an edge)
        texture = _crop_box(np.pad(src.image, pad, mode="reflect"), by, bx, side_h, side_w)
        if rng.random() < 0.5:
            alpha, lesion, texture = alpha[:, ::-1], lesion[:, ::-1], texture[:, ::-1]
        nf = films[int(normal_idx[int(rng.integers(len(normal_idx)))])]
        site = _site(nf, alpha > 0, rng)
        if site is None:
            continue
        sy, sx = site
        image = nf.image.copy()
        if fill is not None:
            # a context window like the generator's training patches (the lesion ~62 % of its side)
            ctx = max(int(math.ceil(max(bh, bw) * 1.6)) + 2, side_h, side_w)
            oy, ox = (ctx - side_h) // 2, (ctx - side_w) // 2
            win = _crop_box(np.pad(image, ctx, mode="reflect"), sy - oy + ctx, sx - ox + ctx, ctx, ctx)
            wm = np.zeros((ctx, ctx), bool)
            wm[oy:oy + side_h, ox:ox + side_w] = lesion
            texture = fill(win, wm, rng)[oy:oy + side_h, ox:ox + side_w]
        composite(image[sy:sy + side_h, sx:sx + side_w], np.ascontiguousarray(texture, np.float32), np.ascontiguousarray(alpha), imap)
        full = np.zeros_like(nf.breast)
        full[sy:sy + side_h, sx:sx + side_w] = lesion
        cy, cx = _centre(full)
        cy += rng.uniform(-tile / 4, tile / 4)
        cx += rng.uniform(-tile / 4, tile / 4)
        out.append((_cut(image, cy, cx, tile), _cut(full, cy, cx, tile, False)))
    if len(out) < n:
        raise DataError(f"could place only {len(out)} of {n} lesions inside the training normals' breasts")
    return out


def _normal_store(path: Path, normals: Sequence[Film]) -> None:
    """The training normals of a fold (source of the detector's lesion-free tiles), all train."""
    H = max(f.image.shape[0] for f in normals)
    W = max(f.image.shape[1] for f in normals)
    with StoreWriter(path, patch_size=8, normal_size=(H, W)) as w:
        for f in normals:
            w.add(MammogramRecord("benchmark", f.film_id, f.patient_id, f.image, f.breast, split_hint="train"))


def _tile_store(path: Path, tiles: Sequence[tuple[np.ndarray, np.ndarray, str]], tile: int) -> None:
    """A detector's training store: lesion tiles (image, mask, 'real'|'synthetic'), all train;
    its lesion-free tiles come from the fold's normal store (``negatives_from``)."""
    with StoreWriter(path, patch_size=tile, normal_size=(8, 8)) as w:
        for k, (img, m, kind) in enumerate(tiles):
            if not m.any():
                continue
            w.add(LesionRecord(kind, f"{kind}{k}", f"{kind}{k}", np.clip(img, 0, 1).astype(np.float32), m.astype(bool),
                               _NONE, _NONE, _NONE, split_hint="train"))


def _patch_store(path: Path, films: Sequence[Film], idx: Sequence[int], patch: int) -> None:
    """A generator's training store: context-padded crops (the store's usual lesion patches) of
    the regime's training lesions, resized to ``patch``."""
    from mammosynth.data.imaging import extract_roi

    with StoreWriter(path, patch_size=patch, normal_size=(8, 8)) as w:
        for i in idx:
            for k, m in enumerate(films[i].lesion_masks):
                p, pm, _ = extract_roi(films[i].image, m)
                w.add(LesionRecord("benchmark", f"{films[i].film_id}_{k}", films[i].patient_id, p, pm, _NONE, _NONE, _NONE,
                                   split_hint="train"))


def generator_available(method: str) -> str | None:
    """None when ``method`` is a registered method with an ``infill()`` API; else why not."""
    from mammosynth.models import METHODS, get_method

    if method not in METHODS:
        return f"method {method!r} is not registered in this version of mammosynth (skipped)"
    try:
        cls = get_method(method)
    except ConfigError as err:
        return f"{err} (skipped)"
    if not hasattr(cls, "infill"):
        return f"method {method!r} has no infill() API (skipped)"
    return None


def train_generator(method: str, store: Path, out: Path, steps: int, seed: int, device: str, progress: bool,
                    n_items: int | None = None):
    """Train ``method`` with its packaged demo config for ``steps`` steps (batch capped at the
    ``n_items`` training lesions); return the loaded run."""
    from mammosynth.config import default_config_path, load_config
    from mammosynth.models import get_method
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    cls = get_method(method)
    cfg = load_config(cls.Config, default_config_path(method, "demo"),
                      [f"steps={steps}", f"seed={seed}", f"device={device}", "sample_every=0", f"ckpt_every={steps}",
                       f"log_every={max(1, steps // 5)}"])
    if n_items and getattr(cfg, "batch_size", 0) > n_items:
        cfg.batch_size = int(n_items)
    run = train(method, store, out, cfg, progress=progress)
    return load_method(run, device=device)


# --------------------------------------------------------------------------------------
# detector
# --------------------------------------------------------------------------------------
def train_detector(store: Path, out: Path, cfg: BenchmarkConfig, seed: int, progress: bool, n_items: int | None = None,
                   negatives_from: Path | None = None):
    """Train the segmenter on a tile store plus as many lesion-free tiles from the normals of
    ``negatives_from`` (``n_items`` lesion + negative tiles caps the batch)."""
    from mammosynth.models.segmenter import SegmenterConfig
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    bs = min(cfg.batch_size, n_items) if n_items else cfg.batch_size
    scfg = SegmenterConfig(steps=cfg.steps, batch_size=bs, seed=seed, device=cfg.device, width=cfg.width, depth=cfg.depth,
                           negatives_per_lesion=1.0, negatives_from=str(negatives_from or ""), ema_decay=0.0, sample_every=0, ckpt_every=cfg.steps,
                           log_every=max(1, cfg.steps // 5))
    run = train("segmenter", store, out, scfg, progress=progress)
    return load_method(run, device=cfg.device)


def detect_films(method: Any, films: Sequence[Film], threshold: float, depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run the U-Net on each whole film (padded to a multiple of 2**depth), keep the probability
    inside the breast, and box its connected components."""
    q = 2 ** depth
    out = []
    for f in films:
        H, W = f.image.shape
        ph, pw = (-H) % q, (-W) % q
        x = torch.from_numpy(np.pad(f.image, ((0, ph), (0, pw))) * 2 - 1)[None, None].float()
        prob = method.predict(x, batch_size=1)[0, 0, :H, :W].numpy() * f.breast
        out.append(boxes_from_probability(prob, threshold))
    return out


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------
def score(dets: Sequence[tuple[np.ndarray, np.ndarray]], gts: Sequence[np.ndarray]) -> dict:
    """Recall at IoU > 0.5 (strict), overall and at 0.5/1/2 FPPI; FROC area; AP@0.5 (strict)."""
    images = [Detections(b, s, g) for (b, s), g in zip(dets, gts)]
    r = froc(images, 0.5, strict=True)
    return {"recall": r["recall"], **{f"recall@{f:g}fppi": r["sensitivity_at"][str(f)] for f in FPPI_REPORT},
            "froc_auc": r["auc"], "cpm": r["cpm"], "ap50": average_precision(images, 0.5, strict=True),
            "froc": {"fppi": r["fppi"], "sensitivity": r["sensitivity"]}}


BOOT_KEYS = ("recall", "recall@0.5fppi", "recall@1fppi", "recall@2fppi", "froc_auc")


def _weighted_curve(scores: np.ndarray, tps: np.ndarray, img_of: np.ndarray, n_gt: np.ndarray, w: np.ndarray) -> dict:
    """FROC summaries of a resample: image ``j`` counted ``w[j]`` times (its detections, its
    lesions and its share of the image count)."""
    wd = w[img_of]
    order = np.argsort(-scores, kind="mergesort")
    s, t, wd = scores[order], tps[order], wd[order]
    tp = np.cumsum(wd * t)
    fp = np.cumsum(wd * ~t)
    G = float((w * n_gt).sum())
    N = float(w.sum())
    if len(s):
        last = np.r_[s[1:] != s[:-1], True]
        tp, fp = tp[last], fp[last]
    sens = np.r_[0.0, tp / max(G, 1e-12)]
    fppi = np.r_[0.0, fp / max(N, 1e-12)]
    out = {"recall": float(sens[-1])}
    run = np.maximum.accumulate(sens)
    for f in FPPI_REPORT:
        out[f"recall@{f:g}fppi"] = float(run[fppi <= f + 1e-12].max())
    grid = np.linspace(0, 8, 801)
    idx = np.clip(np.searchsorted(fppi, grid, side="right") - 1, 0, len(run) - 1)
    out["froc_auc"] = float(run[idx].mean())
    return out


def _matched(dets, gts):
    per = match_per_image([Detections(b, s, g) for (b, s), g in zip(dets, gts)], 0.5, strict=True)
    scores = np.concatenate([p[0] for p in per]) if per else np.zeros(0)
    tps = np.concatenate([p[1] for p in per]).astype(bool) if per else np.zeros(0, bool)
    img_of = np.concatenate([np.full(len(p[0]), j) for j, p in enumerate(per)]).astype(np.int64) if per else np.zeros(0, np.int64)
    n_gt = np.asarray([p[2] for p in per], np.float64)
    return scores, tps, img_of, n_gt


def bootstrap(matched: dict[tuple, list], n_images: int, reps: int, seed: int = 0) -> dict[tuple, np.ndarray]:
    """Resample test films (with replacement) ``reps`` times; for each key (a list of per-seed
    matched detections) the seed-averaged metrics per resample: {key: (reps, len(BOOT_KEYS))}.
    Every key sees the same resamples, so differences between keys are paired."""
    rng = np.random.default_rng([seed, 0xB007])
    W = np.stack([np.bincount(rng.integers(n_images, size=n_images), minlength=n_images) for _ in range(reps)]).astype(np.float64)
    out = {}
    for key, seeds in matched.items():
        vals = np.zeros((reps, len(BOOT_KEYS)))
        for m in seeds:
            for r in range(reps):
                c = _weighted_curve(*m, W[r])
                vals[r] += [c[k] for k in BOOT_KEYS]
        out[key] = vals / len(seeds)
    return out


def _pct(v: np.ndarray) -> list[float]:
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]


MDE_Z = 1.959964 + 0.841621  # two-sided 5 % test, 80 % power


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
def run_benchmark(store_path: str | Path, out_dir: str | Path, cfg: BenchmarkConfig, overwrite: bool = False,
                  progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the protocol of this module's docstring on ``store_path``; write ``benchmark.json``,
    ``benchmark.md``, ``recall_vs_size.png``, ``froc.png`` and ``coco/`` into ``out_dir``.
    Returns the JSON-ready results."""
    cfg.validate()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out}: exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    store_path = Path(store_path)
    if not store_path.is_file():
        raise DataError(f"{store_path}: no such dataset file")
    t_all, c_all = time.perf_counter(), time.process_time()
    arms, skipped = [], {}
    for a in cfg.arms:
        if a in BASELINE_ARMS:
            arms.append(a)
        else:
            why = generator_available(a)
            if why:
                skipped[a] = why
                log(f"arm {a}: {why}")
            else:
                arms.append(a)
    t0 = time.perf_counter()
    films, source = load_films(store_path, cfg, progress)
    t_films = time.perf_counter() - t0
    fold = make_folds(films, cfg.folds, cfg.fold_seed)
    gts = [f.boxes for f in films]
    n_les = int(sum(f.n_lesions for f in films))
    n_norm = int(sum(1 for f in films if not f.n_lesions))
    log(f"{len(films)} films ({n_les} lesions in {len(films) - n_norm} films, {n_norm} normals) at {cfg.resolution_mm} mm/px, "
        f"{cfg.folds} folds; arms {', '.join(arms)}")
    keys = [(fr, a, 0.0 if a == "real" else r) for fr in cfg.fractions for a in arms for r in ((0.0,) if a == "real" else cfg.ratios)]
    dets: dict[tuple, dict[int, list]] = {k: {s: [None] * len(films) for s in cfg.seeds} for k in keys}
    seconds: dict[str, float] = {a: 0.0 for a in arms}
    cpu: dict[str, float] = {a: 0.0 for a in arms}
    n_train: dict[float, list[int]] = {fr: [] for fr in cfg.fractions}
    n_models = len(keys) * len(cfg.seeds) * cfg.folds
    done = 0
    with tempfile.TemporaryDirectory(prefix="mammosynth-benchmark-") as tmp:
        tmp = Path(tmp)
        for k in range(cfg.folds):
            test = [i for i in range(len(films)) if fold[i] == k]
            train_idx = [i for i in range(len(films)) if fold[i] != k]
            normals = [i for i in train_idx if not films[i].n_lesions]
            subsets = regime_subsets(films, train_idx, cfg.fractions, cfg.fold_seed + k)
            test_films = [films[i] for i in test]
            normal_store = tmp / f"normals_{k}.h5"
            _normal_store(normal_store, [films[i] for i in normals])
            for fr in cfg.fractions:
                idx = subsets[fr]
                n_real = sum(films[i].n_lesions for i in idx)
                n_train[fr].append(n_real)
                generators: dict[str, Any] = {}
                for a in arms:
                    for r in ((0.0,) if a == "real" else cfg.ratios):
                        n_syn = int(round(r * n_real))
                        for s in cfg.seeds:
                            t, c = time.perf_counter(), time.process_time()
                            rng = np.random.default_rng([s, k, int(fr * 1000), int(r * 1000), 0xA5])
                            tiles = [(im, m, "real") for im, m in lesion_tiles(films, idx, cfg.tile, rng)]
                            if a == "traditional":
                                tiles += [(im, m, "synthetic") for im, m in traditional_tiles(films, idx, cfg.tile, n_syn, rng)]
                            elif a == "copy-paste":
                                tiles += [(im, m, "synthetic") for im, m in pasted_tiles(films, idx, normals, cfg.tile, n_syn, rng)]
                            elif a != "real":
                                if a not in generators:
                                    tg, cg = time.perf_counter(), time.process_time()
                                    gstore = tmp / f"gen_{k}_{fr:g}_{a}.h5"
                                    _patch_store(gstore, films, idx, 64)
                                    generators[a] = train_generator(a, gstore, tmp / "gen_runs" / f"{a}_{k}_{fr:g}", cfg.gen_steps,
                                                                    cfg.fold_seed + k, cfg.device, progress, n_items=n_real)
                                    seconds[a] += time.perf_counter() - tg
                                    cpu[a] += time.process_time() - cg
                                tiles += [(im, m, "synthetic") for im, m in pasted_tiles(films, idx, normals, cfg.tile, n_syn, rng,
                                                                                         fill=_infill_fn(generators[a], s))]
                            store = tmp / f"train_{k}_{fr:g}_{a}_{r:g}_{s}.h5"
                            _tile_store(store, tiles, cfg.tile)
                            method = train_detector(store, tmp / "runs" / f"{k}_{fr:g}_{a}_{r:g}_{s}", cfg, s, progress=False,
                                                    n_items=2 * sum(1 for t in tiles if t[1].any()),
                                                    negatives_from=normal_store)
                            got = detect_films(method, test_films, cfg.threshold, cfg.depth)
                            store.unlink()
                            for j, i in enumerate(test):
                                dets[(fr, a, 0.0 if a == "real" else r)][s][i] = got[j]
                            seconds[a] += time.perf_counter() - t
                            cpu[a] += time.process_time() - c
                            done += 1
                            fold_score = score(got, [films[i].boxes for i in test])
                            log(f"[{done}/{n_models}] fold {k} regime {fr:g} ({n_real} real) arm {a}"
                                f"{'' if a == 'real' else f' +{n_syn}'} seed {s}: {time.perf_counter() - t:.1f} s; this fold's "
                                f"recall {fold_score['recall']:.2f}, at 1 FPPI {fold_score['recall@1fppi']:.2f}")
            shutil.rmtree(tmp / "runs", ignore_errors=True)
    # ---- metrics
    res_rows = []
    coco = out / "coco"
    sizes = [f.image.shape for f in films]
    names = [f.film_id for f in films]
    write_coco(gts, None, sizes, coco / "test_gt.json", names=names)
    matched = {}
    for key in keys:
        fr, a, r = key
        matched[key] = []
        for s in cfg.seeds:
            d = dets[key][s]
            sc = score(d, gts)
            res_rows.append({"fraction": fr, "arm": a, "ratio": r, "seed": s, **sc})
            matched[key].append(_matched(d, gts))
            write_coco(gts, d, sizes, coco / "test_gt.json", coco / f"detections_{fr:g}_{a}_x{r:g}_seed{s}.json", names=names)
    boot = bootstrap(matched, len(films), cfg.bootstrap, cfg.fold_seed)
    summary = []
    for key in keys:
        fr, a, r = key
        rows = [x for x in res_rows if (x["fraction"], x["arm"], x["ratio"]) == key]
        entry: dict[str, Any] = {"fraction": fr, "arm": a, "ratio": r, "n_real_train_mean": float(np.mean(n_train[fr])),
                                 "n_added_mean": float(np.mean(n_train[fr]) * r)}
        for m in ("recall", "recall@0.5fppi", "recall@1fppi", "recall@2fppi", "froc_auc", "ap50"):
            entry[m] = _mean_ci([x[m] for x in rows])
            if m in BOOT_KEYS:
                entry[m]["bootstrap_ci"] = _pct(boot[key][:, BOOT_KEYS.index(m)])
        for ref in ("real", "traditional"):
            rkey = (fr, ref, 0.0 if ref == "real" else r) if ref != "real" else (fr, "real", 0.0)
            if ref == "traditional":
                rkey = next((kk for kk in keys if kk[0] == fr and kk[1] == "traditional" and kk[2] == r), None)
            if rkey is None or rkey == key:
                continue
            g: dict[str, Any] = {}
            for m in ("recall@1fppi", "recall", "froc_auc"):
                per_seed = [x[m] - y[m] for x in rows for y in res_rows
                            if (y["fraction"], y["arm"], y["ratio"]) == rkey and y["seed"] == x["seed"]]
                j = BOOT_KEYS.index(m)
                diff = boot[key][:, j] - boot[rkey][:, j]
                g[m] = {**_mean_ci(per_seed, (-1.0, 1.0)), "bootstrap_ci": _pct(diff), "bootstrap_se": float(diff.std(ddof=1)),
                        "min_detectable_gain": float(MDE_Z * diff.std(ddof=1))}
            entry[f"gain_vs_{ref}"] = g
        summary.append(entry)
    p_real = float(np.mean([s["recall@1fppi"]["mean"] for s in summary if s["arm"] == "real" and s["fraction"] == max(cfg.fractions)]))
    design_mde = float(MDE_Z * math.sqrt(2 * p_real * (1 - p_real) / max(n_les, 1)))
    result = {
        "protocol": "seed 001 sec. 4.5 on full films: patient-level stratified k-fold, recall at IoU > 0.5",
        "store": str(store_path), "source": source, "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "detector": f"U-Net (width {cfg.width}, depth {cfg.depth}) on {cfg.tile}-px tiles -> whole-film probability -> components >= {cfg.threshold}",
        "n_films": len(films), "n_lesion_films": len(films) - n_norm, "n_normal_films": n_norm, "n_lesions": n_les,
        "fold_sizes": [{"films": int((fold == k).sum()), "lesions": int(sum(films[i].n_lesions for i in range(len(films)) if fold[i] == k)),
                        "normals": int(sum(1 for i in range(len(films)) if fold[i] == k and not films[i].n_lesions))} for k in range(cfg.folds)],
        "arms": arms, "skipped_arms": skipped, "runs": [{k: v for k, v in x.items() if k != "froc"} for x in res_rows],
        "summary": summary, "seconds": {"films": round(t_films, 1), **{a: round(v, 1) for a, v in seconds.items()},
                                        "total": round(time.perf_counter() - t_all, 1)},
        "cpu_seconds": {**{a: round(v, 1) for a, v in cpu.items()}, "total": round(time.process_time() - c_all, 1)},
        "design_min_detectable_gain_recall@1fppi": design_mde,
        "ci_method": "mean over seeds with t 95% CI; bootstrap 95% percentile CI over test films (seed-averaged, paired across arms)",
        "plots": ["recall_vs_size.png", "froc.png"], "coco": "coco/test_gt.json",
    }
    _plot(result, res_rows, cfg, out)
    write_json_atomic(out / "benchmark.json", result)
    from mammosynth.io import atomic_path

    with atomic_path(out / "benchmark.md", suffix=".md") as tmpf:
        Path(tmpf).write_text(markdown_report(result))
    return result


def _infill_fn(method: Any, seed: int):
    from mammosynth.synth.insert import infill_window

    gen = torch.Generator().manual_seed(int(seed))

    def fill(window: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return infill_window(method, window, mask, gen)

    return fill


def _fmt(d: dict, key: str = "ci") -> str:
    lo, hi = d.get(key, [float("nan")] * 2)
    return f"{d['mean']:.3f} [{lo:.3f}, {hi:.3f}]" if "mean" in d else f"[{lo:.3f}, {hi:.3f}]"


def markdown_report(res: dict) -> str:
    cfg = res["config"]
    lines = [f"# Downstream detection benchmark: {res['source']}", "",
             f"Store `{res['store']}`: {res['n_lesion_films']} lesion films ({res['n_lesions']} lesions) and {res['n_normal_films']} normal "
             f"films at {cfg['resolution_mm']} mm/px; {cfg['folds']}-fold patient-level CV (every lesion tested once); seeds "
             f"{cfg['seeds']}; detector: {res['detector']}, {cfg['steps']} steps, batch {cfg['batch_size']}; generators "
             f"{cfg['gen_steps']} steps. Recall at IoU > 0.5 (strict).", ""]
    if res["skipped_arms"]:
        lines += [f"Skipped arms: " + "; ".join(f"{a}: {w}" for a, w in res["skipped_arms"].items()), ""]
    lines += ["## Recall and FROC (mean over seeds [t 95% CI]; bootstrap over test films [95% CI])", "",
              "| real data | arm | added | recall@0.5 FPPI | recall@1 FPPI | recall@1 FPPI bootstrap | recall@2 FPPI | recall | FROC area | AP@0.5 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in res["summary"]:
        lines.append(f"| {s['fraction']:g} ({s['n_real_train_mean']:.1f}) | {s['arm']} | {s['n_added_mean']:.1f} | {_fmt(s['recall@0.5fppi'])} | "
                     f"{_fmt(s['recall@1fppi'])} | {_fmt(s['recall@1fppi'], 'bootstrap_ci')} | {_fmt(s['recall@2fppi'])} | "
                     f"{_fmt(s['recall'])} | {_fmt(s['froc_auc'])} | {_fmt(s['ap50'])} |")
    lines += ["", "## Paired gains in recall@1 FPPI (seed-paired t CI; film-bootstrap CI; min. detectable gain)", "",
              "| real data | arm | vs | gain (seeds) | bootstrap 95% CI | MDG (80% power) |", "|---|---|---|---|---|---|"]
    for s in res["summary"]:
        for ref in ("real", "traditional"):
            g = s.get(f"gain_vs_{ref}")
            if g:
                m = g["recall@1fppi"]
                lines.append(f"| {s['fraction']:g} | {s['arm']} | {ref} | {_fmt(m)} | {_fmt(m, 'bootstrap_ci')} | {m['min_detectable_gain']:.3f} |")
    lines += ["", f"Design minimum detectable gain (independent arms, {res['n_lesions']} lesions, real-only recall@1 FPPI in the largest regime; 0 when that recall is 0 or 1): "
              f"{res['design_min_detectable_gain_recall@1fppi']:.3f}.", "",
              "## Time (s; wall clock, then CPU time of this process)", "", "| | " + " | ".join(res["seconds"]) + " |",
              "|---|" + "---|" * len(res["seconds"]),
              "| wall | " + " | ".join(f"{v:g}" for v in res["seconds"].values()) + " |",
              "| CPU | " + " | ".join(f"{res['cpu_seconds'].get(k, float('nan')):g}" for k in res["seconds"]) + " |", "",
              "![recall vs training-set size](recall_vs_size.png)", "", "![FROC per arm](froc.png)", ""]
    return "\n".join(lines)


def _plot(res: dict, rows: list[dict], cfg: BenchmarkConfig, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    arms = sorted({(s["arm"], s["ratio"]) for s in res["summary"]}, key=lambda t: (list(res["arms"]).index(t[0]), t[1]))
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for j, (a, r) in enumerate(arms):
        ss = [s for s in res["summary"] if s["arm"] == a and s["ratio"] == r]
        x = np.array([s["n_real_train_mean"] for s in ss]) + (j - len(arms) / 2) * 0.15
        y = np.array([s["recall@1fppi"]["mean"] for s in ss])
        lo = np.array([s["recall@1fppi"]["ci"][0] for s in ss], float)
        hi = np.array([s["recall@1fppi"]["ci"][1] for s in ss], float)
        err = np.where(np.isfinite(lo), np.vstack([y - lo, hi - y]), 0)
        label = a if a == "real" else f"{a} (+{r:g}x)"
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    ax.set_xlabel("real training lesions per fold (mean)")
    ax.set_ylabel("recall at 1 FP/image (IoU > 0.5)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{res['source']}: mean and t 95% CI over {len(cfg.seeds)} seeds", fontsize=8)
    fig.tight_layout()
    _save(fig, out / "recall_vs_size.png")
    fr_list = list(cfg.fractions)
    fig, axes = plt.subplots(1, len(fr_list), figsize=(4.2 * len(fr_list), 3.6), squeeze=False)
    grid = np.linspace(0, 8, 401)
    for ax, fr in zip(axes[0], fr_list):
        for a, r in arms:
            curves = []
            for x in rows:
                if x["fraction"] == fr and x["arm"] == a and x["ratio"] == r:
                    curves.append(froc_on_grid(x["froc"], grid))
            if curves:
                ax.step(grid, np.mean(curves, axis=0), where="post", label=a if a == "real" else f"{a} (+{r:g}x)")
        ax.set_title(f"{fr:g} of the real training lesions", fontsize=8)
        ax.set_xlabel("false positives per image")
        ax.set_ylabel("sensitivity (IoU > 0.5, mean over seeds)")
        ax.set_xlim(0, 8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out / "froc.png")
