"""``mammosynth evaluate``: every evaluation of a synthetic set in one report.

Sections (each records its own seconds; one that cannot run says why and is skipped, never
faked): feature distances (FD/KID in VGG16 and EfficientNet-Lite0 feature spaces, with the
real-train vs real-test floor), LPIPS (seed 001 Table 1), k-NN precision/recall/density/
coverage, MS-SSIM diversity, memorisation (nearest real training image), t-SNE (seed 003),
the classifier two-sample test, label fidelity (BI-RADS classifier), mask fidelity
(segmenter Dice) and, with ``downstream=True``, the detection experiment of seed 001 sec. 4.5.

Writes ``OUT/report.html``, ``OUT/metrics.json`` (every number) and PNG plots beside them.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mammosynth.data.store import Store
from mammosynth.errors import MammosynthError, WeightsError
from mammosynth.evaluate.synthetic import load_synthetic_patches
from mammosynth.io import write_json_atomic

log = logging.getLogger(__name__)


def _section(results: dict, skipped: dict, seconds: dict, name: str, fn: Callable[[], Any]) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = fn()
    except (WeightsError, MammosynthError, ValueError) as err:
        skipped[name] = str(err)
        log.warning("evaluate: %s skipped: %s", name, err)
    except Exception as err:  # an unexpected failure must not lose the other sections
        skipped[name] = f"failed: {type(err).__name__}: {err}"
        log.error("evaluate: %s failed\n%s", name, traceback.format_exc())
    seconds[name] = round(time.perf_counter() - t0, 2)


def evaluate(
    real: str | Path,
    synthetic: str | Path,
    out: str | Path,
    quick: bool = False,
    downstream: bool = False,
    classifier: str | Path | None = None,
    segmenter: str | Path | None = None,
    weights_dir: str | Path | None = None,
    max_images: int = 1000,
    seed: int = 0,
    device: str = "auto",
    downstream_steps: int = 300,
    downstream_seeds: tuple[int, ...] = (0, 1, 2),
) -> dict:
    """Evaluate the synthetic set ``synthetic`` against the store ``real``; returns metrics.json's dict.

    ``quick`` skips t-SNE's full protocol and uses fewer bootstrap resamples (for the demo).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    with Store(real) as st:
        S = st.patch_size
        rng = np.random.default_rng(seed)

        def take(split: str) -> np.ndarray:
            idx = st.split_indices("lesions", split)
            if len(idx) > max_images:
                idx = np.sort(rng.choice(idx, max_images, replace=False))
            return st.lesions(indices=idx).patch

        real_train, real_test = take("train"), take("test")
        normal_tiles = _normal_tiles(st, S, n=min(500, max_images), seed=seed)
    syn = load_synthetic_patches(synthetic, S, limit=max_images)
    if len(real_test) < 2 or len(real_train) < 2:
        raise MammosynthError(f"{real}: need at least 2 train and 2 test lesions to evaluate against (found {len(real_train)} and {len(real_test)})")
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    feats: dict[str, dict[str, np.ndarray]] = {}

    from mammosynth.evaluate import frechet, lpips

    _section(results, skipped, seconds, "feature_distances", lambda: frechet.feature_distance_suite(
        real_train, real_test, syn.images, weights_dir=weights_dir, device=None if device == "auto" else device,
        seed=seed, features=feats))
    for name, r in list(results.get("feature_distances", {}).items()):
        if isinstance(r, dict) and "skipped" in r:
            skipped[f"feature_distances.{name}"] = r["skipped"]
    _section(results, skipped, seconds, "lpips", lambda: {
        net: lpips.mean_lpips(real_test, syn.images, net=net, seed=seed, weights_dir=weights_dir).to_dict() for net in ("alex", "vgg")})
    _section(results, skipped, seconds, "prdc", lambda: _prdc(feats, seed))
    _section(results, skipped, seconds, "diversity", lambda: _diversity(real_test, syn.images, seed))
    _section(results, skipped, seconds, "memorisation", lambda: _memorisation(real_train, syn.images, out, feats, seed))
    _section(results, skipped, seconds, "tsne", lambda: _tsne(real_test, syn.images, normal_tiles, out, quick, seed))
    from mammosynth.evaluate.two_sample import classifier_two_sample_test

    _section(results, skipped, seconds, "two_sample", lambda: classifier_two_sample_test(
        real_test, syn.images, seed=seed, n_boot=200 if quick else 1000, epochs=10 if quick else 15))
    if classifier is not None:
        from mammosynth.evaluate.label_fidelity import label_fidelity

        _section(results, skipped, seconds, "label_fidelity", lambda: label_fidelity(classifier, synthetic, real_store=real, device=device))
    else:
        skipped["label_fidelity"] = "no --classifier run given (train one with `mammosynth train classifier`)"
    if segmenter is not None:
        _section(results, skipped, seconds, "mask_fidelity", lambda: mask_fidelity(segmenter, syn, real, device=device))
    else:
        skipped["mask_fidelity"] = "no --segmenter run given (train one with `mammosynth train segmenter`)"
    if downstream:
        from mammosynth.evaluate.downstream import downstream_detection

        _section(results, skipped, seconds, "downstream", lambda: downstream_detection(
            real, synthetic, out, steps=downstream_steps, seeds=downstream_seeds, device=device, progress=False))
    else:
        skipped["downstream"] = "not requested (pass --downstream)"
    _grid(real_test, syn.images, out / "samples.png", seed)
    metrics = {
        "inputs": {"real": str(real), "synthetic": str(synthetic), "patch_size": S, "n_real_train": int(len(real_train)),
                   "n_real_test": int(len(real_test)), "n_synthetic": int(len(syn.images)), "n_normal_tiles": int(len(normal_tiles)),
                   "seed": seed, "quick": quick},
        "summary": summarise(results),
        "results": results,
        "skipped": skipped,
        "seconds": {**seconds, "total": round(time.perf_counter() - t_start, 2)},
    }
    write_json_atomic(out / "metrics.json", metrics)
    from mammosynth.evaluate.report import write_report

    write_report(metrics, out)
    return metrics


