"""The demo end to end at toy size: phantom -> train both GANs -> generate -> insert ->
evaluate -> reader study -> report.html. Checks the report shows what the issue asks for."""

from __future__ import annotations

import json

from mammosynth.demo import DemoSettings, run_demo


def test_demo_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMOSYNTH_WEIGHTS", str(tmp_path / "no-weights"))  # the offline fallback path
    s = DemoSettings(out=tmp_path / "demo", n_lesions=40, n_normals=6, full_shape=(256, 208), n_generate=12,
                     n_insert=3, mask_steps=3, infill_steps=3, evaluate=False,  # evaluate has its own tests
                     overrides={"mask-dcgan": ["batch_size=4"], "infill": ["batch_size=2"]})
    report = run_demo(s)
    html = report.read_text()
    for section in ("What ran", "Inserted masses", "Real and synthetic", "Sample grids", "Training curves", "Reader study"):
        assert section in html, section
    out = tmp_path / "demo"
    from pycocotools.coco import COCO

    coco = COCO(str(out / "synthetic" / "inserted" / "annotations.json"))
    assert len(coco.getAnnIds()) >= 1
    for png in ("inserted.png", "real_vs_synthetic.png", "curves.png"):
        assert (out / "report_files" / png).stat().st_size > 1000
    rows = json.loads((out / "synthetic" / "inserted" / "insert_report.json").read_text())
    assert rows["written"] + len(rows["failed"]) + len(rows["skipped_normals"]) == 3
