"""Reader-study statistics: the seeds' protocols, written once and tested against hand values.

- Seed 003 (sec. 4.2): six confidence levels mapped to P(real) in
  {0.95, 0.77, 0.59, 0.41, 0.23, 0.05}; accuracy with 0.5 as threshold; the ROC curve.
- Seed 004 (sec. "Human evaluation"): real/fake + confidence, ROC, d', test-retest
  agreement as the Sokal-Michener coefficient (matches / total on the binary call).
- Seed 002 (sec. 6.3): realism scores 1-5 (5 = definitely realistic), mean per group.

Convention: the positive class is *real*; a reader's score is P(real). AUC = 0.5 means the
reader cannot tell real from synthetic (the synthesis "fooled" them); AUC = 1 means every
real image got a higher P(real) than every synthetic one.

Every function takes plain arrays: ``truth_real`` (n,) bool (True = real image) and
``p_real`` (n,) float in [0, 1]. No function reads files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

#: Level number (1..6, also the keyboard shortcut) -> (label, P(real)), seed 003 eq. in sec. 4.2.
LEVELS: dict[int, tuple[str, float]] = {
    1: ("extremely confident real", 0.95),
    2: ("moderately confident real", 0.77),
    3: ("slightly confident real", 0.59),
    4: ("slightly confident synthetic", 0.41),
    5: ("moderately confident synthetic", 0.23),
    6: ("extremely confident synthetic", 0.05),
}
#: Realism score (seed 002): 5 definitely realistic, 4 realistic, 3 neutral, 2 fake, 1 definitely fake.
REALISM_LABELS: dict[int, str] = {
    5: "definitely realistic", 4: "realistic", 3: "neutral", 2: "fake", 1: "definitely fake",
}
THRESHOLD = 0.5


def level_to_p_real(levels: np.ndarray | list[int]) -> np.ndarray:
    """(n,) int levels in 1..6 -> (n,) float P(real). Raises ValueError on any other value."""
    lv = np.asarray(levels, dtype=np.int64)
    if lv.size and (lv.min() < 1 or lv.max() > 6):
        raise ValueError(f"confidence levels must be in 1..6, got {sorted(set(lv.tolist()))}")
    table = np.array([np.nan] + [LEVELS[k][1] for k in range(1, 7)])
    return table[lv]


def _check(truth_real: np.ndarray, p_real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(truth_real, dtype=bool).ravel()
    p = np.asarray(p_real, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"truth has {t.size} entries but scores have {p.size}")
    return t, p


def accuracy(truth_real: np.ndarray, p_real: np.ndarray, threshold: float = THRESHOLD) -> float:
    """Fraction of correct real/synthetic calls; call = real iff P(real) > threshold (seed 003)."""
    t, p = _check(truth_real, p_real)
    if t.size == 0:
        return float("nan")
    return float(np.mean((p > threshold) == t))


def roc_curve(truth_real: np.ndarray, p_real: np.ndarray) -> dict[str, list[float]]:
    """Empirical ROC: one point per distinct score, from (0, 0) to (1, 1).

    Returns ``fpr``, ``tpr`` (lists of equal length) and ``thresholds`` (the score at or
    above which an image is called real; the first is +inf). Same points as
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    t, p = _check(truth_real, p_real)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    thresholds = np.unique(p)[::-1]
    tpr = [0.0] + [float(((p >= th) & t).sum() / n_pos) if n_pos else float("nan") for th in thresholds]
    fpr = [0.0] + [float(((p >= th) & ~t).sum() / n_neg) if n_neg else float("nan") for th in thresholds]
    return {"fpr": fpr, "tpr": tpr, "thresholds": [float("inf")] + [float(x) for x in thresholds]}


