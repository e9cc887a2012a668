"""evaluate() end to end on a tiny store and a tiny synthetic set, offline, with no weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mammosynth.data.birads import Label
from mammosynth.data.records import LesionRecord, MammogramRecord
from mammosynth.data.store import StoreWriter
from mammosynth.synth.writer import Lesion, SyntheticSetWriter

S = 32
_NONE = Label(None, None, "missing")


def _blob(rng: np.random.Generator, size: int = S, bright: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Textured background with a bright elliptical 'mass' and its mask."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.4, size * 0.6, 2)
    ry, rx = rng.uniform(size * 0.15, size * 0.25, 2)
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img = 0.3 + 0.08 * rng.standard_normal((size, size)) + bright * mask
    return np.clip(img, 0, 1).astype(np.float32), mask


def make_tiny_store(path: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with StoreWriter(path, patch_size=S, normal_size=(96, 80)) as w:
        for k in range(n_train + n_test):
            img, m = _blob(rng)
            w.add(LesionRecord("test", f"l{k}", f"p{k}", img, m, _NONE, _NONE, _NONE,
                               split_hint="train" if k < n_train else "test"))
        for k in range(4):
            img = np.clip(0.3 + 0.08 * rng.standard_normal((96, 80)), 0, 1).astype(np.float32)
            breast = np.zeros((96, 80), bool)
            breast[8:88, :64] = True
            w.add(MammogramRecord("test", f"n{k}", f"q{k}", img * breast, breast, split_hint="train" if k < 2 else "test"))
    return path


def make_tiny_synthetic(out: Path, n: int = 16, seed: int = 1, bright: float = 0.35) -> Path:
    rng = np.random.default_rng(seed)
    with SyntheticSetWriter(out, "test") as w:
        for _ in range(n):
            img, m = _blob(rng, bright=bright)
            w.add(img, [Lesion(m)])
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("ev")
    return make_tiny_store(d / "real.h5"), make_tiny_synthetic(d / "syn")


def test_evaluate_end_to_end_without_weights(tiny, tmp_path, monkeypatch):
    from mammosynth.evaluate.run import SECTIONS, evaluate

    store, syn = tiny
    empty = tmp_path / "no-weights"
    empty.mkdir()
    monkeypatch.setenv("MAMMOSYNTH_WEIGHTS", str(empty))
    out = tmp_path / "report"
    m = evaluate(store, syn, out, weights_dir=empty, seed=0)
    # sections needing ImageNet weights are skipped with the reason; the rest have numbers
    for name in ("lpips", "prdc"):
        assert name in m["skipped"] and name not in m["results"]
    assert "weights" in m["skipped"]["lpips"].lower()
    for name in ("FD-VGG16", "FD-EffNet"):
        assert "skipped" in m["results"]["feature_distances"][name]
        assert f"feature_distances.{name}" in m["skipped"]
    px = m["results"]["feature_distances"]["FD-pixels16"]
    assert px["score"] > 0 and px["floor"] > 0 and px["ratio"] == pytest.approx(px["score"] / px["floor"])
    assert 0 <= m["results"]["two_sample"]["auc"] <= 1
    assert m["results"]["diversity"]["synthetic"]["mean"] > 0
    assert m["results"]["memorisation"]["n_synthetic"] == 16
    assert m["results"]["tsne"]["params"]["per_group"]["normal tissue"] > 0
    assert "label_fidelity" in m["skipped"] and "mask_fidelity" in m["skipped"] and "downstream" in m["skipped"]
    # the two-sample test compares with held-out real lesions only (val + test), never train; cross-fitted
    ts = m["results"]["two_sample"]
    assert ts["n_real"] == 10 and "never the generator's training split" in ts["real_pool"] and ts["folds"] == 5
    assert 0 <= ts["balanced_accuracy"] <= 1 and m["leakage"]["n_leaked"] == 0 and m["inputs"]["n_real_val"] == 0
    # every section is either a result or a skip reason
    assert set(SECTIONS) <= set(m["results"]) | set(m["skipped"])
    # files exist; metrics.json is strict JSON and equals the returned dict
    on_disk = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert on_disk == m
    html = (out / "report.html").read_text()
    for png in ("samples_real.png", "samples_synthetic.png", "tsne.png", "memorisation_histogram.png"):
        assert (out / png).stat().st_size > 1000 and png in html
    for title in ("LPIPS", "Classifier two-sample test", "Downstream detection", "Mask fidelity"):
        assert title in html
    assert "skipped: " in html
    # the report shows the numbers of metrics.json
    assert f"{m['results']['two_sample']['auc']:.4g}" in html
    assert m["seconds"]["total"] > 0 and set(m["cpu_seconds"]) == set(m["seconds"])


def test_mask_fidelity_with_a_briefly_trained_segmenter(tiny, tmp_path):
    from mammosynth.evaluate.run import mask_fidelity
    from mammosynth.evaluate.synthetic import load_synthetic_patches
    from mammosynth.models.segmenter import SegmenterConfig
    from mammosynth.train.trainer import train

    store, syn = tiny
    cfg = SegmenterConfig(steps=2, batch_size=8, width=4, depth=2, device="cpu", ckpt_every=2, log_every=1,
                          negatives_per_lesion=0.25)
    run = train("segmenter", store, tmp_path / "runs", cfg, progress=False)
    patches = load_synthetic_patches(syn, S)
    r = mask_fidelity(run, patches, store, out=tmp_path, device="cpu")
    assert r["n_synthetic"] == 16 and r["n_real_test"] == 10
    for k in ("dice_synthetic_mean", "dice_real_test_mean"):
        assert 0.0 <= r[k] <= 1.0
    assert (tmp_path / "mask_fidelity.png").stat().st_size > 1000


def test_evaluate_refuses_a_folder_that_is_not_a_synthetic_set(tiny, tmp_path):
    from mammosynth.errors import DataError
    from mammosynth.evaluate.run import evaluate

    with pytest.raises(DataError, match="manifest.csv"):
        evaluate(tiny[0], tmp_path, tmp_path / "out")


def test_cli_json_prints_one_json_object(tiny, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mammosynth.cli import app

    store, syn = tiny
    empty = tmp_path / "w"
    empty.mkdir()
    monkeypatch.setenv("MAMMOSYNTH_WEIGHTS", str(empty))
    res = CliRunner().invoke(app, ["evaluate", "--real", str(store), "--synthetic", str(syn), "--out", str(tmp_path / "r"),
                                   "--quick", "--json", "--weights-dir", str(empty), "--max-images", "8"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)  # the whole of stdout is one JSON object
    assert set(obj) >= {"summary", "skipped", "report", "metrics"}
    assert math.isfinite(obj["summary"]["two-sample AUC (0.5 = indistinguishable)"])
    assert "quick mode" in obj["skipped"]["feature_distances.FD-VGG16"]
    assert Path(obj["report"]).exists()


def test_cli_rejects_retinanet_without_torchvision(tiny, tmp_path, capsys):
    try:
        import monai.apps.detection  # noqa: F401
        import torchvision  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchvision and monai import here: RetinaNet can run")
    from mammosynth.cli import main

    store, syn = tiny
    code = main(["evaluate", "--real", str(store), "--synthetic", str(syn), "--out", str(tmp_path / "r"),
                 "--downstream", "--detector", "retinanet"])
    assert code == 2
    assert "RetinaNet needs torchvision and monai" in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.json").exists()  # refused before any section ran


def make_sourced_synthetic(out: Path, sources: list[str], seed: int = 2) -> Path:
    """A synthetic set whose images name the real lesions they were made from (as infill and
    birads-aegan record them)."""
    rng = np.random.default_rng(seed)
    with SyntheticSetWriter(out, "test") as w:
        for sid in sources:
            img, m = _blob(rng)
            w.add(img, [Lesion(m)], source_ids=[sid])
    return out


def test_evaluate_refuses_images_made_from_evaluation_lesions_unless_allowed(tiny, tmp_path, monkeypatch):
    """Before: a set made from test lesions (infill's old default) was scored against those very
    lesions with nothing said (issue 11)."""
    from typer.testing import CliRunner

    from mammosynth.cli import app
    from mammosynth.errors import DataError
    from mammosynth.evaluate.leakage import evaluation_leakage
    from mammosynth.evaluate.run import HELD_OUT, evaluate
    from mammosynth.synth.writer import read_manifest

    store, _ = tiny
    empty = tmp_path / "w"
    empty.mkdir()
    monkeypatch.setenv("MAMMOSYNTH_WEIGHTS", str(empty))
    # 4 images from test lesions l24, l25 (two each), 12 from train lesions l0..l11
    leaky = make_sourced_synthetic(tmp_path / "leaky", ["l24", "l25", "l24", "l25"] + [f"l{k}" for k in range(12)])
    with pytest.raises(DataError, match=r"4 of 16 synthetic images were made from lesions of the evaluation splits"):
        evaluate(store, leaky, tmp_path / "r0", quick=True, weights_dir=empty)
    assert not (tmp_path / "r0" / "metrics.json").exists()
    res = CliRunner().invoke(app, ["evaluate", "--real", str(store), "--synthetic", str(leaky), "--out", str(tmp_path / "r1"),
                                   "--quick", "--weights-dir", str(empty)])
    assert res.exit_code != 0 and "--allow-leakage" in str(res.exception or res.output)
    m = evaluate(store, leaky, tmp_path / "r2", quick=True, weights_dir=empty, allow_leakage=True, max_images=8)
    lk = m["leakage"]
    assert lk["n_leaked"] == 4 and lk["n_leaked_source_ids"] == 2 and lk["leaked_source_ids"] == ["l24", "l25"]
    assert lk["allowed"] is True and lk["splits"] == ["val", "test"]
    assert any(k.startswith("LEAKED") and v == "4 of 8" for k, v in m["summary"].items())
    assert "LEAKED: 4 of 8 synthetic images" in (tmp_path / "r2" / "report.html").read_text()
    clean = make_sourced_synthetic(tmp_path / "clean", [f"l{k}" for k in range(16)])
    lk = evaluation_leakage(read_manifest(clean), store, HELD_OUT)
    assert lk["n_leaked"] == 0 and lk["n_with_source_ids"] == 16
