"""Per-type metrics (issue 17 part 6): evaluate per lesion type, the calcification judge heads,
old classifier checkpoints, and a reader study that mixes masses and calcifications.

One tiny phantom store (masses + calcification clusters) and one tiny synthetic set made from
its train lesions (noise added), offline and without ImageNet weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mammosynth.data.birads import DISTRIBUTIONS, MORPHOLOGIES
from mammosynth.data.store import Store
from mammosynth.synth.writer import Lesion, SyntheticSetWriter

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """(store, synthetic set): 24 masses + 24 calcification clusters (train/val/test 0.5/0.25/0.25),
    and 8 masses + 8 calcifications + 1 non-mass drawn from the train split with noise."""
    from mammosynth.phantom import write_phantom_store

    d = tmp_path_factory.mktemp("pertype")
    store = d / "mixed.h5"
    write_phantom_store(store, 24, 4, 32, full_shape=(256, 208), seed=0, progress=False, n_calcifications=24,
                        split_fractions=(0.5, 0.25, 0.25))
    with Store(store) as s:
        idx = s.split_indices("lesions", "train")
        les = s.lesions(indices=idx)
        test = s.lesions(split="test")
    types = np.asarray(les.lesion_type)
    # requested classes: two distinct ones the real test split has
    test_morph = list(dict.fromkeys(MORPHOLOGIES[m] for m in test.morphology if m >= 0))
    test_dist = list(dict.fromkeys(DISTRIBUTIONS[m] for m in test.distribution if m >= 0))
    assert len(test_morph) >= 2 and len(test_dist) >= 2
    rng = np.random.default_rng(3)
    syn = d / "syn"
    with SyntheticSetWriter(syn, "test") as w:
        for k, i in enumerate(np.flatnonzero(types == "mass")[:8]):
            img = np.clip(les.patch[i] + 0.03 * rng.standard_normal(les.patch[i].shape), 0, 1).astype(np.float32)
            w.add(img, [Lesion(les.mask[i], shape="round", margin="circumscribed")])
        for k, i in enumerate(np.flatnonzero(types == "calcification")[:8]):
            img = np.clip(les.patch[i] + 0.03 * rng.standard_normal(les.patch[i].shape), 0, 1).astype(np.float32)
            w.add(img, [Lesion(les.mask[i], category="calcification", attributes={
                "lesion_type": "calcification", "morphology": test_morph[k % 2], "distribution": test_dist[k % 2]})])
        i = int(np.flatnonzero(types == "mass")[0])  # one lone non-mass: too few to evaluate on its own
        w.add(les.patch[i], [Lesion(les.mask[i], attributes={"lesion_type": "non_mass"})])
    return store, syn


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    monkeypatch.setenv("MAMMOSYNTH_WEIGHTS", str(empty))
    return empty


def test_manifest_records_lesion_type_and_calcification_labels(mixed):
    from mammosynth.evaluate.synthetic import row_lesion_type
    from mammosynth.synth.writer import read_manifest

    rows = read_manifest(mixed[1])
    assert [row_lesion_type(r) for r in rows] == ["mass"] * 8 + ["calcification"] * 8 + ["non_mass"]
    assert all(r["category"] == "calcification" and r["morphology"] in MORPHOLOGIES and r["distribution"] in DISTRIBUTIONS
               for r in rows[8:16])
    assert all(r["morphology"] == "" and r["shape"] == "round" for r in rows[:8])
    # sets written before these columns: lesion_type from extra (insert), else the COCO category, else mass
    assert row_lesion_type({"extra": json.dumps({"lesion_type": "calcification"})}) == "calcification"
    assert row_lesion_type({"category": "calcification"}) == "calcification" and row_lesion_type({}) == "mass"


def _finite(x) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def test_per_type_metrics(mixed, tmp_path, no_weights):
    from mammosynth.evaluate.run import evaluate

    store, syn = mixed
    m = evaluate(store, syn, tmp_path / "all", quick=True, weights_dir=no_weights, seed=0)
    assert m["inputs"]["lesion_type"] == "all"
    assert m["inputs"]["n_by_type"]["calcification"] == {"real_train": 16, "real_test": 5, "real_val": 3, "synthetic": 8}
    by = m["results_by_type"]
    assert set(by) == {"mass", "calcification"}
    assert "non_mass" in m["types_not_evaluated"] and "only in the synthetic set" in m["types_not_evaluated"]["non_mass"]
    for t, block in by.items():
        assert block["n_synthetic"] == 8 and block["n_real_test"] == m["inputs"]["n_by_type"][t]["real_test"]
        px = block["results"]["feature_distances"]["FD-pixels16"]
        assert _finite(px["score"]) and _finite(px["floor"]) and px["ratio"] == pytest.approx(px["score"] / px["floor"])
        assert px["n_synthetic"] == 8 and px["n_test"] == block["n_real_test"]
        assert 0.0 <= block["results"]["two_sample"]["auc"] <= 1.0
        assert _finite(block["results"]["diversity"]["synthetic"]["mean"])
        assert block["results"]["memorisation"]["n_synthetic"] == 8
        assert (tmp_path / "all" / block["results"]["tsne"]["png"]).is_file()
        # sections the pooled pass could not run are skipped here for the same reason, never faked
        assert "lpips" in block["skipped"] and "lpips" not in block["results"]
    # the pooled numbers are not the per-type ones: the two types differ
    assert by["mass"]["results"]["feature_distances"]["FD-pixels16"]["score"] != \
        m["results"]["feature_distances"]["FD-pixels16"]["score"]
    page = (tmp_path / "all" / "report.html").read_text()
    assert "Per lesion type" in page and "non_mass" in page and "only in the synthetic set" in page

    # a single-type run restricts both sides before every section: the same numbers as its block
    one = evaluate(store, syn, tmp_path / "calc", quick=True, weights_dir=no_weights, seed=0, lesion_type="calcification")
    assert one["results_by_type"] == {} and one["inputs"]["n_synthetic"] == 8 and one["inputs"]["n_real_test"] == 5
    block = by["calcification"]["results"]
    for key in ("score", "floor", "ratio"):
        assert one["results"]["feature_distances"]["FD-pixels16"][key] == pytest.approx(block["feature_distances"]["FD-pixels16"][key])
    assert one["results"]["diversity"]["synthetic"]["mean"] == pytest.approx(block["diversity"]["synthetic"]["mean"])
    assert one["results"]["diversity"]["real_test"]["mean"] == pytest.approx(block["diversity"]["real_test"]["mean"])
    assert one["results"]["memorisation"]["n_flagged"] == block["memorisation"]["n_flagged"]
    assert "calcification lesions only" in (tmp_path / "calc" / "report.html").read_text()


def test_mass_only_data_has_no_per_type_blocks(tmp_path, no_weights):
    from test_evaluate_run import make_tiny_store, make_tiny_synthetic

    from mammosynth.evaluate.run import evaluate

    m = evaluate(make_tiny_store(tmp_path / "r.h5"), make_tiny_synthetic(tmp_path / "s", n=8), tmp_path / "o", quick=True,
                 weights_dir=no_weights, seed=0)
    assert m["results_by_type"] == {} and m["types_not_evaluated"] == {} and "by_type" not in m["seconds"]
    assert m["inputs"]["n_by_type"] == {"mass": {"real_train": 24, "real_test": 10, "real_val": 0, "synthetic": 8}}


def test_lesion_type_option(mixed, tmp_path, capsys, no_weights):
    from typer.testing import CliRunner

    from mammosynth.cli import app, main
    from mammosynth.errors import MammosynthError
    from mammosynth.evaluate.run import evaluate

    store, syn = mixed
    assert main(["evaluate", "--real", str(store), "--synthetic", str(syn), "--out", str(tmp_path / "o"),
                 "--lesion-type", "calcifications"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--lesion-type must be one of all, mass, non_mass, calcification" in err
    assert not (tmp_path / "o").exists()
    help_text = " ".join(CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "--lesion-type" in help_text and "default: all" in help_text.lower().replace("all (default", "default: all")
    # a type the store holds too little of: the error names the file and the counts, and says what to do
    with pytest.raises(MammosynthError, match=r"mixed.h5: need at least 2 train and 2 test non_mass lesions.*choose another --lesion-type"):
        evaluate(store, syn, tmp_path / "nm", lesion_type="non_mass", weights_dir=no_weights)
    with pytest.raises(MammosynthError, match="--downstream cannot be restricted"):
        evaluate(store, syn, tmp_path / "ds", lesion_type="mass", downstream=True)


class ConstantJudge:
    """A hand-made judge: always the same shape/margin and morphology/distribution."""

    name = "constant"
    data_info: dict = {}
    untrained_heads: dict = {}

    def __init__(self, morphology: str, distribution: str) -> None:
        self.m, self.d = MORPHOLOGIES.index(morphology), DISTRIBUTIONS.index(distribution)

    def predict_head_labels(self, images):
        n = len(images)
        return {"shape": np.zeros(n, np.int64), "margin": np.zeros(n, np.int64),
                "morphology": np.full(n, self.m, np.int64), "distribution": np.full(n, self.d, np.int64)}


def test_label_fidelity_per_morphology_on_a_hand_made_judge(mixed):
    from mammosynth.evaluate.label_fidelity import format_calcification_table, label_fidelity
    from mammosynth.synth.writer import read_manifest

    store, syn = mixed
    rows = [r for r in read_manifest(syn) if r["category"] == "calcification"]
    m0, d0 = rows[0]["morphology"], rows[0]["distribution"]
    rep = label_fidelity(ConstantJudge(m0, d0), syn, real_store=store)
    calc = rep["calcification"]
    assert calc["available"] and calc["reason"] is None and calc["n_generated"] == 8 and calc["n_real"] == 5
    cats = {c["morphology"]: c for c in rep["calcification_categories"]}
    hit = cats[m0]
    assert hit["generated_morphology_accuracy"] == 1.0 and hit["real_morphology_accuracy"] == 1.0
    assert hit["morphology_ratio"] == 1.0 and hit["n_real_morphology"] >= 1 and hit["n_generated"] == 4
    for mor, c in cats.items():
        if mor != m0:
            assert c["generated_morphology_accuracy"] == 0.0 and c["morphology_ratio"] in (0.0, None)
    with Store(store) as s:
        t = s.lesions(split="test")
    known = t.morphology >= 0
    assert calc["real"]["morphology_accuracy"] == pytest.approx(float((t.morphology[known] == MORPHOLOGIES.index(m0)).mean()))
    assert calc["generated"]["morphology_accuracy"] == pytest.approx(0.5)
    # mass rows keep shape/margin; calcification rows are not in the shape/margin table
    assert {c["lesion_type"] for c in rep["categories"]} == {"mass", "non_mass"}
    assert f"| {m0} |" in format_calcification_table(rep)
    only = label_fidelity(ConstantJudge(m0, d0), syn, real_store=store, lesion_type="calcification")
    assert only["n_generated"] == 8 and only["categories"] == [] and only["n_real"] == 5
    json.dumps(rep)


@pytest.fixture(scope="module")
def judge_run(mixed, tmp_path_factory):
    from mammosynth.models.classifier import ClassifierConfig
    from mammosynth.train.trainer import train

    cfg = ClassifierConfig(width=4, n_stages=2, steps=6, batch_size=8, log_every=3, sample_every=0, ckpt_every=6,
                           device="cpu", train_split="val")
    return train("classifier", mixed[0], tmp_path_factory.mktemp("judge") / "runs", cfg, progress=False)


def test_calcification_judge_heads_train_predict_and_judge(mixed, judge_run):
    from mammosynth.evaluate.label_fidelity import label_fidelity
    from mammosynth.train.run import load_method

    doc = json.loads((judge_run / "config.json").read_text())
    assert doc["data"]["train_labels"]["morphology"] == 3 and doc["data"]["train_labels"]["distribution"] == 3
    assert not {"morphology", "distribution"} & set(doc["data"]["untrained_heads"])
    records = [json.loads(line) for line in (judge_run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("loss_morphology") is not None for r in records)
    m = load_method(judge_run, device="cpu", expect="classifier")
    pred = m.predict_head_labels(torch.zeros(3, 1, 32, 32))
    assert ((pred["morphology"] >= 0) & (pred["morphology"] < len(MORPHOLOGIES))).all()
    assert ((pred["distribution"] >= 0) & (pred["distribution"] < len(DISTRIBUTIONS))).all()
    ev = m.evaluate_store(split="test")
    assert ev["morphology"]["n"] == 5 and 0.0 <= ev["morphology"]["accuracy"] <= 1.0
    rep = label_fidelity(judge_run, mixed[1], device="cpu")
    assert rep["protocol"]["clean"] and rep["calcification"]["available"]
    cats = rep["calcification_categories"]
    assert sum(c["n_generated"] for c in cats) == 8
    for c in cats:  # every requested morphology exists in the real test split, so every number is measured
        g, r = c["generated_morphology_accuracy"], c["real_morphology_accuracy"]
        assert 0.0 <= g <= 1.0 and 0.0 <= r <= 1.0 and c["n_real_morphology"] >= 1
        assert c["morphology_ratio"] == (None if r == 0 else pytest.approx(g / r))


def test_an_old_classifier_checkpoint_loads_and_reports_calcification_unavailable(mixed, judge_run, tmp_path):
    """A run saved before the calcification heads: config without their labels, weights without their tensors."""
    import shutil

    from safetensors.torch import load_file, save_file

    from mammosynth.evaluate.label_fidelity import label_fidelity
    from mammosynth.models.classifier import MASS_HEADS, PREDATES_CALC_HEADS
    from mammosynth.train.run import load_method

    old = tmp_path / "old-run"
    shutil.copytree(judge_run, old)
    doc = json.loads((old / "config.json").read_text())
    for key in ("morphology", "distribution", "n_calcification"):
        doc["data"]["train_labels"].pop(key)
    doc["data"]["untrained_heads"] = {k: v for k, v in doc["data"]["untrained_heads"].items() if k in MASS_HEADS}
    (old / "config.json").write_text(json.dumps(doc))
    tensors = load_file(str(old / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if "morphology_head" not in k and "distribution_head" not in k},
              str(old / "model.safetensors"), metadata={"method": "classifier", "method_version": "1"})
    m = load_method(old, device="cpu", expect="classifier")
    assert m.head_names == MASS_HEADS and m.untrained_heads["morphology"] == PREDATES_CALC_HEADS
    assert (m.predict_head_labels(torch.zeros(2, 1, 32, 32))["morphology"] == -1).all()
    rep = label_fidelity(old, mixed[1], device="cpu")
    calc = rep["calcification"]
    assert calc["available"] is False and "predates the calcification heads" in calc["reason"]
    assert calc["generated"]["morphology_accuracy"] is None and calc["morphology_ratio"] is None
    assert rep["real"]["margin_accuracy"] is not None  # the mass heads still judge


def test_study_create_mixes_lesion_types_and_analyze_breaks_down_by_type(mixed, tmp_path):
    from mammosynth.study import db
    from mammosynth.study.analyze import compute_metrics
    from mammosynth.study.create import create_study
    from mammosynth.study.simulate import simulate_readers

    store, syn = mixed
    made = create_study(store, syn, tmp_path / "study", readers=2, n_per_class=6, seed=1)
    con, meta = db.open_study(made.path)
    try:
        items = {r["item_id"]: r["truth"] for r in con.execute("SELECT item_id, truth FROM items")}
    finally:
        con.close()
    types = meta["item_lesion_types"]
    assert set(types) == set(items)
    for truth in ("real", "synthetic"):  # stratified: 3 of each type on each side
        got = sorted(types[i] for i, t in items.items() if t == truth)
        assert got == ["calcification"] * 3 + ["mass"] * 3
    assert meta["lesion_types"]["stratified"] is True
    # the case metadata agrees with the sources: real items' types are the store's labels
    con, _ = db.open_study(made.path)
    try:
        origins = {r["item_id"]: r["origin"] for r in con.execute("SELECT item_id, origin FROM items WHERE truth='real'")}
    finally:
        con.close()
    with Store(store) as s:
        store_types = s.lesion_types(None)
    for iid, origin in origins.items():
        assert store_types[int(origin.split("#lesions/")[1].split()[0])] == types[iid]
    simulate_readers(made.path, d_prime=1.0, seed=0)
    metrics, answers = compute_metrics(made.path)
    assert {a["lesion_type"] for a in answers} == {"mass", "calcification"}
    by = metrics["by_lesion_type"]
    assert set(by) == {"mass", "calcification"}
    for t, m in by.items():
        assert m["n_real"] == 6 and m["n_synthetic"] == 6  # 3 per side x 2 readers
        assert 0.0 <= m["auc"] <= 1.0
