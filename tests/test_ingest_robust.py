"""Ingest survives any one bad file (issue #11, part 4).

Every reader (cbis-ddsm, inbreast, mias, vindr, folder) and the store writer turn whatever
goes wrong with ONE record into a skip row naming the file and the reason, and the ingest
goes on with the rest. Silent oddities become skip rows or warnings (``kind`` column of
``FILE.skips.csv``, ``warnings`` in the summary).
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import dicom_fixtures as F
from mammosynth.data import store as store_mod
from mammosynth.data.ingest import ingest
from mammosynth.data.readers import iter_records
from mammosynth.data.records import LesionRecord, MammogramRecord, SkipRecord
from mammosynth.data.store import Store, StoreWriter
from mammosynth.errors import DataError

SOURCES = ("folder", "inbreast", "vindr", "cbis-ddsm")


def _run(source, root, csvs, tmp_path, **kw):
    """Ingest into tmp_path/out.h5; returns (summary, skip rows, warning rows, store path)."""
    out = tmp_path / "out.h5"
    summary = ingest(source, root, csvs, out, patch_size=16, normal_size=(64, 52), progress=False, **kw)
    rows = list(csv.DictReader(open(tmp_path / "out.skips.csv", newline="", encoding="utf-8")))
    skips = [r for r in rows if r.get("kind", "skipped") == "skipped"]
    warnings = [r for r in rows if r.get("kind") == "warning"]
    return summary, skips, warnings, out


def _fixture(source, root):
    """(csv paths, a DICOM of that source's fixture, the source id its skip row carries)."""
    if source == "folder":
        return [F.write_folder_fixture(root)], root / "images" / "normal3.dcm", "normal3"
    if source == "inbreast":
        csv_path = F.write_inbreast_fixture(root)
        return [csv_path], next((root / "AllDICOMs").glob("22678622_*.dcm")), "22678622"
    if source == "vindr":
        return [F.write_vindr_fixture(root)], root / "images" / "s1" / "img_mass.dicom", "img_mass_0"
    paths = F.write_cbis_fixture(root)
    full = root / F._paths(F.CBIS_MASS_TRAIN_ROWS["good"])[0]
    return [paths["mass_train"], paths["mass_test"]], full, "Mass-Training_P_00001_LEFT_CC_1"


def _row(rows, source_id):
    found = [r for r in rows if r["source_id"] == source_id]
    assert found, f"no row for {source_id} in {[r['source_id'] for r in rows]}"
    return found[0]


# -- DICOM values that are not numbers ----------------------------------------------------
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("elements", [{"RescaleSlope": "abc"}, {"WindowCenter": "abc", "WindowWidth": "4096"}],
                         ids=["RescaleSlope", "WindowCenter"])
def test_non_numeric_dicom_value_skips_that_record_only(tmp_path, source, elements):
    root = tmp_path / "data"
    csvs, dcm, sid = _fixture(source, root)
    for keyword, text in elements.items():
        F.set_raw_element(dcm, keyword, text)
    summary, skips, _, out = _run(source, root, csvs, tmp_path)
    bad = _row(skips, sid)
    keyword = next(iter(elements))
    assert keyword in bad["reason"] and "'abc'" in bad["reason"] and dcm.name in bad["reason"] + bad["path"]
    assert summary.n_kept >= 1  # the good records of the same ingest are in the store
    with Store(out) as s:
        assert sid not in set(s.h5["lesions/source_id"].asstr()[...]) | set(s.h5["normals/source_id"].asstr()[...])


@pytest.mark.parametrize("source", SOURCES)
def test_non_numeric_pixel_spacing_keeps_the_image_with_unknown_spacing_and_warns(tmp_path, source):
    root = tmp_path / "data"
    csvs, dcm, sid = _fixture(source, root)
    F.set_raw_element(dcm, "PixelSpacing", "abc\\x")
    F.set_raw_element(dcm, "ImagerPixelSpacing", "abc\\x")  # no readable fallback either
    summary, skips, warnings, out = _run(source, root, csvs, tmp_path)
    assert sid not in {r["source_id"] for r in skips}
    warn = [w for w in warnings if "PixelSpacing" in w["reason"]]
    assert warn and dcm.name in warn[0]["reason"] + warn[0]["path"]
    assert summary.n_warnings >= 1
    with Store(out) as s:
        for group in ("lesions", "normals"):
            ids = list(s.h5[f"{group}/source_id"].asstr()[...])
            kept = [i for i, x in enumerate(ids) if x.split("_roi")[0] == sid.split("_roi")[0]]
            for i in kept:
                assert math.isnan(float(s.h5[f"{group}/pixel_spacing_mm"][i]))


def test_zero_window_width_is_ignored_with_a_warning(tmp_path):
    """WindowWidth 0 is not a window (PS3.3 C.11.2.1.2 asks for >= 1): the image is read on
    its full stored range instead of being thresholded into a binary picture, and said so."""
    root = tmp_path / "data"
    csvs, dcm, sid = _fixture("vindr", root)
    F.set_raw_element(dcm, "WindowWidth", "0")
    summary, skips, warnings, out = _run("vindr", root, csvs, tmp_path)
    warn = [w for w in warnings if "WindowWidth" in w["reason"]]
    assert warn and warn[0]["source_id"] == sid
    with Store(out) as s:
        i = list(s.h5["lesions/source_id"].asstr()[...]).index(sid)
        patch = s.lesions([i]).patch[0]
    assert np.mean((patch == 0) | (patch == 1)) < 0.2  # grey levels, not a thresholded 0/1 image


# -- INbreast ROI files that are not what OsiriX writes ----------------------------------
def _roi(name="Mass", index=0):
    pts = F.circle_points(35, 60, 10)
    return {"Name": name, "IndexInImage": index, "NumberOfPoints": len(pts),
            "Point_px": [f"({x:.6f}, {y:.6f})" for x, y in pts]}


@pytest.mark.parametrize("plist", [
    [{"Images": [{"ROIs": [_roi()]}]}],  # root is a list
    {"Images": ["not a dict"]},
    {"Images": {"0": {"ROIs": [_roi()]}}},  # Images is a dict, not a list
    {"Images": [{"ROIs": ["not a dict"]}]},
    {"Images": [{"ROIs": {"Name": "Mass"}}]},
    {"Images": [{"ROIs": [_roi(index="abc")]}]},
], ids=["root-list", "image-str", "images-dict", "roi-str", "rois-dict", "index-str"])
def test_malformed_inbreast_xml_skips_the_image_never_makes_it_a_normal(tmp_path, plist):
    root = tmp_path / "data"
    csv_path = F.write_inbreast_fixture(root)
    xml = F.write_plist(root / "AllXML" / "22678622.xml", plist)
    summary, skips, _, out = _run("inbreast", root, [csv_path], tmp_path)
    bad = _row(skips, "22678622")
    assert str(xml) == bad["path"] or xml.name in bad["reason"]
    with Store(out) as s:  # the other images of the ingest are kept; this one is not a normal
        normals = set(s.h5["normals/source_id"].asstr()[...])
    assert "22678622" not in normals and "22678646" in normals


# -- labels.csv with NUL bytes (h5py VLEN strings cannot hold them) ----------------------
def test_nul_bytes_in_labels_csv_skip_those_rows(tmp_path):
    root = tmp_path / "data"
    labels = F.write_folder_fixture(root)
    text = labels.read_text().replace("case1.png,pA,", "case1.png,p\x00A,").replace("weird4.png", "we\x00ird4.png")
    labels.write_text(text)
    summary, skips, _, out = _run("folder", root, [labels], tmp_path)
    assert "NUL" in _row(skips, "case1")["reason"]
    assert any("NUL" in r["reason"] or "null" in r["reason"] for r in skips if r["source_id"].startswith("we"))
    assert summary.n_lesions == 1 and summary.n_normals == 1  # crop2 and normal3 kept
    with Store(out) as s:
        assert len(s.skips()) == len(skips)  # the store's own skip table holds them too


# -- mini-MIAS ---------------------------------------------------------------------------
def test_mias_info_with_a_utf8_bom_keeps_its_first_row(tmp_path):
    info = F.write_mias_fixture(tmp_path)
    info.write_bytes(b"\xef\xbb\xbf" + info.read_bytes())
    ids = {r.source_id for r in iter_records("mias", tmp_path, [info])}
    assert "mdb001" in ids


@pytest.mark.parametrize("radius", ["-197", "0"])
def test_mias_non_positive_radius_is_a_skip(tmp_path, radius):
    info = F.write_mias_fixture(tmp_path)
    info.write_text(info.read_text().replace("mdb001 G CIRC B 535 425 197", f"mdb001 G CIRC B 535 425 {radius}"))
    recs = {r.source_id: r for r in iter_records("mias", tmp_path, [info])}
    assert isinstance(recs["mdb001"], SkipRecord) and "radius" in recs["mdb001"].reason
    assert isinstance(recs["mdb002"], LesionRecord)


def test_mias_unparseable_reference_line_is_a_skip_not_silence(tmp_path):
    info = F.write_mias_fixture(tmp_path)
    info.write_text(info.read_text() + "~mdb310 G CIRC B 500 500 30\n")
    skips = [r for r in iter_records("mias", tmp_path, [info]) if isinstance(r, SkipRecord)]
    assert any("mdb310" in s.source_id and "line 10" in s.reason for s in skips)


# -- warnings for what used to pass silently --------------------------------------------
def test_cbis_csv_without_mass_shape_column_warns(tmp_path):
    root = tmp_path / "data"
    paths = F.write_cbis_fixture(root)
    rows = list(csv.reader(open(paths["mass_test"], newline="")))
    col = rows[0].index("mass shape")
    no_shape = root / "csv" / "mass_case_description_test_set.csv"
    with open(no_shape, "w", newline="") as fh:
        csv.writer(fh).writerows([r[:col] + r[col + 1:] for r in rows])
    summary, _, warnings, out = _run("cbis-ddsm", root, [no_shape], tmp_path)
    assert summary.n_lesions == 1
    assert any("mass shape" in w["reason"] and w["path"].endswith(no_shape.name) for w in warnings)
    assert any("mass shape" in k for k in summary.warning_reasons)


def test_all_nan_float_image_is_skipped_and_partial_nan_warns(tmp_path):
    root = tmp_path / "data"
    labels = F.write_folder_fixture(root)
    nan = np.full((40, 40), np.nan, np.float32)
    F.write_float_tiff(root / "images" / "nan6.tif", nan)
    F.write_png(root / "masks" / "nan6.png", (F.disk(40, 40, 20, 20, 6) * 255).astype(np.uint8))
    part = F.synthetic_breast(40, 40, "L", 5)
    part[:5] = np.nan
    F.write_float_tiff(root / "images" / "part7.tif", part)
    F.write_png(root / "masks" / "part7.png", (F.disk(40, 40, 20, 20, 6) * 255).astype(np.uint8))
    labels.write_text(labels.read_text() + "nan6.tif,pF,oval,,,,,lesion\npart7.tif,pG,oval,,,,,lesion\n")
    summary, skips, warnings, out = _run("folder", root, [labels], tmp_path)
    assert "no finite pixel" in _row(skips, "nan6")["reason"]
    assert "NaN" in _row(warnings, "part7")["reason"]
    with Store(out) as s:
        i = list(s.h5["lesions/source_id"].asstr()[...]).index("part7")
        assert np.isfinite(s.lesions([i]).patch).all()


def test_csv_paths_that_leave_root_are_skipped(tmp_path):
    root = tmp_path / "data"
    labels = F.write_folder_fixture(root)
    outside = F.write_png(tmp_path / "outside.png", (F.synthetic_breast(96, 80) * 255).astype(np.uint8))
    F.write_png(root / "masks" / "outside.png", (F.disk(96, 80, 28, 48, 8) * 255).astype(np.uint8))
    labels.write_text(labels.read_text() + "../../outside.png,pH,oval,,,,,lesion\n"
                      f"{outside},pI,oval,,,,,lesion\n")
    summary, skips, _, _ = _run("folder", root, [labels], tmp_path)
    leaving = [r for r in skips if "leaves --root" in r["reason"]]
    assert len(leaving) == 2 and summary.n_lesions == 2


def test_cbis_path_that_leaves_root_is_skipped(tmp_path):
    root = tmp_path / "data"
    paths = F.write_cbis_fixture(root)
    full_rel = F._paths(F.CBIS_MASS_TEST_ROW)[0]
    folder = full_rel.split("/")[0]
    (root / folder).rename(tmp_path / folder)  # the full image now lies beside --root, not in it
    text = paths["mass_test"].read_text().replace(f",{folder}/", f",../{folder}/")
    paths["mass_test"].write_text(text)
    summary, skips, _, _ = _run("cbis-ddsm", root, [paths["mass_train"], paths["mass_test"]], tmp_path)
    assert "leaves --root" in _row(skips, "Mass-Test_P_00016_LEFT_CC_1")["reason"]
    assert summary.n_lesions == 4


# -- the guard is structural: any exception in one record's read ------------------------
@pytest.mark.parametrize("source,func", [("folder", "read_image"), ("mias", "read_image"), ("inbreast", "read_dicom"),
                                         ("vindr", "read_dicom"), ("cbis-ddsm", "read_dicom")])
def test_any_exception_while_reading_one_record_is_a_skip(tmp_path, monkeypatch, source, func):
    import importlib

    root = tmp_path / "data"
    if source == "mias":
        csvs = [F.write_mias_fixture(root, size=256)]
    else:
        csvs = _fixture(source, root)[0]
    module = importlib.import_module(f"mammosynth.data.readers.{source.replace('-', '_')}")
    real = getattr(module, func)
    calls = []

    def flaky(*a, **k):
        calls.append(a[0])
        if len(calls) == 1:
            raise RuntimeError("boom")  # a bug or an exotic file nobody foresaw
        return real(*a, **k)

    monkeypatch.setattr(module, func, flaky)
    summary, skips, _, _ = _run(source, root, csvs, tmp_path)
    boom = [r for r in skips if "RuntimeError: boom" in r["reason"]]
    assert boom and boom[0]["path"]
    assert summary.n_kept >= 1


def test_a_reader_that_stops_keeps_what_it_read(tmp_path, monkeypatch):
    from mammosynth.data.readers import folder

    root = tmp_path / "data"
    F.write_folder_fixture(root)
    real = folder.iter_records

    def stops(*a, **k):
        gen = real(*a, **k)
        yield next(gen)
        yield next(gen)
        raise OSError("disk went away")

    monkeypatch.setattr(folder, "iter_records", stops)
    summary, skips, _, out = _run("folder", root, [], tmp_path)
    assert summary.n_kept == 2
    assert any("stopped" in r["reason"] and "disk went away" in r["reason"] for r in skips)


# -- the store writer -------------------------------------------------------------------
def _lesion(i, patient="P0", **kw):
    patch = np.random.default_rng(i).random((24, 24)).astype(np.float32)
    mask = np.zeros((24, 24), bool)
    mask[6:18, 6:18] = True
    from mammosynth.data.birads import map_pathology, map_term, MARGINS, SHAPES

    return LesionRecord(source="t", source_id=f"L{i}", patient_id=patient, patch=patch, mask=mask,
                        shape=map_term("oval", SHAPES), margin=map_term("spiculated", MARGINS),
                        pathology=map_pathology("B"), **kw)


def _columns_agree(path):
    with Store(path) as s:
        for group in ("lesions", "normals"):
            lengths = {name: ds.shape[0] for name, ds in s.h5[group].items()}
            assert len(set(lengths.values())) == 1, lengths


def test_store_writer_turns_any_error_into_a_skip_and_stays_consistent(tmp_path, monkeypatch):
    import dataclasses

    path = tmp_path / "d.h5"
    real_append = StoreWriter._append

    def append(ds, value):
        if isinstance(value, str) and value == "explode":  # fails after the numeric columns of this record were appended
            raise OSError("h5 write failed")
        real_append(ds, value)

    monkeypatch.setattr(StoreWriter, "_append", staticmethod(append))
    real = store_mod.resize_mask
    monkeypatch.setattr(store_mod, "resize_mask",
                        lambda m, s: (_ for _ in ()).throw(RuntimeError("h5 hiccup")) if m.sum() == 1 else real(m, s))
    odd = _lesion(1)
    odd.mask[:] = False
    odd.mask[3, 3] = True  # a one-pixel lesion: resize_mask raises half-way through the append
    nan = _lesion(2)
    nan.patch[0, 0] = np.nan
    with StoreWriter(path, patch_size=16) as w:
        assert w.add(_lesion(0))
        assert not w.add(odd)
        assert not w.add(nan)
        assert not w.add(_lesion(3, patient="bad\x00id"))
        assert not w.add(_lesion(4, patient="P\udcff"))  # a surrogate from a non-UTF-8 file name
        assert not w.add(dataclasses.replace(_lesion(6), source_id="explode"))
        assert w.add(_lesion(5))
        w.add(SkipRecord("t", "id\x00", "p\udcffath", "reason with \x00"))
    _columns_agree(path)
    with Store(path) as s:
        assert s.n_lesions == 2
        reasons = [k.reason for k in s.skips()]
    assert any("RuntimeError: h5 hiccup" in r for r in reasons) and any("OSError: h5 write failed" in r for r in reasons)
    assert any("non-finite" in r for r in reasons)
    assert any("NUL" in r for r in reasons) and any("UTF-8" in r for r in reasons)
    assert len(reasons) == 6


def test_store_rejects_non_finite_normals(tmp_path):
    img = np.zeros((40, 30), np.float32)
    img[:, :20] = 0.5
    rec = MammogramRecord(source="t", source_id="N0", patient_id="P0", image=img.copy(), breast_mask=img > 0)
    rec.image[0, 0] = np.inf
    with StoreWriter(tmp_path / "d.h5", patch_size=16, normal_size=(32, 24)) as w:
        assert not w.add(rec)
        assert w.add(_lesion(0))
    _columns_agree(tmp_path / "d.h5")


def test_nothing_usable_still_names_the_reasons(tmp_path):
    root = tmp_path / "data"
    labels = F.write_folder_fixture(root)
    labels.write_text("file,patient_id,shape,margin,kind\n../x.png,p,oval,,lesion\n")
    with pytest.raises(DataError, match="leaves --root"):
        ingest("folder", root, [labels], tmp_path / "o.h5", progress=False)


def test_a_csv_line_the_csv_module_rejects_is_one_skip(tmp_path):
    from mammosynth.data.readers import label_report

    root = tmp_path / "data"
    labels = F.write_folder_fixture(root)
    labels.write_text(labels.read_text() + "huge.png,pX," + '"' + "x" * 200_000 + '",,,,,lesion\n')  # over csv's field limit
    summary, skips, _, _ = _run("folder", root, [labels], tmp_path)
    assert any("line 7: field larger than field limit" in r["reason"] for r in skips)
    assert summary.n_lesions == 2 and summary.n_normals == 1
    assert label_report("folder", [labels])["kinds"]["unreadable"] == 1
