"""The aliasing score finds checkerboards and other upsampling-period patterns, and only those."""

from __future__ import annotations

import numpy as np
import pytest

from mammosynth.evaluate.aliasing import aliasing_score, real_floor, upsampling_frequencies


def _texture(n: int, seed: int, size: int = 32) -> np.ndarray:
    """1/f^3 power-law texture (a mammogram-like anatomical background), scaled to [0, 1]."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    r = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    r[0, 0] = 1.0
    z = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, size, size))) * r ** -1.5).real
    lo, hi = z.min(axis=(1, 2), keepdims=True), z.max(axis=(1, 2), keepdims=True)
    return (z - lo) / (hi - lo)


def test_frequencies_cover_nyquist_and_quarter_periods():
    labels = {lab for _, _, lab in upsampling_frequencies(16, 16, periods=(2, 4))}
    assert {"(-1/2, -1/2)", "(0, -1/2)", "(1/4, 1/4)", "(-1/4, 0)"} <= labels
    assert "(0, 0)" not in labels


def test_checkerboards_score_far_above_real_and_plain_textures_do_not():
    real, other = _texture(120, 0), _texture(120, 1)
    floor = aliasing_score(real, other).worst
    yy, xx = np.indices(real.shape[1:])
    period2 = ((yy + xx) % 2) * 0.01  # one transposed-conv stage: period 2 in both axes
    period4 = (((yy // 2) + (xx // 2)) % 2) * 0.05  # a coarser stage: period 4 (the texture has more power there)
    s2, s4 = aliasing_score(real, other + period2), aliasing_score(real, other + period4)
    assert floor < 3.0
    assert s2.worst > 20 * floor and s2.at == "(-1/2, -1/2)"
    assert s4.worst > 10 * floor and "1/4" in s4.at
    # a global contrast or brightness change is not aliasing
    assert aliasing_score(real, other * 0.5 + 0.2).worst < 3.0


def test_real_floor_splits_by_group_and_checks_sizes():
    x = _texture(40, 2)
    groups = np.repeat(np.arange(10), 4)
    assert real_floor(x, groups).worst < 5.0
    with pytest.raises(ValueError):
        real_floor(x, np.zeros(40))
    with pytest.raises(ValueError):
        aliasing_score(x, _texture(4, 3, size=16))
