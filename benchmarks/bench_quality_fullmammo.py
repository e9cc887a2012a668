"""The quality benchmark's full-mammogram rows (issue 13 sect. 1): how realistic are the whole
normal mammograms that mask-embedding (seed 002) and StyleGAN (seed 004, ``data: normals``)
make, and does mask-embedding keep to the breast outline it is given?

    # every row: mask-embedding (default and paper recipe) and stylegan, on the phantom and on
    # the real mini-MIAS normals, at 128 x 64 (H x W)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quality_fullmammo.py --threads 1
    # one dataset / method / recipe
    .venv/bin/python benchmarks/bench_quality_fullmammo.py --datasets mias --methods mask-embedding --recipe paper
    .venv/bin/python benchmarks/bench_quality_fullmammo.py --table-only

Protocol. Generators train on a store's ``train`` normals and are scored against its held-out
(``val`` + ``test``) normals, never seen by the generator: the phantom (``write_phantom_store``,
seed 0, 160 normals at 512 x 416; 80/10/10 patient split) and the 138 real mini-MIAS normal
films (``mias`` source, 108 / 15 / 15). Every image is padded to the 2:1 aspect and resized as
mask-embedding's own data pipeline does (``PaddedNormalDataset``), real and synthetic alike.
mask-embedding draws ``--synth-per-real`` images for each held-out film's skin mask; StyleGAN,
which has no mask input, draws the same number from its own latents.

Scores: the fraction of each generated image's breast signal inside the mask it was given
(``evaluate.fullmammo.mask_adherence``; 1 = all inside, the target is >= 0.95 for every image),
beside the same score for the held-out real films and their own masks; FD and KID in VGG16 and
EfficientNet-Lite0 space as ratios to the real floor (two patient-disjoint halves of the held-out
films against each other, as ``bench_quality.feature_scores``), PRDC; the cross-fitted classifier
two-sample AUC (``evaluate.two_sample``, at 64 px, grouped by patient); train and sample time.

Rows go to ``benchmarks/results/quality_fullmammo.json``; the table in docs/quality.md between
``<!-- fullmammo-table -->`` markers is rebuilt from it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq  # noqa: E402

ROOT = bq.ROOT
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "quality_fullmammo.json"
TABLE_BEGIN, TABLE_END = "<!-- fullmammo-table -->", "<!-- /fullmammo-table -->"
SIZE = (128, 64)  # H x W: the mask-embedding demo's final size
#: method key -> (registered method, packaged config, fixed overrides)
METHODS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "mask-embedding": ("mask-embedding", "mask-embedding-demo.yaml", {"final_size": list(SIZE)}),
    "stylegan": ("stylegan", "stylegan-demo.yaml", {"data": "normals", "size": list(SIZE), "steps": 1000}),
}


def phantom_normals_store(work: Path, seed: int = 0) -> Path:
    from mammosynth.phantom.dataset import write_phantom_store

    path = work / f"phantom_normals160_s{seed}.h5"
    if not path.exists():
        write_phantom_store(path, n_lesions=8, n_normals=160, patch_size=32, normal_size=(512, 416), seed=seed,
                            progress=False)
    return path


def held_out(store: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out (val + test) normals at SIZE: images (N, H, W) in [0, 1], skin masks, patient ids."""
    from mammosynth.data.store import Store
    from mammosynth.models.mask_embedding import PaddedNormalDataset

    images, masks, patients = [], [], []
    for split in ("val", "test"):
        try:
            ds = PaddedNormalDataset(store, split=split, size=SIZE)
        except Exception:  # noqa: BLE001 - an empty split is fine
            continue
        with Store(store) as st:
            pid = st.h5["normals/patient_id"][...]
        for i in range(len(ds)):
            it = ds[i]
            images.append(((it["image"][0].numpy() + 1) / 2).clip(0, 1))
            masks.append(it["breast_mask"][0].numpy() > 0.5)
            p = pid[int(it["index"])]
            patients.append(p.decode() if isinstance(p, bytes) else str(p))
    return np.stack(images).astype(np.float32), np.stack(masks), np.asarray(patients)


