"""Insertion into normal mammograms: placement rules, orientation, COCO output, determinism.

The mask DCGAN and infilling GAN are replaced by small deterministic stand-ins here (their
own tests train the real networks); an end-to-end test with trained runs is in test_demo.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mammosynth.data.birads import Label
from mammosynth.data.records import LesionRecord, MammogramRecord
from mammosynth.data.store import StoreWriter
from mammosynth.synth.insert import SizeModel, feather_weights, insert_lesions, place_lesion


class _Masks:
    """Stand-in for MaskDCGAN.sample_masks: a seeded ellipse in a 32x32 patch."""

    def sample_masks(self, n, seed):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:32, :32]
        out = []
        for _ in range(n):
            a, b = rng.uniform(6, 10, size=2)
            out.append(((yy - 16) / a) ** 2 + ((xx - 16) / b) ** 2 <= 1)
        return np.stack(out)


class _Infill:
    """Stand-in for InfillGAN.infill: brightens the masked region of the tissue."""

    def __init__(self):
        self.nets = nn.ModuleDict({"g": nn.Linear(1, 1)})

    def infill(self, tissue, mask, generator=None):
        noise = torch.rand(tissue.shape, generator=generator) * 0.02
        return (tissue + 0.6 * mask + noise).clamp(-1, 1)


def _store(path, lateralities=("L", "R", "L", "R"), radii=(95, 140)):
    with StoreWriter(path, patch_size=32, normal_size=(200, 160)) as w:
        rng = np.random.default_rng(0)
        for i in range(6):
            m = np.zeros((40, 40), bool)
            m[10:30, 8:32] = True
            w.add(LesionRecord("t", f"L{i}", f"P{i}", rng.random((40, 40)).astype(np.float32), m,
                               Label("OVAL", "oval", "exact"), Label(None, None, "missing"), Label(None, None, "missing"),
                               lesion_size=(int(rng.integers(18, 30)), int(rng.integers(18, 30)))))
        yy, xx = np.mgrid[:200, :160]
        for i, lat in enumerate(lateralities):
            breast = ((yy - 100) / radii[0]) ** 2 + (xx / radii[1]) ** 2 <= 1  # chest wall at x = 0
            img = np.where(breast, 0.4, 0.0).astype(np.float32)
            if lat == "R":
                img, breast = img[:, ::-1].copy(), breast[:, ::-1].copy()
            w.add(MammogramRecord("t", f"N{i}", f"Q{i}", img, breast, laterality=lat))


def test_insert_writes_valid_coco_and_restores_orientation(tmp_path):
    from pycocotools.coco import COCO

    data = tmp_path / "d.h5"
    _store(data)
    out = tmp_path / "ins"
    rep = insert_lesions(_Masks(), _Infill(), data, 4, out, seed=3, progress=False)
    assert rep.written == 4 and not rep.failed
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) == 4
    manifest = (out / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 5
    for img in coco.loadImgs(coco.getImgIds()):
        ann = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))[0]
        m = coco.annToMask(ann).astype(bool)
        x, y, w, h = ann["bbox"]
        assert m.sum() == ann["area"] and 0 <= x and x + w <= img["width"] and y + h <= img["height"]
        extra = json.loads([r for r in manifest if img["file_name"] in r][0].split(",", 14)[-1].strip('"').replace('""', '"'))
        cx = x + w / 2
        # X ~ U(w/10, w/2) on the left-oriented breast; right breasts are flipped back
        if extra["flipped"]:
            assert cx > img["width"] / 2 - 2
        else:
            assert cx < img["width"] / 2 + 2
        from mammosynth.synth.writer import load_png

        pix = load_png(out / img["file_name"])
        assert pix[m].mean() > pix[~m & (pix > 0.1)].mean() + 0.2  # the lesion is visible


def test_insert_is_deterministic(tmp_path):
    data = tmp_path / "d.h5"
    _store(data)
    insert_lesions(_Masks(), _Infill(), data, 3, tmp_path / "a", seed=7, progress=False)
    insert_lesions(_Masks(), _Infill(), data, 3, tmp_path / "b", seed=7, progress=False)
    for f in sorted((tmp_path / "a" / "images").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / "images" / f.name).read_bytes()
    a = json.loads((tmp_path / "a" / "annotations.json").read_text())["annotations"]
    b = json.loads((tmp_path / "b" / "annotations.json").read_text())["annotations"]
    assert [x["bbox"] for x in a] == [x["bbox"] for x in b]


def test_unplaceable_mask_is_reported(tmp_path):
    data = tmp_path / "d.h5"
    _store(data, radii=(8, 12))  # a sliver of breast that no lesion of ~25 px fits into
    rep = insert_lesions(_Masks(), _Infill(), data, 2, tmp_path / "o", seed=0, max_tries=5, max_resamples=2, progress=False)
    assert rep.written == 0 and len(rep.failed) == 2
    assert "no position inside the breast" in rep.failed[0]["reason"]
    saved = json.loads((tmp_path / "o" / "insert_report.json").read_text())
    assert len(saved["failed"]) == 2


def test_placement_follows_seed001_ranges():
    rng = np.random.default_rng(0)
    breast = np.ones((400, 300), bool)
    lesion = np.ones((10, 10), bool)
    centres = []
    for _ in range(300):
        y0, x0, _ = place_lesion(breast, lesion, rng, (400, 300), max_tries=5)
        centres.append((x0 + 5, y0 + 5))
    xs, ys = np.array(centres).T
    assert xs.min() >= 300 / 10 - 1 and xs.max() <= 300 / 2 + 1
    assert ys.min() >= 400 / 4 - 1 and ys.max() <= 3 * 400 / 4 + 1


def test_size_model_and_feather():
    sizes = np.array([[20, 22], [30, 28], [25, 26], [40, 35]])
    sm = SizeModel.fit(sizes)
    assert np.allclose(sm.mean, sizes.mean(0))
    draws = np.array([sm.sample(np.random.default_rng(i), 4, 100) for i in range(200)])
    assert abs(draws[:, 0].mean() - sm.mean[0]) < 3
    f = feather_weights((20, 30), 5)
    assert f[10, 15] == 1.0 and f[0, 0] < 0.2 and f.shape == (20, 30)
    with pytest.raises(Exception, match="at least 2"):
        SizeModel.fit(np.array([[1, 2]]))
