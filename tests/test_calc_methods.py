"""Issue 17 part 3: the lesion methods on calcification clusters. lesion-dcgan trains on a
store's calcifications (``lesion_types``) conditioned on morphology / distribution /
lesion_type; infill and diffusion-infill fill calcification cluster masks. Tiny phantom
stores (32 px patches), a couple of steps: seconds on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mammosynth.config import from_dict
from mammosynth.data.birads import DISTRIBUTIONS, LESION_TYPES, MORPHOLOGIES
from mammosynth.data.dataset import LesionDataset
from mammosynth.data.store import Store
from mammosynth.errors import ConfigError, DataError
from mammosynth.models.lesion_dcgan import LesionDCGAN, LesionDCGANConfig
from mammosynth.phantom import write_phantom_store
from mammosynth.train.method import EagerContext

pytestmark = pytest.mark.usefixtures("one_thread")

DCGAN_TINY = dict(patch_size=32, g_channels=8, d_channels=8, max_channels=32, batch_size=6)


@pytest.fixture(scope="module")
def calc_store(tmp_path_factory) -> Path:
    """4 phantom masses and 10 calcification clusters, all in the train split."""
    path = tmp_path_factory.mktemp("calc") / "ph.h5"
    write_phantom_store(path, 4, 0, 32, full_shape=(256, 208), seed=4, progress=False, n_calcifications=10)
    return path


def _store_labels(store: Path, name: str) -> np.ndarray:
    with Store(store) as s:
        keep = np.array(s.lesion_types("train")) == "calcification"
        return s.h5[f"lesions/{name}"][...][s.split_indices("lesions", "train")][keep]


def _dcgan(store: Path, **kw) -> LesionDCGAN:
    m = LesionDCGAN(LesionDCGANConfig(**{**DCGAN_TINY, **kw}), {"patch_size": 32})
    m.data_info.update(m.data_info_from_store(str(store)))
    return m


def _batch(ds, n: int) -> dict[str, torch.Tensor]:
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


# -- the dataset ---------------------------------------------------------------------------


def test_lesion_dataset_filters_by_type_and_returns_calcification_labels(calc_store):
    both = LesionDataset(calc_store, augment=False)
    calcs = LesionDataset(calc_store, augment=False, lesion_types=("calcification",))
    masses = LesionDataset(calc_store, augment=False, lesion_types=("mass",))
    assert (len(both), len(calcs), len(masses)) == (14, 10, 4)
    b = _batch(calcs, 10)
    assert (b["lesion_type"] == LESION_TYPES.index("calcification")).all()
    assert (b["shape"] == -1).all() and (b["margin"] == -1).all()  # a calcification has no shape or margin
    assert torch.equal(b["morphology"], torch.from_numpy(_store_labels(calc_store, "morphology").astype(np.int64)))
    assert (b["distribution"] >= 0).all()
    m = _batch(masses, 4)
    assert (m["morphology"] == -1).all() and (m["lesion_type"] == LESION_TYPES.index("mass")).all()
    with pytest.raises(ConfigError, match="unknown lesion type 'calc'"):
        LesionDataset(calc_store, lesion_types=("calc",))


# -- lesion-dcgan ----------------------------------------------------------------------------


def test_lesion_dcgan_on_calcifications_conditioned_on_morphology(calc_store):
    m = _dcgan(calc_store, condition="morphology", lesion_types="calcification")
    assert m.n_classes == len(MORPHOLOGIES) and m.data_info["condition_vocab"] == list(MORPHOLOGIES)
    counts = np.bincount(_store_labels(calc_store, "morphology"), minlength=len(MORPHOLOGIES))
    assert m.data_info["class_counts"] == counts.tolist() and sum(counts) == 10  # masses are not counted
    ds = m.make_dataset(str(calc_store))
    assert len(ds) == 10
    batch = _batch(ds, 6)
    assert batch["image"].shape == (6, 1, 32, 32)
    ctx = EagerContext(m, m.build_optimizers())
    out = m.train_step(batch, ctx)
    assert np.isfinite(float(out["loss_d"])) and np.isfinite(float(out["loss_g"]))
    m.on_load()
    samples = list(m.generate(3, seed=1, morphology="Fine-Linear-Branching", batch_size=2))
    assert len(samples) == 3
    for s in samples:
        assert s.image.shape == (32, 32) and s.image.dtype == np.float32 and 0 <= s.image.min() <= s.image.max() <= 1
        assert s.extra["condition"] == "morphology" and s.extra["morphology"] == "fine_linear_branching"
        assert s.extra["label"] == "fine_linear_branching" and s.extra["lesion_types"] == "calcification"
        assert s.shape is None and s.margin is None
        assert s.morphology == "fine_linear_branching" and s.lesion_type == "calcification"
    drawn = {s.extra["morphology"] for s in m.generate(8, seed=2)}
    assert drawn <= {MORPHOLOGIES[i] for i in np.flatnonzero(counts)}  # drawn with the training frequencies
    with pytest.raises(ConfigError, match="conditioned on 'morphology'; it cannot control margin"):
        list(m.generate(1, seed=0, margin="spiculated"))


def test_unknown_morphology_is_a_one_line_config_error(calc_store):
    m = _dcgan(calc_store, condition="morphology", lesion_types="calcification")
    with pytest.raises(ConfigError) as err:
        list(m.generate(1, seed=0, morphology="popcorn"))
    msg = str(err.value)
    assert "\n" not in msg and "unknown morphology 'popcorn'" in msg and "fine_linear_branching" in msg
    with pytest.raises(ConfigError, match="lesion_types: 'calc' is not one of"):
        from_dict(LesionDCGANConfig, {"lesion_types": "calc"})
    with pytest.raises(ConfigError, match="condition: 'calc_type' is not one of .*'morphology'"):
        from_dict(LesionDCGANConfig, {"condition": "calc_type"})


@pytest.mark.parametrize("condition, vocab", [("distribution", DISTRIBUTIONS), ("lesion_type", LESION_TYPES)])
def test_lesion_dcgan_conditions_on_distribution_and_lesion_type(calc_store, condition, vocab):
    m = _dcgan(calc_store, condition=condition)  # all lesions: masses are the unknown distribution
    assert m.n_classes == len(vocab)
    batch = _batch(m.make_dataset(str(calc_store)), 6)
    out = m.train_step(batch, EagerContext(m, m.build_optimizers()))
    assert np.isfinite(float(out["loss_g"]))
    if condition == "lesion_type":
        assert m.data_info["class_counts"] == [4, 0, 10]
        want = "calcification"
    else:
        assert sum(m.data_info["class_counts"]) == 10  # masses have no distribution
        want = "linear"
    m.on_load()
    s = next(m.generate(1, seed=0, **{condition: want}))
    assert s.extra[condition] == want and s.image.shape == (32, 32)


def test_a_store_without_the_asked_type_or_label_is_a_data_error(calc_store, tmp_path):
    masses = tmp_path / "masses.h5"
    write_phantom_store(masses, 4, 0, 32, full_shape=(256, 208), seed=1, progress=False)
    with pytest.raises(DataError, match="no calcification lesions in the train split"):
        _dcgan(masses, lesion_types="calcification")
    with pytest.raises(DataError, match="no calcification lesion of the train split has a known margin"):
        _dcgan(calc_store, lesion_types="calcification", condition="margin")
    with pytest.raises(DataError, match="no lesion of the train split has a known morphology"):
        _dcgan(masses, condition="morphology")
    assert _dcgan(masses).data_info["patch_size"] == 32  # all lesions, unconditioned: nothing to refuse


def test_run_round_trip_keeps_the_condition_vocabulary(calc_store, tmp_path, capsys):
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    cfg = LesionDCGANConfig(**{**DCGAN_TINY, "batch_size": 4}, condition="morphology", lesion_types="calcification",
                            steps=2, log_every=1, sample_every=2, ckpt_every=2, n_samples=4, device="cpu")
    run = train("lesion-dcgan", calc_store, tmp_path / "runs", cfg, progress=False)
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.pkl")) and list(run.rglob("*.safetensors"))
    doc = json.loads((run / "config.json").read_text())
    assert doc["data"]["condition_vocab"] == list(MORPHOLOGIES)
    assert doc["config"]["condition"] == "morphology" and doc["config"]["lesion_types"] == "calcification"
    m = load_method(run, device="cpu", expect="lesion-dcgan")
    assert m.vocab == MORPHOLOGIES
    a = [s.image for s in m.generate(2, seed=3, morphology="punctate")]
    b = [s.image for s in load_method(run, device="cpu").generate(2, seed=3, morphology="punctate")]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # the CLI: --morphology reaches the run and the manifest records the conditioning label
    import csv

    from mammosynth.cli import main

    out = tmp_path / "gen"
    assert main(["generate", str(run), "--n", "2", "--out", str(out), "--morphology", "punctate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["morphology"] == "punctate"
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 2 and all(json.loads(r["extra"])["morphology"] == "punctate" for r in rows)
    # a bad label is one line naming the value and the choices, before anything is written
    assert main(["generate", str(run), "--n", "1", "--out", str(tmp_path / "bad"), "--morphology", "popcorn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown morphology 'popcorn'" in err[0] and "punctate" in err[0], err
    assert not (tmp_path / "bad" / "manifest.csv").exists()
    assert main(["generate", str(run), "--n", "1", "--out", str(tmp_path / "bad2"), "--distribution", "linear"]) == 2
    assert "conditioned on 'morphology'; it cannot control distribution" in capsys.readouterr().err


# -- infill and diffusion-infill on calcification cluster masks ----------------------------------


@pytest.fixture(scope="module")
def calc_only(tmp_path_factory) -> Path:
    """A store of 6 phantom calcification clusters and nothing else."""
    path = tmp_path_factory.mktemp("calc-only") / "calcs.h5"
    write_phantom_store(path, 0, 0, 32, full_shape=(256, 208), seed=4, progress=False, n_calcifications=6)
    return path


def _calc_batch(store: Path, n: int = 2) -> dict[str, torch.Tensor]:
    return _batch(LesionDataset(store, augment=False, lesion_types=("calcification",)), n)


def _check_calc_samples(samples, store: Path, tmp_path: Path, method: str) -> None:
    """Samples painted into calcification contexts: labelled as calcifications, written as such."""
    import csv

    from pycocotools.coco import COCO

    from mammosynth.cli.common import write_samples

    with Store(store) as s:
        morph = {sid: MORPHOLOGIES[k] for sid, k in zip(s.lesions().source_id, s.lesions().morphology)}
    for smp in samples:
        assert smp.image.shape == (32, 32) and smp.image.dtype == np.float32 and 0 <= smp.image.min() <= smp.image.max() <= 1
        assert smp.mask.any() and smp.shape is None and smp.margin is None
        assert smp.lesion_type == "calcification" and smp.morphology == morph[smp.source_ids[0]]
        assert smp.distribution in DISTRIBUTIONS and smp.extra["morphology"] == smp.morphology
    out = tmp_path / f"{method}-set"
    write_samples(samples, out, method, "test-run", total=len(samples), progress=False)
    coco = COCO(str(out / "annotations.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == len(samples) and {a["category_id"] for a in anns} == {2}  # COCO category calcification
    assert [a["attributes"]["morphology"] for a in anns] == [smp.morphology for smp in samples]
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert [json.loads(r["extra"])["lesion_type"] for r in rows] == ["calcification"] * len(samples)


def test_infill_gan_trains_on_and_fills_calcification_masks(calc_store, calc_only, tmp_path):
    from mammosynth.data.context import composite_alpha
    from mammosynth.models.infill import InfillConfig, InfillGAN

    m = InfillGAN(InfillConfig(ngf=8, ndf=8, batch_size=2, fm_weights="discriminator"),
                  {"patch_size": 32, "store_path": str(calc_store)})
    batch = _calc_batch(calc_store)
    ctx = EagerContext(m.nets, m.build_optimizers())
    outs = [m.train_step(batch, ctx) for _ in range(2)]
    assert all(torch.isfinite(torch.as_tensor(o[k])) for o in outs for k in ("loss_d", "loss_g", "l1"))
    tissue, mask = batch["image"], batch["mask"]
    filled = m.infill(tissue, mask, torch.Generator().manual_seed(0))
    assert filled.shape == (2, 1, 32, 32) and float(filled.abs().max()) <= 1
    outside = composite_alpha(mask, m.cfg.margin_factor) == 0
    assert outside.any() and torch.equal(filled[outside], tissue[outside])  # only the cluster and its ring change
    assert not torch.equal(filled[mask > 0.5], tissue[mask > 0.5])
    samples = list(m.generate(3, seed=1, data=str(calc_only), batch_size=2))
    assert len(samples) == 3
    _check_calc_samples(samples, calc_only, tmp_path, "infill")


def test_diffusion_infill_trains_on_and_fills_calcification_masks(calc_store, calc_only, tmp_path):
    pytest.importorskip("monai")
    from mammosynth.data.context import enlarge_mask
    from mammosynth.models.diffusion_infill import DiffusionInfill, DiffusionInfillConfig

    tiny = dict(channels=(8, 16), attention_levels=(False, False), num_res_blocks=1, norm_groups=8, num_head_channels=8,
                batch_size=2, sampler_steps=3, ema_decay=0.0, device="cpu", amp="off", channels_last=False)
    m = DiffusionInfill(DiffusionInfillConfig(**tiny), {"patch_size": 32, "store_path": str(calc_store)})
    batch = _calc_batch(calc_store)
    assert (m.batch_labels(batch, torch.device("cpu")) == 0).all()  # no shape or margin: the null label
    ctx = EagerContext(m.nets, m.build_optimizers())
    outs = [m.train_step(batch, ctx) for _ in range(2)]
    assert all(torch.isfinite(torch.as_tensor(o["loss"])) for o in outs)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # MONAI zero-initialises the output conv: small random weights so the fill differs
        for p in m.nets.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    tissue, mask = batch["image"], batch["mask"]
    filled = m.infill(tissue, mask, torch.Generator().manual_seed(0))
    assert filled.shape == (2, 1, 32, 32) and float(filled.abs().max()) <= 1
    outside = ~(enlarge_mask(mask, m.cfg.margin_factor) | (mask > 0.5))
    assert outside.any() and torch.equal(filled[outside], tissue[outside])
    assert not torch.equal(filled[mask > 0.5], tissue[mask > 0.5])
    samples = list(m.generate(3, seed=1, data=str(calc_only), batch_size=2))
    assert len(samples) == 3
    _check_calc_samples(samples, calc_only, tmp_path, "diffusion-infill")


# -- birads-aegan with calcification label sets ------------------------------------------------


def test_birads_aegan_embeds_morphology_and_distribution_on_a_calcification_run(calc_store, tmp_path, capsys):
    import csv

    from mammosynth.cli import main
    from mammosynth.models.birads_aegan import BiradsAEGAN, BiradsAEGANConfig
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    small = dict(patch_size=32, base_channels=8, max_channels=32, feature_dim=32, embed_hidden=16, batch_size=4)
    m = BiradsAEGAN(BiradsAEGANConfig(**small, labels="calcification"), {"patch_size": 32})
    # same architecture, other label sets: E1/D1 over the 13 morphologies, E2/D2 over the 5 distributions
    assert m.nets["embed_margin"].n_classes == len(MORPHOLOGIES) and m.nets["embed_shape"].n_classes == len(DISTRIBUTIONS)
    assert m.nets["disc_margin"].classifier.out_features == len(MORPHOLOGIES)
    assert m.nets["disc_shape"].classifier.out_features == len(DISTRIBUTIONS)
    ds = m.make_dataset(str(calc_store))
    assert len(ds) == 10  # the clusters only
    out = m.train_step(_batch(ds, 4), EagerContext(m.nets, m.build_optimizers()))
    assert all(torch.isfinite(torch.as_tensor(v)) for v in out.values())
    with pytest.raises(ConfigError, match="calcification labels"):
        m.categories(store=str(calc_store))

    cfg = BiradsAEGANConfig(**small, labels="calcification", n_features=2, steps=2, log_every=1, sample_every=2,
                            ckpt_every=2, n_samples=4, device="cpu")
    run = train("birads-aegan", calc_store, tmp_path / "runs", cfg, progress=False)
    doc = json.loads((run / "config.json").read_text())
    assert doc["config"]["labels"] == "calcification"
    assert doc["data"]["labels"] == {"margin": list(MORPHOLOGIES), "shape": list(DISTRIBUTIONS)}
    loaded = load_method(run, device="cpu", expect="birads-aegan")
    morph = {MORPHOLOGIES[i] for i in _store_labels(calc_store, "morphology")}
    want = sorted(morph)[0]
    samples = list(loaded.generate(2, seed=0, morphology=want))
    assert len(samples) == 2
    for s in samples:
        assert s.morphology == want and s.lesion_type == "calcification" and s.shape is None and s.margin is None
        assert s.image.shape == (32, 32) and s.mask.shape == (32, 32)
    drawn = list(loaded.generate(3, seed=1))  # categories drawn from the clusters' (distribution, morphology) pairs
    assert all(s.morphology in morph and s.distribution in DISTRIBUTIONS for s in drawn)
    with pytest.raises(ConfigError, match="calcification labels .*cannot control margin"):
        list(loaded.generate(1, seed=0, margin="spiculated"))
    with pytest.raises(ConfigError, match="unknown morphology 'popcorn'"):
        list(loaded.generate(1, seed=0, morphology="popcorn"))
    # through the CLI: --morphology reaches birads-aegan and the COCO annotation is a calcification
    out_dir = tmp_path / "gen"
    assert main(["generate", str(run), "--n", "2", "--out", str(out_dir), "--morphology", want, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["morphology"] == want
    coco = json.loads((out_dir / "annotations.json").read_text())
    assert {a["category_id"] for a in coco["annotations"]} == {2}
    assert {a["attributes"]["morphology"] for a in coco["annotations"]} == {want}
    assert len(list(csv.DictReader((out_dir / "manifest.csv").open()))) == 2


def test_birads_aegan_calcification_labels_need_clusters(tmp_path):
    from mammosynth.models.birads_aegan import BiradsAEGAN, BiradsAEGANConfig

    masses = tmp_path / "masses.h5"
    write_phantom_store(masses, 4, 0, 32, full_shape=(256, 208), seed=1, progress=False)
    m = BiradsAEGAN(BiradsAEGANConfig(patch_size=32, base_channels=8, max_channels=32, feature_dim=32, embed_hidden=16,
                                      labels="calcification"), {"patch_size": 32})
    with pytest.raises(DataError, match="labels=calcification needs calcification clusters"):
        m.data_info_from_store(str(masses))
    mass_run = BiradsAEGAN(BiradsAEGANConfig(patch_size=32, base_channels=8, max_channels=32, feature_dim=32,
                                             embed_hidden=16), {"patch_size": 32, "store_path": str(masses)})
    with pytest.raises(ConfigError, match="mass labels .*cannot control morphology"):
        list(mass_run.generate(1, seed=0, morphology="punctate"))
