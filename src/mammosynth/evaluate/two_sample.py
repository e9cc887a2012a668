"""Classifier two-sample test (C2ST; Lopez-Paz & Oquab 2017): the automatic stand-in for a
reader study. Can a small CNN tell real from synthetic patches?

Cross-fitted: the items are split into k stratified folds; for each fold a fresh CNN learns
real-vs-synthetic on the other k-1 folds and scores the held-out fold, so every item gets
exactly one out-of-fold score from a CNN that never trained on it. The ROC AUC is computed
over all out-of-fold scores (0.5 = indistinguishable, 1.0 = always told apart), with a
percentile bootstrap CI that resamples items, or whole groups when ``groups`` are given
(e.g. the 8 dihedral views of one lesion: a group always stays in one fold and is resampled
as a unit, so a lesion seen in training never scores its own twin). The CI covers the
sampling of the test items for the fitted CNNs, not the CNNs' training randomness.

Balanced accuracy is reported at a threshold chosen on the training folds: fold k's CNN
scores its own training items and the logit that maximises balanced accuracy there is its
threshold, so it never sees fold k (a fixed logit-0 threshold read 0.50 beside an AUC of 1.00
when the held-out scores were shifted). Each fold's logits are centred on that threshold before
they are pooled: fold CNNs differ in scale and offset, and raw pooled logits can give a lower
AUC than every single fold (measured: 0.97 pooled from three folds of 1.00); the shift is
monotone per fold, uses training folds only, and leaves every fold's AUC unchanged. Each
CNN's loss weights the two classes equally.

``quick`` = 3 folds, 10 epochs and 200 bootstrap resamples instead of 5, 15 and 1000: the
same cross-fitted estimate with a weaker classifier (it can only under-state separability)
and a coarser CI, which is reported.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: (folds, epochs, bootstrap resamples) of the full and the quick mode.
FULL = (5, 15, 1000)
QUICK = (3, 10, 200)


class TwoSampleCNN(nn.Module):
    """Three conv-ReLU-pool stages, global average pool, one logit. Input (B,1,S,S) in [-1,1]."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 1
        for k in (width, width * 2, width * 4):
            layers += [nn.Conv2d(c, k, 3, padding=1), nn.BatchNorm2d(k), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = k
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC from ranks (Mann-Whitney U; ties count one half), equal to sklearn's roc_auc_score."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUC needs items of both classes")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def bootstrap_auc(y: np.ndarray, score: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                  groups: np.ndarray | None = None) -> tuple[float, float, float]:
    """ROC AUC and its percentile bootstrap CI. Resamples items with replacement within each
    class, or whole groups (all items of a group together) when ``groups`` is given."""
    y, score = np.asarray(y).astype(int), np.asarray(score, np.float64)
    auc = _auc(y, score)
    rng = np.random.default_rng(seed)
    boots = []
    if groups is None:
        by_class = [np.flatnonzero(y == c) for c in (0, 1)]
        for _ in range(n_boot):
            idx = np.concatenate([rng.choice(members, len(members)) for members in by_class])
            boots.append(_auc(y[idx], score[idx]))
    else:
        g = np.asarray(groups)
        units = [[np.flatnonzero((g == v) & (y == c)) for v in np.unique(g[y == c])] for c in (0, 1)]
        for _ in range(n_boot):
            parts: list[np.ndarray] = []
            for cls in units:
                parts += [cls[k] for k in rng.integers(0, len(cls), len(cls))]
            idx = np.concatenate(parts)
            boots.append(_auc(y[idx], score[idx]))
    if not boots:
        return auc, float("nan"), float("nan")
    lo, hi = np.percentile(boots, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return auc, float(lo), float(hi)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates (0.5 = chance whatever the class sizes)."""
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    return float(0.5 * ((pred[y]).mean() + (~pred[~y]).mean()))


def best_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold (predict synthetic when score >= t) that maximises balanced accuracy
    on (y, score); midway between neighbouring scores, so it transfers to new items."""
    y, score = np.asarray(y).astype(bool), np.asarray(score, np.float64)
    s = np.unique(score)
    cands = np.concatenate([[s[0] - 1.0], (s[1:] + s[:-1]) / 2, [s[-1] + 1.0]])
    pos, neg = np.sort(score[y]), np.sort(score[~y])
    tpr = 1.0 - np.searchsorted(pos, cands, side="left") / len(pos)  # share of positives with score >= t
    tnr = np.searchsorted(neg, cands, side="left") / len(neg)  # share of negatives with score < t
    return float(cands[int(np.argmax(tpr + tnr))])


def _prep(images: np.ndarray, size: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t * 2 - 1


def make_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N,) fold index in 0..k-1: stratified by class, every group in one fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    fold = np.full(len(y), -1)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        fold[test] = f
    return fold


def _fit_and_score(x: torch.Tensor, y: torch.Tensor, train: np.ndarray, test: np.ndarray, epochs: int, batch_size: int,
                   lr: float, seed: int, dev: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Train a fresh CNN on ``train`` items (classes weighted equally); its logits of the
    ``train`` and of the ``test`` items (eval mode)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TwoSampleCNN().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xtr, ytr = x[train].to(dev), y[train].to(dev)
    n_pos = float(ytr.sum())
    pos_weight = torch.tensor((len(train) - n_pos) / max(n_pos, 1.0), device=dev)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=g)
        for b in range(0, len(order), batch_size):
            sel = order[b:b + batch_size]
            if len(sel) < 2:  # BatchNorm needs two items
                continue
            xb = xtr[sel]
            if torch.rand((), generator=g) < 0.5:  # flips: orientation must not be the tell
                xb = xb.flip(-1)
            loss = F.binary_cross_entropy_with_logits(model(xb), ytr[sel], pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        def score(idx: np.ndarray) -> np.ndarray:
            xs = x[idx]
            return torch.cat([model(xs[b:b + 256].to(dev)) for b in range(0, len(idx), 256)]).float().cpu().numpy()

        return score(train), score(test)


def cross_fitted_scores(x: torch.Tensor, y: np.ndarray, groups: np.ndarray, folds: int = 5, epochs: int = 15,
                        batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                        device: str | torch.device | None = None) -> dict[str, np.ndarray]:
    """Out-of-fold scores of every item. x (N,1,S,S) in [-1,1], y (N,) 0 real / 1 synthetic,
    groups (N,) (items of one group share a fold). Returns {"score", "logit", "fold",
    "threshold"} ((N,) each): ``logit`` is the fold CNN's output, ``threshold`` the logit that
    maximises balanced accuracy on that CNN's own training folds, and ``score = logit -
    threshold`` (each fold centred on its own decision point, so scores of different fold CNNs
    compare; a monotone shift per fold leaves every fold's AUC unchanged)."""
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    y = np.asarray(y).astype(int)
    fold = make_folds(y, groups, folds, seed)
    logit, threshold = np.zeros(len(y), np.float64), np.zeros(len(y), np.float64)
    yt = torch.as_tensor(y, dtype=torch.float32)
    for f in range(folds):
        test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        train_logit, logit[test] = _fit_and_score(x, yt, train, test, epochs, batch_size, lr, seed * 1000 + f, dev)
        threshold[test] = best_threshold(y[train], train_logit)
    return {"score": logit - threshold, "logit": logit, "fold": fold, "threshold": threshold}


def _balanced_groups(groups: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of whole groups, in random order, until at least ``target`` items (or all)."""
    uniq = rng.permutation(np.unique(groups))
    keep, n = [], 0
    for g in uniq:
        if n >= target:
            break
        members = np.flatnonzero(groups == g)
        keep.append(members)
        n += len(members)
    return np.sort(np.concatenate(keep))


def classifier_two_sample_test(
    real: np.ndarray,
    synthetic: np.ndarray,
    seed: int = 0,
    size: int = 64,
    folds: int | None = None,
    epochs: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    n_boot: int | None = None,
    device: str | torch.device | None = None,
    real_groups: np.ndarray | None = None,
    synthetic_groups: np.ndarray | None = None,
    quick: bool = False,
    balance: bool = True,
    level: float = 0.95,
) -> dict:
    """Cross-fitted C2ST of ``real`` vs ``synthetic`` ((N, H, W) float arrays in [0, 1]).

    ``real_groups`` / ``synthetic_groups``: optional (N,) group labels per image (e.g. a lesion
    id shared by its dihedral views); a group stays in one fold and is resampled whole by the
    bootstrap. ``balance``: the larger class is subsampled (whole groups, at random) to about
    the smaller one's size. ``folds``, ``epochs``, ``n_boot`` default to :data:`FULL`, or
    :data:`QUICK` with ``quick``. Returns a JSON-ready dict: ``auc``, ``auc_ci``,
    ``balanced_accuracy``, ``fold_aucs``, counts and the settings.
    """
    k_def, e_def, b_def = QUICK if quick else FULL
    folds, epochs, n_boot = folds or k_def, epochs or e_def, n_boot if n_boot is not None else b_def
    rng = np.random.default_rng(seed)
    real, synthetic = np.asarray(real), np.asarray(synthetic)
    g_real = np.asarray(real_groups) if real_groups is not None else np.arange(len(real))
    g_syn = np.asarray(synthetic_groups) if synthetic_groups is not None else np.arange(len(synthetic))
    if len(g_real) != len(real) or len(g_syn) != len(synthetic):
        raise ValueError("real_groups / synthetic_groups need one label per image")
    if min(len(real), len(synthetic)) < 8:
        raise ValueError(f"the two-sample test needs at least 8 images per class, got {len(real)} real and {len(synthetic)} synthetic")
    r_idx, s_idx = np.arange(len(real)), np.arange(len(synthetic))
    if balance:
        n = min(len(real), len(synthetic))
        r_idx = _balanced_groups(g_real, n, rng) if len(real) > n else r_idx
        s_idx = _balanced_groups(g_syn, n, rng) if len(synthetic) > n else s_idx
    n_groups = min(len(np.unique(g_real[r_idx])), len(np.unique(g_syn[s_idx])))
    folds = min(folds, n_groups)
    if folds < 2:
        raise ValueError(f"the two-sample test needs at least 2 groups per class for cross-fitting, got {n_groups}")
    x = torch.cat([_prep(real[r_idx], size), _prep(synthetic[s_idx], size)])
    y = np.r_[np.zeros(len(r_idx), int), np.ones(len(s_idx), int)]
    # real and synthetic groups are different units even when their labels coincide
    groups = np.r_[[f"r:{v}" for v in g_real[r_idx]], [f"s:{v}" for v in g_syn[s_idx]]]
    cf = cross_fitted_scores(x, y, groups, folds=folds, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)
    score, fold = cf["score"], cf["fold"]
    grouped = real_groups is not None or synthetic_groups is not None
    auc, lo, hi = bootstrap_auc(y, score, n_boot=n_boot, seed=seed, level=level, groups=groups if grouped else None)
    fold_aucs = [_auc(y[fold == f], score[fold == f]) for f in range(folds) if len(set(y[fold == f])) == 2]
    return {
        "auc": auc, "auc_ci": [lo, hi], "level": level,
        "ci_method": f"percentile bootstrap over {'groups' if grouped else 'images'} (stratified), out-of-fold scores",
        "n_boot": n_boot,
        "balanced_accuracy": balanced_accuracy(y, score >= 0),
        "threshold_method": "per fold: the logit that maximises balanced accuracy on that fold CNN's own training folds",
        "folds": folds, "fold_aucs": fold_aucs, "epochs": epochs, "quick": bool(quick),
        "n_real": int(len(r_idx)), "n_synthetic": int(len(s_idx)),
        "n_groups_real": int(len(np.unique(g_real[r_idx]))), "n_groups_synthetic": int(len(np.unique(g_syn[s_idx]))),
        "protocol": "k-fold cross-fitting: every image scored once by a CNN that never trained on it",
    }
