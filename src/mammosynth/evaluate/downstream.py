"""Downstream benefit (seed 001 sec. 4.5): train a mass detector on real data only and on real
data plus growing amounts of synthetic data, and evaluate each on one fixed real test split
with recall (TPR) at IoU >= 0.5, the FROC curve and its area, and COCO AP@0.5, over several
seeds, with t-based 95% CIs over the seeds.

Detectors (every result records which one ran):

- ``"unet"`` (default; CPU and GPU): the segmentation-based detector, the common design of
  mammography CAD: the ``segmenter`` U-Net, then connected components of its probability
  map, then boxes scored by the mean probability inside each component. Trained through the
  one generic trainer (``train("segmenter", ...)``).
- ``"retinanet"``: MONAI's RetinaNet (``monai.apps.detection``, ResNet-18 FPN, ATSS matcher,
  focal loss). It needs torchvision and MONAI; torchvision does not import with the CPU build
  of torch, so this option is for GPU machines that have both. Without them it raises a
  ConfigError.

Images are tiles of the store's patch size: real lesion patches (positives; ground-truth boxes
are the tight boxes of their masks, as in the COCO files of a synthetic set), lesion-free
tiles cut inside the breast of normal mammograms (negatives), and synthetic lesions framed
like the real patches (see ``evaluate/synthetic.py``). The test tiles and every detector's
detections can be written as COCO files (:func:`write_coco`) for pycocotools.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mammosynth.data.birads import Label
from mammosynth.data.records import LesionRecord
from mammosynth.data.store import Store, StoreWriter
from mammosynth.errors import ConfigError, DataError
from mammosynth.evaluate.detection import Detections, average_precision, boxes_from_probability, froc, froc_on_grid
from mammosynth.evaluate.synthetic import load_synthetic_patches
from mammosynth.io import atomic_path, write_json_atomic
from mammosynth.synth.writer import mask_bbox

DETECTORS = {
    "unet": "unet-segmentation (U-Net -> connected components -> boxes scored by mean probability)",
    "retinanet": "retinanet (MONAI RetinaNet, ResNet-18 FPN, ATSS matcher, focal loss)",
}
DETECTOR = DETECTORS["unet"]
_NONE = Label(None, None, "missing")


def check_detector(detector: str) -> str:
    """The detector's description; ConfigError when it is unknown or cannot run here."""
    if detector not in DETECTORS:
        raise ConfigError(f"unknown detector {detector!r}; choose one of: {', '.join(DETECTORS)}")
    if detector == "retinanet":
        try:
            import monai.apps.detection  # noqa: F401
            import torchvision  # noqa: F401
        except Exception as err:  # ImportError, or torchvision's operator-registration RuntimeError
            raise ConfigError(f"RetinaNet needs torchvision and monai ({type(err).__name__}: {err}); "
                              "use the default unet-segmentation detector on CPU (--detector unet)") from err
    return DETECTORS[detector]


def _mixture_store(path: Path, real_store: Path, synth_images: np.ndarray, synth_masks: np.ndarray) -> None:
    """A lesion-only store: the real training lesions plus the given synthetic lesions
    ((K,S,S) in [0,1], (K,S,S) bool), all in the train split. Negatives are cut from the real
    store's normals (SegmenterConfig.negatives_from), so mammograms are not copied per run."""
    with Store(real_store) as st, StoreWriter(path, patch_size=st.patch_size, normal_size=tuple(st.manifest["normal_size"])) as w:
        les = st.lesions(split="train")
        for k in range(len(les.index)):
            w.add(LesionRecord("real", les.source_id[k], les.patient_id[k], les.patch[k], les.mask[k], _NONE, _NONE, _NONE,
                               split_hint="train"))
        for k in range(len(synth_images)):
            w.add(LesionRecord("synthetic", f"syn{k}", f"syn{k}", synth_images[k], synth_masks[k], _NONE, _NONE, _NONE,
                               split_hint="train"))


