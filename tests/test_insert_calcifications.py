"""``insert --lesion-type calcification``: procedural clusters in a user's mammograms with
COCO that pycocotools loads (boxes equal the masks' extents, one keypoint per calcification
inside the cluster), pixels bit-exact outside the cluster, the cluster size model in mm, and
individual calcifications 0.1-1 mm at the target's own spacing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammosynth.cli import main
from mammosynth.synth.insert import PRIOR_CLUSTER_DIAMETER_MM, cluster_size_model, insert_lesions
from mammosynth.phantom import write_phantom_store
from tests.conftest import shared_data
from tests.dicom_fixtures import synthetic_breast, write_png


def _inputs(root: Path) -> Path:
    img = synthetic_breast(400, 320, "L", seed=1)
    write_png(root / "a_L_CC.png", np.round(img * 4095).astype(np.uint16))
    write_png(root / "b_R_CC.png", np.round(img[:, ::-1] * 4095).astype(np.uint16))  # a right breast: flipped
    return root


def test_cluster_coco_loads_boxes_match_masks_and_points_lie_in_clusters(tmp_path):
    from pycocotools.coco import COCO

    src = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    rep = insert_lesions(None, None, src, 4, out, seed=3, pixel_spacing=0.1, progress=False,
                         lesion_type="calcification", yolo=True)
    assert rep.written == 4, rep.as_dict()
    coco = COCO(str(out / "annotations.json"))
    assert coco.loadCats(2)[0]["name"] == "calcification"
    for img in coco.loadImgs(coco.getImgIds()):
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        mask = coco.annToMask(ann).astype(bool)
        ys, xs = np.nonzero(mask)
        assert ann["category_id"] == 2 and ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        kp = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        assert ann["num_keypoints"] == len(kp) == ann["attributes"]["n_calcifications"] >= 1 and (kp[:, 2] == 2).all()
        ij = np.floor(kp[:, :2] + 0.5).astype(int)
        assert mask[ij[:, 1], ij[:, 0]].all()  # every calcification inside its cluster, right breasts too
        sizes = np.asarray(ann["attributes"]["calcification_sizes_mm"])
        assert sizes.min() >= 0.1 and sizes.max() <= 1.0
        source = src / ann["attributes"]["source_file"]
        before, after = np.asarray(Image.open(source)), np.asarray(Image.open(out / img["file_name"]))
        assert after.dtype == before.dtype and after.shape == before.shape
        changed = after != before
        assert changed.any() and not (changed & ~mask).any()  # bit-exact outside the cluster
        assert (after[changed].astype(int) >= before[changed]).all()  # calcium only brightens
        assert after[ij[:, 1], ij[:, 0]].astype(int).sum() > before[ij[:, 1], ij[:, 0]].astype(int).sum()
        assert ann["attributes"]["morphology"] and ann["attributes"]["distribution"]
        line = (out / "labels" / (Path(img["file_name"]).stem + ".txt")).read_text().split()
        assert line[0] == "1"  # YOLO class 1 = calcification
    assert "1: calcification" in (out / "yolo.yaml").read_text()
    report = json.loads((out / "insert_report.json").read_text())
    assert report["lesion_type"] == "calcification" and report["size_model"]["source"].startswith("default prior")


def test_same_seed_same_clusters_and_given_labels(tmp_path):
    src = _inputs(tmp_path / "in")
    kw = dict(seed=5, pixel_spacing=0.1, progress=False, lesion_type="calcification", morphology="fine-linear-branching",
              distribution="linear")
    insert_lesions(None, None, src, 2, tmp_path / "a", **kw)
    insert_lesions(None, None, src, 2, tmp_path / "b", **kw)
    a, b = (json.loads((tmp_path / d / "annotations.json").read_text())["annotations"] for d in "ab")
    assert [x["keypoints"] for x in a] == [x["keypoints"] for x in b]
    assert {(x["attributes"]["morphology"], x["attributes"]["distribution"]) for x in a} == {("fine_linear_branching", "linear")}


def test_cluster_size_model_from_a_store_and_the_prior(tmp_path):
    store = tmp_path / "p.h5"
    write_phantom_store(store, 4, 0, 16, full_shape=(256, 208), seed=0, progress=False, n_calcifications=12)
    model = cluster_size_model(store)
    assert model.n >= 2 and "calcification clusters" in model.source
    assert 2.0 < model.mean.max() < 60.0  # the phantom's clusters, in mm: not the masses
    prior = cluster_size_model(None)
    assert prior.isotropic and tuple(prior.mean) == (PRIOR_CLUSTER_DIAMETER_MM[0],) * 2
    rows = [line.split() for line in (shared_data("mini-mias") / "Info.txt").read_text().splitlines()]
    radii = [float(r[6]) for r in rows if len(r) >= 7 and r[2] == "CALC"]
    d = 2 * np.array(radii) * 0.2
    assert len(d) == 15 and d.mean() == pytest.approx(PRIOR_CLUSTER_DIAMETER_MM[0], abs=0.05)
    assert d.std() == pytest.approx(PRIOR_CLUSTER_DIAMETER_MM[1], abs=0.05)


def test_insert_cli_calcifications_and_one_line_errors(tmp_path, capsys):
    src = _inputs(tmp_path / "in")
    rc = main(["insert", "--lesion-type", "calcification", "--normals", str(src), "--n", "2", "--out", str(tmp_path / "o"),
               "--pixel-spacing", "0.1", "--morphology", "punctate", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["written"] == 2
    rc = main(["insert", "--normals", str(src), "--n", "1", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc != 0 and "needs --masks" in err and len(err.strip().splitlines()) == 1
    rc = main(["insert", "--lesion-type", "calcification", "--morphology", "popcorn", "--normals", str(src), "--n", "1",
               "--out", str(tmp_path / "p"), "--pixel-spacing", "0.1"])
    err = capsys.readouterr().err
    assert rc != 0 and "popcorn" in err and len(err.strip().splitlines()) == 1
