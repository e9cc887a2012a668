"""Label fidelity: do generated lesions show the BI-RADS shape/margin they were generated for?

A classifier trained on real lesions (``mammosynth train classifier``) labels every image of
a synthetic set; per requested (shape, margin) category (the ``shape``/``margin`` columns
of ``manifest.csv``) we report its accuracy on the generated lesions, its accuracy on the
real test split for the same requested class (per-class recall: real test lesions whose
true margin is the requested margin, resp. shape) and the ratio generated / real. A ratio
near 1 means the generated lesions carry their label as recognisably as real ones do.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from mammosynth.data.birads import MARGINS, SHAPES
from mammosynth.errors import DataError

#: Seed-000 acceptance: generated lesions classified as the requested margin at >= 80% of
#: the real-test accuracy.
MARGIN_RATIO_TARGET = 0.8


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


def _read_synthetic(synthetic_dir: Path, size: int | None) -> tuple[list[dict[str, str]], torch.Tensor]:
    from mammosynth.synth.writer import load_png, read_manifest

    manifest = synthetic_dir / "manifest.csv"
    if not manifest.exists():
        raise DataError(f"{manifest}: no manifest; is {synthetic_dir} a synthetic set written by mammosynth?")
    rows = read_manifest(synthetic_dir)
    if not rows:
        raise DataError(f"{manifest}: the synthetic set has no images")
    images = []
    for row in rows:
        path = synthetic_dir / row["file"]
        if not path.exists():
            raise DataError(f"{path}: listed in {manifest} but missing")
        for key, vocab in (("shape", SHAPES), ("margin", MARGINS)):
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


def label_fidelity(classifier_run: str | Path | LabelPredictor, synthetic_dir: str | Path,
                   real_store: str | Path | None = None, split: str = "test", device: str = "auto") -> dict[str, Any]:
    """Per requested category: the classifier's accuracy on generated lesions, on the real
    ``split`` (default test) for the same class, and their ratio. Returns a JSON-ready dict::

        {"classifier", "synthetic", "real_store", "split", "n_generated", "n_real",
         "real": {"shape_accuracy", "margin_accuracy"},
         "generated": {"shape_accuracy", "margin_accuracy"},      # over rows that request it
         "margin_ratio", "shape_ratio", "margin_ratio_target",   # overall generated / real
         "categories_meeting_target", "categories_judged",       # margin ratio >= target, per category
         "categories": [{"shape", "margin", "n_generated",
                         "generated_margin_accuracy", "real_margin_accuracy", "n_real_margin", "margin_ratio",
                         "generated_shape_accuracy", "real_shape_accuracy", "n_real_shape", "shape_ratio",
                         "margin_ratio_ok"}, ...]}

    ``real_store`` defaults to the store the classifier was trained on. Accuracies are None
    where there is nothing to measure (no requested label, or no real lesion of that class).
    """
    from mammosynth.data.store import read_lesion_split

    clf, clf_name = _load_classifier(classifier_run, device)
    synthetic_dir = Path(synthetic_dir)
    rows, images = _read_synthetic(synthetic_dir, getattr(clf, "patch_size", None))
    store_path = real_store or clf.data_info.get("store_path")
    if not store_path:
        raise DataError("no real store to compare with: pass real_store (the classifier run does not name one)")
    les = read_lesion_split(store_path, split, "measure real accuracy on")
    real_images = torch.from_numpy(les.patch).unsqueeze(1) * 2.0 - 1.0
    real_s, real_m = clf.predict_labels(real_images)
    gen_s, gen_m = clf.predict_labels(images)

    known_s, known_m = les.shape >= 0, les.margin >= 0
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row.get("shape") or "", row.get("margin") or "")].append(i)

    categories = []
    for (shape, margin), idx in sorted(groups.items()):
        idx_arr = np.asarray(idx)
        entry: dict[str, Any] = {"shape": shape or None, "margin": margin or None, "n_generated": len(idx)}
        for key, term, vocab, gen_pred, real_pred, real_true in (
            ("margin", margin, MARGINS, gen_m, real_m, les.margin),
            ("shape", shape, SHAPES, gen_s, real_s, les.shape),
        ):
            if term:
                t = vocab.index(term)
                sel = real_true == t
                g, r = _acc(gen_pred[idx_arr], t), _acc(real_pred[sel], t)
                entry.update({f"generated_{key}_accuracy": g, f"real_{key}_accuracy": r,
                              f"n_real_{key}": int(sel.sum()), f"{key}_ratio": _ratio(g, r)})
            else:
                entry.update({f"generated_{key}_accuracy": None, f"real_{key}_accuracy": None,
                              f"n_real_{key}": 0, f"{key}_ratio": None})
        ratio = entry["margin_ratio"]
        entry["margin_ratio_ok"] = None if ratio is None else bool(ratio >= MARGIN_RATIO_TARGET)
        categories.append(entry)

    def gen_overall(col: str, pred: np.ndarray, vocab: tuple[str, ...]) -> float | None:
        sel = [i for i, r in enumerate(rows) if r.get(col)]
        if not sel:
            return None
        want = np.asarray([vocab.index(rows[i][col]) for i in sel])
        return float((pred[np.asarray(sel)] == want).mean())

    real_acc = {"shape_accuracy": float((real_s[known_s] == les.shape[known_s]).mean()) if known_s.any() else None,
                "margin_accuracy": float((real_m[known_m] == les.margin[known_m]).mean()) if known_m.any() else None}
    gen_acc = {"shape_accuracy": gen_overall("shape", gen_s, SHAPES), "margin_accuracy": gen_overall("margin", gen_m, MARGINS)}
    judged = [c for c in categories if c["margin_ratio_ok"] is not None]
    return {
        "classifier": clf_name,
        "synthetic": str(synthetic_dir),
        "real_store": str(store_path),
        "split": split,
        "n_generated": len(rows),
        "n_real": int(len(les.index)),
        "real": real_acc,
        "generated": gen_acc,
        # overall ratios: generated accuracy over all requesting rows / real accuracy over the split
        "margin_ratio": _ratio(gen_acc["margin_accuracy"], real_acc["margin_accuracy"]),
        "shape_ratio": _ratio(gen_acc["shape_accuracy"], real_acc["shape_accuracy"]),
        "margin_ratio_target": MARGIN_RATIO_TARGET,
        "categories_meeting_target": sum(bool(c["margin_ratio_ok"]) for c in judged),
        "categories_judged": len(judged),
        "categories": categories,
    }


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
