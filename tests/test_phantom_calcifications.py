"""Phantom calcification clusters: every morphology x distribution renders, each point is
the exact centre of its calcification, calcifications are 0.1-1 mm, cluster masks hold their
points and boxes match masks, the store keeps them, and masses are untouched by them."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from mammosynth.cli import main
from mammosynth.data.birads import DISTRIBUTIONS, MORPHOLOGIES
from mammosynth.data.imaging import mask_bbox
from mammosynth.data.store import Store
from mammosynth.errors import ConfigError
from mammosynth.phantom import phantom_calcification_records, render_breast, write_phantom_store
from mammosynth.phantom.calcification import CALC_SIZE_MM, DISTRIBUTION_GEOMETRY, render_cluster_window

SMALL = (384, 312)  # 0.53 mm/px


@pytest.fixture(scope="module")
def breast():
    return render_breast(5, SMALL, view="CC", density="B")


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_every_morphology_and_distribution_renders(breast, distribution):
    spacing = 204.8 / SMALL[0]
    cx, cy = np.argwhere(breast.breast_mask)[:, ::-1].mean(axis=0)  # the breast's centroid, well inside it
    for k, morphology in enumerate(MORPHOLOGIES):
        rng = np.random.default_rng(k)
        out, mask, points, sizes = render_cluster_window(breast.image, breast.breast_mask, (cx, cy), morphology,
                                                         distribution, rng, spacing)
        k_lo, k_hi = DISTRIBUTION_GEOMETRY[distribution][0]
        assert 1 <= len(points) <= k_hi and len(sizes) == len(points)
        assert sizes.min() >= CALC_SIZE_MM[0] and sizes.max() <= CALC_SIZE_MM[1]
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
        assert np.array_equal(out[~breast.breast_mask], breast.image[~breast.breast_mask])
        ij = np.floor(points + 0.5).astype(int)
        assert mask[ij[:, 1], ij[:, 0]].all(), (morphology, distribution)  # every point inside the cluster
        assert (out[ij[:, 1], ij[:, 0]] >= breast.image[ij[:, 1], ij[:, 0]]).all()  # calcium only adds
        assert out[mask].mean() > breast.image[mask].mean()


def test_points_are_the_exact_centres_of_the_calcifications():
    """Round, regular calcifications on flat tissue at 0.05 mm/px: each isolated one's
    brightness centroid is its point, to a fiftieth of a pixel."""
    spacing = 0.05
    flat = np.full((640, 640), 0.4, np.float32)
    inside = np.ones_like(flat, bool)
    out, mask, points, sizes = render_cluster_window(flat, inside, (320.0, 320.0), "round_and_regular", "regional",
                                                     np.random.default_rng(3), spacing)
    delta = (out - flat).astype(np.float64)
    yy, xx = np.mgrid[0:640, 0:640]
    checked = 0
    for k, (x, y) in enumerate(points):
        others = np.delete(points, k, axis=0)
        if len(others) and np.hypot(*(others - (x, y)).T).min() * spacing < 2.5:
            continue  # a neighbour's light would pull the centroid
        win = np.hypot(xx - x, yy - y) * spacing < 1.2
        w = delta * win
        assert abs((w * xx).sum() / w.sum() - x) < 0.02 and abs((w * yy).sum() / w.sum() - y) < 0.02
        checked += 1
    assert checked >= 3


def test_unknown_labels_are_config_errors(breast):
    with pytest.raises(ConfigError, match="morphology"):
        render_cluster_window(breast.image, breast.breast_mask, (100, 100), "popcorn", "clustered", np.random.default_rng(0), 0.5)
    with pytest.raises(ConfigError, match="distribution"):
        render_cluster_window(breast.image, breast.breast_mask, (100, 100), "punctate", "scattered", np.random.default_rng(0), 0.5)


def test_calcification_records_are_balanced_labelled_and_deterministic():
    shape = (256, 208)
    recs = list(phantom_calcification_records(65, seed=2, full_shape=shape))
    assert Counter((r.morphology.value, r.distribution.value) for r in recs) == {
        (m, d): 1 for m in MORPHOLOGIES for d in DISTRIBUTIONS}
    for r in recs:
        assert r.lesion_type == "calcification" and r.shape.status == r.margin.status == "non_mass"
        assert r.morphology.status == r.distribution.status == "exact" and r.pathology.value in ("benign", "malignant")
        assert r.patch.shape == r.mask.shape and r.patch.shape[0] == r.patch.shape[1]
        x, y, w, h = mask_bbox(r.mask)
        assert (r.bbox[2], r.bbox[3]) == (w, h) and r.lesion_size == (h, w)  # the box is the mask's
        ij = np.floor(r.points + 0.5).astype(int)
        assert r.mask[ij[:, 1], ij[:, 0]].all()
        full = np.asarray(r.extra["points_xy"])
        np.testing.assert_allclose(full - r.extra["crop_xy"], r.points, atol=2e-3)
        sizes = np.asarray(r.extra["calc_sizes_mm"])
        assert len(sizes) == len(r.points) and sizes.min() >= 0.1 and sizes.max() <= 1.0
    again = list(phantom_calcification_records(7, seed=2, full_shape=shape))  # a prefix, drawn alike
    for a, b in zip(again, recs):
        assert np.array_equal(a.patch, b.patch) and np.array_equal(a.points, b.points)


def test_store_keeps_clusters_and_masses_do_not_change(tmp_path):
    plain, mixed = tmp_path / "plain.h5", tmp_path / "mixed.h5"
    write_phantom_store(plain, 8, 0, 32, full_shape=(256, 208), seed=4, progress=False)
    write_phantom_store(mixed, 8, 0, 32, full_shape=(256, 208), seed=4, progress=False, n_calcifications=6)
    with Store(plain) as a, Store(mixed) as b:
        assert a.n_lesions == 8 and b.n_lesions == 14
        assert np.array_equal(a.h5["lesions/patch"][...], b.h5["lesions/patch"][:8])
        assert "n_calcifications" not in a.manifest["provenance"]
        types = b.lesion_types()
        assert types == ["mass"] * 8 + ["calcification"] * 6
        info = b.info()
        assert info["lesion_type"]["calcification"] == 6 and info["morphology"]["(none)"] == 8
        les = b.lesions()
        for i in range(8, 14):
            pts = b.lesion_points(i)
            assert len(pts) >= 1 and (pts >= -0.5).all() and (pts <= 31.5).all()
            near = np.clip(np.floor(pts + 0.5).astype(int), 0, 31)
            assert les.mask[i][near[:, 1], near[:, 0]].mean() > 0.8  # resized masks keep their points


def test_phantom_cli_draws_calcification_clusters(tmp_path, capsys):
    out = tmp_path / "p.h5"
    rc = main(["data", "phantom", "--out", str(out), "--lesions", "3", "--calcifications", "4", "--normals", "0",
               "--size", "16", "--normal-size", "64x52", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert rc == 0 and info["n_lesions"] == 7
    assert info["lesion_type"] == {"mass": 3, "non_mass": 0, "calcification": 4, "(none)": 0}
    assert sum(v for k, v in info["distribution"].items() if k != "(none)") == 4
    rc = main(["data", "preview", str(out), "--out", str(tmp_path / "prev.png"), "--normals", "0"])
    assert rc == 0 and (tmp_path / "prev.png").stat().st_size > 0  # captions morphology / distribution, marks points
