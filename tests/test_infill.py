"""Seed-001 infilling GAN: networks, eq. 3-5 losses, the VGG / fallback feature matching,
the Method contract (train_step, infill, sample_grid, generate) on tiny CPU inputs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from mammosynth.config import default_config_path, load_config
from mammosynth.errors import ConfigError, DataError
from mammosynth.models import get_method
from mammosynth.models.infill import (
    FALLBACK_NOTE, CRNGenerator, InfillConfig, InfillGAN, PatchDiscriminator, UNetGenerator,
    feature_matching_l1, layer_weights, load_feature_matching,
)
from mammosynth.train.method import EagerContext
from tests.blob_stores import blob_store

TINY = dict(ngf=8, ndf=8, batch_size=2, fm_weights="discriminator")




def _write_store(path: Path, n: int = 10, size: int = 32) -> Path:
    return blob_store(path, n, size)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return _write_store(tmp_path_factory.mktemp("infill") / "blobs.h5")


def _method(store: Path | None = None, size: int = 32, **kw) -> InfillGAN:
    info = {"patch_size": size}
    if store is not None:
        info["store_path"] = str(store)
    return InfillGAN(InfillConfig(**{**TINY, **kw}), info)


def _batch(store: Path, method: InfillGAN, n: int = 2) -> dict[str, torch.Tensor]:
    ds = method.make_dataset(str(store), "train")
    items = [ds[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


# -- networks -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_generator_output_shapes(size: int) -> None:
    ngf = 8 if size <= 64 else 2
    x = torch.rand(1, 3, size, size) * 2 - 1
    torch.set_grad_enabled(False)
    for gen in (UNetGenerator(3, 1, size, ngf), CRNGenerator(3, 1, size, ngf, start=2),
                CRNGenerator(3, 1, size, ngf, start=4)):
        y = gen(x)
        assert y.shape == (1, 1, size, size)
        assert float(y.abs().max()) <= 1.0  # tanh output
    unet = UNetGenerator(3, 1, size, ngf)
    assert len(unet.encoders) == int(np.log2(size))  # depth derived from the patch size: 1x1 bottleneck
    assert UNetGenerator(2, 1, size, ngf)(x[:, :2]).shape == (1, 1, size, size)  # two-channel ablation
    torch.set_grad_enabled(True)


def test_crn_modules_follow_fig3b() -> None:
    crn = CRNGenerator(3, 1, 64, ngf=4, start=2)
    assert crn.resolutions == [2, 4, 8, 16, 32, 64]
    assert crn.widths == [32, 32, 32, 16, 8, 4]  # d_i = ngf * min(2^(n-1-i), 8)
    assert CRNGenerator(3, 1, 64, ngf=4, start=4).resolutions[0] == 4
    custom = CRNGenerator(3, 1, 32, widths=(16, 16, 8, 8, 4), start=2)
    assert custom.widths == [16, 16, 8, 8, 4]
    with pytest.raises(ConfigError, match="crn_widths needs 5"):
        CRNGenerator(3, 1, 32, widths=(8, 8), start=2)


def test_patchgan_is_30x30_at_256_and_returns_features() -> None:
    d = PatchDiscriminator(in_ch=4, ndf=2, n_layers=3)
    cond, img = torch.zeros(1, 3, 256, 256), torch.zeros(1, 1, 256, 256)
    assert d(cond, img).shape == (1, 1, 30, 30)
    logits, feats = d(cond, img, return_features=True)
    assert len(feats) == 4 and feats[-1].shape[-1] == 31
    # pix2pix's 70x70 D on 6-channel pairs has 2,768,705 parameters; same layout here
    assert sum(p.numel() for p in PatchDiscriminator(6, 64, 3).parameters()) == 2_768_705


def test_config_validation_and_yaml_configs() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        InfillConfig(patch_size=48).validate()
    with pytest.raises(ConfigError, match="crn_start"):
        InfillConfig(crn_start=3).validate()
    with pytest.raises(ConfigError, match="margin_factor"):
        InfillConfig(margin_factor=0.9).validate()
    cfg = InfillConfig()
    assert (cfg.beta1, cfg.beta2, cfg.lr, cfg.lambda_fm, cfg.batch_size) == (0.9, 0.5, 2e-4, 100.0, 2)
    for size in ("demo", "full"):
        path = default_config_path("infill", size)
        assert path is not None, f"configs/infill-{size}.yaml missing"
        loaded = load_config(InfillConfig, path)
        assert loaded.lambda_fm == 100.0
    assert load_config(InfillConfig, default_config_path("infill", "full")).steps == 100_000
    assert get_method("infill") is InfillGAN


# -- feature matching (eq. 4) ----------------------------------------------------------


def test_feature_matching_is_zero_for_identical_and_weighted_by_inverse_numel() -> None:
    gen = torch.Generator().manual_seed(0)
    real = [torch.randn(2, 1, 8, 8, generator=gen), torch.randn(2, 4, 4, 4, generator=gen)]
    total, terms = feature_matching_l1(real, [r.clone() for r in real])
    assert float(total) == 0.0
    fake = [r + 0.5 for r in real]
    total, terms = feature_matching_l1(real, fake)
    assert layer_weights(fake) == [1 / 64, 1 / 64]
    assert float(total) > 0
    # lambda_l * ||.||_1 per sample, averaged over the batch: |0.5| everywhere -> 0.5 per layer
    assert torch.allclose(torch.stack(terms), torch.tensor([0.5, 0.5]))


def _save_random_vgg(arch: str, directory: Path, layers: tuple[str, ...]) -> None:
    from mammosynth.nn.vgg import VGG
    from mammosynth.nn.weights import save_weights

    torch.manual_seed(1)
    save_weights(arch, VGG(arch, layers).state_dict(), directory, provenance={"source": "test (random init)"})


def test_vgg_feature_matching_with_weights_present(tmp_path: Path) -> None:
    layers = ("conv1_2", "conv2_2")
    _save_random_vgg("vgg19", tmp_path, layers)
    fm, what = load_feature_matching("vgg19", layers, str(tmp_path))
    assert fm is not None and what == "vgg19"
    assert not any(p.requires_grad for p in fm.parameters())
    img = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    total, terms = fm(img, img.clone())
    assert float(total) == 0.0 and len(terms) == 3  # phi_0 identity + 2 VGG layers
    fake = img.clone().requires_grad_(True)
    total, terms = fm(img, (fake * 0.5).clamp(-1, 1))
    assert float(total.detach()) > 0 and all(float(t.detach()) > 0 for t in terms)
    total.backward()
    assert fake.grad is not None and float(fake.grad.abs().sum()) > 0
    # "auto" falls back from vgg19 to vgg16 when only vgg16 is cached
    only16 = tmp_path / "only16"
    _save_random_vgg("vgg16", only16, layers)
    fm16, what16 = load_feature_matching("auto", layers, str(only16))
    assert fm16 is not None and what16 == "vgg16"
    # the method uses it and reports no fallback
    m = _method(None, fm_weights="vgg19", fm_layers=layers, weights_dir=str(tmp_path))
    assert m.feature_matching() is not None and FALLBACK_NOTE not in m.fm_status


def test_fallback_warns_loudly_and_is_recorded(tmp_path: Path, store: Path, caplog) -> None:
    m = _method(store, fm_weights="vgg19", weights_dir=str(tmp_path / "empty"))
    opts = m.build_optimizers()
    with caplog.at_level(logging.WARNING, logger="mammosynth.models.infill"):
        out = m.train_step(_batch(store, m), EagerContext(m.nets, opts))
    assert any("NO IMAGENET VGG-19 WEIGHTS FOUND (fm_weights=vgg19)" in r.getMessage() for r in caplog.records)
    assert out["fm_fallback"] == 1.0
    assert FALLBACK_NOTE in m.fm_status and FALLBACK_NOTE in m.extra_state()["feature_matching"]
    assert FALLBACK_NOTE in m.data_info["feature_matching"]


def test_full_config_trains_with_imagenet_vgg_features_from_a_vgg16_cache(tmp_path: Path, caplog) -> None:
    """Before: infill-full.yaml asked for vgg19, which `weights get` cannot install, so the
    paper-size run fell back to discriminator features saying "NO IMAGENET VGG WEIGHTS FOUND"
    although VGG-16 was cached (issue 11). Runs without the real cache: a fixture cache."""
    from mammosynth.config import default_config_path, load_config
    from mammosynth.models.infill import describe_feature_matching, vgg16_layers

    only16 = tmp_path / "only16"
    _save_random_vgg("vgg16", only16, ("conv3_3",))
    full = load_config(InfillConfig, default_config_path("infill", "full"),
                       [f"weights_dir={only16}", "fm_layers=[conv1_2,conv3_4]"])
    assert full.fm_weights == "auto" and full.lambda_fm == 100.0
    fm, arch = load_feature_matching(full.fm_weights, tuple(full.fm_layers), full.weights_dir)
    assert fm is not None and arch == "vgg16" and fm.features.layers == ("conv1_2", "conv3_3")  # conv3_4 mapped
    assert vgg16_layers(("conv1_2", "relu4_4", "conv5_4", "conv5_2")) == ("conv1_2", "relu4_3", "conv5_3", "conv5_2")
    desc = describe_feature_matching(full.fm_weights, full.weights_dir, tuple(full.fm_layers))
    assert "vgg16 as the documented substitute for the paper's VGG-19" in desc and FALLBACK_NOTE not in desc
    # fm_weights=vgg19 insists; the message says exactly what is missing and what is cached
    m = _method(None, fm_weights="vgg19", fm_layers=("conv1_2",), weights_dir=str(only16))
    with caplog.at_level(logging.WARNING, logger="mammosynth.models.infill"):
        assert m.feature_matching() is None
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "NO IMAGENET VGG-19 WEIGHTS (fm_weights=vgg19) -- ImageNet VGG-16 IS cached" in msg
    assert "NO IMAGENET VGG WEIGHTS FOUND" not in msg and "VGG-16 IS cached" in describe_feature_matching("vgg19", str(only16))


def test_full_config_resolves_to_imagenet_vgg_with_the_standard_cache() -> None:
    from mammosynth.config import default_config_path, load_config
    from mammosynth.nn.weights import weight_file

    try:
        weight_file("vgg16")
    except Exception as err:  # the standard cache (`mammosynth weights get`) is absent here
        pytest.skip(f"real weight cache absent ({err})")
    full = load_config(InfillConfig, default_config_path("infill", "full"))
    fm, arch = load_feature_matching(full.fm_weights, tuple(full.fm_layers), full.weights_dir)
    assert fm is not None and arch in ("vgg16", "vgg19") and fm.features.layers == tuple(full.fm_layers)


# -- training ---------------------------------------------------------------------------


@pytest.mark.parametrize("generator", ["unet", "crn"])
def test_train_step_updates_both_networks(store: Path, generator: str) -> None:
    m = _method(store, generator=generator)
    opts = m.build_optimizers()
    before = {k: [p.detach().clone() for p in net.parameters()] for k, net in m.nets.items()}
    grads_seen = {"generator": False, "discriminator": False}

    def mark(name):
        def hook(_grad):
            grads_seen[name] = True
        return hook

    for name, net in m.nets.items():
        next(net.parameters()).register_hook(mark(name))
    out = m.train_step(_batch(store, m), EagerContext(m.nets, opts))
    assert all(grads_seen.values())
    for k, net in m.nets.items():
        moved = [not torch.equal(a, b) for a, b in zip(before[k], net.parameters())]
        assert sum(moved) >= len(moved) - 2, f"{k}: parameters were not updated"  # (norm-free bias may not move)
    for key in ("loss_d", "loss_g", "loss_adv", "loss_fm", "l1"):
        assert torch.isfinite(torch.as_tensor(out[key]))


def test_generator_loss_reconstruction_falls_on_tiny_batch(store: Path) -> None:
    torch.manual_seed(0)
    m = _method(store, generator="unet", unet_dropout=0.0, beta1=0.5, beta2=0.999, lr=1e-3)
    opts = m.build_optimizers()
    ctx = EagerContext(m.nets, opts)
    batch = _batch(store, m)
    l1s = [float(m.train_step(batch, ctx)["l1"]) for _ in range(10)]
    assert np.mean(l1s[-2:]) < 0.8 * np.mean(l1s[:2]), l1s


def test_two_channel_ablation_changes_inputs(store: Path) -> None:
    m = _method(store, two_channel=True)
    assert m.in_ch == 2
    assert next(m.nets["discriminator"].parameters()).shape[1] == 3  # Tri-label(2) + image
    out = m.train_step(_batch(store, m), EagerContext(m.nets, m.build_optimizers()))
    assert torch.isfinite(torch.as_tensor(out["loss_g"]))


# -- inference API ------------------------------------------------------------------------


def test_infill_api_shapes_range_determinism_and_mode(store: Path) -> None:
    m = _method(store)
    m.nets.train()
    tissue = torch.rand(3, 1, 32, 32) * 2 - 1
    mask = torch.zeros(3, 1, 32, 32)
    mask[:, :, 10:20, 12:22] = 1
    a = m.infill(tissue, mask, torch.Generator().manual_seed(5))
    b = m.infill(tissue, mask, torch.Generator().manual_seed(5))
    assert a.shape == (3, 1, 32, 32) and torch.equal(a, b)
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    assert m.nets["generator"].training  # mode restored
    assert m.infill(tissue[:, :, :16, :16], mask[:, :, :16, :16]).shape == (3, 1, 16, 16)  # resized in and out
    with pytest.raises(DataError, match="shape"):
        m.infill(tissue[:, 0], mask[:, 0])


def test_sample_grid_and_generate(store: Path) -> None:
    m = _method(store)
    grid = m.sample_grid(dict(m.nets), 4, seed=0)
    assert grid.shape == (4, 1, 32, 160)  # noisy tissue | mask | ring | output | real
    assert torch.equal(grid, m.sample_grid(dict(m.nets), 4, seed=0))
    samples = list(m.generate(3, seed=1))
    assert len(samples) == 3
    for s in samples:
        assert s.image.shape == (32, 32) and s.image.dtype == np.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert s.mask.dtype == bool and s.mask.any()
        assert s.shape in ("round", "oval") and s.margin == "spiculated" and s.pathology == "malignant"
        assert s.source_ids and s.source_ids[0].startswith("L")
    again = list(m.generate(3, seed=1))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(samples, again))
    custom = np.zeros((64, 64), bool)
    custom[20:40, 16:48] = True
    given = list(m.generate(2, seed=2, mask=custom, shape="irregular"))
    assert all(s.mask.sum() == 10 * 16 and s.shape == "irregular" and s.margin is None for s in given)
    with pytest.raises(DataError, match="non-empty"):
        next(m.generate(1, seed=0, mask=np.zeros((8, 8), bool)))


# -- through the real trainer -----------------------------------------------------------------


def test_trains_through_trainer_and_loads_back(store: Path, tmp_path: Path, capsys) -> None:
    import json

    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    cfg = InfillConfig(**{**TINY, "fm_weights": "vgg19", "weights_dir": str(tmp_path / "no-weights")},
                       steps=3, log_every=1, sample_every=3, ckpt_every=3, n_samples=4, device="cpu")
    run = train("infill", store, tmp_path / "runs", cfg, progress=False)
    doc = json.loads((run / "config.json").read_text())
    assert FALLBACK_NOTE in doc["data"]["feature_matching"]  # the run says so in its config
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(l["fm_fallback"] == 1.0 for l in lines)
    assert (run / "samples" / "step_000003.png").is_file()
    m = load_method(run, device="cpu", expect="infill")
    assert isinstance(m, InfillGAN) and not m.nets["generator"].training
    tissue = torch.rand(2, 1, 32, 32) * 2 - 1
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:20, 8:20] = 1
    out = m.infill(tissue, mask, torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()
    assert len(list(m.generate(2, seed=0))) == 2  # the store path travels in config.json
    from mammosynth.cli import main

    assert main(["generate", str(run), "--n", "25", "--out", str(tmp_path / "gen"), "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["context_repeats"] > 0 and "split" not in summary  # default split: train
    assert main(["generate", str(run), "--n", "25", "--out", str(tmp_path / "gen2"), "--device", "cpu"]) == 0
    assert "reuse a tissue context" in capsys.readouterr().err


def test_generate_takes_train_tissue_by_default_and_never_repeats_a_context_silently(store: Path, caplog) -> None:
    """Before: tissue always came from the test split (what evaluate compares with) and a small
    split was silently sampled with replacement (issue 11)."""
    from mammosynth.data.store import Store

    with Store(store) as st:
        ids = {sp: {st.lesions(split=sp).source_id[k] for k in range(len(st.split_indices("lesions", sp)))}
               for sp in ("train", "test")}
    n_train = len(ids["train"])
    m = _method(store)
    with caplog.at_level("WARNING", logger="mammosynth.models.infill"):
        first = list(m.generate(n_train, seed=0))
    assert "reused" not in caplog.text
    assert {s.source_ids[0] for s in first} == ids["train"]  # each context once
    assert all(s.extra["tissue_split"] == "train" and s.extra["context_repeat"] == 0 for s in first)
    with caplog.at_level("WARNING", logger="mammosynth.models.infill"):
        more = list(m.generate(2 * n_train + 1, seed=0))
    assert f"from the {n_train} tissue contexts" in caplog.text and "reused up to 2 times" in caplog.text
    reps = [s.extra["context_repeat"] for s in more]
    assert reps == [0] * n_train + [1] * n_train + [2]
    for r in (0, 1):  # every round uses every context once
        assert sorted(s.source_ids[0] for s in more if s.extra["context_repeat"] == r) == sorted(ids["train"])
    test = list(m.generate(1, seed=0, split="test"))
    assert test[0].source_ids[0] in ids["test"] and test[0].extra["tissue_split"] == "test"
    with pytest.raises(DataError, match="split 'val' has no lesion patches"):
        empty = _write_store(store.parent / "trainonly.h5", n=2)
        with Store(empty) as st:
            if len(st.split_indices("lesions", "val")):
                pytest.skip("the split happened to give val lesions")
        list(_method(empty).generate(1, seed=0, split="val"))


# -- the improved recipe: compositing, upsampling, DiffAugment, D regularisation -----------


def test_composited_output_is_bit_exact_outside_the_mask_and_ring(store: Path) -> None:
    from mammosynth.data.context import composite_alpha

    m = _method(store, composite=True)
    batch = _batch(store, m, 2)
    tissue, mask = batch["image"], batch["mask"]
    out = m.infill(tissue, mask, torch.Generator().manual_seed(0))
    outside = composite_alpha(mask, m.cfg.margin_factor) == 0
    assert outside.any() and torch.equal(out[outside], tissue[outside])
    assert not torch.equal(out[mask > 0.5], tissue[mask > 0.5])
    # another size goes through the resize path and still leaves the context alone
    big_t = torch.nn.functional.interpolate(tissue, size=(48, 48), mode="bilinear", align_corners=False)
    big_m = (torch.nn.functional.interpolate(mask, size=(48, 48)) > 0.5).float()
    out = m.infill(big_t, big_m, torch.Generator().manual_seed(0))
    outside = composite_alpha(big_m, m.cfg.margin_factor) == 0
    assert torch.equal(out[outside], big_t[outside])
    # the paper's recipe regenerates the whole patch
    cfg = InfillConfig(**{**TINY, "paper": True})
    cfg.validate()
    paper = InfillGAN(cfg, {"patch_size": 32, "store_path": str(store)})
    assert not paper.cfg.composite
    out = paper.infill(tissue, mask, torch.Generator().manual_seed(0))
    outside = composite_alpha(mask, m.cfg.margin_factor) == 0
    assert not torch.equal(out[outside], tissue[outside])


def test_paper_switch_restores_every_departure() -> None:
    cfg = InfillConfig(paper=True, upsampling="resize", diffaug="color", composite=True)
    cfg.validate()
    assert (cfg.composite, cfg.upsampling, cfg.diffaug, cfg.d_reg) == (False, "transposed", "", "none")
    assert set(InfillConfig.PAPER_RECIPE) <= set(vars(InfillConfig()))
    with pytest.raises(ConfigError):
        InfillConfig(diffaug="color,zoom").validate()


@pytest.mark.parametrize("knobs", [
    dict(d_reg="spectral", upsampling="transposed_blur"),
    dict(d_reg="r1", r1_gamma=1.0, diffaug="color,translation,cutout,flip"),
    dict(generator="crn", diffaug=""),
])
def test_improved_recipe_variants_train_and_reduce_the_loss(store: Path, knobs) -> None:
    torch.manual_seed(0)
    m = _method(store, **knobs)
    m.cfg.validate()
    ctx = EagerContext(m, m.build_optimizers())
    batch = _batch(store, m, 2)
    first = [m.train_step(batch, ctx) for _ in range(2)]
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in first[-1].values())
    if knobs.get("d_reg") == "r1":
        assert float(first[-1]["r1"]) >= 0
    l1 = [float(m.train_step(batch, ctx)["l1"]) for _ in range(25)]
    assert np.mean(l1[-5:]) < np.mean(l1[:5])


def test_a_run_from_before_the_recipe_fields_loads_with_the_papers_networks(store: Path, tmp_path: Path) -> None:
    """config.json written before composite/upsampling/diffaug/d_reg existed: the run was trained
    with transposed convs and no compositing, and must be rebuilt so."""
    import json

    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    cfg = InfillConfig(**{**TINY, "steps": 2, "ckpt_every": 2, "sample_every": 0, "paper": True})
    cfg.validate()
    run = train("infill", store, tmp_path / "runs", cfg, progress=False)
    doc = json.loads((run / "config.json").read_text())
    for key in ("composite", "upsampling", "diffaug", "d_reg", "r1_gamma", "paper"):
        doc["config"].pop(key)
    (run / "config.json").write_text(json.dumps(doc))
    meta_path = run / "checkpoint" / "state.json"
    meta = json.loads(meta_path.read_text())
    for key in ("composite", "upsampling", "diffaug", "d_reg", "r1_gamma", "paper"):
        meta["config"].pop(key)
    meta_path.write_text(json.dumps(meta))
    m = load_method(run, device="cpu")
    assert (m.cfg.composite, m.cfg.upsampling) == (False, "transposed")
    train("infill", store, run, None, resume=True, progress=False)  # resumes as well
