"""``mammosynth demo``: the whole flow on the built-in phantom, on a laptop CPU, in minutes.

phantom -> dataset file -> train mask DCGAN + infilling GAN (demo configs) -> generate masses
-> insert them into phantom normals -> quick evaluation -> ``report.html``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mammosynth.cli.common import console


@dataclass
class DemoSettings:
    out: Path
    seed: int = 0
    n_lesions: int = 400
    n_normals: int = 24
    patch_size: int = 64
    full_shape: tuple[int, int] = (768, 624)
    n_generate: int = 64
    n_insert: int = 8
    mask_steps: int | None = None  # None: the demo config's steps
    infill_steps: int | None = None
    evaluate: bool = True
    overrides: dict[str, list[str]] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float]] = []

    def run(self, name: str, what: str, fn: Callable[[], Any]) -> Any:
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        self.rows.append((name, what, dt))
        console.print(f"[green]done[/] {name} in {dt:.1f} s")
        return result


def run_demo(s: DemoSettings) -> Path:
    """Run every stage; returns the path of report.html."""
    from mammosynth.config import default_config_path, load_config
    from mammosynth.models import get_method
    from mammosynth.phantom import write_phantom_store
    from mammosynth.synth.insert import insert_lesions
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    from mammosynth.errors import DataError

    out = Path(s.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; give --out a new or demo folder")
    out.mkdir(parents=True, exist_ok=True)
    timer = _Timer()
    data = out / "data" / "phantom.h5"
    timer.run("phantom", f"{s.n_lesions} lesion patches ({s.patch_size}px) + {s.n_normals} normal mammograms",
              lambda: write_phantom_store(data, n_lesions=s.n_lesions, n_normals=s.n_normals, patch_size=s.patch_size,
                                          full_shape=s.full_shape, seed=s.seed, progress=True))

    def _train(name: str, steps: int | None) -> Path:
        cls = get_method(name)
        overrides = list(s.overrides.get(name, [])) + [f"seed={s.seed}"]
        if steps is not None:
            overrides.append(f"steps={steps}")
        cfg = load_config(cls.Config, default_config_path(name, "demo"), overrides)
        return train(name, data, out / "runs" / name, cfg, progress=True, config_source=f"{name}-demo.yaml")

    mask_run = timer.run("train mask-dcgan", "DCGAN on lesion masks (seed 001 eq. 2)", lambda: _train("mask-dcgan", s.mask_steps))
    infill_run = timer.run("train infill", "Tri-label infilling GAN, U-Net + PatchGAN (seed 001 eq. 3-5)",
                           lambda: _train("infill", s.infill_steps))
    from mammosynth.cli.common import write_samples

    infill = load_method(infill_run, device="auto")
    generated = out / "synthetic" / "infill"  # a re-run replaces the demo's own sets, each only once the new one is whole
    timer.run("generate", f"{s.n_generate} infilled lesion patches on training-split tissue (evaluated against held-out lesions)",
              lambda: write_samples(infill.generate(s.n_generate, s.seed), generated, "infill", str(infill_run), total=s.n_generate,
                                    overwrite=True))
    masks = load_method(mask_run, device="auto")
    inserted = out / "synthetic" / "inserted"
    timer.run("insert", f"{s.n_insert} phantom normals with one inserted mass each, COCO labels",
              lambda: insert_lesions(masks, infill, data, s.n_insert, inserted, seed=s.seed, mask_run=str(mask_run),
                                     infill_run=str(infill_run), overwrite=True))
    eval_dir = None
    if s.evaluate:
        eval_dir = out / "evaluation"
        ok = timer.run("evaluate", "quick evaluation of the generated lesions", lambda: _quick_evaluate(data, generated, eval_dir))
        if not ok:
            eval_dir = None
    study_dir = timer.run("reader study", "study create -> simulated readers (flagged) -> study analyze",
                          lambda: _demo_study(data, generated, out, s.seed))
    report = write_demo_report(out, data, mask_run, infill_run, generated, inserted, eval_dir, timer.rows, study_dir)
    console.rule()
    console.print(f"[bold green]demo finished[/] in {sum(r[2] for r in timer.rows):.0f} s. Report: [bold]{report}[/]")
    return report


def _demo_study(data: Path, generated: Path, out: Path, seed: int) -> Path | None:
    """A small reader study on the phantom: created exactly as for radiologists, then answered
    by simulated readers (marked as such in the study and its report) so it can be analysed.
    Serve it with ``mammosynth study serve`` to answer it yourself."""
    import shutil

    from mammosynth.study.analyze import analyze_study
    from mammosynth.study.create import create_study
    from mammosynth.study.simulate import simulate_readers

    study = out / "study"
    if study.exists():  # a re-run replaces the demo's own study
        shutil.rmtree(study)
    from mammosynth.data.store import Store
    from mammosynth.synth.writer import read_manifest

    with Store(data) as st:
        n_real = len(st.split_indices("lesions", "test"))
    per_class = max(1, min(10, n_real, len(read_manifest(generated))))
    created = create_study(data, generated, study, readers=2, n_per_class=per_class, retest=min(2, per_class), seed=seed)
    console.print(f"study with {len(created.invitations)} readers; answer it yourself with "
                  f"[bold]mammosynth study serve {study}[/] (links in {study / 'invitations.csv'})")
    simulate_readers(study, d_prime=1.0, seed=seed)
    analyze_study(study, out / "study_report")
    return out / "study_report"


def _quick_evaluate(data: Path, synthetic: Path, out: Path) -> bool:
    """Run ``evaluate`` in its quick mode if the evaluation package is present."""
    try:
        from mammosynth.evaluate.run import evaluate
    except ImportError:
        console.print("[yellow]evaluation module not available in this version; skipping")
        return False
    evaluate(real=data, synthetic=synthetic, out=out, quick=True)
    return True


# -- report -----------------------------------------------------------------------------

def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (the demo may run with no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curves_png(runs: dict[str, Path], path: Path) -> bool:
    plt = _pyplot()

    series = {name: _read_jsonl(run / "metrics.jsonl") for name, run in runs.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 3.6), squeeze=False)
    for ax, (name, rows) in zip(axes[0], series.items()):
        keys = sorted({k for r in rows for k in r if k.startswith("loss")})
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if k in r and r[k] is not None]
            if pts:
                ax.plot(*zip(*pts), label=k, lw=1.2)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _side_by_side_png(data: Path, generated: Path, path: Path, n: int = 8) -> None:
    plt = _pyplot()

    from mammosynth.data.store import Store
    from mammosynth.synth.writer import load_png, read_manifest

    rows = read_manifest(generated)[:n]
    with Store(data) as st:
        real = st.lesions(split="test")
    n = min(n, len(rows), len(real.index))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.5), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(real.patch[j], cmap="gray", vmin=0, vmax=1)
        axes[1, j].imshow(load_png(generated / rows[j]["file"]), cmap="gray", vmin=0, vmax=1)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("real", fontsize=10)
    axes[1, 0].set_ylabel("synthetic", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _inserted_png(inserted: Path, path: Path, n: int = 8) -> None:
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    from mammosynth.synth.writer import load_png

    coco = json.loads((inserted / "annotations.json").read_text())
    images = coco["images"][:n]
    if not images:
        return
    cols = min(4, len(images))
    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, im in zip(axes.ravel(), images):
        ax.imshow(load_png(inserted / im["file_name"]), cmap="gray", vmin=0, vmax=1)
        for a in coco["annotations"]:
            if a["image_id"] == im["id"]:
                x, y, w, h = a["bbox"]
                pad = 6
                ax.add_patch(Rectangle((x - pad, y - pad), w + 2 * pad, h + 2 * pad, fill=False, ec="#ffcc00", lw=1.4))
        ax.set_title(Path(im["file_name"]).name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _zoom_png(inserted: Path, path: Path, n: int = 8) -> None:
    """Crops around each inserted lesion: what a reader would look at."""
    plt = _pyplot()

    from mammosynth.synth.writer import load_png

    coco = json.loads((inserted / "annotations.json").read_text())
    anns = coco["annotations"][:n]
    if not anns:
        return
    by_id = {im["id"]: im for im in coco["images"]}
    fig, axes = plt.subplots(1, len(anns), figsize=(1.9 * len(anns), 2.1), squeeze=False)
    for ax, a in zip(axes[0], anns):
        img = load_png(inserted / by_id[a["image_id"]]["file_name"])
        x, y, w, h = (int(v) for v in a["bbox"])
        side = int(max(w, h) * 2.2)
        cx, cy = x + w // 2, y + h // 2
        y0, x0 = max(0, cy - side // 2), max(0, cx - side // 2)
        ax.imshow(img[y0:y0 + side, x0:x0 + side], cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_demo_report(out: Path, data: Path, mask_run: Path, infill_run: Path, generated: Path, inserted: Path,
                      eval_dir: Path | None, timings: list[tuple[str, str, float]], study_report: Path | None = None) -> Path:
    import shutil

    from mammosynth.data.store import Store
    from mammosynth.evaluate.html import HtmlReport

    files = out / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    rep = HtmlReport("mammosynth demo", "Built-in breast phantom -> mask DCGAN + infilling GAN (Shen et al. 2021) -> "
                                        "masses inserted into normal mammograms with COCO labels")
    rep.h2("What ran")
    rep.table(["stage", "what", "seconds"], [(a, b, round(c, 1)) for a, b, c in timings] +
              [("total", "", round(sum(t[2] for t in timings), 1))])
    with Store(data) as st:
        info = st.info()
    rep.p(f"Dataset {data.name}: {info['n_lesions']} lesions, {info['n_normals']} normal mammograms, "
          f"patch size {info['patch_size']} px; splits {info['splits']['lesions']}.")
    rep.h2("Inserted masses (boxes from annotations.json)")
    _inserted_png(inserted, files / "inserted.png")
    rep.figure("report_files/inserted.png", "Phantom normal mammograms, each with one synthetic mass; the yellow box is the COCO bbox (padded for visibility).")
    _zoom_png(inserted, files / "inserted_zoom.png")
    rep.figure("report_files/inserted_zoom.png", "Close-ups of the inserted masses.")
    rep.h2("Real and synthetic lesion patches")
    _side_by_side_png(data, generated, files / "real_vs_synthetic.png")
    rep.figure("report_files/real_vs_synthetic.png", "Top: real (phantom) test-split lesion patches. Bottom: infilling-GAN output on training-split tissue with its own masks (the held-out lesions above are what it is scored against).")
    rep.h2("Sample grids")
    for name, run in (("mask-dcgan", mask_run), ("infill", infill_run)):
        grids = sorted((run / "samples").glob("*.png"))
        if grids:
            dst = files / f"samples_{name}.png"
            shutil.copyfile(grids[-1], dst)
            rep.figure(f"report_files/{dst.name}", f"{name}: last sample grid ({grids[-1].name}), EMA generator.")
    rep.h2("Training curves")
    if _curves_png({"mask-dcgan": mask_run, "infill": infill_run}, files / "curves.png"):
        rep.figure("report_files/curves.png", "Losses logged in each run's metrics.jsonl.")
    if eval_dir is not None and (eval_dir / "report.html").exists():
        rep.h2("Evaluation")
        rel = eval_dir.relative_to(out)
        rep.raw(f'<p>Quick evaluation of the generated patches: <a href="{rel}/report.html">{rel}/report.html</a></p>')
        metrics_path = eval_dir / "metrics.json"
        if metrics_path.exists():
            summary = json.loads(metrics_path.read_text()).get("summary", {})
            if summary:
                rep.table(["metric", "value"], sorted(summary.items()))
    if study_report is not None and (study_report / "report.html").exists():
        rep.h2("Reader study")
        rel = study_report.relative_to(out)
        rep.raw(f'<p>A 2-reader study on these patches, answered by <b>simulated</b> readers so the analysis can be shown: '
                f'<a href="{rel}/report.html">{rel}/report.html</a>. Real readers: <code>mammosynth study serve {out.name}/study</code>.</p>')
    rep.h2("Files")
    rep.table(["what", "path"], [
        ("dataset", data.relative_to(out)), ("mask DCGAN run", mask_run.relative_to(out)),
        ("infill run", infill_run.relative_to(out)), ("generated patches", generated.relative_to(out)),
        ("inserted mammograms (COCO)", inserted.relative_to(out)),
    ])
    return rep.write(out / "report.html")
