"""The quality benchmark: how realistic are the lesions each method makes, at a fixed CPU budget,
on the phantom and on real mini-MIAS masses? One row per (dataset, method, recipe).

    # every row on both datasets (hours on 2 cores: see STEPS below), appended to the results file
    .venv/bin/python benchmarks/bench_quality.py --label "after: resize-conv + DiffAugment"
    # a subset, e.g. while tuning one method
    .venv/bin/python benchmarks/bench_quality.py --datasets mias --methods infill-unet --recipe paper
    # rebuild the markdown table in docs/quality.md from the results file (no training)
    .venv/bin/python benchmarks/bench_quality.py --table-only
    # smoke run of the whole pipeline in a minute or two (tiny budgets; numbers meaningless)
    .venv/bin/python benchmarks/bench_quality.py --smoke --out /tmp/q

Protocol (docs/quality.md explains the choices):

* **Datasets.** (a) the phantom, ``write_phantom_store`` seed 0, 800 lesions at 64 px, its own
  patient-level split: generators train on ``train``, synthesise from ``train`` contexts/seeds,
  and are scored against ``test``. (b) the real mini-MIAS masses (the 38 CIRC/SPIC/MISC rows of
  ``../shared/data/mini-mias``, ``mias`` source at 64 px): too few for one held-out split, so the
  benchmark *cross-fits*: patients are dealt into ``--folds`` folds stratified by margin; for each
  fold a generator trains on the other folds and synthesises from them, and its lesions are scored
  against that fold. Pooled over folds, every real mass is held out exactly once and no synthetic
  lesion is scored against data its generator saw.
* **Real side as large as it honestly is.** Every held-out real patch enters with its 8 dihedral
  views (rotations x flips: a patch has no preferred orientation), grouped by lesion so that the
  two-sample test's folds never split one lesion's views; synthetic lesions each get one random
  dihedral view, so orientation is no tell. PRDC and LPIPS use one view per real lesion (views of
  one lesion would be each other's nearest neighbours).
* **Scores.** Classifier two-sample AUC (cross-fitted, grouped, bootstrap CI); FD and KID in
  VGG16 and EfficientNet-Lite0 space as ratios to a real floor (two patient-disjoint halves of the
  held-out reals against each other; the synthetic score is the mean of each equal-size synthetic
  subset against the other half); PRDC (k = 5); mean LPIPS (AlexNet) real<->synthetic; MS-SSIM
  diversity beside the real set's; mask Dice of a segmenter trained on the same training lesions
  (requested mask vs what it segments in the synthetic lesion; its Dice on the held-out reals is
  the ceiling); the aliasing score (``evaluate.aliasing``) beside the real split-half floor; train
  and sample wall time.

Results are appended to ``--results`` (JSON, one object per row, with the commit, label, recipe,
config and every number) and the markdown table in ``docs/quality.md`` between its
``<!-- quality-table -->`` markers is rebuilt from that file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "quality.json"
DOCS = ROOT / "docs" / "quality.md"
MIAS_ROOT = ROOT.parent / "shared" / "data" / "mini-mias"
TABLE_BEGIN, TABLE_END = "<!-- quality-table -->", "<!-- /quality-table -->"


@dataclass
class MethodSpec:
    """How the benchmark trains and samples one method. ``steps``: the fixed budget on the
    phantom, chosen so a run takes about 20-25 minutes on an idle 2-core machine (docs/quality.md
    has the timings); on mini-MIAS each of the 3 cross-fitted folds trains ``steps // 3`` steps on
    its ~25 lesions, so the three together cost one phantom run. ``--recipe paper`` rows set the
    config's ``paper: true`` (each method's PAPER_RECIPE: the published recipe at this width)."""

    method: str
    config: str
    kind: str  # infill | birads | unconditional
    steps: int
    overrides: dict[str, Any] = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {
    "infill-unet": MethodSpec("infill", "infill-demo.yaml", "infill", 4500, {"generator": "unet"}),
    "infill-crn": MethodSpec("infill", "infill-demo.yaml", "infill", 4500, {"generator": "crn"}),
    "birads-aegan": MethodSpec("birads-aegan", "birads-aegan-demo.yaml", "birads", 4500),
    "lesion-dcgan": MethodSpec("lesion-dcgan", "lesion-dcgan-demo.yaml", "unconditional", 2400, {"patch_size": 64}),
}
#: Methods that exist only on some commits (the benchmark skips what the registry lacks).
OPTIONAL_METHODS: dict[str, MethodSpec] = {
    "diffusion-infill": MethodSpec("diffusion-infill", "diffusion-infill-demo.yaml", "infill", 4500),
}


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def phantom_store(work: Path, n_lesions: int, seed: int = 0) -> Path:
    from mammosynth.phantom.dataset import write_phantom_store

    path = work / f"phantom_{n_lesions}_s{seed}.h5"
    if not path.exists():
        write_phantom_store(path, n_lesions=n_lesions, n_normals=24, patch_size=64, normal_size=(512, 416),
                            seed=seed, progress=False)
    return path


def mias_store(work: Path, root: Path) -> Path:
    from mammosynth.data.ingest import ingest

    path = work / "mias64.h5"
    if not path.exists():
        if not root.is_dir():
            raise SystemExit(f"{root}: mini-MIAS folder not found (pass --mias-root)")
        ingest("mias", root, out=path, patch_size=64, normal_size=(512, 416), progress=False)
    return path


def stratified_patient_folds(patients: list[str], labels: np.ndarray, k: int, seed: int) -> dict[str, int]:
    """Deal patients into k folds so each fold gets a share of every label: patients are grouped
    by their most common lesion label, shuffled within the group, and dealt round-robin, the
    dealing continuing across groups so fold sizes stay within one patient of each other."""
    rng = np.random.default_rng(seed)
    by_patient: dict[str, list[int]] = {}
    for p, lab in zip(patients, labels):
        by_patient.setdefault(p, []).append(int(lab))
    groups: dict[int, list[str]] = {}
    for p, labs in sorted(by_patient.items()):
        vals, counts = np.unique(labs, return_counts=True)
        groups.setdefault(int(vals[np.argmax(counts)]), []).append(p)
    folds: dict[str, int] = {}
    turn = 0
    for lab in sorted(groups, key=lambda g: len(groups[g])):
        members = list(groups[lab])
        rng.shuffle(members)
        for p in members:
            folds[p] = turn % k
            turn += 1
    return folds


def fold_stores(source: Path, work: Path, k: int, seed: int = 0) -> list[Path]:
    """One store per fold: the masses of the other folds as ``train``, this fold's as ``test``, and
    the source's normals (for the segmenter's lesion-free tiles) as ``train``. Only lesions with a
    margin label (masses) are kept."""
    from mammosynth.data.birads import MARGINS, PATHOLOGIES, SHAPES, Label
    from mammosynth.data.records import LesionRecord, MammogramRecord
    from mammosynth.data.store import Store, StoreWriter

    with Store(source) as st:
        les = st.lesions()
        keep = np.flatnonzero(les.margin >= 0)
        g = st.h5["lesions"]
        spacing = st.lesion_spacing_mm()
        sizes = g["lesion_size"][...]
        folds = stratified_patient_folds([les.patient_id[i] for i in keep], les.margin[keep], k, seed)
        normals = [st.normal(int(i)) for i in st.split_indices("normals", None)[:24]]
        paths = []
        for f in range(k):
            path = work / f"{source.stem}_fold{f}of{k}_s{seed}.h5"
            paths.append(path)
            if path.exists():
                continue
            with StoreWriter(path, patch_size=st.patch_size, normal_size=tuple(st.manifest["normal_size"]),
                             provenance={"source": str(source), "fold": f, "folds": k, "seed": seed}) as w:
                for i in keep:
                    def lab(vocab, v):
                        return Label(vocab[v], vocab[v], "mapped") if v >= 0 else Label(None, None, "missing")
                    w.add_lesion(LesionRecord(
                        source="mias", source_id=les.source_id[i], patient_id=les.patient_id[i], patch=les.patch[i],
                        mask=les.mask[i], shape=lab(SHAPES, les.shape[i]), margin=lab(MARGINS, les.margin[i]),
                        pathology=lab(PATHOLOGIES, les.pathology[i]), lesion_size=tuple(int(v) for v in sizes[i]),
                        pixel_spacing_mm=float(spacing[i]) if np.isfinite(spacing[i]) else None,
                        split_hint="test" if folds[les.patient_id[i]] == f else "train"))
                for n in normals:
                    h, w_ = n["valid_hw"]
                    w.add_normal(MammogramRecord(source="mias", source_id=n["source_id"], patient_id=f"normal-{n['patient_id']}",
                                                 image=n["image"][:h, :w_], breast_mask=n["breast_mask"][:h, :w_],
                                                 laterality="L", split_hint="train"))
    return paths


def dihedral(x: np.ndarray) -> np.ndarray:
    """(N, S, S) -> (N, 8, S, S): the 4 rotations of each patch and of its mirror image."""
    views = []
    for flip in (False, True):
        base = x[:, :, ::-1] if flip else x
        for k in range(4):
            views.append(np.rot90(base, k, axes=(1, 2)))
    return np.ascontiguousarray(np.stack(views, 1))


def random_dihedral(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    views = dihedral(x)
    return views[np.arange(len(x)), rng.integers(0, 8, len(x))]


# ----------------------------------------------------------------------------------------------
# train and sample
# ----------------------------------------------------------------------------------------------
def make_config(spec: MethodSpec, recipe: str, steps: int, seed: int, extra: dict[str, Any] | None = None):
    from mammosynth.config import from_dict
    from mammosynth.models import get_method
    import yaml

    data = yaml.safe_load((ROOT / "configs" / spec.config).read_text()) or {}
    data.update(spec.overrides)
    data.update(extra or {})
    if recipe == "paper":
        data["paper"] = True
    data.update({"steps": steps, "seed": seed, "sample_every": 0, "ckpt_every": steps, "log_every": max(10, steps // 50)})
    return from_dict(get_method(spec.method).Config, data)


def train_run(spec: MethodSpec, recipe: str, store: Path, out: Path, steps: int, seed: int,
              extra: dict[str, Any] | None = None) -> tuple[Path, float]:
    from mammosynth.train.trainer import Trainer

    cfg = make_config(spec, recipe, steps, seed, extra)
    t0 = time.perf_counter()
    run = Trainer(spec.method, store, out, cfg, progress=False, config_source=f"bench_quality:{recipe}").run()
    return run, time.perf_counter() - t0


def segmenter_run(store: Path, out: Path, seed: int, steps: int) -> Path:
    """The mask-fidelity judge for one fold: trained once on the fold's training lesions, reused
    by every method's row (its runs are keyed by the store file's name and the step count)."""
    from mammosynth.train.run import list_runs

    out = out / f"{store.stem}-{steps}"
    done = [r for r in list_runs(out, "segmenter") if (r / "model.safetensors").exists()] if out.exists() else []
    if done:
        return done[-1]
    spec = MethodSpec("segmenter", "segmenter-demo.yaml", "segmenter", steps)
    run, _ = train_run(spec, "default", store, out, steps, seed)
    return run


def synthesize(spec: MethodSpec, run: Path, store: Path, n: int, seed: int, test_margins: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray | None, float]:
    """(n, S, S) images in [0, 1], their requested masks (or None), wall seconds."""
    from mammosynth.data.birads import MARGINS
    from mammosynth.data.store import resize_image, resize_mask
    from mammosynth.train.run import load_method

    method = load_method(run, device="cpu")
    t0 = time.perf_counter()
    images, masks = [], []
    if spec.kind == "infill":
        samples = list(method.generate(n, seed, data=str(store), split="train", batch_size=32))
    elif spec.kind == "birads":
        # margins in the proportions of the held-out set, so the comparison is like for like
        vals, counts = np.unique(test_margins[test_margins >= 0], return_counts=True)
        alloc = np.floor(counts / counts.sum() * n).astype(int)
        alloc[: n - alloc.sum()] += 1
        samples = []
        for j, (m, c) in enumerate(zip(vals, alloc)):
            if c:
                samples += list(method.generate(int(c), seed + 101 * j, margin=MARGINS[int(m)], store=str(store),
                                                split="train", batch_size=32))
    else:
        samples = list(method.generate(n, seed, batch_size=64))
    seconds = time.perf_counter() - t0
    S = 64
    for s in samples[:n]:
        images.append(resize_image(np.asarray(s.image, np.float32), (S, S)))
        masks.append(None if s.mask is None else resize_mask(np.asarray(s.mask, bool), (S, S)))
    has_masks = all(m is not None and m.any() for m in masks)
    return np.stack(images), (np.stack(masks) if has_masks else None), seconds


# ----------------------------------------------------------------------------------------------
# scores
# ----------------------------------------------------------------------------------------------
def split_half(groups: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    uniq = np.unique(groups)
    rng.shuffle(uniq)
    return np.isin(groups, uniq[: len(uniq) // 2])


def feature_scores(real_one: np.ndarray, real_patients: np.ndarray, synth: np.ndarray, seed: int) -> dict[str, Any]:
    """FD/KID ratios to the split-half real floor, and PRDC, in VGG16 and EfficientNet-Lite0 space."""
    from mammosynth.evaluate import frechet
    from mammosynth.evaluate.features import extract_features
    from mammosynth.evaluate.prdc import prdc

    out: dict[str, Any] = {}
    half = split_half(real_patients, seed)
    rng = np.random.default_rng([seed, 11])
    order = rng.permutation(len(synth))
    for net, name in (("vgg16", "VGG16"), ("effnet", "EffNet")):
        fr = extract_features(real_one, net=net)
        fs = extract_features(synth, net=net)
        a, b = fr[half], fr[~half]
        sa, sb = fs[order[: len(a)]], fs[order[len(a): len(a) + len(b)]]
        floor = frechet.frechet_distance(a, b)
        score = 0.5 * (frechet.frechet_distance(sa, b) + frechet.frechet_distance(sb, a))
        kid_floor = frechet.kid(a, b, subset_size=min(len(a), len(b)), seed=seed).mean
        kid_score = 0.5 * (frechet.kid(sa, b, subset_size=min(len(sa), len(b)), seed=seed).mean
                           + frechet.kid(sb, a, subset_size=min(len(sb), len(a)), seed=seed).mean)
        p = prdc(fr, fs[order[: max(len(fr), min(len(fs), 4 * len(fr)))]], k=5)
        out[name] = {"fd_floor": floor, "fd": score, "fd_ratio": score / floor if floor > 0 else None,
                     "kid_floor": kid_floor, "kid": kid_score, "prdc": p.to_dict()}
    return out


def two_sample(real_views: np.ndarray, real_groups: np.ndarray, synth: np.ndarray, seed: int) -> dict[str, Any]:
    """Cross-fitted classifier two-sample test; a real lesion's 8 views share a group, so they
    stay in one fold and are resampled together by the bootstrap."""
    from mammosynth.evaluate.two_sample import classifier_two_sample_test

    return classifier_two_sample_test(real_views, synth, seed=seed, size=64, real_groups=real_groups)


def mask_dice(seg_runs: list[Path], fold_of_synth: np.ndarray, synth: np.ndarray, masks: np.ndarray | None,
              real_by_fold: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any] | None:
    from mammosynth.models.segmenter import dice_coefficient
    from mammosynth.train.run import load_method

    if masks is None:
        return None
    d_syn, d_real = [], []
    for f, run in enumerate(seg_runs):
        seg = load_method(run, device="cpu", expect="segmenter")
        sel = fold_of_synth == f
        if sel.any():
            pred = seg.predict(torch.from_numpy(synth[sel])[:, None] * 2 - 1)[:, 0].numpy() >= 0.5
            d_syn += [dice_coefficient(p, m) for p, m in zip(pred, masks[sel])]
        patch, mask = real_by_fold[f]
        pred = seg.predict(torch.from_numpy(patch)[:, None] * 2 - 1)[:, 0].numpy() >= 0.5
        d_real += [dice_coefficient(p, m) for p, m in zip(pred, mask)]
    return {"synthetic": float(np.mean(d_syn)), "real_ceiling": float(np.mean(d_real)), "n_synthetic": len(d_syn)}


def score_row(real_one: np.ndarray, real_patients: np.ndarray, real_lesion_ids: np.ndarray, synth: np.ndarray,
              masks: np.ndarray | None, fold_of_synth: np.ndarray, seg_runs: list[Path],
              real_by_fold: list[tuple[np.ndarray, np.ndarray]], seed: int) -> dict[str, Any]:
    from mammosynth.evaluate.aliasing import aliasing_score, real_floor
    from mammosynth.evaluate.diversity import msssim_diversity
    from mammosynth.evaluate.lpips import mean_lpips

    rng = np.random.default_rng([seed, 3])
    views = dihedral(real_one).reshape(-1, *real_one.shape[1:])
    groups = np.repeat(np.arange(len(real_one)), 8)
    synth_view = random_dihedral(synth, rng)
    row: dict[str, Any] = {"n_real": int(len(real_one)), "n_real_views": int(len(views)), "n_synthetic": int(len(synth))}
    t = time.perf_counter()
    row["two_sample"] = two_sample(views, groups, synth_view, seed)
    row["features"] = feature_scores(real_one, real_patients, synth, seed)
    row["lpips_alex"] = mean_lpips(real_one, synth, net="alex", seed=seed).to_dict()["mean"]
    row["diversity"] = {"synthetic": msssim_diversity(synth, seed=seed).mean, "real": msssim_diversity(real_one, seed=seed).mean}
    row["mask_dice"] = mask_dice(seg_runs, fold_of_synth, synth, masks, real_by_fold)
    row["aliasing"] = {"synthetic": aliasing_score(views, synth_view).to_dict(),
                       "real_floor": real_floor(views, groups, seed=seed).worst}
    row["aliasing"]["synthetic"].pop("per_frequency", None)
    row["score_seconds"] = time.perf_counter() - t
    return row


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
def bench_one(dataset: str, key: str, spec: MethodSpec, recipe: str, stores: list[Path], work: Path, seed: int,
              scale: float, synth_per_real: int, seg_steps: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from mammosynth.data.store import Store

    steps = max(2, int(round(spec.steps * scale / (len(stores) if dataset == "mias" else 1))))
    reals, real_patients, real_ids, syn_all, mask_all, fold_ids, seg_runs, real_by_fold = [], [], [], [], [], [], [], []
    train_s = sample_s = 0.0
    for f, store in enumerate(stores):
        with Store(store) as st:
            test = st.lesions(split="test")
            n_train = len(st.split_indices("lesions", "train"))
        keep = test.margin >= 0 if dataset == "mias" else np.ones(len(test.index), bool)
        reals.append(test.patch[keep])
        real_patients += [p for p, k in zip(test.patient_id, keep) if k]
        real_ids += [s for s, k in zip(test.source_id, keep) if k]
        real_by_fold.append((test.patch[keep], test.mask[keep]))
        out = work / "runs" / dataset / f"{key}-{recipe}-f{f}"
        if out.exists():  # a rerun trains afresh: runs are numbered inside, keep them apart
            import shutil

            shutil.rmtree(out)
        # a mini-MIAS fold trains on ~25 lesions: a config's batch (lesion-dcgan's 32) may not fit
        batch = int(make_config(spec, recipe, steps, seed, extra).batch_size)
        fold_extra = {**(extra or {}), "batch_size": min(batch, n_train)} if batch > n_train else extra
        run, secs = train_run(spec, recipe, store, out, steps, seed + f, fold_extra)
        train_s += secs
        n_syn = synth_per_real * int(keep.sum())
        images, masks, secs = synthesize(spec, run, store, n_syn, seed + 1000 + f, test.margin[keep])
        sample_s += secs
        syn_all.append(images)
        mask_all.append(masks)
        fold_ids.append(np.full(len(images), f))
        seg_runs.append(segmenter_run(store, work / "runs" / dataset / f"segmenter-f{f}", seed + f, seg_steps))
        print(f"  {dataset} {key} {recipe} fold {f + 1}/{len(stores)}: trained {steps} steps in {train_s:.0f} s "
              f"(n_train {n_train}), {len(images)} synthetic", flush=True)
    synth = np.concatenate(syn_all)
    masks = None if any(m is None for m in mask_all) else np.concatenate(mask_all)
    pic = picture(work / "pictures" / f"{dataset}-{key}-{recipe}.png", np.concatenate(reals), synth,
                  f"{dataset} {key} ({recipe} recipe, {steps} steps): held-out real (top) vs synthetic (bottom)", seed=seed)
    row = score_row(np.concatenate(reals), np.asarray(real_patients), np.asarray(real_ids), synth, masks,
                    np.concatenate(fold_ids), seg_runs, real_by_fold, seed)
    row.update({"dataset": dataset, "method": key, "recipe": recipe, "steps": steps, "folds": len(stores),
                "train_seconds": train_s, "sample_seconds": sample_s,
                "overrides": dict(extra or {}), "picture": str(pic),
                "config": json.loads(json.dumps(make_config(spec, recipe, steps, seed, extra).__dict__, default=str))})
    return row


def picture(path: Path, real: np.ndarray, synth: np.ndarray, title: str, n: int = 12, seed: int = 0) -> Path:
    """Held-out real lesions (top row) above synthetic ones (bottom), the same [0, 1] window for
    both, drawn at random: look at it before believing the row's numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    n = min(n, len(real), len(synth))
    rows = (("held-out real", real[rng.choice(len(real), n, replace=False)]),
            ("synthetic", synth[rng.choice(len(synth), n, replace=False)]))
    fig, axes = plt.subplots(2, n, figsize=(n * 0.9, 2.2), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Tighten ``fig``, write it to ``path`` as PNG atomically, close it."""
    import matplotlib.pyplot as plt

    from mammosynth.io import atomic_path

    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def pictures_from_runs(work: Path, dataset: str, keys: list[str], specs: dict[str, MethodSpec], seed: int) -> None:
    """A picture per (method, recipe) whose fold-0 run is kept in ``work``: fold 0's held-out real
    lesions beside lesions that run makes from its own training contexts and seeds."""
    from mammosynth.data.store import Store

    store = (work / "phantom_800_s0.h5") if dataset == "phantom" else (work / "mias64_fold0of3_s0.h5")
    if not store.exists():
        stores = sorted(work.glob("phantom_*_s0.h5" if dataset == "phantom" else "mias64_fold0of*_s*.h5"))
        if not stores:
            raise SystemExit(f"no {dataset} store in {work}: run the benchmark first")
        store = stores[0]
    with Store(store) as st:
        test = st.lesions(split="test")
    keep = test.margin >= 0 if dataset == "mias" else np.ones(len(test.index), bool)
    for key in keys:
        for recipe in ("default", "paper"):
            out = work / "runs" / dataset / f"{key}-{recipe}-f0"
            from mammosynth.train.run import list_runs

            runs = [r for r in list_runs(out, specs[key].method) if (r / "model.safetensors").exists()] if out.exists() else []
            if not runs:
                continue
            images, _, _ = synthesize(specs[key], runs[-1], store, 24, seed + 1000, test.margin[keep])
            path = picture(work / "pictures" / f"{dataset}-{key}-{recipe}.png", test.patch[keep], images,
                           f"{dataset} {key} ({recipe} recipe), fold 0: held-out real (top) vs synthetic (bottom)")
            print(f"wrote {path}", flush=True)


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ("| label | data | method | recipe | steps | C2ST AUC [95% CI] | FD-VGG16 ratio | FD-EffNet ratio | "
            "KID-VGG16 (floor) | PRDC P / R / D / C (VGG16) | LPIPS | MS-SSIM div. syn (real) | mask Dice syn (ceiling) | "
            "aliasing syn (real floor) | train min | sample s |")
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for r in rows:
        ts = r["two_sample"]
        ci = ts.get("auc_ci") or [None, None]
        v, e = r["features"]["VGG16"], r["features"]["EffNet"]
        p = v["prdc"]
        md = r.get("mask_dice")
        lines.append("| " + " | ".join([
            r.get("label", ""), r["dataset"], r["method"], r["recipe"], str(r["steps"]) + (f" x{r['folds']}" if r["folds"] > 1 else ""),
            f"{fmt(ts['auc'])} [{fmt(ci[0])}, {fmt(ci[1])}]", fmt(v["fd_ratio"]), fmt(e["fd_ratio"]),
            f"{fmt(v['kid'], 4)} ({fmt(v['kid_floor'], 4)})",
            " / ".join(fmt(p.get(k)) for k in ("precision", "recall", "density", "coverage")),
            fmt(r["lpips_alex"], 3), f"{fmt(r['diversity']['synthetic'])} ({fmt(r['diversity']['real'])})",
            "—" if md is None else f"{fmt(md['synthetic'])} ({fmt(md['real_ceiling'])})",
            f"{fmt(r['aliasing']['synthetic']['worst'], 1)} ({fmt(r['aliasing']['real_floor'], 1)})",
            fmt(r["train_seconds"] / 60, 1), fmt(r["sample_seconds"], 0),
        ]) + " |")
    return "\n".join(lines)


def append_row(results: Path, row: dict) -> None:
    """Append one row to the results JSON (a list), written atomically."""
    from mammosynth.io import write_json_atomic

    rows = json.loads(results.read_text()) if results.exists() else []
    rows.append(row)
    write_json_atomic(results, rows)


def write_table(results: Path, docs: Path, begin: str = TABLE_BEGIN, end: str = TABLE_END,
                title: str = "Quality benchmark") -> str:
    """Rebuild the table of ``results``'s rows between the ``begin``/``end`` markers of ``docs``
    (a new file with ``title`` when the markers are missing); returns the table."""
    rows = json.loads(results.read_text()) if results.exists() else []
    table = markdown_table(rows)
    from mammosynth.io import write_text_atomic

    if docs.exists() and begin in docs.read_text():
        text = docs.read_text()
        a, b = text.index(begin) + len(begin), text.index(end)
        text = text[:a] + "\n" + table + "\n" + text[b:]
    else:
        text = f"# {title}\n\n{begin}\n{table}\n{end}\n"
    docs.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(docs, text)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="phantom,mias", help="comma-separated: phantom, mias (default: both)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated (default: {','.join(METHODS)}; "
                    f"also {','.join(OPTIONAL_METHODS)} where it exists)")
    ap.add_argument("--recipe", default="default", choices=("default", "paper"),
                    help="default: the configs as they are; paper: with each paper's recipe restored (default: default)")
    ap.add_argument("--label", default="", help="row label in the table, e.g. 'before' or what changed")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every method of the run (repeatable), e.g. --set amp=off")
    ap.add_argument("--folds", type=int, default=3, help="mini-MIAS cross-fitting folds (default 3)")
    ap.add_argument("--phantom-lesions", type=int, default=800, help="phantom store size (default 800)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every step budget (default 1.0)")
    ap.add_argument("--synth-per-real", type=int, default=8, help="synthetic lesions per held-out real lesion (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mias-root", type=Path, default=MIAS_ROOT)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mammosynth_bench_quality"), help="stores and runs (default /tmp/...)")
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON file the rows are appended to")
    ap.add_argument("--docs", type=Path, default=DOCS, help="markdown file whose quality table is rebuilt")
    ap.add_argument("--pictures", action="store_true",
                    help="only draw real-vs-synthetic pictures from the fold-0 runs kept in --work (into WORK/pictures)")
    ap.add_argument("--table-only", action="store_true", help="only rebuild the table from --results")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets and stores to check the pipeline (numbers meaningless)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = ap.parse_args(argv)
    if args.pictures:
        specs = {**METHODS, **OPTIONAL_METHODS}
        for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            pictures_from_runs(args.work, dataset, [m.strip() for m in args.methods.split(",") if m.strip()], specs, args.seed)
        return 0
    if args.table_only:
        write_table(args.results, args.docs)
        return 0
    torch.set_num_threads(args.threads)
    from mammosynth.config import parse_overrides
    from mammosynth.models import METHODS as REGISTRY

    if args.smoke:
        args.scale, args.phantom_lesions, args.synth_per_real = min(args.scale, 0.005), 200, 2
        args.work = args.work / "smoke"
        if args.results == DEFAULT_RESULTS:
            args.results = args.work / "quality.json"
        if args.docs == DOCS:
            args.docs = args.work / "quality.md"
    args.work.mkdir(parents=True, exist_ok=True)
    specs = {**METHODS, **{k: v for k, v in OPTIONAL_METHODS.items() if v.method in REGISTRY}}
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in specs]
    if unknown:
        raise SystemExit(f"unknown or unavailable method(s): {', '.join(unknown)}; choose from {', '.join(specs)}")
    seg_steps = 20 if args.smoke else 600
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if dataset == "phantom":
            stores = [phantom_store(args.work, args.phantom_lesions, args.seed)]
        elif dataset == "mias":
            stores = fold_stores(mias_store(args.work, args.mias_root), args.work, args.folds, args.seed)
        else:
            raise SystemExit(f"unknown dataset {dataset!r}: phantom or mias")
        for key in wanted:
            t0 = time.perf_counter()
            row = bench_one(dataset, key, specs[key], args.recipe, stores, args.work, args.seed, args.scale,
                            args.synth_per_real, seg_steps, parse_overrides(args.sets))
            row.update({"label": args.label, "commit": commit(), "host": platform.node(), "threads": args.threads,
                        "torch": torch.__version__, "wall_seconds": time.perf_counter() - t0,
                        "time": time.strftime("%Y-%m-%d %H:%M:%S")})
            append_row(args.results, row)
            write_table(args.results, args.docs)
            ts = row["two_sample"]
            print(f"{dataset:8s} {key:15s} {args.recipe:8s} AUC {ts['auc']:.3f} FD-VGG16 ratio "
                  f"{fmt(row['features']['VGG16']['fd_ratio'])} recall {fmt(row['features']['VGG16']['prdc'].get('recall'))} "
                  f"Dice {fmt((row.get('mask_dice') or {}).get('synthetic'))} aliasing {row['aliasing']['synthetic']['worst']:.1f} "
                  f"({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
