"""The calcification quality benchmark's smoke path, on a small phantom store only (offline: no
mini-MIAS, the procedural generator inserted into the phantom's own normals)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = pytest.mark.usefixtures("one_thread")


def test_smoke_procedural_row_on_phantom(tmp_path):
    import bench_quality_calc as bqc

    from mammosynth.errors import WeightsError
    from mammosynth.evaluate.features import load_feature_net

    try:  # the benchmark scores in ImageNet feature spaces: it needs `mammosynth weights get` first
        load_feature_net("vgg16")
        load_feature_net("effnet")
    except WeightsError as err:
        pytest.skip(f"the quality benchmark needs the pretrained weights (`mammosynth weights get`): {err}")

    rc = bqc.main(["--smoke", "--datasets", "phantom", "--methods", "procedural", "--phantom-calcifications", "30",
                   "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "quality_calc.json").read_text())
    assert len(rows) == 1
    row = rows[0]
    assert (row["dataset"], row["method"], row["lesion_type"]) == ("phantom", "procedural", "calcification")
    assert row["n_real"] >= 2 and row["n_synthetic"] == 2 * row["n_real"] and row["n_real_views"] == 8 * row["n_real"]
    auc = row["two_sample"]["auc"]
    assert math.isfinite(auc) and 0.0 <= auc <= 1.0
    for net in ("VGG16", "EffNet"):
        assert math.isfinite(row["features"][net]["fd"]) and row["features"][net]["fd_floor"] >= 0
    assert Path(row["picture"]).is_file()
    text = (tmp_path / "calcification.md").read_text()
    assert bqc.TABLE_BEGIN in text and "| phantom | procedural |" in text
