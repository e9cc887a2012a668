"""HTML report of ``mammosynth evaluate`` (``report.html`` beside ``metrics.json``).

Every section of :data:`SECTIONS` appears: with its numbers and plots
when it ran, or with the reason it was skipped. Numbers come from the metrics dict only, so
the page and metrics.json always agree.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from mammosynth.evaluate.html import HtmlReport

#: Every section, in report order (metrics.json has each under "results" or "skipped").
SECTIONS = ("feature_distances", "lpips", "prdc", "diversity", "memorisation", "tsne", "two_sample",
            "label_fidelity", "mask_fidelity", "downstream")

_EXPLAIN = {
    "feature_distances": "Frechet distance (FD) and kernel distance (KID, unbiased MMD^2 with a cubic polynomial kernel) "
                         "between Gaussian fits of ImageNet features: VGG16 conv5_3 and EfficientNet-Lite0 (not Inception, "
                         "so these are not FID; FID appears only when the pt_inception weights were imported). The floor "
                         "compares real train with real test lesions; the ratio score/floor is 1 when synthetic lesions are "
                         "as close to the test set as held-out real ones, and grows as they drift away. FD-pixels16 is the "
                         "same on 16x16 downsampled pixels and needs no weights.",
    "lpips": "Mean LPIPS distance (official v0.1 linear layers) over all pairs of 100 real test and 100 synthetic lesions, "
             "as in seed 001 Table 1. 0 = perceptually identical; compare across models on the same real set.",
    "prdc": "k-NN manifold precision (share of synthetic lesions inside the real manifold: fidelity), recall (share of real "
            "lesions inside the synthetic manifold: diversity), density and coverage (Naeem et al. 2020, k = 5), in each "
            "ImageNet feature space, synthetic vs real test. Density about 1 and coverage near that of real data are good.",
    "diversity": "1 - MS-SSIM over random pairs within a set: higher = more diverse. Synthetic far below real test means "
                 "mode collapse.",
    "memorisation": "Distance from each synthetic lesion to its nearest real training lesion (RMS pixels, minimum over "
                    "flips/rotations). A synthetic lesion closer than the 1st percentile of training-to-training "
                    "nearest-neighbour distances is flagged as a near-copy and shown beside its neighbour.",
    "tsne": "t-SNE of pixel vectors of real lesions, synthetic lesions and normal tissue (seed 003 protocol: up to 500 "
            "per group, perplexity capped by the sample count). Synthetic points mixed among real ones is good; a "
            "separate synthetic island means the generator has a tell.",
    "two_sample": "Classifier two-sample test: small CNNs learn to tell held-out real lesions (val + test) from synthetic "
                  "ones, k-fold cross-fitted so every image is scored once by a CNN that never trained on it; ROC AUC over "
                  "all out-of-fold scores with a bootstrap 95% CI (over images, or groups), and balanced accuracy at a "
                  "threshold chosen on the training folds. 0.5 = indistinguishable, 1.0 = always told apart. The "
                  "automatic stand-in for a reader study.",
    "label_fidelity": "The BI-RADS classifier (the judge, trained on real lesions the generator never saw: the val split) "
                      "applied to generated lesions: accuracy of the requested shape/margin on generated lesions vs on real "
                      "test lesions of the same category. A ratio near 1 means the generator draws what it was asked for as "
                      "recognisably as nature does. The 0.8 reference line is mammosynth's, not seed 000's.",
    "mask_fidelity": "A U-Net segmenter trained on real lesions segments each synthetic image; Dice between the mask the "
                     "lesion was asked to fill and the segmented lesion. The segmenter's Dice on real test lesions is the "
                     "ceiling to compare with.",
    "downstream": "Mass detection trained on real only vs real + synthetic lesions, tested on one fixed real split of lesion "
                  "patches and lesion-free normal tiles (seed 001 sec. 4.5): recall (TPR) at IoU >= 0.5, FROC area (mean "
                  "sensitivity over 0-8 false positives per image), CPM and AP@0.5; mean and 95% CI over seeds, gains "
                  "paired by seed.",
}
_TITLES = {
    "feature_distances": "Feature distances (FD / KID)", "lpips": "LPIPS", "prdc": "Precision, recall, density, coverage",
    "diversity": "Diversity (MS-SSIM)", "memorisation": "Memorisation", "tsne": "t-SNE", "two_sample": "Classifier two-sample test",
    "label_fidelity": "Label fidelity", "mask_fidelity": "Mask fidelity", "downstream": "Downstream detection",
}
_PLOTS = {
    "memorisation": [("memorisation_histogram.png", "Nearest-real-training-neighbour distances: synthetic vs real train"),
                     ("memorisation_pairs.png", "Flagged near-copies (or, when none, the closest pairs): synthetic | nearest real")],
    "tsne": [("tsne.png", "t-SNE embedding (red x real, green o synthetic, purple ^ normal tissue)")],
    "mask_fidelity": [("mask_fidelity.png", "Requested mask (green) vs segmented lesion (red), from worst to best Dice")],
    "downstream": [("downstream_recall.png", "Recall vs synthetic lesions added (mean and 95% CI over seeds; dots: seeds)"),
                   ("downstream_froc.png", "FROC curves, mean over seeds")],
}
_HIDE = {"fppi", "sensitivity", "runs", "froc", "embedding", "distances", "pairs", "categories", "flagged", "png",
         "histogram_png", "pairs_png", "plots"}


def _flat(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dict -> (dotted key, scalar) rows; long lists and plot names left out (they are in metrics.json)."""
    rows: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            if k in _HIDE:
                continue
            rows += _flat(v, f"{prefix}{k}.")
    elif isinstance(d, (list, tuple)):
        if len(d) <= 8 and all(not isinstance(x, (dict, list)) for x in d):
            rows.append((prefix.rstrip("."), ", ".join(_fmt(x) for x in d)))
    else:
        rows.append((prefix.rstrip("."), d))
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def _ci(c: dict) -> str:
    lo, hi = c.get("ci", [None, None])
    return "n/a (1 seed)" if lo is None or hi is None else f"{lo:.3f} to {hi:.3f}"


