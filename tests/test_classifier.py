"""BI-RADS classifier and label fidelity: learns a separable set, masks missing labels,
hand-made fidelity case, CLI JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mammosynth.data.birads import MARGINS, SHAPES, Label
from mammosynth.data.records import LesionRecord
from mammosynth.data.store import StoreWriter
from mammosynth.errors import DataError
from mammosynth.evaluate.label_fidelity import format_table, label_fidelity
from mammosynth.models.classifier import BiradsClassifier, BiradsCNN, ClassifierConfig
from mammosynth.synth.writer import Lesion, SyntheticSetWriter
from mammosynth.train.method import EagerContext


pytestmark = pytest.mark.usefixtures("one_thread")


def bright_or_dark_store(path, n=24, size=16, shapes=True, val_every=0):
    """Bright patches are round + circumscribed, dark ones irregular + spiculated; every
    4th lesion has no shape label (``shapes=False``: none has, as in mini-MIAS). Half train,
    half test; with ``val_every`` every such lesion goes to val instead."""
    rng = np.random.default_rng(0 if shapes else 1)
    mask = np.zeros((size, size), bool)
    mask[4:12, 4:12] = True
    with StoreWriter(path, patch_size=size, normal_size=(32, 32)) as w:
        for i in range(n):
            bright = i % 2 == 0
            patch = ((0.75 if bright else 0.25) + 0.05 * rng.standard_normal((size, size))).astype(np.float32)
            shape = ("ROUND" if bright else "IRREGULAR") if i % 4 != 1 and shapes else None
            margin = "CIRCUMSCRIBED" if bright else "SPICULATED"
            split = "train" if i < n // 2 else "test"
            w.add_lesion(LesionRecord(
                source="test", source_id=f"L{i}" if shapes else f"M{i}", patient_id=f"P{i}", patch=patch, mask=mask,
                shape=Label(shape, shape.lower(), "exact") if shape else Label(None, None, "missing"),
                margin=Label(margin, margin.lower(), "exact"), pathology=Label(None, None, "missing"),
                split_hint="val" if val_every and i % val_every == val_every - 1 else split))
    return path


def test_cnn_shapes():
    net = BiradsCNN(width=4)
    s, m = net(torch.randn(2, 1, 64, 64))
    assert s.shape == (2, len(SHAPES)) and m.shape == (2, len(MARGINS))
    s, m = net(torch.randn(2, 1, 128, 128))
    assert s.shape == (2, len(SHAPES))


def test_classifier_learns_a_separable_set_and_masks_missing_shapes(tmp_path):
    torch.manual_seed(0)
    store = bright_or_dark_store(tmp_path / "s.h5")
    m = BiradsClassifier(ClassifierConfig(width=8, n_stages=2, dropout=0.0, lr=1e-2), {"patch_size": 16, "store_path": str(store)})
    ds = m.make_dataset(str(store))
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    assert (batch["shape"] == -1).any()
    ctx = EagerContext(m, m.build_optimizers())
    for _ in range(30):
        out = m.train_step(batch, ctx)
    assert float(out["loss"]) < 0.3
    m.on_load()
    ev = m.evaluate_store(split="test")
    assert ev["margin"]["accuracy"] == 1.0 and ev["shape"]["accuracy"] == 1.0
    assert ev["shape"]["n"] == 9 and ev["margin"]["n"] == 12  # unknown shapes are not scored


class MeanIntensityJudge:
    """A hand-made classifier: bright (mean > 0) -> round/circumscribed, else irregular/spiculated."""

    def __init__(self, store):
        self.data_info = {"store_path": str(store)}
        self.patch_size = 16

    def predict_labels(self, images):
        bright = images.mean(dim=(1, 2, 3)).numpy() > 0
        return np.where(bright, 0, 3), np.where(bright, 0, 4)


def write_set(out, items):
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    with SyntheticSetWriter(out, method="test") as w:
        for value, shape, margin in items:
            w.add(np.full((16, 16), value, np.float32), [Lesion(mask=mask, shape=shape, margin=margin)])
    return out


def test_label_fidelity_on_a_hand_made_case(tmp_path):
    store = bright_or_dark_store(tmp_path / "s.h5")
    # 4 requested round/circumscribed: 3 bright (right), 1 dark (wrong); 2 irregular/spiculated: both dark (right);
    # 1 with only a margin requested (spiculated) but bright (wrong)
    synth = write_set(tmp_path / "gen", [(0.8, "round", "circumscribed")] * 3 + [(0.2, "round", "circumscribed")]
                      + [(0.1, "irregular", "spiculated")] * 2 + [(0.9, None, "spiculated")])
    rep = label_fidelity(MeanIntensityJudge(store), synth)
    assert rep["n_generated"] == 7 and rep["n_real"] == 12
    assert rep["real"] == {"shape_accuracy": 1.0, "margin_accuracy": 1.0}
    cats = {(c["shape"], c["margin"]): c for c in rep["categories"]}
    rc = cats[("round", "circumscribed")]
    assert rc["n_generated"] == 4 and rc["generated_margin_accuracy"] == 0.75 and rc["real_margin_accuracy"] == 1.0
    assert rc["margin_ratio"] == 0.75 and rc["margin_ratio_at_reference"] is False and rc["n_real_margin"] == 6
    assert rc["generated_shape_accuracy"] == 0.75 and rc["n_real_shape"] == 6
    ii = cats[("irregular", "spiculated")]
    assert ii["margin_ratio"] == 1.0 and ii["margin_ratio_at_reference"] is True
    assert ii["n_real_shape"] == 3  # real irregular lesions without a shape label are not scored
    only_m = cats[(None, "spiculated")]
    assert only_m["generated_margin_accuracy"] == 0.0 and only_m["generated_shape_accuracy"] is None
    assert rep["generated"]["margin_accuracy"] == pytest.approx(5 / 7)
    assert rep["generated"]["shape_accuracy"] == pytest.approx(5 / 6)
    assert rep["margin_ratio"] == pytest.approx(5 / 7) and rep["shape_ratio"] == pytest.approx(5 / 6)
    assert (rep["categories_at_reference"], rep["categories_judged"]) == (1, 3)  # irregular/spiculated only
    assert rep["margin_ratio_reference"] == 0.8 and "not a target from seed 000" in rep["reference_note"]
    assert rep["protocol"]["checked"] is False and rep["leaked"] is False  # a hand-made judge says nothing of its data
    assert "| round | circumscribed | 4 | 0.75 |" in format_table(rep)
    json.dumps(rep)  # JSON-ready
    with pytest.raises(DataError, match="no manifest"):
        label_fidelity(MeanIntensityJudge(store), tmp_path / "nothing")


def test_trains_through_trainer_and_fidelity_cli(tmp_path):
    from typer.testing import CliRunner

    import typer

    from mammosynth.cli.fidelity import register
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    store = bright_or_dark_store(tmp_path / "s.h5")
    cfg = ClassifierConfig(width=4, n_stages=2, steps=3, batch_size=8, log_every=1, sample_every=0, ckpt_every=3, device="cpu")
    run = train("classifier", store, tmp_path / "runs", cfg, progress=False)
    m = load_method(run, device="cpu", expect="classifier")
    assert isinstance(m, BiradsClassifier) and m.data_info["store_path"] == str(store.resolve())
    synth = write_set(tmp_path / "gen", [(0.8, "round", "circumscribed"), (0.2, "irregular", "spiculated")])
    app = typer.Typer()
    app.command("version")(lambda: None)
    register(app)
    res = CliRunner().invoke(app, ["fidelity", "labels", "--classifier", str(tmp_path / "runs"), "--synthetic", str(synth), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["n_generated"] == 2 and len(rep["categories"]) == 2


def margin_only_store(path):
    """bright_or_dark_store without shape labels (mini-MIAS, INbreast, VinDr); every 4th lesion in val."""
    return bright_or_dark_store(path, shapes=False, val_every=4)


def test_margin_only_store_trains_without_a_shape_head(tmp_path, caplog):
    """Before: "training diverged: acc_shape = nan" at step 0 (issue 11)."""
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    store = margin_only_store(tmp_path / "m.h5")
    cfg = ClassifierConfig(width=4, n_stages=2, steps=4, batch_size=4, log_every=2, sample_every=0, ckpt_every=4, device="cpu")
    with caplog.at_level("WARNING", logger="mammosynth.models.classifier"):
        run = train("classifier", store, tmp_path / "runs", cfg, progress=False)
    assert "shape head is NOT trained" in caplog.text
    doc = json.loads((run / "config.json").read_text())
    # a mass-only store has no calcification labels either: those heads stay untrained too
    assert set(doc["data"]["untrained_heads"]) == {"shape", "morphology", "distribution"} and "no lesion of split 'train'" in doc["data"]["untrained_heads"]["shape"]
    assert doc["data"]["train_labels"]["shape"] == 0 and doc["data"]["train_labels"]["margin"] > 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["acc_shape"] is None and "loss_shape" not in r for r in records)  # absent, never NaN
    assert all(0.0 <= r["acc_margin"] <= 1.0 for r in records)
    m = load_method(run, device="cpu", expect="classifier")
    torch.manual_seed(cfg.seed)  # the trainer seeds the build with cfg.seed: the same initial heads
    init = BiradsCNN(4, 2, cfg.dropout)
    assert torch.equal(m.nets["classifier"].shape_head.weight, init.shape_head.weight)  # never moved
    assert not torch.equal(m.nets["classifier"].margin_head.weight, init.margin_head.weight)
    ps, pm = m.predict_labels(torch.zeros(3, 1, 16, 16))
    assert (ps == -1).all() and ((pm >= 0) & (pm < len(MARGINS))).all()
    ev = m.evaluate_store(split="test")
    assert ev["shape"]["accuracy"] is None and "untrained" in ev["shape"] and ev["margin"]["accuracy"] is not None


def test_trainer_logs_a_batch_without_labels_as_absent_and_guards_only_losses(tmp_path):
    """A Python-number metric that is NaN/None is absent for that step (averaged over the steps
    that measured it); a NaN loss tensor still stops the run."""
    from mammosynth.train.trainer import Trainer

    store = bright_or_dark_store(tmp_path / "s.h5")
    t = Trainer("classifier", store, tmp_path / "runs", ClassifierConfig(device="cpu"), progress=False)
    t.device, t.last_good, t.run_dir, t.step = torch.device("cpu"), None, tmp_path, 0
    t.dist = type("D", (), {"world_size": 1})()
    out = t._check_finite({"loss": torch.tensor(0.5), "acc_shape": float("nan"), "acc_margin": None, "flag": 1.0}, [])
    assert out == {"loss": 0.5, "acc_shape": None, "acc_margin": None, "flag": 1.0}
    from mammosynth.train.trainer import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="loss = nan"):
        t._check_finite({"loss": torch.tensor(float("nan")), "acc_shape": 1.0}, [])


def test_judge_trains_on_a_chosen_split(tmp_path):
    from mammosynth.config import from_dict
    from mammosynth.train.trainer import train

    store = margin_only_store(tmp_path / "m.h5")
    cfg = from_dict(ClassifierConfig, {"width": 4, "n_stages": 2, "steps": 1, "batch_size": 4, "log_every": 1,
                                       "sample_every": 0, "ckpt_every": 1, "device": "cpu", "train_split": "val"})
    run = train("classifier", store, tmp_path / "runs", cfg, progress=False)
    doc = json.loads((run / "config.json").read_text())
    assert doc["config"]["train_split"] == "val" and doc["data"]["train_split"] == "val"
    assert doc["data"]["train_labels"]["n"] == 6  # the 6 val lesions, not the train ones
    m = BiradsClassifier(cfg, doc["data"])
    assert len(m.make_dataset(str(store))) == 6
    with pytest.raises(Exception, match="train_split"):
        from_dict(ClassifierConfig, {"train_split": "everything"})


def write_sourced_set(out, items, run=""):
    """items: (value, shape, margin, source_ids) -> a synthetic set whose manifest names its seeds and run."""
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    with SyntheticSetWriter(out, method="test", run=run) as w:
        for value, shape, margin, sources in items:
            w.add(np.full((16, 16), value, np.float32), [Lesion(mask=mask, shape=shape, margin=margin)], source_ids=sources)
    return out


def test_label_fidelity_refuses_a_judge_that_saw_the_seeds_and_follows_the_protocol(tmp_path, capsys):
    """Before: the judge trained on train, the seeds came from train, and nothing was checked (issue 11)."""
    from mammosynth.cli import main
    from mammosynth.config import from_dict
    from mammosynth.train.trainer import train

    store = margin_only_store(tmp_path / "m.h5")  # train M0..M11 (less val), val M3, M7, ..., test M12..
    base = {"width": 4, "n_stages": 2, "steps": 2, "batch_size": 4, "log_every": 1, "sample_every": 0, "ckpt_every": 2,
            "device": "cpu"}
    on_train = train("classifier", store, tmp_path / "a", from_dict(ClassifierConfig, base), progress=False)
    on_val = train("classifier", store, tmp_path / "b", from_dict(ClassifierConfig, {**base, "train_split": "val"}), progress=False)
    synth = write_sourced_set(tmp_path / "gen", [(0.8, None, "circumscribed", ["M0", "M2"]), (0.2, None, "spiculated", ["M1"])])
    with pytest.raises(DataError, match=r"was trained on 3 of the synthetic set's 3 seed lesions"):
        label_fidelity(on_train, synth, device="cpu")
    flagged = label_fidelity(on_train, synth, device="cpu", allow_leakage=True)
    assert flagged["leaked"] and flagged["leakage_allowed"] and flagged["protocol"]["overlap"]["judge_and_seeds"]["n"] == 3
    rep = label_fidelity(on_val, synth, device="cpu")  # the protocol: judge on val, real accuracy on test
    p = rep["protocol"]
    assert p["checked"] and p["clean"] and not rep["leaked"] and p["judge"]["split"] == "val" and p["real"]["split"] == "test"
    assert rep["judge_untrained_heads"].keys() == {"shape", "morphology", "distribution"} and rep["real"]["shape_accuracy"] is None
    assert all(c["generated_shape_accuracy"] is None and c["generated_margin_accuracy"] is not None for c in rep["categories"])
    with pytest.raises(DataError, match=r"6 of the 6 real 'val' lesions its real accuracy is measured on"):
        label_fidelity(on_val, synth, split="val", device="cpu")
    # no seeds in the manifest, but a generator run that learned from train (any run's config.json says what)
    by_run = write_sourced_set(tmp_path / "gen2", [(0.8, None, "circumscribed", [])], run=str(on_train))
    with pytest.raises(DataError, match=r"lesions the generator learned from"):
        label_fidelity(on_train, by_run, device="cpu")
    assert label_fidelity(on_val, by_run, device="cpu")["protocol"]["generators"][0]["split"] == "train"
    # the CLI refuses with one line, or reports it flagged
    assert main(["fidelity", "labels", "--classifier", str(on_train), "--synthetic", str(synth), "--device", "cpu"]) == 2
    assert "train_split=val" in capsys.readouterr().err
    assert main(["fidelity", "labels", "--classifier", str(on_train), "--synthetic", str(synth), "--device", "cpu",
                 "--allow-leakage"]) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "LEAKED" in err and "not a target from seed 000" in err
    assert main(["fidelity", "labels", "--classifier", str(on_val), "--synthetic", str(synth), "--device", "cpu"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "no overlap" in err and "no shape numbers" in err
