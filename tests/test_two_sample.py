"""Cross-fitted classifier two-sample test: every item scored once out of fold, a null pair
stays at 0.5, a different pair reaches 1 with a balanced accuracy to match, groups never
straddle folds (and that matters), the quick mode is cross-fitted too."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from mammosynth.evaluate.two_sample import (_auc, balanced_accuracy, best_threshold, bootstrap_auc, classifier_two_sample_test,
                                            cross_fitted_scores, make_folds)

pytestmark = pytest.mark.usefixtures("one_thread")


def textures(rng, n, size=16, sigma=1.5, bright=0.0, per_image_offset=0.0):
    x = ndimage.gaussian_filter(rng.standard_normal((n, size, size)), (0, sigma, sigma))
    x = 0.5 + 0.15 * x / x.std(axis=(1, 2), keepdims=True) + bright + rng.uniform(-1, 1, (n, 1, 1)) * per_image_offset
    return np.clip(x, 0, 1).astype(np.float32)


def dihedral_views(images):
    out = []
    for im in images:
        for k in range(4):
            r = np.rot90(im, k)
            out += [r, r.T]
    return np.stack(out)


def test_auc_matches_sklearn_and_the_bootstrap_covers_it():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(40), np.ones(60)].astype(int)
    s = np.round(rng.random(100) + 0.3 * y, 1)  # with ties
    assert _auc(y, s) == pytest.approx(roc_auc_score(y, s))
    auc, lo, hi = bootstrap_auc(y, y + 0.0, n_boot=200)
    assert auc == 1.0 and lo == 1.0
    auc, lo, hi = bootstrap_auc(y, rng.random(100), n_boot=300)
    assert lo < 0.5 < hi and abs(auc - 0.5) < 0.15
    groups = np.repeat(np.arange(50), 2)  # pairs within one class
    auc_g, lo_g, hi_g = bootstrap_auc(y, s, n_boot=300, groups=groups)
    assert auc_g == pytest.approx(_auc(y, s)) and lo_g < auc_g < hi_g


def test_threshold_and_balanced_accuracy():
    y = np.r_[np.zeros(90), np.ones(10)].astype(int)
    score = np.r_[np.linspace(-3, 1, 90), np.linspace(2, 4, 10)]
    t = best_threshold(y, score)
    assert 1 < t < 2 and balanced_accuracy(y, score >= t) == 1.0
    assert balanced_accuracy(y, np.zeros(100, bool)) == 0.5  # "all real" is chance, not 0.9


def test_every_item_is_scored_once_and_groups_stay_in_one_fold():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(40), np.ones(40)].astype(int)
    groups = np.r_[np.repeat(np.arange(10), 4), 100 + np.repeat(np.arange(10), 4)]
    fold = make_folds(y, groups, 5, seed=0)
    assert set(fold) == set(range(5))
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1
    for f in range(5):
        assert set(y[fold == f]) == {0, 1}  # stratified
    x = torch.as_tensor(textures(rng, 80))[:, None] * 2 - 1
    cf = cross_fitted_scores(x, y, groups, folds=5, epochs=1, batch_size=16)
    assert cf["score"].shape == (80,) and np.isfinite(cf["score"]).all() and (cf["fold"] == fold).all()
    # each fold's logits are centred on the threshold its CNN chose on its own training folds
    assert np.allclose(cf["score"], cf["logit"] - cf["threshold"])
    assert all(len(set(cf["threshold"][fold == f])) == 1 for f in range(5))


def test_null_pair_stays_at_one_half_and_a_different_pair_reaches_one():
    """Before: a single 50/50 split, a logit-0 accuracy (0.50 beside AUC 1.00) and a null test
    that only asserted AUC < 0.85 (issue 11)."""
    rng = np.random.default_rng(0)
    a, b = textures(rng, 120), textures(rng, 120)  # one distribution
    null = classifier_two_sample_test(a, b, size=16, quick=True)
    lo, hi = null["auc_ci"]
    assert lo < 0.5 < hi and abs(null["auc"] - 0.5) < 0.1 and hi - lo < 0.25
    assert abs(null["balanced_accuracy"] - 0.5) < 0.1
    assert null["folds"] == 3 and null["n_boot"] == 200 and null["quick"] and null["n_real"] == null["n_synthetic"] == 120
    c = textures(rng, 60, sigma=0.7)  # clearly different texture
    diff = classifier_two_sample_test(a[:60], c, size=16, quick=True)
    assert diff["auc"] > 0.95 and diff["auc_ci"][0] > 0.9 and diff["balanced_accuracy"] > 0.9
    assert len(diff["fold_aucs"]) == 3


def test_groups_keep_the_views_of_one_lesion_together():
    """8 dihedral views of each image, both classes from one distribution: split by image, the
    CNN recognises images it trained on and the AUC leaves 0.5; grouped, it does not."""
    rng = np.random.default_rng(0)
    a, b = (dihedral_views(textures(rng, 16, per_image_offset=0.3)) for _ in range(2))
    g = np.repeat(np.arange(16), 8)
    leaky = classifier_two_sample_test(a, b, size=16, epochs=8, folds=3)
    grouped = classifier_two_sample_test(a, b, size=16, epochs=8, folds=3, real_groups=g, synthetic_groups=g)
    assert leaky["auc"] > 0.65
    assert grouped["auc_ci"][0] < 0.5 < grouped["auc_ci"][1] and abs(grouped["auc"] - 0.5) < 0.1
    assert grouped["n_groups_real"] == 16 and "groups" in grouped["ci_method"]


def test_balancing_keeps_whole_groups_and_errors_are_clear():
    rng = np.random.default_rng(1)
    big, small = textures(rng, 40), textures(rng, 12)
    res = classifier_two_sample_test(big, small, size=16, epochs=1, folds=2, n_boot=10,
                                     real_groups=np.repeat(np.arange(10), 4))
    assert res["n_synthetic"] == 12 and res["n_real"] == 12 and res["n_groups_real"] == 3
    with pytest.raises(ValueError, match="at least 8"):
        classifier_two_sample_test(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="2 groups"):
        classifier_two_sample_test(big, small, size=16, real_groups=np.zeros(40))
