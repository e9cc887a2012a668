"""Frechet distance and Kernel Inception-style Distance on feature vectors, with a real-data floor.

- Frechet distance (Heusel et al. 2017 / Dowson & Landau 1982):
  ``FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between Gaussians fitted to two
  feature sets (N, D).
- KID (Binkowski et al. 2018): the unbiased MMD^2 estimate with the cubic polynomial kernel
  ``k(x, y) = (x.y / D + 1)^3``, averaged over random subsets (mean and std).

The feature space names the metric: FD-VGG16 / KID-VGG16 (VGG16 conv5_3 pooled), FD-EffNet /
KID-EffNet (EfficientNet-Lite0 pooled), pixel-space FD. Only InceptionV3 pool3 features with the
pt_inception weights give "FID". Finite-sample FD is biased upwards (larger for fewer samples), so
:func:`fd_with_floor` also reports the *floor*: FD between two disjoint real sets (real-train vs
real-test), and the ratio score / floor (synthetic vs real-test over real-train vs real-test);
a ratio near 1 means the synthetic set is as close to the test set as more real data would be.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np
from scipy import linalg

from mammosynth.errors import MammosynthError, WeightsError


def _as_features(feat, name: str) -> np.ndarray:
    arr = np.asarray(feat, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise MammosynthError(f"{name}: expected features (N>=2, D), got shape {arr.shape}")
    return arr


def gaussian_stats(feat) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D,D) of features (N,D)."""
    arr = _as_features(feat, "features")
    return arr.mean(axis=0), np.cov(arr, rowvar=False)


def _trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray, method: str, eps: float) -> float:
    """Tr((S_a S_b)^(1/2)) by ``"eigh"`` (S_a^(1/2) S_b S_a^(1/2) is symmetric PSD with the same
    eigenvalues as S_a S_b) or by ``"sqrtm"`` (scipy.linalg.sqrtm of the product, the reference
    implementation's route)."""
    if method == "eigh":
        w, v = np.linalg.eigh(cov_a)
        root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        inner = root_a @ cov_b @ root_a
        ev = np.linalg.eigvalsh((inner + inner.T) / 2)
        return float(np.sqrt(np.clip(ev, 0, None)).sum())
    if method != "sqrtm":
        raise MammosynthError(f"unknown Frechet method '{method}' (expected auto, gram, eigh or sqrtm)")
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        # near-singular product (fewer samples than dimensions): regularise both covariances
        offset = np.eye(cov_a.shape[0]) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        # imaginary parts come from round-off on near-singular products; large ones are a real error
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * max(1.0, np.abs(covmean).max())):
            raise MammosynthError(f"Frechet distance: matrix square root has imaginary component "
                                  f"{np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b, method: str = "eigh", eps: float = 1e-6) -> float:
    """Frechet distance between N(mu_a, cov_a) and N(mu_b, cov_b) (>= 0).

    ``method``: ``"eigh"`` (default; symmetric eigendecompositions, exact and 3-4x faster at
    D = 1280) or ``"sqrtm"`` (``scipy.linalg.sqrtm`` of S_a S_b, with ``eps * I`` added when the
    product is singular). Both give the same value to round-off (tested).
    """
    mu_a, mu_b = np.atleast_1d(mu_a), np.atleast_1d(mu_b)
    cov_a, cov_b = np.atleast_2d(cov_a), np.atleast_2d(cov_b)
    diff = mu_a - mu_b
    tr_root = _trace_sqrt_product(cov_a, cov_b, method, eps)
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_root)
    return max(value, 0.0)


def frechet_distance(feat_a, feat_b, method: str = "auto") -> float:
    """Frechet distance between the Gaussians fitted to two feature sets (N_a,D), (N_b,D).

    ``method="auto"`` uses ``"gram"`` when a set has fewer samples than dimensions, else ``"eigh"``.
    ``"gram"``: with centred data X_a, X_b, the non-zero eigenvalues of S_a S_b are the squared
    singular values of X_b X_a^T / sqrt((N_a-1)(N_b-1)), so Tr((S_a S_b)^(1/2)) is that matrix's
    nuclear norm: exact, and costs min(N)^3 instead of D^3.
    """
    a, b = _as_features(feat_a, "feat_a"), _as_features(feat_b, "feat_b")
    if a.shape[1] != b.shape[1]:
        raise MammosynthError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if method == "auto":
        method = "gram" if min(a.shape[0], b.shape[0]) < a.shape[1] else "eigh"
    if method != "gram":
        return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b), method=method)
    mu_a, mu_b = a.mean(0), b.mean(0)
    xa, xb = a - mu_a, b - mu_b
    na, nb = a.shape[0] - 1, b.shape[0] - 1
    tr_root = float(np.linalg.svd(xb @ xa.T, compute_uv=False).sum() / np.sqrt(na * nb))
    diff = mu_a - mu_b
    value = float(diff @ diff + (xa * xa).sum() / na + (xb * xb).sum() / nb - 2.0 * tr_root)
    return max(value, 0.0)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