def write_report(metrics: dict, out: str | Path) -> Path:
    """Write ``out/report.html`` from the metrics dict of :func:`mammosynth.evaluate.run.evaluate`."""

    out = Path(out)
    inp = metrics["inputs"]
    lt = inp.get("lesion_type") or "all"
    rep = HtmlReport("mammosynth evaluation",
                     ("" if lt == "all" else f"{lt} lesions only (--lesion-type {lt}) — ") +
                     f"real: {inp['real']} ({inp['n_real_train']} train / {inp['n_real_test']} test lesions) — "
                     f"synthetic: {inp['synthetic']} ({inp['n_synthetic']} images, {inp.get('n_synthetic_with_mask', 0)} with masks)"
                     f" — patch {inp['patch_size']} px{' — quick mode' if inp.get('quick') else ''}")
    leak = metrics.get("leakage") or {}
    if leak.get("n_leaked"):
        rep.note(f"LEAKED: {leak['n_leaked']} of {leak['n_images']} synthetic images were made from lesions of the "
                 f"evaluation splits ({'/'.join(leak['splits'])}), e.g. {', '.join(leak['leaked_files'][:3])}; evaluated "
                 "only because --allow-leakage was given, so every comparison with those splits is flattered.")
    rep.h2("Summary")
    rep.table(["metric", "value"], [(k, _fmt(v)) for k, v in metrics["summary"].items()])
    ran = [s for s in SECTIONS if s in metrics["results"]]
    skipped = metrics["skipped"]
    rep.raw("<p>" + " ".join(
        f'<a href="#{s}" class="{"ok" if s in metrics["results"] else "bad"}">{html.escape(_TITLES[s])}'
        f'{"" if s in metrics["results"] else " (skipped)"}</a> ·' for s in SECTIONS).rstrip(" ·") + "</p>")
    if skipped:
        rep.h2("Skipped")
        rep.table(["section", "why"], sorted(skipped.items()))
    rep.h2("Samples")
    for name, cap in (("samples_real.png", "real test lesions"), ("samples_synthetic.png", "synthetic lesions")):
        if (out / name).exists():
            rep.figure(name, cap)
    for key in SECTIONS:
        rep.raw(f'<a id="{key}"></a>')
        rep.h2(_TITLES[key])
        rep.p(_EXPLAIN[key])
        if key not in ran:
            rep.note(f"skipped: {skipped.get(key, 'not run')}")
            continue
        res = metrics["results"][key]
        if key == "feature_distances":
            rows = []
            for name, r in res.items():
                if "skipped" in r:
                    rows.append((name, "skipped", r["skipped"], "", "", ""))
                else:
                    rows.append((name, _fmt(r["score"]), _fmt(r["floor"]), _fmt(r["ratio"]),
                                 f"{_fmt(r['kid_score'].get('mean'))} / {_fmt(r['kid_floor'].get('mean'))}", r["kid_name"]))
            rep.table(["space", "FD score (synthetic vs test)", "FD floor (train vs test)", "ratio", "KID score / floor", "KID"], rows)
        elif key == "label_fidelity" and res.get("categories"):
            rep.table(["quantity", "value"], [(k, _fmt(v)) for k, v in _flat(res)])
            rep.table(["shape", "margin", "n", "margin acc. generated", "margin acc. real", "ratio", "shape acc. generated",
                       "shape acc. real", "ratio", f"margin ratio >= {res.get('margin_ratio_reference', 0.8)} (our line)"],
                      [(c.get("shape"), c.get("margin"), c.get("n_generated"), _fmt(c.get("generated_margin_accuracy")),
                        _fmt(c.get("real_margin_accuracy")), _fmt(c.get("margin_ratio")), _fmt(c.get("generated_shape_accuracy")),
                        _fmt(c.get("real_shape_accuracy")), _fmt(c.get("shape_ratio")), _fmt(c.get("margin_ratio_at_reference")))
                       for c in res["categories"]])
        elif key == "downstream":
            rep.p(f"Detector: {res['detector']}. {res['n_real_train_lesions']} real training lesions; test set "
                  f"{res['n_test_images']} tiles with {res['n_test_lesions']} lesions; {res['steps']} steps per detector; "
                  f"seeds {', '.join(map(str, res['seeds']))}. COCO files of the test set and every run's detections: "
                  f"{res.get('coco_dir', '')}/.")
            rep.table(["synthetic added", "recall mean", "recall 95% CI", "recall gain (paired)", "gain 95% CI", "FROC AUC",
                       "CPM", "AP@0.5"],
                      [(s["n_synthetic"], _fmt(s["recall"]["mean"]), _ci(s["recall"]), _fmt(s["recall_gain_vs_real_only"]["mean"]),
                        _ci(s["recall_gain_vs_real_only"]), _fmt(s["froc_auc"]["mean"]), _fmt(s["cpm"]["mean"]),
                        _fmt(s["ap50"]["mean"])) for s in res["summary"]])
        else:
            rep.table(["quantity", "value"], [(k, _fmt(v)) for k, v in _flat(res)])
        for fname, cap in _PLOTS.get(key, []):
            if (out / fname).exists():
                rep.figure(fname, cap)
    _per_type(rep, metrics)
    rep.h2("Timing")
    cpu = metrics.get("cpu_seconds", {})
    rep.table(["section", "wall seconds", "CPU seconds"], [(k, v, cpu.get(k)) for k, v in metrics["seconds"].items()])
    return rep.write(out / "report.html")


