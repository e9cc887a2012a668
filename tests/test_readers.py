"""Readers on fixtures in each source's real format, the label mappings, and the real CBIS CSVs."""

from __future__ import annotations

import csv
import inspect
from collections import Counter

import numpy as np
import pytest

import dicom_fixtures as F
from conftest import shared_data
from mammosynth.data import birads
from mammosynth.data.imaging import mask_bbox
from mammosynth.data.readers import SOURCES, get_reader, iter_records, label_report
from mammosynth.data.records import LesionRecord, MammogramRecord, SkipRecord
from mammosynth.errors import ConfigError

CBIS_CSVS = (
    "mass_case_description_train_set.csv",
    "mass_case_description_test_set.csv",
    "calc_case_description_train_set.csv",
    "calc_case_description_test_set.csv",
)


def _by_id(records):
    return {r.source_id: r for r in records}


@pytest.fixture(scope="module")
def cbis(tmp_path_factory):
    root = tmp_path_factory.mktemp("cbis")
    return root, F.write_cbis_fixture(root)


@pytest.fixture(scope="module")
def mias(tmp_path_factory):
    root = tmp_path_factory.mktemp("mias")
    return root, F.write_mias_fixture(root)


# -- CBIS-DDSM ---------------------------------------------------------------------------
def test_cbis_fixture_records_and_skips(cbis):
    root, csvs = cbis
    gen = iter_records("cbis-ddsm", root, [csvs["mass_train"], csvs["mass_test"], csvs["calc_train"]])
    assert inspect.isgenerator(gen)  # streams
    recs = _by_id(gen)
    lesions = {k: r for k, r in recs.items() if isinstance(r, LesionRecord)}
    skips = {k: r for k, r in recs.items() if isinstance(r, SkipRecord)}
    assert set(lesions) == {
        "Mass-Training_P_00001_LEFT_CC_1", "Mass-Training_P_00004_LEFT_CC_1", "Mass-Training_P_00059_LEFT_CC_1",
        "Mass-Training_P_00059_LEFT_MLO_1", "Mass-Test_P_00016_LEFT_CC_1",
    }
    good = lesions["Mass-Training_P_00001_LEFT_CC_1"]
    assert (good.shape.value, good.shape.status, good.shape.raw) == ("irregular", "combined", "IRREGULAR-ARCHITECTURAL_DISTORTION")
    assert good.margin.value == "spiculated" and good.pathology.value == "malignant"
    # the official training set: train or val, never test
    assert (good.patient_id, good.laterality, good.view, good.density, good.split_hint) == ("P_00001", "L", "CC", "3", "trainval")
    truth = F.disk(120, 96, 0.35 * 96, 60, 9)
    x, y, w, h = mask_bbox(truth)
    assert good.bbox == (x, y, w, h) and good.lesion_size == (h, w)
    assert good.patch.shape[0] == good.patch.shape[1] == int(np.ceil(max(h, w) * 1.6))
    assert good.mask.sum() == truth.sum()
    assert good.extra["mask_path"].endswith("000001.dcm")
    # ARCHITECTURAL_DISTORTION: a lesion with no shape, never dropped; MONOCHROME1 read as bright lesion
    nm = lesions["Mass-Training_P_00004_LEFT_CC_1"]
    assert nm.shape.value is None and nm.shape.status == "non_mass" and nm.margin.value == "ill_defined"
    assert nm.patch[nm.mask].mean() > nm.patch[~nm.mask].mean()
    # crop and mask both 000000.dcm in different folders, swapped: found by content
    clash = lesions["Mass-Training_P_00059_LEFT_CC_1"]
    assert "_1/1.3.6.1.4.1.9590.100.1.2.48879868112616314014628722363459317695" in clash.extra["mask_path"]
    assert clash.mask.sum() == good.mask.sum()
    assert lesions["Mass-Training_P_00059_LEFT_MLO_1"].extra["mask_path"].endswith("1-2.dcm")  # other uid folders
    assert lesions["Mass-Test_P_00016_LEFT_CC_1"].split_hint == "test"
    reasons = {k: s.reason for k, s in skips.items()}
    assert "cannot decode pixel data" in reasons["Mass-Training_P_00001_LEFT_MLO_1"]
    assert "000000.dcm" in reasons["Mass-Training_P_00001_LEFT_MLO_1"]  # names the file
    assert reasons["Mass-Training_P_00004_RIGHT_MLO_1"].startswith("ROI mask size (128, 96) differs from image size (120, 96)")
    assert reasons["Mass-Training_P_00009_RIGHT_CC_1"] == "the lesion mask is empty"
    assert "not found" in reasons["Mass-Training_P_00009_RIGHT_MLO_1"]
    assert reasons["Calc-Training_P_00005_RIGHT_CC_1"] == "calcification (not a mass)"


