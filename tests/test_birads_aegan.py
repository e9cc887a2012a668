"""birads-aegan (seed 000): network shapes, losses eq. 3-5, masked auxiliary labels,
visual-feature generation and traceable manifests."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from mammosynth.data.birads import MARGINS, SHAPES, Label
from mammosynth.data.records import LesionRecord
from mammosynth.data.store import StoreWriter
from mammosynth.errors import ConfigError, DataError
from mammosynth.models.birads_aegan import (AuxDiscriminator, BiradsAEGAN, BiradsAEGANConfig, Decoder, Encoder,
                                            LabelEmbedding, aegan_losses, mix_weights)
from mammosynth.synth.writer import Lesion, SyntheticSetWriter, read_manifest
from mammosynth.train.method import EagerContext


pytestmark = pytest.mark.usefixtures("one_thread")




def tiny_store(path, n=24, size=32, seed=0, shapes=True):
    """Bright ellipses on noise; round/oval shapes get circumscribed margins, irregular spiculated.
    ``shapes=False``: no lesion has a shape label (mini-MIAS, INbreast, VinDr give margins only)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    with StoreWriter(path, patch_size=size, normal_size=(64, 48), split_seed=seed) as w:
        for i in range(n):
            kind = i % 3
            ry, rx = (0.2, 0.2) if kind == 0 else ((0.15, 0.28) if kind == 1 else (0.25, 0.12))
            mask = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1
            patch = (0.2 + 0.1 * rng.random((size, size)) + 0.6 * mask).astype(np.float32)
            shape = ("ROUND", "OVAL", "IRREGULAR")[kind]
            margin = ("CIRCUMSCRIBED", "CIRCUMSCRIBED", "SPICULATED")[kind]
            w.add_lesion(LesionRecord(
                source="test", source_id=f"L{i:03d}", patient_id=f"P{i}", patch=patch, mask=mask,
                shape=Label(shape, shape.lower(), "exact") if shapes else Label(None, None, "missing"),
                margin=Label(margin, margin.lower(), "exact"),
                pathology=Label("BENIGN", "benign", "exact"), split_hint="train" if i < n - 6 else "test"))
    return path


def small_cfg(**kw):
    base = dict(patch_size=32, base_channels=8, max_channels=32, feature_dim=32, embed_hidden=16, batch_size=8)
    base.update(kw)
    return BiradsAEGANConfig(**base)


@pytest.mark.parametrize("size", [64, 128])
def test_network_shapes(size):
    B = 2
    enc = Encoder(size, 3, 1024, base=8, cap=32)
    dec = Decoder(size, 1024, base=8, cap=32)
    d1 = AuxDiscriminator(size, len(MARGINS), base=8, cap=32, fc_hidden=64)
    e1 = LabelEmbedding(len(MARGINS), size)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in enc.modules()) == 7
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in dec.modules()) == 7
    assert sum(isinstance(m, torch.nn.Conv2d) for m in d1.modules()) == 10
    assert sum(isinstance(m, torch.nn.Linear) for m in d1.modules()) == 4  # FC1, FC2, and FC3 split in two heads
    assert [m.out_features for m in e1.modules() if isinstance(m, torch.nn.Linear)] == [256, size * size]
    emb = e1(torch.tensor([0, -1]))
    assert emb.shape == (B, 1, size, size)
    feat = enc(torch.cat([torch.randn(B, 1, size, size), emb, emb], 1))
    assert feat.shape == (B, 1024)
    img = dec(feat)
    assert img.shape == (B, 1, size, size) and img.abs().max() <= 1
    rf, cls = d1(img)
    assert rf.shape == (B,) and cls.shape == (B, len(MARGINS))


