"""``mammosynth evaluate``: every evaluation of a synthetic set in one report.

Sections (each records its own seconds; one that cannot run says why and is skipped, never
faked): feature distances (FD/KID in VGG16 and EfficientNet-Lite0 feature spaces, with the
real-train vs real-test floor; a weight-free pixel-space FD beside them), LPIPS (seed 001
Table 1), k-NN precision/recall/density/coverage, MS-SSIM diversity, memorisation (nearest
real training image), t-SNE (seed 003), the classifier two-sample test, label fidelity
(BI-RADS classifier), mask fidelity (segmenter Dice) and, with ``downstream=True``, the
detection experiment of seed 001 sec. 4.5.

Writes ``OUT/report.html``, ``OUT/metrics.json`` (every number; NaN written as null) and PNG
plots beside them. Images everywhere: numpy (N, S, S) float in [0, 1], S = the store's patch size.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mammosynth.data.birads import LESION_TYPES
from mammosynth.data.store import Store, read_lesion_split
from mammosynth.errors import ConfigError, DataError, MammosynthError, WeightsError
from mammosynth.evaluate.leakage import evaluation_leakage
from mammosynth.evaluate.report import SECTIONS, write_report
from mammosynth.evaluate.synthetic import SyntheticPatches, load_synthetic_patches
from mammosynth.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

#: The real splits evaluate compares synthetic images with (FD/KID/PRDC/LPIPS/diversity/t-SNE
#: against test, the two-sample test against val + test); the generator learns from train.
HELD_OUT = ("val", "test")
#: ``--lesion-type`` values: every lesion pooled (plus per-type blocks), or one type only.
LESION_TYPE_CHOICES: tuple[str, ...] = ("all",) + LESION_TYPES
#: A lesion type gets its own block in ``results_by_type`` with at least this many real
#: held-out (test) lesions and synthetic images of that type.
MIN_PER_TYPE = 2


def _section(results: dict, skipped: dict, seconds: dict, name: str, fn: Callable[[], Any]) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        results[name] = fn()
    except (WeightsError, MammosynthError, ValueError) as err:
        skipped[name] = str(err)
        log.warning("evaluate: %s skipped: %s", name, err)
    except Exception as err:  # an unexpected failure must not lose the other sections
        skipped[name] = f"failed: {type(err).__name__}: {err}"
        log.error("evaluate: %s failed\n%s", name, traceback.format_exc())
    seconds[name] = round(time.perf_counter() - t0, 2)
    # CPU seconds of this process (all its threads): comparable across runs on a shared machine
    seconds.setdefault("cpu", {})[name] = round(time.process_time() - c0, 2)


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
    downstream_amounts: tuple[float, ...] = (0.0, 0.5, 1.0),
    detector: str = "unet",
    allow_leakage: bool = False,
    lesion_type: str = "all",
) -> dict:
    """Evaluate the synthetic set ``synthetic`` against the store ``real``; returns metrics.json's dict.

    Leakage: the held-out splits (:data:`HELD_OUT`, val and test) are the reference every
    comparison uses, so a synthetic image made from one of their lesions (its manifest
    ``source_ids``) would flatter every metric. Such a set is refused with a
    :class:`DataError` naming the images, unless ``allow_leakage``, which evaluates it and
    reports them under ``leakage`` (and in the summary) as leaked.

    ``max_images`` caps each population (real train, real val, real test, synthetic; random, seeded).
    ``quick`` (the demo's mode): FD/KID in EfficientNet-Lite0 and pixel space only (VGG16 and
    Inception at 224/299 px dominate CPU time), t-SNE with 1,000 instead of 4,000 iterations,
    the two-sample test's quick mode (3 folds, 200 bootstrap resamples; still cross-fitted),
    real training images capped at 200. ``detector``: "unet" (default, CPU) or "retinanet" (needs
    torchvision + MONAI). Raises MammosynthError when the inputs cannot be evaluated at all.

    ``lesion_type`` (:data:`LESION_TYPE_CHOICES`): a single type restricts the real splits
    (store labels) and the synthetic set (manifest rows, :func:`row_lesion_type`) to that type
    before every section. ``"all"`` (default) pools every lesion as before and, when the store
    or the synthetic set holds more than one type, also computes every section per type present
    on both sides with at least :data:`MIN_PER_TYPE` real test lesions and synthetic images
    (``results_by_type``; the others are listed with the reason under ``types_not_evaluated``).
    The per-type pass reuses the features already extracted.
    """
    if lesion_type not in LESION_TYPE_CHOICES:
        raise ConfigError(f"--lesion-type must be one of {', '.join(LESION_TYPE_CHOICES)}, got {lesion_type!r}")
    want = None if lesion_type == "all" else lesion_type
    if want is not None and downstream:
        raise ConfigError(f"--downstream cannot be restricted to --lesion-type {want}: the detection experiment trains on "
                          "every lesion of the store; run it without --lesion-type (or with --lesion-type all)")
    out = Path(out)  # created only once the inputs have been read: a failed run leaves no empty report folder
    t_start, c_start = time.perf_counter(), time.process_time()
    dev = None if device == "auto" else device
    with Store(real) as st:
        S = st.patch_size
        rng = np.random.default_rng(seed)
        store_types = np.asarray(LESION_TYPES, dtype=object)[st.label_codes("lesion_type")]

        def take(split: str, cap: int) -> tuple[np.ndarray, np.ndarray]:
            idx = st.split_indices("lesions", split)
            if want is not None:
                idx = idx[store_types[idx] == want]
            if len(idx) > cap:
                idx = np.sort(rng.choice(idx, cap, replace=False))
            return st.lesions(indices=idx).patch, store_types[idx]

        real_train, train_t = take("train", min(max_images, 200) if quick else max_images)
        real_test, test_t = take("test", max_images)
        real_val, val_t = take("val", max_images)
        if len(real_test) < 2 or len(real_train) < 2:
            what = "lesions" if want is None else f"{want} lesions"
            hint = "" if want is None else f" (the store's lesion types: {_type_counts(store_types)}; choose another --lesion-type)"
            raise MammosynthError(f"{real}: need at least 2 train and 2 test {what} to evaluate against "
                                  f"(found {len(real_train)} and {len(real_test)}){hint}")
        syn = load_synthetic_patches(synthetic, S, limit=max_images, lesion_type=want)
        syn_t = syn.lesion_types
        leakage = evaluation_leakage(syn.rows, real, HELD_OUT)
        leakage["allowed"] = bool(allow_leakage)
        if leakage["n_leaked"] and not allow_leakage:
            raise DataError(
                f"{Path(synthetic) / 'manifest.csv'}: {leakage['n_leaked']} of {leakage['n_images']} synthetic images were "
                f"made from lesions of the evaluation splits ({'/'.join(HELD_OUT)}) of {real} (e.g. "
                f"{', '.join(leakage['leaked_files'][:3])} from {', '.join(leakage['leaked_source_ids'][:3])}); comparing "
                "them with those lesions flatters every metric. Generate from the train split (`generate --split train`, "
                "the default) or pass --allow-leakage to evaluate with them reported as leaked")
        # as many tissue tiles as the larger lesion group (seed 003: 500 per group at most)
        normal_tiles = _normal_tiles(st, S, n=min(500, max_images, max(len(real_test), len(syn.images))), seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    feats: dict[str, dict[str, np.ndarray]] = {}

    nets = ("effnet",) if quick else ("vgg16", "effnet", "inception")
    _section(results, skipped, seconds, "feature_distances", lambda: _feature_distances(
        real_train, real_test, syn.images, weights_dir, dev, seed, feats, nets))
    if quick:
        skipped["feature_distances.FD-VGG16"] = ("quick mode: VGG16 at 224 px costs about 15 GFLOP per image on the CPU; "
                                                 "run `mammosynth evaluate` without --quick for FD-VGG16 (and FID when imported)")
    for name, r in list(results.get("feature_distances", {}).items()):
        if isinstance(r, dict) and "skipped" in r:
            skipped[f"feature_distances.{name}"] = r["skipped"]
    _section(results, skipped, seconds, "lpips", lambda: _lpips(real_test, syn.images, seed, weights_dir, dev))
    _section(results, skipped, seconds, "prdc", lambda: _prdc(feats))
    _section(results, skipped, seconds, "diversity", lambda: _diversity(real_test, syn.images, seed, dev))
    _section(results, skipped, seconds, "memorisation", lambda: _memorisation(real_train, syn.images, out, feats))
    _section(results, skipped, seconds, "tsne", lambda: _tsne(real_test, syn.images, normal_tiles, out, quick, seed))
    _section(results, skipped, seconds, "two_sample", lambda: _two_sample(real_test, real_val, syn.images, seed, S, quick, dev))
    if classifier is not None:
        from mammosynth.evaluate.label_fidelity import label_fidelity

        _section(results, skipped, seconds, "label_fidelity", lambda: label_fidelity(
            classifier, synthetic, real_store=real, device=device, allow_leakage=allow_leakage, lesion_type=want))
    else:
        skipped["label_fidelity"] = "no --classifier run given (train one with `mammosynth train classifier`)"
    if segmenter is not None:
        _section(results, skipped, seconds, "mask_fidelity", lambda: mask_fidelity(
            segmenter, syn, real, out=out, device=device, lesion_type=want))
    else:
        skipped["mask_fidelity"] = "no --segmenter run given (train one with `mammosynth train segmenter`)"
    if downstream:
        from mammosynth.evaluate.downstream import downstream_detection

        _section(results, skipped, seconds, "downstream", lambda: downstream_detection(
            real, synthetic, out, amounts=downstream_amounts, steps=downstream_steps, seeds=downstream_seeds,
            device=device, progress=False, detector=detector))
    else:
        skipped["downstream"] = "not requested (pass --downstream)"
    _grid(real_test, syn.images, out, seed)

    # -- per lesion type: every section again on each type's images, reusing the features --
    types = {"real_train": train_t, "real_test": test_t, "real_val": val_t, "synthetic": syn_t}
    n_by_type = {t: {k: int((v == t).sum()) for k, v in types.items()}
                 for t in LESION_TYPES if any((v == t).any() for v in types.values())}
    by_type: dict[str, Any] = {}
    not_evaluated: dict[str, str] = {}
    t_types = time.perf_counter()
    if want is None and len(n_by_type) > 1:
        for t, n in n_by_type.items():
            why = _type_too_small(n)
            if why:
                not_evaluated[t] = why
                log.warning("evaluate: lesion type %s not evaluated on its own: %s", t, why)
                continue
            sel = {k: v == t for k, v in types.items()}
            by_type[t] = _type_block(
                t, sel, real_train, real_test, real_val, syn, normal_tiles, feats, results, skipped, out, quick, seed,
                S, weights_dir, dev, device, classifier, segmenter, synthetic, real, allow_leakage)
        seconds["by_type"] = round(time.perf_counter() - t_types, 2)
    metrics = {
        "inputs": {"real": str(real), "synthetic": str(synthetic), "patch_size": S, "n_real_train": int(len(real_train)),
                   "n_real_test": int(len(real_test)), "n_real_val": int(len(real_val)), "n_synthetic": int(len(syn.images)),
                   "n_synthetic_with_mask": int(syn.masks.any(axis=(1, 2)).sum()), "n_normal_tiles": int(len(normal_tiles)),
                   "seed": seed, "quick": quick, "max_images": max_images, "weights_dir": str(weights_dir) if weights_dir else None,
                   "lesion_type": lesion_type, "n_by_type": n_by_type},
        "leakage": leakage,
        "summary": {**_leakage_summary(leakage), **summarise(results)},
        "results": results,
        "skipped": skipped,
        "results_by_type": by_type,
        "types_not_evaluated": not_evaluated,
        "seconds": {**{k: v for k, v in seconds.items() if k != "cpu"}, "total": round(time.perf_counter() - t_start, 2)},
        "cpu_seconds": {**seconds.get("cpu", {}), "total": round(time.process_time() - c_start, 2)},
    }
    metrics = _json_clean(metrics)
    write_json_atomic(out / "metrics.json", metrics)

    write_report(metrics, out)
    return metrics


def _type_counts(types: np.ndarray) -> str:
    counts = {t: int((types == t).sum()) for t in LESION_TYPES if (types == t).any()}
    return ", ".join(f"{n} {t}" for t, n in counts.items()) or "no lesions"


def _type_too_small(n: dict[str, int]) -> str | None:
    """Why a lesion type gets no per-type block (None when it can be evaluated on its own)."""
    if not n["synthetic"]:
        return f"only in the real store ({n['real_test']} test lesions), no synthetic image of this type"
    if not (n["real_test"] or n["real_train"] or n["real_val"]):
        return f"only in the synthetic set ({n['synthetic']} images), no real lesion of this type"
    if n["real_test"] < MIN_PER_TYPE or n["synthetic"] < MIN_PER_TYPE:
        return (f"{n['real_test']} real held-out (test) lesions and {n['synthetic']} synthetic images of this type; "
                f"need at least {MIN_PER_TYPE} of each")
    return None


def _type_block(t: str, sel: dict[str, np.ndarray], real_train, real_test, real_val, syn: SyntheticPatches,
                normal_tiles, feats: dict, overall: dict, overall_skipped: dict, out: Path, quick: bool, seed: int,
                S: int, weights_dir, dev, device: str, classifier, segmenter, synthetic, real, allow_leakage: bool) -> dict:
    """Every section on the images of lesion type ``t`` (``sel``: boolean masks per population).
    Feature distances, PRDC and feature-space memorisation reuse the features of the pooled pass;
    plots go to ``OUT/by_type/<t>/``."""
    tr, te, va = real_train[sel["real_train"]], real_test[sel["real_test"]], real_val[sel["real_val"]]
    sy = syn.subset(sel["synthetic"])
    sub = {net: {"train": f["train"][sel["real_train"]], "test": f["test"][sel["real_test"]],
                 "synthetic": f["synthetic"][sel["synthetic"]]} for net, f in feats.items()}
    tdir = out / "by_type" / t
    tdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    _section(results, skipped, seconds, "feature_distances", lambda: _feature_distances_from(
        tr, te, sy.images, sub, overall.get("feature_distances") or {}, seed))
    for name, r in list(results.get("feature_distances", {}).items()):
        if isinstance(r, dict) and "skipped" in r:
            skipped[f"feature_distances.{name}"] = r["skipped"]
    if "lpips" in overall:
        _section(results, skipped, seconds, "lpips", lambda: _lpips(te, sy.images, seed, weights_dir, dev))
    if "prdc" in overall:
        _section(results, skipped, seconds, "prdc", lambda: _prdc(sub))
    _section(results, skipped, seconds, "diversity", lambda: _diversity(te, sy.images, seed, dev))
    _section(results, skipped, seconds, "memorisation", lambda: _prefix_pngs(
        _memorisation(tr, sy.images, tdir, sub), f"by_type/{t}/"))
    _section(results, skipped, seconds, "tsne", lambda: _prefix_pngs(
        _tsne(te, sy.images, normal_tiles, tdir, quick, seed), f"by_type/{t}/"))
    _section(results, skipped, seconds, "two_sample", lambda: _two_sample(te, va, sy.images, seed, S, quick, dev))
    if classifier is not None and "label_fidelity" in overall:
        from mammosynth.evaluate.label_fidelity import label_fidelity

        _section(results, skipped, seconds, "label_fidelity", lambda: label_fidelity(
            classifier, synthetic, real_store=real, device=device, allow_leakage=allow_leakage, lesion_type=t))
    if segmenter is not None and "mask_fidelity" in overall:
        _section(results, skipped, seconds, "mask_fidelity", lambda: _prefix_pngs(mask_fidelity(
            segmenter, sy, real, out=tdir, device=device, lesion_type=t), f"by_type/{t}/"))
    for name in SECTIONS:  # what the pooled pass skipped is skipped here for the same reason
        if name not in results and name not in skipped and name in overall_skipped:
            skipped[name] = overall_skipped[name]
    if "downstream" in overall:
        skipped["downstream"] = ("run once on the pooled set (it trains several detectors); for one type run "
                                 "`mammosynth evaluate --lesion-type TYPE` (downstream is not restricted per type yet)")
    return {"n_real_train": int(len(tr)), "n_real_test": int(len(te)), "n_real_val": int(len(va)),
            "n_synthetic": int(len(sy.images)), "n_synthetic_with_mask": int(sy.masks.any(axis=(1, 2)).sum()),
            "summary": summarise(results), "results": results, "skipped": skipped,
            "seconds": {k: v for k, v in seconds.items() if k != "cpu"}}


def _prefix_pngs(r: dict, prefix: str) -> dict:
    """PNG names of a per-type section, relative to the report folder."""
    for key in ("png", "histogram_png", "pairs_png"):
        if r.get(key):
            r[key] = prefix + str(r[key])
    return r


def _lpips(real_test: np.ndarray, synth: np.ndarray, seed: int, weights_dir, dev) -> dict:
    from mammosynth.evaluate import lpips

    return {net: lpips.mean_lpips(real_test, synth, net=net, seed=seed, weights_dir=weights_dir, device=dev).to_dict()
            for net in ("alex", "vgg")}


def _two_sample(real_test: np.ndarray, real_val: np.ndarray, synth: np.ndarray, seed: int, size: int, quick: bool, dev) -> dict:
    """Held-out real lesions only: a generator's copies of its training lesions would pass as "real"."""
    from mammosynth.evaluate.two_sample import classifier_two_sample_test

    real_pool = np.concatenate([real_test, real_val])
    return {**classifier_two_sample_test(real_pool, synth, seed=seed, size=size, quick=quick, device=dev),
            "real_pool": f"real held-out lesions: test + val ({len(real_test)} + {len(real_val)}), never the generator's "
                         "training split"}