def test_cbis_calcifications_on_request(cbis):
    root, csvs = cbis
    (rec,) = list(iter_records("cbis-ddsm", root, [csvs["calc_train"]], include_calcifications=True))
    assert isinstance(rec, LesionRecord) and rec.shape.status == "non_mass" and rec.morphology.raw == "AMORPHOUS"
    assert rec.laterality == "R" and rec.density == "3"  # the calc CSV's "breast density" header


def test_cbis_reader_survives_every_real_row():
    """All four real CSVs through the reader with no images: every row is a SkipRecord with a reason."""
    d = shared_data("cbis-ddsm-csv")
    paths = [d / n for n in CBIS_CSVS]
    n_rows = sum(sum(1 for _ in csv.DictReader(open(p, newline=""))) for p in paths)
    reasons = Counter(r.reason for r in iter_records("cbis-ddsm", d, paths))
    assert sum(reasons.values()) == n_rows
    assert reasons["calcification (not a mass)"] == 1546 + 326
    assert reasons["full mammogram file not found under --root"] == 1318 + 378


def test_label_report_matches_the_real_csvs_exactly():
    d = shared_data("cbis-ddsm-csv")
    for name in CBIS_CSVS:
        rows = list(csv.DictReader(open(d / name, newline="")))
        rep = label_report("cbis-ddsm", [d / name])
        assert rep["rows"] == len(rows)
        assert rep["pathology"]["raw"] == dict(Counter(r["pathology"] for r in rows))
        if name.startswith("mass"):
            assert rep["shape"]["raw"] == dict(Counter(r["mass shape"] for r in rows))
            assert rep["margin"]["raw"] == dict(Counter(r["mass margins"] for r in rows))
            assert rep["unknown"] == []  # every raw value is covered by the mapping
            assert sum(rep["shape"]["mapped"].values()) == len(rows)
    rep = label_report("cbis-ddsm", [d / CBIS_CSVS[0]])
    shape, margin = rep["shape"]["raw"], rep["margin"]["raw"]
    assert (shape["IRREGULAR"], shape["OVAL"], shape["LOBULATED"], shape["ROUND"], shape["NA"]) == (351, 321, 305, 123, 4)
    assert (margin["CIRCUMSCRIBED"], margin["SPICULATED"], margin["NA"]) == (305, 281, 43)
    assert {"raw": "NA", "status": "missing", "count": 43} in rep["margin"]["unmapped"]
    assert rep["shape"]["mapped"]["irregular"] == 351 + 45 + 5 + 2 + 1  # + combined values whose worst part is irregular
    assert rep["kinds"] == {"mass": 1318 - 145, "non_mass": 145}


# -- label mappings ----------------------------------------------------------------------
def test_source_mappings():
    f = birads.map_mias_class("CIRC")
    assert (f.kind, f.margin.value, f.shape.value, f.shape.status) == ("mass", "circumscribed", None, "missing")
    assert birads.map_mias_class("MISC").margin.value == "ill_defined"
    assert birads.map_mias_class("SPIC").margin.value == "spiculated"
    assert birads.map_mias_class("ARCH").kind == "non_mass" and birads.map_mias_class("ASYM").kind == "non_mass"
    assert birads.map_mias_class("CALC").kind == "calcification" and birads.map_mias_class("NORM").kind == "normal"
    assert birads.map_mias_class("XYZ").kind == "unknown"
    assert birads.map_inbreast_name("Mass").kind == "mass"
    sr = birads.map_inbreast_name("Spiculated Region")
    assert sr.kind == "mass" and sr.margin.value == "spiculated" and sr.margin.raw == "Spiculated Region"
    assert birads.map_inbreast_name("Distortion").kind == "non_mass" and birads.map_inbreast_name("Asymmetry").kind == "non_mass"
    assert birads.map_inbreast_name("Cluster").kind == "calcification" == birads.map_inbreast_name("Calcification").kind
    assert birads.map_inbreast_name("Point 1").kind == "unknown"
    assert birads.parse_vindr_categories("['Mass', 'Suspicious Calcification']") == ["Mass", "Suspicious Calcification"]
    assert birads.map_vindr_categories("['Suspicious Calcification', 'Mass']").kind == "mass"
    assert birads.map_vindr_categories("['No Finding']").kind == "normal"
    assert birads.map_vindr_category("Focal Asymmetry").kind == "non_mass"
    assert birads.map_vindr_category("Skin Thickening").kind == "other"
    assert birads.map_term("Ill-Defined", birads.MARGINS).value == "ill_defined"
    assert birads.map_term("NA", birads.SHAPES).status == "missing"
    assert birads.map_term("starry", birads.SHAPES).status == "unknown"  # no exception
    with pytest.raises(ConfigError):
        get_reader("ddsm-old")
    assert set(SOURCES) == {"cbis-ddsm", "inbreast", "mias", "vindr", "folder"}