def test_default_networks_at_64_follow_the_paper():
    m = BiradsAEGAN(BiradsAEGANConfig(), {"patch_size": 64})
    assert m.nets["encoder"].feature_dim == 1024 and m.patch_size == 64
    assert m.cfg.lambda_margin_d == m.cfg.lambda_shape_d == m.cfg.lambda_aux_g == 10 and m.cfg.lambda_rec == 300
    opt = m.build_optimizers()
    assert opt["G"].defaults["lr"] == 2e-4 and opt["G"].defaults["betas"] == (0.9, 0.999)
    with pytest.raises(ConfigError):
        BiradsAEGANConfig(patch_size=48).validate()


def test_gradients_reach_both_embeddings():
    m = BiradsAEGAN(small_cfg())
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    s, mg = torch.tensor([0, 1, 3, -1]), torch.tensor([0, 4, 2, 1])
    fake = m.nets["decoder"](m.encode_with(m.nets, x, s, mg))
    terms = aegan_losses(m.nets, x, s, mg, m.cfg, "G", fake=fake)
    terms["loss_g"].backward()
    for name in ("embed_margin", "embed_shape", "encoder", "decoder"):
        grads = [p.grad for p in m.nets[name].parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0, name


def test_missing_labels_are_masked_out_of_auxiliary_losses():
    m = BiradsAEGAN(small_cfg())
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    unknown = torch.full((3,), -1)
    fake = m.nets["decoder"](m.encode_with(m.nets, x, unknown, unknown)).detach()
    d = aegan_losses(m.nets, x, unknown, unknown, m.cfg, "D", fake=fake)
    assert d["aux_margin_d"].item() == 0 and d["aux_shape_d"].item() == 0
    d["loss_d"].backward()
    assert float(m.nets["disc_margin"].classifier.weight.grad.abs().sum()) == 0  # no guessed label trains the head
    assert float(m.nets["disc_margin"].real_fake.weight.grad.abs().sum()) > 0
    # one known label: the aux term equals plain CE on that sample alone
    m.nets.zero_grad()
    margin = torch.tensor([-1, 3, -1])
    d2 = aegan_losses(m.nets, x, unknown, margin, m.cfg, "D", fake=fake)
    _, logits_real = m.nets["disc_margin"](x)
    _, logits_fake = m.nets["disc_margin"](fake)
    ce = torch.nn.functional.cross_entropy
    want = ce(logits_real[1:2], margin[1:2]) + ce(logits_fake[1:2], margin[1:2])
    assert torch.allclose(d2["aux_margin_d"], want, atol=1e-5)


def test_training_steps_lower_reconstruction_loss(tmp_path):
    torch.manual_seed(0)
    store = tiny_store(tmp_path / "s.h5", n=16)
    m = BiradsAEGAN(small_cfg(), {"patch_size": 32, "store_path": str(store)})
    ds = m.make_dataset(str(store), "train")
    batch = torch.utils.data.default_collate([ds[i] for i in range(8)])
    ctx = EagerContext(m, m.build_optimizers())
    recs = []
    for step in range(25):
        ctx.step = step
        out = m.train_step(batch, ctx)
        recs.append(float(out["rec_l1"]))
        assert all(np.isfinite(float(v)) for v in out.values())
    assert np.mean(recs[-5:]) < 0.6 * np.mean(recs[:3])


def test_training_mixtures_stay_within_a_margin():
    shape = torch.tensor([0, 1, 0, 2, -1, 3, 0, 1, 0])
    margin = torch.tensor([1, 1, 1, 2, 2, -1, 0, 1, 1])
    w, mix_margin, mix_shape = mix_weights(shape, margin, partners=3, generator=torch.Generator().manual_seed(0))
    assert w.shape == (9, 9) and torch.allclose(w.sum(1), torch.ones(9)) and bool((w >= 0).all())
    used = w > 0
    assert bool(used.diagonal().all())  # every mixture contains its own sample
    assert int(used.sum(1).max()) <= 3  # at most `partners` features per mixture
    same_margin = margin[:, None] == margin[None, :]
    assert not bool((used & ~same_margin).any())  # never mixes across margins
    assert used[5].sum() == 1 and used[6].sum() == 1  # unknown margin / no partner: itself only
    assert torch.equal(mix_margin, margin)
    for i in range(9):  # the shape label survives only when every mixed lesion shares it
        shared = bool((shape[used[i]] == shape[i]).all())
        assert int(mix_shape[i]) == (int(shape[i]) if shared else -1)
    with pytest.raises(ConfigError, match="lambda_mix"):
        small_cfg(lambda_mix=-1.0).validate()


def test_mixing_term_trains_the_decoder_on_mixtures():
    """lambda_mix > 0 adds the mixture terms to L_D and L_G, and they reach E1/E2 through the
    mixed features; lambda_mix = 0 is the paper's loss, unchanged."""
    torch.manual_seed(0)
    m = BiradsAEGAN(small_cfg(lambda_mix=1.0, mix_partners=3))
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    s, mg = torch.tensor([0, 1, 0, 2, 1, 0]), torch.tensor([4, 4, 4, 1, 1, 0])
    feature = m.encode_with(m.nets, x, s, mg)
    fake = m.nets["decoder"](feature)
    w, mix_margin, mix_shape = mix_weights(s, mg, 3, torch.Generator().manual_seed(1))
    mix = (m.nets["decoder"](w @ feature), mix_shape, mix_margin)
    plain = aegan_losses(m.nets, x, s, mg, m.cfg, "G", fake=fake)
    with_mix = aegan_losses(m.nets, x, s, mg, m.cfg, "G", fake=fake, mix=mix)
    want = plain["loss_g"] + with_mix["mix_adv_g"] + m.cfg.lambda_aux_g * with_mix["mix_aux_g"]
    assert torch.allclose(with_mix["loss_g"], want) and with_mix["mix_aux_g"].item() > 0
    d = aegan_losses(m.nets, x, s, mg, m.cfg, "D", fake=fake.detach(), mix=(mix[0].detach(), mix_shape, mix_margin))
    assert d["mix_d"].item() > 0 and "mix_d" not in aegan_losses(m.nets, x, s, mg, m.cfg, "D", fake=fake.detach())
    m.nets.zero_grad()
    (with_mix["loss_g"] - plain["loss_g"]).backward()  # the mixture terms alone
    for name in ("embed_margin", "embed_shape", "encoder", "decoder"):
        assert sum(float(p.grad.abs().sum()) for p in m.nets[name].parameters() if p.grad is not None) > 0, name
    ctx = EagerContext(m, m.build_optimizers())  # and through train_step
    out = m.train_step({"image": x, "shape": s, "margin": mg}, ctx)
    assert {"mix_d", "mix_adv_g", "mix_aux_g"} <= out.keys() and all(np.isfinite(float(v)) for v in out.values())


@pytest.fixture
def trained_method(tmp_path):
    store = tiny_store(tmp_path / "s.h5")
    m = BiradsAEGAN(small_cfg(), {"patch_size": 32, "store_path": str(store)})
    ds = m.make_dataset(str(store), "train")
    batch = torch.utils.data.default_collate([ds[i] for i in range(8)])
    ctx = EagerContext(m, m.build_optimizers())
    for _ in range(3):
        m.train_step(batch, ctx)
    m.on_load()
    return m, store


def test_interpolation_endpoints_are_the_reconstructions(trained_method, tmp_path):
    m, store = trained_method
    samples = list(m.interpolate(sources=["L000", "L002"], mode="pair", steps=8, strip=str(tmp_path / "strip.png")))
    assert len(samples) == 10 and (tmp_path / "strip.png").exists()
    bank = m._seed_bank(None, None)
    rows = [bank.row_of("L000"), bank.row_of("L002")]
    recon = (m.decode(m.encode(bank.images[rows], bank.shape[rows], bank.margin[rows]))[:, 0].numpy() + 1) / 2
    assert np.allclose(samples[0].image, recon[0], atol=1e-5) and np.allclose(samples[-1].image, recon[1], atol=1e-5)
    assert samples[0].weights == [1.0, 0.0] and samples[-1].weights == [0.0, 1.0]
    assert all(s.source_ids == ["L000", "L002"] for s in samples)
    assert samples[0].shape is None and samples[0].extra["source_shapes"] == ["round", "irregular"]
    # endpoint masks are the sources' masks
    assert (samples[0].mask == bank.masks[rows[0]]).all()
    # spherical and extrapolated variants, triangle and loop
    assert len(list(m.interpolate(sources=[0, 2], steps=8, spherical=True, extrapolate=0.2))) == 12
    tri = list(m.interpolate(sources=["L000", "L001", "L003"], mode="triangle"))
    assert len(tri) == 15 and all(abs(sum(s.weights) - 1) < 1e-9 for s in tri)
    assert tri[0].shape is None and len(list(m.interpolate(sources=["L000", "L001", "L003"], mode="loop", steps=2))) == 9
    # same-category sources carry their labels; an override steers every source
    same = list(m.interpolate(sources=["L000", "L003"]))
    assert same[0].shape == "round" and same[0].margin == "circumscribed"
    steered = list(m.interpolate(sources=["L000", "L002"], shape="oval", margin="obscured"))
    assert steered[4].shape == "oval" and steered[4].margin == "obscured"
    with pytest.raises(ConfigError):
        list(m.interpolate(sources=["L000"], mode="pair"))
    with pytest.raises(ConfigError):
        list(m.interpolate(sources=["L000", "L001", "L002"], mode="triangle", extrapolate=0.1))
    with pytest.raises(DataError):
        list(m.interpolate(sources=["L000", "nope"]))


def test_category_generation_is_traceable_in_the_manifest(trained_method, tmp_path):
    m, store = trained_method
    samples = list(m.generate(5, seed=3, shape="irregular", margin="spiculated", batch_size=2))
    bank = m._seed_bank(None, "train")
    members = {bank.source_ids[i] for i in range(len(bank.source_ids))
               if SHAPES[int(bank.shape[i])] == "irregular" and MARGINS[int(bank.margin[i])] == "spiculated"}
    with SyntheticSetWriter(tmp_path / "out", method="birads-aegan") as w:
        for s in samples:
            assert s.shape == "irregular" and s.margin == "spiculated" and s.image.shape == (32, 32)
            assert set(s.source_ids) <= members and len(s.source_ids) == min(20, len(members))
            w.add(s.image, [Lesion(mask=s.mask, shape=s.shape, margin=s.margin)], seed=s.seed,
                  source_ids=s.source_ids, weights=s.weights, extra=s.extra)
    rows = read_manifest(tmp_path / "out")
    assert len(rows) == 5
    for row, s in zip(rows, samples):
        weights = [float(v) for v in row["weights"].split(";")]
        assert abs(sum(weights) - 1) < 1e-6 and np.allclose(np.array(weights) / 0.05, np.round(np.array(weights) / 0.05))
        assert row["source_ids"].split(";") == s.source_ids
        assert row["shape"] == "irregular" and row["margin"] == "spiculated"
    # deterministic for a seed; a category absent from the seeds is a clear error
    again = list(m.generate(5, seed=3, shape="irregular", margin="spiculated"))
    assert all(np.allclose(a.image, b.image, atol=1e-5) and a.weights == b.weights for a, b in zip(samples, again))
    with pytest.raises(DataError, match="no seed lesions"):
        list(m.generate(1, seed=0, shape="lobulated"))
    free = list(m.generate(4, seed=1))
    assert all(s.shape in SHAPES and s.margin in MARGINS for s in free)


def test_trains_through_trainer_and_generates_after_loading(tmp_path, capsys):
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    store = tiny_store(tmp_path / "s.h5")
    cfg = small_cfg(steps=2, batch_size=4, log_every=1, sample_every=2, ckpt_every=2, n_samples=4, device="cpu")
    run = train("birads-aegan", store, tmp_path / "runs", cfg, progress=False)
    assert (run / "samples" / "step_000002.png").is_file()  # reals + reconstructions
    m = load_method(run, device="cpu", expect="birads-aegan")
    assert m.data_info["store_path"] == str(store.resolve()) and not m.nets["encoder"].training
    samples = list(m.generate(3, seed=0, shape="round", margin="circumscribed"))
    assert [s.shape for s in samples] == ["round"] * 3 and all(s.mask is not None and s.mask.any() for s in samples)
    pair = list(m.interpolate(mode="pair", sources=["L000", "L001"], steps=8, n=16, spherical=False, extrapolate=0.0,
                              seed=0, store=None))  # the options cli/synth.py passes
    assert len(pair) == 10

    # `generate --per-category`: every (shape, margin) category of the seeds in one labelled set;
    # the tiny store holds 3 of the 20 categories, the other 17 are skipped with their reason
    import json

    from mammosynth.cli import main
    from mammosynth.synth.writer import read_manifest

    out = tmp_path / "percat"
    assert main(["generate", str(run), "--per-category", "2", "--out", str(out), "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["categories"] == 3 and len(summary["skipped"]) == 17 and "no seed lesions" in summary["skipped"][0]["reason"]
    rows = read_manifest(out)
    assert sorted({(r["shape"], r["margin"]) for r in rows}) == [
        ("irregular", "spiculated"), ("oval", "circumscribed"), ("round", "circumscribed")]
    assert len(rows) == 6
    assert main(["generate", str(run), "--per-category", "1", "--margin", "spiculated", "--n-features", "2",
                 "--out", str(tmp_path / "col"), "--device", "cpu"]) == 0
    col = read_manifest(tmp_path / "col")
    assert [r["shape"] for r in col] == ["irregular"] and len(col[0]["source_ids"].split(";")) == 2


@pytest.mark.parametrize("knobs", [dict(paper=True), dict(upsampling="transposed_blur", d_reg="spectral"),
                                   dict(d_reg="r1", diffaug="color,translation,cutout")])
def test_recipe_variants_train_and_the_paper_switch_restores_the_paper(tmp_path, knobs):
    torch.manual_seed(0)
    store = tiny_store(tmp_path / "s.h5", n=16)
    cfg = small_cfg(**knobs)
    cfg.validate()
    if knobs.get("paper"):
        assert (cfg.ema_decay, cfg.upsampling, cfg.diffaug, cfg.d_reg) == (0.0, "transposed", "", "none")
    m = BiradsAEGAN(cfg, {"patch_size": 32, "store_path": str(store)})
    strided = [x for x in m.nets["decoder"].modules() if isinstance(x, torch.nn.ConvTranspose2d) and x.stride == (2, 2)]
    assert bool(strided) == (cfg.upsampling != "resize")
    ds = m.make_dataset(str(store), "train")
    batch = torch.utils.data.default_collate([ds[i] for i in range(8)])
    ctx = EagerContext(m, m.build_optimizers())
    recs = [float(m.train_step(batch, ctx)["rec_l1"]) for _ in range(20)]
    assert np.mean(recs[-4:]) < np.mean(recs[:3])


def margin_only_store(path):
    return tiny_store(path, shapes=False)


def test_categories_are_the_label_combinations_the_seeds_have(trained_method, tmp_path):
    m, store = trained_method
    both = m.categories()
    assert both["axes"] == ("shape", "margin")
    assert {(c["shape"], c["margin"]) for c in both["present"]} == {
        ("round", "circumscribed"), ("oval", "circumscribed"), ("irregular", "spiculated")}
    assert len(both["absent"]) == 17 and sum(c["n_seeds"] for c in both["present"]) == 18
    assert {(c["shape"], c["margin"]) for c in m.categories(margin="circumscribed")["present"]} == {
        ("round", "circumscribed"), ("oval", "circumscribed")}
    # a margin-only request draws seeds of that margin whatever their shape
    samples = list(m.generate(3, seed=0, margin="circumscribed", n_features=12))
    bank = m._seed_bank(None, "train")
    shapes = {SHAPES[int(bank.shape[bank.row_of(sid)])] for s in samples for sid in s.source_ids}
    assert shapes == {"round", "oval"} and all(s.shape is None and s.margin == "circumscribed" for s in samples)

    only = BiradsAEGAN(m.cfg, {"patch_size": 32, "store_path": str(margin_only_store(tmp_path / "m.h5"))})
    only.nets.load_state_dict(m.nets.state_dict())
    only.on_load()
    cats = only.categories()
    assert cats["axes"] == ("margin",)
    assert [(c["shape"], c["margin"], c["n_seeds"]) for c in cats["present"]] == [
        (None, "circumscribed", 12), (None, "spiculated", 6)]
    assert [c["margin"] for c in cats["absent"]] == ["obscured", "microlobulated", "ill_defined"]
    free = list(only.generate(6, seed=1))  # plain --n: categories drawn per margin
    assert all(s.shape is None and s.margin in ("circumscribed", "spiculated") for s in free)
    with pytest.raises(DataError, match="has a shape label"):
        only.categories(shape="round")
    with pytest.raises(DataError, match="no seed has a shape label"):
        list(only.generate(1, seed=0, shape="round"))


def test_a_pool_smaller_than_k_is_used_whole_and_recorded(trained_method, caplog):
    m, _ = trained_method
    with caplog.at_level("WARNING", logger="mammosynth.models.birads_aegan"):
        samples = list(m.generate(3, seed=0, shape="irregular", margin="spiculated"))  # 6 seeds < K = 20
    assert "6 seed lesion(s)" in caplog.text and "fewer than K = 20" in caplog.text
    for s in samples:
        assert len(s.source_ids) == 6 and s.extra["pool_size"] == 6 and s.extra["n_features_requested"] == 20
    big = list(m.generate(1, seed=0, shape="irregular", margin="spiculated", n_features=4))
    assert big[0].extra["pool_size"] == 6 and big[0].extra["n_features"] == 4


def test_margin_only_run_generates_per_category_through_the_cli(tmp_path, capsys):
    """Before: "no seed lesions with both shape and margin labels" (issue 11)."""
    import json

    from mammosynth.cli import main
    from mammosynth.train.trainer import train

    store = margin_only_store(tmp_path / "m.h5")
    cfg = small_cfg(steps=1, batch_size=4, log_every=1, sample_every=0, ckpt_every=1, device="cpu")
    run = train("birads-aegan", store, tmp_path / "runs", cfg, progress=False)
    out = tmp_path / "percat"
    assert main(["generate", str(run), "--per-category", "2", "--out", str(out), "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["categories"] == 2 and [s["margin"] for s in summary["skipped"]] == ["obscured", "microlobulated", "ill_defined"]
    assert {(p["margin"], p["pool_size"], p["n_features_requested"]) for p in summary["small_seed_pools"]} == {
        ("circumscribed", 12, 20), ("spiculated", 6, 20)}
    rows = read_manifest(out)
    assert sorted((r["shape"], r["margin"]) for r in rows) == [("", "circumscribed")] * 2 + [("", "spiculated")] * 2
    assert all(json.loads(r["extra"])["pool_size"] in (6, 12) for r in rows)
    assert main(["generate", str(run), "--n", "3", "--out", str(tmp_path / "plain"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "wrote 3 images" in err and "fewer than K = 20" in err
    assert {r["margin"] for r in read_manifest(tmp_path / "plain")} <= {"circumscribed", "spiculated"}
    assert main(["generate", str(run), "--n", "1", "--split", "test", "--out", str(tmp_path / "t"), "--device", "cpu"]) == 0
    assert json.loads(read_manifest(tmp_path / "t")[0]["extra"])["seed_split"] == "test"
