"""StyleGAN (seed 004): mapping/synthesis shapes for both conv kinds, truncation, lazy R1,
in-domain encoder shapes and its eq. 2 loss falling on a tiny set, train -> load -> generate."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from mammosynth.data.birads import map_cbis_margin, map_cbis_shape, map_pathology
from mammosynth.data.records import LesionRecord, MammogramRecord
from mammosynth.data.store import StoreWriter
from mammosynth.errors import ConfigError
from mammosynth.losses import r1_penalty
from mammosynth.models.stylegan import ResidualDiscriminator, StyleGAN, StyleGANConfig, StyleGenerator
from mammosynth.models.stylegan_encoder import InDomainEncoder, StyleGANEncoder, StyleGANEncoderConfig
from mammosynth.synth.inversion import latent_samples

TINY = dict(z_dim=32, w_dim=32, channel_base=256, channel_max=32, batch_size=4, ema_decay=0.99, log_every=1,
            sample_every=0, ckpt_every=0, n_samples=4, amp="off", channels_last=False)


pytestmark = pytest.mark.usefixtures("one_thread")


class FakeContext:
    """Minimal StepContext: plain backward + step on CPU, fp32."""

    def __init__(self, nets, optimizers, seed: int = 0) -> None:
        self.nets, self.optimizers = nets, optimizers
        self.device = torch.device("cpu")
        self.step, self.world_size, self.rank = 0, 1, 0
        self._gen = torch.Generator().manual_seed(seed)

    def autocast(self):
        return contextlib.nullcontext()

    def backward_step(self, loss, optimizer, retain_graph=False):
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        loss.backward(retain_graph=retain_graph)
        opt.step()

    def generator(self):
        return self._gen


def make_store(path, n_lesions=16, patch=16, n_normals=4, normal_size=(64, 32), seed=0):
    rng = np.random.default_rng(seed)
    with StoreWriter(path, patch_size=patch, normal_size=normal_size, split_seed=seed) as w:
        for i in range(n_lesions):
            yy, xx = np.mgrid[0:24, 0:24]
            r = 5 + (i % 4)
            mask = (yy - 12) ** 2 + (xx - 12) ** 2 <= r * r
            img = (0.3 + 0.05 * rng.standard_normal((24, 24)) + 0.4 * mask).clip(0, 1).astype(np.float32)
            w.add(LesionRecord(source="test", source_id=f"L{i}", patient_id=f"P{i}", patch=img, mask=mask,
                               shape=map_cbis_shape("OVAL"), margin=map_cbis_margin("CIRCUMSCRIBED"),
                               pathology=map_pathology("BENIGN"), lesion_size=(2 * r, 2 * r)))
        for j in range(n_normals):
            H, W = 80, 50
            yy, xx = np.mgrid[0:H, 0:W]
            breast = ((yy - H / 2) / (H / 2.2)) ** 2 + (xx / (W * (0.7 + 0.05 * j))) ** 2 <= 1
            img = (breast * (0.5 + 0.1 * rng.standard_normal((H, W)))).clip(0, 1).astype(np.float32)
            w.add(MammogramRecord(source="test", source_id=f"N{j}", patient_id=f"Q{j}", image=img, breast_mask=breast, laterality="L"))
    return path


@pytest.mark.parametrize("kind", ["modulated", "adain"])
@pytest.mark.parametrize("size", [(16, 16), (32, 16)])
def test_generator_and_discriminator_shapes(kind, size):
    G = StyleGenerator(size, 32, 32, 8, kind, 256, 32)
    D = ResidualDiscriminator(size, 256, 32)
    assert len(G.mapping.layers) == 8  # 8-layer mapping MLP (seed 004)
    z = torch.randn(3, 32)
    x = G(z)
    assert x.shape == (3, 1, *size) and torch.isfinite(x).all()
    assert D(x).shape == (3,)
    ws = G.map(z)
    assert ws.shape == (3, G.n_ws, 32)
    # W+ with per-layer codes gives the same image as W when all codes are equal
    assert torch.allclose(G.synthesize(ws, "const"), G.synthesize(ws[:, 0], "const"), atol=1e-5)
    # the noise inputs are live: a learned nonzero strength changes the output with random noise
    for conv in G.synthesis.convs:
        conv.noise.strength.data.fill_(0.5)
    assert not torch.allclose(G.synthesize(ws, "random"), G.synthesize(ws, "random"))


def test_truncation_psi_zero_collapses_to_mean_w():
    G = StyleGenerator((16, 16), 32, 32, 8, "modulated", 256, 32)
    G.mapping.update_w_avg(G.mapping(torch.randn(64, 32)), 0.0)
    x = G(torch.randn(4, 32), psi=0.0, noise_mode="const")
    assert torch.allclose(x[0], x[1], atol=1e-5) and torch.allclose(x[0], x[3], atol=1e-5)
    y = G(torch.randn(4, 32), psi=1.0, noise_mode="const")
    assert not torch.allclose(y[0], y[1], atol=1e-3)


def test_r1_penalty_finite_differentiable_and_lazy(tmp_path):
    D = ResidualDiscriminator((16, 16), 256, 32)
    x = torch.randn(4, 1, 16, 16)
    r1 = r1_penalty(D, x)
    assert torch.isfinite(r1) and r1 > 0
    r1.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in D.parameters())
    assert sum(float(p.grad.abs().sum()) for p in D.parameters() if p.grad is not None) > 0
    # lazy: only every r1_every-th step carries the (scaled) penalty
    m = StyleGAN(StyleGANConfig(size=[16, 16], r1_every=4, **TINY))
    ctx = FakeContext(dict(m.nets.items()), m.build_optimizers())
    batch = {"image": torch.rand(4, 1, 16, 16) * 2 - 1}
    seen = []
    for step in range(5):
        ctx.step = step
        seen.append("r1" in m.train_step(batch, ctx))
    assert seen == [True, False, False, False, True]


def test_config_errors():
    with pytest.raises(ConfigError):
        StyleGANConfig(size=[24, 24]).validate()
    with pytest.raises(ConfigError):
        InDomainEncoder((64, 64), 8, 32, n_blocks=2)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A 16-px stylegan run (3 steps) and a stylegan-encoder run on it (2 steps)."""
    from mammosynth.train.trainer import train

    root = tmp_path_factory.mktemp("sg")
    store = make_store(root / "d.h5")
    torch.manual_seed(0)
    g_run = train("stylegan", store, root / "runs", StyleGANConfig(size=[16, 16], steps=3, **TINY), progress=False)
    e_cfg = StyleGANEncoderConfig(generator_run=str(g_run), channels=8, max_channels=32, perceptual="discriminator",
                                  steps=2, batch_size=4, log_every=1, sample_every=2, ckpt_every=0, n_samples=4, amp="off",
                                  channels_last=False)
    e_run = train("stylegan-encoder", store, root / "runs", e_cfg, progress=False)
    return store, g_run, e_run


