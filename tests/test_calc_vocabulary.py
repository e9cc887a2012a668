"""The BI-RADS calcification vocabulary: CBIS-DDSM's ``calc type`` / ``calc distribution``
mapped on every row of the real calc CSVs (skipped when ../shared/data is absent), and the
mapping policy on hand-written values (always run)."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from conftest import shared_data
from mammosynth.data import birads
from mammosynth.data.readers import label_report

CALC_CSVS = ("calc_case_description_train_set.csv", "calc_case_description_test_set.csv")


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(("raw", "value", "status"), [
    ("PLEOMORPHIC", "pleomorphic", "exact"),
    ("LUCENT_CENTER", "lucent_centered", "exact"),  # CBIS spelling variant of LUCENT_CENTERED
    ("LUCENT_CENTERED", "lucent_centered", "exact"),
    ("PLEOMORPHIC-FINE_LINEAR_BRANCHING", "fine_linear_branching", "combined"),  # the most suspicious part
    ("ROUND_AND_REGULAR-LUCENT_CENTER-PUNCTATE", "punctate", "combined"),
    ("PLEOMORPHIC-PLEOMORPHIC", "pleomorphic", "combined"),
    ("NA", None, "missing"),
    ("", None, "missing"),
    ("POPCORN", None, "unknown"),
    ("PLEOMORPHIC-POPCORN", None, "unknown"),  # an unknown part is never dropped silently
])
def test_morphology_mapping_policy(raw, value, status):
    lab = birads.map_cbis_morphology(raw)
    assert (lab.value, lab.status) == (value, status)
    assert lab.raw == (raw if raw else "")


@pytest.mark.parametrize(("raw", "value", "status"), [
    ("CLUSTERED", "clustered", "exact"),
    ("GROUPED", "clustered", "exact"),  # BI-RADS 5th edition's name
    ("DIFFUSELY_SCATTERED", "diffuse", "exact"),
    ("CLUSTERED-LINEAR", "linear", "combined"),
    ("LINEAR-SEGMENTAL", "segmental", "combined"),
    ("REGIONAL-REGIONAL", "regional", "combined"),
    ("NA", None, "missing"),
    ("SCATTERED-ISH", None, "unknown"),
])
def test_distribution_mapping_policy(raw, value, status):
    lab = birads.map_cbis_distribution(raw)
    assert (lab.value, lab.status, lab.raw) == (value, status, raw)


def test_every_cbis_term_maps_into_the_vocabulary():
    assert set(birads.CBIS_MORPHOLOGY_TERMS.values()) <= set(birads.MORPHOLOGIES)
    assert set(birads.CBIS_DISTRIBUTION_TERMS.values()) == set(birads.DISTRIBUTIONS)


def test_every_real_calc_row_maps():
    """Each row of both real calc CSVs: its morphology and distribution map to a term or are
    missing (NA), never unknown; a term is one of the value's parts, the most suspicious."""
    d = shared_data("cbis-ddsm-csv")
    n = 0
    for name in CALC_CSVS:
        for row in _rows(d / name):
            n += 1
            for raw, lab, terms, vocab in (
                (row["calc type"], birads.map_cbis_morphology(row["calc type"]), birads.CBIS_MORPHOLOGY_TERMS,
                 birads.MORPHOLOGIES),
                (row["calc distribution"], birads.map_cbis_distribution(row["calc distribution"]),
                 birads.CBIS_DISTRIBUTION_TERMS, birads.DISTRIBUTIONS),
            ):
                assert lab.raw == raw
                if raw == "NA":
                    assert lab.status == "missing" and lab.value is None
                    continue
                parts = [terms[p] for p in raw.split("-")]
                assert lab.value == max(parts, key=vocab.index)
                assert lab.status == ("exact" if "-" not in raw else "combined")
    assert n == 1546 + 326


def test_label_report_counts_calc_labels_exactly_as_the_csvs_have_them():
    d = shared_data("cbis-ddsm-csv")
    rows = [r for name in CALC_CSVS for r in _rows(d / name)]
    rep = label_report("cbis-ddsm", [d / name for name in CALC_CSVS])
    assert rep["rows"] == len(rows) == 1872 and rep["kinds"] == {"calcification": 1872}
    assert rep["morphology"]["raw"] == dict(Counter(r["calc type"] for r in rows))
    assert rep["distribution"]["raw"] == dict(Counter(r["calc distribution"] for r in rows))
    assert rep["unknown"] == []
    morph, dist = rep["morphology"], rep["distribution"]
    assert (morph["raw"]["PLEOMORPHIC"], morph["raw"]["AMORPHOUS"], morph["raw"]["NA"]) == (813, 181, 24)
    assert (dist["raw"]["CLUSTERED"], dist["raw"]["NA"], dist["raw"]["CLUSTERED-LINEAR"]) == (935, 439, 29)
    assert morph["status"] == {"exact": 1555, "combined": 293, "missing": 24}
    assert dist["mapped"] == {"clustered": 935, "(none)": 439, "segmental": 202 + 7 + 5, "linear": 112 + 29,
                              "regional": 102 + 1, "diffuse": 40}
    assert sum(morph["mapped"].values()) == 1872
    assert rep["shape"]["raw"] == {} and rep["margin"]["raw"] == {}  # calcifications have no mass labels