@dataclass
class KID:
    """KID estimate: mean and std of the unbiased MMD^2 over ``n_subsets`` subsets of ``subset_size``."""

    mean: float
    std: float
    n_subsets: int
    subset_size: int

    def to_dict(self) -> dict:
        return asdict(self)


def kid(feat_a, feat_b, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> KID:
    """Kernel distance (unbiased polynomial-kernel MMD^2) between feature sets; ~0 for one distribution.

    ``subset_size`` is capped at the smaller set size; each subset is drawn without replacement.
    """
    a, b = _as_features(feat_a, "feat_a"), _as_features(feat_b, "feat_b")
    if a.shape[1] != b.shape[1]:
        raise MammosynthError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    size = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    values = np.array([_mmd2_unbiased(a[rng.choice(a.shape[0], size, replace=False)],
                                      b[rng.choice(b.shape[0], size, replace=False)])
                       for _ in range(n_subsets)])
    return KID(mean=float(values.mean()), std=float(values.std()), n_subsets=n_subsets, subset_size=size)


@dataclass
class FloorScore:
    """FD/KID of synthetic vs real-test (score) next to real-train vs real-test (floor)."""

    name: str  # e.g. "FD-VGG16"
    score: float
    floor: float
    ratio: float  # score / floor; 1 = as close as held-out real data
    kid_name: str
    kid_score: dict
    kid_floor: dict
    n_train: int
    n_test: int
    n_synthetic: int

    def to_dict(self) -> dict:
        return asdict(self)


def fd_with_floor(train_feats, test_feats, synth_feats, name: str = "FD", kid_name: str = "KID",
                  kid_subsets: int = 50, kid_subset_size: int = 1000, seed: int = 0) -> FloorScore:
    """Floor (real-train vs real-test), score (synthetic vs real-test) and their ratio, for FD and KID."""
    tr, te, sy = (_as_features(f, n) for f, n in ((train_feats, "train"), (test_feats, "test"), (synth_feats, "synthetic")))
    floor = frechet_distance(tr, te)
    score = frechet_distance(sy, te)
    kid_floor = kid(tr, te, kid_subsets, kid_subset_size, seed)
    kid_score = kid(sy, te, kid_subsets, kid_subset_size, seed)
    return FloorScore(name=name, score=score, floor=floor, ratio=score / floor if floor > 0 else math.inf,
                      kid_name=kid_name, kid_score=kid_score.to_dict(), kid_floor=kid_floor.to_dict(),
                      n_train=tr.shape[0], n_test=te.shape[0], n_synthetic=sy.shape[0])


def feature_distance_suite(real_train, real_test, synthetic, nets=("vgg16", "effnet", "inception"),
                           weights_dir: str | os.PathLike | None = None, device=None, batch_size: int = 64,
                           size: int = 224, kid_subsets: int = 50, seed: int = 0,
                           features: dict | None = None) -> dict:
    """FD/KID floor, score and ratio in each learned feature space; JSON-able.

    Images: torch (N,1,H,W) in [-1,1] or numpy in [0,1]. A network without cached weights yields
    ``{"skipped": "<reason>"}`` for its entry (never a made-up number); "FID" (inception) is
    computed only when the user imported the pt_inception weights. ``features``, if given, is
    filled with ``{net: {"train": ..., "test": ..., "synthetic": ...}}`` for reuse (PRDC, t-SNE).
    """
    from mammosynth.evaluate.features import FEATURE_NETS, extract_features, load_feature_net

    out: dict = {}
    for net in nets:
        fd_name, kid_name = FEATURE_NETS[net]
        try:
            model = load_feature_net(net, weights_dir)
        except WeightsError as err:
            out[fd_name] = {"skipped": str(err)}
            continue
        feats = {k: extract_features(v, net, batch_size, device, size=size, model=model)
                 for k, v in (("train", real_train), ("test", real_test), ("synthetic", synthetic))}
        if features is not None:
            features[net] = feats
        out[fd_name] = fd_with_floor(feats["train"], feats["test"], feats["synthetic"], fd_name, kid_name,
                                     kid_subsets=kid_subsets, seed=seed).to_dict()
    return out


__all__ = ["frechet_distance", "frechet_distance_from_stats", "gaussian_stats", "kid", "KID", "fd_with_floor",
           "FloorScore", "feature_distance_suite"]
