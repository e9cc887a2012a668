"""Downstream detection experiment on a tiny store: structure, CIs, plots, COCO files that
pycocotools reads, and recall/AP equal to COCOeval's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_evaluate_run import make_tiny_store, make_tiny_synthetic


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from mammosynth.evaluate.downstream import downstream_detection

    d = tmp_path_factory.mktemp("ds")
    store, syn = make_tiny_store(d / "real.h5", n_train=16, n_test=6), make_tiny_synthetic(d / "syn", n=12)
    out = d / "out"
    res = downstream_detection(store, syn, out, amounts=(0.0, 0.5), seeds=(0, 1), steps=2, batch_size=8,
                               device="cpu", progress=False, width=4, depth=2)
    return res, out


def test_structure_cis_and_plots(result):
    res, out = result
    assert res["detector_name"] == "unet" and res["detector"].startswith("unet-segmentation")
    assert len(res["runs"]) == 4 and [s["n_synthetic"] for s in res["summary"]] == [0, 8]
    assert res["n_test_images"] == 12 and res["n_test_lesions"] == 6
    for s in res["summary"]:
        for key in ("recall", "froc_auc", "cpm", "ap50", "recall_gain_vs_real_only"):
            c = s[key]
            assert c["n"] == 2 and len(c["ci"]) == 2
            vals = [r[key] for r in res["runs"] if r["amount"] == s["amount"]] if key != "recall_gain_vs_real_only" else None
            if vals and not any(np.isnan(vals)):
                assert c["mean"] == pytest.approx(np.mean(vals))
                assert c["ci"][0] <= c["mean"] <= c["ci"][1]
    # gains are paired by seed: zero for the real-only arm itself
    assert res["summary"][0]["recall_gain_vs_real_only"]["mean"] == 0.0
    for r in res["runs"]:
        assert 0.0 <= r["recall"] <= 1.0 and 0.0 <= r["froc_auc"] <= 1.0
        assert r["froc"]["fppi"][0] == 0.0 and len(r["froc"]["fppi"]) == len(r["froc"]["sensitivity"])
    for png in res["plots"]:
        assert (out / png).stat().st_size > 1000
    json.dumps(res)  # JSON-ready


def test_coco_files_agree_with_pycocotools(result):
    """The downstream detections written as COCO results: COCOeval's recall and AP@0.5 equal ours."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from mammosynth.evaluate.detection import Detections, average_precision, froc

    res, out = result
    coco_dir = out / res["coco_dir"]
    gt = COCO(str(coco_dir / "test_gt.json"))
    for r in res["runs"]:
        det_file = coco_dir / f"detections_{r['amount']:g}_seed{r['seed']}.json"
        dets = json.loads(det_file.read_text())
        # ours, rebuilt from the files
        ours = []
        for img in sorted(gt.getImgIds()):
            g = np.array([a["bbox"] for a in gt.loadAnns(gt.getAnnIds(imgIds=[img]))]).reshape(-1, 4)
            mine = [d for d in dets if d["image_id"] == img]
            ours.append(Detections(np.array([d["bbox"] for d in mine]).reshape(-1, 4), np.array([d["score"] for d in mine]), g))
        assert froc(ours)["recall"] == pytest.approx(r["recall"])
        if not dets:  # COCO's loadRes refuses an empty result list; nothing was found
            assert r["recall"] == 0.0
            continue
        ev = COCOeval(gt, gt.loadRes(str(det_file)), "bbox")
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.params.iouThrs, ev.params.maxDets = np.array([0.5]), [100]
        ev.evaluate()
        ev.accumulate()
        assert r["recall"] == pytest.approx(float(ev.eval["recall"][0, 0, 0, 0]), abs=1e-9)
        coco_ap = float(ev.eval["precision"][0, :, 0, 0, 0].mean())
        assert average_precision(ours, 0.5) == pytest.approx(max(coco_ap, 0.0), abs=1e-9)


def test_coco_cross_check_on_a_nonempty_case(tmp_path):
    """write_coco + COCOeval on detections that find some lesions (the 2-step detectors may find none)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from mammosynth.evaluate.downstream import score_detections, write_coco

    rng = np.random.default_rng(3)
    gts, dets = [], []
    for i in range(30):
        g = np.array([[rng.uniform(0, 30), rng.uniform(0, 30), rng.uniform(8, 20), rng.uniform(8, 20)]]) if i % 3 else np.zeros((0, 4))
        boxes = [b + rng.normal(0, 2, 4) * [1, 1, 0, 0] for b in g if rng.random() < 0.7]
        boxes += [np.array([rng.uniform(0, 40), rng.uniform(0, 40), 10, 10]) for _ in range(rng.integers(0, 2))]
        gts.append(g)
        dets.append((np.array(boxes).reshape(-1, 4), rng.uniform(0, 1, len(boxes))))
    write_coco(gts, dets, 64, tmp_path / "gt.json", tmp_path / "dt.json")
    gt = COCO(str(tmp_path / "gt.json"))
    ev = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "bbox")
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
    ev.params.iouThrs, ev.params.maxDets = np.array([0.5]), [100]
    ev.evaluate()
    ev.accumulate()
    ours = score_detections(dets, gts)
    assert 0.3 < ours["recall"] < 1.0
    assert ours["recall"] == pytest.approx(float(ev.eval["recall"][0, 0, 0, 0]), abs=1e-9)
    assert ours["ap50"] == pytest.approx(float(ev.eval["precision"][0, :, 0, 0, 0].mean()), abs=1e-9)


def test_unknown_or_unavailable_detector(tmp_path):
    from mammosynth.errors import ConfigError
    from mammosynth.evaluate.downstream import check_detector, downstream_detection

    with pytest.raises(ConfigError, match="unknown detector"):
        check_detector("yolo")
    assert check_detector("unet").startswith("unet-segmentation")
    try:
        import monai.apps.detection  # noqa: F401
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(ConfigError, match="RetinaNet needs torchvision and monai"):
            downstream_detection(tmp_path / "x.h5", tmp_path, tmp_path, detector="retinanet")
