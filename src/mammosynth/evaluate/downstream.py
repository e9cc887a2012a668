"""Downstream benefit (seed 001 sec. 4.5): train a mass detector on real data only and on real
data plus growing amounts of synthetic data, and evaluate each on one fixed real test split
with recall (TPR) at IoU >= 0.5 and the FROC curve, over several seeds, with CIs.

Detector: a segmentation-based detector, the common design of mammography CAD — the
``segmenter`` U-Net, then connected components of its probability map, then boxes scored by
the mean probability inside each component. (MONAI's RetinaNet needs torchvision, which does
not import with the CPU build of torch used here.) Every result records which detector ran.

Images are tiles of the store's patch size: real lesion patches (positives, with their
masks), lesion-free tiles cut inside the breast of normal mammograms (negatives), and
synthetic lesions framed like the real patches (see ``evaluate/synthetic.py``). Each
detector is trained through the one generic trainer (``train("segmenter", ...)``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mammosynth.data.birads import Label
from mammosynth.data.records import LesionRecord, MammogramRecord
from mammosynth.data.store import Store, StoreWriter
from mammosynth.evaluate.detection import Detections, boxes_from_probability, froc
from mammosynth.evaluate.synthetic import load_synthetic_patches
from mammosynth.synth.writer import mask_bbox

DETECTOR = "unet-segmentation (U-Net -> connected components -> boxes scored by mean probability)"
_NONE = Label(None, None, "missing")


def _mixture_store(path: Path, real_store: Path, synth_images: np.ndarray, synth_masks: np.ndarray) -> None:
    """A store holding the real training lesions and normals plus the given synthetic lesions,
    all in the train split."""
    with Store(real_store) as st, StoreWriter(path, patch_size=st.patch_size, normal_size=tuple(st.manifest["normal_size"])) as w:
        les = st.lesions(split="train")
        for k in range(len(les.index)):
            w.add(LesionRecord("real", les.source_id[k], les.patient_id[k], les.patch[k], les.mask[k], _NONE, _NONE, _NONE,
                               split_hint="train"))
        for k in range(len(synth_images)):
            w.add(LesionRecord("synthetic", f"syn{k}", f"syn{k}", synth_images[k], synth_masks[k], _NONE, _NONE, _NONE,
                               split_hint="train"))
        for j in st.split_indices("normals", "train"):
            n = st.normal(int(j))
            h, wd = n["valid_hw"]
            w.add(MammogramRecord("real", n["source_id"], n["patient_id"], n["image"][:h, :wd], n["breast_mask"][:h, :wd],
                                  split_hint="train"))


def real_test_tiles(real_store: Path, seed: int = 0, negatives_per_lesion: float = 1.0) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Fixed real test set: test-split lesion patches + lesion-free tiles from test-split normals
    (or all normals when the test split has none). Returns images (N,1,S,S) in [-1,1] and
    ground-truth boxes per image."""
    from mammosynth.data.dataset import NormalDataset
    from mammosynth.models.segmenter import tile_from_normal

    with Store(real_store) as st:
        les = st.lesions(split="test")
        S = st.patch_size
        normal_split = "test" if len(st.split_indices("normals", "test")) else None
    images = [torch.from_numpy(p)[None] * 2 - 1 for p in les.patch]
    gts = [np.asarray([mask_bbox(m)], np.float64) for m in les.mask]
    normals = NormalDataset(real_store, split=normal_split)
    rng = np.random.default_rng([seed, 991])
    for i in range(int(round(negatives_per_lesion * len(images)))):
        item = normals[int(rng.integers(len(normals)))]
        images.append(tile_from_normal(item["image"], item["breast_mask"], S, rng)["image"])
        gts.append(np.zeros((0, 4)))
    return torch.stack(images), gts


def _evaluate_detector(method: Any, images: torch.Tensor, gts: list[np.ndarray], threshold: float = 0.5) -> dict:
    prob = method.predict(images)[:, 0].numpy()
    dets = []
    for p, gt in zip(prob, gts):
        boxes, scores = boxes_from_probability(p, threshold)
        dets.append(Detections(boxes, scores, gt))
    return froc(dets)