def _feature_distances_from(real_train, real_test, synth, feats: dict, overall: dict, seed: int) -> dict:
    """As :func:`_feature_distances`, from features already extracted (a per-type subset);
    a feature space the pooled pass skipped is skipped here with its reason."""
    from mammosynth.evaluate import frechet
    from mammosynth.evaluate.features import FEATURE_NETS, pixel_features

    res: dict[str, Any] = {}
    by_name = {FEATURE_NETS[net]: net for net in FEATURE_NETS}
    for name, r in overall.items():
        if name == "FD-pixels16":
            continue
        if isinstance(r, dict) and "skipped" in r:
            res[name] = {"skipped": r["skipped"]}
            continue
        net = next((n for (fd, _), n in by_name.items() if fd == name), None)
        if net is None or net not in feats:
            continue
        f = feats[net]
        res[name] = frechet.fd_with_floor(f["train"], f["test"], f["synthetic"], name, FEATURE_NETS[net][1],
                                          seed=seed).to_dict()
    px = {k: pixel_features(v, size=16) for k, v in (("train", real_train), ("test", real_test), ("synthetic", synth))}
    res["FD-pixels16"] = frechet.fd_with_floor(px["train"], px["test"], px["synthetic"], "FD-pixels16", "KID-pixels16",
                                               seed=seed).to_dict()
    return res