def test_train_load_generate(tiny_runs):
    from mammosynth.train.run import load_method

    _, g_run, e_run = tiny_runs
    m = load_method(g_run, device="cpu")
    samples = list(m.generate(5, seed=3, truncation=0.7, batch_size=2))
    assert len(samples) == 5 and samples[0].image.shape == (16, 16) and samples[0].image.dtype == np.float32
    assert 0.0 <= samples[0].image.min() and samples[0].image.max() <= 1.0
    again = list(m.generate(1, seed=3, truncation=0.7))
    assert np.allclose(again[0].image, samples[0].image, atol=1e-6)  # seeded and noise fixed
    # the options `mammosynth interpolate` passes
    frames = list(latent_samples(m, mode="loop", sources=["seed:1", "seed:2", "seed:3"], steps=3, n=16, spherical=False,
                                extrapolate=0.0, seed=0, store=None))
    assert len(frames) == 12 and frames[0].source_ids == ["seed:1", "seed:2"] and frames[-1].source_ids == ["seed:3", "seed:1"]
    pair = list(latent_samples(m, mode="pair", sources=[], steps=2, seed=5, spherical=True))
    assert len(pair) == 4 and pair[-1].weights == [1.0, 0.0] and pair[0].source_ids == ["seed:5", "seed:6"]
    assert len(list(latent_samples(m, mode="triangle", steps=2))) == 6
    with pytest.raises(ConfigError):
        list(latent_samples(m, mode="category"))
    enc = load_method(e_run, device="cpu")
    assert isinstance(enc, StyleGANEncoder)
    # the encoder run is self-contained: its frozen generator equals the stylegan run's EMA generator
    for (k, a), (_, b) in zip(m.nets["generator"].state_dict().items(), enc.nets["generator"].state_dict().items()):
        assert torch.equal(a, b), k
    assert (e_run / "samples").exists()


def test_encoder_loss_falls_on_tiny_set(tiny_runs):
    store, g_run, _ = tiny_runs
    torch.manual_seed(0)
    cfg = StyleGANEncoderConfig(generator_run=str(g_run), channels=8, max_channels=32, perceptual="discriminator", lr=3e-3)
    m = StyleGANEncoder(cfg, {})
    E, G = m.nets["encoder"], m.nets["generator"]
    assert m.nets["encoder"](torch.zeros(2, 1, 16, 16)).shape == (2, G.n_ws, G.w_dim)
    # targets the frozen generator can produce, so the reconstruction error can truly fall
    with torch.no_grad():
        x = G(torch.randn(8, G.z_dim, generator=torch.Generator().manual_seed(1)), noise_mode="const").clamp(-1, 1)
    ctx = FakeContext(dict(m.nets.items()), m.build_optimizers())
    first, last = [], []
    for step in range(40):
        ctx.step = step
        out = m.train_step({"image": x}, ctx)
        (first if step < 5 else last).append(float(out["pixel"]))
    assert np.mean(last[-5:]) < 0.7 * np.mean(first)
    # the generator stayed frozen
    assert all(not p.requires_grad for p in G.parameters())


