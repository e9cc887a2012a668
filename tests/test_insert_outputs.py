"""`insert` writes its set the way every synthesis command does: a used folder is refused unless
``overwrite``, insert_report.json lands inside the set atomically with it, and a failed run
leaves no set (the stand-in GANs of test_insert.py keep this fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammosynth.errors import DataError
from mammosynth.synth.insert import insert_lesions
from tests.dicom_fixtures import synthetic_breast, write_png
from tests.test_insert import _Infill, _Masks


def _store(folder):
    """Two small 12-bit PNG mammograms (0.1 mm/px given on the call) to insert into."""
    for k in range(2):
        img = synthetic_breast(600, 480, "L", seed=k)
        write_png(folder / f"n{k}_L_CC.png", np.round(img * 4095).astype(np.uint16))


def test_insert_refuses_a_used_folder_and_replaces_it_only_when_asked(tmp_path):
    data = tmp_path / "d"
    _store(data)
    out = tmp_path / "ins"
    insert_lesions(_Masks(), _Infill(), data, 2, out, seed=0, pixel_spacing=0.1, progress=False)
    first = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    with pytest.raises(DataError, match="output folder is not empty; pass --overwrite"):
        insert_lesions(_Masks(), _Infill(), data, 3, out, seed=1, pixel_spacing=0.1, progress=False)
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == first
    rep = insert_lesions(_Masks(), _Infill(), data, 3, out, seed=1, pixel_spacing=0.1, progress=False, overwrite=True)
    saved = json.loads((out / "insert_report.json").read_text())
    assert saved["written"] == rep.written == 3 and len(list((out / "images").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "ins"]  # no temporary siblings


class _BrokenInfill(_Infill):
    """Fails on the second mammogram, as a crashed GPU or a bad normal would."""

    calls = 0

    def infill(self, tissue, mask, generator=None):
        type(self).calls += 1
        if type(self).calls == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().infill(tissue, mask, generator)


def test_a_failed_insert_leaves_no_set(tmp_path):
    data = tmp_path / "d"
    _store(data)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        insert_lesions(_Masks(), _BrokenInfill(), data, 4, tmp_path / "ins", seed=0, pixel_spacing=0.1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_evaluate_reads_native_insert_sets_as_ingest_normalises_them(tmp_path):
    """A 12-bit PNG written back at its dtype holds values 0..4095 in a 16-bit file: read as a
    mammosynth PNG (/65535) it would be 16x too dark beside the real patches."""
    from mammosynth.evaluate.synthetic import load_synthetic_patches

    data = tmp_path / "d"
    _store(data)
    insert_lesions(_Masks(), _Infill(), data, 2, tmp_path / "ins", seed=0, pixel_spacing=0.1, progress=False)
    patches = load_synthetic_patches(tmp_path / "ins", 32)
    assert patches.images.shape == (2, 32, 32) and patches.images.max() > 0.5 and patches.masks.any(axis=(1, 2)).all()