def _per_type(rep: HtmlReport, metrics: dict) -> None:
    """The "Per lesion type" section: every summary number per type, side by side, and the
    types that were too small to evaluate on their own, with the reason."""
    by_type = metrics.get("results_by_type") or {}
    missing = metrics.get("types_not_evaluated") or {}
    counts = (metrics.get("inputs") or {}).get("n_by_type") or {}
    if not by_type and not missing:
        return
    rep.raw('<a id="by_type"></a>')
    rep.h2("Per lesion type")
    rep.p("Every section again on the lesions of one type only (real splits from the store's labels, synthetic images "
          "from their manifest row: lesion_type, else category, else mass). Features are those of the pooled pass, "
          "restricted to the type. Plots of each type are in by_type/<type>/.")
    types = list(by_type)
    if types:
        rep.table(["images"] + types, [(k, *(by_type[t][k] for t in types))
                                       for k in ("n_real_train", "n_real_test", "n_real_val", "n_synthetic")])
        keys: list[str] = []
        for t in types:
            keys += [k for k in by_type[t]["summary"] if k not in keys]
        rep.table(["metric"] + types, [(k, *(_fmt(by_type[t]["summary"].get(k)) for t in types)) for k in keys])
        skipped_rows = [(t, name, why) for t in types for name, why in sorted(by_type[t].get("skipped", {}).items())]
        if skipped_rows:
            rep.table(["type", "section skipped", "why"], skipped_rows)
        for t in types:
            for name, cap in (("tsne", "t-SNE"), ("memorisation", "memorisation pairs")):
                r = by_type[t]["results"].get(name) or {}
                png = r.get("png") or r.get("pairs_png")
                if png:
                    rep.figure(png, f"{t}: {cap}")
    if missing:
        rep.table(["type not evaluated on its own", "images (real train / test / val, synthetic)", "why"],
                  [(t, "/".join(str(counts.get(t, {}).get(k, 0)) for k in ("real_train", "real_test", "real_val"))
                    + f", {counts.get(t, {}).get('synthetic', 0)}", why) for t, why in missing.items()])
