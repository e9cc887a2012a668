"""Per-type quality rows for calcification clusters: how realistic are the procedural clusters
``insert --lesion-type calcification`` draws, and a short lesion-dcgan trained on clusters, on
real mini-MIAS CALC rows and on the phantom's clusters? Scored with bench_quality's scorers.

    # the rows of docs/calcification.md (23 min of one core; 47 min wall on 2 shared cores)
    .venv/bin/python benchmarks/bench_quality_calc.py
    # one dataset / one method
    .venv/bin/python benchmarks/bench_quality_calc.py --datasets mias --methods procedural
    # rebuild the table in docs/calcification.md from the results file (no sampling, no training)
    .venv/bin/python benchmarks/bench_quality_calc.py --table-only
    # smoke run on a small phantom store only (about a minute of CPU per row; numbers meaningless)
    .venv/bin/python benchmarks/bench_quality_calc.py --smoke --datasets phantom --out /tmp/qc

Protocol (docs/calcification.md):

* **Real side.** (a) mini-MIAS (Suckling et al. 1994): the CALC rows with a circle, ingested with
  ``--lesions calcification`` (15 clusters, 12 patients) at 64 px, the patch the disc's box
  padded by the store's context. Too few for one split, so patients are cross-fitted over
  ``--folds`` folds stratified by pathology (bench_quality's ``stratified_patient_folds``): each
  fold's clusters are held out and whatever is fitted or trained sees only the other folds.
  (b) the phantom's clusters (``write_phantom_store(..., n_calcifications=N)``, its own patient
  split, 60/10/30), the large-n check. Held-out real patches enter with their 8 dihedral views
  grouped by lesion, synthetic ones with one random view (bench_quality's ``score_row``).
* **procedural**: the generator ``insert --lesion-type calcification`` uses, run through
  ``insert_lesions`` itself at the real patches' spacing (0.2 mm), its cluster size model fitted
  (``size_from``) to the training folds' clusters only, inserted into real tissue that never holds
  the held-out lesion: mini-MIAS NORMAL films of patients outside the held-out fold (on the
  phantom: the store's lesion-free normals). Each inserted cluster is cropped as its real
  counterpart is framed: on mini-MIAS a disc whose diameter is the cluster's drawn size (the
  extent of its calcification centres, the quantity the size model is fitted to from the real
  circles), centred on it; on the phantom its cluster mask; then the store's crop (context 0.3)
  and resize to 64 px.
* **lesion-dcgan**: ``lesion_types: calcification``, trained per fold on the training folds'
  clusters for ``--dcgan-steps`` steps (a short budget; the batch capped at the training count).
* Scores, floors and pictures: bench_quality's (``score_row``: C2ST AUC with bootstrap CI, FD
  and KID ratios to the split-half real floor in VGG16 and EfficientNet-Lite0 space, PRDC,
  LPIPS, MS-SSIM diversity, aliasing; ``picture``). No row has a mask Dice (clusters have no
  mask a segmenter of masses could judge; the column shows a dash).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import (  # noqa: E402  (scorers shared with the quality benchmark, never copied)
    MIAS_ROOT,
    MethodSpec,
    append_row,
    commit,
    fmt,
    picture,
    score_row,
    stratified_patient_folds,
    synthesize,
    train_run,
    write_table as bq_write_table,
    make_config,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "quality_calc.json"
DOCS = ROOT / "docs" / "calcification.md"
TABLE_BEGIN, TABLE_END = "<!-- calc-quality-table -->", "<!-- /calc-quality-table -->"
PATCH = 64
SPACING_MM = 0.2  # mini-MIAS and the phantom's default full shape
CONTEXT = 0.3  # records.DEFAULT_CONTEXT: how every stored patch is framed
METHODS = ("procedural", "lesion-dcgan")
DCGAN = MethodSpec("lesion-dcgan", "lesion-dcgan-demo.yaml", "unconditional", 0,
                   {"patch_size": PATCH, "lesion_types": "calcification"})


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def mias_calc_store(work: Path, root: Path) -> Path:
    from mammosynth.data.ingest import ingest

    path = work / "mias_calc64.h5"
    if not path.exists():
        if not (root / "Info.txt").is_file():
            raise SystemExit(f"{root}: mini-MIAS folder with Info.txt not found (pass --mias-root)")
        ingest("mias", root, out=path, patch_size=PATCH, normal_size=(512, 416), progress=False, lesions="calcification")
    return path


def phantom_calc_store(work: Path, n_calc: int, seed: int) -> Path:
    from mammosynth.phantom.dataset import write_phantom_store

    path = work / f"phantom_calc{n_calc}_s{seed}.h5"
    if not path.exists():
        write_phantom_store(path, n_lesions=1, n_normals=max(4, min(24, n_calc // 10)), patch_size=PATCH,
                            normal_size=None, seed=seed, progress=False, split_fractions=(0.6, 0.1, 0.3),
                            n_calcifications=n_calc)
    return path


def mias_normals(root: Path) -> list[tuple[str, Path]]:
    """(patient, path) of every mini-MIAS NORM film."""
    from mammosynth.data.readers.mias import parse_info, patient_of

    out = []
    for row in parse_info(root / "Info.txt"):
        if "error" not in row and row["cls"].upper() == "NORM" and (root / f"{row['refnum']}.pgm").is_file():
            out.append((patient_of(row["number"]), root / f"{row['refnum']}.pgm"))
    return out


def calc_fold_store(source: Path, work: Path, test_idx: np.ndarray, train_idx: np.ndarray, tag: str) -> Path:
    """A store with ``source``'s clusters ``train_idx`` as train and ``test_idx`` as test (what
    lesion-dcgan trains on and what the size model is fitted to: the train split only)."""
    from mammosynth.data.birads import DISTRIBUTIONS, MORPHOLOGIES, NOT_MASS, PATHOLOGIES, Label
    from mammosynth.data.records import LesionRecord
    from mammosynth.data.store import Store, StoreWriter

    path = work / f"{source.stem}_{tag}.h5"
    if path.exists():
        return path
    with Store(source) as st:
        les = st.lesions(np.concatenate([train_idx, test_idx]).astype(np.int64))
        spacing = st.lesion_spacing_mm()
        sizes = st.h5["lesions"]["lesion_size"][...]
        order = np.concatenate([train_idx, test_idx])
        with StoreWriter(path, patch_size=st.patch_size, provenance={"source": str(source), "fold": tag}) as w:
            for j, i in enumerate(order):
                def lab(vocab, v):
                    return Label(vocab[v], vocab[v], "mapped") if v >= 0 else Label(None, None, "missing")
                w.add_lesion(LesionRecord(
                    source="calcq", source_id=les.source_id[j], patient_id=les.patient_id[j], patch=les.patch[j],
                    mask=les.mask[j], shape=NOT_MASS, margin=NOT_MASS, pathology=lab(PATHOLOGIES, les.pathology[j]),
                    lesion_type="calcification", morphology=lab(MORPHOLOGIES, les.morphology[j]),
                    distribution=lab(DISTRIBUTIONS, les.distribution[j]),
                    lesion_size=tuple(int(v) for v in sizes[i]), pixel_spacing_mm=float(spacing[i]),
                    split_hint="train" if j < len(train_idx) else "test"))
    return path


def folds_for(dataset: str, store: Path, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, held-out indices) of the store's calcification clusters, per fold."""
    from mammosynth.data.store import Store

    with Store(store) as st:
        les = st.lesions()
        calc = np.flatnonzero(np.asarray(les.lesion_type) == "calcification")
        if dataset == "phantom":
            tr, te = (np.intersect1d(calc, st.split_indices("lesions", s)) for s in ("train", "test"))
            return [(tr, te)]
        pats = [les.patient_id[i] for i in calc]
        folds = stratified_patient_folds(pats, les.pathology[calc], k, seed)
    f_of = np.array([folds[p] for p in pats])
    return [(calc[f_of != f], calc[f_of == f]) for f in range(k)]


