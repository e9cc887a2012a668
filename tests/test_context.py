"""Tri-label pieces of seed 001: margin ring, noise-corrupted tissue, the 3/2-channel stack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammosynth.data.context import PAPER_MARGIN_FACTOR, enlarge_mask, margin_ring, noise_corrupt_tissue, tri_label
from mammosynth.errors import ConfigError, DataError


def _ellipse(size: int = 64, cy: float = 30.0, cx: float = 24.0, a: float = 12.0, b: float = 9.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 < 1.0


def _lobed(size: int = 64) -> np.ndarray:
    """A non-convex mask (two overlapping discs) to check the ring on awkward shapes."""
    yy, xx = np.mgrid[:size, :size]
    return (((yy - 28) ** 2 + (xx - 26) ** 2) < 81) | (((yy - 36) ** 2 + (xx - 38) ** 2) < 64)


@pytest.mark.parametrize("mask", [_ellipse(), _lobed()])
def test_ring_is_disjoint_from_mask_and_inside_enlarged_region(mask: np.ndarray) -> None:
    ring = margin_ring(mask, PAPER_MARGIN_FACTOR)
    big = enlarge_mask(mask, PAPER_MARGIN_FACTOR)
    assert ring.dtype == bool and ring.shape == mask.shape
    assert not np.any(ring & mask)
    assert np.all(big[ring])
    assert ring.sum() > 0
    # the ring hugs the lesion: every ring pixel is within a few pixels of the mask
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(~mask)
    assert dist[ring].max() <= 0.2 * 12 + 1.5


def test_enlargement_scales_area_by_factor_squared_about_centroid() -> None:
    mask = _ellipse()
    for factor in (276 / 256, 296 / 256, 316 / 256):
        big = enlarge_mask(mask, factor)
        assert abs(big.sum() / (mask.sum() * factor**2) - 1.0) < 0.08
        assert np.all(big[mask])  # a convex mask is contained in its enlargement
        ys, xs = np.nonzero(big)
        my, mx = np.nonzero(mask)
        assert abs(ys.mean() - my.mean()) < 0.5 and abs(xs.mean() - mx.mean()) < 0.5  # same centroid


def test_ring_area_grows_with_factor() -> None:
    mask = _ellipse()
    areas = [int(margin_ring(mask, f).sum()) for f in (276 / 256, 296 / 256, 316 / 256, 1.5)]
    assert areas == sorted(areas) and len(set(areas)) == len(areas)


def test_torch_batch_matches_numpy_per_sample() -> None:
    masks = np.stack([_ellipse(), _lobed(), np.zeros((64, 64), bool)])
    t = torch.from_numpy(masks.astype(np.float32))[:, None]
    ring_t = margin_ring(t, PAPER_MARGIN_FACTOR)
    assert ring_t.shape == (3, 1, 64, 64) and ring_t.dtype == torch.bool
    for i in range(3):
        np.testing.assert_array_equal(ring_t[i, 0].numpy(), margin_ring(masks[i], PAPER_MARGIN_FACTOR))
    assert not ring_t[2].any()  # empty mask -> empty ring


def test_bad_inputs_raise_named_errors() -> None:
    with pytest.raises(DataError, match="H, W"):
        margin_ring(np.zeros((2, 8, 8), bool))
    with pytest.raises(DataError, match="B, 1, H, W"):
        margin_ring(torch.zeros(8, 8))
    with pytest.raises(ConfigError, match="factor"):
        margin_ring(_ellipse(), 0.0)
    with pytest.raises(DataError, match="differs"):
        noise_corrupt_tissue(np.zeros((8, 8), np.float32), np.zeros((9, 9), bool))


def test_noise_fills_exactly_the_mask_region_torch() -> None:
    mask = torch.from_numpy(np.stack([_ellipse(), _lobed()]).astype(np.float32))[:, None]
    patch = torch.linspace(-0.5, 0.5, 64).view(1, 1, 1, 64).expand(2, 1, 64, 64).contiguous()
    gen = torch.Generator().manual_seed(3)
    out = noise_corrupt_tissue(patch, mask, gen)
    inside = mask > 0.5
    assert torch.equal(out[~inside], patch[~inside])  # tissue outside the lesion untouched
    noise = out[inside]
    assert torch.all(noise != patch[inside])
    assert float(noise.min()) >= -1.0 and float(noise.max()) <= 1.0
    # uniform over [-1, 1]: mean 0, std 1/sqrt(3)
    assert abs(float(noise.mean())) < 0.08 and abs(float(noise.std()) - 3**-0.5) < 0.05
    again = noise_corrupt_tissue(patch, mask, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)  # seeded -> deterministic


def test_noise_numpy_and_mask_plus_ring_region() -> None:
    mask = _ellipse()
    patch = np.full(mask.shape, 0.25, np.float32)
    out = noise_corrupt_tissue(patch, mask, np.random.default_rng(0))
    changed = out != patch
    np.testing.assert_array_equal(changed, mask)
    out2 = noise_corrupt_tissue(patch, mask, np.random.default_rng(0), region="mask+ring")
    np.testing.assert_array_equal(out2 != patch, mask | margin_ring(mask))
    with pytest.raises(ConfigError):
        noise_corrupt_tissue(patch, mask, np.random.default_rng(0), region="ring")  # type: ignore[arg-type]


def test_tri_label_channels_and_range() -> None:
    mask = torch.from_numpy(_ellipse(32, 15, 14, 7, 5).astype(np.float32))[None, None].repeat(2, 1, 1, 1)
    patch = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = tri_label(patch, mask, generator=torch.Generator().manual_seed(1))
    assert x.shape == (2, 3, 32, 32)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.equal(x[:, 1:2], mask * 2 - 1)
    assert torch.equal(x[:, 2:3], margin_ring(mask).float() * 2 - 1)
    assert torch.equal(x[:, :1][mask == 0], patch[mask == 0])
    x2 = tri_label(patch, mask, two_channel=True, generator=torch.Generator().manual_seed(1))
    assert x2.shape == (2, 2, 32, 32)
    assert torch.equal(x2, x[:, :2])  # same noise, ring channel dropped (the paper's ablation)
    xn = tri_label(patch[0, 0].numpy(), mask[0, 0].numpy(), generator=np.random.default_rng(0))
    assert xn.shape == (3, 32, 32) and xn.dtype == np.float32
    np.testing.assert_array_equal(xn[2], x[0, 2].numpy())


def test_match_grain_adds_the_context_noise_to_a_smooth_fill_and_nothing_outside_the_ring():
    import torch

    from mammosynth.data.context import composite, composite_alpha, immerkaer_sd, match_grain

    g = torch.Generator().manual_seed(0)
    S = 64
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    mask = (((yy - 32) ** 2 + (xx - 32) ** 2) < 12 ** 2).float()[None, None].repeat(2, 1, 1, 1)
    context = torch.zeros(2, 1, S, S)
    context[0] += 0.05 * torch.randn(1, S, S, generator=g)  # grainy tissue
    smooth = torch.full((2, 1, S, S), 0.3)  # a fill with no grain at all
    composed = composite(smooth, context, mask)
    out = match_grain(composed, context, mask, generator=torch.Generator().manual_seed(1))
    alpha = composite_alpha(mask)
    assert torch.equal(out[alpha == 0], context[alpha == 0])  # bit-identical outside the ring
    sd_fill = immerkaer_sd(out, mask > 0.5)
    assert abs(float(sd_fill[0]) - 0.05) < 0.01  # the fill now has the context's grain
    assert torch.equal(out[1], composed[1])  # a noise-free context adds nothing
    again = match_grain(composed, context, mask, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # seeded: deterministic


def test_infill_grain_needs_composite():
    import pytest

    from mammosynth.errors import ConfigError
    from mammosynth.models.infill import InfillConfig

    with pytest.raises(ConfigError, match="composite"):
        InfillConfig(grain="match", composite=False).validate()