def real_test_tiles(real_store: Path, seed: int = 0, negatives_per_lesion: float = 1.0) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Fixed real test set: test-split lesion patches + lesion-free tiles from test-split normals
    (or all normals when the test split has none). Returns images (N,1,S,S) in [-1,1] and
    ground-truth boxes per image."""
    from mammosynth.models.segmenter import NormalTiles

    with Store(real_store) as st:
        les = st.lesions(split="test")
        S = st.patch_size
        normal_split = "test" if len(st.split_indices("normals", "test")) else None
    images = [torch.from_numpy(p)[None] * 2 - 1 for p in les.patch]
    boxes = [mask_bbox(m) for m in les.mask]
    gts = [np.asarray([b], np.float64) if b else np.zeros((0, 4)) for b in boxes]
    n_neg = int(round(negatives_per_lesion * len(images)))
    if n_neg:
        tiles = NormalTiles(str(real_store), normal_split, S, n_neg, seed=seed + 991)
        for i in range(n_neg):
            images.append(tiles[i]["image"])
            gts.append(np.zeros((0, 4)))
    return torch.stack(images), gts


def detect_unet(method: Any, images: torch.Tensor, threshold: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Segmentation-based detection: (N,1,S,S) in [-1,1] -> per image (boxes (K,4) xywh, scores (K,))."""
    prob = method.predict(images)[:, 0].numpy()
    return [boxes_from_probability(p, threshold) for p in prob]


def score_detections(dets: Sequence[tuple[np.ndarray, np.ndarray]], gts: Sequence[np.ndarray]) -> dict:
    """FROC (recall at IoU >= 0.5, curve, area, CPM) and COCO AP@0.5 of per-image detections."""
    images = [Detections(b, s, g) for (b, s), g in zip(dets, gts)]
    r = froc(images)
    r["ap50"] = average_precision(images, 0.5)
    return r


def write_coco(gts: Sequence[np.ndarray], dets: Sequence[tuple[np.ndarray, np.ndarray]] | None, size: int | Sequence[tuple[int, int]],
               gt_path: str | Path, det_path: str | Path | None = None, names: Sequence[str] | None = None) -> None:
    """Ground truth as a COCO file (one category, "mass"; image ids 1..N) and, when given, the
    detections as a COCO results list (image_id, category_id, bbox xywh, score). ``size``: the
    side of every (square) image, or one (height, width) per image; ``names``: file names."""
    hw = [(size, size)] * len(gts) if isinstance(size, (int, np.integer)) else [tuple(int(v) for v in s) for s in size]
    images = [{"id": i + 1, "width": hw[i][1], "height": hw[i][0], "file_name": names[i] if names else f"test_{i:05d}.png"}
              for i in range(len(gts))]
    anns = []
    for i, g in enumerate(gts):
        for b in np.asarray(g, np.float64).reshape(-1, 4):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": [float(v) for v in b],
                         "area": float(b[2] * b[3]), "iscrowd": 0})
    write_json_atomic(gt_path, {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "mass"}]}, indent=None)
    if det_path is not None and dets is not None:
        res = [{"image_id": i + 1, "category_id": 1, "bbox": [float(v) for v in b], "score": float(sc)}
               for i, (boxes, scores) in enumerate(dets) for b, sc in zip(np.asarray(boxes).reshape(-1, 4), scores)]
        write_json_atomic(det_path, res, indent=None)


