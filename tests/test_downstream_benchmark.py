"""`benchmark downstream` (issue #16): folds, strict-IoU recall, bootstrap and paired gains,
the insertion arms, reading films back through a source reader, and the CLI end to end."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

import dicom_fixtures as F
from mammosynth.cli import main
from mammosynth.errors import ConfigError
from mammosynth.evaluate import benchmark as B
from mammosynth.evaluate.detection import Detections, froc
from mammosynth.evaluate.downstream import _mean_ci


def _film(fid: str, patient: str, margins: list[str], size: int = 32) -> B.Film:
    img = np.full((size, size), 0.3, np.float32)
    breast = np.ones((size, size), bool)
    masks, boxes = [], []
    for k, _ in enumerate(margins):
        m = np.zeros((size, size), bool)
        m[4 + 8 * k:8 + 8 * k, 4:8] = True
        masks.append(m)
        boxes.append((4, 4 + 8 * k, 4, 4))
    lm = np.any(masks, axis=0) if masks else np.zeros((size, size), bool)
    return B.Film(fid, patient, img, breast, lm, np.asarray(boxes, np.float64).reshape(-1, 4), list(margins), masks)


def _cohort() -> list[B.Film]:
    films = []
    margins = ["circumscribed"] * 12 + ["spiculated"] * 15 + ["ill_defined"] * 11
    for k, m in enumerate(margins):
        p = f"P{k // 2:03d}"  # two lesion films per patient, like mini-MIAS's left/right pairs
        films.append(_film(f"L{k}", p, [m] * (1 + (k % 5 == 0))))
    for k in range(20):
        films.append(_film(f"N{k}", f"Q{k // 2:03d}", []))
    return films


def test_folds_are_patient_level_stratified_and_test_every_lesion_once():
    films = _cohort()
    fold = B.make_folds(films, 5, seed=3)
    assert (fold >= 0).all() and set(fold.tolist()) == set(range(5))  # every film in exactly one fold
    for p in {f.patient_id for f in films}:
        assert len({int(fold[i]) for i, f in enumerate(films) if f.patient_id == p}) == 1
    # every lesion tested exactly once: the folds' lesion counts add up to all lesions
    per_fold = [sum(f.n_lesions for i, f in enumerate(films) if fold[i] == k) for k in range(5)]
    assert sum(per_fold) == sum(f.n_lesions for f in films)
    for k in range(5):
        assert any(fold[i] == k and not f.n_lesions for i, f in enumerate(films)), "a fold without normals"
        margins = Counter(m for i, f in enumerate(films) if fold[i] == k for m in f.margins)
        assert set(margins) == {"circumscribed", "spiculated", "ill_defined"}
    counts = np.array([[sum(m == g for i, f in enumerate(films) if fold[i] == k for m in f.margins)
                        for g in ("circumscribed", "spiculated", "ill_defined")] for k in range(5)])
    assert (counts.max(0) - counts.min(0) <= 4).all()  # balanced up to one patient's lesions
    assert (B.make_folds(films, 5, seed=3) == fold).all()  # deterministic


def test_folds_refuse_too_few_normal_patients():
    films = _cohort()[:38] + [_film("N0", "Q0", []), _film("N1", "Q1", [])]
    with pytest.raises(ConfigError, match="normal"):
        B.make_folds(films, 5)


def test_regimes_are_nested_and_sized():
    films = _cohort()
    fold = B.make_folds(films, 5)
    train = [i for i in range(len(films)) if fold[i] != 0]
    sub = B.regime_subsets(films, train, (0.25, 0.5, 1.0), seed=0)
    assert set(sub[0.25]) <= set(sub[0.5]) <= set(sub[1.0])
    assert set(sub[1.0]) == {i for i in train if films[i].n_lesions}
    n_pat = len({films[i].patient_id for i in sub[1.0]})
    assert len({films[i].patient_id for i in sub[0.25]}) == int(np.ceil(0.25 * n_pat))


def test_recall_uses_iou_strictly_greater_than_half():
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    half = Detections(np.array([[0.0, 0.0, 10.0, 5.0]]), np.array([0.9]), gt)  # IoU exactly 0.5
    more = Detections(np.array([[0.0, 0.0, 10.0, 5.2]]), np.array([0.9]), gt)  # IoU 0.52
    assert froc([half])["recall"] == 1.0  # pycocotools' rule (>=)
    assert froc([half], strict=True)["recall"] == 0.0  # seed 001's rule (>)
    assert froc([more], strict=True)["recall"] == 1.0
    s = B.score([(half.boxes, half.scores)], [gt])
    assert s["recall"] == 0.0 and s["recall@1fppi"] == 0.0 and s["ap50"] == 0.0
    s = B.score([(more.boxes, more.scores)], [gt])
    assert s["recall"] == 1.0 and s["recall@1fppi"] == 1.0


def _dets():
    gts = [np.array([[0.0, 0, 10, 10]]), np.array([[5.0, 5, 10, 10]]), np.zeros((0, 4)), np.zeros((0, 4))]
    a = [(np.array([[0.0, 0, 10, 10], [20, 20, 5, 5]]), np.array([0.9, 0.6])), (np.zeros((0, 4)), np.zeros(0)),
         (np.array([[1.0, 1, 4, 4]]), np.array([0.7])), (np.zeros((0, 4)), np.zeros(0))]
    b = [(np.array([[0.0, 0, 10, 10]]), np.array([0.9])), (np.array([[5.0, 5, 10, 10]]), np.array([0.8])),
         (np.array([[1.0, 1, 4, 4]]), np.array([0.95])), (np.zeros((0, 4)), np.zeros(0))]
    return gts, a, b


def test_weighted_curve_with_unit_weights_equals_froc():
    gts, a, _ = _dets()
    m = B._matched(a, gts)
    c = B._weighted_curve(*m, np.ones(len(gts)))
    s = B.score(a, gts)
    for k in B.BOOT_KEYS:
        assert c[k] == pytest.approx(s[k]), k
    assert s["recall"] == 0.5 and s["recall@0.5fppi"] == 0.5  # 1 of 2 lesions, 2 FPs on 4 films


def test_bootstrap_paired_gain_is_deterministic_and_zero_for_identical_arms():
    gts, a, b = _dets()
    matched = {"a": [B._matched(a, gts)], "a2": [B._matched(a, gts)], "b": [B._matched(b, gts)]}
    boot = B.bootstrap(matched, len(gts), reps=200, seed=1)
    again = B.bootstrap(matched, len(gts), reps=200, seed=1)
    np.testing.assert_array_equal(boot["b"], again["b"])
    j = B.BOOT_KEYS.index("recall")
    assert B._pct(boot["a2"][:, j] - boot["a"][:, j]) == [0.0, 0.0]  # paired: same resamples
    gain = boot["b"][:, j] - boot["a"][:, j]
    assert (gain >= 0).all() and np.mean(gain) > 0  # b finds every lesion a finds, and one more
    lo, hi = B._pct(gain)
    assert 0.0 <= lo <= hi <= 1.0


def test_paired_gain_t_interval_on_a_known_case():
    from scipy import stats

    r = _mean_ci([0.1, 0.2, 0.3], (-1.0, 1.0))
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert r["mean"] == pytest.approx(0.2)
    assert r["ci"] == pytest.approx([0.2 - half, 0.2 + half])


def test_copy_paste_changes_only_the_footprint_and_labels_the_lesion():
    rng = np.random.default_rng(0)
    src = _film("L0", "P0", ["spiculated"], size=64)
    src.image[src.lesion_mask] = 0.9
    normal = _film("N0", "Q0", [], size=64)
    normal.image[:] = 0.2
    films = [src, normal]
    tiles = B.pasted_tiles(films, [0], [1], 32, 3, rng)
    assert len(tiles) == 3
    for img, m in tiles:
        assert img.shape == (32, 32) and m.any()
        np.testing.assert_allclose(img[m], 0.9, atol=1e-6)  # alpha = 1 inside the lesion: the real pixels
        film = img != 0  # the tile may hang over the film's edge (zero padding)
        assert np.isclose(img[film & ~m], 0.2).mean() > 0.8  # the rest is the normal (bar the feathered ring)
    assert normal.image.max() == pytest.approx(0.2)  # the normal film itself is never modified


def test_traditional_tiles_keep_a_lesion():
    rng = np.random.default_rng(1)
    films = [_film("L0", "P0", ["circumscribed"], size=64)]
    tiles = B.traditional_tiles(films, [0], 32, 4, rng)
    assert len(tiles) == 4 and all(m.any() and img.shape == (32, 32) for img, m in tiles)


def test_generator_arm_skipped_when_not_registered():
    assert "not registered" in B.generator_available("diffusion-infill-not-a-method")
    assert B.generator_available("infill") is None


def test_reader_films_come_back_at_the_benchmark_resolution(tmp_path, capsys):
    F.write_mias_like_fixture(tmp_path / "mias", {"CIRC": 3, "SPIC": 3, "ARCH": 1}, size=128, n_normals=4)
    assert main(["data", "ingest", "mias", "--root", str(tmp_path / "mias"), "--out", str(tmp_path / "m.h5"), "--size", "16",
                 "--json"]) == 0
    capsys.readouterr()
    films = B.reader_lesion_films(tmp_path / "m.h5", res=0.4)
    assert len(films) == 6  # masses only: the ARCH row is not a mass
    for f in films:
        assert f.image.shape == (64, 64)  # 128 px at 0.2 mm -> 64 px at 0.4 mm
        x, y, w, h = f.boxes[0]
        assert 2 <= w <= 14 and abs(w - h) <= 1  # a disk of radius 4-12 px at 0.2 mm
        assert f.lesion_mask[int(y + h / 2), int(x + w / 2)]


def test_cli_quick_on_a_tiny_phantom_store(tmp_path, capsys):
    from pycocotools.coco import COCO

    from mammosynth.phantom.dataset import write_phantom_store

    store = tmp_path / "ph.h5"
    write_phantom_store(store, n_lesions=4, n_normals=8, patch_size=32, full_shape=(256, 208), progress=False)
    out = tmp_path / "bench"
    args = ["benchmark", "downstream", "--data", str(store), "--out", str(out), "--quick", "--arms", "real,copy-paste,not-a-method",
            "--seeds", "1", "--fractions", "1", "--steps", "2", "--bootstrap", "10", "--phantom-films", "6",
            "--resolution-mm", "0.8", "--tile", "32", "--threads", "1", "--json"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "not-a-method" in printed["skipped_arms"]
    for name in ("benchmark.json", "benchmark.md", "recall_vs_size.png", "froc.png", "coco/test_gt.json"):
        assert (out / name).is_file(), name
    res = json.loads((out / "benchmark.json").read_text())
    assert res["n_lesion_films"] == 6 and res["n_normal_films"] == 8
    assert sum(f["lesions"] for f in res["fold_sizes"]) == res["n_lesions"]
    assert all(f["normals"] >= 1 for f in res["fold_sizes"])
    assert {s["arm"] for s in res["summary"]} == {"real", "copy-paste"}
    gt = COCO(str(out / "coco" / "test_gt.json"))
    assert len(gt.getImgIds()) == 14 and len(gt.getAnnIds()) == 6
    dets = json.loads((out / "coco" / "detections_1_real_x0_seed0.json").read_text())
    if dets:
        gt.loadRes(str(out / "coco" / "detections_1_real_x0_seed0.json"))
    capsys.readouterr()
    assert main(args) == 2  # never overwritten without --overwrite
    assert "--overwrite" in capsys.readouterr().err
