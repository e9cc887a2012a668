"""Label fidelity: do generated lesions show the BI-RADS shape/margin they were generated for?

A classifier trained on real lesions (``mammosynth train classifier``), the *judge*, labels
every image of a synthetic set; per requested (shape, margin) category (the ``shape``/
``margin`` columns of ``manifest.csv``) we report its accuracy on the generated lesions, its
accuracy on the real test split for the same requested class (per-class recall: real test
lesions whose true margin is the requested margin, resp. shape) and the ratio generated /
real. A ratio near 1 means the generated lesions carry their label as recognisably as real
ones do.

The protocol (docs/evaluate.md): the judge must never have seen the generator's seeds or
training lesions, nor the real lesions its real accuracy is measured on. With the store's
splits: the generator learns from ``train`` and draws its seeds there, the judge learns from
``val`` (``train classifier --set train_split=val``), real accuracy is measured on ``test``.
:func:`label_fidelity` checks it by source id (the synthetic set's ``source_ids``, the
generator runs named in its manifest, the judge's ``config.json``) and refuses an overlap
unless ``allow_leakage``, which reports it flagged instead.

A judge head that was never trained (margin-only data has no shape labels) gives no numbers.

Per lesion type: mass (and non-mass) rows are judged on their requested shape/margin;
calcification rows (``lesion_type`` or ``category`` column of the manifest) on their requested
BI-RADS ``morphology``/``distribution`` by the judge's calcification heads, with the same
generated / real-test / ratio numbers under ``calcification`` and ``calcification_categories``.
A judge without trained calcification heads (no calcification labels in its training split, or
a run saved before those heads existed) reports them unavailable with the reason.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from mammosynth.data.birads import DISTRIBUTIONS, LESION_TYPES, MARGINS, MORPHOLOGIES, SHAPES
from mammosynth.errors import DataError

#: Calcification heads of the judge and their vocabularies.
CALC_LABELS: tuple[tuple[str, tuple[str, ...]], ...] = (("morphology", MORPHOLOGIES), ("distribution", DISTRIBUTIONS))

#: A reference line for the per-category margin ratio: generated lesions classified as the
#: requested margin at >= 80% of the real-test accuracy. This 0.8 is mammosynth's own choice,
#: not seed 000's: the paper reports no quantitative label fidelity (section 3.4 shows examples).
MARGIN_RATIO_REFERENCE = 0.8
REFERENCE_NOTE = ("0.8 is mammosynth's reference line, not a target from seed 000 "
                  "(the paper reports no quantitative label fidelity)")


class LabelPredictor(Protocol):
    """What label_fidelity needs from a classifier (BiradsClassifier implements it)."""

    data_info: dict[str, Any]

    def predict_labels(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]: ...


def _load_classifier(run: str | Path | LabelPredictor, device: str) -> tuple[LabelPredictor, str]:
    if not isinstance(run, (str, Path)):
        return run, getattr(run, "name", type(run).__name__)
    from mammosynth.train.run import load_method

    method = load_method(str(run), device=device, expect="classifier")
    return method, str(getattr(method, "run_dir", run))


def _read_synthetic(synthetic_dir: Path, size: int | None,
                    lesion_type: str | None = None) -> tuple[list[dict[str, str]], torch.Tensor]:
    from mammosynth.evaluate.synthetic import row_label, row_lesion_type
    from mammosynth.synth.writer import load_png, read_manifest

    manifest = synthetic_dir / "manifest.csv"
    if not manifest.exists():
        raise DataError(f"{manifest}: no manifest; is {synthetic_dir} a synthetic set written by mammosynth?")
    rows = read_manifest(synthetic_dir)
    if not rows:
        raise DataError(f"{manifest}: the synthetic set has no images")
    for row in rows:  # one place that says what each row is and asks for
        row["lesion_type"] = row_lesion_type(row, manifest)
        for key, _ in CALC_LABELS:
            row[key] = row_label(row, key) if row["lesion_type"] == "calcification" else ""
    if lesion_type is not None:
        present = sorted({r["lesion_type"] for r in rows})
        rows = [r for r in rows if r["lesion_type"] == lesion_type]
        if not rows:
            raise DataError(f"{manifest}: no synthetic image of lesion type {lesion_type!r} to judge (the set holds "
                            f"{', '.join(present)})")
    images = []
    for row in rows:
        path = synthetic_dir / row["file"]
        if not path.exists():
            raise DataError(f"{path}: listed in {manifest} but missing")
        for key, vocab in (("shape", SHAPES), ("margin", MARGINS)) + CALC_LABELS:
            if row.get(key) and row[key] not in vocab:
                raise DataError(f"{manifest}: {row['file']} has unknown {key} {row[key]!r}; expected one of {', '.join(vocab)}")
        img = torch.from_numpy(load_png(path))[None, None] * 2.0 - 1.0
        target = size or (images[0].shape[-1] if images else img.shape[-1])
        if img.shape[-2:] != (target, target):
            img = F.interpolate(img, size=(target, target), mode="bilinear", antialias=True, align_corners=False)
        images.append(img)
    return rows, torch.cat(images)


def _ratio(gen: float | None, real: float | None) -> float | None:
    if gen is None or real is None or real == 0:
        return None
    return gen / real


def _acc(pred: np.ndarray, target: int) -> float | None:
    return float((pred == target).mean()) if len(pred) else None


def judge_protocol(clf: LabelPredictor, rows: list[dict[str, str]], real_store: str | Path, split: str) -> dict[str, Any]:
    """Check the label-fidelity protocol: what the judge learned from must not overlap the
    synthetic set's seeds, its generators' training lesions, or the real evaluation lesions.

    Returns ``{"checked", "clean", "problems": [str], "judge": {"store", "split", "n"},
    "real": {"store", "split", "n"}, "generators": [...], "overlap": {...}}``; ``checked`` is
    False (and nothing refused) when the judge does not say what it was trained on."""
    from mammosynth.evaluate.leakage import examples, run_training_lesions, split_source_ids, synthetic_sources

    info = dict(getattr(clf, "data_info", {}) or {})
    cfg = getattr(clf, "cfg", None)
    judge_store = info.get("store_path") or info.get("path")
    judge_split = info.get("train_split") or getattr(cfg, "train_split", None)
    real_ids = split_source_ids(real_store, [split])
    out: dict[str, Any] = {"checked": False, "clean": True, "problems": [],
                           "real": {"store": str(real_store), "split": split, "n": len(real_ids)}}
    if not judge_store or not judge_split or not Path(judge_store).is_file():
        out["note"] = ("the judge does not say which lesions it was trained on (no store or train_split in its "
                       "config.json): the protocol could not be checked")
        return out
    judge_ids = set(split_source_ids(judge_store, [judge_split]))
    seeds = set(synthetic_sources(rows))
    generators = []
    gen_ids: set[str] = set()
    for run in sorted({r.get("run", "") for r in rows if r.get("run")}):
        g = run_training_lesions(run)
        generators.append({k: (len(v) if k == "ids" else v) for k, v in g.items()})
        gen_ids |= g.get("ids", set())
    out["checked"] = True
    out["judge"] = {"store": str(judge_store), "split": judge_split, "n": len(judge_ids)}
    out["generators"] = generators
    overlap = {"judge_and_seeds": judge_ids & seeds, "judge_and_generator_training": judge_ids & gen_ids,
               "judge_and_real": judge_ids & set(real_ids)}
    out["overlap"] = {k: {"n": len(v), "examples": examples(v)} for k, v in overlap.items()}
    what = {"judge_and_seeds": f"{{n}} of the synthetic set's {len(seeds)} seed lesions",
            "judge_and_generator_training": "{n} lesions the generator learned from",
            "judge_and_real": f"{{n}} of the {len(real_ids)} real {split!r} lesions its real accuracy is measured on"}
    for k, v in overlap.items():
        if v:
            out["problems"].append(f"the judge (split {judge_split!r} of {judge_store}) was trained on "
                                   + what[k].format(n=len(v)) + f" (e.g. {', '.join(examples(v)[:3])})")
    out["clean"] = not out["problems"]
    return out


def label_fidelity(classifier_run: str | Path | LabelPredictor, synthetic_dir: str | Path,
                   real_store: str | Path | None = None, split: str = "test", device: str = "auto",
                   allow_leakage: bool = False, lesion_type: str | None = None) -> dict[str, Any]:
    """Per requested category: the judge's accuracy on generated lesions, on the real
    ``split`` (default test) for the same class, and their ratio. Returns a JSON-ready dict::

        {"classifier", "synthetic", "real_store", "split", "lesion_type", "n_generated", "n_real",
         "protocol": {...judge_protocol...}, "leakage_allowed",
         "judge_untrained_heads": {head: why},
         "real": {"shape_accuracy", "margin_accuracy"},
         "generated": {"shape_accuracy", "margin_accuracy"},      # over rows that request it
         "margin_ratio", "shape_ratio",                           # overall generated / real
         "margin_ratio_reference", "reference_note",             # 0.8: ours, not seed 000's
         "categories_at_reference", "categories_judged",         # margin ratio >= reference, per category
         "categories": [{"lesion_type", "shape", "margin", "n_generated",
                         "generated_margin_accuracy", "real_margin_accuracy", "n_real_margin", "margin_ratio",
                         "generated_shape_accuracy", "real_shape_accuracy", "n_real_shape", "shape_ratio",
                         "margin_ratio_at_reference"}, ...],     # mass and non-mass rows
         "calcification": {"n_generated", "n_real", "available", "reason",
                           "real": {"morphology_accuracy", "distribution_accuracy"},
                           "generated": {...}, "morphology_ratio", "distribution_ratio"},
         "calcification_categories": [{"lesion_type", "morphology", "distribution", "n_generated",
                                       "generated_morphology_accuracy", "real_morphology_accuracy",
                                       "n_real_morphology", "morphology_ratio", ... distribution ...}, ...]}

    ``real_store`` defaults to the store the classifier was trained on. ``lesion_type`` keeps
    only the synthetic rows and real lesions of that type. Accuracies are None where there is
    nothing to measure (no requested label, no real lesion of that class, or a judge head that
    was never trained). Raises :class:`DataError` when the protocol is broken
    (:func:`judge_protocol`) unless ``allow_leakage``, which reports it under ``protocol``.
    """
    from mammosynth.data.store import read_lesion_split

    if lesion_type is not None and lesion_type not in LESION_TYPES:
        raise DataError(f"unknown lesion type {lesion_type!r}; expected one of {', '.join(LESION_TYPES)}")
    clf, clf_name = _load_classifier(classifier_run, device)
    synthetic_dir = Path(synthetic_dir)
    rows, images = _read_synthetic(synthetic_dir, getattr(clf, "patch_size", None), lesion_type)
    store_path = real_store or clf.data_info.get("store_path")
    if not store_path:
        raise DataError("no real store to compare with: pass real_store (the classifier run does not name one)")
    les = read_lesion_split(store_path, split, "measure real accuracy on")
    real_types = np.asarray(les.lesion_type if les.lesion_type is not None else ["mass"] * len(les.index))
    if lesion_type is not None:
        keep = real_types == lesion_type
        if not keep.any():
            raise DataError(f"{store_path}: split {split!r} has no {lesion_type} lesion to measure real accuracy on")
    else:
        keep = np.ones(len(real_types), bool)
    protocol = judge_protocol(clf, rows, store_path, split)
    if not protocol["clean"] and not allow_leakage:
        raise DataError(f"{synthetic_dir}: label fidelity would be biased: {'; '.join(protocol['problems'])}. Train the "
                        "judge on a split the generator never saw (`mammosynth train classifier --set train_split=val`; "
                        "docs/evaluate.md) or pass --allow-leakage to report the numbers flagged as leaked")
    untrained = dict(getattr(clf, "untrained_heads", {}) or {})
    real_images = torch.from_numpy(les.patch[keep]).unsqueeze(1) * 2.0 - 1.0
    real_true = {"shape": les.shape[keep], "margin": les.margin[keep]}
    for key, _ in CALC_LABELS:
        col = getattr(les, key, None)
        real_true[key] = np.full(int(keep.sum()), -1, np.int64) if col is None else np.asarray(col)[keep]
    real_pred, gen_pred, calc_reason = _predict(clf, real_images, images, untrained)

    calc_rows = [i for i, r in enumerate(rows) if r["lesion_type"] == "calcification"]
    mass_rows = [i for i, r in enumerate(rows) if r["lesion_type"] != "calcification"]
    categories = _categories(rows, mass_rows, ("shape", SHAPES), ("margin", MARGINS), gen_pred, real_pred, real_true, untrained)
    for c in categories:
        ratio = c["margin_ratio"]
        c["margin_ratio_at_reference"] = None if ratio is None else bool(ratio >= MARGIN_RATIO_REFERENCE)
    calc_categories = _categories(rows, calc_rows, *CALC_LABELS, gen_pred, real_pred, real_true, untrained)

    def gen_overall(col: str, vocab: tuple[str, ...], among: list[int]) -> float | None:
        sel = [i for i in among if rows[i].get(col)]
        if not sel or col in untrained or col not in gen_pred:
            return None
        want = np.asarray([vocab.index(rows[i][col]) for i in sel])
        return float((gen_pred[col][np.asarray(sel)] == want).mean())

    def real_overall(head: str) -> float | None:
        known = real_true[head] >= 0
        if not known.any() or head in untrained or head not in real_pred:
            return None
        return float((real_pred[head][known] == real_true[head][known]).mean())

    real_acc = {"shape_accuracy": real_overall("shape"), "margin_accuracy": real_overall("margin")}
    gen_acc = {"shape_accuracy": gen_overall("shape", SHAPES, mass_rows), "margin_accuracy": gen_overall("margin", MARGINS, mass_rows)}
    calc_real = {f"{k}_accuracy": real_overall(k) for k, _ in CALC_LABELS}
    calc_gen = {f"{k}_accuracy": gen_overall(k, v, calc_rows) for k, v in CALC_LABELS}
    n_real_calc = int((real_types[keep] == "calcification").sum())
    if not calc_rows:
        calc_why = "no calcification row in the synthetic set"
    elif calc_reason:
        calc_why = calc_reason
    elif not any(rows[i].get(k) for i in calc_rows for k, _ in CALC_LABELS):
        calc_why = "no calcification row requests a morphology or distribution (manifest columns empty)"
    else:
        calc_why = None
    judged = [c for c in categories if c["margin_ratio_at_reference"] is not None]
    return {
        "classifier": clf_name,
        "synthetic": str(synthetic_dir),
        "real_store": str(store_path),
        "split": split,
        "lesion_type": lesion_type or "all",
        "n_generated": len(rows),
        "n_real": int(keep.sum()),
        "protocol": protocol,
        "leakage_allowed": bool(allow_leakage),
        "leaked": not protocol["clean"],
        "judge_untrained_heads": untrained,
        "real": real_acc,
        "generated": gen_acc,
        # overall ratios: generated accuracy over all requesting rows / real accuracy over the split
        "margin_ratio": _ratio(gen_acc["margin_accuracy"], real_acc["margin_accuracy"]),
        "shape_ratio": _ratio(gen_acc["shape_accuracy"], real_acc["shape_accuracy"]),
        "margin_ratio_reference": MARGIN_RATIO_REFERENCE,
        "reference_note": REFERENCE_NOTE,
        "categories_at_reference": sum(bool(c["margin_ratio_at_reference"]) for c in judged),
        "categories_judged": len(judged),
        "categories": categories,
        "calcification": {
            "n_generated": len(calc_rows), "n_real": n_real_calc, "available": calc_why is None, "reason": calc_why,
            "real": calc_real, "generated": calc_gen,
            **{f"{k}_ratio": _ratio(calc_gen[f"{k}_accuracy"], calc_real[f"{k}_accuracy"]) for k, _ in CALC_LABELS},
        },
        "calcification_categories": calc_categories,
    }


def _predict(clf: LabelPredictor, real_images: torch.Tensor, images: torch.Tensor,
             untrained: dict[str, str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str | None]:
    """Predictions of every head the judge has on real and generated images, and why the
    calcification heads cannot judge (None when they can)."""
    if hasattr(clf, "predict_head_labels"):
        real_pred = dict(clf.predict_head_labels(real_images))
        gen_pred = dict(clf.predict_head_labels(images))
    else:  # a judge with shape/margin only (the LabelPredictor protocol's minimum)
        rs, rm = clf.predict_labels(real_images)
        gs, gm = clf.predict_labels(images)
        real_pred, gen_pred = {"shape": rs, "margin": rm}, {"shape": gs, "margin": gm}
    heads = [k for k, _ in CALC_LABELS]
    if not all(k in gen_pred for k in heads):
        return real_pred, gen_pred, f"the judge {getattr(clf, 'name', type(clf).__name__)!r} has no calcification heads"
    if all(k in untrained for k in heads):
        return real_pred, gen_pred, "; ".join(f"{k} head untrained: {untrained[k]}" for k in heads)
    return real_pred, gen_pred, None


def _categories(rows: list[dict[str, str]], among: list[int], first: tuple[str, tuple[str, ...]],
                second: tuple[str, tuple[str, ...]], gen_pred: dict, real_pred: dict, real_true: dict,
                untrained: dict[str, str]) -> list[dict[str, Any]]:
    """Per requested (first, second) label pair among rows ``among``: generated accuracy,
    real-test accuracy of the same class (per-class recall) and ratio, for each of the two heads."""
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for i in among:
        groups[(rows[i]["lesion_type"], rows[i].get(first[0]) or "", rows[i].get(second[0]) or "")].append(i)
    out = []
    for (ltype, a, b), idx in sorted(groups.items()):
        idx_arr = np.asarray(idx)
        entry: dict[str, Any] = {"lesion_type": ltype, first[0]: a or None, second[0]: b or None, "n_generated": len(idx)}
        for (key, vocab), term in ((second, b), (first, a)):
            if term and key in gen_pred and key in real_pred:
                t = vocab.index(term)
                sel = real_true[key] == t
                g, r = (None, None) if key in untrained else (_acc(gen_pred[key][idx_arr], t), _acc(real_pred[key][sel], t))
                entry.update({f"generated_{key}_accuracy": g, f"real_{key}_accuracy": r,
                              f"n_real_{key}": int(sel.sum()), f"{key}_ratio": _ratio(g, r)})
            else:
                entry.update({f"generated_{key}_accuracy": None, f"real_{key}_accuracy": None,
                              f"n_real_{key}": 0, f"{key}_ratio": None})
        out.append(entry)
    return out


def format_table(report: dict[str, Any]) -> str:
    """A Markdown table of the per-category numbers (for docs and the terminal)."""
    def f(v: Any) -> str:
        return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    lines = ["| shape | margin | n gen | margin acc gen | margin acc real (n) | ratio | shape acc gen | shape acc real (n) | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in report["categories"]:
        lines.append(f"| {f(c['shape'])} | {f(c['margin'])} | {c['n_generated']} | {f(c['generated_margin_accuracy'])} | "
                     f"{f(c['real_margin_accuracy'])} ({c['n_real_margin']}) | {f(c['margin_ratio'])} | "
                     f"{f(c['generated_shape_accuracy'])} | {f(c['real_shape_accuracy'])} ({c['n_real_shape']}) | {f(c['shape_ratio'])} |")
    return "\n".join(lines)


def format_calcification_table(report: dict[str, Any]) -> str:
    """A Markdown table of the per-category calcification numbers (morphology, distribution)."""
    def f(v: Any) -> str:
        return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    lines = ["| morphology | distribution | n gen | morphology acc gen | morphology acc real (n) | ratio | distribution acc gen | distribution acc real (n) | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in report.get("calcification_categories", []):
        lines.append(f"| {f(c['morphology'])} | {f(c['distribution'])} | {c['n_generated']} | {f(c['generated_morphology_accuracy'])} | "
                     f"{f(c['real_morphology_accuracy'])} ({c['n_real_morphology']}) | {f(c['morphology_ratio'])} | "
                     f"{f(c['generated_distribution_accuracy'])} | {f(c['real_distribution_accuracy'])} ({c['n_real_distribution']}) | "
                     f"{f(c['distribution_ratio'])} |")
    return "\n".join(lines)
