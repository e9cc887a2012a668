"""Radio-opaque markers on the phantom (issue #15): off by default, bright and sharp, outside
the breast (laterality) or on the nipple (bead), labelled as category "marker", never lesions."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy
from scipy import ndimage as ndi

from mammosynth.cli import main
from mammosynth.data.dataset import LesionDataset
from mammosynth.data.store import Store, store_digest
from mammosynth.phantom import phantom_normal_records, render_breast, write_phantom_store
from mammosynth.phantom.markers import MARKER_CLEARANCE_MM, NIPPLE_BEAD_MM, draw_markers

#: sha256 of every dataset in a small default store (``_small_store``), recorded from the
#: phantom of 2439e01, before markers existed. Bit-exact floats depend on numpy/scipy's FFT
#: and filters, so the check runs only with the versions it was recorded with; the same-process
#: comparisons below run everywhere.
BEFORE_MARKERS_DIGEST = "fa1ee1c1fdda2115ad14e55d9ba86b73aee30eb1e97da0bcfdba6a921b90c89b"
DIGEST_VERSIONS = ("2.4.6", "1.17.1")  # numpy, scipy


def _small_store(path, **kw):
    return write_phantom_store(path, n_lesions=12, n_normals=4, patch_size=32, full_shape=(256, 208), seed=3,
                               progress=False, n_calcifications=3, **kw)


def test_markers_off_by_default_store_is_bit_identical_to_before(tmp_path):
    if (np.__version__, scipy.__version__) != DIGEST_VERSIONS:
        pytest.skip(f"digest recorded with numpy/scipy {DIGEST_VERSIONS}, here {np.__version__}/{scipy.__version__}")
    _small_store(tmp_path / "d.h5")
    assert store_digest(tmp_path / "d.h5") == BEFORE_MARKERS_DIGEST
    _small_store(tmp_path / "off.h5", markers=False)
    assert store_digest(tmp_path / "off.h5") == BEFORE_MARKERS_DIGEST


def test_markers_off_normals_are_the_breasts_and_the_store_has_no_marker_columns(tmp_path):
    for rec in phantom_normal_records(2, seed=5, full_shape=(256, 208)):
        b = render_breast(rec.extra["breast_seed"], (256, 208), view=rec.view, laterality=rec.laterality, density=rec.density)
        assert np.array_equal(rec.image, b.image) and rec.markers == []
    _small_store(tmp_path / "d.h5")
    with Store(tmp_path / "d.h5") as s:
        assert "markers" not in s.h5 and "marker_mask" not in s.h5["normals"] and "n_markers" not in s.manifest
        assert s.markers() == [] and s.n_markers == 0 and "n_markers" not in s.info()


def _marker_records(n=4, shape=(512, 416), **kw):
    return list(phantom_normal_records(n, seed=2, full_shape=shape, markers=True, **kw))


def test_markers_are_bright_sharp_and_where_they_belong():
    plain = list(phantom_normal_records(4, seed=2, full_shape=(512, 416)))
    for rec, ref in zip(_marker_records(), plain):
        kinds = {m.kind: m for m in rec.markers}
        assert set(kinds) == {"laterality", "nipple"} and all(m.category == "marker" for m in rec.markers)
        spacing = rec.pixel_spacing_mm
        inside = rec.image[rec.breast_mask]
        lat = kinds["laterality"]
        assert lat.text == f"{rec.laterality} {rec.view}"
        # Outside the breast, with the clearance, and brighter than any breast tissue.
        gap = ndi.distance_transform_edt(~rec.breast_mask)[lat.mask].min() * spacing
        assert gap >= MARKER_CLEARANCE_MM
        assert rec.image[lat.mask].mean() > 0.85 and np.median(rec.image[lat.mask]) > np.percentile(inside, 99.5)
        # On the nipple side (away from the chest wall): a left breast's chest wall is x = 0.
        xs = np.nonzero(lat.mask)[1]
        assert (xs.mean() > rec.image.shape[1] / 2) == (rec.laterality == "L")
        # Sharp: one pixel beyond the letters the background is exactly 0 again.
        ring = ndi.binary_dilation(lat.mask, iterations=2) & ~ndi.binary_dilation(lat.mask, iterations=1)
        assert np.all(rec.image[ring] == 0)
        bead = kinds["nipple"]
        by, bx = (np.mean(v) for v in np.nonzero(bead.mask))
        b = render_breast(rec.extra["breast_seed"], (512, 416), view=rec.view, laterality=rec.laterality, density=rec.density)
        nx, ny = b.meta["nipple_xy"]
        assert np.hypot(bx - nx, by - ny) <= NIPPLE_BEAD_MM[1] / spacing
        assert (bead.mask & rec.breast_mask).any()  # on the nipple, not floating beside it
        assert np.median(rec.image[bead.mask]) > np.percentile(inside, 99)
        # Nothing else changed (the bead's rim pixels, under half covered, are outside its mask).
        any_marker = lat.mask | ndi.binary_dilation(bead.mask, iterations=1)
        assert np.array_equal(rec.image[~any_marker], ref.image[~any_marker])


def test_nipple_bead_is_optional():
    for rec in _marker_records(2, nipple_marker=False):
        assert [m.kind for m in rec.markers] == ["laterality"]


def test_draw_markers_leaves_the_breast_alone():
    b = render_breast(1, (384, 312), view="MLO", laterality="R", density="B")
    before = b.image.copy()
    img, marks = draw_markers(b, np.random.default_rng(0))
    assert np.array_equal(b.image, before) and not np.array_equal(img, before) and len(marks) == 2


def test_markers_round_trip_the_store_and_are_never_lesions(tmp_path):
    on, off = tmp_path / "on.h5", tmp_path / "off.h5"
    kw = dict(n_lesions=8, n_normals=4, patch_size=32, full_shape=(512, 416), normal_size=(256, 208), seed=2, progress=False)
    write_phantom_store(on, markers=True, **kw)
    write_phantom_store(off, **kw)
    recs = _marker_records()
    with Store(on) as s, Store(off) as t:
        assert s.n_markers == 8 and s.info()["n_markers"] == 8 and s.manifest["n_markers"] == 8
        assert s.manifest["provenance"]["markers"]["nipple"] is True
        assert s.n_lesions == t.n_lesions == 8 and s.lesion_types() == t.lesion_types() == ["mass"] * 8
        assert np.array_equal(s.h5["lesions/patch"][...], t.h5["lesions/patch"][...])
        for i, rec in enumerate(recs):
            rows = s.markers(i)
            assert [r["kind"] for r in rows] == [m.kind for m in rec.markers]
            assert all(r["category"] == "marker" and r["normal"] == i for r in rows)
            assert rows[0]["text"] == f"{rec.laterality} {rec.view}"
            mm = s.marker_mask(i)
            n = s.normal(i)
            for r in rows:
                ys, xs = np.nonzero(mm == r["label"])
                x, y, w, h = r["bbox"]
                assert len(ys) and x <= xs.min() and xs.max() < x + w and y <= ys.min() and ys.max() < y + h
                # bright after the store's 2x anti-aliased reduction too (edge pixels half covered)
                assert n["image"][mm == r["label"]].max() > 0.9 and n["image"][mm == r["label"]].mean() > 0.5
            lat = mm == rows[0]["label"]
            assert not (lat & n["breast_mask"]).any()
            far = ~ndi.binary_dilation(mm > 0, iterations=3)  # the resize spreads a marker by a pixel or two
            assert np.array_equal(n["image"][far], t.normal(i)["image"][far])
        assert t.marker_mask(0).shape == (256, 208) and not t.marker_mask(0).any()
    # Training code reading lesions sees the same masses, and no marker.
    a, b = LesionDataset(on, split=None, augment=False), LesionDataset(off, split=None, augment=False)
    assert len(a) == len(b) == 8
    assert {int(a[i]["lesion_type"]) for i in range(len(a))} == {0}  # LESION_TYPES[0] == "mass"


def test_cli_phantom_markers(tmp_path, capsys):
    capsys.readouterr()
    assert main(["data", "phantom", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--markers" in help_text and "Default: off" in help_text and "marker" in help_text
    out = tmp_path / "m.h5"
    rc = main(["data", "phantom", "--out", str(out), "--lesions", "3", "--normals", "2", "--size", "32",
               "--normal-size", "256x208", "--markers", "--no-nipple-bead", "--json"])
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_markers"] == 2 and info["n_lesions"] == 3
    with Store(out) as s:
        assert [m["kind"] for m in s.markers()] == ["laterality", "laterality"]
