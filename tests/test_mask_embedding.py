"""Mask-embedding cGAN (seed 002): architecture counts, progressive growth and fade-in, the
per-phase schedule, WGAN-GP, the pix2pix / no-embedding baselines, train -> load -> generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mammosynth.errors import ConfigError
from mammosynth.losses import gradient_penalty
from mammosynth.models.mask_embedding import (MaskEmbeddingConfig, MaskEmbeddingGAN, MaskEmbeddingGenerator, PaddedNormalDataset,
                                              ProgressiveCritic, UNetGenerator, deconv_kernels, pad_resize, sobel_edges)
from tests.test_stylegan import FakeContext, make_store

SIZE = (64, 32)  # (H, W): portrait, like the paper's 256 (wide) x 512 (high)


pytestmark = pytest.mark.usefixtures("one_thread")


def _mask(b, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    H, W = size
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    r = 0.6 + 0.3 * torch.rand(b, 1, 1, generator=g)
    return ((((yy - H / 2) / (H / 2)) ** 2 + (xx / (W * r)) ** 2) <= 1).float()[:, None]


def test_paper_architecture_counts():
    G = MaskEmbeddingGenerator((512, 256))
    assert G.kernels == [128, 102, 82, 66, 53, 42, 34] == deconv_kernels(128, 0.8, 7)
    assert len(G.down) == 7 and all(c.stride == (2, 2) and c.out_channels == 8 for c in G.down)  # mask path
    assert all(u.kernel_size == (4, 4) and u.stride == (2, 2) for u in G.up)
    assert G.embed.out_features == 32 and G.dense.in_features == 132
    assert G.sizes[0] == (8, 4) and G.sizes[-1] == (512, 256)
    base = MaskEmbeddingGenerator((512, 256), latent_dim=132, use_embedding=False)
    assert not hasattr(base, "embed") and base.dense.weight.shape == G.dense.weight.shape  # same latent projection size


@pytest.mark.parametrize("use_embedding", [True, False])
def test_shapes_every_phase(use_embedding):
    G = MaskEmbeddingGenerator(SIZE, n_levels=4, latent_dim=100 if use_embedding else 132, use_embedding=use_embedding)
    D = ProgressiveCritic(SIZE, n_levels=4)
    for p, size in enumerate(G.sizes):
        m = _mask(2, size)
        for alpha in (0.0, 0.5, 1.0):
            x = G(torch.randn(2, G.latent_dim), m, p, alpha)
            assert x.shape == (2, 1, *size) and x.abs().max() <= 1
            assert D(x, m, p, alpha).shape == (2,)


def test_fade_in_endpoints():
    torch.manual_seed(0)
    G = MaskEmbeddingGenerator(SIZE, n_levels=4)
    D = ProgressiveCritic(SIZE, n_levels=4)
    p = 2
    z = torch.randn(3, 100)
    m = _mask(3, G.sizes[p])
    m_half = F.avg_pool2d(m, 2)
    # alpha = 0: exactly the previous phase's network, upsampled
    old = F.interpolate(G(z, m_half, p - 1, 1.0), scale_factor=2, mode="nearest")
    assert torch.allclose(G(z, m, p, 0.0), old, atol=1e-6)
    x = torch.rand(3, 1, *G.sizes[p]) * 2 - 1
    assert torch.allclose(D(x, m, p, 0.0), D(F.avg_pool2d(x, 2), m_half, p - 1, 1.0), atol=1e-5)
    # alpha = 1: the new branch only (the old to-image / from-image layers have no influence)
    new = G(z, m, p, 1.0)
    d_new = D(x, m, p, 1.0)
    with torch.no_grad():
        G.to_image[p - 1].weight.add_(5.0)
        G.from_mask[p - 1].weight.add_(5.0)
        D.from_image[p - 1].weight.add_(5.0)
    assert torch.allclose(G(z, m, p, 1.0), new) and torch.allclose(D(x, m, p, 1.0), d_new)
    assert not torch.allclose(G(z, m, p, 0.5), new)


def test_phase_schedule_alpha_and_batch_size():
    cfg = MaskEmbeddingConfig(final_size=list(SIZE), n_levels=4, phase_steps=[4, 8, 8, 8], phase_batch_sizes=[8, 6, 4, 2],
                              phase_lrs=[1e-3, 8e-4, 6e-4, 4e-4], fade_fraction=0.5)
    m = MaskEmbeddingGAN(cfg)
    assert [m.phase_at(s) for s in range(4)] == [(0, 1.0)] * 4
    alphas = [m.phase_at(s)[1] for s in range(4, 12)]
    assert [m.phase_at(s)[0] for s in range(4, 12)] == [1] * 8
    assert alphas[0] == 0.0 and alphas[4:] == [1.0] * 4 and np.allclose(np.diff(alphas[:5]), 0.25)  # linear 0 -> 1
    assert m.phase_at(10_000) == (3, 1.0)  # the last phase runs on
    assert [m.batch_size(s) for s in (0, 4, 12, 20)] == [8, 6, 4, 2]
    with pytest.raises(ConfigError):
        MaskEmbeddingConfig(final_size=[64, 32], n_levels=4, phase_steps=[1, 1]).validate()
    with pytest.raises(ConfigError):
        MaskEmbeddingConfig(final_size=[60, 32], n_levels=4, phase_steps=[1] * 4, phase_batch_sizes=[1] * 4, phase_lrs=[1e-3] * 4).validate()


def test_gradient_penalty_finite_and_differentiable():
    D = ProgressiveCritic(SIZE, n_levels=4)
    p = 3
    m = _mask(4, SIZE)
    real, fake = torch.rand(4, 1, *SIZE) * 2 - 1, torch.rand(4, 1, *SIZE) * 2 - 1
    gp = gradient_penalty(lambda x, mm: D(x, mm, p, 0.5), real, fake, m, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(gp) and gp >= 0
    gp.backward()
    grads = [q.grad for q in D.parameters() if q.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_pix2pix_input_and_unet():
    img = torch.zeros(1, 1, 32, 16)
    img[..., 8:, :] = 1.0
    e = sobel_edges(img * 2 - 1)
    assert e.shape == img.shape and e.max() == 1.0 and e.min() == -1.0
    assert e[0, 0, 8, 5] > 0.9 and e[0, 0, 20, 5] == -1.0  # edge at the step, flat elsewhere
    U = UNetGenerator(2, 8, depth=4)
    assert U(torch.randn(2, 2, 32, 16)).shape == (2, 1, 32, 16)


def test_pad_resize_keeps_aspect_and_mask():
    img = torch.rand(1, 40, 40)
    msk = torch.ones(1, 40, 40)
    out, m = pad_resize(img, msk, (64, 32))
    assert out.shape == (1, 64, 32) and m.shape == (1, 64, 32)
    assert m[:, :30].mean() > 0.95 and m[:, 34:].sum() == 0  # square padded at the bottom to 2:1


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("me") / "d.h5", n_lesions=4, n_normals=6)


@pytest.mark.parametrize("variant", ["embedding", "pix2pix"])
def test_train_load_generate(tiny_store, tmp_path, variant):
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    cfg = MaskEmbeddingConfig(variant=variant, final_size=[32, 16], n_levels=3, phase_steps=[1, 1, 1], phase_batch_sizes=[4, 3, 2],
                              phase_lrs=[1e-3, 1e-3, 5e-4], first_kernels=16, pix2pix_ngf=8, steps=3, batch_size=2, log_every=1,
                              sample_every=3, ckpt_every=0, n_samples=4, amp="off", channels_last=False, ema_decay=0.9)
    run = train("mask-embedding", tiny_store, tmp_path, cfg, progress=False)
    assert (run / "samples").exists()
    m = load_method(run, device="cpu")
    if variant == "embedding":
        assert m.phase == 2
        user = np.zeros((100, 60), bool)
        user[10:90, :40] = True
        s = list(m.generate(3, seed=1, mask=user, batch_size=2))
        assert len(s) == 3 and s[0].image.shape == (32, 16) and s[0].mask is None
        assert not np.allclose(s[0].image, s[1].image)  # different latents, same mask
    drawn = list(m.generate(2, seed=4))  # skin masks (and, for pix2pix, edge maps) drawn from the store
    assert drawn[0].image.shape == (32, 16) and drawn[0].source_ids[0].startswith("normal:")
    assert 0 <= drawn[0].image.min() and drawn[0].image.max() <= 1
    if variant == "embedding":
        with pytest.raises(ConfigError):
            list(m.generate(1, seed=0, mask=np.zeros((10, 10), bool)))


def test_train_step_uses_phase_lr(tiny_store):
    cfg = MaskEmbeddingConfig(final_size=[32, 16], n_levels=3, phase_steps=[1, 2, 1], phase_batch_sizes=[2, 2, 2],
                              phase_lrs=[1e-3, 5e-4, 2e-4], first_kernels=16)
    m = MaskEmbeddingGAN(cfg)
    ctx = FakeContext(dict(m.nets.items()), m.build_optimizers())
    ds = PaddedNormalDataset(tiny_store, split=None, size=(32, 16))
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ("image", "breast_mask")}
    for step in range(4):
        ctx.step = step
        out = m.train_step(batch, ctx)
        assert np.isfinite(float(out["loss_d"])) and np.isfinite(float(out["loss_g"]))
    assert ctx.optimizers["G"].param_groups[0]["lr"] == 2e-4 and m.phase == 2


def test_mask_output_keeps_every_generated_breast_inside_its_mask(tiny_store, tmp_path):
    from mammosynth.evaluate.fullmammo import mask_adherence
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    base = dict(final_size=[32, 16], n_levels=3, phase_steps=[1, 1, 1], phase_batch_sizes=[4, 3, 2], phase_lrs=[1e-3, 1e-3, 5e-4],
                first_kernels=16, steps=3, batch_size=2, log_every=1, sample_every=0, ckpt_every=0, amp="off", ema_decay=0.0)
    user = np.zeros((32, 16), bool)
    user[4:28, :10] = True
    scores = {}
    for paper in (False, True):
        cfg = MaskEmbeddingConfig(paper=paper, **base)
        cfg.validate()
        run = train("mask-embedding", tiny_store, tmp_path / str(paper), cfg, progress=False)
        m = load_method(run, device="cpu")
        images = np.stack([s.image for s in m.generate(4, seed=0, mask=user)])
        scores[paper] = mask_adherence(images, np.repeat(user[None], 4, 0))
    assert scores[False]["min"] == pytest.approx(1.0) and scores[False]["fraction_at_least_0.95"] == 1.0
    assert scores[True]["mean"] < 0.95  # the paper's untrained generator paints everywhere


def test_mask_adherence_scores():
    from mammosynth.evaluate.fullmammo import mask_adherence

    m = np.zeros((2, 8, 8), bool)
    m[:, :, :4] = True
    x = np.where(m, 0.8, 0.0)
    x[1, :, 4:] = 0.8  # the second image also paints outside
    s = mask_adherence(x, m)
    assert s["min"] == pytest.approx(0.5) and s["fraction_at_least_0.95"] == 0.5
    with pytest.raises(ValueError):
        mask_adherence(x[0], m[0])


def test_he_init_gives_the_deep_critic_a_gradient_and_paper_keeps_torch_init():
    """The critic's input gradient at its last phase: with PyTorch's default init it starts near 0
    (the penalty (||grad|| - 1)^2 then sits at 1: the 'vanished critic' of issue 13); He init keeps
    it of order 1. paper: true restores the previous (torch) init."""
    size, levels = (128, 64), 5
    norms = {}
    for init in ("he", "torch"):
        torch.manual_seed(0)
        cfg = MaskEmbeddingConfig(final_size=list(size), n_levels=levels, phase_steps=[1] * levels, phase_batch_sizes=[2] * levels,
                                  phase_lrs=[1e-4] * levels, first_kernels=32, init=init)
        m = MaskEmbeddingGAN(cfg)
        D = m.nets["discriminator"]
        x = (torch.rand(4, 1, *size) * 2 - 1).requires_grad_(True)
        (g,) = torch.autograd.grad(D(x, _mask(4, size), levels - 1, 1.0).sum(), x)
        norms[init] = float(g.flatten(1).norm(dim=1).mean())
    assert norms["he"] > 0.05 > 100 * norms["torch"]
    paper = MaskEmbeddingConfig(paper=True)
    paper.validate()
    assert paper.init == "torch" and MaskEmbeddingConfig().init == "he"


def test_resize_upsampling_option_and_old_runs_rebuild_transposed():
    """upsampling: resize builds a generator with no transposed convolution (no checkerboard);
    the default stays the paper's transposed convolutions (measured better at a short budget),
    and a run saved before the field existed is rebuilt with them, so its weights load."""
    kw = dict(final_size=[32, 16], n_levels=3, phase_steps=[1, 1, 1], phase_batch_sizes=[2, 2, 2], phase_lrs=[1e-4] * 3,
              first_kernels=16)
    resize = MaskEmbeddingGAN(MaskEmbeddingConfig(upsampling="resize", **kw)).nets["generator"]
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in resize.modules())
    default = MaskEmbeddingGAN(MaskEmbeddingConfig(**kw)).nets["generator"]
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in default.modules()) == 3
    old_saved = {k: v for k, v in MaskEmbeddingConfig(**kw).__dict__.items() if k not in ("init", "upsampling", "mask_output")}
    old = MaskEmbeddingConfig(**MaskEmbeddingConfig.from_saved(old_saved))
    assert (old.upsampling, old.init, old.mask_output) == ("transposed", "torch", False)
    g = MaskEmbeddingGAN(old).nets["generator"]
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules()) == 3
    out = g(torch.randn(2, 100), _mask(2, (32, 16)), 2, 1.0)
    assert out.shape == (2, 1, 32, 16)