def _mean_ci(values: Sequence[float]) -> dict:
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return {"mean": float(v.mean()) if len(v) else float("nan"), "ci": [float("nan"), float("nan")], "n": len(v)}
    from scipy import stats

    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return {"mean": float(v.mean()), "ci": [float(v.mean() - half), float(v.mean() + half)], "n": len(v)}


def downstream_detection(
    real_store: str | Path,
    synthetic_dir: str | Path,
    out_dir: str | Path,
    amounts: Sequence[float] = (0.0, 0.5, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 300,
    batch_size: int = 16,
    negatives_per_lesion: float = 1.0,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Run the experiment; ``amounts`` are synthetic lesions added as a fraction of the real
    training lesions (0 = real only). Returns a JSON-ready dict and writes plots to ``out_dir``."""
    from mammosynth.models.segmenter import SegmenterConfig
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    real_store = Path(real_store)
    with Store(real_store) as st:
        S = st.patch_size
        n_real = len(st.split_indices("lesions", "train"))
    syn = load_synthetic_patches(synthetic_dir, S)
    keep = syn.masks.any(axis=(1, 2))
    syn_images, syn_masks = syn.images[keep], syn.masks[keep]
    test_images, test_gts = real_test_tiles(real_store, negatives_per_lesion=negatives_per_lesion)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mammosynth-downstream-") as tmp:
        for a in amounts:
            k = min(int(round(a * n_real)), len(syn_images))
            for seed in seeds:
                order = np.random.default_rng(seed).permutation(len(syn_images))[:k]
                mix = Path(tmp) / f"mix_{a:g}_{seed}.h5"
                _mixture_store(mix, real_store, syn_images[order], syn_masks[order])
                cfg = SegmenterConfig(steps=steps, batch_size=batch_size, seed=seed, device=device,
                                      negatives_per_lesion=negatives_per_lesion, ckpt_every=steps, log_every=max(1, steps // 10))
                run = train("segmenter", mix, Path(tmp) / "runs" / f"{a:g}_{seed}", cfg, progress=progress)
                det = _evaluate_detector(load_method(run, device=device), test_images, test_gts)
                rows.append({"amount": a, "n_synthetic": k, "seed": seed, "recall": det["recall"], "froc_auc": det["auc"],
                             "cpm": det["cpm"], "froc": {"fppi": det["fppi"], "sensitivity": det["sensitivity"]}})
    summary = []
    base = [r["recall"] for r in rows if r["amount"] == amounts[0]]
    for a in amounts:
        rs = [r for r in rows if r["amount"] == a]
        gains = [r["recall"] - b for r, b in zip(rs, base)]
        summary.append({"amount": a, "n_synthetic": rs[0]["n_synthetic"], "recall": _mean_ci([r["recall"] for r in rs]),
                        "froc_auc": _mean_ci([r["froc_auc"] for r in rs]), "cpm": _mean_ci([r["cpm"] for r in rs]),
                        "recall_gain_vs_real_only": _mean_ci(gains)})
    _plot(rows, summary, out)
    return {"detector": DETECTOR, "iou_threshold": 0.5, "n_real_train_lesions": n_real, "n_synthetic_available": int(len(syn_images)),
            "n_test_images": int(len(test_images)), "n_test_lesions": int(sum(len(g) for g in test_gts)),
            "steps": steps, "seeds": list(seeds), "amounts": list(amounts), "runs": rows, "summary": summary,
            "plots": ["downstream_recall.png", "downstream_froc.png"]}


def _plot(rows: list[dict], summary: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    xs = [s["n_synthetic"] for s in summary]
    ys = [s["recall"]["mean"] for s in summary]
    lo = [s["recall"]["mean"] - s["recall"]["ci"][0] if np.isfinite(s["recall"]["ci"][0]) else 0 for s in summary]
    ax.errorbar(xs, ys, yerr=lo, marker="o", capsize=3)
    ax.set_xlabel("synthetic lesions added to the real training set")
    ax.set_ylabel("recall (TPR) at IoU >= 0.5")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "downstream_recall.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    seed0 = rows[0]["seed"]
    for r in rows:
        if r["seed"] == seed0:
            ax.step(r["froc"]["fppi"], r["froc"]["sensitivity"], where="post", label=f"+{r['n_synthetic']} synthetic")
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(0, 8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "downstream_froc.png", dpi=110)
    plt.close(fig)
