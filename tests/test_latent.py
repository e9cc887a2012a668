"""Visual-feature operations (seed 000 eq. 2, section 3.3-3.4): convex weights, pair and
triangle interpolation, slerp, bounded extrapolation, mask blending, strips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mammosynth.errors import ConfigError
from mammosynth.synth import latent


def test_convex_weights_sum_to_one_on_grid():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = latent.convex_weights(20, 0.05, rng)
        assert w.shape == (20,)
        assert abs(w.sum() - 1.0) < 1e-12
        assert (w >= 0).all()
        units = w / 0.05
        assert np.allclose(units, np.round(units), atol=1e-9)
    # random: two draws differ, and every feature gets weight sometimes
    draws = np.stack([latent.convex_weights(20, 0.05, rng) for _ in range(500)])
    assert (draws > 0).any(axis=0).all() and not np.allclose(draws[0], draws[1])
    assert latent.convex_weights(1, 0.05, rng).tolist() == [1.0]
    with pytest.raises(ConfigError):
        latent.convex_weights(5, 0.07, rng)


def test_pair_positions_and_bounded_extrapolation():
    t = latent.pair_positions(8)
    assert len(t) == 10 and t[0] == 0 and t[-1] == 1
    assert np.allclose(np.diff(t), 1 / 9)  # 8 equidistant points between the ends
    te = latent.pair_positions(8, 0.25)
    assert te.min() == pytest.approx(-0.25) and te.max() == pytest.approx(1.25)
    assert np.allclose(np.diff(te[te <= 0]), np.diff(te[te <= 0])[0])
    with pytest.raises(ConfigError):
        latent.pair_positions(8, 0.6)  # beyond the bound


def test_triangle_has_twelve_interpolated_points():
    w = latent.triangle_weights(4)
    assert w.shape == (15, 3) and np.allclose(w.sum(1), 1) and (w >= 0).all()
    vertices = (w == 1).any(1)
    assert vertices.sum() == 3 and (~vertices).sum() == 12
    assert sum(latent.triangle_row_lengths(4)) == 15


def test_slerp_and_combine():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    out = latent.slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(out[0], a) and torch.allclose(out[2], b, atol=1e-6)
    assert out[1].norm() == pytest.approx(1.5)  # norm interpolated linearly
    assert torch.allclose(out[1] / out[1].norm(), torch.tensor([2 ** -0.5, 2 ** -0.5]))
    feats = torch.randn(3, 8, dtype=torch.float64)
    w = torch.from_numpy(latent.triangle_weights(4))
    lin = latent.combine(feats, w)
    assert torch.allclose(lin[0], feats[0]) and torch.allclose(lin[-1], feats[2])
    sph = latent.combine(feats, w, spherical=True)
    assert torch.allclose(sph[0], feats[0]) and torch.allclose(sph[-1], feats[2])
    pair = latent.interpolate_pair(feats[0], feats[1], torch.tensor([0.0, 1.0], dtype=torch.float64), spherical=True)
    assert torch.allclose(pair[0], feats[0]) and torch.allclose(pair[1], feats[1])
    with pytest.raises(ConfigError):
        latent.combine(feats, torch.ones(2, 4))


def test_blend_masks_reproduces_endpoints_and_grows_monotonically():
    small = np.zeros((32, 32), bool)
    small[12:20, 12:20] = True
    big = np.zeros((32, 32), bool)
    big[6:26, 6:26] = True
    out = latent.blend_masks(np.stack([small, big]), np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    assert (out[0] == small).all() and (out[2] == big).all()
    assert small.sum() < out[1].sum() < big.sum()


def test_save_strip(tmp_path):
    imgs = [np.full((8, 8), v, np.float32) for v in np.linspace(0, 1, 15)]
    p = latent.save_strip(imgs, tmp_path / "s.png", row_lengths=latent.triangle_row_lengths(4))
    arr = np.asarray(Image.open(p))
    assert arr.shape == (5 * 10 + 2, 5 * 10 + 2)
    p2 = latent.save_strip(imgs[:10], tmp_path / "p.png")
    assert np.asarray(Image.open(p2)).shape == (12, 10 * 10 + 2)
