"""`mammosynth data ...`: JSON output, exit status, skip report, atomic store, help texts."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest

import dicom_fixtures as F
from conftest import shared_data
from mammosynth.cli import main
from mammosynth.data.store import Store


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_labels_json_reports_the_real_csv_counts(capsys):
    csv_path = shared_data("cbis-ddsm-csv", "mass_case_description_train_set.csv")
    rc, out, _ = _run(capsys, "data", "labels", "cbis-ddsm", "--csv", str(csv_path), "--json")
    assert rc == 0
    report = json.loads(out)  # exactly one JSON object and nothing else on stdout
    rows = list(csv.DictReader(open(csv_path, newline="")))
    assert report["shape"]["raw"] == dict(Counter(r["mass shape"] for r in rows))
    assert report["margin"]["raw"] == dict(Counter(r["mass margins"] for r in rows))
    assert report["shape"]["raw"]["IRREGULAR"] == 351 and report["margin"]["raw"]["NA"] == 43


def test_labels_table_and_json_on_fixture(tmp_path, capsys):
    paths = F.write_cbis_fixture(tmp_path)
    rc, out, err = _run(capsys, "data", "labels", "cbis-ddsm", "--csv", str(paths["mass_train"]), "--csv", str(paths["calc_train"]))
    assert rc == 0 and out == ""  # human output goes to stderr; stdout is for --json
    assert "IRREGULAR-ARCHITECTURAL_DISTORTION" in err and "irregular" in err
    rc, out, _ = _run(capsys, "data", "labels", "cbis-ddsm", "--csv", str(paths["mass_train"]), "--json")
    rep = json.loads(out)
    assert rep["rows"] == 8 and rep["shape"]["raw"]["OVAL"] == 5 and rep["kinds"] == {"mass": 7, "non_mass": 1}


def test_ingest_info_preview(tmp_path, capsys):
    paths = F.write_cbis_fixture(tmp_path / "cbis")
    out = tmp_path / "cbis.h5"
    rc, stdout, _ = _run(capsys, "data", "ingest", "cbis-ddsm", "--root", str(tmp_path / "cbis"),
                         "--csv", str(paths["mass_train"]), "--csv", str(paths["mass_test"]),
                         "--csv", str(paths["calc_train"]), "--out", str(out), "--size", "32", "--json")
    assert rc == 0
    summary = json.loads(stdout)
    assert (summary["n_lesions"], summary["n_normals"], summary["n_skipped"]) == (5, 0, 5)
    report = list(csv.DictReader(open(tmp_path / "cbis.skips.csv", newline="")))
    assert [r["source_id"] for r in report] == [
        "Mass-Training_P_00001_LEFT_MLO_1", "Mass-Training_P_00004_RIGHT_MLO_1", "Mass-Training_P_00009_RIGHT_CC_1",
        "Mass-Training_P_00009_RIGHT_MLO_1", "Calc-Training_P_00005_RIGHT_CC_1",
    ]
    assert all(r["reason"] for r in report)
    rc, stdout, _ = _run(capsys, "data", "info", str(out), "--json")
    info = json.loads(stdout)
    assert info["n_lesions"] == 5 and info["n_skipped"] == 5 and info["patch_size"] == 32
    assert info["shape"]["(none)"] == 1 and info["splits"]["lesions"]["test"] == 1
    with Store(out) as s:
        les = s.lesions()
        assert les.patch.shape == (5, 32, 32) and les.mask.any(axis=(1, 2)).all()
        assert s.manifest["provenance"]["source"] == "cbis-ddsm"
        assert len(s.manifest["provenance"]["metadata"]) == 3
    rc, stdout, err = _run(capsys, "data", "info", str(out))
    assert rc == 0 and stdout == "" and "irregular" in err and "train" in err
    png = tmp_path / "grid.png"
    rc, _, _ = _run(capsys, "data", "preview", str(out), "--out", str(png))
    assert rc == 0
    from PIL import Image

    with Image.open(png) as im:
        arr = np.asarray(im.convert("L"))
    assert arr.shape[0] > 50 and arr.std() > 5  # an actual picture, not a blank canvas


def test_folder_ingest_with_normals_and_skips(tmp_path, capsys):
    F.write_folder_fixture(tmp_path / "f")
    out = tmp_path / "f.h5"
    rc, stdout, _ = _run(capsys, "data", "ingest", "folder", "--root", str(tmp_path / "f"), "--out", str(out),
                         "--normal-size", "64x52", "--json")
    assert rc == 0
    s = json.loads(stdout)
    assert (s["n_lesions"], s["n_normals"], s["n_skipped"]) == (2, 1, 2)
    with Store(out) as store:
        n = store.normal(0)
        assert n["image"].shape == (64, 52) and n["flipped"]  # a right breast, left-oriented
        assert n["image"][:, :8].mean() > n["image"][:, -8:].mean()


def test_nothing_usable_exits_nonzero_without_a_store(tmp_path, capsys):
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    F.write_image_dicom(root / "images" / "a.dcm", F.synthetic_breast(64, 48))
    F.truncate(root / "images" / "a.dcm", 0.4)
    (root / "labels.csv").write_text("file,patient_id,shape,margin,pathology,kind\na.dcm,p1,,,,normal\nb.png,p2,oval,,,lesion\n")
    out = tmp_path / "bad.h5"
    rc, stdout, err = _run(capsys, "data", "ingest", "folder", "--root", str(root), "--out", str(out))
    assert rc != 0 and not out.exists()
    assert err.startswith("mammosynth: error:") and "nothing usable" in err and err.count("\n") == 1
    assert len(list(csv.DictReader(open(tmp_path / "bad.skips.csv")))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_interrupted_ingest_leaves_no_half_written_file(tmp_path, monkeypatch):
    from mammosynth.data import ingest as ingest_mod
    from mammosynth.data.readers import folder

    F.write_folder_fixture(tmp_path / "f")
    out = tmp_path / "keep.h5"
    out.write_bytes(b"previous file")
    real = folder.iter_records

    def interrupted(*a, **k):
        gen = real(*a, **k)
        yield next(gen)
        raise KeyboardInterrupt  # Ctrl-C in the middle of an ingest

    monkeypatch.setattr(folder, "iter_records", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest_mod.ingest("folder", tmp_path / "f", [], out, progress=False)
    assert out.read_bytes() == b"previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "keep.h5"]


def test_help_explains_options(capsys):
    for cmd, options in {
        "phantom": ["--out", "--lesions", "--normals", "--size", "--seed", "--normal-size", "--style", "--mass-contrast",
                    "--mass-size", "--json"],
        "ingest": ["--root", "--csv", "--out", "--size", "--normal-size", "--lesions", "--json"],
        "labels": ["--csv", "--json"],
        "info": ["--json"],
        "preview": ["--out", "--lesions", "--normals"],
    }.items():
        rc, out, _ = _run(capsys, "data", cmd, "--help")
        assert rc == 0
        for opt in options:
            assert opt in out, (cmd, opt)
    rc, out, _ = _run(capsys, "data", "ingest", "--help")
    assert "pixels" in out and "[default: 64]" in out and "cbis-ddsm" in out


def test_bad_source_and_size_are_one_line_errors(tmp_path, capsys):
    rc, _, err = _run(capsys, "data", "ingest", "ddsm-old", "--root", str(tmp_path), "--out", str(tmp_path / "x.h5"))
    assert rc != 0 and "unknown data source" in err
    rc, _, err = _run(capsys, "data", "phantom", "--out", str(tmp_path / "p.h5"), "--normal-size", "big")
    assert rc != 0 and "--normal-size" in err
    rc, _, err = _run(capsys, "data", "phantom", "--out", str(tmp_path / "p.h5"), "--mass-contrast", "low")
    assert rc != 0 and "--mass-contrast" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, "data", "phantom", "--out", str(tmp_path / "p.h5"), "--mass-size", "30,10")
    assert rc != 0 and "size range" in err and not (tmp_path / "p.h5").exists()


def test_phantom_command(tmp_path, capsys):
    pytest.importorskip("mammosynth.phantom")
    out = tmp_path / "ph.h5"
    rc, stdout, _ = _run(capsys, "data", "phantom", "--out", str(out), "--lesions", "3", "--normals", "1",
                         "--size", "32", "--normal-size", "128x104", "--seed", "1", "--json")
    assert rc == 0
    info = json.loads(stdout)
    assert info["n_lesions"] == 3 and info["n_normals"] == 1 and info["normal_size"] == [128, 104]


def test_sigkilled_ingest_leaves_no_file_under_the_final_name(tmp_path):
    """SIGKILL (no cleanup runs) in the middle of an ingest: the final name never appears."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    F.write_folder_fixture(tmp_path / "f")
    out = tmp_path / "killed.h5"
    script = textwrap.dedent(f"""
        import sys, time
        from mammosynth.data import ingest
        from mammosynth.data.readers import folder
        real = folder.iter_records
        def slow(*a, **k):
            for i, rec in enumerate(real(*a, **k)):
                yield rec
                if i == 0:
                    print("started", flush=True)
                    time.sleep(60)  # killed here, with one record already in the store
        folder.iter_records = slow
        ingest.ingest("folder", {str(tmp_path / "f")!r}, [], {str(out)!r}, progress=False)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and not (tmp_path / "killed.skips.csv").exists()