def test_generate_is_untruncated_unless_asked_and_records_psi(tiny_runs, tmp_path, capsys):
    """Before: generate used psi 0.7 by default (flatters precision, FD and C2ST; issue 11)."""
    import json

    from mammosynth.cli import main
    from mammosynth.synth.writer import read_manifest
    from mammosynth.train.run import load_method

    _, g_run, e_run = tiny_runs
    m = load_method(g_run, device="cpu")
    m.cfg.truncation_psi = 0.5  # an old run's config value must not leak into generate
    plain = list(m.generate(2, seed=3))
    assert all(s.extra["truncation"] == 1.0 for s in plain)
    G = m.nets["generator"]
    z = torch.randn(G.z_dim, generator=torch.Generator().manual_seed(3))[None]
    want = (G.synthesize(G.mapping(z)[:, None].expand(-1, G.n_ws, -1), noise_mode="const")[0, 0] + 1) / 2
    assert np.allclose(plain[0].image, want.clamp(0, 1).detach().numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match="truncation"):
        list(m.generate(1, seed=0, truncation=1.5))
    assert main(["generate", str(g_run), "--n", "2", "--out", str(tmp_path / "a"), "--device", "cpu"]) == 0
    assert [json.loads(r["extra"])["truncation"] for r in read_manifest(tmp_path / "a")] == [1.0, 1.0]
    assert main(["generate", str(g_run), "--n", "2", "--out", str(tmp_path / "b"), "--truncation", "0.7",
                 "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["truncation"] == 0.7
    assert [json.loads(r["extra"])["truncation"] for r in read_manifest(tmp_path / "b")] == [0.7, 0.7]
    assert main(["generate", str(e_run), "--n", "1", "--out", str(tmp_path / "c"), "--truncation", "0.7"]) == 2
    assert "stylegan runs only" in capsys.readouterr().err


def test_full_config_follows_the_paper_adain_and_keeps_both_options():
    from mammosynth.config import default_config_path, load_config

    full = load_config(StyleGANConfig, default_config_path("stylegan", "full"))
    assert full.conv == "adain" and full.truncation_psi == 1.0  # seed 004: StyleGAN's AdaIN
    small = load_config(StyleGANConfig, default_config_path("stylegan", "full"),
                        ["size=[16,16]", "channel_base=64", "channel_max=16", "z_dim=16", "w_dim=16"])
    G = StyleGAN(small, {}).nets["generator"]
    kinds = {getattr(mod, "kind", None) for mod in G.modules()} - {None}
    assert kinds == {"adain"}
    mod = load_config(StyleGANConfig, default_config_path("stylegan", "full"), ["conv=modulated"])
    assert mod.conv == "modulated"


def test_encoder_perceptual_fallback_is_loud_and_recorded(tiny_runs, tmp_path, monkeypatch, caplog):
    """Before: a bare warnings.warn, nothing in config.json or the metrics (issue 11)."""
    import json

    from mammosynth.train.trainer import train

    store, g_run, _ = tiny_runs
    empty = tmp_path / "no-weights"
    empty.mkdir()
    monkeypatch.setenv("MAMMOSYNTH_WEIGHTS", str(empty))
    cfg = StyleGANEncoderConfig(generator_run=str(g_run), channels=8, max_channels=32, perceptual="auto", steps=2,
                                batch_size=4, log_every=1, sample_every=0, ckpt_every=2, n_samples=4, amp="off",
                                channels_last=False)
    with caplog.at_level("WARNING", logger="mammosynth.models.stylegan_encoder"):
        run = train("stylegan-encoder", store, tmp_path / "runs", cfg, progress=False)
    assert "NO IMAGENET VGG-16 WEIGHTS" in caplog.text and "NOT the paper's VGG conv4_3" in caplog.text
    doc = json.loads((run / "config.json").read_text())
    assert doc["data"]["perceptual"].startswith("perceptual fallback") and str(empty) in doc["data"]["perceptual"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["perceptual_fallback"] == 1.0 for line in lines)
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["extra_state"]["perceptual"].startswith("perceptual fallback")


def test_split_is_refused_for_a_method_that_draws_no_real_lesions(tiny_runs, tmp_path, capsys):
    from mammosynth.cli import main

    _, g_run, _ = tiny_runs
    assert main(["generate", str(g_run), "--n", "1", "--out", str(tmp_path / "s"), "--split", "val"]) == 2
    assert "birads-aegan, infill and diffusion-infill runs only" in capsys.readouterr().err
