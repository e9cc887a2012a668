"""``study analyze``: the seeds' reader-study statistics over every saved answer.

Writes ``REPORT/metrics.json``, ``REPORT/answers.csv`` (one row per answer, with the truth),
``REPORT/report.html`` and its plots beside it (``roc.png``, ``levels.png``, ``realism.png``).

Which answers count where:
- accuracy, ROC/AUC, d' and realism means use each reader's *first* showing of each image;
- retest showings are used only for test-retest agreement (Sokal-Michener on the binary
  call of the first and the repeated showing of the same image by the same reader);
- a study still in progress is analysed as it stands (metrics say how many answers).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mammosynth.io import atomic_path, write_json_atomic, write_text_atomic
from mammosynth.study import db, stats

ANSWER_COLUMNS = (
    "reader", "position", "presentation_id", "item_id", "truth", "lesion_type", "origin", "is_retest",
    "level", "level_label", "p_real", "call", "correct", "realism", "elapsed_ms", "answered_at",
)
BOOTSTRAP_SEED = 0
N_BOOT = 2000


def _clean(obj: Any) -> Any:
    """NaN/inf -> None recursively, so metrics.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def _realism_summary(rows: list[dict[str, Any]], pooled: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group in ("real", "synthetic"):
        vals = np.array([r["realism"] for r in rows if r["truth"] == group and r["realism"] is not None], float)
        if pooled:  # images are the resampled unit: one image's scores from several readers correlate
            items = np.array([r["item_id"] for r in rows if r["truth"] == group and r["realism"] is not None])
            m, lo, hi = stats.mean_ci_cluster_bootstrap(vals, items, n_boot=N_BOOT, seed=BOOTSTRAP_SEED)
            method = "bootstrap over images"
        else:
            m, lo, hi = stats.mean_ci_t(vals)
            method = "student t"
        out[group] = {"n": int(vals.size), "mean": m, "ci95": [lo, hi], "ci_method": method}
    return out


def reader_metrics(rows: list[dict[str, Any]], retest_pairs: list[tuple[dict, dict]]) -> dict[str, Any]:
    """Metrics of one reader (or of pooled rows) from first-showing answer rows."""
    truth = np.array([r["truth"] == "real" for r in rows], bool)
    p = np.array([r["p_real"] for r in rows], float)
    auc, lo, hi = stats.auc_ci_delong(truth, p)
    blo, bhi = stats.auc_ci_bootstrap(truth, p, n_boot=N_BOOT, seed=BOOTSTRAP_SEED)
    dp = stats.d_prime(truth, p)
    first = np.array([a["p_real"] > stats.THRESHOLD for a, _ in retest_pairs], bool)
    second = np.array([b["p_real"] > stats.THRESHOLD for _, b in retest_pairs], bool)
    same_level = float(np.mean([a["level"] == b["level"] for a, b in retest_pairs])) if retest_pairs else float("nan")
    counts = {str(k): {"real": int(sum(1 for r in rows if r["level"] == k and r["truth"] == "real")),
                       "synthetic": int(sum(1 for r in rows if r["level"] == k and r["truth"] == "synthetic"))}
              for k in stats.LEVELS}
    return {
        "n_answers": int(truth.size),
        "n_real": int(truth.sum()),
        "n_synthetic": int((~truth).sum()),
        "accuracy": stats.accuracy(truth, p),
        "auc": auc,
        "auc_ci95_delong": [lo, hi],
        "auc_ci95_bootstrap": [blo, bhi],
        "d_prime": dp.d_prime,
        "criterion_c": dp.criterion_c,
        "hit_rate": dp.hit_rate,
        "false_alarm_rate": dp.false_alarm_rate,
        "hit_rate_corrected": dp.hit_rate_corrected,
        "false_alarm_rate_corrected": dp.false_alarm_rate_corrected,
        "roc": stats.roc_curve(truth, p) if truth.size else {"fpr": [], "tpr": [], "thresholds": []},
        "level_counts": counts,
        "retest": {
            "n_pairs": len(retest_pairs),
            "sokal_michener": stats.sokal_michener(first, second),
            "same_level": same_level,
        },
        "realism": _realism_summary(rows, pooled=False),
    }


def compute_metrics(study_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, answer rows) for a study folder; reads only, never writes the DB."""
    con, meta = db.open_study(study_dir)
    try:
        answers = db.all_answers(con)
        progress = [
            {"reader": r["name"], "answered": a, "total": t}
            for r in con.execute("SELECT reader_id, name FROM readers ORDER BY reader_id")
            for a, t, _ in [db.reader_progress(con, int(r["reader_id"]))]
        ]
    finally:
        con.close()
    item_types = meta.get("item_lesion_types") or {}  # studies created before lesion types: unknown
    for r in answers:
        r["lesion_type"] = item_types.get(r["item_id"], "unknown")
        r["level_label"] = stats.LEVELS[r["level"]][0]
        r["call"] = "real" if r["p_real"] > stats.THRESHOLD else "synthetic"
        r["correct"] = int(r["call"] == r["truth"])
    per_reader: list[dict[str, Any]] = []
    all_first: list[dict[str, Any]] = []
    all_pairs: list[tuple[dict, dict]] = []
    for prog in progress:
        rows = [r for r in answers if r["reader"] == prog["reader"]]
        first = [r for r in rows if not r["is_retest"]]
        by_item = {r["item_id"]: r for r in first}
        pairs = [(by_item[r["item_id"]], r) for r in rows if r["is_retest"] and r["item_id"] in by_item]
        m = reader_metrics(first, pairs)
        m.update(reader=prog["reader"], answered=prog["answered"], total=prog["total"])
        per_reader.append(m)
        all_first += first
        all_pairs += pairs
    pooled = reader_metrics(all_first, all_pairs)
    pooled["realism"] = _realism_summary(all_first, pooled=True)
    aucs = np.array([m["auc"] for m in per_reader if m["n_answers"]], float)
    pooled["mean_reader_auc"] = float(np.nanmean(aucs)) if aucs.size and np.isfinite(aucs).any() else float("nan")
    pooled["mean_reader_accuracy"] = (
        float(np.nanmean([m["accuracy"] for m in per_reader if m["n_answers"]])) if any(m["n_answers"] for m in per_reader) else float("nan")
    )
    by_type, by_type_skipped = _by_lesion_type(all_first, all_pairs)
    metrics = {
        "study": {k: meta.get(k) for k in ("created", "seed", "n_per_class", "retest", "realism_score", "image_shape", "notes",
                                           "simulated", "lesion_types")},
        "n_answers": len(answers),
        "levels": {str(k): {"label": lab, "p_real": pr} for k, (lab, pr) in stats.LEVELS.items()},
        "methods": {
            "positive_class": "real (score = P(real) from the six-level scale, seed 003)",
            "accuracy": "call real iff P(real) > 0.5",
            "auc": "Mann-Whitney U / (n_real n_synthetic), ties count 1/2",
            "auc_ci": f"DeLong normal 95% CI; also a percentile bootstrap ({N_BOOT} resamples of images within class, seed {BOOTSTRAP_SEED})",
            "d_prime": "Z(H) - Z(F) on the binary call, log-linear correction (Hautus 1995) on every reader",
            "test_retest": "Sokal-Michener (matches / pairs) of the binary call, first vs repeated showing",
            "realism": "mean 1-5 score per group; per reader Student-t 95% CI, pooled bootstrap over images",
            "answers_used": "first showings only; retest showings feed the test-retest agreement",
        },
        "readers": per_reader,
        "pooled": pooled,
        # pooled over readers, per lesion type (only when the study mixes types)
        "by_lesion_type": by_type,
        "by_lesion_type_skipped": by_type_skipped,
    }
    return _clean(metrics), answers


def _by_lesion_type(first: list[dict[str, Any]], pairs: list[tuple[dict, dict]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Pooled reader metrics per lesion type, when the answers cover more than one type; a type
    without both real and synthetic answers is listed with the reason instead."""
    types = sorted({r["lesion_type"] for r in first})
    if len(types) < 2:
        return {}, {}
    out: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for t in types:
        rows = [r for r in first if r["lesion_type"] == t]
        n_real = sum(r["truth"] == "real" for r in rows)
        if n_real == 0 or n_real == len(rows):
            skipped[t] = f"{n_real} real and {len(rows) - n_real} synthetic answers: AUC needs both"
            continue
        m = reader_metrics(rows, [(a, b) for a, b in pairs if a["lesion_type"] == t])
        m["realism"] = _realism_summary(rows, pooled=True)
        m.pop("roc", None)
        out[t] = m
    return out, skipped


def _plots(metrics: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    readers = [m for m in metrics["readers"] if m["n_answers"]]
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    for m in readers:
        auc = m["auc"]
        ax.plot(m["roc"]["fpr"], m["roc"]["tpr"], marker="o", ms=3, lw=1.5,
                label=f"{m['reader']} (AUC {auc:.2f})" if auc is not None else m["reader"])
    ax.set_xlabel("false positive rate (synthetic called real)")
    ax.set_ylabel("true positive rate (real called real)")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.set_aspect("equal")
    ax.set_title("ROC per reader")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(out / "roc.png", ".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    names.append("roc.png")

    counts = metrics["pooled"]["level_counts"]
    levels = [str(k) for k in stats.LEVELS]
    x = np.arange(len(levels))
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    ax.bar(x - 0.2, [counts[k]["real"] for k in levels], 0.4, label="real images", color="#4a9a6e")
    ax.bar(x + 0.2, [counts[k]["synthetic"] for k in levels], 0.4, label="synthetic images", color="#c9803a")
    ax.set_xticks(x, [f"{k}\nP={stats.LEVELS[int(k)][1]:.2f}" for k in levels], fontsize=8)
    ax.set_xlabel("answer (1 = extremely confident real ... 6 = extremely confident synthetic)")
    ax.set_ylabel("answers")
    ax.set_title("Confidence levels given, all readers")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out / "levels.png", ".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    names.append("levels.png")

    if metrics["study"].get("realism_score"):
        fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
        rows = metrics.get("_realism_values", {})
        scores = np.arange(1, 6)
        for off, group, color in ((-0.2, "real", "#4a9a6e"), (0.2, "synthetic", "#c9803a")):
            vals = np.asarray(rows.get(group, []), int)
            ax.bar(scores + off, [(vals == s).sum() for s in scores], 0.4, label=f"{group} images", color=color)
        ax.set_xticks(scores, [f"{s}\n{stats.REALISM_LABELS[s]}" for s in scores], fontsize=8)
        ax.set_ylabel("answers")
        ax.set_title("Realism scores, all readers")
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(out / "realism.png", ".png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        names.append("realism.png")
    return names


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _ci(pair: list[Any]) -> str:
    return f"[{_fmt(pair[0])}, {_fmt(pair[1])}]"


def _by_type_html(metrics: dict[str, Any]) -> str:
    by_type, skipped = metrics.get("by_lesion_type") or {}, metrics.get("by_lesion_type_skipped") or {}
    if not by_type and not skipped:
        return ""
    rows = "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in (
            html.escape(t), f"{m['n_real']} / {m['n_synthetic']}", _fmt(m["accuracy"]), _fmt(m["auc"]),
            _ci(m["auc_ci95_delong"]), _fmt(m["d_prime"]))) + "</tr>" for t, m in by_type.items())
    rows += "".join(f"<tr><td>{html.escape(t)}</td><td colspan=5>{html.escape(why)}</td></tr>" for t, why in skipped.items())
    return ("<h2>Per lesion type (all readers pooled)</h2><table><thead><tr><th>lesion type</th><th>answers real / synthetic</th>"
            f"<th>accuracy</th><th>AUC</th><th>95% CI (DeLong)</th><th>d&prime;</th></tr></thead><tbody>{rows}</tbody></table>\n")


def _html(metrics: dict[str, Any], plots: list[str]) -> str:
    rows = []
    for m in metrics["readers"] + [dict(metrics["pooled"], reader="all readers (pooled)", answered=metrics["n_answers"], total=None)]:
        rows.append(
            "<tr>" + "".join(f"<td>{c}</td>" for c in (
                _fmt(m["reader"]), f"{m['answered']}" + (f" / {m['total']}" if m.get("total") else ""),
                _fmt(m["accuracy"]), _fmt(m["auc"]), _ci(m["auc_ci95_delong"]), _ci(m["auc_ci95_bootstrap"]),
                _fmt(m["d_prime"]), _fmt(m["hit_rate"]), _fmt(m["false_alarm_rate"]),
                f"{_fmt(m['retest']['sokal_michener'])} (n={m['retest']['n_pairs']})",
                f"{_fmt(m['realism']['real']['mean'], 2)} {_ci(m['realism']['real']['ci95'])}",
                f"{_fmt(m['realism']['synthetic']['mean'], 2)} {_ci(m['realism']['synthetic']['ci95'])}",
            )) + "</tr>"
        )
    methods = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in metrics["methods"].items())
    imgs = "".join(f'<figure><img src="{p}" alt="{p}"></figure>' for p in plots)
    s = metrics["study"]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in (s.get("notes") or []))
    banner = ""
    if s.get("simulated"):
        banner = ('<p style="background:#fde8e8;border:1px solid #d66;padding:8px"><b>SIMULATED READERS</b>: '
                  f"these answers were generated by `study simulate` ({html.escape(json.dumps(s['simulated']))}), "
                  "not by people. Use them only to check the pipeline.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Reader study report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f2f2f2; }} td:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 560px; }}
</style></head><body>
<h1>Reader study: real vs synthetic</h1>
{banner}<p>Created {_fmt(s.get('created'))}; {_fmt(s.get('n_per_class'))} real + {_fmt(s.get('n_per_class'))} synthetic images,
{_fmt(s.get('retest'))} retest showings per reader, seed {_fmt(s.get('seed'))}; {metrics['n_answers']} answers saved.
AUC 0.5 / d&prime; 0 = readers could not tell real from synthetic.</p>
<ul>{notes}</ul>
<table><thead><tr><th>reader</th><th>answered</th><th>accuracy</th><th>AUC</th><th>95% CI (DeLong)</th>
<th>95% CI (bootstrap)</th><th>d&prime;</th><th>hit rate</th><th>false-alarm rate</th><th>test-retest (Sokal-Michener)</th>
<th>realism: real</th><th>realism: synthetic</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
{_by_type_html(metrics)}<p>Mean of per-reader AUCs: {_fmt(metrics['pooled'].get('mean_reader_auc'))};
mean of per-reader accuracies: {_fmt(metrics['pooled'].get('mean_reader_accuracy'))}.</p>
{imgs}
<h2>Methods</h2><ul>{methods}</ul>
<p>All answers: <a href="answers.csv">answers.csv</a>; all numbers: <a href="metrics.json">metrics.json</a>.</p>
</body></html>
"""


def analyze_study(study_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Compute the metrics and write metrics.json, answers.csv, the plots and report.html."""
    out = Path(out)
    metrics, answers = compute_metrics(study_dir)  # read first: a failed run leaves no empty report folder
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ANSWER_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(answers)
    write_text_atomic(out / "answers.csv", buf.getvalue())
    first = [a for a in answers if not a["is_retest"] and a["realism"] is not None]
    plot_input = dict(metrics, _realism_values={g: [a["realism"] for a in first if a["truth"] == g] for g in ("real", "synthetic")})
    plots = _plots(plot_input, out)
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "report.html", _html(metrics, plots))
    return metrics