def _normal_tiles(st: Store, size: int, n: int, seed: int) -> np.ndarray:
    """Lesion-free tissue tiles from normals (the third population of the seed-003 t-SNE)."""
    import torch

    from mammosynth.models.segmenter import tile_from_normal

    idx = st.split_indices("normals", None)
    if len(idx) == 0:
        return np.zeros((0, size, size), np.float32)
    rng = np.random.default_rng([seed, 17])
    tiles = []
    cache: dict[int, dict] = {}
    for _ in range(n):
        j = int(rng.choice(idx))
        if j not in cache:
            nm = st.normal(j)
            cache = {j: {"image": torch.from_numpy(nm["image"])[None] * 2 - 1, "mask": torch.from_numpy(nm["breast_mask"].astype(np.float32))[None]}}
        tiles.append(((tile_from_normal(cache[j]["image"], cache[j]["mask"], size, rng)["image"][0] + 1) / 2).numpy())
    return np.stack(tiles)


def _prdc(feats: dict, seed: int) -> dict:
    from mammosynth.evaluate.prdc import prdc

    if not feats:
        raise WeightsError("no learned features were computed (feature-network weights missing), so PRDC has no feature space")
    out = {}
    for net, f in feats.items():
        r = prdc(f["test"], f["synthetic"], k=5)
        out[net] = r if isinstance(r, dict) else r.to_dict()
    return out


def _diversity(real: np.ndarray, synth: np.ndarray, seed: int) -> dict:
    from mammosynth.evaluate.diversity import ms_ssim_diversity

    def one(x):
        r = ms_ssim_diversity(x, seed=seed)
        return r if isinstance(r, dict) else r.to_dict()

    return {"real_test": one(real), "synthetic": one(synth)}


def _memorisation(real_train: np.ndarray, synth: np.ndarray, out: Path, feats: dict, seed: int) -> dict:
    from mammosynth.evaluate.memorisation import memorisation_report

    r = memorisation_report(real_train, synth, out_dir=out)
    return r if isinstance(r, dict) else r.to_dict()


def _tsne(real: np.ndarray, synth: np.ndarray, normal: np.ndarray, out: Path, quick: bool, seed: int) -> dict:
    from mammosynth.evaluate.tsne import tsne_plot

    r = tsne_plot(real, synth, normal, out / "tsne.png", seed=seed, quick=quick)
    return r if isinstance(r, dict) else r.to_dict()