def _mean_ci(values: Sequence[float], bounds: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Mean and t-based 95% CI over seeds, clipped to the metric's ``bounds`` (NaN CI with
    fewer than two values)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return {"mean": float(v.mean()) if len(v) else float("nan"), "ci": [float("nan"), float("nan")], "n": len(v)}
    from scipy import stats

    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    lo, hi = np.clip([v.mean() - half, v.mean() + half], *bounds)
    return {"mean": float(v.mean()), "ci": [float(lo), float(hi)], "n": len(v)}


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
    detector: str = "unet",
    width: int = 16,
    depth: int = 3,
) -> dict:
    """Run the experiment. ``amounts``: synthetic lesions added, as a fraction of the real
    training lesions (0 = real only; capped at the synthetic lesions available). Each
    (amount, seed) trains one detector for ``steps`` steps from seed ``seed`` on its own random
    subset of synthetic lesions. Returns a JSON-ready dict; writes ``downstream_recall.png``,
    ``downstream_froc.png`` and COCO files under ``downstream_coco/`` into ``out_dir``."""
    description = check_detector(detector)
    if not len(seeds) or not len(amounts):
        raise ConfigError("downstream: need at least one seed and one amount")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    real_store = Path(real_store)
    with Store(real_store) as st:
        S = st.patch_size
        n_real = len(st.split_indices("lesions", "train"))
    syn = load_synthetic_patches(synthetic_dir, S)
    keep = syn.masks.any(axis=(1, 2))
    syn_images, syn_masks = syn.images[keep], syn.masks[keep]
    if max(amounts) > 0 and not len(syn_images):
        raise DataError(f"{synthetic_dir}: no synthetic image has a lesion mask, so none can be added to the training set")
    test_images, test_gts = real_test_tiles(real_store, negatives_per_lesion=negatives_per_lesion)
    if not sum(len(g) for g in test_gts):
        raise DataError(f"{real_store}: the test split has no lesions to detect")
    coco_dir = out / "downstream_coco"
    write_coco(test_gts, None, S, coco_dir / "test_gt.json")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mammosynth-downstream-") as tmp:
        for a in amounts:
            k = min(int(round(a * n_real)), len(syn_images))
            for seed in seeds:
                order = np.random.default_rng([seed, 5]).permutation(len(syn_images))[:k]
                mix = Path(tmp) / f"mix_{a:g}_{seed}.h5"
                _mixture_store(mix, real_store, syn_images[order], syn_masks[order])
                if detector == "unet":
                    from mammosynth.models.segmenter import SegmenterConfig
                    from mammosynth.train.run import load_method
                    from mammosynth.train.trainer import train

                    cfg = SegmenterConfig(steps=steps, batch_size=batch_size, seed=seed, device=device, width=width, depth=depth,
                                          negatives_per_lesion=negatives_per_lesion, negatives_from=str(real_store) if negatives_per_lesion else "",
                                          ema_decay=0.0, sample_every=0, ckpt_every=steps, log_every=max(1, steps // 10))
                    run = train("segmenter", mix, Path(tmp) / "runs" / f"{a:g}_{seed}", cfg, progress=progress)
                    dets = detect_unet(load_method(run, device=device), test_images)
                else:
                    dets = _retinanet_train_and_detect(mix, real_store, test_images, steps, batch_size, seed, device, negatives_per_lesion)
                write_coco(test_gts, dets, S, coco_dir / "test_gt.json", coco_dir / f"detections_{a:g}_seed{seed}.json")
                det = score_detections(dets, test_gts)
                rows.append({"amount": a, "n_synthetic": k, "seed": seed, "recall": det["recall"], "froc_auc": det["auc"],
                             "cpm": det["cpm"], "ap50": det["ap50"], "sensitivity_at": det["sensitivity_at"],
                             "froc": {"fppi": det["fppi"], "sensitivity": det["sensitivity"]}})
    summary = []
    base = {r["seed"]: r for r in rows if r["amount"] == amounts[0]}
    for a in amounts:
        rs = [r for r in rows if r["amount"] == a]
        summary.append({"amount": a, "n_synthetic": rs[0]["n_synthetic"],
                        **{key: _mean_ci([r[key] for r in rs]) for key in ("recall", "froc_auc", "cpm", "ap50")},
                        "recall_gain_vs_real_only": _mean_ci([r["recall"] - base[r["seed"]]["recall"] for r in rs], (-1.0, 1.0)),
                        "froc_auc_gain_vs_real_only": _mean_ci([r["froc_auc"] - base[r["seed"]]["froc_auc"] for r in rs], (-1.0, 1.0))})
    _plot(rows, summary, out)
    return {"detector": description, "detector_name": detector, "iou_threshold": 0.5, "n_real_train_lesions": n_real,
            "n_synthetic_available": int(len(syn_images)), "n_test_images": int(len(test_images)),
            "n_test_lesions": int(sum(len(g) for g in test_gts)), "steps": steps, "batch_size": batch_size,
            "seeds": list(seeds), "amounts": list(amounts), "ci_method": "t interval over seeds (95%); gains paired by seed",
            "runs": rows, "summary": summary, "coco_dir": "downstream_coco",
            "plots": ["downstream_recall.png", "downstream_froc.png"]}


def _retinanet_train_and_detect(store: Path, real_store: Path, test_images: torch.Tensor, steps: int, batch_size: int, seed: int,
                                device: str, negatives_per_lesion: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train MONAI's RetinaNet (2-D, ResNet-18 FPN, ATSS matcher, focal loss) on the tiles of
    ``store`` (boxes from the lesion masks) and detect on ``test_images`` (N,1,S,S) in [-1,1]."""
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.networks.retinanet_network import RetinaNet, resnet_fpn_feature_extractor
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
    from monai.networks.nets import resnet
    from torch.utils.data import DataLoader

    from mammosynth.models.segmenter import Segmenter, SegmenterConfig
    from mammosynth.train.distributed import resolve_device

    dev = resolve_device(device)
    torch.manual_seed(seed)
    S = test_images.shape[-1]
    # the segmenter's dataset gives the same lesion + negative tiles as the U-Net detector sees
    data = Segmenter(SegmenterConfig(negatives_per_lesion=negatives_per_lesion, negatives_from=str(real_store), seed=seed),
                     {"patch_size": S}).make_dataset(str(store), "train")
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=len(data) > batch_size,
                        generator=torch.Generator().manual_seed(seed))
    returned_layers = [1, 2]
    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=[1, 2, 4], base_anchor_shapes=[[8, 8], [16, 16], [24, 24]])
    backbone = resnet.ResNet(block=resnet.ResNetBlock, layers=[2, 2, 2, 2], block_inplanes=resnet.get_inplanes(),
                             n_input_channels=1, conv1_t_stride=[2, 2], conv1_t_size=[7, 7], spatial_dims=2)
    fe = resnet_fpn_feature_extractor(backbone, 2, pretrained_backbone=False, returned_layers=returned_layers,
                                      trainable_backbone_layers=None)
    net = RetinaNet(spatial_dims=2, num_classes=1, num_anchors=anchors.num_anchors_per_location()[0], feature_extractor=fe,
                    size_divisible=[2 * 2 * 2 ** max(returned_layers)] * 2)
    det = RetinaNetDetector(network=net, anchor_generator=anchors).to(dev)
    det.set_atss_matcher(num_candidates=4, center_in_gt=False)
    det.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)
    det.set_target_keys(box_key="box", label_key="label")
    det.set_box_selector_parameters(score_thresh=0.02, topk_candidates_per_level=1000, nms_thresh=0.22, detections_per_img=20)
    opt = torch.optim.SGD(det.network.parameters(), lr=0.01, momentum=0.9, weight_decay=3e-5, nesterov=True)
    step = 0
    det.train()
    while step < steps:
        for batch in loader:
            inputs, targets = [], []
            for x, m in zip(batch["image"], batch["mask"]):
                b = mask_bbox(m[0].numpy() > 0.5)
                box = torch.tensor([[b[0], b[1], b[0] + b[2], b[1] + b[3]]], dtype=torch.float32) if b else torch.zeros((0, 4))
                inputs.append(x.to(dev))
                targets.append({"box": box.to(dev), "label": torch.zeros(len(box), dtype=torch.long, device=dev)})
            losses = det(inputs, targets)
            loss = losses[det.cls_key] + losses[det.box_reg_key]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    det.eval()
    out = []
    with torch.no_grad():
        for x in test_images:
            o = det([x.to(dev)], use_inferer=False)[0]
            xyxy = o["box"].float().cpu().numpy().reshape(-1, 4)
            out.append((np.c_[xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], o["label_scores"].float().cpu().numpy()))
    return out


def _plot(rows: list[dict], summary: list[dict], out: Path) -> None:
    """``downstream_recall.png`` (recall vs synthetic added, mean and 95% CI over seeds, each
    seed's value as a dot) and ``downstream_froc.png`` (FROC curves averaged over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.5))
    xs = np.array([s["n_synthetic"] for s in summary], float)
    ys = np.array([s["recall"]["mean"] for s in summary])
    lo = np.array([s["recall"]["ci"][0] for s in summary], float)
    hi = np.array([s["recall"]["ci"][1] for s in summary], float)
    ok = np.isfinite(lo)
    ax.plot(xs, ys, marker="o", color="tab:blue", label="mean over seeds")
    if ok.any():
        ax.fill_between(xs[ok], lo[ok], hi[ok], color="tab:blue", alpha=0.2, label="95% CI")
    ax.scatter([r["n_synthetic"] for r in rows], [r["recall"] for r in rows], s=10, color="k", alpha=0.5, label="one seed", zorder=3)
    ax.set_xlabel("synthetic lesions added to the real training set")
    ax.set_ylabel("recall (TPR) at IoU >= 0.5")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out / "downstream_recall.png")
    fig, ax = plt.subplots(figsize=(5.0, 3.5))
    grid = np.linspace(0, 8, 401)
    for s in summary:
        curves = []
        for r in rows:
            if r["amount"] == s["amount"]:
                curves.append(froc_on_grid(r["froc"], grid))
        ax.step(grid, np.mean(curves, axis=0), where="post",
                label=f"+{s['n_synthetic']} synthetic (AUC {s['froc_auc']['mean']:.2f})")
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity (mean over seeds)")
    ax.set_xlim(0, 8)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out / "downstream_froc.png")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
