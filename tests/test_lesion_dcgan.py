"""lesion-dcgan (seed 003): 128x128 DCGAN with a 200-d latent, optional class conditioning."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from mammosynth.data.birads import Label
from mammosynth.data.records import LesionRecord
from mammosynth.data.store import StoreWriter
from mammosynth.errors import ConfigError
from mammosynth.models.lesion_dcgan import DCGANDiscriminator, DCGANGenerator, LesionDCGAN, LesionDCGANConfig
from mammosynth.train.method import EagerContext


pytestmark = pytest.mark.usefixtures("one_thread")




def tiny_store(path, n=12, size=32):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    with StoreWriter(path, patch_size=size, normal_size=(64, 48)) as w:
        for i in range(n):
            mask = (yy / 0.2) ** 2 + (xx / (0.12 + 0.02 * (i % 4))) ** 2 <= 1
            patch = (0.2 + 0.1 * rng.random((size, size)) + 0.6 * mask).astype(np.float32)
            margin = ("SPICULATED", "CIRCUMSCRIBED", None)[i % 3]
            w.add_lesion(LesionRecord(
                source="test", source_id=f"L{i}", patient_id=f"P{i}", patch=patch, mask=mask,
                shape=Label("OVAL", "oval", "exact"),
                margin=Label(margin, margin.lower(), "exact") if margin else Label(None, None, "missing"),
                pathology=Label("MALIGNANT", "malignant", "exact"), split_hint="train"))
    return path


def test_generator_and_discriminator_shapes_at_128():
    G = DCGANGenerator(128, 200, width=8, cap=64)
    D = DCGANDiscriminator(128, width=8, cap=64)
    z = torch.randn(3, 200)
    x = G(z)
    assert x.shape == (3, 1, 128, 128) and x.abs().max() <= 1
    assert D(x).shape == (3,)
    # paper defaults: 200-d latent, batch 64, 128 px, DCGAN widths 1024@4 ... 64@64
    cfg = LesionDCGANConfig()
    assert (cfg.nz, cfg.batch_size, cfg.patch_size) == (200, 64, 128)
    full = DCGANGenerator(128, 200)
    widths = [m.out_channels for m in full.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert widths == [1024, 512, 256, 128, 64, 1]


def test_conditioning_changes_output_and_uses_the_unknown_class():
    G = DCGANGenerator(128, 200, width=8, cap=64, n_classes=5)
    D = DCGANDiscriminator(128, width=8, cap=64, n_classes=5)
    G.eval()
    z = torch.randn(1, 200).repeat(2, 1)
    x = G(z, torch.tensor([0, 4]))
    assert x.shape == (2, 1, 128, 128) and not torch.allclose(x[0], x[1])
    assert D(x, torch.tensor([0, 5])).shape == (2,)  # 5 = "unknown"
    with pytest.raises(ConfigError):
        G(z)


def test_training_step_and_conditioned_generation_record_labels(tmp_path):
    store = tiny_store(tmp_path / "s.h5")
    cfg = LesionDCGANConfig(patch_size=32, g_channels=8, d_channels=8, max_channels=32, batch_size=6, condition="margin")
    m = LesionDCGAN(cfg, {"patch_size": 32})
    m.data_info.update(m.data_info_from_store(str(store)))
    assert m.data_info["class_counts"] == [4, 0, 0, 0, 4]  # unknown margins are not counted
    ds = m.make_dataset(str(store))
    batch = torch.utils.data.default_collate([ds[i] for i in range(6)])
    assert (batch["margin"] == -1).any()
    ctx = EagerContext(m, m.build_optimizers())
    before = [p.detach().clone() for p in m.nets["generator"].parameters()]
    out = m.train_step(batch, ctx)
    assert np.isfinite(float(out["loss_d"])) and np.isfinite(float(out["loss_g"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, m.nets["generator"].parameters()))
    m.on_load()
    samples = list(m.generate(5, seed=1, margin="spiculated", batch_size=2))
    assert len(samples) == 5 and all(s.margin == "spiculated" and s.image.shape == (32, 32) for s in samples)
    assert all(0 <= s.image.min() and s.image.max() <= 1 for s in samples)
    drawn = list(m.generate(6, seed=1))
    assert {s.margin for s in drawn} <= {"circumscribed", "spiculated"}  # drawn with the training frequencies
    again = list(m.generate(5, seed=1, margin="spiculated", batch_size=5))
    assert all(np.allclose(a.image, b.image, atol=1e-5) for a, b in zip(samples, again))  # batch size does not matter
    with pytest.raises(ConfigError, match="conditioned on 'margin'"):
        list(m.generate(1, seed=0, shape="oval"))
    assert m.sample_grid(m.nets, 4, 0).shape == (4, 1, 32, 32)


def test_trains_through_trainer_and_loads_back(tmp_path):
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    store = tiny_store(tmp_path / "s.h5")
    cfg = LesionDCGANConfig(patch_size=32, g_channels=8, d_channels=8, max_channels=32, batch_size=4, condition="margin",
                            steps=2, log_every=1, sample_every=2, ckpt_every=2, n_samples=4, device="cpu")
    run = train("lesion-dcgan", store, tmp_path / "runs", cfg, progress=False)
    m = load_method(run, device="cpu", expect="lesion-dcgan")
    samples = list(m.generate(3, seed=0, margin="circumscribed"))
    assert len(samples) == 3 and samples[0].margin == "circumscribed" and samples[0].image.shape == (32, 32)


def test_paper_switch_and_improved_variants(tmp_path):
    paper = LesionDCGANConfig(paper=True)
    paper.validate()
    assert (paper.ema_decay, paper.upsampling, paper.diffaug, paper.d_reg) == (0.0, "transposed", "", "none")
    store = tiny_store(tmp_path / "s.h5")
    for knobs in (dict(upsampling="resize", d_reg="spectral"), dict(upsampling="transposed_blur", d_reg="r1")):
        torch.manual_seed(0)
        cfg = LesionDCGANConfig(patch_size=32, g_channels=8, d_channels=8, max_channels=32, batch_size=6, **knobs)
        cfg.validate()
        m = LesionDCGAN(cfg, {"patch_size": 32})
        strided = [x for x in m.nets["generator"].modules() if isinstance(x, torch.nn.ConvTranspose2d) and x.stride == (2, 2)]
        assert bool(strided) == (knobs["upsampling"] != "resize")  # resize-convs have no strided transposed conv
        ds = m.make_dataset(str(store))
        batch = torch.utils.data.default_collate([ds[i] for i in range(6)])
        ctx = EagerContext(m, m.build_optimizers())
        out = [m.train_step(batch, ctx) for _ in range(3)][-1]
        assert all(np.isfinite(float(v)) for v in out.values())
        assert ("r1" in out) == (knobs["d_reg"] == "r1")


def test_projection_term_starts_at_the_unconditioned_logit_scale():
    """The class projection of the conditioned discriminator starts at the scale of its plain
    4x4 output conv (both N(0, 0.02)), not ~100x above it (PyTorch's N(0, 1) embedding)."""
    from mammosynth.models.lesion_dcgan import DCGANDiscriminator

    torch.manual_seed(0)
    x = torch.rand(8, 1, 64, 64) * 2 - 1
    plain = DCGANDiscriminator(64, 16, 128, n_classes=0)(x)
    torch.manual_seed(0)
    cond = DCGANDiscriminator(64, 16, 128, n_classes=5)(x, torch.arange(8) % 6)
    assert cond.abs().mean() < 5 * plain.abs().mean() + 1.0
