"""Calcifications through the readers and the store: ``--lesions mass|calcification|all`` on
fixtures in each source's format (always run), real mini-MIAS CALC rows (skipped when
../shared/data is absent), store format 3 (points, morphology, distribution, lesion type)
with older files still read, and patient-level stratified splits of calcification stores."""

from __future__ import annotations

import dataclasses
import json
import h5py
import numpy as np
import pytest

import dicom_fixtures as F
from conftest import shared_data
from mammosynth.cli import main
from mammosynth.data.birads import NOT_MASS, map_cbis_distribution, map_cbis_morphology, map_pathology
from mammosynth.data.ingest import ingest
from mammosynth.data.readers import iter_records, wanted_kinds
from mammosynth.data.records import SPLITS, LesionRecord, SkipRecord
from mammosynth.data.store import Store, StoreWriter
from mammosynth.errors import ConfigError


def _by_id(records):
    return {r.source_id: r for r in records}


def test_lesions_option_choices():
    assert wanted_kinds("mass") == {"mass", "non_mass"}
    assert wanted_kinds("calcification") == {"calcification"}
    assert wanted_kinds("all") == wanted_kinds("mass", include_calcifications=True) == {"mass", "non_mass", "calcification"}
    with pytest.raises(ConfigError, match="--lesions must be one of"):
        wanted_kinds("calc")


def test_cbis_calcification_rows_become_calcification_lesions(tmp_path):
    csvs = F.write_cbis_fixture(tmp_path)
    recs = _by_id(iter_records("cbis-ddsm", tmp_path, [csvs["mass_train"], csvs["calc_train"]], lesions="calcification"))
    calc = recs["Calc-Training_P_00005_RIGHT_CC_1"]
    assert isinstance(calc, LesionRecord) and calc.lesion_type == "calcification"
    assert (calc.morphology.value, calc.morphology.raw, calc.distribution.value) == ("amorphous", "AMORPHOUS", "clustered")
    assert calc.shape.status == calc.margin.status == "non_mass" and calc.pathology.value == "malignant"
    assert calc.mask.any() and calc.split_hint == "trainval"
    assert recs["Mass-Training_P_00001_LEFT_CC_1"].reason == "mass (not a calcification)"
    assert recs["Mass-Training_P_00004_LEFT_CC_1"].reason == "non-mass (not a calcification)"  # architectural distortion
    out = tmp_path / "all.h5"
    summary = ingest("cbis-ddsm", tmp_path, [csvs["mass_train"], csvs["calc_train"]], out, patch_size=16,
                     progress=False, lesions="all")
    with Store(out) as s:
        info = s.info()
        types = s.lesion_types()
        les = s.lesions()
    assert summary.n_lesions == 5 and info["format_version"] == 3
    assert info["lesion_type"] == {"mass": 3, "non_mass": 1, "calcification": 1, "(none)": 0}
    assert info["morphology"]["amorphous"] == 1 and info["morphology"]["(none)"] == 4
    assert info["distribution"]["clustered"] == 1
    k = types.index("calcification")
    assert les.lesion_type[k] == "calcification" and les.morphology[k] == 10 and les.shape[k] == -1


