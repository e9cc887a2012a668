"""Metric identities and properties: FD, KID, PRDC, MS-SSIM, LPIPS, memorisation, t-SNE.

LPIPS and feature tests use random-weight networks written to a temporary cache in the real
format, so nothing downloads; one test per network runs against the real cache when present.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammosynth.errors import MammosynthError, WeightsError
from mammosynth.evaluate.diversity import ms_ssim, msssim_diversity, msssim_scales
from mammosynth.evaluate.features import extract_features, pixel_features, to_model_range
from mammosynth.evaluate.frechet import fd_with_floor, feature_distance_suite, frechet_distance, kid
from mammosynth.evaluate.lpips import LPIPS, load_lpips, lpips_distance, mean_lpips
from mammosynth.evaluate.memorisation import memorisation_check
from mammosynth.evaluate.prdc import prdc
from mammosynth.evaluate.tsne import tsne_embedding
from mammosynth.nn import weights as W
from mammosynth.nn.alexnet import AlexNet
from mammosynth.nn.efficientnet import EfficientNetLite0


@pytest.fixture(scope="module")
def random_cache(tmp_path_factory):
    """Cache with random-weight AlexNet + LPIPS layers and EfficientNet-Lite0 (real formats)."""
    cache = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    W.save_weights("alexnet", AlexNet().state_dict(), cache)
    lin = {f"lin{k}.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    W.save_weights("lpips_alex", lin, cache)
    effnet = EfficientNetLite0()
    for m in effnet.modules():  # non-trivial BN statistics so features are not degenerate
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(0.5)
    W.save_weights("efficientnet_lite0", effnet.state_dict(), cache)
    return cache


def _smooth_images(n: int, size: int = 64, seed: int = 0, grid: int = 8) -> torch.Tensor:
    """Blob-textured gray patches (N,1,S,S) in [-1,1] (random values on a size/grid lattice, bicubic)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size // grid, size // grid, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return torch.tanh(x)


# ----- Frechet distance / KID ------------------------------------------------------------


def test_frechet_identity_and_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    fds = [frechet_distance(a, a + s) for s in (0.5, 1.0, 2.0)]
    assert fds == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)  # pure mean shift: ||d||^2
    b = rng.standard_normal((400, 8))
    assert frechet_distance(a, b) < 0.5 < frechet_distance(a, b * 2)  # variance change also counts


def test_frechet_singular_covariance_is_finite_and_methods_agree():
    rng = np.random.default_rng(1)
    for n, d in ((10, 32), (200, 16)):  # N < D: singular covariances; and N > D
        a, b = rng.standard_normal((n, d)), rng.standard_normal((n + 3, d)) * 1.5 + 0.3
        values = [frechet_distance(a, b, method) for method in ("auto", "gram", "eigh", "sqrtm")]
        assert np.isfinite(values).all() and values[0] > 0
        assert values == pytest.approx([values[0]] * 4, rel=1e-5)


def test_kid_zero_for_same_distribution_and_large_for_shift():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 16)), rng.standard_normal((300, 16))
    same = kid(a, b, n_subsets=20, subset_size=100)
    shifted = kid(a, b + 1.0, n_subsets=20, subset_size=100)
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert shifted.mean > 10 * (abs(same.mean) + same.std)


def test_floor_score_ratio():
    rng = np.random.default_rng(0)
    train, test = rng.standard_normal((300, 4)), rng.standard_normal((300, 4))
    good = fd_with_floor(train, test, rng.standard_normal((300, 4)), "FD-test", kid_subsets=5)
    bad = fd_with_floor(train, test, rng.standard_normal((300, 4)) + 1, "FD-test", kid_subsets=5)
    assert 0.2 < good.ratio < 5 and bad.ratio > 10 * good.ratio
    assert good.to_dict()["name"] == "FD-test"


# ----- PRDC -----------------------------------------------------------------------------


def test_prdc_identical_and_disjoint():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6))
    same = prdc(x, x.copy())
    assert same.precision == 1.0 and same.recall == 1.0 and same.coverage == 1.0
    assert same.density == pytest.approx(1.0, abs=0.25)
    far = prdc(x, x + 50)
    assert far.precision == 0 and far.recall == 0 and far.density == 0 and far.coverage == 0
    with pytest.raises(MammosynthError, match="more than 5"):
        prdc(x[:5], x[:5])