def make_config(key: str, recipe: str, scale: float, seed: int, extra: dict[str, Any] | None = None):
    import yaml

    from mammosynth.config import from_dict
    from mammosynth.models import get_method

    method, config, overrides = METHODS[key]
    data = yaml.safe_load((ROOT / "configs" / config).read_text()) or {}
    data.update(overrides)
    data.update(extra or {})
    if recipe == "paper":
        data["paper"] = True
    if "phase_steps" in data:
        data["phase_steps"] = [max(2, int(round(s * scale))) for s in data["phase_steps"]]
        data["steps"] = int(sum(data["phase_steps"]))
    else:
        data["steps"] = max(2, int(round(data["steps"] * scale)))
    data.update({"seed": seed, "sample_every": 0, "ckpt_every": data["steps"], "log_every": max(10, data["steps"] // 50)})
    return method, from_dict(get_method(method).Config, data)


def bench_one(dataset: str, store: Path, key: str, recipe: str, work: Path, scale: float, per_real: int,
              seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from mammosynth.evaluate.fullmammo import mask_adherence
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import Trainer

    method, cfg = make_config(key, recipe, scale, seed, extra)
    real, masks, patients = held_out(store)
    out = work / "runs" / f"fullmammo-{dataset}" / f"{key}-{recipe}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    t0 = time.perf_counter()
    run = Trainer(method, store, out, cfg, progress=False, config_source=f"bench_quality_fullmammo:{recipe}").run()
    train_s = time.perf_counter() - t0
    m = load_method(run, device="cpu")
    t0 = time.perf_counter()
    synth, synth_masks = [], []
    for i, mask in enumerate(masks):
        if key == "mask-embedding":
            samples = list(m.generate(per_real, seed + 1000 + 97 * i, mask=mask, batch_size=per_real))
        else:
            samples = list(m.generate(per_real, seed + 1000 + per_real * i, batch_size=per_real))
        for s in samples:
            img = np.asarray(s.image, np.float32)
            if img.shape != SIZE:
                from mammosynth.data.store import resize_image

                img = resize_image(img, SIZE)
            synth.append(img)
            synth_masks.append(mask)
    sample_s = time.perf_counter() - t0
    synth = np.stack(synth)
    row: dict[str, Any] = {"dataset": dataset, "method": key, "recipe": recipe, "steps": int(cfg.steps),
                           "size": list(SIZE), "n_real": int(len(real)), "n_synthetic": int(len(synth))}
    row["mask_adherence"] = {"synthetic": mask_adherence(synth, np.stack(synth_masks)) if key == "mask-embedding" else None,
                             "real": mask_adherence(real, masks)}
    t0 = time.perf_counter()
    row["features"] = bq.feature_scores(real, patients, synth, seed)
    from mammosynth.evaluate.two_sample import classifier_two_sample_test

    row["two_sample"] = classifier_two_sample_test(real, synth, seed=seed, size=64, real_groups=patients)
    row["score_seconds"] = time.perf_counter() - t0
    row.update({"train_seconds": train_s, "sample_seconds": sample_s,
                "config": json.loads(json.dumps(cfg.__dict__, default=str))})
    pic = picture(work / "pictures" / f"fullmammo-{dataset}-{key}-{recipe}.png", real, masks, synth, per_real,
                  f"{dataset} {key} ({recipe} recipe, {cfg.steps} steps): held-out real (top) vs synthetic for its mask")
    row["picture"] = str(pic)
    return row


def picture(path: Path, real: np.ndarray, masks: np.ndarray, synth: np.ndarray, per_real: int, title: str,
            n: int = 8) -> Path:
    """Held-out real films (top, the skin mask's outline in red) above the first synthetic image
    made for the same mask (bottom), the same [0, 1] window for both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(real))
    fig, axes = plt.subplots(2, n, figsize=(n * 0.95, 3.6), squeeze=False)
    for c in range(n):
        for r, img in enumerate((real[c], synth[c * per_real])):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.contour(masks[c], levels=[0.5], colors="r", linewidths=0.5)
            ax.set_xticks([]), ax.set_yticks([])
        if c == 0:
            axes[0, 0].set_ylabel("held-out real", fontsize=7)
            axes[1, 0].set_ylabel("synthetic", fontsize=7)
    fig.suptitle(title, fontsize=7)
    return bq.save_figure(fig, path)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    fmt = bq.fmt
    head = ("| label | data | method | recipe | steps | breast signal inside mask: mean / min / share >= 0.95 (real) | "
            "C2ST AUC [95% CI] | FD-VGG16 ratio | FD-EffNet ratio | PRDC P / R / D / C (VGG16) | train min | sample s |")
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for r in rows:
        ma = r["mask_adherence"]
        s, real = ma["synthetic"], ma["real"]
        adh = "—" if s is None else f"{fmt(s['mean'], 3)} / {fmt(s['min'], 3)} / {fmt(s['fraction_at_least_0.95'])}"
        ts = r["two_sample"]
        ci = ts.get("auc_ci") or [None, None]
        v, e = r["features"]["VGG16"], r["features"]["EffNet"]
        p = v["prdc"]
        lines.append("| " + " | ".join([
            r.get("label", ""), r["dataset"], r["method"], r["recipe"], str(r["steps"]),
            f"{adh} ({fmt(real['mean'], 3)})", f"{fmt(ts['auc'])} [{fmt(ci[0])}, {fmt(ci[1])}]",
            fmt(v["fd_ratio"]), fmt(e["fd_ratio"]), " / ".join(fmt(p.get(k)) for k in ("precision", "recall", "density", "coverage")),
            fmt(r["train_seconds"] / 60, 1), fmt(r["sample_seconds"], 0)]) + " |")
    return "\n".join(lines)


def write_table(results: Path, docs: Path) -> None:
    from mammosynth.io import write_text_atomic

    rows = json.loads(results.read_text()) if results.exists() else []
    table = markdown_table(rows)
    text = docs.read_text() if docs.exists() else ""
    if TABLE_BEGIN in text:
        a, b = text.index(TABLE_BEGIN) + len(TABLE_BEGIN), text.index(TABLE_END)
        text = text[:a] + "\n" + table + "\n" + text[b:]
    else:
        text += f"\n{TABLE_BEGIN}\n{table}\n{TABLE_END}\n"
    write_text_atomic(docs, text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="phantom,mias", help="comma-separated: phantom, mias (default: both)")
    ap.add_argument("--methods", default="mask-embedding,stylegan", help="comma-separated (default: both)")
    ap.add_argument("--recipe", choices=("default", "paper", "both"), default="both",
                    help="mask-embedding: mammosynth's recipe, the paper's (mask_output off), or both (default)")
    ap.add_argument("--label", default="", help="row label in the table")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every step budget (default 1.0: the demo configs)")
    ap.add_argument("--synth-per-real", type=int, default=4, help="synthetic images per held-out film (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mias-root", type=Path, default=bq.MIAS_ROOT)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mammosynth-bench-quality"))
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--docs", type=Path, default=bq.DOCS)
    ap.add_argument("--table-only", action="store_true", help="only rebuild the table from --results")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run (repeatable), e.g. --set init=torch")
    args = ap.parse_args(argv)
    if args.table_only:
        write_table(args.results, args.docs)
        return
    from mammosynth.config import parse_overrides

    torch.set_num_threads(max(1, args.threads))
    args.work.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets.split(","):
        store = phantom_normals_store(args.work, args.seed) if dataset == "phantom" else bq.mias_store(args.work, args.mias_root)
        for key in args.methods.split(","):
            recipes = ("default",) if key != "mask-embedding" else (("default", "paper") if args.recipe == "both" else (args.recipe,))
            for recipe in recipes:
                t0 = time.perf_counter()
                row = bench_one(dataset, store, key, recipe, args.work, args.scale, args.synth_per_real, args.seed,
                                parse_overrides(args.sets))
                row.update({"label": args.label, "commit": bq.commit(), "scale": args.scale,
                            "wall_seconds": time.perf_counter() - t0})
                rows = json.loads(args.results.read_text()) if args.results.exists() else []
                rows.append(row)
                from mammosynth.io import write_text_atomic

                args.results.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(args.results, json.dumps(rows, indent=1, default=float) + "\n")
                write_table(args.results, args.docs)
                print(markdown_table([row]).splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
