"""Imaging ops: DICOM decoding (LUTs, MONOCHROME1, bit depths), breast mask, laterality, ROI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicom_fixtures import disk, synthetic_breast, truncate, write_dicom, write_image_dicom, write_pgm, write_png
from mammosynth.data.imaging import (
    STORE_OPEN_FRAC,
    breast_mask,
    ellipse_in_box,
    extract_roi,
    flip_to_left,
    is_binary_mask,
    laterality_from_image,
    polygon_mask,
    read_dicom,
    read_image,
    roi_window,
)
from mammosynth.errors import DataError


def test_monochrome2_16bit_round_trip(tmp_path, rng):
    stored = rng.integers(0, 65536, size=(20, 16)).astype(np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored, laterality="L", view="CC", pixel_spacing=0.07)
    img, meta = read_dicom(path)
    assert img.dtype == np.float32 and img.shape == (20, 16)
    np.testing.assert_allclose(img, stored / 65535.0, atol=1e-6)
    assert meta["photometric"] == "MONOCHROME2" and meta["bits_stored"] == 16 and meta["voi"] == "none"
    assert meta["laterality"] == "L" and meta["view"] == "CC" and meta["pixel_spacing_mm"] == pytest.approx(0.07)


def test_monochrome1_is_inverted(tmp_path):
    image = synthetic_breast(40, 32, "L", seed=1)
    path = write_image_dicom(tmp_path / "m1.dcm", image, photometric="MONOCHROME1", bits_stored=12)
    img, meta = read_dicom(path)
    assert meta["photometric"] == "MONOCHROME1"
    np.testing.assert_allclose(img, image, atol=1.0 / 4095 + 1e-6)  # bright tissue stays bright


def test_12_and_8_bit_scale_to_full_range(tmp_path):
    ramp12 = np.linspace(0, 4095, 64).reshape(8, 8)
    img12, _ = read_dicom(write_dicom(tmp_path / "b12.dcm", ramp12, bits_stored=12))
    assert img12.min() == 0.0 and img12.max() == pytest.approx(1.0)
    ramp8 = np.linspace(0, 255, 64).reshape(8, 8)
    img8, _ = read_dicom(write_dicom(tmp_path / "b8.dcm", ramp8, bits_stored=8))
    np.testing.assert_allclose(img8, np.round(ramp8) / 255.0, atol=1e-6)


def test_rescale_slope_intercept(tmp_path):
    stored = np.array([[0, 100], [2000, 4095]], dtype=np.uint16)
    img, _ = read_dicom(write_dicom(tmp_path / "r.dcm", stored, bits_stored=12, rescale=(2.0, -10.0)))
    lo, hi = 0 * 2.0 - 10.0, 4095 * 2.0 - 10.0  # the rescaled BitsStored range
    np.testing.assert_allclose(img, (stored * 2.0 - 10.0 - lo) / (hi - lo), atol=1e-6)


def test_voi_window_linear(tmp_path):
    stored = np.array([[0, 1000, 1500], [2000, 2500, 4095]], dtype=np.uint16)
    img, meta = read_dicom(write_dicom(tmp_path / "w.dcm", stored, bits_stored=12, window=(2000, 1001)))
    assert meta["voi"] == "window"
    # PS3.3 C.11.2.1.2.1: below c - 0.5 - (w - 1)/2 -> 0, above c - 0.5 + (w - 1)/2 -> 1
    assert img[0, 0] == 0.0 and img[0, 1] == 0.0 and img[1, 2] == 1.0 and img[1, 1] == 1.0
    assert img[1, 0] == pytest.approx(0.5, abs=1e-3)
    assert 0.0 < img[0, 2] < 0.5
    raw, meta_raw = read_dicom(tmp_path / "w.dcm", apply_voi=False)
    assert meta_raw["voi"] == "none" and raw[1, 2] == pytest.approx(4095 / 4095)


def test_voi_lut_sequence(tmp_path):
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint16)
    lut = np.array([65535, 40000, 1000, 0])  # an inverting display LUT, 16-bit output
    img, meta = read_dicom(write_dicom(tmp_path / "lut.dcm", stored, bits_stored=12, voi_lut=lut))
    assert meta["voi"] == "lut"
    np.testing.assert_allclose(img, lut[stored] / 65535.0, atol=1e-6)


def test_bad_dicoms_raise_dataerror_naming_the_file(tmp_path):
    good = write_image_dicom(tmp_path / "t.dcm", synthetic_breast(64, 48))
    truncate(good, 0.5)
    with pytest.raises(DataError, match="t.dcm"):
        read_dicom(good)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"this is not a dicom file at all" * 10)
    with pytest.raises(DataError, match="junk.dcm"):
        read_dicom(junk)
    with pytest.raises(DataError, match="nope.dcm: no such file"):
        read_dicom(tmp_path / "nope.dcm")


def test_read_image_raster_formats(tmp_path):
    ramp = np.linspace(0, 4000, 96).reshape(8, 12).astype(np.uint16)  # 12-bit values in a 16-bit PNG
    img = read_image(write_png(tmp_path / "a.png", ramp))
    np.testing.assert_allclose(img, ramp / 4095.0, atol=1e-6)
    pgm = read_image(write_pgm(tmp_path / "b.pgm", np.arange(64).reshape(8, 8) * 4))
    np.testing.assert_allclose(pgm, np.arange(64).reshape(8, 8) * 4 / 255.0, atol=1e-6)
    from PIL import Image

    Image.fromarray(np.full((5, 6), 128, np.uint8)).save(tmp_path / "c.tif")
    tif, meta = read_image(tmp_path / "c.tif", with_meta=True)
    assert tif.shape == (5, 6) and tif[0, 0] == pytest.approx(128 / 255) and meta["rows"] == 5
    with pytest.raises(DataError, match="unsupported image type"):
        (tmp_path / "d.jpg2").write_bytes(b"x")
        read_image(tmp_path / "d.jpg2")


def test_breast_mask_otsu_largest_component_holes_filled():
    img = synthetic_breast(200, 160, "L", seed=2)
    truth = img > 0.1
    img = np.where(truth, img, 0.02 + 0.01 * np.random.default_rng(2).random(img.shape)).astype(np.float32)  # detector noise
    img[90:100, 30:40] = 0.0  # a dark hole inside the breast must be filled
    img[5:8, 150:155] = 0.9  # a bright label outside the breast must be dropped
    m = breast_mask(img)
    assert m[95, 35] and not m[6, 152]
    iou = (m & truth).sum() / (m | truth).sum()
    assert iou > 0.95
    # the block-mean path for large images agrees with full resolution
    m_small = breast_mask(img, work_size=64)
    assert m_small.shape == img.shape and (m_small == m).mean() > 0.97
    assert not breast_mask(np.zeros((20, 20), np.float32)).any()


def test_breast_mask_cuts_a_label_bridged_to_the_breast_by_a_film_strip():
    """Digitised film: a bright film-edge strip joins a label to the breast, so the largest
    Otsu component takes the label in. The opening cuts the strip; the skin line comes back."""
    img = synthetic_breast(200, 160, "L", seed=3)
    truth = img > 0.1
    img = np.where(truth, img, 0.02).astype(np.float32)
    img[10:30, 120:150] = 0.9  # a label in the air...
    img[0:200, 150:153] = 0.8  # ...touching a 3 px film-edge strip that also touches the breast
    img[100:103, 60:153] = 0.8
    plain = breast_mask(img)
    m = breast_mask(img, open_frac=STORE_OPEN_FRAC)
    assert plain[20, 135] and not m[20, 135] and not m[150, 151]  # label and strip out
    assert (m & truth).sum() / (m | truth).sum() > 0.95  # the breast whole, skin line included
    assert not (m & ~plain).any()  # the opening only ever removes


def test_breast_mask_drops_mini_mias_film_labels():
    from conftest import shared_data

    path = shared_data("mini-mias", "mdb111.pgm")  # its label touches the breast through a film strip
    img = read_image(path)
    plain, m = breast_mask(img), breast_mask(img, open_frac=STORE_OPEN_FRAC)
    label = (slice(40, 260), slice(100, 300))  # the "J JM" film label, top left
    assert plain[label].sum() > 1000 and not m[label].any()
    assert 0.03 < (plain & ~m).sum() / plain.sum() < 0.1  # label and strips: a few % of the old mask
    assert 0.3 < m.mean() < 0.9


def test_laterality_and_flip():
    left = synthetic_breast(80, 60, "L", seed=3)
    right = synthetic_breast(80, 60, "R", seed=3)
    assert laterality_from_image(left) == "L" and laterality_from_image(right) == "R"
    np.testing.assert_array_equal(flip_to_left(right, "R"), left)
    assert flip_to_left(left, "L") is left


def test_extract_roi_centred_square_with_context():
    img = synthetic_breast(200, 160, "L", seed=4)
    mask = disk(200, 160, cx=60, cy=100, r=10)  # bbox 21 x 21
    patch, pmask, bbox = extract_roi(img, mask, context=0.3)
    side = math.ceil(21 * 1.6)
    assert bbox == (50, 90, 21, 21)
    assert patch.shape == (side, side) == pmask.shape and patch.dtype == np.float32
    assert pmask.sum() == mask.sum()  # the whole lesion is inside
    ys, xs = np.nonzero(pmask)
    assert abs(ys.mean() - (side - 1) / 2) <= 1 and abs(xs.mean() - (side - 1) / 2) <= 1
    x0, y0, s = roi_window(bbox, img.shape, 0.3)
    np.testing.assert_array_equal(patch, img[y0 : y0 + s, x0 : x0 + s])  # native resolution, no resampling


def test_extract_roi_at_border_shifts_then_pads():
    img = synthetic_breast(100, 80, "L", seed=5)
    edge = disk(100, 80, cx=2, cy=50, r=6)  # lesion touching x = 0
    patch, pmask, _ = extract_roi(img, edge)
    x0, y0, s = roi_window((0, 44, 9, 13), img.shape, 0.3)
    assert x0 == 0  # shifted inside rather than padded
    np.testing.assert_array_equal(patch, img[y0 : y0 + s, 0:s])
    small = synthetic_breast(20, 20, "L", seed=6)
    big = disk(20, 20, 10, 10, 9)
    patch, pmask, _ = extract_roi(small, big)
    side = math.ceil(19 * 1.6)
    assert patch.shape == (side, side) and pmask.sum() == big.sum()
    assert not pmask[0].any() and not pmask[:, 0].any()  # padding is never lesion
    with pytest.raises(DataError, match="empty"):
        extract_roi(img, np.zeros_like(edge))
    with pytest.raises(DataError, match="differs"):
        extract_roi(img, edge[:50])


def test_masks_from_shapes_and_binary_detection():
    e = ellipse_in_box((100, 100), (20, 30, 60, 50))  # 40 x 20 box
    assert abs(e.sum() - math.pi * 20 * 10) / (math.pi * 200) < 0.08
    ys, xs = np.nonzero(e)
    assert xs.min() >= 20 and xs.max() <= 60 and ys.min() >= 30 and ys.max() <= 50
    sq = polygon_mask((50, 50), np.array([[10, 10], [30, 10], [30, 20], [10, 20]]))
    assert sq[15, 20] and not sq[25, 20] and 180 <= sq.sum() <= 231
    assert is_binary_mask(np.where(sq, 255, 0)) and is_binary_mask(np.zeros((4, 4)))
    assert not is_binary_mask(synthetic_breast(30, 30))


def test_breast_mask_on_real_mammograms_separates_air_not_dense_tissue():
    """On real mammograms (air, fat, dense tissue) the mask must hold the fat too."""
    from conftest import shared_data

    for name in ("0_L-CC.png", "0_L-MLO.png"):
        img = read_image(shared_data("reference-mammograms", name))
        m = breast_mask(img)
        assert 0.5 < m.mean() < 0.9, name
        assert np.percentile(img[~m], 99) < 0.1  # what is left out is air
        assert img[m].min() < 0.2  # dark fat near the skin line is inside the mask
        assert laterality_from_image(img) == "L"


def test_breast_mask_matches_the_phantom_outline():
    phantom = pytest.importorskip("mammosynth.phantom")
    b = phantom.render_breast(1, view="MLO", density="B")
    m = breast_mask(b.image)
    assert (m & b.breast_mask).sum() / (m | b.breast_mask).sum() > 0.97


def test_unreadable_values_name_the_file_and_element(tmp_path):
    """A broken exporter's values: a rescale or window that is not a number is a DataError
    naming the file; an unusable PixelSpacing or window width costs no image, only a warning."""
    from dicom_fixtures import set_raw_element

    stored = np.linspace(0, 4095, 64).reshape(8, 8)
    slope = set_raw_element(write_dicom(tmp_path / "s.dcm", stored, bits_stored=12), "RescaleSlope", "1,5")
    with pytest.raises(DataError, match=r"s\.dcm: RescaleSlope '1,5' is not a number"):
        read_dicom(slope)
    zero = set_raw_element(write_dicom(tmp_path / "z.dcm", stored, bits_stored=12, rescale=(0.0, 5.0)), "RescaleSlope", "0")
    with pytest.raises(DataError, match="RescaleSlope is 0"):
        read_dicom(zero)
    spacing = set_raw_element(write_dicom(tmp_path / "p.dcm", stored, bits_stored=12, pixel_spacing=0.07), "PixelSpacing", "abc")
    img, meta = read_dicom(spacing)  # ImagerPixelSpacing is still readable: used, and said so
    assert meta["pixel_spacing_mm"] == pytest.approx(0.07)
    assert meta["warnings"] == [f"{spacing}: PixelSpacing 'abc' is not a number; ImagerPixelSpacing used instead"]
    neg = set_raw_element(write_dicom(tmp_path / "n.dcm", stored, bits_stored=12, pixel_spacing=None), "PixelSpacing", "-0.1\\-0.1")
    assert read_dicom(neg)[1]["pixel_spacing_mm"] is None and "not a positive spacing" in read_dicom(neg)[1]["warnings"][0]
    for width, function in (("0", None), ("0.5", None), ("0", "LINEAR_EXACT")):
        path = write_dicom(tmp_path / f"w{width}{function}.dcm", stored, bits_stored=12, window=(2048, 4096))
        set_raw_element(path, "WindowWidth", width)
        if function:
            set_raw_element(path, "VOILUTFunction", function)
        img, meta = read_dicom(path)
        assert meta["voi"] == "none" and "WindowWidth" in meta["warnings"][0]
        np.testing.assert_allclose(img, np.round(stored) / 4095.0, atol=1e-6)  # the stored range, not a threshold
    exact = set_raw_element(write_dicom(tmp_path / "e.dcm", stored, bits_stored=12, window=(2048, 4096)), "WindowWidth", "0.5")
    set_raw_element(exact, "VOILUTFunction", "LINEAR_EXACT")
    assert read_dicom(exact)[1]["voi"] == "window"  # LINEAR_EXACT allows any width > 0


def test_float_rasters_with_nan(tmp_path):
    from dicom_fixtures import write_float_tiff

    with pytest.raises(DataError, match="no finite pixel values"):
        read_image(write_float_tiff(tmp_path / "nan.tif", np.full((8, 8), np.nan)))
    part = np.linspace(0.0, 2.0, 64, dtype=np.float32).reshape(8, 8)
    part[0, :3] = [np.nan, np.inf, -np.inf]
    img, meta = read_image(write_float_tiff(tmp_path / "part.tif", part), with_meta=True)
    assert np.isfinite(img).all() and img[0, :3].tolist() == [0.0, 0.0, 0.0]
    assert img.max() == pytest.approx(1.0) and "3 of 64 pixels are NaN or infinite" in meta["warnings"][0]
