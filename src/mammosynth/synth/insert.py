"""Insert synthetic masses into a user's own mammograms (seed 001, sec. 4.1 and 4.3, Fig. 1a),
at native resolution, in physical sizes, written back in the input's own format.

For each output image (one mass each):

1. read the next target (DICOM / PNG / TIFF / PGM file, or a store's normal) at native
   resolution: stored pixels, the model's [0, 1] intensities (normalised as the training data
   was), pixel spacing, laterality and view (:mod:`mammosynth.synth.targets`);
2. mirror a right breast so the chest wall is at x = 0 (seed 001) and find where a lesion may
   go: the breast, minus the pectoral muscle on MLO views, at least ``skin_margin_mm`` from
   the skin line (:mod:`mammosynth.data.anatomy`);
3. draw a mask from the mask DCGAN (degenerate ones are redrawn) and a size in mm from the
   size model (a Gaussian fitted to the training lesions' physical sizes, or a documented
   prior), converted to pixels with the target's own spacing;
4. place it: seed 001's X ~ U(w/10, w/2), Y ~ U(h/4, 3h/4), or anywhere in the breast, or
   inside a user-given region; the lesion must lie in the allowed region and its margin ring
   in the breast off the muscle (bounded retries; every rejection is counted by reason);
5. cut the window the infill model's patches were cut with (side = larger lesion side x
   (1 + 2 context), centred on the lesion, shifted into the image;
   :func:`mammosynth.data.imaging.roi_window`), resample it to the model's input, infill,
   resample back;
6. composite in the image's stored values: only the lesion mask and its margin ring change
   (alpha 1 in the mask, a cosine ramp across the ring, 0 elsewhere, and 0 outside the
   breast); every other pixel stays bit-identical;
7. restore the orientation and write the image in its own format, dtype and shape, its mask,
   COCO (and optionally YOLO) labels in its own pixel frame, and a manifest row with the
   source path, spacing, lesion size in mm and centre.

With ``lesion_type="calcification"`` (``insert --lesion-type calcification``) each image gets
one calcification cluster instead, drawn procedurally (no trained run needed): a morphology
and distribution (given, or drawn per image), a cluster size in mm from the cluster size
model (fitted to a store's calcification clusters with ``size_from``, else
:data:`PRIOR_CLUSTER_DIAMETER_MM`), the calcification centres laid out by the distribution and
scaled to that size, placed like a mass (its footprint, the centres' hull grown by 2 mm, in
the allowed region), and each calcification 0.1-1 mm drawn at the target's own spacing by
:func:`mammosynth.phantom.calcification.draw_calcifications`. Only pixels the calcium
changes, inside the cluster's mask, are written. Labels: the cluster's box and mask, and each
calcification's centre as a COCO keypoint (category ``calcification``; also in
``attributes["points"]``).

Everything is seeded per output image (``np.random.default_rng([seed, i])``), so the same seed
gives the same set. Any method with ``.size`` and ``.infill(tissue, mask, generator)`` is an
infill model (see :func:`insert_lesions`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mammosynth.data.anatomy import ANATOMY_WORK_SIZE, Anatomy, anatomy_from_small, downsample
from mammosynth.data.context import PAPER_MARGIN_FACTOR, enlarge_mask
from mammosynth.data.imaging import IMAGE_SUFFIXES, mask_bbox, read_mask, roi_window
from mammosynth.data.records import DEFAULT_CONTEXT
from mammosynth.data.store import Store, resize_mask
from mammosynth.errors import ConfigError, DataError
from mammosynth.synth.targets import IntensityMap, Target, discover_targets, iter_targets, probe_targets
from mammosynth.synth.writer import Lesion, SyntheticSetWriter

log = logging.getLogger(__name__)

#: Default size prior when no training store with physical lesion sizes is available: a
#: Gaussian over the lesion's largest extent, fitted to the 38 masses of the mini-MIAS
#: database (J Suckling et al. 1994, Excerpta Medica ICS 1069:375-378; classes CIRC, SPIC,
#: MISC), whose Info.txt gives each mass's enclosing-circle radius in 200 um pixels:
#: diameter = 2 r x 0.2 mm, mean 20.3 mm, sd 12.8 mm (tests/test_insert.py re-derives them).
PRIOR_DIAMETER_MM = (20.3, 12.8)
PRIOR_SOURCE = "default prior: mini-MIAS mass diameters (Suckling et al. 1994), N(20.3 mm, 12.8 mm)"
#: Default cluster-size prior for calcifications: the 15 mini-MIAS CALC rows with coordinates
#: (Suckling et al. 1994) give each cluster's enclosing-circle radius in 200 um pixels:
#: diameter = 2 r x 0.2 mm, mean 12.6 mm, sd 8.4 mm (tests/test_insert_calcifications.py
#: re-derives them).
PRIOR_CLUSTER_DIAMETER_MM = (12.6, 8.4)
PRIOR_CLUSTER_SOURCE = "default prior: mini-MIAS calcification cluster diameters (Suckling et al. 1994), N(12.6 mm, 8.4 mm)"
#: What ``insert`` places: masses (mask DCGAN + infilling) or calcification clusters (procedural).
INSERT_LESION_TYPES = ("mass", "calcification")
#: Compressed breast thickness assumed when converting calcium to display levels in a user's
#: image (its own is not known): the middle of the phantom's 40-65 mm.
_ASSUMED_THICKNESS_MM = 50.0
#: A cluster's placement footprint: its centres' hull grown by this (mm): the outline's
#: margin plus the largest calcification's half extent, and a little room.
_CLUSTER_FOOTPRINT_MM = 2.0
PLACEMENTS = ("seed001", "breast")
FORMATS = ("auto", "png", "tiff", "pgm", "dicom")


@dataclass
class SizeModel:
    """Gaussian over lesion (h, w) in mm (seed 001 sec. 4.3), or over the largest extent only
    (``isotropic``: the prior, which knows diameters; the mask then keeps its own aspect)."""

    mean: np.ndarray  # (2,) mm
    cov: np.ndarray  # (2, 2) mm^2
    n: int
    source: str
    isotropic: bool = False

    @classmethod
    def fit(cls, sizes_mm: np.ndarray, source: str) -> "SizeModel":
        sizes = np.asarray(sizes_mm, np.float64).reshape(-1, 2)
        if len(sizes) < 2:
            raise DataError(f"{source}: need at least 2 lesions with a known physical size to fit the size distribution")
        cov = np.cov(sizes, rowvar=False) + np.eye(2) * 1e-6
        return cls(mean=sizes.mean(axis=0), cov=cov, n=len(sizes), source=source)

    @classmethod
    def prior(cls, lesion_type: str = "mass") -> "SizeModel":
        """The isotropic prior over diameters: mini-MIAS masses, or its calcification clusters."""
        (m, s), n, source = ((PRIOR_CLUSTER_DIAMETER_MM, 15, PRIOR_CLUSTER_SOURCE) if lesion_type == "calcification"
                             else (PRIOR_DIAMETER_MM, 38, PRIOR_SOURCE))
        return cls(mean=np.array([m, m]), cov=np.eye(2) * s * s, n=n, source=source, isotropic=True)

    def sample(self, rng: np.random.Generator, min_mm: float, max_mm: float, max_aspect: float = 3.0,
               tries: int = 1000) -> tuple[float, float]:
        """One (h, w) draw in mm with both sides in [min_mm, max_mm] and aspect <= max_aspect;
        draws outside are rejected and redrawn (never clipped, which would make slivers)."""
        for _ in range(tries):
            if self.isotropic:
                d = rng.normal(self.mean[0], math.sqrt(self.cov[0, 0]))
                h = w = d
            else:
                h, w = rng.multivariate_normal(self.mean, self.cov)
            if min_mm <= min(h, w) and max(h, w) <= max_mm and max(h, w) / min(h, w) <= max_aspect:
                return float(h), float(w)
        raise DataError(f"size model ({self.source}) puts almost no mass in [{min_mm}, {max_mm}] mm; "
                        "widen --min-size-mm / --max-size-mm")

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "mean_hw_mm": self.mean.round(3).tolist(), "cov_mm2": self.cov.round(3).tolist(),
                "n": self.n, "isotropic": self.isotropic}


def _store_sizes(path: str | Path, lesion_type: str | None = None) -> np.ndarray:
    """(N, 2) lesion sizes (mm) of a store's train split (all splits when it has fewer than 2)."""
    with Store(path) as s:
        sizes = s.lesion_sizes_mm("train", lesion_type)
        return sizes if len(sizes) >= 2 else s.lesion_sizes_mm(None, lesion_type)