# ----- MS-SSIM --------------------------------------------------------------------------


def test_ms_ssim_identity_and_noise_order():
    x = _smooth_images(4, 64)
    assert torch.allclose(ms_ssim(x, x), torch.ones(4), atol=1e-6)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    values = [ms_ssim(x, (x + s * noise).clamp(-1, 1)).mean().item() for s in (0.05, 0.1, 0.3)]
    assert values[0] > values[1] > values[2]
    assert (msssim_scales(64), msssim_scales(128), msssim_scales(256)) == (3, 4, 5)


def test_msssim_diversity_zero_for_copies():
    x = _smooth_images(1, 64).repeat(6, 1, 1, 1)
    assert msssim_diversity(x).mean == pytest.approx(0.0, abs=1e-6)
    d = msssim_diversity(_smooth_images(10, 64), n_pairs=20)
    assert d.mean > 0.2 and d.n_pairs == 20 and d.scales == 3


# ----- inputs ---------------------------------------------------------------------------


def test_numpy_unit_range_equals_torch_pm1():
    x = _smooth_images(3, 32)
    as_numpy = ((x[:, 0].numpy() + 1) / 2).astype(np.float32)
    assert torch.allclose(to_model_range(as_numpy), x, atol=1e-6)
    np.testing.assert_allclose(pixel_features(as_numpy, 8), pixel_features(x, 8), atol=1e-6)
    with pytest.raises(MammosynthError, match="expected gray"):
        to_model_range(torch.zeros(2, 3, 8, 8))


# ----- LPIPS ----------------------------------------------------------------------------


def _lpips_properties(model: LPIPS, n: int = 4) -> list[float]:
    x = _smooth_images(n, 64, seed=3)
    assert torch.allclose(model(x, x), torch.zeros(n), atol=1e-7)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(x.shape, generator=g)
    dists = [model(x, (x + s * noise).clamp(-1, 1)).mean().item() for s in (0.05, 0.1, 0.2)]
    assert dists[0] < dists[1] < dists[2]
    y = (x + 0.1 * noise).clamp(-1, 1)
    assert torch.allclose(model(x, y), model(y, x), atol=1e-6)
    # the embedding reproduces the distance, so all-pairs means are exact
    emb = (model.embed(x) - model.embed(y)).pow(2).sum(1)
    assert torch.allclose(emb, model(x, y), rtol=1e-4, atol=1e-6)
    return dists


def test_lpips_properties_random_backbone(random_cache):
    model = load_lpips("alex", random_cache)
    _lpips_properties(model)


def test_mean_lpips_all_pairs_matches_brute_force(random_cache):
    real, synth = _smooth_images(5, 64, seed=4), _smooth_images(6, 64, seed=5)
    model = load_lpips("alex", random_cache)
    res = mean_lpips(real, synth, model=model, n_select=None)
    brute = np.mean([lpips_distance(real[i:i + 1].repeat(6, 1, 1, 1), synth, model=model) for i in range(5)])
    assert res.n_pairs == 30 and res.mean == pytest.approx(brute, rel=1e-4)
    sampled = mean_lpips(real, synth, model=model, n_pairs=200, seed=1)
    assert sampled.n_pairs == 200 and sampled.mean == pytest.approx(brute, rel=0.2)
    # identical sets: the diagonal pairs are 0, the mean of the rest is positive
    assert mean_lpips(real, real, model=model, n_select=None).mean > 0


def test_lpips_without_weights_raises(tmp_path):
    with pytest.raises(WeightsError, match="mammosynth weights get"):
        load_lpips("vgg", tmp_path)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_real_weights(net):
    try:
        model = load_lpips(net)
    except WeightsError as err:
        pytest.skip(f"real weight cache absent ({err})")
    dists = _lpips_properties(model, n=2)
    assert 0 < dists[0] < 1.0


# ----- features, FD suite, no faking ------------------------------------------------------


