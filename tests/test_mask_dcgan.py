"""Mask DCGAN (seed 001 sec. 3.2): shapes per size, gradients, overfitting, clean-up, save/load."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from scipy import ndimage

from mammosynth.errors import ConfigError
from mammosynth.losses import d_loss_bce, g_loss_bce
from mammosynth.models import get_method
from mammosynth.models.mask_dcgan import (
    MaskDCGAN,
    MaskDCGANConfig,
    MaskDiscriminator,
    MaskGenerator,
    clean_mask,
    sample_latent,
)
from mammosynth.synth.sample import Sample
from mammosynth.train.method import StepContext
from mammosynth.train.run import load_method
from mammosynth.train.trainer import Trainer

from test_trainer import ellipse_mask, make_store  # noqa: E402  (tests dir is on sys.path)

pytestmark = pytest.mark.usefixtures("one_thread")



class PlainContext(StepContext):
    """The minimum a train_step needs: no AMP, no DDP, plain optimizer steps."""

    def __init__(self, nets, optimizers):
        self.nets, self.optimizers = nets, optimizers
        self.device, self.step, self.world_size, self.rank = torch.device("cpu"), 0, 1, 0
        self._gen = torch.Generator().manual_seed(0)

    def autocast(self):
        return contextlib.nullcontext()

    def backward_step(self, loss, optimizer, retain_graph=False):
        self.optimizers[optimizer].zero_grad(set_to_none=True)
        loss.backward(retain_graph=retain_graph)
        self.optimizers[optimizer].step()

    def generator(self):
        return self._gen


def _method(size=32, **kw) -> MaskDCGAN:
    cfg = MaskDCGANConfig(size=size, nz=8, ngf=4, ndf=4, **kw)
    return MaskDCGAN(cfg, {"patch_size": size, "image_size": size})


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes_for_each_size(size):
    G, D = MaskGenerator(size, nz=8, ngf=4), MaskDiscriminator(size, ndf=4)
    z = sample_latent(2, 8, "uniform", torch.Generator().manual_seed(0))
    x = G(z)
    assert x.shape == (2, 1, size, size) and x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (2,)
    n_up = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in G.modules())
    assert n_up == int(np.log2(size)) - 1  # 1 -> 4 px, then a doubling per layer up to size


def test_latent_is_uniform_by_default():
    z = sample_latent(4000, 10, "uniform", torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() <= 1 and abs(z.mean()) < 0.02 and abs(z.var() - 1 / 3) < 0.02
    zn = sample_latent(4000, 10, "normal", torch.Generator().manual_seed(0))
    assert zn.abs().max() > 1.5
    with pytest.raises(ConfigError):
        MaskDCGANConfig(size=48).validate()


def test_train_step_reaches_both_networks():
    m = _method()
    opts = m.build_optimizers()
    ctx = PlainContext(dict(m.nets.items()), opts)
    real = torch.from_numpy(np.stack([ellipse_mask(np.random.default_rng(i), 32) for i in range(4)])).float()[:, None]
    losses = m.train_step({"mask": real}, ctx)
    assert set(losses) == {"loss_d", "loss_g"} and all(torch.isfinite(v) for v in losses.values())
    for name in ("generator", "discriminator"):
        grads = [p.grad for p in m.nets[name].parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    assert all(p.requires_grad for p in m.nets["discriminator"].parameters())  # unfrozen after G's step


def test_losses_fall_when_overfitting_a_tiny_batch():
    torch.manual_seed(0)
    m = _method()
    G, D = m.nets["generator"], m.nets["discriminator"]
    real = torch.from_numpy(np.stack([ellipse_mask(np.random.default_rng(i), 32) for i in range(4)])).float()[:, None] * 2 - 1
    z = sample_latent(4, 8, "uniform", torch.Generator().manual_seed(1))
    with torch.no_grad():
        fake = G(z)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.9, 0.999))
    d_losses = []
    for _ in range(25):  # D alone on a fixed real/fake batch
        loss = d_loss_bce(D(real), D(fake))
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        d_losses.append(loss.item())
    assert d_losses[-1] < 0.5 * d_losses[0]
    D.eval()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.9, 0.999))
    g_losses = []
    for _ in range(25):  # G alone against the frozen D
        D.requires_grad_(False)
        loss = g_loss_bce(D(G(z)))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        g_losses.append(loss.item())
    assert g_losses[-1] < g_losses[0]


def test_clean_up_gives_one_filled_component():
    raw = -np.ones((32, 32), np.float32)
    raw[4:20, 4:20] = 1.0  # the mass
    raw[10:13, 10:13] = -1.0  # a hole in it
    raw[25:28, 25:28] = 0.5  # "white noise" speck
    raw[2, 30] = 0.9
    mask = clean_mask(raw)
    labels, n = ndimage.label(mask)
    assert n == 1 and mask.dtype == bool
    assert np.array_equal(ndimage.binary_fill_holes(mask), mask)
    assert mask.sum() == 16 * 16 and not mask[26, 26]
    assert not clean_mask(-np.ones((8, 8))).any()


def test_registry_and_unconditional_generate():
    assert get_method("mask-dcgan") is MaskDCGAN
    m = _method()
    m.on_load()
    samples = list(m.generate(3, seed=10))
    assert len(samples) == 3 and all(isinstance(s, Sample) for s in samples)
    assert [s.seed for s in samples] == [10, 11, 12]
    for s in samples:
        assert s.mask.dtype == bool and s.mask.shape == (32, 32)
        assert s.image.dtype == np.float32 and set(np.unique(s.image)) <= {0.0, 1.0}
    with pytest.raises(ConfigError, match="unconditional"):
        next(m.generate(1, seed=0, shape="round"))


def test_save_load_round_trip_gives_identical_masks(tmp_path):
    store = make_store(tmp_path / "s.h5", n=8, size=32)
    cfg = MaskDCGANConfig(steps=2, batch_size=4, nz=8, ngf=4, ndf=4, sample_every=0, ckpt_every=0, log_every=1)
    trainer = Trainer("mask-dcgan", store, tmp_path / "runs", cfg, progress=False)
    run = trainer.run()
    # the in-memory EMA generator, as a method
    live = MaskDCGAN(cfg, trainer.data_info)
    live.nets["generator"].load_state_dict(trainer.ema["generator"].state_dict())
    live.on_load()
    loaded = load_method(run, device="cpu", expect="mask-dcgan")
    a, b = live.sample_masks(4, seed=7), loaded.sample_masks(4, seed=7)
    assert a.shape == (4, 32, 32) and a.dtype == bool
    assert np.array_equal(a, b)
    assert np.array_equal(loaded.sample_masks(1, seed=8)[0], b[1])  # mask i depends on seed + i only
    raw_in, raw_out = (m.sample_grid(dict(m.nets.items()), 4, 0) for m in (live, loaded))
    assert torch.equal(raw_in, raw_out)