def test_mias_like_calc_rows_ingest_and_split_by_patient(tmp_path, capsys):
    F.write_mias_like_fixture(tmp_path / "mias", {"CIRC": 6, "SPIC": 6, "CALC": 12}, size=96)
    out = tmp_path / "c.h5"
    rc = main(["data", "ingest", "mias", "--root", str(tmp_path / "mias"), "--out", str(out), "--size", "16",
               "--no-normals", "--lesions", "calcification", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["n_lesions"] == 12
    assert summary["skip_reasons"] == {"mass (not a calcification)": 12}
    with Store(out) as s:
        info = s.info()
        les = s.lesions()
    assert set(les.lesion_type) == {"calcification"} and (les.morphology == -1).all()  # mini-MIAS gives no morphology
    assert all(info["splits"]["lesions"][split] >= 1 for split in SPLITS)
    split_of = {}
    with Store(out) as s:
        for pid, sp in zip(s.h5["lesions/patient_id"].asstr()[...], s.h5["lesions/split"][...]):
            assert split_of.setdefault(pid, sp) == sp  # patient-level: no leakage


def test_deprecated_calcifications_flag_means_all(tmp_path, capsys):
    F.write_mias_like_fixture(tmp_path / "mias", {"CIRC": 3, "CALC": 3}, size=96)
    rc = main(["data", "ingest", "mias", "--root", str(tmp_path / "mias"), "--out", str(tmp_path / "a.h5"), "--size", "16",
               "--no-normals", "--calcifications", "--json"])
    captured = capsys.readouterr()
    assert rc == 0 and json.loads(captured.out)["n_lesions"] == 6
    assert "deprecated" in captured.err
    rc = main(["data", "ingest", "vindr", "--root", str(tmp_path), "--out", str(tmp_path / "v.h5"), "--lesions", "all"])
    err = capsys.readouterr().err
    assert rc != 0 and "reads masses only" in err and len(err.strip().splitlines()) == 1


def test_real_mini_mias_calc_rows(tmp_path):
    root = shared_data("mini-mias")
    out = tmp_path / "calc.h5"
    summary = ingest("mias", root, [], out, patch_size=16, include_normals=False, progress=False, lesions="calcification")
    # 17 CALC rows in Info.txt: mdb216 and mdb245 have no coordinates (*NOTE 3*)
    assert summary.n_lesions == 15
    assert sum(n for r, n in summary.skip_reasons.items() if r.startswith("no lesion coordinates")) == 2
    assert summary.skip_reasons["mass (not a calcification)"] == 13 + 15 + 11  # CIRC + SPIC + MISC rows
    assert summary.skip_reasons["non-mass (not a calcification)"] == 10 + 10  # ARCH + ASYM
    with Store(out) as s:
        assert set(s.lesion_types()) == {"calcification"}
        assert s.info()["pathology"] == {"benign": 8, "malignant": 7, "(none)": 0}
        np.testing.assert_allclose(s.lesion_spacing_mm(), 0.2)


def test_inbreast_calcification_cluster_keeps_its_points(tmp_path):
    img = F.synthetic_breast(128, 100, "L", seed=7)
    F.write_image_dicom(tmp_path / "AllDICOMs" / "30000001_abcdef_MG_L_CC_ANON.dcm", img, bits_stored=14)
    F.write_osirix_xml(tmp_path / "AllXML" / "30000001.xml", [
        ("Cluster", F.circle_points(40, 64, 12)),
        ("Calcification", [(38.0, 60.0)]),
        ("Calcification", [(45.0, 70.0)]),
        ("Calcification", [(90.0, 10.0)]),  # outside the cluster
        ("Mass", F.circle_points(30, 30, 8)),
    ])
    recs = _by_id(iter_records("inbreast", tmp_path, [], lesions="calcification"))
    cluster = recs["30000001_roi0"]
    assert isinstance(cluster, LesionRecord) and cluster.lesion_type == "calcification"
    assert cluster.points.shape == (2, 2)
    for x, y in cluster.points:  # in patch pixels, inside the cluster's mask
        assert cluster.mask[int(round(y)), int(round(x))]
    assert "outside every calcification cluster" in recs["30000001_roi3"].reason
    assert recs["30000001_roi4"].reason == "mass (not a calcification)"
    # masses only (the default): the cluster and its points are skipped as before
    default = _by_id(iter_records("inbreast", tmp_path, []))
    assert default["30000001_roi0"].reason == "calcification (not a mass)"
    assert isinstance(default["30000001_roi4"], LesionRecord) and default["30000001_roi4"].lesion_type == "mass"


def _calc(i: int, patient: str, morphology: str, rng) -> LesionRecord:
    patch = rng.random((40, 40)).astype(np.float32)
    mask = np.zeros((40, 40), bool)
    mask[8:32, 8:32] = True
    return LesionRecord(source="test", source_id=f"C{i}", patient_id=patient, patch=patch, mask=mask, shape=NOT_MASS,
                        margin=NOT_MASS, pathology=map_pathology("MALIGNANT" if i % 2 else "BENIGN"),
                        lesion_type="calcification", morphology=map_cbis_morphology(morphology),
                        distribution=map_cbis_distribution("CLUSTERED" if i % 3 else "LINEAR"),
                        points=np.asarray([[9.5, 9.5], [20.0, 30.0]], np.float32))


def test_store_keeps_calcification_labels_and_points_and_reads_old_files(tmp_path, rng):
    path = tmp_path / "c.h5"
    morphs = ("PLEOMORPHIC", "AMORPHOUS", "PUNCTATE", "FINE_LINEAR_BRANCHING")
    with StoreWriter(path, patch_size=20) as w:
        for i in range(40):
            assert w.add(_calc(i, f"P{i // 2}", morphs[i % 4], rng))
    with Store(path) as s:
        pts = s.lesion_points(0)
        np.testing.assert_allclose(pts, [[4.5, 4.5], [9.75, 14.75]])  # 40 -> 20 px: centres scale about -0.5
        counts = s.split_label_counts()
        info = s.info()
        les = s.lesions()
    assert info["lesion_type"]["calcification"] == 40 and info["morphology"]["pleomorphic"] == 10
    assert les.distribution.tolist().count(3) == sum(1 for i in range(40) if i % 3 == 0)  # linear
    for split in SPLITS:  # stratified: every morphology in every split (20 patients, 80/10/10)
        for m in ("pleomorphic", "amorphous", "punctate", "fine_linear_branching"):
            assert counts[split]["morphology"][m] >= 1, (split, m, counts[split]["morphology"])
    assert not info["split_warnings"]
    with h5py.File(path, "a") as h5:  # strip the format-3 columns: a version-2 file
        for name in ("lesion_type", "morphology", "distribution", "points", "morphology_raw", "morphology_status",
                     "distribution_raw", "distribution_status"):
            del h5[f"lesions/{name}"]
    with Store(path) as s:
        les = s.lesions()
        assert set(les.lesion_type) == {"non_mass"}  # told from the shape status
        assert (les.morphology == -1).all() and s.lesion_points(0).shape == (0, 2)
        assert s.info()["morphology"]["(none)"] == 40


def test_a_bad_lesion_type_is_a_skip(tmp_path, rng):
    with StoreWriter(tmp_path / "b.h5", patch_size=16) as w:
        assert not w.add(dataclasses.replace(_calc(0, "P0", "PUNCTATE", rng), lesion_type="calc"))
        assert "unknown lesion type 'calc'" in w.skips[0].reason
        assert w.add(_calc(1, "P1", "PUNCTATE", rng))