def cluster_size_model(size_from: str | Path | None) -> SizeModel:
    """The calcification cluster size model: fitted to the calcification clusters of
    ``size_from`` (a store), else the mini-MIAS prior (:data:`PRIOR_CLUSTER_DIAMETER_MM`)."""
    if size_from is None:
        return SizeModel.prior("calcification")
    sizes = _store_sizes(size_from, "calcification")
    if len(sizes) < 2:
        raise DataError(f"{size_from}: fewer than 2 calcification clusters with a known size and pixel spacing "
                        "(ingest with --lesions calcification, or drop --size-from)")
    return SizeModel.fit(sizes, f"{size_from} (calcification clusters with known spacing)")


def size_model_for(size_from: str | Path | None, infill_method: Any) -> SizeModel:
    """The size model: fitted to ``size_from`` (a store), else to the infill run's training
    store when it records physical sizes, else :meth:`SizeModel.prior`."""
    sizes_of = _store_sizes

    if size_from is not None:
        sizes = sizes_of(size_from)
        if len(sizes) < 2:
            raise DataError(f"{size_from}: fewer than 2 lesions with a known size and pixel spacing "
                            "(a format-1 store, or a source without spacing); re-ingest it or drop --size-from")
        return SizeModel.fit(sizes, f"{size_from} (lesions with known spacing)")
    store = (getattr(infill_method, "data_info", None) or {}).get("store_path")
    if store and Path(store).exists():
        sizes = sizes_of(store)
        if len(sizes) >= 2:
            return SizeModel.fit(sizes, f"{store} (the infill run's training lesions)")
        log.warning("insert: %s records no physical lesion sizes; using the %s", store, PRIOR_SOURCE)
    return SizeModel.prior()


def model_scale(infill_method: Any) -> tuple[float, dict[str, Any] | None]:
    """(context, mm-per-model-pixel range) the infill model trained at: from its run's
    config, or computed from its training store for runs made before it was recorded."""
    info = getattr(infill_method, "data_info", None) or {}
    cut = info.get("patch_cut") or {}
    context = float(cut.get("context", DEFAULT_CONTEXT))
    rng = info.get("mm_per_model_px")
    if rng is None and info.get("store_path") and Path(info["store_path"]).exists():
        from mammosynth.data.patch_scale import patch_scale_info

        crop = tuple(getattr(getattr(infill_method, "cfg", None), "crop_scale", (1.0, 1.0)))
        computed = patch_scale_info(info["store_path"], int(infill_method.size), crop)
        context = float(computed["patch_cut"]["context"])
        rng = computed["mm_per_model_px"]
    return context, rng


@dataclass
class InsertReport:
    written: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped_normals: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)  # per image: source, tries, reasons, ...
    placement_tries: list[int] = field(default_factory=list)
    out_of_scale: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "failed": self.failed,
            "skipped_normals": self.skipped_normals,
            "mean_placement_tries": float(np.mean(self.placement_tries)) if self.placement_tries else None,
            "out_of_trained_scale": self.out_of_scale,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.written / self.seconds, 4) if self.seconds > 0 else None,
            "images": self.images,
        }


