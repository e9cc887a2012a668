"""Precision, recall, density and coverage on k-NN manifolds (Naeem et al., ICML 2020).

With real features X (N) and synthetic features Y (M), B(x, NND_k(x)) the ball around x reaching
its k-th nearest neighbour within its own set (Euclidean):

- precision = 1/M sum_j 1[Y_j in union_i B(X_i, NND_k(X_i))]          (Naeem eq. 1; Kynkaanniemi 2019)
- recall    = 1/N sum_i 1[X_i in union_j B(Y_j, NND_k(Y_j))]          (eq. 2)
- density   = 1/(kM) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]        (eq. 3; ~1 when Y ~ X, can exceed 1)
- coverage  = 1/N sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))]       (eq. 4)

k = 5 as in the paper. Features are any (N, D) arrays (e.g. FD-VGG16 features).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors

from mammosynth.errors import MammosynthError


@dataclass
class PRDC:
    precision: float
    recall: float
    density: float
    coverage: float
    k: int
    n_real: int
    n_synthetic: int

    def to_dict(self) -> dict:
        return asdict(self)


def knn_radii(feat: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row: (N,)."""
    # k+1 neighbours because each point is its own nearest neighbour at distance 0
    nn = NearestNeighbors(n_neighbors=k + 1).fit(feat)
    dist, _ = nn.kneighbors(feat)
    return dist[:, k]


def prdc(real_feats, synth_feats, k: int = 5, chunk: int = 2048) -> PRDC:
    """Precision, recall, density, coverage of synthetic vs real features (both (N, D))."""
    x = np.asarray(real_feats, dtype=np.float64)
    y = np.asarray(synth_feats, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise MammosynthError(f"PRDC needs (N,D) and (M,D) features, got {x.shape} and {y.shape}")
    if x.shape[0] <= k or y.shape[0] <= k:
        raise MammosynthError(f"PRDC with k={k} needs more than {k} real and synthetic samples "
                              f"(got {x.shape[0]} and {y.shape[0]})")
    real_r = knn_radii(x, k)
    fake_r = knn_radii(y, k)
    in_real_balls = np.zeros(y.shape[0], dtype=np.int64)  # per synthetic: how many real balls hold it
    real_covered = np.zeros(x.shape[0], dtype=bool)
    real_recalled = np.zeros(x.shape[0], dtype=bool)
    for start in range(0, x.shape[0], chunk):
        d = pairwise_distances(x[start:start + chunk], y)  # (n_chunk, M)
        inside_real = d < real_r[start:start + chunk, None]
        in_real_balls += inside_real.sum(axis=0)
        real_covered[start:start + chunk] = inside_real.any(axis=1)
        real_recalled[start:start + chunk] = (d < fake_r[None, :]).any(axis=1)
    return PRDC(precision=float((in_real_balls > 0).mean()), recall=float(real_recalled.mean()),
                density=float(in_real_balls.sum() / (k * y.shape[0])), coverage=float(real_covered.mean()),
                k=k, n_real=int(x.shape[0]), n_synthetic=int(y.shape[0]))


__all__ = ["PRDC", "prdc", "knn_radii"]
