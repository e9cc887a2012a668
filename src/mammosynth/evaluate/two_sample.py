"""Classifier two-sample test (C2ST; Lopez-Paz & Oquab 2017): the automatic stand-in for a
reader study. A small CNN learns to tell real from synthetic patches on one half of a
balanced sample; its ROC AUC on the other half, with a bootstrap CI, is reported. 0.5 means
the classifier cannot tell them apart; 1.0 means it always can.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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


def bootstrap_auc(y: np.ndarray, score: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC and its percentile bootstrap CI (resampling items with replacement)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    score = np.asarray(score)
    auc = float(roc_auc_score(y, score))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        boots.append(roc_auc_score(y[idx], score[idx]))
    lo, hi = np.percentile(boots, [(1 - level) / 2 * 100, (1 + level) / 2 * 100]) if boots else (np.nan, np.nan)
    return auc, float(lo), float(hi)


def _prep(images: np.ndarray, size: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t * 2 - 1


def classifier_two_sample_test(
    real: np.ndarray,
    synthetic: np.ndarray,
    seed: int = 0,
    size: int = 64,
    epochs: int = 15,
    batch_size: int = 32,
    lr: float = 1e-3,
    n_boot: int = 1000,
    device: str | torch.device | None = None,
) -> dict:
    """Train on a random half of a balanced real/synthetic sample; report held-out AUC.

    ``real``, ``synthetic``: (N, H, W) float arrays in [0, 1]. Each class is subsampled to the
    smaller count, then split 50/50 (stratified) into train and test halves.
    """
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(seed)
    n = min(len(real), len(synthetic))
    if n < 8:
        raise ValueError(f"the two-sample test needs at least 8 images per class, got {len(real)} real and {len(synthetic)} synthetic")
    r_idx = rng.permutation(len(real))[:n]
    s_idx = rng.permutation(len(synthetic))[:n]
    x = torch.cat([_prep(real[r_idx], size), _prep(synthetic[s_idx], size)])
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    half = n // 2
    perm_r, perm_s = rng.permutation(n), rng.permutation(n) + n
    train_idx = np.r_[perm_r[:half], perm_s[:half]]
    test_idx = np.r_[perm_r[half:], perm_s[half:]]
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TwoSampleCNN().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xtr, ytr = x[train_idx].to(dev), y[train_idx].to(dev)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_idx), generator=g)
        for b in range(0, len(order), batch_size):
            sel = order[b:b + batch_size]
            xb = xtr[sel]
            if torch.rand((), generator=g) < 0.5:  # flips: orientation must not be the tell
                xb = xb.flip(-1)
            loss = F.binary_cross_entropy_with_logits(model(xb), ytr[sel])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        scores = torch.cat([model(x[test_idx][b:b + 256].to(dev)) for b in range(0, len(test_idx), 256)]).float().cpu().numpy()
    y_test = y[test_idx].numpy()
    auc, lo, hi = bootstrap_auc(y_test, scores, n_boot=n_boot, seed=seed)
    acc = float(((scores > 0) == (y_test > 0.5)).mean())
    return {"auc": auc, "auc_ci": [lo, hi], "accuracy": acc, "n_train": int(len(train_idx)), "n_test": int(len(test_idx)),
            "epochs": epochs, "ci_method": "percentile bootstrap over held-out items", "n_boot": n_boot}