# -- mini-MIAS ---------------------------------------------------------------------------
def test_mias_reader(mias):
    root, info = mias
    recs = _by_id(iter_records("mias", root, [info]))
    m1 = recs["mdb001"]
    assert isinstance(m1, LesionRecord) and m1.margin.value == "circumscribed" and m1.pathology.value == "benign"
    # origin at the bottom-left: centre (535, 425) is image row 1023 - 425
    x, y, w, h = m1.bbox
    assert abs(x + (w - 1) / 2 - 535) <= 1 and abs(y + (h - 1) / 2 - (1023 - 425)) <= 1 and w == h == 2 * 197 - 1
    assert m1.patient_id == recs["mdb002"].patient_id == "mias001"  # left/right pair
    assert isinstance(recs["mdb003"], MammogramRecord) and recs["mdb003"].density == "D"
    assert {"mdb005_1", "mdb005_2"} <= set(recs)  # repeated REFNUM: two lesions of one image
    assert recs["mdb005_1"].patient_id == "mias003" and recs["mdb005_1"].bbox != recs["mdb005_2"].bbox
    assert recs["mdb059"].reason.startswith("no lesion coordinates")
    assert recs["mdb209"].reason == "calcification (not a mass)"
    assert recs["mdb115"].shape.status == "non_mass" and recs["mdb115"].pathology.value == "malignant"
    assert recs["mdb184"].margin.value == "spiculated" and recs["mdb184"].pixel_spacing_mm == 0.2
    no_normals = _by_id(iter_records("mias", root, [info], include_normals=False))
    assert no_normals["mdb003"].reason == "normal image (normals not requested)"  # listed, not silently dropped
    rep = label_report("mias", [info])
    assert rep["rows"] == 9 and rep["kinds"]["normal"] == 1 and rep["margin"]["mapped"]["circumscribed"] == 5


# -- INbreast ----------------------------------------------------------------------------
def test_inbreast_reader(tmp_path):
    csv_path = F.write_inbreast_fixture(tmp_path)
    recs = _by_id(iter_records("inbreast", tmp_path, [csv_path]))
    mass = recs["22678622_roi0"]
    assert isinstance(mass, LesionRecord) and mass.extra["mask_kind"] == "polygon"
    assert mass.patient_id == "61b13c59bcba149e" and mass.laterality == "L" and mass.view == "CC" and mass.density == "2"
    x, y, w, h = mass.bbox
    assert abs(x + w / 2 - 35) <= 1.5 and abs(y + h / 2 - 60) <= 1.5 and 18 <= w <= 22
    spic = recs["22678622_roi1"]
    assert spic.margin.value == "spiculated" and spic.shape.value is None
    assert recs["22678622_roi2"].reason == "calcification (not a mass)"
    assert "Point 1" in recs["22678622_roi3"].reason
    normal = recs["22678646"]
    assert isinstance(normal, MammogramRecord) and normal.laterality == "R" and normal.breast_mask.any()
    calc_only = recs["24055274"]
    assert isinstance(calc_only, MammogramRecord) and calc_only.extra["other_findings"] == ["Cluster"]
    assert calc_only.view == "MLO"
    rep = label_report("inbreast", [tmp_path / "AllXML"])
    assert rep["rows"] == 5 and rep["kinds"] == {"mass": 2, "calcification": 2, "unknown": 1}
    assert rep["unknown"] == ["Point 1"]