def auc_mann_whitney(truth_real: np.ndarray, p_real: np.ndarray) -> float:
    """AUC = P(score of a real > score of a synthetic) + 0.5 P(tie), via the Mann-Whitney U.

    U = R_real - n_real (n_real + 1) / 2 with average ranks for ties; AUC = U / (n_real n_syn).
    NaN when either class is empty.
    """
    t, p = _check(truth_real, p_real)
    n1, n0 = int(t.sum()), int((~t).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = _st.rankdata(p)
    u = ranks[t].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def auc_ci_delong(truth_real: np.ndarray, p_real: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """AUC with DeLong's (1988) variance and a normal CI clipped to [0, 1]: (auc, lo, hi).

    Structural components: V10_i = mean_j psi(X_i, Y_j) over synthetic j for each real i,
    V01_j likewise; var = s10 / n_real + s01 / n_syn with psi = 1 (X > Y), 0.5 (tie), 0.
    Needs at least two images of each class; otherwise the CI is (nan, nan).
    """
    t, p = _check(truth_real, p_real)
    x, y = p[t], p[~t]
    n1, n0 = x.size, y.size
    auc = auc_mann_whitney(t, p)
    if n1 < 2 or n0 < 2:
        return auc, float("nan"), float("nan")
    psi = (x[:, None] > y[None, :]).astype(np.float64) + 0.5 * (x[:, None] == y[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    var = v10.var(ddof=1) / n1 + v01.var(ddof=1) / n0
    z = _st.norm.ppf(0.5 + level / 2.0)
    half = z * np.sqrt(max(var, 0.0))
    return auc, float(max(0.0, auc - half)), float(min(1.0, auc + half))


def auc_ci_bootstrap(
    truth_real: np.ndarray, p_real: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of the AUC, resampling images with replacement within each class (seeded)."""
    t, p = _check(truth_real, p_real)
    x, y = p[t], p[~t]
    if x.size < 2 or y.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    psi = np.empty(n_boot)
    for b in range(n_boot):
        xb = x[rng.integers(0, x.size, size=x.size)]
        yb = np.sort(y[rng.integers(0, y.size, size=y.size)])
        # Count synthetic scores below / equal to each real score by binary search: O(n log n).
        below = np.searchsorted(yb, xb, side="left")
        equal = np.searchsorted(yb, xb, side="right") - below
        psi[b] = (below.sum() + 0.5 * equal.sum()) / (x.size * y.size)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(psi, alpha)), float(np.quantile(psi, 1.0 - alpha))


@dataclass(frozen=True)
class DPrime:
    """Signal-detection summary: hit = 'real' call on a real image; false alarm = 'real' on synthetic."""

    d_prime: float
    criterion_c: float
    hit_rate: float
    false_alarm_rate: float
    hit_rate_corrected: float
    false_alarm_rate_corrected: float


def d_prime(truth_real: np.ndarray, p_real: np.ndarray, threshold: float = THRESHOLD) -> DPrime:
    """d' = Z(H) - Z(F) and criterion c = -(Z(H) + Z(F)) / 2 on the binary call (P(real) > 0.5).

    Log-linear correction (Hautus 1995), applied to every reader, not only to extreme ones,
    so that rates of 0 or 1 stay finite and the estimate is not biased by the choice of when
    to correct: H = (hits + 0.5) / (n_real + 1), F = (false alarms + 0.5) / (n_syn + 1).
    """
    t, p = _check(truth_real, p_real)
    call_real = p > threshold
    n1, n0 = int(t.sum()), int((~t).sum())
    hits, fas = int((call_real & t).sum()), int((call_real & ~t).sum())
    h_raw = hits / n1 if n1 else float("nan")
    f_raw = fas / n0 if n0 else float("nan")
    h = (hits + 0.5) / (n1 + 1)
    f = (fas + 0.5) / (n0 + 1)
    zh, zf = _st.norm.ppf(h), _st.norm.ppf(f)
    if not (n1 and n0):
        return DPrime(float("nan"), float("nan"), h_raw, f_raw, h, f)
    return DPrime(float(zh - zf), float(-(zh + zf) / 2.0), h_raw, f_raw, float(h), float(f))


def sokal_michener(first_call_real: np.ndarray, second_call_real: np.ndarray) -> float:
    """Sokal-Michener simple matching coefficient (a + d) / n of two binary vectors (seed 004).

    Here: the binary real/synthetic call at the first and at the repeated presentation of
    the same images. NaN when there are no pairs.
    """
    a = np.asarray(first_call_real, dtype=bool).ravel()
    b = np.asarray(second_call_real, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"test and retest have different lengths ({a.size} vs {b.size})")
    if a.size == 0:
        return float("nan")
    return float(np.mean(a == b))


def mean_ci_t(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean with a Student-t CI: (mean, lo, hi). One value gives (value, nan, nan)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    half = float(_st.t.ppf(0.5 + level / 2.0, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - half, m + half


def mean_ci_cluster_bootstrap(
    values: np.ndarray, clusters: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over all values with a percentile CI that resamples whole clusters (images).

    Used for scores pooled over readers: the readers' scores of one image are correlated,
    so images, not answers, are the unit that is resampled. Returns (mean, lo, hi).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    c = np.asarray(clusters).ravel()
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    keys, inv = np.unique(c, return_inverse=True)
    sums = np.bincount(inv, weights=v, minlength=keys.size)
    counts = np.bincount(inv, minlength=keys.size).astype(np.float64)
    m = float(v.mean())
    if keys.size < 2:
        return m, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, keys.size, size=(n_boot, keys.size))
    boot = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    return m, float(np.quantile(boot, alpha)), float(np.quantile(boot, 1.0 - alpha))