# --------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------
def mask_is_degenerate(mask: np.ndarray, max_aspect: float = 3.0, min_fill: float = 0.25, min_pixels: int = 16) -> str | None:
    """Why a generated mask is unusable (too small, too elongated, too sparse), or None."""
    bbox = mask_bbox(mask)
    if bbox is None:
        return "empty mask"
    _, _, w, h = bbox
    area = int(mask.sum())
    if area < min_pixels:
        return f"mask too small ({area} px)"
    if max(w, h) / min(w, h) > max_aspect:
        return f"mask aspect {max(w, h) / min(w, h):.1f} > {max_aspect:g}"
    if area / float(w * h) < min_fill:
        return f"mask fills {area / float(w * h):.0%} of its box"
    return None


def scale_mask(mask: np.ndarray, size_px: tuple[float, float], isotropic: bool) -> np.ndarray:
    """Resize the mask's bounding box to ``size_px`` (h, w), or, with ``isotropic``, so that
    its larger side is ``max(size_px)`` with its own aspect kept. Returns the tight mask."""
    x, y, w, h = mask_bbox(mask)
    crop = mask[y: y + h, x: x + w]
    if isotropic:
        k = max(size_px) / max(h, w)
        target = (max(2, int(round(h * k))), max(2, int(round(w * k))))
    else:
        target = (max(2, int(round(size_px[0]))), max(2, int(round(size_px[1]))))
    big = resize_mask(crop, target)
    b = mask_bbox(big)
    if b is None:  # a thin mask vanished in the resize: keep the nearest-neighbour version
        ys = (np.arange(target[0]) * h / target[0]).astype(int)
        xs = (np.arange(target[1]) * w / target[1]).astype(int)
        big = crop[ys][:, xs]
        b = mask_bbox(big)
    bx, by, bw, bh = b
    return big[by: by + bh, bx: bx + bw]


def _crop(arr: np.ndarray, y0: int, x0: int, side: int) -> np.ndarray:
    """side x side crop at (y0, x0), mirrored where it leaves the image (as training crops are)."""
    H, W = arr.shape
    ya, xa, yb, xb = max(y0, 0), max(x0, 0), min(y0 + side, H), min(x0 + side, W)
    core = arr[ya:yb, xa:xb]
    pads = ((ya - y0, y0 + side - yb), (xa - x0, x0 + side - xb))
    if pads == ((0, 0), (0, 0)):
        return core
    return np.pad(core, pads, mode="symmetric")


@dataclass
class Site:
    """A placed lesion in the left-oriented frame: its mask's top-left and the ring around it."""

    y0: int
    x0: int
    mask: np.ndarray  # (h, w) bool, tight
    tries: int
    pad: int  # the footprint (lesion + margin ring) is the mask padded by ``pad`` and enlarged
    footprint: np.ndarray