# ----------------------------------------------------------------------------------------------
# the procedural generator, framed like the real patches
# ----------------------------------------------------------------------------------------------
def frame(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The store's patch: the context-padded square crop, resized to 64 px, through uint16."""
    from mammosynth.data.imaging import extract_roi
    from mammosynth.data.store import from_uint16, resize_image, to_uint16

    patch, _, _ = extract_roi(image, mask, CONTEXT)
    return from_uint16(to_uint16(resize_image(patch, (PATCH, PATCH))))


def procedural(normals: list[Path] | Path, n: int, out: Path, seed: int, size_from: Path, framing: str
               ) -> tuple[np.ndarray, list[dict[str, Any]], float]:
    """``n`` clusters inserted by ``insert_lesions(lesion_type="calcification")`` into
    ``normals`` (files, or a store), each framed as ``framing`` ("disc": the mini-MIAS circle of
    the cluster's drawn size; "mask": its cluster mask, as the phantom frames). Returns the
    (n, 64, 64) patches, per-cluster info (file, centre, radius px) and wall seconds."""
    from mammosynth.data.imaging import disk_mask, read_image
    from mammosynth.synth.insert import insert_lesions

    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    insert_lesions(None, None, normals, n, out, seed=seed, size_from=size_from, pixel_spacing=SPACING_MM,
                   lesion_type="calcification", progress=False, out_format="png")
    ann = json.loads((out / "annotations.json").read_text())
    files = {im["id"]: im for im in ann["images"]}
    patches, info = [], []
    for a in ann["annotations"]:
        if a.get("category_id") != 2:
            continue
        entry = files[a["image_id"]]
        image = read_image(out / entry["file_name"])
        pts = np.asarray(a["attributes"]["points"], np.float64).reshape(-1, 2)
        lo, hi = pts.min(0), pts.max(0)
        cx, cy = (lo + hi) / 2
        r = max(2.0, float((hi - lo).max()) / 2)
        if framing == "disc":
            mask = disk_mask(image.shape, (cx, cy), r)
        else:
            mask = read_image(out / entry["mask_file"]) > 0.5
        patches.append(frame(image, mask))
        info.append({"file": str(out / entry["file_name"]), "source_file": entry.get("source_file"), "cx": float(cx), "cy": float(cy), "r": r,
                     "bbox": a["bbox"]})
    return np.stack(patches), info, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# one row
# ----------------------------------------------------------------------------------------------
def bench_row(dataset: str, method: str, store: Path, folds: list[tuple[np.ndarray, np.ndarray]], work: Path,
              seed: int, synth_per_real: int, dcgan_steps: int, mias_root: Path) -> dict[str, Any]:
    from mammosynth.data.store import Store

    reals, real_patients, real_ids, syn_all, fold_ids = [], [], [], [], []
    train_s = sample_s = 0.0
    normals_all = mias_normals(mias_root) if dataset == "mias" else []
    cfg = None
    for f, (tr, te) in enumerate(folds):
        with Store(store) as st:
            test = st.lesions(te)
        reals.append(test.patch)
        real_patients += list(test.patient_id)
        real_ids += list(test.source_id)
        fstore = store if dataset == "phantom" else calc_fold_store(store, work, te, tr, f"fold{f}of{len(folds)}_s{seed}")
        n_syn = synth_per_real * len(te)
        if method == "procedural":
            if dataset == "mias":
                held = set(test.patient_id)
                pool = [p for pat, p in normals_all if pat not in held]
                rng = np.random.default_rng([seed, f, 5])
                targets: Any = [pool[i] for i in rng.choice(len(pool), n_syn, replace=n_syn > len(pool))]
            else:
                targets = store
            images, _, secs = procedural(targets, n_syn, work / "insert" / dataset / f"f{f}", seed + 1000 + f, fstore,
                                         "disc" if dataset == "mias" else "mask")
        else:
            out = work / "runs" / dataset / f"lesion-dcgan-calc-f{f}"
            if out.exists():
                shutil.rmtree(out)
            n_train = len(tr)
            cfg = make_config(DCGAN, "default", dcgan_steps, seed + f, None)
            extra = {"batch_size": min(int(cfg.batch_size), n_train)}
            run, secs_t = train_run(DCGAN, "default", fstore, out, dcgan_steps, seed + f, extra)
            train_s += secs_t
            images, _, secs = synthesize(DCGAN, run, fstore, n_syn, seed + 1000 + f, np.zeros(0, int))
        sample_s += secs
        syn_all.append(images)
        fold_ids.append(np.full(len(images), f))
        print(f"  {dataset} {method} fold {f + 1}/{len(folds)}: {len(te)} held-out, {len(tr)} train, "
              f"{len(images)} synthetic ({train_s + sample_s:.0f} s)", flush=True)
    real, synth = np.concatenate(reals), np.concatenate(syn_all)
    title = f"{dataset} calcification {method}" + (f" ({dcgan_steps} steps)" if method == "lesion-dcgan" else "")
    pic = picture(work / "pictures" / f"calc-{dataset}-{method}.png", real, synth,
                  f"{title}: held-out real (top) vs synthetic (bottom)", seed=seed)
    row = score_row(real, np.asarray(real_patients), np.asarray(real_ids), synth, None, np.concatenate(fold_ids),
                    [], [], seed)
    row.update({"dataset": dataset, "method": method, "recipe": "calcification", "lesion_type": "calcification",
                "steps": dcgan_steps if method == "lesion-dcgan" else 0, "folds": len(folds),
                "train_seconds": train_s, "sample_seconds": sample_s, "picture": str(pic),
                "config": None if cfg is None else json.loads(json.dumps(cfg.__dict__, default=str))})
    return row


def write_table(results: Path, docs: Path) -> str:
    return bq_write_table(results, docs, TABLE_BEGIN, TABLE_END, "Calcification quality")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="mias,phantom", help="comma-separated: mias, phantom (default: both)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated (default: {','.join(METHODS)})")
    ap.add_argument("--label", default="", help="row label in the table")
    ap.add_argument("--folds", type=int, default=3, help="mini-MIAS cross-fitting folds, by patient (default 3)")
    ap.add_argument("--phantom-calcifications", type=int, default=200,
                    help="phantom clusters drawn (split 60/10/30 by patient; default 200)")
    ap.add_argument("--synth-per-real", type=int, default=8, help="synthetic clusters per held-out real cluster (default 8)")
    ap.add_argument("--dcgan-steps", type=int, default=300,
                    help="lesion-dcgan training steps per fold (default 300; batch = min(32, training clusters))")
    ap.add_argument("--seed", type=int, default=0, help="seed of folds, insertion and training (default 0)")
    ap.add_argument("--mias-root", type=Path, default=MIAS_ROOT, help=f"mini-MIAS folder (default {MIAS_ROOT})")
    ap.add_argument("--work", "--out", dest="work", type=Path, default=Path("/tmp/mammosynth_bench_quality_calc"),
                    help="stores, insert outputs, runs and pictures (default /tmp/mammosynth_bench_quality_calc)")
    ap.add_argument("--results", type=Path, default=None, help=f"JSON the rows are appended to (default {DEFAULT_RESULTS}; "
                    "with --smoke WORK/quality_calc.json)")
    ap.add_argument("--docs", type=Path, default=None, help=f"markdown whose table is rebuilt (default {DOCS}; "
                    "with --smoke WORK/calcification.md)")
    ap.add_argument("--table-only", action="store_true", help="only rebuild the table from --results")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny run: 40 phantom clusters, 2 synthetic per real, 20 lesion-dcgan steps (numbers meaningless)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.phantom_calcifications, args.synth_per_real, args.dcgan_steps = 40, 2, min(args.dcgan_steps, 20)
    args.results = args.results or (args.work / "quality_calc.json" if args.smoke else DEFAULT_RESULTS)
    args.docs = args.docs or (args.work / "calcification.md" if args.smoke else DOCS)
    if args.table_only:
        print(write_table(args.results, args.docs))
        return 0
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown method(s) {', '.join(bad)}: choose from {', '.join(METHODS)}")

    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if dataset == "mias":
            store = mias_calc_store(args.work, args.mias_root)
        elif dataset == "phantom":
            store = phantom_calc_store(args.work, args.phantom_calcifications, args.seed)
        else:
            raise SystemExit(f"unknown dataset {dataset!r}: mias or phantom")
        folds = folds_for(dataset, store, args.folds, args.seed)
        for method in methods:
            t0 = time.perf_counter()
            row = bench_row(dataset, method, store, folds, args.work, args.seed, args.synth_per_real, args.dcgan_steps,
                            args.mias_root)
            row.update({"label": args.label, "commit": commit(), "host": platform.node(), "threads": args.threads,
                        "torch": torch.__version__, "wall_seconds": time.perf_counter() - t0,
                        "time": time.strftime("%Y-%m-%d %H:%M:%S")})
            append_row(args.results, row)
            write_table(args.results, args.docs)
            ts, v = row["two_sample"], row["features"]["VGG16"]
            ci = ts.get("auc_ci") or [float("nan")] * 2
            print(f"{dataset:8s} {method:13s} n_real {row['n_real']} n_syn {row['n_synthetic']} AUC {ts['auc']:.3f} "
                  f"[{ci[0]:.2f}, {ci[1]:.2f}] FD-VGG16 ratio {fmt(v['fd_ratio'])} FD-EffNet ratio "
                  f"{fmt(row['features']['EffNet']['fd_ratio'])} recall {fmt(v['prdc'].get('recall'))} "
                  f"({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
