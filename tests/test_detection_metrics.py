"""FROC / recall / AP on hand-made cases, and AP cross-checked against pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammosynth.evaluate.detection import Detections, average_precision, box_iou, boxes_from_probability, froc


def test_iou_basic():
    assert box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10]])[0, 0] == pytest.approx(1.0)
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 10, 10]])[0, 0] == pytest.approx(50 / 150)
    assert box_iou([[0, 0, 10, 10]], [[20, 20, 5, 5]])[0, 0] == 0.0


def test_froc_hand_made():
    # image 1: one lesion, found with score .9, one FP at .8; image 2: one lesion missed, FP .7;
    # image 3: normal, FP .95
    ims = [
        Detections(np.array([[0, 0, 10, 10], [50, 50, 10, 10]]), np.array([0.9, 0.8]), np.array([[1, 1, 10, 10]])),
        Detections(np.array([[80, 80, 5, 5]]), np.array([0.7]), np.array([[0, 0, 10, 10]])),
        Detections(np.array([[0, 0, 4, 4]]), np.array([0.95]), np.zeros((0, 4))),
    ]
    r = froc(ims, fppi_points=(0.5, 1.0))
    # thresholds: .95 -> (sens 0, fp 1/3); .9 -> (0.5, 1/3); .8 -> (0.5, 2/3); .7 -> (0.5, 1)
    assert r["sensitivity"] == pytest.approx([0, 0, 0.5, 0.5, 0.5])
    assert r["fppi"] == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 1.0])
    assert r["sensitivity_at"]["0.5"] == 0.5 and r["sensitivity_at"]["1.0"] == 0.5
    assert r["recall"] == 0.5 and r["n_lesions"] == 2
    # area over FPPI in [0, 1]: 0 until 1/3 then 0.5 -> mean sens = 0.5 * 2/3
    assert r["auc"] == pytest.approx(1 / 3, abs=0.01)


def test_duplicate_detection_is_a_false_positive():
    ims = [Detections(np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([0.9, 0.8]), np.array([[0, 0, 10, 10]]))]
    r = froc(ims, fppi_points=(1.0,))
    assert r["recall"] == 1.0 and r["fppi"][-1] == 1.0


def test_average_precision_matches_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    images, gt_anns, dets, ours = [], [], [], []
    for i in range(1, 21):
        images.append({"id": i, "width": 200, "height": 200, "file_name": f"{i}.png"})
        gts = []
        for _ in range(rng.integers(0, 3)):
            x, y, w, h = rng.uniform(0, 150), rng.uniform(0, 150), rng.uniform(15, 45), rng.uniform(15, 45)
            gts.append([x, y, w, h])
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": i, "category_id": 1, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        boxes, scores = [], []
        for g in gts:  # jittered true positives
            if rng.random() < 0.8:
                boxes.append([g[0] + rng.normal(0, 4), g[1] + rng.normal(0, 4), g[2], g[3]])
                scores.append(rng.uniform(0.3, 1))
        for _ in range(rng.integers(0, 3)):  # false positives
            boxes.append([rng.uniform(0, 150), rng.uniform(0, 150), 20, 20])
            scores.append(rng.uniform(0, 0.8))
        for b, s in zip(boxes, scores):
            dets.append({"image_id": i, "category_id": 1, "bbox": [float(v) for v in b], "score": float(s)})
        ours.append(Detections(np.array(boxes).reshape(-1, 4), np.array(scores), np.array(gts).reshape(-1, 4)))
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": gt_anns, "categories": [{"id": 1, "name": "mass"}]}))
    coco = COCO(str(gt_file))
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.params.areaRng = [[0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    ev.params.iouThrs = np.array([0.5])
    ev.params.maxDets = [100]
    ev.evaluate()
    ev.accumulate()
    coco_ap = float(ev.eval["precision"][0, :, 0, 0, 0].mean())
    coco_recall = float(ev.eval["recall"][0, 0, 0, 0])
    assert average_precision(ours, 0.5) == pytest.approx(coco_ap, abs=1e-9)
    assert froc(ours)["recall"] == pytest.approx(coco_recall, abs=1e-9)


def test_boxes_from_probability():
    prob = np.zeros((50, 50))
    prob[5:15, 10:30] = 0.9
    prob[30:40, 30:35] = 0.6
    prob[45, 45] = 0.99  # below min_area
    boxes, scores = boxes_from_probability(prob, 0.5, min_area=4)
    assert boxes.tolist() == [[10, 5, 20, 10], [30, 30, 5, 10]]
    assert scores == pytest.approx([0.9, 0.6])