def _leakage_summary(leakage: dict) -> dict[str, Any]:
    if not leakage["n_leaked"]:
        return {}
    return {f"LEAKED synthetic images (made from {'/'.join(leakage['splits'])} lesions; --allow-leakage)":
            f"{leakage['n_leaked']} of {leakage['n_images']}"}


def _json_clean(obj: Any) -> Any:
    """Plain JSON types, NaN/inf -> None (strict JSON has no NaN), numpy -> Python."""
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _normal_tiles(st: Store, size: int, n: int, seed: int) -> np.ndarray:
    """(n, size, size) lesion-free tissue tiles in [0, 1] from the store's normals (the third
    population of the seed-003 t-SNE); (0, size, size) when the store has no normals."""
    import torch

    from mammosynth.models.segmenter import tile_from_normal

    idx = st.split_indices("normals", None)
    if len(idx) == 0:
        return np.zeros((0, size, size), np.float32)
    rng = np.random.default_rng([seed, 17])
    picks = np.sort(rng.choice(idx, n, replace=True))  # sorted: each normal is read once
    tiles = []
    for j in np.unique(picks):
        nm = st.normal(int(j))
        image = torch.from_numpy(nm["image"])[None] * 2 - 1
        breast = torch.from_numpy(nm["breast_mask"].astype(np.float32))[None]
        for _ in range(int((picks == j).sum())):
            tiles.append(((tile_from_normal(image, breast, size, rng)["image"][0] + 1) / 2).numpy())
    return np.stack(tiles).astype(np.float32)


