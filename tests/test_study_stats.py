"""Reader-study statistics against hand-computed values and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve as sk_roc_curve

from mammosynth.study import stats

# Three real then three synthetic images; levels 1 3 4 | 2 5 6.
TRUTH = np.array([True, True, True, False, False, False])
LEVELS = [1, 3, 4, 2, 5, 6]


def test_levels_map_to_seed003_probabilities():
    assert stats.level_to_p_real([1, 2, 3, 4, 5, 6]).tolist() == [0.95, 0.77, 0.59, 0.41, 0.23, 0.05]
    assert stats.LEVELS[1][0] == "extremely confident real" and stats.LEVELS[6][0] == "extremely confident synthetic"
    for bad in ([0], [7], [1, -1]):
        with pytest.raises(ValueError, match="1..6"):
            stats.level_to_p_real(bad)


def test_hand_computed_accuracy_auc_dprime():
    p = stats.level_to_p_real(LEVELS)  # 0.95 0.59 0.41 | 0.77 0.23 0.05
    # calls real: T T F | T F F -> correct: T T F | F T T
    assert stats.accuracy(TRUTH, p) == pytest.approx(4 / 6)
    # real > synthetic pairs: 0.95 beats 3, 0.59 beats 2, 0.41 beats 2 -> 7 of 9
    assert stats.auc_mann_whitney(TRUTH, p) == pytest.approx(7 / 9)
    # hits 2/3, false alarms 1/3; log-linear: H = 2.5/4, F = 1.5/4; Z(0.625) = 0.3186394
    dp = stats.d_prime(TRUTH, p)
    assert dp.hit_rate == pytest.approx(2 / 3) and dp.false_alarm_rate == pytest.approx(1 / 3)
    assert dp.hit_rate_corrected == pytest.approx(0.625) and dp.false_alarm_rate_corrected == pytest.approx(0.375)
    assert dp.d_prime == pytest.approx(2 * 0.3186394, abs=1e-6)
    assert dp.criterion_c == pytest.approx(0.0, abs=1e-12)
    # ties count one half: 0.77 vs 0.77 -> (0.5 + 1 + 0 + 1) / 4
    assert stats.auc_mann_whitney([1, 1, 0, 0], [0.77, 0.59, 0.77, 0.23]) == pytest.approx(0.625)


def test_dprime_stays_finite_for_perfect_reader():
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    dp = stats.d_prime(truth, np.where(truth, 0.95, 0.05))
    # H = 4.5/5 = 0.9, F = 0.5/5 = 0.1 -> d' = 2 Z(0.9) = 2.5631031
    assert dp.hit_rate == 1.0 and dp.false_alarm_rate == 0.0
    assert dp.d_prime == pytest.approx(2.5631031, abs=1e-6)


def test_delong_ci_hand_computed():
    p = stats.level_to_p_real(LEVELS)
    auc, lo, hi = stats.auc_ci_delong(TRUTH, p)
    # V10 = (1, 2/3, 2/3), V01 = (1/3, 1, 1): s10 = 1/27, s01 = 4/27; var = (1/27 + 4/27) / 3 = 5/81
    half = 1.959963985 * math.sqrt(5 / 81)
    assert auc == pytest.approx(7 / 9)
    assert lo == pytest.approx(7 / 9 - half, abs=1e-6) and hi == 1.0  # clipped at 1


def test_auc_and_roc_match_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.random(120) < 0.5
    levels = np.clip(np.round(3.5 - 1.2 * truth + rng.normal(0, 1.5, 120)), 1, 6).astype(int)
    p = stats.level_to_p_real(levels)
    assert stats.auc_mann_whitney(truth, p) == pytest.approx(roc_auc_score(truth, p), abs=1e-12)
    roc = stats.roc_curve(truth, p)
    fpr, tpr, thr = sk_roc_curve(truth, p, drop_intermediate=False)
    np.testing.assert_allclose(roc["fpr"], fpr)
    np.testing.assert_allclose(roc["tpr"], tpr)
    np.testing.assert_allclose(roc["thresholds"][1:], thr[1:])
    # trapezoid area under our points equals the Mann-Whitney AUC
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(stats.auc_mann_whitney(truth, p))
    auc, lo, hi = stats.auc_ci_delong(truth, p)
    blo, bhi = stats.auc_ci_bootstrap(truth, p, n_boot=500, seed=1)
    assert lo < auc < hi and blo < auc < bhi
    assert abs((hi - lo) - (bhi - blo)) < 0.05  # two CI methods agree on the width
    assert (blo, bhi) == stats.auc_ci_bootstrap(truth, p, n_boot=500, seed=1)  # seeded


def test_sokal_michener_and_means():
    assert stats.sokal_michener([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert stats.sokal_michener([1, 0], [1, 0]) == 1.0
    assert math.isnan(stats.sokal_michener([], []))
    with pytest.raises(ValueError):
        stats.sokal_michener([1], [1, 0])
    m, lo, hi = stats.mean_ci_t([1, 2, 3, 4, 5])
    # sd = 1.5811, se = 0.70711, t(4, 0.975) = 2.776445
    assert m == 3 and lo == pytest.approx(3 - 2.776445 * 0.7071068, abs=1e-5) and hi == pytest.approx(3 + 1.963243, abs=1e-5)
    vals = np.array([5, 4, 5, 1, 2, 1, 3, 3])
    items = np.array(["a", "a", "b", "c", "c", "d", "e", "e"])
    m, lo, hi = stats.mean_ci_cluster_bootstrap(vals, items, n_boot=400, seed=0)
    assert m == pytest.approx(3.0) and lo < m < hi and lo >= 1 and hi <= 5
    assert (m, lo, hi) == stats.mean_ci_cluster_bootstrap(vals, items, n_boot=400, seed=0)