# -- VinDr -------------------------------------------------------------------------------
def test_vindr_reader(tmp_path):
    csv_path = F.write_vindr_fixture(tmp_path)
    recs = _by_id(iter_records("vindr", tmp_path, [csv_path]))
    mass = recs["img_mass_0"]
    assert isinstance(mass, LesionRecord) and mass.extra["mask_kind"] == "ellipse_from_box"
    assert mass.split_hint == "trainval" and mass.patient_id == "s1" and mass.density == "C"
    assert mass.bbox[0] >= 20 and mass.bbox[0] + mass.bbox[2] <= 46 and mass.lesion_size[0] <= 30
    assert mass.patch[mass.mask].size == mass.mask.sum()
    assert mass.shape.status == "missing" and mass.extra["finding_birads"] == "BI-RADS 4"
    assert recs["img_mass_1"].reason == "calcification (not a mass)"
    two = recs["img_two_0"]
    assert isinstance(two, LesionRecord) and two.split_hint == "test" and two.laterality == "R"
    assert "not a mass finding" in recs["img_skin_0"].reason
    normal = recs["img_normal"]
    assert isinstance(normal, MammogramRecord) and normal.split_hint == "trainval" and normal.view == "MLO"
    # MONOCHROME1 with a window: tissue is bright after inversion
    assert normal.image[normal.breast_mask].mean() > normal.image[~normal.breast_mask].mean() + 0.2


# -- folder ------------------------------------------------------------------------------
def test_folder_reader(tmp_path):
    labels = F.write_folder_fixture(tmp_path)
    recs = _by_id(iter_records("folder", tmp_path, [labels]))
    case1 = recs["case1"]
    assert (case1.shape.value, case1.margin.value, case1.pathology.value) == ("oval", "ill_defined", "malignant")
    assert case1.patient_id == "pA" and case1.view == "CC" and case1.lesion_size == (17, 17)
    crop = recs["crop2"]  # no full image: the whole crop is the patch
    assert isinstance(crop, LesionRecord) and crop.extra["crop"] == "whole_image" and crop.patch.shape == (30, 30)
    assert isinstance(recs["normal3"], MammogramRecord) and recs["normal3"].laterality == "R"
    assert recs["weird4"].reason.startswith("unknown label: shape 'starry'")
    assert recs["gone5"].reason == "image file not found in images/"
    rep = label_report("folder", [labels])
    assert rep["unknown"] == ["starry"] and rep["kinds"]["normal"] == 1


# -- physical scale (store format 2) -----------------------------------------------------
def test_every_reader_keeps_the_source_pixel_spacing(tmp_path, cbis, mias):
    """DICOM PixelSpacing / ImagerPixelSpacing (the fixtures write 0.1 mm), mini-MIAS 0.2 mm,
    and the folder format's pixel_spacing_mm column for rasters, which carry none."""
    root, csvs = cbis
    kept = [r for r in iter_records("cbis-ddsm", root, [csvs["mass_train"], csvs["mass_test"]]) if isinstance(r, LesionRecord)]
    assert kept and all(r.pixel_spacing_mm == pytest.approx(0.1) for r in kept)
    root, info = mias
    assert {r.pixel_spacing_mm for r in iter_records("mias", root, [info]) if not isinstance(r, SkipRecord)} == {0.2}
    for source, write in (("inbreast", F.write_inbreast_fixture), ("vindr", F.write_vindr_fixture)):
        d = tmp_path / source
        recs = [r for r in iter_records(source, d, [write(d)]) if not isinstance(r, SkipRecord)]
        assert recs and all(r.pixel_spacing_mm == pytest.approx(0.1) for r in recs), source
    d = tmp_path / "folder"
    labels = F.write_folder_fixture(d)
    lines = labels.read_text().splitlines()
    spacing = ["pixel_spacing_mm", "0.05", "", "", "bad", ""]  # per line: header, case1, crop2, normal3, weird4, gone5
    labels.write_text("\n".join(f"{line},{s}" for line, s in zip(lines, spacing)) + "\n")
    recs = _by_id(iter_records("folder", d, [labels]))
    assert recs["case1"].pixel_spacing_mm == pytest.approx(0.05)  # a PNG: the column
    assert recs["crop2"].pixel_spacing_mm is None  # a TIFF without the column: unknown
    assert recs["normal3"].pixel_spacing_mm == pytest.approx(0.1)  # a DICOM: its own
    labels.write_text(labels.read_text().replace("case1.png,pA,Oval,Ill-Defined,malignant,L,CC,lesion,0.05",
                                                 "case1.png,pA,Oval,Ill-Defined,malignant,L,CC,lesion,-1"))
    case1 = _by_id(iter_records("folder", d, [labels]))["case1"]
    assert case1.pixel_spacing_mm is None and "not a positive number" in case1.warnings[0]