def _feature_distances(real_train, real_test, synth, weights_dir, device, seed: int, feats: dict,
                       nets: tuple[str, ...] = ("vgg16", "effnet", "inception")) -> dict:
    """FD/KID floor, score and ratio per ImageNet feature space, plus a weight-free pixel-space FD."""
    from mammosynth.evaluate import frechet
    from mammosynth.evaluate.features import pixel_features

    res = frechet.feature_distance_suite(real_train, real_test, synth, nets=nets, weights_dir=weights_dir, device=device,
                                         seed=seed, features=feats)
    # pixels area-resized to 16x16 (256-d): enough samples for a stable covariance on small sets
    px = {k: pixel_features(v, size=16) for k, v in (("train", real_train), ("test", real_test), ("synthetic", synth))}
    res["FD-pixels16"] = frechet.fd_with_floor(px["train"], px["test"], px["synthetic"], "FD-pixels16", "KID-pixels16",
                                               seed=seed).to_dict()
    return res


def _prdc(feats: dict) -> dict:
    from mammosynth.evaluate.prdc import prdc

    if not feats:
        raise WeightsError("no ImageNet features were computed (feature-network weights missing: run `mammosynth weights get`), "
                           "so PRDC has no feature space")
    return {net: prdc(f["test"], f["synthetic"], k=5).to_dict() for net, f in feats.items()}


