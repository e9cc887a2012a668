import numpy as np
import pytest

from mammosynth.evaluate.two_sample import bootstrap_auc, classifier_two_sample_test


def test_bootstrap_auc_perfect_and_random():
    y = np.r_[np.zeros(50), np.ones(50)]
    auc, lo, hi = bootstrap_auc(y, y + 0.0, n_boot=200)
    assert auc == 1.0 and lo == 1.0
    rng = np.random.default_rng(0)
    auc, lo, hi = bootstrap_auc(y, rng.random(100), n_boot=300)
    assert lo < 0.5 < hi and abs(auc - 0.5) < 0.15


def test_c2st_separates_different_sets_and_not_identical_ones():
    rng = np.random.default_rng(0)
    real = rng.random((48, 16, 16)).astype(np.float32) * 0.5
    fake = np.clip(real[rng.permutation(48)] + 0.4, 0, 1)  # obviously brighter
    res = classifier_two_sample_test(real, fake, size=16, epochs=8, n_boot=100)
    assert res["auc"] > 0.9 and res["n_test"] == 48
    same = classifier_two_sample_test(real[:24], real[24:], size=16, epochs=8, n_boot=200)
    assert same["auc_ci"][0] < 0.5 + 0.25 and same["auc"] < 0.85


def test_c2st_needs_enough_images():
    with pytest.raises(ValueError, match="at least 8"):
        classifier_two_sample_test(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)))
