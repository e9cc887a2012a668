"""The synthetic-set writer: COCO loads in pycocotools, manifest columns, PNG and DICOM round trips."""

from __future__ import annotations

import csv
import json

import numpy as np
import pydicom
import pytest

from mammosynth.synth.writer import Lesion, SyntheticSetWriter, load_png, mask_bbox


def _mask(h=40, w=50):
    m = np.zeros((h, w), bool)
    m[5:15, 10:30] = True
    return m


def test_coco_manifest_and_images(tmp_path):
    from pycocotools.coco import COCO

    img = np.linspace(0, 1, 40 * 50, dtype=np.float32).reshape(40, 50)
    with SyntheticSetWriter(tmp_path, method="test", run="r1", dicom=True) as w:
        w.add(img, [Lesion(_mask(), shape="oval", margin="spiculated")], seed=3, source_ids=["a", "b"], weights=[0.25, 0.75])
        w.add(img)  # an image without a lesion
    coco = COCO(str(tmp_path / "annotations.json"))
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert ann["bbox"] == [10.0, 5.0, 20.0, 10.0] and ann["area"] == 200
    assert (coco.annToMask(ann) == _mask()).all()
    assert ann["attributes"]["margin"] == "spiculated" and ann["attributes"]["seed"] == 3
    rows = list(csv.DictReader(open(tmp_path / "manifest.csv")))
    assert len(rows) == 2 and rows[0]["weights"] == "0.25;0.75" and rows[0]["source_ids"] == "a;b"
    back = load_png(tmp_path / rows[0]["file"])
    assert np.abs(back - img).max() < 1 / 65535 + 1e-6
    ds = pydicom.dcmread(tmp_path / "dicom" / "test_000001.dcm")
    assert "SYNTHETIC" in ds.ImageType and ds.BitsStored == 16
    assert np.abs(ds.pixel_array / 65535.0 - img).max() < 1e-4


def test_mask_shape_mismatch_is_refused(tmp_path):
    with SyntheticSetWriter(tmp_path, method="t") as w, pytest.raises(ValueError, match="differs"):
        w.add(np.zeros((10, 10)), [Lesion(np.ones((5, 5), bool))])


def test_partial_set_is_kept_after_an_error(tmp_path):
    with pytest.raises(RuntimeError):
        with SyntheticSetWriter(tmp_path, method="t") as w:
            w.add(np.zeros((8, 8)), [Lesion(_mask(8, 8) | True)])
            raise RuntimeError("crash")
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert len(coco["images"]) == 1
    assert mask_bbox(np.zeros((3, 3), bool)) is None


def test_rle_from_the_bounding_box_equals_pycocotools():
    """mask_to_rle counts runs inside the mask's box only; it must equal pycocotools' own encoding."""
    from pycocotools import mask as mask_utils

    from mammosynth.synth.writer import mask_to_rle

    rng = np.random.default_rng(0)
    for i in range(400):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        m = rng.random((h, w)) < rng.random()
        if i % 3 == 0:  # a compact blob somewhere, with empty columns either side
            m[:] = False
            m[rng.integers(0, h): rng.integers(0, h) + 3, rng.integers(0, w): rng.integers(0, w) + 4] = True
        if i % 11 == 0:
            m[:] = i % 2 == 0
        ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        ref["counts"] = ref["counts"].decode("ascii")
        assert mask_to_rle(m) == ref
