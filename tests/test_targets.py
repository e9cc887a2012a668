"""Insertion targets: discovery, spacing / laterality / view with their sources, and the
intensity map that must equal the readers' normalisation and invert it."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from mammosynth.data.imaging import read_dicom, read_image
from mammosynth.errors import DataError
from mammosynth.synth.targets import (
    dicom_intensity_map,
    discover_targets,
    laterality_view_from_text,
    probe_targets,
    raster_intensity_map,
    read_target,
)
from tests.dicom_fixtures import synthetic_breast, write_dicom, write_png


def _ramp(h=40, w=30, hi=4095):
    return (np.linspace(0, 1, h * w).reshape(h, w) * hi).round()


@pytest.mark.parametrize("kw", [
    dict(bits_stored=16),
    dict(bits_stored=12),
    dict(bits_stored=12, rescale=(2.0, -100.0)),
    dict(bits_stored=12, window=(2000, 1500)),
    dict(bits_stored=12, photometric="MONOCHROME1"),
    dict(bits_stored=12, photometric="MONOCHROME1", window=(1800, 3000), rescale=(1.0, 10.0)),
    dict(bits_stored=12, voi_lut=np.linspace(0, 65535, 4096)),
])
def test_dicom_map_equals_reader_and_inverts(tmp_path, kw):
    p = write_dicom(tmp_path / "x.dcm", _ramp(), **kw)
    expected, _ = read_dicom(p)
    ds = pydicom.dcmread(p)
    imap = dicom_intensity_map(ds)
    got = imap.forward(ds.pixel_array)
    assert np.allclose(got, expected, atol=1e-5)
    # inverse: every stored value the forward map does not clip comes back exactly
    raw = ds.pixel_array.astype(np.float64)
    back = imap.to_stored(imap.inverse(got))
    unclipped = (got > 1e-4) & (got < 1 - 1e-4)
    assert unclipped.sum() > 100
    assert np.abs(back[unclipped].astype(np.float64) - raw[unclipped]).max() <= 1.0
    assert back.dtype == ds.pixel_array.dtype


@pytest.mark.parametrize("arr", [
    (np.linspace(0, 255, 1200).reshape(40, 30)).astype(np.uint8),
    (np.linspace(0, 4095, 1200).reshape(40, 30)).astype(np.uint16),  # 12-bit values in a 16-bit PNG
    (np.linspace(0, 65535, 1200).reshape(40, 30)).astype(np.uint16),
])
def test_raster_map_equals_reader_and_keeps_bit_depth(tmp_path, arr):
    p = write_png(tmp_path / "x.png", arr)
    imap = raster_intensity_map(arr)
    assert np.allclose(imap.forward(arr), read_image(p), atol=1e-6)
    back = imap.to_stored(imap.inverse(imap.forward(arr)))
    assert back.dtype == arr.dtype and np.array_equal(back, arr)
    assert imap.to_stored(imap.inverse(np.ones(3)))[0] == arr.max()  # a 12-bit image stays 12-bit


def test_discovery_folders_files_and_stores(tmp_path):
    write_png(tmp_path / "a" / "one.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "a" / "masks" / "one.png", np.zeros((8, 8), np.uint8))  # a folder-format mask: skipped
    write_dicom(tmp_path / "a" / "deep" / "IM0001", np.zeros((8, 8)))  # DICOM without a suffix
    (tmp_path / "a" / "notes.txt").write_text("x")
    refs = discover_targets([tmp_path / "a"])
    assert [r.path.name for r in refs] == ["IM0001", "one.png"]
    with pytest.raises(DataError, match="no such file"):
        discover_targets([tmp_path / "missing"])
    with pytest.raises(DataError, match="no DICOM, PNG"):
        (tmp_path / "empty").mkdir()
        discover_targets([tmp_path / "empty"])


def test_spacing_sources_and_refusal(tmp_path):
    write_dicom(tmp_path / "d1.dcm", np.zeros((8, 8)), pixel_spacing=0.07)  # ImagerPixelSpacing
    ds = pydicom.dcmread(tmp_path / "d1.dcm")
    ds.EstimatedRadiographicMagnificationFactor = "1.1"
    ds.save_as(tmp_path / "d2.dcm")
    ds = pydicom.dcmread(tmp_path / "d1.dcm")
    ds.PixelSpacing = ["0.065", "0.065"]
    ds.save_as(tmp_path / "d3.dcm")
    write_png(tmp_path / "p_with_csv.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "spacing.csv").write_text("file,pixel_spacing_mm\np_with_csv.png,0.085\n")
    infos = {i.ref.path.name: i for i in probe_targets(discover_targets([tmp_path]))}
    assert infos["d1.dcm"].spacing_mm == pytest.approx(0.07) and infos["d1.dcm"].spacing_source == "dicom:ImagerPixelSpacing"
    assert infos["d2.dcm"].spacing_mm == pytest.approx(0.07 / 1.1) and "Magnification" in infos["d2.dcm"].spacing_source
    assert infos["d3.dcm"].spacing_source == "dicom:PixelSpacing" and infos["d3.dcm"].spacing_mm == pytest.approx(0.065)
    assert infos["p_with_csv.png"].spacing_mm == pytest.approx(0.085) and infos["p_with_csv.png"].spacing_source == "csv:pixel_spacing_mm"
    # an image without any spacing is refused, naming the file and the way out; the fallback fixes it
    write_png(tmp_path / "q.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"q\.png: pixel spacing unknown.*--pixel-spacing"):
        probe_targets(discover_targets([tmp_path]))
    q = [i for i in probe_targets(discover_targets([tmp_path]), 0.1) if i.ref.path.name == "q.png"][0]
    assert q.spacing_mm == 0.1 and q.spacing_source == "--pixel-spacing"


def test_laterality_and_view_sources(tmp_path):
    assert laterality_view_from_text("Mass-Test_P_00173_LEFT_CC") == ("L", "CC")
    assert laterality_view_from_text("0_L-MLO") == ("L", "MLO")
    assert laterality_view_from_text("case7_rmlo") == ("R", "MLO")
    assert laterality_view_from_text("mdb001") == (None, None)
    img = synthetic_breast(60, 50, "R", seed=0)
    write_dicom(tmp_path / "a.dcm", img * 4000, bits_stored=12, laterality="R", view="CC")
    p = write_dicom(tmp_path / "b.dcm", img * 4000, bits_stored=12)
    ds = pydicom.dcmread(p)
    ds.PatientID = "Mass-Test_P_00001_RIGHT_MLO"  # CBIS-DDSM writes the view only here
    ds.save_as(p)
    write_png(tmp_path / "c_R_MLO.png", (img * 255).astype(np.uint8))
    write_png(tmp_path / "d.png", (img * 255).astype(np.uint8))
    infos = {i.ref.path.name: i for i in probe_targets(discover_targets([tmp_path]), 0.1)}
    assert (infos["a.dcm"].laterality_source, infos["a.dcm"].view_source) == ("dicom:ImageLaterality", "dicom:ViewPosition")
    assert (infos["b.dcm"].laterality, infos["b.dcm"].view, infos["b.dcm"].view_source) == ("R", "MLO", "dicom:PatientID")
    assert (infos["c_R_MLO.png"].laterality, infos["c_R_MLO.png"].laterality_source) == ("R", "file name")
    assert infos["d.png"].laterality is None
    t = read_target(infos["d.png"])  # falls back to the image: the tissue is on the right
    assert (t.info.laterality, t.info.laterality_source, t.flipped) == ("R", "image content", True)
    assert t.stored.dtype == np.uint8 and t.stored.flags.writeable