def _diversity(real: np.ndarray, synth: np.ndarray, seed: int, device) -> dict:
    from mammosynth.evaluate.diversity import msssim_diversity

    return {"real_test": msssim_diversity(real, seed=seed, device=device).to_dict(),
            "synthetic": msssim_diversity(synth, seed=seed, device=device).to_dict()}


def _memorisation(real_train: np.ndarray, synth: np.ndarray, out: Path, feats: dict) -> dict:
    """Pixel space (with PNGs); also VGG16 feature space when those features exist."""
    from mammosynth.evaluate.memorisation import memorisation_check

    r = memorisation_check(synth, real_train, out_dir=out).summary()
    for key in ("histogram_png", "pairs_png"):  # relative names: the report folder can move
        if r.get(key):
            r[key] = Path(r[key]).name
    if "vgg16" in feats:
        f = feats["vgg16"]
        fr = memorisation_check(synth, real_train, space="features", synthetic_features=f["synthetic"],
                                train_features=f["train"]).summary()
        r["vgg16_features"] = {k: fr[k] for k in ("threshold", "n_flagged", "fraction_flagged", "synthetic_to_train_median",
                                                  "train_to_train_median")}
    return r


def _tsne(real: np.ndarray, synth: np.ndarray, normal: np.ndarray, out: Path, quick: bool, seed: int) -> dict:
    from mammosynth.evaluate.tsne import SEED003_ITERATIONS, tsne_embedding

    res = tsne_embedding(real, synth, normal if len(normal) else None, n_iter=1000 if quick else SEED003_ITERATIONS,
                         seed=seed, out_png=out / "tsne.png")
    s = res.summary()
    s["png"] = "tsne.png"
    return s


