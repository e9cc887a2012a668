"""DiffAugment and the 2x upsampling layers: shapes, gradients, determinism, what each op does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammosynth.errors import ConfigError
from mammosynth.evaluate.aliasing import aliasing_score
from mammosynth.nn.augment import diff_augment, parse_policy
from mammosynth.nn.upsample import up_conv


def test_policy_parsing_and_bad_names():
    assert parse_policy("color, translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy("none") == () and parse_policy("") == ()
    with pytest.raises(ConfigError, match="saturation"):
        parse_policy("color,saturation")


def test_diff_augment_is_differentiable_seeded_and_keeps_shape():
    x = (torch.rand(6, 4, 16, 16) * 2 - 1).requires_grad_()
    a = diff_augment(x, "color,translation,cutout,flip", generator=torch.Generator().manual_seed(1))
    b = diff_augment(x, "color,translation,cutout,flip", generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_geometry_moves_condition_and_image_together_and_color_spares_masks():
    B, S = 8, 16
    mask = torch.zeros(B, 1, S, S)
    mask[:, :, 4:9, 5:11] = 1
    image = mask * 0.8 + 0.1  # the image is the mask, brightened: geometry must keep them aligned
    x = torch.cat([image, mask], 1)
    y = diff_augment(x, "translation,flip", generator=torch.Generator().manual_seed(0))
    assert not torch.equal(y, x)
    assert torch.equal(y[:, :1] > 0.5, y[:, 1:] > 0.5)
    assert set(torch.unique(y[:, 1]).tolist()) <= {0.0, 1.0}  # mask values never rescaled
    z = diff_augment(x, "color", intensity_channels=[0], generator=torch.Generator().manual_seed(0))
    assert torch.equal(z[:, 1:], mask) and not torch.equal(z[:, :1], image)


def test_cutout_erases_a_square_and_translation_pads_with_zero():
    x = torch.ones(4, 1, 16, 16)
    c = diff_augment(x, "cutout", generator=torch.Generator().manual_seed(0))
    erased = (c == 0).float().mean(dim=(1, 2, 3))
    assert ((erased > 0.1) & (erased <= 0.3)).all()  # a half-side square is 1/4 of the image (less at borders)
    t = diff_augment(x, "translation", generator=torch.Generator().manual_seed(3))
    assert (t == 0).any() and set(torch.unique(t).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("mode", ["transposed", "resize", "transposed_blur"])
def test_up_conv_doubles_the_size_and_passes_gradients(mode):
    layer = up_conv(8, 4, mode)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 4, 16, 16)
    y.square().mean().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ConfigError):
        up_conv(8, 4, "pixelshuffle")


def test_resize_and_blur_leave_less_checkerboard_than_a_plain_transposed_conv():
    """Random (untrained) layers on a smooth input: a transposed conv's two kernel phases differ,
    which shows as a Nyquist peak; resize-conv cannot make one and the blur removes it."""
    torch.manual_seed(0)
    f = torch.linspace(-1, 1, 8)
    smooth = (torch.outer(f, f)[None, None] + 0.1 * torch.randn(64, 1, 8, 8)).repeat(1, 4, 1, 1)
    scores = {}
    for mode in ("transposed", "resize", "transposed_blur"):
        torch.manual_seed(1)
        with torch.no_grad():
            out = torch.stack([up_conv(4, 1, m)(up_conv(4, 4, m)(smooth)) for m in [mode]])[0][:, 0].numpy()
        ref = torch.nn.functional.interpolate(smooth[:, :1], scale_factor=4, mode="bicubic", align_corners=False)[:, 0].numpy()
        norm = lambda a: (a - a.min()) / (a.max() - a.min() + 1e-9)  # noqa: E731
        scores[mode] = aliasing_score(norm(ref), norm(out), periods=(2, 4)).worst
    assert scores["transposed"] > 3 * scores["resize"]
    assert scores["transposed"] > 3 * scores["transposed_blur"]