def place(anat: Anatomy, lesion: np.ndarray, ring_factor: float, rng: np.random.Generator, rule: str,
          region: np.ndarray | None, max_tries: int, reasons: Counter) -> Site | None:
    """Find a position for ``lesion`` (tight (h, w) bool) in a left-oriented view.

    ``rule``: "seed001" (centre X ~ U(w/10, w/2), Y ~ U(h/4, 3h/4)), "breast" (centre uniform in
    the allowed region) or "mask" (centre uniform in ``region`` within the allowed region).
    The lesion must lie in ``anat.core`` and its margin ring (the mask enlarged by
    ``ring_factor``) in the breast off the pectoral muscle. Rejections are counted in
    ``reasons``. Returns None after ``max_tries``.
    """
    from scipy import ndimage

    H, W = anat.shape
    h, w = lesion.shape
    pad, enlarged = lesion_footprint(lesion, ring_factor)
    # the lesion's outline, subsampled: looked up on the work grid first, so most rejections
    # cost a few dozen lookups instead of a full-resolution crop
    edge_y, edge_x = np.nonzero(lesion & ~ndimage.binary_erosion(lesion))
    keep = np.linspace(0, len(edge_y) - 1, min(len(edge_y), 64)).astype(int)
    edge_y, edge_x = edge_y[keep], edge_x[keep]
    pool = None
    if rule in ("breast", "mask"):
        ys, xs = anat.small_points("core")  # work-grid cells of the allowed region
        if region is not None:
            keep = region[np.clip(ys + anat.f // 2, 0, H - 1), np.clip(xs + anat.f // 2, 0, W - 1)]
            ys, xs = ys[keep], xs[keep]
        if len(ys) == 0:
            reasons["no allowed region" if region is None else "the region mask has no allowed pixel"] += max_tries
            return None
        pool = (ys, xs, anat.f)
    for t in range(1, max_tries + 1):
        if pool is None:
            cx, cy = rng.uniform(W / 10, W / 2), rng.uniform(H / 4, 3 * H / 4)
        else:
            k = int(rng.integers(len(pool[0])))
            cy, cx = pool[0][k] + rng.uniform(0, pool[2]), pool[1][k] + rng.uniform(0, pool[2])
        y0, x0 = int(round(cy - h / 2)), int(round(cx - w / 2))
        if y0 - pad < 0 or x0 - pad < 0 or y0 + h + pad > H or x0 + w + pad > W:
            reasons["too close to the image border"] += 1
            continue
        ey, ex = edge_y + y0, edge_x + x0
        if not anat.lookup("core", ey, ex).all() or not anat.crop("core", y0, x0, h, w)[lesion].all():
            if not anat.lookup("breast", ey, ex).all():
                reasons["outside the breast"] += 1
            elif anat.lookup("pectoral", ey, ex).any() or anat.crop("pectoral", y0, x0, h, w)[lesion].any():
                reasons["on the pectoral muscle"] += 1
            else:
                reasons[f"closer than {anat.skin_margin_mm:g} mm to the skin"] += 1
            continue
        if region is not None and not region[y0: y0 + h, x0: x0 + w][lesion].all():
            reasons["leaves the region mask"] += 1
            continue
        if not anat.crop("changeable", y0 - pad, x0 - pad, h + 2 * pad, w + 2 * pad)[enlarged].all():
            reasons["margin ring leaves the breast or touches the pectoral muscle"] += 1
            continue
        return Site(y0, x0, lesion, t, pad, enlarged)
    return None


# --------------------------------------------------------------------------------------
# infilling and compositing
# --------------------------------------------------------------------------------------
def lesion_footprint(lesion: np.ndarray, factor: float) -> tuple[int, np.ndarray]:
    """(pad, footprint): the tight lesion mask (h, w) padded by ``pad`` pixels on every side,
    enlarged by ``factor`` about its centroid and or-ed with itself: the lesion plus its
    margin ring, the only pixels insertion may change. Computed on this fixed grid so the
    ring is the same wherever the lesion is placed."""
    h, w = lesion.shape
    pad = int(math.ceil(max(h, w) * (factor - 1.0) / 2.0)) + 2
    padded = np.pad(np.asarray(lesion, bool), pad)
    return pad, enlarge_mask(padded, factor) | padded


def blend_weights(lesion: np.ndarray, factor: float, footprint: tuple[int, np.ndarray] | None = None) -> tuple[int, np.ndarray]:
    """(pad, alpha) on the grid of :func:`lesion_footprint` (pass ``footprint`` when it is
    known): alpha is 1 inside the lesion, a cosine ramp from 1 to 0 across the margin ring,
    0 outside (float32)."""
    from scipy import ndimage

    pad, outer = footprint if footprint is not None else lesion_footprint(lesion, factor)
    m = np.pad(np.asarray(lesion, bool), pad)
    alpha = m.astype(np.float32)
    ring = outer & ~m
    if ring.any():
        d_in = ndimage.distance_transform_edt(~m)  # distance to the lesion
        d_out = ndimage.distance_transform_edt(outer)  # distance to the ring's outer edge
        t = d_in[ring] / (d_in[ring] + d_out[ring])
        alpha[ring] = (0.5 * (1.0 + np.cos(np.pi * t))).astype(np.float32)
    return pad, alpha


def composite(stored: np.ndarray, fill: np.ndarray, alpha: np.ndarray, imap: IntensityMap) -> int:
    """Blend ``fill`` (model intensities in [0, 1]) into ``stored`` (a view of the image's
    stored pixels) in place, in stored values: (1 - alpha) stored + alpha inverse(fill).
    Pixels with alpha == 0 are not touched (bit-identical). Returns the number changed."""
    where = alpha > 0
    if not where.any():
        return 0
    old = stored[where].astype(np.float64)
    a = alpha[where].astype(np.float64)
    new = imap.to_stored((1.0 - a) * old + a * imap.inverse(fill[where]))
    changed = int((new != stored[where]).sum())
    stored[where] = new
    return changed


def _resize(t: torch.Tensor, side: int, antialias: bool) -> torch.Tensor:
    return F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False, antialias=antialias)


def _model_device(method: Any) -> torch.device:
    nets = getattr(method, "nets", None)
    if nets is not None:
        try:
            return next(iter(nets.parameters())).device
        except (StopIteration, AttributeError):
            pass
    return torch.device(getattr(method, "device", "cpu"))


def infill_window(method: Any, window: np.ndarray, mask: np.ndarray, generator: torch.Generator,
                  keep_detail: bool = True) -> np.ndarray:
    """Infill one square window: (n, n) float [0, 1] tissue + (n, n) bool mask -> (n, n) [0, 1].

    The window is resampled (anti-aliased) to the model's input side ``method.size``, infilled,
    and resampled back (bilinear). With ``keep_detail`` (default) and a window larger than the
    model's, the window's own detail above the model's resolution, ``window - up(down(window))``
    (quantum noise, fine strands), is added back: the model changes the frequencies it can
    represent and the image keeps its grain, instead of a smooth enlarged patch in a grainy
    mammogram. A model that returns its input unchanged then gives back the window exactly."""
    S = int(method.size)
    n = window.shape[0]
    device = _model_device(method)
    tissue = torch.from_numpy(np.ascontiguousarray(window, np.float32))[None, None]
    m = torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None, None]
    if n != S:
        tissue = _resize(tissue, S, antialias=n > S)
        m = (F.interpolate(m, size=(S, S), mode="area" if n > S else "bilinear") >= 0.5).float()
    out = method.infill((tissue * 2.0 - 1.0).to(device), m.to(device), generator=generator)
    out = ((out.float().cpu() + 1.0) * 0.5).clamp(0.0, 1.0)
    if n != S:
        out = _resize(out, n, antialias=False)
        if keep_detail and n > S:
            full = torch.from_numpy(np.ascontiguousarray(window, np.float32))[None, None]
            out = out + (full - _resize(tissue, n, antialias=False))
        out = out.clamp(0.0, 1.0)
    return out[0, 0].numpy()


def _synthesis_info(method: Any) -> dict[str, Any]:
    """How the infill model sampled (a diffusion model's sampler, steps, guidance scale), for the
    manifest; {} for a model that says nothing (a GAN: one forward pass)."""
    info = getattr(method, "synthesis_info", None)
    return dict(info()) if callable(info) else {}


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
def _region_loader(placement: str):
    """(rule, loader): loader(target) -> (H, W) bool region in the target's own frame, or None."""
    if placement in PLACEMENTS:
        return placement, None
    if not placement.startswith("mask:"):
        raise ConfigError(f"placement must be seed001, breast or mask:PATH, got {placement!r}")
    path = Path(placement[5:])
    if not path.exists():
        raise DataError(f"{path}: placement region mask not found")

    def load(target: Target) -> np.ndarray | None:
        p = path
        if path.is_dir():
            cands = [path / f"{target.info.ref.path.stem}{s}" for s in IMAGE_SUFFIXES]
            p = next((c for c in cands if c.is_file()), None)
            if p is None:
                return None
        region = read_mask(p)
        if region.shape != target.stored.shape:
            raise DataError(f"{p}: region mask is {region.shape[1]}x{region.shape[0]} px, "
                            f"the image {target.info.ref.name} is {target.stored.shape[1]}x{target.stored.shape[0]}")
        return region

    return "mask", load


