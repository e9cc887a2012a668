"""In-domain inversion (seed 004 eq. 4): optimisation beats the encoder alone, the mask confines
the loss, interpolation paths and loops (PNG strip + GIF), compose (Fig. 4) with Poisson and
alpha blends, file errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mammosynth.errors import ConfigError, DataError
from mammosynth.models.stylegan import StyleGANConfig
from mammosynth.models.stylegan_encoder import StyleGANEncoderConfig
from mammosynth.synth.inversion import (alpha_blend, compose, interpolate, interpolation_path, invert, invert_tensor, poisson_blend,
                                        latent_samples, psnr)
from tests.test_stylegan import TINY, make_store


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    root = tmp_path_factory.mktemp("inv")
    store = make_store(root / "d.h5")
    torch.manual_seed(0)
    g_run = train("stylegan", store, root / "runs", StyleGANConfig(size=[16, 16], steps=2, **TINY), progress=False)
    e_cfg = StyleGANEncoderConfig(generator_run=str(g_run), channels=8, max_channels=32, perceptual="none", steps=2, batch_size=4,
                                  log_every=1, sample_every=0, ckpt_every=0, amp="off", channels_last=False)
    e_run = train("stylegan-encoder", store, root / "runs", e_cfg, progress=False)
    enc = load_method(e_run, device="cpu")
    # two test images on disk: 8-bit and 16-bit PNGs
    files = []
    rng = np.random.default_rng(0)
    for i, bits in enumerate((8, 16)):
        yy, xx = np.mgrid[0:16, 0:16]
        a = (0.3 + 0.4 * (((yy - 8) ** 2 + (xx - 8) ** 2) < (4 + i) ** 2) + 0.05 * rng.standard_normal((16, 16))).clip(0, 1)
        p = root / f"img{i}.png"
        if bits == 8:
            Image.fromarray((a * 255).astype(np.uint8)).save(p)
        else:
            Image.fromarray((a * 65535).astype(np.uint16)).save(p)
        files.append(p)
    return g_run, e_run, enc, files, root


def test_optimisation_beats_encoder_alone(runs):
    _, _, enc, _, _ = runs
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8
    inv = invert_tensor(enc, x, steps=25, lambda_perceptual=0.0, lambda_enc=2.0, lr=0.05)
    err_enc = (inv.x_encoder - x).pow(2).mean()
    err_opt = (inv.x_optimised - x).pow(2).mean()
    assert err_opt < 0.8 * err_enc
    assert (psnr(inv.x_optimised, x) > psnr(inv.x_encoder, x)).all()
    assert inv.w_optimised.shape == inv.w_encoder.shape == (3, enc.nets["generator"].n_ws, enc.nets["generator"].w_dim)
    assert inv.loss_history[-1] < inv.loss_history[0]
    assert all(not p.requires_grad for p in enc.nets["generator"].parameters())  # stayed frozen


def test_masked_optimisation_ignores_outside(runs):
    _, _, enc, _, _ = runs
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8
    m = torch.zeros(1, 1, 16, 16)
    m[..., 4:12, 4:12] = 1
    x_other = torch.where(m > 0, x, -x)  # differs only outside the mask
    w0 = enc.nets["encoder"](x).detach()
    a = invert_tensor(enc, x, steps=15, mask=m, lambda_perceptual=0.0, lr=0.05, init_w=w0)
    b = invert_tensor(enc, x_other, steps=15, mask=m, lambda_perceptual=0.0, lr=0.05, init_w=w0)
    assert torch.allclose(a.w_optimised, b.w_optimised, atol=1e-5)
    inside = lambda t: ((t - x) * m).pow(2).sum() / m.sum()  # noqa: E731
    assert inside(a.x_optimised) < inside(a.x_encoder)
    unmasked = invert_tensor(enc, x_other, steps=15, lambda_perceptual=0.0, lr=0.05, init_w=w0)
    assert not torch.allclose(a.w_optimised, unmasked.w_optimised, atol=1e-3)


def test_interpolation_path_counts_and_loop():
    codes = torch.arange(3, dtype=torch.float32)[:, None, None].expand(3, 2, 4).clone()
    loop = list(interpolation_path(codes, frames=4, loop=True))
    assert len(loop) == 12
    assert torch.equal(loop[0][0], codes[0]) and loop[4][1] == (1, 2) and loop[-1][1] == (2, 0)
    assert np.isclose(float(loop[-1][0][0, 0]), 0.5)  # C -> A leg heads back to A
    open_path = list(interpolation_path(codes[:2], frames=4, loop=False))
    assert len(open_path) == 5 and torch.equal(open_path[-1][0], codes[1])
    assert [w for *_, w in open_path][:2] == [[1.0, 0.0], [0.75, 0.25]]
    with pytest.raises(ConfigError):
        list(interpolation_path(codes, frames=0))


def test_blends():
    rng = np.random.default_rng(0)
    target = rng.random((20, 20)).astype(np.float32) * 0.5
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    # same gradients inside: Poisson reproduces the target exactly, whatever the offset
    out = poisson_blend(target, np.clip(target + 0.3, 0, 1), mask)
    assert np.allclose(out, target, atol=1e-4)
    src = np.full((20, 20), 0.9, np.float32)
    src[8:12, 8:12] = 0.2
    pb = poisson_blend(target, src, mask)
    assert np.array_equal(pb[~mask], target[~mask]) and pb.min() >= 0 and pb.max() <= 1
    ab = alpha_blend(target, src, mask)
    assert ab[10, 10] < 0.45 and np.allclose(ab[0, 0], target[0, 0], atol=1e-3)


def test_invert_interpolate_compose_files(runs, tmp_path):
    g_run, e_run, _, files, _ = runs
    samples = invert(e_run, files, tmp_path / "inv", steps=5, lambda_perceptual=0.0)
    assert len(samples) == 2 and samples[0].image.shape == (16, 16)
    assert (tmp_path / "inv" / "inversion.png").exists()
    lat = np.load(tmp_path / "inv" / "latents.npz")
    assert lat["w_optimised"].shape[0] == 2 and lat["psnr_optimised"].shape == (2,)
    frames = interpolate(e_run, [files[0], files[1], 7], tmp_path / "interp", steps=2, loop=True)
    assert len(frames) == 9 and frames[-1].source_ids == ["seed:7", str(files[0])]
    with Image.open(tmp_path / "interp" / "interpolation.gif") as gif:
        assert gif.n_frames == 9
    # store lesions by index, through the method hook the CLI calls
    enc_frames = list(latent_samples(runs[2], mode="pair", sources=["0", "3"], steps=1, seed=0))
    assert len(enc_frames) == 3 and enc_frames[0].source_ids == ["0", "3"]
    with Image.open(tmp_path / "interp" / "interpolation_strip.png") as strip:
        assert strip.size[1] > strip.size[0] / 3 - 1  # one row per leg
    res = compose(e_run, files[0], files[1], tmp_path / "comp", steps=5, lambda_perceptual=0.0)
    assert res[0].mask is not None and res[0].mask.any() and res[0].image.shape == (16, 16)
    with Image.open(tmp_path / "comp" / "compose.png") as fig:
        assert fig.size[0] == 7 * 16 + 6 * 2  # 7 panels as in Fig. 4
    # errors: a missing image, a run without an encoder
    with pytest.raises(DataError, match="not found"):
        invert(e_run, [tmp_path / "nope.png"], tmp_path / "x", steps=1)
    with pytest.raises(ConfigError, match="stylegan-encoder"):
        invert(g_run, files, tmp_path / "x", steps=1)
