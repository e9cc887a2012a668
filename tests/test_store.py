"""The store: write/read round trip, splits without patient leakage, atomic writes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammosynth.data.birads import Label, map_cbis_margin, map_cbis_shape, map_pathology
from mammosynth.data.dataset import LesionDataset, NormalDataset
from mammosynth.data.records import LesionRecord, MammogramRecord, SkipRecord
from mammosynth.data.store import Store, StoreWriter
from mammosynth.errors import DataError


def _lesion(i: int, patient: str, rng: np.random.Generator) -> LesionRecord:
    patch = rng.random((40, 48)).astype(np.float32)
    mask = np.zeros((40, 48), bool)
    mask[10:30, 12:36] = True
    return LesionRecord(
        source="test", source_id=f"L{i}", patient_id=patient, patch=patch, mask=mask,
        shape=map_cbis_shape("OVAL"), margin=map_cbis_margin("SPICULATED"), pathology=map_pathology("BENIGN"),
        lesion_size=(20, 24),
    )


def _normal(i: int, patient: str, lat: str) -> MammogramRecord:
    img = np.zeros((100, 60), np.float32)
    if lat == "R":  # displayed with the chest wall on the right
        img[:, 20:] = 0.5
    else:
        img[:, :40] = 0.5
    m = img > 0
    return MammogramRecord(source="test", source_id=f"N{i}", patient_id=patient, image=img, breast_mask=m, laterality=lat)


def test_round_trip_and_splits(tmp_path, rng):
    path = tmp_path / "d.h5"
    with StoreWriter(path, patch_size=32, normal_size=(64, 48), split_seed=1) as w:
        for i in range(20):
            w.add(_lesion(i, f"P{i // 2}", rng))
        w.add(_normal(0, "P100", "L"))
        w.add(_normal(1, "P101", "R"))
        w.add(SkipRecord("test", "bad", "/x.dcm", "corrupt"))
    with Store(path) as s:
        assert s.n_lesions == 20 and s.n_normals == 2 and s.patch_size == 32
        les = s.lesions()
        assert les.patch.shape == (20, 32, 32) and les.patch.dtype == np.float32
        assert les.mask.any(axis=(1, 2)).all()
        assert (les.shape == 1).all() and (les.margin == 4).all()
        # patient-level: both lesions of a patient share a split
        split = s.h5["lesions/split"][...]
        for p in range(10):
            assert split[2 * p] == split[2 * p + 1]
        assert set(np.unique(split)) == {0, 1, 2}
        n1 = s.normal(1)
        assert n1["flipped"] and n1["image"].shape == (64, 48)
        # right breast flipped: tissue (value 0.5) now near x = 0
        assert n1["image"][:, :5].mean() > 0.4 and n1["valid_hw"] == (64, 38)
        info = s.info()
        assert info["n_skipped"] == 1 and info["margin"]["spiculated"] == 20
        assert s.skips()[0].reason == "corrupt"


def test_mismatched_and_empty_masks_become_skips(tmp_path, rng):
    path = tmp_path / "d.h5"
    bad = _lesion(0, "P0", rng)
    bad.mask = np.zeros((10, 10), bool)
    empty = _lesion(1, "P1", rng)
    empty.mask[:] = False
    with StoreWriter(path, patch_size=16) as w:
        assert not w.add(bad)
        assert not w.add(empty)
        assert w.add(_lesion(2, "P2", rng))
    with Store(path) as s:
        reasons = [k.reason for k in s.skips()]
    assert any("differs" in r for r in reasons) and any("empty" in r for r in reasons)


def test_failed_write_keeps_existing_file(tmp_path, rng):
    path = tmp_path / "d.h5"
    with StoreWriter(path, patch_size=16) as w:
        w.add(_lesion(0, "P0", rng))
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with StoreWriter(path, patch_size=16) as w:
            w.add(_lesion(1, "P1", rng))
            raise RuntimeError("killed")
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_not_a_store(tmp_path):
    p = tmp_path / "x.h5"
    p.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="x.h5"):
        Store(p)
    with pytest.raises(DataError, match="no such dataset"):
        Store(tmp_path / "missing.h5")


def test_datasets(tmp_path, rng):
    path = tmp_path / "d.h5"
    with StoreWriter(path, patch_size=32, normal_size=(64, 48)) as w:
        for i in range(6):
            w.add(_lesion(i, f"P{i}", rng))
        w.add(_normal(0, "P9", "L"))
    ds = LesionDataset(path, split=None, augment=True)
    item = ds[0]
    assert item["image"].shape == (1, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 1, 32, 32)
    nd = NormalDataset(path, split=None, size=(32, 24))
    assert nd[0]["image"].shape == (1, 32, 24)


@pytest.mark.parametrize(
    "raw,value,status",
    [("OVAL", "oval", "exact"), ("LOBULATED-IRREGULAR", "irregular", "combined"),
     ("IRREGULAR-ARCHITECTURAL_DISTORTION", "irregular", "combined"), ("LYMPH_NODE", None, "non_mass"),
     ("NA", None, "missing"), (float("nan"), None, "missing"), ("WEIRD", None, "unknown")],
)
def test_cbis_shape_mapping(raw, value, status):
    lab = map_cbis_shape(raw)
    assert (lab.value, lab.status) == (value, status)


def test_cbis_margin_combined_takes_most_suspicious():
    assert map_cbis_margin("CIRCUMSCRIBED-ILL_DEFINED") == Label("CIRCUMSCRIBED-ILL_DEFINED", "ill_defined", "combined")
    assert map_cbis_margin("OBSCURED-ILL_DEFINED-SPICULATED").value == "spiculated"


def test_physical_sizes_are_stored_and_version_one_files_still_read(tmp_path, rng):
    import dataclasses

    import h5py

    path = tmp_path / "d.h5"
    with StoreWriter(path, patch_size=32, normal_size=(64, 48)) as w:
        for i in range(6):  # 40-px crops at 0.1 mm/px: 4 mm crop side, 0.125 mm per store pixel
            w.add(dataclasses.replace(_lesion(i, f"P{i}", rng), pixel_spacing_mm=0.1 if i < 4 else None))
        w.add(dataclasses.replace(_normal(0, "P100", "L"), pixel_spacing_mm=0.2))
    with Store(path) as s:
        assert s.manifest["format_version"] == 3
        assert s.lesion_sizes_mm().shape == (4, 2)  # the two lesions without a spacing are left out
        np.testing.assert_allclose(s.lesion_sizes_mm()[0], [2.0, 2.4], rtol=1e-6)
        mmpp = s.patch_mm_per_px()
        np.testing.assert_allclose(mmpp[:4], 0.125, rtol=1e-6)
        assert np.isnan(mmpp[4:]).all() and np.isnan(s.lesion_spacing_mm()[4:]).all()
        assert s.normal(0)["pixel_spacing_mm"] == pytest.approx(0.2)
    with h5py.File(path, "a") as h5:  # strip the format-2 columns: a version-1 file
        for name in ("lesions/pixel_spacing_mm", "lesions/patch_mm_per_px", "normals/pixel_spacing_mm"):
            del h5[name]
    with Store(path) as s:
        assert s.lesion_sizes_mm().shape == (0, 2) and np.isnan(s.patch_mm_per_px()).all()
        assert np.isnan(s.normal(0)["pixel_spacing_mm"])


def _dump(path) -> dict:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                a = obj[...]
                out[name] = [x.tolist() if hasattr(x, "tolist") else x for x in a] if a.dtype == object else a
        f.visititems(visit)
    return out


def test_batched_writes_hold_the_same_data_whatever_the_batch(tmp_path, rng, monkeypatch):
    """Rows are staged and written in batches: a flush every 3 rows (with a skipped record
    between) gives the same file contents as one flush at close."""
    from mammosynth.data.records import Marker

    lesions = [_lesion(i, f"P{i // 2}", rng) for i in range(8)]
    normals = [_normal(0, "P100", "L"), _normal(1, "P101", "R")]
    mask = np.zeros((100, 60), bool)
    mask[2:6, 50:58] = True
    normals[1].markers.append(Marker("laterality", "R CC", mask))
    bad = _lesion(99, "P99", rng)
    bad.patch[0, 0] = np.nan

    def write(path):
        with StoreWriter(path, patch_size=16, normal_size=(50, 30), markers=True) as w:
            for i, rec in enumerate(lesions):
                assert w.add(rec)
                if i == 4:
                    assert not w.add(bad)
            for rec in normals:
                assert w.add(rec)

    write(tmp_path / "one.h5")
    monkeypatch.setattr(StoreWriter, "FLUSH_ROWS", 3)
    write(tmp_path / "many.h5")
    a, b = _dump(tmp_path / "one.h5"), _dump(tmp_path / "many.h5")
    assert a.keys() == b.keys() and len(a["lesions/patch"]) == 8
    for k in a:  # byte for byte (NaN spacings included)
        assert (repr(a[k]) == repr(b[k])) if isinstance(a[k], list) else a[k].tobytes() == b[k].tobytes(), k
    with Store(tmp_path / "many.h5") as s:
        assert s.markers() == [{"normal": 1, "kind": "laterality", "text": "R CC", "category": "marker",
                                "bbox": (1, 1, 4, 2), "label": 1}]
        assert s.marker_mask(1)[1:3, 1:5].all() and s.marker_mask(0).sum() == 0


def test_a_failed_batch_write_stops_the_writer(tmp_path, rng, monkeypatch):
    """A batch that cannot be written is not one record's fault: add() raises, close() refuses."""
    import h5py

    monkeypatch.setattr(StoreWriter, "FLUSH_ROWS", 2)
    real = h5py.Dataset.__setitem__

    def broken(self, key, value):
        if self.name == "/lesions/patch":
            raise OSError("disk full")
        real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", broken)
    w = StoreWriter(tmp_path / "d.h5", patch_size=16)
    assert w.add(_lesion(0, "P0", rng))
    with pytest.raises(OSError, match="disk full"):
        w.add(_lesion(1, "P0", rng))
    with pytest.raises(DataError, match="earlier write"):
        w.close()
    w.abort()
    assert not (tmp_path / "d.h5").exists()