def test_extract_features_and_skip_without_weights(random_cache, tmp_path):
    x = _smooth_images(5, 32)
    f = extract_features(x, "effnet", batch_size=2, weights_dir=random_cache, size=32)
    assert f.shape == (5, 1280) and np.isfinite(f).all()
    f2 = extract_features(((x[:, 0].numpy() + 1) / 2), "effnet", batch_size=5, weights_dir=random_cache, size=32)
    np.testing.assert_allclose(f, f2, rtol=1e-4, atol=1e-5)
    with pytest.raises(WeightsError):
        extract_features(x, "vgg16", weights_dir=tmp_path)
    suite = feature_distance_suite(x, x, x, weights_dir=tmp_path)
    assert set(suite) == {"FD-VGG16", "FD-EffNet", "FID"}
    assert "import-torchvision pt_inception" in suite["FID"]["skipped"]
    assert all("mammosynth weights get" in suite[k]["skipped"] for k in ("FD-VGG16", "FD-EffNet"))


def test_feature_suite_with_weights(random_cache):
    train, test = _smooth_images(12, 32, seed=1), _smooth_images(12, 32, seed=2)
    synth = _smooth_images(12, 32, seed=3)
    feats: dict = {}
    suite = feature_distance_suite(train, test, synth, nets=("effnet",), weights_dir=random_cache, size=32,
                                   kid_subsets=3, features=feats)
    entry = suite["FD-EffNet"]
    assert entry["floor"] > 0 and entry["score"] > 0 and entry["ratio"] == pytest.approx(entry["score"] / entry["floor"])
    assert feats["effnet"]["synthetic"].shape == (12, 1280)


# ----- memorisation ---------------------------------------------------------------------


def test_memorisation_flags_transformed_copies(tmp_path):
    train = _smooth_images(30, 32, seed=6, grid=4)
    copies = torch.flip(torch.rot90(train[:3], 1, dims=(-2, -1)), dims=(-1,)) + 0.001
    synth = torch.cat([copies, _smooth_images(7, 32, seed=7, grid=4)])
    res = memorisation_check(synth, train, out_dir=tmp_path)
    # the copies are flagged first (flags are sorted by distance); by construction a new image can
    # also fall below the 1st-percentile threshold now and then, so only the order is asserted
    assert sorted(res.flagged[:3]) == [0, 1, 2]
    assert list(res.nearest_index[:3]) == [0, 1, 2]
    assert res.distances[:3].max() < 0.01 < res.threshold
    summary = res.summary()
    assert summary["n_flagged"] >= 3 and (tmp_path / "memorisation_histogram.png").stat().st_size > 1000
    assert (tmp_path / "memorisation_pairs.png").stat().st_size > 1000
    # without the dihedral search the transformed copies are no longer found
    assert not set(memorisation_check(synth, train, dihedral=False).flagged) & {0, 1, 2}


def test_memorisation_feature_space():
    train, synth = _smooth_images(20, 16, seed=8), _smooth_images(5, 16, seed=9)
    rng = np.random.default_rng(0)
    tf = rng.standard_normal((20, 4))
    sf = np.concatenate([tf[:1] + 1e-6, rng.standard_normal((4, 4)) + 5])
    res = memorisation_check(synth, train, space="features", synthetic_features=sf, train_features=tf)
    assert res.flagged == [0] and res.nearest_index[0] == 0


# ----- t-SNE ----------------------------------------------------------------------------


def test_tsne_reduces_parameters_and_saves_png(tmp_path):
    real, synth, normal = _smooth_images(12, 16, 1), _smooth_images(12, 16, 2), _smooth_images(12, 16, 3) * 0.2
    res = tsne_embedding(real, synth, normal, n_iter=250, out_png=tmp_path / "tsne.png")
    assert res.embedding.shape == (36, 2) and np.isfinite(res.embedding).all()
    assert res.params["perplexity"] == pytest.approx(35 / 3) and res.params["iterations"] == 250
    assert res.params["per_group"] == {"real lesions": 12, "synthetic lesions": 12, "normal tissue": 12}
    assert any("perplexity 250" in r for r in res.params["reductions"])
    assert (tmp_path / "tsne.png").stat().st_size > 1000
    # the seed-003 defaults when enough samples are given (only the parameter logic is checked)
    assert res.params["perplexity_requested"] == 250 and res.params["n_per_group_requested"] == 500
