"""mini-MIAS through the `mias` source, end to end: the real films when ../shared/data is
beside the checkout, and the same checks on a generated mini-MIAS-like tree always."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dicom_fixtures as F
from conftest import shared_data
from mammosynth.cli import main
from mammosynth.data.records import SPLITS
from mammosynth.data.store import Store

MIAS_MARGINS = ("circumscribed", "spiculated", "ill_defined")


def _ingest_and_info(capsys, root, out, *extra) -> tuple[dict, dict]:
    capsys.readouterr()
    rc = main(["data", "ingest", "mias", "--root", str(root), "--out", str(out), "--size", "16", "--no-normals",
               "--json", *extra])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    rc = main(["data", "info", str(out), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert rc == 0
    return summary, info


def _every_margin_in_every_split(info: dict) -> None:
    for split in SPLITS:
        for margin in MIAS_MARGINS:
            assert info["split_labels"][split]["margin"][margin] >= 1, (split, margin, info["split_labels"][split])
    assert not [w for w in info["split_warnings"] if "margin" in w]


@pytest.mark.parametrize("fractions", [None, "0.6,0.2,0.2"])
def test_real_mini_mias_ingests_with_every_margin_class_in_every_split(tmp_path, capsys, fractions):
    root = shared_data("mini-mias")
    extra = [] if fractions is None else ["--split-fractions", fractions]
    summary, info = _ingest_and_info(capsys, root, tmp_path / "mias.h5", *extra)
    assert summary["n_lesions"] == 58 and summary["n_warnings"] == 0
    assert summary["skip_reasons"]["calcification (not a mass)"] == 17
    assert info["margin"]["circumscribed"] == 12 and info["margin"]["spiculated"] == 15 and info["margin"]["ill_defined"] == 11
    _every_margin_in_every_split(info)
    with Store(tmp_path / "mias.h5") as s:
        np.testing.assert_allclose(s.lesion_spacing_mm(), 0.2)  # mini-MIAS films: 0.2 mm per pixel
        assert np.isfinite(s.patch_mm_per_px()).all()
    if fractions:
        assert info["splits"]["lesions"]["test"] >= 10  # 0.2 of 58 lesions, whole patients


def test_mias_like_fixture_ingests_with_every_margin_class_in_every_split(tmp_path, capsys):
    """The same as the real-film test, on generated films with the real class counts."""
    info_txt = F.write_mias_like_fixture(tmp_path / "mias", {"CIRC": 12, "SPIC": 15, "MISC": 11, "ARCH": 3, "CALC": 2},
                                         size=128, n_normals=4)
    summary, info = _ingest_and_info(capsys, tmp_path / "mias", tmp_path / "m.h5")
    assert summary["n_lesions"] == 41 and summary["skip_reasons"]["calcification (not a mass)"] == 2
    assert info["margin"]["circumscribed"] == 12 and info["margin"]["(none)"] == 3
    _every_margin_in_every_split(info)
    with Store(tmp_path / "m.h5") as s:
        np.testing.assert_allclose(s.lesion_spacing_mm(), 0.2)
        pid = s.h5["lesions/patient_id"].asstr()[...]
        split = s.h5["lesions/split"][...]
    for p in set(pid):  # mdb001 and mdb002 are one patient: one split
        assert len(set(split[pid == p])) == 1
    assert info_txt.exists()