def mask_fidelity(segmenter_run: str | Path | Any, syn: SyntheticPatches, real_store: str | Path, out: Path | None = None,
                  device: str = "auto", threshold: float = 0.5, lesion_type: str | None = None) -> dict:
    """Dice between the mask each synthetic lesion was asked to fill and the lesion the
    segmenter finds in it (``prob >= threshold``), next to the segmenter's Dice on the real
    test split (its ceiling; only its ``lesion_type`` lesions when given). ``segmenter_run``: a
    run folder or a loaded Segmenter. Writes ``mask_fidelity.png`` (requested = green,
    segmented = red) when ``out`` is given."""
    import torch

    from mammosynth.models.segmenter import dice_coefficient
    from mammosynth.train.run import load_method

    seg = load_method(segmenter_run, device=device, expect="segmenter") if isinstance(segmenter_run, (str, Path)) else segmenter_run
    has = syn.masks.any(axis=(1, 2))
    if not has.any():
        raise MammosynthError("the synthetic set has no lesion masks to compare against (mask fidelity needs masks/)")
    x = torch.from_numpy(syn.images[has])[:, None] * 2 - 1
    pred = seg.predict(x)[:, 0].numpy() >= threshold
    d_syn = np.array([dice_coefficient(p, m) for p, m in zip(pred, syn.masks[has])])
    les = read_lesion_split(real_store, "test", "measure the segmenter's own Dice on")
    if lesion_type is not None:
        keep = np.asarray(les.lesion_type if les.lesion_type is not None else ["mass"] * len(les.index)) == lesion_type
        if not keep.any():
            raise MammosynthError(f"{real_store}: no {lesion_type} lesion in the test split to measure the segmenter's own Dice on")
        les.patch, les.mask = les.patch[keep], les.mask[keep]
    pr = seg.predict(torch.from_numpy(les.patch)[:, None] * 2 - 1)[:, 0].numpy() >= threshold
    d_real = np.array([dice_coefficient(p, m) for p, m in zip(pr, les.mask)])
    ms, mr = float(d_syn.mean()), float(d_real.mean())
    result = {"dice_synthetic_mean": ms, "dice_synthetic_median": float(np.median(d_syn)), "dice_synthetic_std": float(d_syn.std()),
              "fraction_synthetic_dice_over_0.5": float((d_syn > 0.5).mean()), "n_synthetic": int(has.sum()),
              "dice_real_test_mean": mr, "dice_real_test_median": float(np.median(d_real)), "n_real_test": int(len(d_real)),
              "ratio_synthetic_to_real": ms / mr if mr > 0 else None, "threshold": threshold,
              "segmenter": str(getattr(seg, "run_dir", segmenter_run))}
    if out is not None:
        _mask_png(syn.images[has], syn.masks[has], pred, d_syn, Path(out) / "mask_fidelity.png")
        result["png"] = "mask_fidelity.png"
    return result


