"""HTML report of ``mammosynth evaluate`` (``report.html`` beside ``metrics.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mammosynth.evaluate.html import HtmlReport

_EXPLAIN = {
    "feature_distances": "Frechet distance (FD) and kernel inception-style distance (KID) in ImageNet feature spaces of "
                         "VGG16 and EfficientNet-Lite0 (not Inception: these are not FID). The floor compares real train "
                         "with real test lesions; the ratio score/floor is 1 when synthetic lesions are as close to the test "
                         "set as held-out real ones.",
    "lpips": "Mean LPIPS distance between real test and synthetic lesions (seed 001, Table 1), with the official linear layers.",
    "prdc": "k-NN manifold precision (fidelity), recall (diversity), density and coverage (Naeem et al. 2020, k = 5).",
    "diversity": "1 - MS-SSIM over random pairs within a set: higher = more diverse. Compare synthetic with real.",
    "memorisation": "Distance from each synthetic lesion to its nearest real training lesion; near-copies are flagged.",
    "tsne": "t-SNE of real lesions, synthetic lesions and normal tissue (seed 003 protocol).",
    "two_sample": "A small CNN trained to tell real from synthetic; held-out ROC AUC with a bootstrap CI. 0.5 = indistinguishable.",
    "label_fidelity": "BI-RADS classifier accuracy on generated lesions vs on the real test split, per requested category.",
    "mask_fidelity": "Dice between the requested lesion mask and the lesion a segmenter (trained on real data) finds.",
    "downstream": "Mass detection trained on real only vs real + synthetic, tested on a fixed real split (seed 001 sec. 4.5).",
}
_TITLES = {
    "feature_distances": "Feature distances (FD / KID)", "lpips": "LPIPS", "prdc": "Precision, recall, density, coverage",
    "diversity": "Diversity (MS-SSIM)", "memorisation": "Memorisation", "tsne": "t-SNE", "two_sample": "Classifier two-sample test",
    "label_fidelity": "Label fidelity", "mask_fidelity": "Mask fidelity", "downstream": "Downstream detection",
}
_PLOTS = {
    "memorisation": [("memorisation_hist.png", "Nearest-real-neighbour distances"), ("memorisation_pairs.png", "Flagged near-copies: synthetic | nearest real")],
    "tsne": [("tsne.png", "t-SNE embedding")],
    "downstream": [("downstream_recall.png", "Recall vs synthetic lesions added (mean and 95% CI over seeds)"),
                   ("downstream_froc.png", "FROC curves (first seed)")],
}


def _flat(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            if k in {"fppi", "sensitivity", "runs", "froc", "embedding", "distances", "pairs", "categories"}:
                continue
            rows += _flat(v, f"{prefix}{k}." if prefix or True else k)
    elif isinstance(d, (list, tuple)) and len(d) <= 8 and all(not isinstance(x, (dict, list)) for x in d):
        rows.append((prefix.rstrip("."), ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in d)))
    elif not isinstance(d, (list, tuple)):
        rows.append((prefix.rstrip("."), d))
    return rows


def write_report(metrics: dict, out: str | Path) -> Path:
    out = Path(out)
    inp = metrics["inputs"]
    rep = HtmlReport("mammosynth evaluation",
                     f"real: {inp['real']} ({inp['n_real_train']} train / {inp['n_real_test']} test lesions) — "
                     f"synthetic: {inp['synthetic']} ({inp['n_synthetic']} images) — patch {inp['patch_size']} px")
    rep.h2("Summary")
    rep.table(["metric", "value"], list(metrics["summary"].items()))
    if metrics["skipped"]:
        rep.h2("Skipped")
        rep.table(["section", "why"], sorted(metrics["skipped"].items()))
    rep.h2("Samples")
    for name, cap in (("samples_real.png", "real test lesions"), ("samples_synthetic.png", "synthetic lesions")):
        if (out / name).exists():
            rep.figure(name, cap)
    for key, title in _TITLES.items():
        if key not in metrics["results"]:
            continue
        rep.h2(title)
        rep.p(_EXPLAIN[key])
        res = metrics["results"][key]
        if key == "label_fidelity" and res.get("categories"):
            cats = res["categories"]
            rep.table(["shape", "margin", "n", "margin acc. generated", "margin acc. real", "ratio", "ok (>= 0.8)"],
                      [(c.get("shape"), c.get("margin"), c.get("n_generated"), c.get("generated_margin_accuracy"),
                        c.get("real_margin_accuracy"), c.get("margin_ratio"), c.get("margin_ratio_ok")) for c in cats])
        if key == "downstream":
            rep.table(["synthetic added", "recall mean", "recall 95% CI", "FROC AUC", "CPM", "recall gain"],
                      [(s["n_synthetic"], s["recall"]["mean"], "{:.3f}-{:.3f}".format(*s["recall"]["ci"]), s["froc_auc"]["mean"],
                        s["cpm"]["mean"], s["recall_gain_vs_real_only"]["mean"]) for s in res["summary"]])
            rep.p(f"Detector: {res['detector']}.")
        else:
            rep.table(["quantity", "value"], _flat(res))
        for fname, cap in _PLOTS.get(key, []):
            if (out / fname).exists():
                rep.figure(fname, cap)
    rep.h2("Timing")
    rep.table(["section", "seconds"], list(metrics["seconds"].items()))
    return rep.write(out / "report.html")