def mask_fidelity(segmenter_run: str | Path, syn: Any, real_store: str | Path, device: str = "auto") -> dict:
    """Dice between the mask each synthetic lesion was asked to fill and the lesion the
    segmenter finds in it, next to the segmenter's Dice on the real test split."""
    import torch

    from mammosynth.models.segmenter import dice_coefficient
    from mammosynth.train.run import load_method

    seg = load_method(segmenter_run, device=device, expect="segmenter")
    has = syn.masks.any(axis=(1, 2))
    if not has.any():
        raise MammosynthError("the synthetic set has no lesion masks to compare against")
    x = torch.from_numpy(syn.images[has])[:, None] * 2 - 1
    pred = seg.predict(x)[:, 0].numpy() >= 0.5
    d_syn = [dice_coefficient(p, m) for p, m in zip(pred, syn.masks[has])]
    with Store(real_store) as st:
        les = st.lesions(split="test")
    pr = seg.predict(torch.from_numpy(les.patch)[:, None] * 2 - 1)[:, 0].numpy() >= 0.5
    d_real = [dice_coefficient(p, m) for p, m in zip(pr, les.mask)]
    ms, mr = float(np.mean(d_syn)), float(np.mean(d_real)) if d_real else float("nan")
    return {"dice_synthetic_mean": ms, "dice_synthetic_std": float(np.std(d_syn)), "n_synthetic": int(has.sum()),
            "dice_real_test_mean": mr, "n_real_test": len(d_real), "ratio": ms / mr if mr > 0 else None,
            "segmenter": str(segmenter_run)}


def summarise(results: dict) -> dict[str, Any]:
    """The headline numbers, flat (also shown at the top of the report)."""
    s: dict[str, Any] = {}
    for name, r in (results.get("feature_distances") or {}).items():
        if isinstance(r, dict) and "ratio" in r:
            s[f"{name} score"] = r["score"]
            s[f"{name} floor (real train vs test)"] = r["floor"]
            s[f"{name} ratio score/floor"] = r["ratio"]
            s[f"{r['kid_name']} score"] = r["kid_score"].get("mean")
    for net, r in (results.get("lpips") or {}).items():
        s[f"LPIPS-{net} mean real<->synthetic"] = r.get("mean")
    for net, r in (results.get("prdc") or {}).items():
        for k in ("precision", "recall", "density", "coverage"):
            if k in r:
                s[f"{k} ({net})"] = r[k]
    div = results.get("diversity") or {}
    for who in ("real_test", "synthetic"):
        if who in div:
            v = div[who].get("diversity", div[who].get("mean"))
            s[f"MS-SSIM diversity ({who})"] = v
    mem = results.get("memorisation") or {}
    if "n_flagged" in mem:
        s["near-copies flagged"] = mem["n_flagged"]
    ts = results.get("two_sample")
    if ts:
        s["two-sample AUC (0.5 = indistinguishable)"] = ts["auc"]
        s["two-sample AUC 95% CI"] = f"{ts['auc_ci'][0]:.3f}-{ts['auc_ci'][1]:.3f}"
    lf = results.get("label_fidelity")
    if lf:
        s["label fidelity: margin accuracy generated"] = lf.get("generated", {}).get("margin_accuracy")
        s["label fidelity: margin accuracy real test"] = lf.get("real", {}).get("margin_accuracy")
    mf = results.get("mask_fidelity")
    if mf:
        s["mask fidelity Dice (synthetic)"] = mf["dice_synthetic_mean"]
        s["segmenter Dice (real test)"] = mf["dice_real_test_mean"]
    ds = results.get("downstream")
    if ds:
        last = ds["summary"][-1]
        s["downstream recall (real only)"] = ds["summary"][0]["recall"]["mean"]
        s[f"downstream recall (+{last['n_synthetic']} synthetic)"] = last["recall"]["mean"]
        s["downstream recall gain"] = last["recall_gain_vs_real_only"]["mean"]
        s["detector"] = ds["detector"]
    return s


def _grid(real: np.ndarray, synth: np.ndarray, path: Path, seed: int, n: int = 16) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, n // 2, figsize=(n * 0.8, 2.0 * 2), squeeze=False)
    fig2, axes2 = plt.subplots(2, n // 2, figsize=(n * 0.8, 2.0 * 2), squeeze=False)
    for arr, axs, f, title in ((real, axes, fig, "real"), (synth, axes2, fig2, "synthetic")):
        pick = rng.choice(len(arr), min(n, len(arr)), replace=False)
        for ax in axs.ravel():
            ax.axis("off")
        for ax, k in zip(axs.ravel(), pick):
            ax.imshow(arr[k], cmap="gray", vmin=0, vmax=1)
        f.suptitle(title)
        f.tight_layout()
    fig.savefig(path.with_name("samples_real.png"), dpi=100)
    fig2.savefig(path.with_name("samples_synthetic.png"), dpi=100)
    plt.close(fig)
    plt.close(fig2)
