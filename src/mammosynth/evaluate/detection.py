"""Detection metrics for the downstream experiment (seed 001 sec. 4.5): recall (TPR) at
IoU >= 0.5, the FROC curve and its area, and COCO-style AP@0.5 (cross-checked against
pycocotools in the tests).

Boxes are (x, y, w, h) in pixels, as in COCO. Matching is greedy by descending score, each
ground-truth box matched at most once (duplicates are false positives), IoU >= threshold —
the same rule as pycocotools' COCOeval, so the numbers agree. ``strict=True`` matches at
IoU > threshold instead, as seed 001 defines its recall ("IoU greater than 0.5"); the two
differ only for a box whose IoU is exactly the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: FPPI points of the usual FROC summary (LUNA16 "CPM" uses these seven).
FROC_FPPI = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between (N,4) and (M,4) xywh boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class Detections:
    """Per-image predictions (boxes (K,4) xywh, scores (K,)) and ground truth (G,4)."""

    boxes: np.ndarray
    scores: np.ndarray
    gt: np.ndarray


def match_per_image(images: Sequence[Detections], iou_thr: float = 0.5, strict: bool = False) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Per image: (scores, TP flags, number of GT boxes) of its predictions, matched greedily
    by descending score (IoU >= ``iou_thr``, or > with ``strict``)."""
    return [_match([im], iou_thr, strict) for im in images]


def _match(images: Sequence[Detections], iou_thr: float, strict: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores and TP flags of all predictions (greedy per image), and the number of GT boxes."""
    scores, tps = [], []
    n_gt = 0
    for im in images:
        gt = np.asarray(im.gt, np.float64).reshape(-1, 4)
        n_gt += len(gt)
        order = np.argsort(-np.asarray(im.scores, np.float64), kind="mergesort")
        boxes = np.asarray(im.boxes, np.float64).reshape(-1, 4)[order]
        sc = np.asarray(im.scores, np.float64)[order]
        taken = np.zeros(len(gt), bool)
        ious = box_iou(boxes, gt) if len(gt) and len(boxes) else np.zeros((len(boxes), len(gt)))
        for k in range(len(boxes)):
            best, best_iou = -1, iou_thr
            for g in range(len(gt)):
                if not taken[g] and (ious[k, g] > best_iou if strict and best < 0 else ious[k, g] >= best_iou):
                    best, best_iou = g, ious[k, g]
            tp = best >= 0
            if tp:
                taken[best] = True
            scores.append(sc[k])
            tps.append(tp)
    return np.asarray(scores), np.asarray(tps, bool), n_gt


def froc(images: Sequence[Detections], iou_thr: float = 0.5, fppi_points: Sequence[float] = FROC_FPPI,
         strict: bool = False) -> dict:
    """FROC: sensitivity vs false positives per image over all score thresholds.

    Returns ``fppi`` and ``sensitivity`` arrays (the curve), ``sensitivity_at`` each of
    ``fppi_points`` (the highest sensitivity reached with at most that FPPI), ``cpm`` (their
    mean), ``auc`` = the area under the curve for FPPI in [0, max(fppi_points)] divided by that
    range (mean sensitivity; 1 is perfect), and ``recall`` = sensitivity with every prediction
    kept (TPR at IoU >= ``iou_thr``, the paper's eq. 6; IoU > ``iou_thr`` with ``strict``).
    """
    scores, tps, n_gt = _match(images, iou_thr, strict)
    n_img = max(len(images), 1)
    order = np.argsort(-scores, kind="mergesort")
    tp_cum = np.cumsum(tps[order])
    fp_cum = np.cumsum(~tps[order])
    sens = tp_cum / max(n_gt, 1)
    fppi = fp_cum / n_img
    # keep the last point of each run of equal scores (a threshold admits all ties at once)
    if len(order):
        s_sorted = scores[order]
        last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
        sens, fppi = sens[last], fppi[last]
    fppi_c = np.r_[0.0, fppi]
    sens_c = np.r_[0.0, sens]
    at = {}
    for f in fppi_points:
        ok = fppi_c <= f + 1e-12
        at[f] = float(sens_c[ok].max()) if ok.any() else 0.0
    fmax = float(max(fppi_points))
    grid = np.linspace(0, fmax, 801)
    # step function: sensitivity reached at each FPPI budget
    idx = np.searchsorted(fppi_c, grid, side="right") - 1
    running_max = np.maximum.accumulate(sens_c)
    auc = float(running_max[np.clip(idx, 0, len(running_max) - 1)].mean())
    return {
        "fppi": fppi_c.tolist(),
        "sensitivity": sens_c.tolist(),
        "sensitivity_at": {str(k): v for k, v in at.items()},
        "cpm": float(np.mean(list(at.values()))),
        "auc": auc,
        "recall": float(sens_c[-1]),
        "n_images": len(images),
        "n_lesions": n_gt,
        "iou_threshold": iou_thr,
        "iou_rule": ">" if strict else ">=",
    }


def average_precision(images: Sequence[Detections], iou_thr: float = 0.5, max_dets: int = 100, strict: bool = False) -> float:
    """COCO-style AP at one IoU threshold (101-point interpolation, ``max_dets`` per image)."""
    capped = []
    for im in images:
        order = np.argsort(-np.asarray(im.scores), kind="mergesort")[:max_dets]
        capped.append(Detections(np.asarray(im.boxes).reshape(-1, 4)[order], np.asarray(im.scores)[order], im.gt))
    scores, tps, n_gt = _match(capped, iou_thr, strict)
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(tps[order])
    fp = np.cumsum(~tps[order])
    rec = tp / n_gt
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    for i in range(len(prec) - 1, 0, -1):  # precision envelope
        prec[i - 1] = max(prec[i - 1], prec[i])
    rec_pts = np.linspace(0, 1, 101)
    inds = np.searchsorted(rec, rec_pts, side="left")
    q = np.array([prec[i] if i < len(prec) else 0.0 for i in inds])
    return float(q.mean())


def boxes_from_probability(prob: np.ndarray, threshold: float = 0.5, min_area: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation-based detector head: connected components of ``prob >= threshold``,
    each a box (x, y, w, h) scored by the mean probability inside the component."""
    from scipy import ndimage

    labels, n = ndimage.label(prob >= threshold)
    boxes, scores = [], []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == k
        if comp.sum() < min_area:
            continue
        ys, xs = sl
        boxes.append((xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start))
        scores.append(float(prob[sl][comp].mean()))
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64)


def froc_on_grid(curve: dict, grid: np.ndarray) -> np.ndarray:
    """A FROC curve (``{"fppi": [...], "sensitivity": [...]}``) as a step function sampled at
    ``grid`` FPPI values, sensitivity made non-decreasing: for averaging curves over seeds."""
    f, sens = np.asarray(curve["fppi"]), np.maximum.accumulate(np.asarray(curve["sensitivity"]))
    return sens[np.clip(np.searchsorted(f, grid, side="right") - 1, 0, len(sens) - 1)]
