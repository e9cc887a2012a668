"""Insert synthetic masses into normal mammograms (seed 001, sec. 4.1 and Fig. 1a).

For each output image:

1. draw a mask from the mask DCGAN (cleaned: threshold, largest component, hole fill);
2. draw the lesion's (height, width) from a Gaussian fitted to the training lesions' sizes
   (full-image pixels, converted to the normal's canvas with its stored scale);
3. place it at X ~ U(w/10, w/2), Y ~ U(h/4, 3h/4) on the left-oriented breast (the store
   keeps normals with the chest wall at x = 0, i.e. right breasts flipped), rejecting
   positions where the lesion leaves the breast mask, with bounded retries;
4. cut the tissue patch there, build the Tri-label and infill it with the infilling GAN;
5. paste the patch back with a feathered border so there is no visible seam;
6. restore the original orientation (un-flip right breasts) and crop the canvas padding;
7. write a 16-bit PNG, the lesion mask, and a COCO annotation (bbox, RLE, attributes).

Everything is seeded per output image (``np.random.default_rng([seed, i])``), so the same
seed gives the same set, whatever the batch or order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammosynth.data.store import Store, resize_image, resize_mask
from mammosynth.errors import DataError
from mammosynth.io import write_json_atomic
from mammosynth.synth.writer import Lesion, SyntheticSetWriter

log = logging.getLogger(__name__)


@dataclass
class SizeModel:
    """Gaussian over lesion (h, w) in full-image pixels, fitted to the training lesions."""

    mean: np.ndarray  # (2,)
    cov: np.ndarray  # (2, 2)
    n: int

    @classmethod
    def fit(cls, sizes: np.ndarray) -> "SizeModel":
        sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
        if len(sizes) < 2:
            raise DataError("need at least 2 training lesions with a known size to fit the size distribution")
        cov = np.cov(sizes, rowvar=False) + np.eye(2) * 1e-6
        return cls(mean=sizes.mean(axis=0), cov=cov, n=len(sizes))

    def sample(self, rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float]:
        """One (h, w) draw, clipped to [lo, hi] pixels (a Gaussian can go negative)."""
        h, w = rng.multivariate_normal(self.mean, self.cov)
        return float(np.clip(h, lo, hi)), float(np.clip(w, lo, hi))


@dataclass
class InsertReport:
    written: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped_normals: list[dict[str, Any]] = field(default_factory=list)
    placement_tries: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "failed": self.failed,
            "skipped_normals": self.skipped_normals,
            "mean_placement_tries": float(np.mean(self.placement_tries)) if self.placement_tries else None,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.written / self.seconds, 4) if self.seconds > 0 else None,
        }


def feather_weights(shape: tuple[int, int], feather: float) -> np.ndarray:
    """(h, w) weights: 1 in the interior, ramping linearly to 0 at the patch border over
    ``feather`` pixels (so the pasted patch meets the mammogram without a seam)."""
    h, w = shape
    yy = np.minimum(np.arange(h), np.arange(h)[::-1]).astype(np.float32)
    xx = np.minimum(np.arange(w), np.arange(w)[::-1]).astype(np.float32)
    d = np.minimum(yy[:, None], xx[None, :])
    return np.clip((d + 0.5) / max(feather, 1.0), 0.0, 1.0)


def place_lesion(
    breast_mask: np.ndarray,
    lesion_mask: np.ndarray,
    rng: np.random.Generator,
    valid_hw: tuple[int, int],
    max_tries: int,
    min_inside: float = 0.995,
) -> tuple[int, int, int] | None:
    """Find a top-left (y0, x0) for ``lesion_mask`` (ph, pw) with its centre at X ~ U(w/10, w/2),
    Y ~ U(h/4, 3h/4) (seed 001) and at least ``min_inside`` of the lesion inside the breast and
    the whole patch inside the image. Returns (y0, x0, tries) or None after ``max_tries``."""
    h, w = valid_hw
    ph, pw = lesion_mask.shape
    area = lesion_mask.sum()
    for t in range(1, max_tries + 1):
        cx = rng.uniform(w / 10, w / 2)
        cy = rng.uniform(h / 4, 3 * h / 4)
        y0, x0 = int(round(cy - ph / 2)), int(round(cx - pw / 2))
        if y0 < 0 or x0 < 0 or y0 + ph > h or x0 + pw > w:
            continue
        inside = (breast_mask[y0:y0 + ph, x0:x0 + pw] & lesion_mask).sum()
        if inside >= min_inside * area:
            return y0, x0, t
    return None


def _lesion_patch_size(mask: np.ndarray, size_hw: tuple[float, float]) -> tuple[int, int]:
    """Scale the S x S mask patch so its lesion bbox becomes ``size_hw`` (h, w) pixels."""
    ys, xs = np.nonzero(mask)
    bh, bw = np.ptp(ys) + 1, np.ptp(xs) + 1
    S = mask.shape[0]
    return max(4, int(round(size_hw[0] * S / bh))), max(4, int(round(size_hw[1] * S / bw)))


@torch.no_grad()
def insert_lesions(
    mask_method: Any,
    infill_method: Any,
    normals_path: str | Path,
    n: int,
    out_dir: str | Path,
    seed: int = 0,
    split: str | None = None,
    size_store: str | Path | None = None,
    max_tries: int = 50,
    max_resamples: int = 5,
    feather_frac: float = 0.2,
    mask_run: str = "",
    infill_run: str = "",
    progress: bool = True,
    overwrite: bool = False,
) -> InsertReport:
    """Write ``n`` normal mammograms with one inserted mass each to ``out_dir`` (a synthetic
    set: images/, masks/, annotations.json, manifest.csv, insert_report.json).

    ``mask_method`` needs ``sample_masks(n, seed) -> (n,S,S) bool``; ``infill_method`` needs
    ``infill(tissue (B,1,S,S) [-1,1], mask (B,1,S,S) {0,1}, generator) -> (B,1,S,S) [-1,1]``.
    Normals come from ``normals_path`` (``split`` None = all); the size Gaussian is fitted to
    the lesions of ``size_store`` (default: the same file), training split.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    t0 = time.perf_counter()
    report = InsertReport()
    out = Path(out_dir)
    with Store(size_store or normals_path) as ss:
        sizes = ss.lesion_sizes("train")
        if len(sizes) < 2:
            sizes = ss.lesion_sizes(None)
        size_model = SizeModel.fit(sizes)
    with Store(normals_path) as store:
        normal_ids = store.split_indices("normals", split)
        if len(normal_ids) == 0:
            raise DataError(f"{normals_path}: no normal mammograms{'' if split is None else f' in split {split!r}'}; "
                            "ingest normals or use `mammosynth data phantom`")
        device = next(iter(infill_method.nets.parameters())).device
        with SyntheticSetWriter(out, method="insert", run=f"{mask_run}+{infill_run}", overwrite=overwrite,
                                description="normal mammograms with inserted synthetic masses (mammosynth insert)") as writer, \
                Progress(TextColumn("[bold]insert"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                         disable=not progress, transient=False) as bar:
            task = bar.add_task("insert", total=n)
            for i in range(n):
                rng = np.random.default_rng([seed, i])
                k = int(normal_ids[i % len(normal_ids)]) if n <= len(normal_ids) else int(rng.choice(normal_ids))
                normal = store.normal(k)
                h, w = normal["valid_hw"]
                bmask = normal["breast_mask"]
                if not bmask.any():
                    report.skipped_normals.append({"normal": normal["source_id"], "reason": "no breast found"})
                    bar.advance(task)
                    continue
                placed = None
                tries_total = 0
                for attempt in range(max_resamples):
                    mask_seed = int(rng.integers(2**31))
                    mask = mask_method.sample_masks(1, seed=mask_seed)[0]
                    if not mask.any():
                        continue
                    # sizes are drawn in full-image pixels, then mapped onto this normal's canvas
                    src_hw = size_model.sample(rng, lo=4.0, hi=min(h, w) / (3 * normal["scale"]))
                    size_hw = (max(src_hw[0] * normal["scale"], 6.0), max(src_hw[1] * normal["scale"], 6.0))
                    ph, pw = _lesion_patch_size(mask, size_hw)
                    if ph >= h or pw >= w:
                        continue
                    big_mask = resize_mask(mask, (ph, pw))
                    pos = place_lesion(bmask, big_mask, rng, (h, w), max_tries)
                    tries_total += max_tries if pos is None else pos[2]
                    if pos is not None:
                        placed = (mask, mask_seed, big_mask, pos[0], pos[1], size_hw)
                        break
                if placed is None:
                    report.failed.append({"index": i, "normal": normal["source_id"],
                                          "reason": f"no position inside the breast after {max_resamples} masks x {max_tries} tries"})
                    bar.advance(task)
                    continue
                report.placement_tries.append(tries_total)
                mask, mask_seed, big_mask, y0, x0, size_hw = placed
                ph, pw = big_mask.shape
                image = normal["image"][:h, :w].copy()
                S = mask.shape[0]
                tissue = resize_image(image[y0:y0 + ph, x0:x0 + pw], (S, S))
                tissue_t = torch.from_numpy(tissue)[None, None].to(device) * 2 - 1
                mask_t = torch.from_numpy(mask.astype(np.float32))[None, None].to(device)
                gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**31)))
                fake = infill_method.infill(tissue_t, mask_t, generator=gen)
                fake_np = ((fake[0, 0].float().cpu().numpy() + 1) / 2).clip(0, 1)
                patch = resize_image(fake_np, (ph, pw))
                alpha = feather_weights((ph, pw), feather_frac * min(ph, pw))
                alpha = np.maximum(alpha, big_mask.astype(np.float32))  # the lesion itself is never faded
                region = image[y0:y0 + ph, x0:x0 + pw]
                image[y0:y0 + ph, x0:x0 + pw] = alpha * patch + (1 - alpha) * region
                lesion_mask = np.zeros((h, w), bool)
                lesion_mask[y0:y0 + ph, x0:x0 + pw] = big_mask
                if normal["flipped"]:
                    image, lesion_mask = image[:, ::-1].copy(), lesion_mask[:, ::-1].copy()
                writer.add(
                    image,
                    [Lesion(mask=lesion_mask, attributes={"normal_id": normal["source_id"], "mask_seed": mask_seed,
                                                          "size_hw_px": [round(size_hw[0], 1), round(size_hw[1], 1)]})],
                    seed=seed,
                    source_ids=[normal["source_id"]],
                    extra={"index": i, "laterality": normal["laterality"], "view": normal["view"],
                           "mask_seed": mask_seed, "patch_yx_hw": [y0, x0, ph, pw], "flipped": normal["flipped"]},
                    stem=f"insert_{i:06d}",
                )
                report.written += 1
                bar.advance(task)
            report.seconds = time.perf_counter() - t0
            info = report.as_dict()
            info["size_model"] = {"mean_hw": size_model.mean.tolist(), "cov": size_model.cov.tolist(), "n": size_model.n}
            write_json_atomic(writer.work_dir / "insert_report.json", info)  # inside the set, renamed with it
    if report.failed:
        log.warning("%d of %d insertions could not be placed; see %s", len(report.failed), n, out / "insert_report.json")
    return report