def _mask_png(images: np.ndarray, requested: np.ndarray, found: np.ndarray, dice: np.ndarray, path: Path, n: int = 8) -> None:
    """Worst, median and best Dice examples with the requested (green) and segmented (red) outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(dice)
    pick = order[np.unique(np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int))]
    fig, axes = plt.subplots(1, len(pick), figsize=(1.7 * len(pick), 2.1), squeeze=False)
    for ax, k in zip(axes[0], pick):
        ax.imshow(images[k], cmap="gray", vmin=0, vmax=1)
        ax.contour(requested[k], levels=[0.5], colors="lime", linewidths=0.8)
        if found[k].any():
            ax.contour(found[k], levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"Dice {dice[k]:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle("requested mask (green) vs segmented lesion (red), worst to best", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def summarise(results: dict) -> dict[str, Any]:
    """The headline numbers, flat (also shown at the top of the report)."""
    s: dict[str, Any] = {}
    for name, r in (results.get("feature_distances") or {}).items():
        if isinstance(r, dict) and "ratio" in r:
            s[f"{name} ratio score/floor (1 = as close as held-out real)"] = r["ratio"]
            s[f"{name} score (synthetic vs real test)"] = r["score"]
            s[f"{name} floor (real train vs real test)"] = r["floor"]
            s[f"{r['kid_name']} score (synthetic vs real test)"] = r["kid_score"].get("mean")
            s[f"{r['kid_name']} floor (real train vs real test)"] = r["kid_floor"].get("mean")
    for net, r in (results.get("lpips") or {}).items():
        s[f"LPIPS-{net} mean real<->synthetic"] = r.get("mean")
    for net, r in (results.get("prdc") or {}).items():
        for k in ("precision", "recall", "density", "coverage"):
            if k in r:
                s[f"{k} ({net})"] = r[k]
    div = results.get("diversity") or {}
    for who in ("real_test", "synthetic"):
        if who in div:
            s[f"MS-SSIM diversity ({who.replace('_', ' ')})"] = div[who].get("mean")
    mem = results.get("memorisation") or {}
    if "n_flagged" in mem:
        s["near-copies flagged (pixel space)"] = f"{mem['n_flagged']} of {mem['n_synthetic']}"
    ts = results.get("two_sample")
    if ts:
        s["two-sample AUC (0.5 = indistinguishable)"] = ts["auc"]
        if ts["auc_ci"][0] is not None:
            s["two-sample AUC 95% CI"] = f"{ts['auc_ci'][0]:.3f}-{ts['auc_ci'][1]:.3f}"
    lf = results.get("label_fidelity")
    if lf:
        for kind in ("margin", "shape"):
            g, r = lf.get("generated", {}).get(f"{kind}_accuracy"), lf.get("real", {}).get(f"{kind}_accuracy")
            if g is not None:
                s[f"label fidelity: {kind} accuracy on generated"] = g
            if r is not None:
                s[f"label fidelity: {kind} accuracy on real test"] = r
        if lf.get("categories_judged"):
            s[f"label fidelity: categories with margin ratio >= {lf['margin_ratio_reference']} (our reference line)"] = \
                f"{lf['categories_at_reference']} of {lf['categories_judged']}"
        if lf.get("leaked"):
            s["label fidelity: LEAKED (judge saw the seeds, training or real lesions)"] = "; ".join(lf["protocol"]["problems"])
    mf = results.get("mask_fidelity")
    if mf:
        s["mask fidelity Dice (synthetic, requested vs segmented)"] = mf["dice_synthetic_mean"]
        s["segmenter Dice (real test)"] = mf["dice_real_test_mean"]
    ds = results.get("downstream")
    if ds:
        first, last = ds["summary"][0], ds["summary"][-1]
        s["downstream recall (real only)"] = first["recall"]["mean"]
        s[f"downstream recall (+{last['n_synthetic']} synthetic)"] = last["recall"]["mean"]
        g = last["recall_gain_vs_real_only"]
        s["downstream recall gain"] = g["mean"]
        if g["ci"][0] is not None and math.isfinite(g["ci"][0]):
            s["downstream recall gain 95% CI"] = f"{g['ci'][0]:+.3f} to {g['ci'][1]:+.3f}"
        s["downstream FROC AUC (real only -> most synthetic)"] = f"{first['froc_auc']['mean']:.3f} -> {last['froc_auc']['mean']:.3f}"
        s["detector"] = ds["detector"]
    return s


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _grid(real: np.ndarray, synth: np.ndarray, out: Path, seed: int, n: int = 16) -> None:
    """``samples_real.png`` and ``samples_synthetic.png``: n random patches of each, 2 rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    for arr, title, name in ((real, "real test lesions", "samples_real.png"), (synth, "synthetic lesions", "samples_synthetic.png")):
        fig, axs = plt.subplots(2, n // 2, figsize=(n * 0.8, 2.0 * 2), squeeze=False)
        for ax in axs.ravel():
            ax.axis("off")
        for ax, k in zip(axs.ravel(), rng.choice(len(arr), min(n, len(arr)), replace=False)):
            ax.imshow(arr[k], cmap="gray", vmin=0, vmax=1)
        fig.suptitle(title)
        fig.tight_layout()
        _save(fig, out / name)