@torch.no_grad()
def insert_lesions(
    mask_method: Any,
    infill_method: Any,
    normals: str | Path | Sequence[str | Path],
    n: int,
    out_dir: str | Path,
    seed: int = 0,
    split: str | None = None,
    size_from: str | Path | None = None,
    pixel_spacing: float | None = None,
    placement: str = "seed001",
    skin_margin_mm: float = 5.0,
    out_format: str = "auto",
    yolo: bool = False,
    overwrite: bool = False,
    min_size_mm: float = 4.0,
    max_size_mm: float = 60.0,
    max_tries: int = 50,
    max_resamples: int = 5,
    mask_run: str = "",
    infill_run: str = "",
    progress: bool = True,
    keep_detail: bool = True,
    lesion_type: str = "mass",
    morphology: str | None = None,
    distribution: str | None = None,
) -> InsertReport:
    """Write ``n`` mammograms with one inserted mass each to ``out_dir`` (a synthetic set:
    images/ in the input's format, masks/, annotations.json, manifest.csv, insert_report.json,
    and with ``yolo`` labels/ + yolo.yaml).

    ``mask_method`` needs ``sample_masks(n, seed) -> (n,S,S) bool``; ``infill_method`` needs
    ``size`` (its input side S) and ``infill(tissue (B,1,S,S) [-1,1], mask (B,1,S,S) {0,1},
    generator) -> (B,1,S,S) [-1,1]``; its ``data_info`` (a run's config) tells how its patches
    were cut and at what mm per pixel. ``normals``: folders / files / ``.h5`` stores (see
    :func:`mammosynth.synth.targets.discover_targets`); ``pixel_spacing``: mm per pixel for
    images whose spacing is not in their header or a CSV. ``placement``: seed001 | breast |
    mask:PATH (a region mask file for every image, or a folder of masks named like the images).
    ``out_format``: auto (the input's) | png | tiff | pgm | dicom. ``lesion_type``:
    "calcification" inserts one procedural calcification cluster per image instead (the two
    methods may then be None); ``morphology`` / ``distribution`` fix its labels (default:
    drawn per image).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if out_format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {out_format!r}")
    if not (0 < min_size_mm < max_size_mm):
        raise ConfigError(f"need 0 < --min-size-mm < --max-size-mm, got {min_size_mm} and {max_size_mm}")
    if skin_margin_mm < 0:
        raise ConfigError(f"--skin-margin-mm must be >= 0, got {skin_margin_mm}")
    if lesion_type not in INSERT_LESION_TYPES:
        raise ConfigError(f"--lesion-type must be one of {', '.join(INSERT_LESION_TYPES)}, got {lesion_type!r}")
    rule, region_for = _region_loader(placement)
    t0 = time.perf_counter()
    report = InsertReport()
    inputs = [normals] if isinstance(normals, (str, Path)) else list(normals)
    infos = probe_targets(discover_targets(inputs, split), pixel_spacing)
    if lesion_type == "calcification":
        labels = _cluster_labels(morphology, distribution)
        size_model = cluster_size_model(size_from)
        run, what = "procedural calcification clusters", "calcification clusters"

        def insert_one(target: Target, i: int, rng: np.random.Generator, entry: dict[str, Any],
                       writer: SyntheticSetWriter) -> None:
            _insert_cluster(target, i, rng, entry, report, writer, size_model, rule, region_for, seed, skin_margin_mm,
                            out_format, yolo, min_size_mm, max_size_mm, max_tries, max_resamples, labels)

        def model_info() -> dict[str, Any]:
            return {"procedural": "mammosynth.phantom.calcification", "morphology": labels[0] or "drawn per image",
                    "distribution": labels[1] or "drawn per image", "assumed_compressed_thickness_mm": _ASSUMED_THICKNESS_MM}
    else:
        if not hasattr(infill_method, "infill") or not getattr(infill_method, "size", None):
            raise ConfigError(f"{infill_run or 'infill model'}: not an infilling method (needs .size and .infill)")
        size_model = size_model_for(size_from, infill_method)
        context, trained = model_scale(infill_method)
        factor = float(getattr(getattr(infill_method, "cfg", None), "margin_factor", PAPER_MARGIN_FACTOR))
        if trained is None:
            log.warning("insert: the infill run records no mm-per-pixel range; the scale of its patches cannot be checked")
        device = _model_device(infill_method)
        run, what = f"{mask_run}+{infill_run}", "masses"

        def insert_one(target: Target, i: int, rng: np.random.Generator, entry: dict[str, Any],
                       writer: SyntheticSetWriter) -> None:
            _insert_one(target, i, rng, entry, report, writer, mask_method, infill_method, size_model, rule,
                        region_for, context, trained, factor, device, seed, skin_margin_mm, out_format, yolo,
                        min_size_mm, max_size_mm, max_tries, max_resamples, keep_detail)

        def model_info() -> dict[str, Any]:
            return {"size": int(infill_method.size), "context": context, "margin_factor": factor,
                    "trained_mm_per_model_px": trained, **_synthesis_info(infill_method)}
    order = [i % len(infos) for i in range(n)]
    with SyntheticSetWriter(Path(out_dir), method="insert", run=run, overwrite=overwrite,
                            description=f"mammograms with inserted synthetic {what} (mammosynth insert)") as writer, \
            Progress(TextColumn("[bold]insert"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     console=Console(stderr=True), disable=not progress, transient=False) as bar:
        task = bar.add_task("insert", total=n)
        for i, (k, target) in enumerate(iter_targets(infos, order)):
            rng = np.random.default_rng([seed, i])
            entry: dict[str, Any] = {"index": i, "source": infos[k].ref.name}
            report.images.append(entry)
            if isinstance(target, DataError):
                entry.update(status="skipped", reason=str(target))
                report.skipped_normals.append({"normal": infos[k].ref.name, "reason": str(target)})
                bar.advance(task)
                continue
            insert_one(target, i, rng, entry, writer)
            del target  # one image in memory at a time
            bar.advance(task)
        report.seconds = time.perf_counter() - t0
        info = report.as_dict()
        info.update(lesion_type=lesion_type, size_model=size_model.as_dict(), placement=placement,
                    skin_margin_mm=skin_margin_mm, keep_detail=keep_detail, model=model_info())
        writer.write_json("insert_report.json", info)
        if yolo:
            writer.write_yolo_dataset()
    if report.failed:
        log.warning("%d of %d insertions could not be placed; see %s", len(report.failed), n, Path(out_dir) / "insert_report.json")
    if report.out_of_scale:
        log.warning("%d of %d images were infilled outside the infill model's trained mm-per-pixel range; "
                    "see insert_report.json", report.out_of_scale, report.written)
    return report


def _target_anatomy(t: Target, i: int, entry: dict[str, Any], report: InsertReport, region_for: Any,
                    skin_margin_mm: float) -> tuple[Any, np.ndarray, Anatomy, np.ndarray | None] | None:
    """Left-orient a target and find its anatomy (and region mask): (flip, the left-oriented
    stored pixels (a view: writes go to ``t.stored``), anatomy, region or None); None when
    the image is skipped or failed (``entry`` and ``report`` say why)."""
    info = t.info
    spacing = float(info.spacing_mm)
    flip = (lambda a: a[:, ::-1]) if t.flipped else (lambda a: a)
    stored_lo = flip(t.stored)  # a left-oriented view, no copy
    # anatomy on the work grid, mirrored as a small copy (block alignment shifts by the remainder)
    small_lo = np.ascontiguousarray(flip(t.small))
    x_off = t.stored.shape[1] - t.small_f * t.small.shape[1] if t.flipped else 0
    breast_small = None
    if t.breast_mask is not None:
        breast_small = np.ascontiguousarray(flip(downsample(t.breast_mask.astype(np.float32), ANATOMY_WORK_SIZE)[0] >= 0.5))
    anat = anatomy_from_small(small_lo, t.small_f, t.stored.shape, spacing, info.view, skin_margin_mm,
                              breast_small=breast_small, x_off=x_off)
    if info.view is None:
        info.view, info.view_source = ("MLO" if anat.pectoral_found else "CC"), "image content (pectoral muscle " + \
            ("found)" if anat.pectoral_found else "not found)")
    entry.update(laterality=info.laterality, laterality_source=info.laterality_source, view=info.view,
                 view_source=info.view_source, pixel_spacing_mm=spacing, spacing_source=info.spacing_source,
                 pectoral_found=anat.pectoral_found, notes=list(t.notes))
    if not anat.breast.any():
        entry.update(status="skipped", reason="no breast found")
        report.skipped_normals.append({"normal": info.ref.name, "reason": "no breast found"})
        return None
    region = None
    if region_for is not None:
        region = region_for(t)
        if region is None:
            entry.update(status="failed", reason="no region mask for this image")
            report.failed.append({"index": i, "normal": info.ref.name, "reason": "no region mask for this image"})
            return None
        region = flip(region)
    return flip, stored_lo, anat, region


def _failed(entry: dict[str, Any], report: InsertReport, i: int, name: str, reason: str,
            reasons: Counter | None = None) -> None:
    """Record image ``i`` as failed, with the top three placement rejections when given."""
    if reasons is not None:
        reason = f"{reason} ({', '.join(f'{k}: {v}' for k, v in reasons.most_common(3))})"
    entry.update(status="failed", reason=reason)
    report.failed.append({"index": i, "normal": name, "reason": reason})


def _box_and_format(mask: np.ndarray, spacing: float, out_format: str, in_format: str):
    """(box (x, y, w, h) px, size (h, w) mm, centre (x, y) px, output format) of an inserted lesion."""
    x, y, bw, bh = mask_bbox(mask)
    size_mm = (round(bh * spacing, 2), round(bw * spacing, 2))
    centre = (round(x + bw / 2.0, 1), round(y + bh / 2.0, 1))
    fmt = out_format if out_format != "auto" else ("png" if in_format == "store" else in_format)
    return (x, y, bw, bh), size_mm, centre, fmt


def _insert_one(t: Target, i: int, rng: np.random.Generator, entry: dict[str, Any], report: InsertReport,
                writer: SyntheticSetWriter, mask_method: Any, infill_method: Any, size_model: SizeModel, rule: str,
                region_for: Any, context: float, trained: dict[str, Any] | None, factor: float, device: torch.device,
                seed: int, skin_margin_mm: float, out_format: str, yolo: bool, min_size_mm: float, max_size_mm: float,
                max_tries: int, max_resamples: int, keep_detail: bool = True) -> None:
    prepared = _target_anatomy(t, i, entry, report, region_for, skin_margin_mm)
    if prepared is None:
        return
    flip, stored_lo, anat, region = prepared
    info = t.info
    spacing = float(info.spacing_mm)
    reasons: Counter = Counter()
    site = None
    tries = 0
    masks_drawn = 0
    for _ in range(max_resamples):
        mask_seed = int(rng.integers(2**31))
        mask = mask_method.sample_masks(1, seed=mask_seed)[0]
        masks_drawn += 1
        why = mask_is_degenerate(mask)
        if why:
            reasons[f"degenerate mask: {why}"] += 1
            continue
        h_mm, w_mm = size_model.sample(rng, min_size_mm, max_size_mm)
        lesion = scale_mask(mask, (h_mm / spacing, w_mm / spacing), size_model.isotropic)
        if max(lesion.shape) * (1 + 2 * context) >= min(anat.shape):
            reasons["lesion window larger than the image"] += 1
            continue
        site = place(anat, lesion, factor, rng, rule, region, max_tries, reasons)
        tries += site.tries if site is not None else max_tries
        if site is not None:
            break
    entry.update(tries=tries, masks_drawn=masks_drawn, reasons=dict(reasons))
    if site is None:
        return _failed(entry, report, i, info.ref.name, f"no position after {masks_drawn} masks x {max_tries} tries", reasons)
    report.placement_tries.append(tries)
    # the window the model sees, cut as its training patches were
    # the window training patches were cut with: centred on the lesion box, shifted into the image
    wx0, wy0, side = roi_window((site.x0, site.y0, site.mask.shape[1], site.mask.shape[0]), stored_lo.shape, context)
    win_mask = np.zeros((side, side), bool)
    my, mx = site.y0 - wy0, site.x0 - wx0
    win_mask[my: my + site.mask.shape[0], mx: mx + site.mask.shape[1]] = site.mask
    window = t.imap.forward(_crop(stored_lo, wy0, wx0, side))  # the model's intensities, as in training
    infill_seed = int(rng.integers(2**31))
    gen = torch.Generator(device=device).manual_seed(infill_seed)
    fill = infill_window(infill_method, window, win_mask, gen, keep_detail=keep_detail)
    mm_per_model_px = side * spacing / float(infill_method.size)
    out_of_scale = bool(trained) and not (trained["min"] <= mm_per_model_px <= trained["max"])
    report.out_of_scale += int(out_of_scale)
    # composite: alpha on the lesion's footprint, inside the window and the image, zero outside the breast
    pad, foot = blend_weights(site.mask, factor, (site.pad, site.footprint))
    alpha = np.zeros((side, side), np.float32)
    fy, fx = site.y0 - pad - wy0, site.x0 - pad - wx0
    src = (slice(max(0, -fy), min(foot.shape[0], side - fy)), slice(max(0, -fx), min(foot.shape[1], side - fx)))
    alpha[max(fy, 0): max(fy, 0) + src[0].stop - src[0].start, max(fx, 0): max(fx, 0) + src[1].stop - src[1].start] = foot[src]
    alpha *= anat.crop("changeable", wy0, wx0, side, side)
    ya, xa = max(wy0, 0), max(wx0, 0)
    yb, xb = min(wy0 + side, stored_lo.shape[0]), min(wx0 + side, stored_lo.shape[1])
    sl = (slice(ya - wy0, yb - wy0), slice(xa - wx0, xb - wx0))
    changed = composite(stored_lo[ya:yb, xa:xb], fill[sl], alpha[sl], t.imap)
    lesion_lo = np.zeros(stored_lo.shape, bool)
    lesion_lo[site.y0: site.y0 + site.mask.shape[0], site.x0: site.x0 + site.mask.shape[1]] = site.mask
    lesion_mask = np.ascontiguousarray(flip(lesion_lo))
    (x, y, bw, bh), size_mm, centre, fmt = _box_and_format(lesion_mask, spacing, out_format, info.fmt)
    stem = f"{t.stem}_{i:06d}"
    extra = {"index": i, "laterality": info.laterality, "laterality_source": info.laterality_source, "view": info.view,
             "view_source": info.view_source, "flipped": t.flipped, "mask_seed": mask_seed,
             "spacing_source": info.spacing_source, "window_xy_side": [int(wx0 if not t.flipped else stored_lo.shape[1] - wx0 - side), wy0, side],
             "mm_per_model_px": round(mm_per_model_px, 5), "out_of_trained_scale": out_of_scale,
             "pixels_changed": changed, "intensity": t.imap.describe(), "infill_seed": infill_seed,
             **_synthesis_info(infill_method)}
    fname = writer.add_native(
        t.stored, fmt,
        [Lesion(mask=lesion_mask, attributes={"source_file": info.ref.name, "size_mm_hw": list(size_mm),
                                              "center_xy": list(centre), "mask_seed": mask_seed})],
        seed=seed, source_ids=[t.source_id], extra=extra, stem=stem,
        dicom_source=t.dataset if fmt == "dicom" else None, pixel_spacing_mm=spacing, source_file=info.ref.name,
        row={"lesion_h_mm": size_mm[0], "lesion_w_mm": size_mm[1], "center_x": centre[0], "center_y": centre[1]},
        yolo=yolo, note=f"lesion box x={x} y={y} w={bw} h={bh} px, {size_mm[1]} x {size_mm[0]} mm",
    )
    entry.update(status="written", file=f"images/{fname}", lesion_size_mm_hw=list(size_mm), center_xy=list(centre),
                 mm_per_model_px=round(mm_per_model_px, 5), out_of_trained_scale=out_of_scale)
    report.written += 1


# --------------------------------------------------------------------------------------
# calcification clusters
# --------------------------------------------------------------------------------------
def _cluster_labels(morphology: str | None, distribution: str | None) -> tuple[str | None, str | None]:
    """User-typed morphology / distribution (``fine-linear-branching``) as vocabulary terms."""
    from mammosynth.data.birads import DISTRIBUTIONS, MORPHOLOGIES, parse_term

    return (None if morphology is None else parse_term(morphology, MORPHOLOGIES, "calcification morphology"),
            None if distribution is None else parse_term(distribution, DISTRIBUTIONS, "calcification distribution"))


def cluster_footprint(centres_px: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """(footprint, centres): the tight bool mask (h, w) a cluster with ``centres_px`` (K, 2)
    (x, y) needs (their hull grown by 2 mm) and the centres in its frame."""
    from mammosynth.phantom.calcification import cluster_outline

    m = int(math.ceil(_CLUSTER_FOOTPRINT_MM / spacing)) + 2
    local = centres_px - centres_px.min(axis=0) + m
    h, w = (int(math.ceil(v)) + m + 1 for v in local.max(axis=0)[::-1])
    dots = np.zeros((h, w), bool)
    ij = np.floor(local + 0.5).astype(int)
    dots[ij[:, 1], ij[:, 0]] = True
    foot = cluster_outline(dots, spacing, _CLUSTER_FOOTPRINT_MM)
    x, y, bw, bh = mask_bbox(foot)
    return foot[y: y + bh, x: x + bw], local - np.float64([x, y])


def _insert_cluster(t: Target, i: int, rng: np.random.Generator, entry: dict[str, Any], report: InsertReport,
                    writer: SyntheticSetWriter, size_model: SizeModel, rule: str, region_for: Any, seed: int,
                    skin_margin_mm: float, out_format: str, yolo: bool, min_size_mm: float, max_size_mm: float,
                    max_tries: int, max_resamples: int, labels: tuple[str | None, str | None]) -> None:
    """One calcification cluster into one target (see the module docstring)."""
    from mammosynth.data.birads import DISTRIBUTIONS, MORPHOLOGIES
    from mammosynth.phantom.calcification import cluster_centres_mm, draw_calcifications

    morphology = labels[0] or MORPHOLOGIES[int(rng.integers(len(MORPHOLOGIES)))]
    distribution = labels[1] or DISTRIBUTIONS[int(rng.integers(len(DISTRIBUTIONS)))]
    prepared = _target_anatomy(t, i, entry, report, region_for, skin_margin_mm)
    if prepared is None:
        return
    flip, stored_lo, anat, region = prepared
    info, spacing = t.info, float(t.info.spacing_mm)
    reasons: Counter = Counter()
    site, tries = None, 0
    for _ in range(max_resamples):
        h_mm, w_mm = size_model.sample(rng, min_size_mm, max_size_mm)
        centres_mm, axis = cluster_centres_mm(rng, distribution, extent_mm=max(h_mm, w_mm))
        foot, centres = cluster_footprint(centres_mm / spacing, spacing)
        if max(foot.shape) >= min(anat.shape):
            reasons["cluster larger than the image"] += 1
            continue
        site = place(anat, foot, 1.0, rng, rule, region, max_tries, reasons)
        tries += site.tries if site is not None else max_tries
        if site is not None:
            break
    entry.update(tries=tries, reasons=dict(reasons), morphology=morphology, distribution=distribution)
    if site is None:
        return _failed(entry, report, i, info.ref.name, f"no position after {max_resamples} clusters x {max_tries} tries",
                       reasons)
    report.placement_tries.append(tries)
    # the window: the footprint and the 2-pixel pad ``place`` kept inside the image
    wy0, wx0 = site.y0 - 2, site.x0 - 2
    wy1, wx1 = site.y0 + foot.shape[0] + 2, site.x0 + foot.shape[1] + 2
    window = stored_lo[wy0:wy1, wx0:wx1]
    tissue = t.imap.forward(window).astype(np.float32)
    allowed = anat.crop("changeable", wy0, wx0, wy1 - wy0, wx1 - wx0).astype(bool)
    drawn, cmask, points, sizes = draw_calcifications(tissue, allowed, centres + 2.0, axis, morphology, rng, spacing,
                                                      compressed_mm=_ASSUMED_THICKNESS_MM, style="ffdm")
    if not len(points) or not cmask.any():
        return _failed(entry, report, i, info.ref.name, "no calcification of the cluster fell in the allowed region")
    # only the pixels the calcium changed, inside the cluster's outline: all else bit-identical
    alpha = ((drawn != tissue) & cmask).astype(np.float32)
    changed = composite(window, drawn, alpha, t.imap)
    cluster_lo = np.zeros(stored_lo.shape, bool)
    cluster_lo[wy0:wy1, wx0:wx1] = cmask
    cluster_mask = np.ascontiguousarray(flip(cluster_lo))
    points_lo = points + np.float64([wx0, wy0])
    if t.flipped:  # pixel centre x -> W - 1 - x in the image's own frame
        points_lo[:, 0] = stored_lo.shape[1] - 1 - points_lo[:, 0]
    (x, y, bw, bh), size_mm, centre, fmt = _box_and_format(cluster_mask, spacing, out_format, info.fmt)
    attributes = {"lesion_type": "calcification", "morphology": morphology, "distribution": distribution,
                  "n_calcifications": int(len(points_lo)), "points": points_lo.round(2).tolist(),
                  "calcification_sizes_mm": sizes.round(3).tolist(), "source_file": info.ref.name,
                  "size_mm_hw": list(size_mm), "center_xy": list(centre)}
    extra = {"index": i, "laterality": info.laterality, "view": info.view, "flipped": t.flipped,
             "spacing_source": info.spacing_source, "pixels_changed": changed, "intensity": t.imap.describe(),
             "lesion_type": "calcification", "morphology": morphology, "distribution": distribution}
    fname = writer.add_native(
        t.stored, fmt, [Lesion(mask=cluster_mask, attributes=attributes, category="calcification", points=points_lo)],
        seed=seed, source_ids=[t.source_id], extra=extra, stem=f"{t.stem}_{i:06d}",
        dicom_source=t.dataset if fmt == "dicom" else None, pixel_spacing_mm=spacing, source_file=info.ref.name,
        row={"lesion_h_mm": size_mm[0], "lesion_w_mm": size_mm[1], "center_x": centre[0], "center_y": centre[1]},
        yolo=yolo, note=f"calcification cluster box x={x} y={y} w={bw} h={bh} px, {len(points_lo)} calcifications",
    )
    entry.update(status="written", file=f"images/{fname}", lesion_size_mm_hw=list(size_mm), center_xy=list(centre),
                 n_calcifications=int(len(points_lo)))
    report.written += 1
