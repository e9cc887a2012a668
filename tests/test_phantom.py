"""The built-in phantom: determinism, geometry, texture statistics, masses, records, store."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from mammosynth.data.birads import MARGINS, SHAPES
from mammosynth.data.records import DEFAULT_CONTEXT, SPLITS
from mammosynth.data.store import Store
from mammosynth.errors import ConfigError
from mammosynth.phantom import (
    PhantomBreast,
    malignancy_probability,
    phantom_lesion_records,
    phantom_normal_records,
    power_law_noise,
    power_spectrum_slope,
    render_breast,
    render_mass,
    write_phantom_store,
)
from tests.conftest import shared_data

SMALL = (384, 312)  # 0.53 mm/px: the same breast as (1024, 832), drawn coarser


@pytest.fixture(scope="module")
def cc_breast() -> PhantomBreast:
    return render_breast(3, SMALL, view="CC", density="B")


@pytest.fixture(scope="module")
def full_breasts() -> dict[str, PhantomBreast]:
    """Full-size (1024, 832) breasts, one per view: texture statistics need the real scale."""
    return {v: render_breast(11, view=v, density="C") for v in ("CC", "MLO")}


def _perimeter_ratio(mask: np.ndarray) -> float:
    """perimeter^2 / area (4 pi for a disc): boundary pixels counted as the perimeter."""
    boundary = mask & ~ndi.binary_erosion(mask)
    return float(boundary.sum()) ** 2 / float(mask.sum())


# -- full mammograms ----------------------------------------------------------------------
def test_breast_is_deterministic_per_seed() -> None:
    a = render_breast(5, SMALL, view="MLO", density="C")
    b = render_breast(5, SMALL, view="MLO", density="C")
    c = render_breast(6, SMALL, view="MLO", density="C")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.breast_mask, b.breast_mask)
    assert not np.array_equal(a.image, c.image)


def test_breast_shapes_dtypes_ranges(cc_breast: PhantomBreast) -> None:
    b = cc_breast
    assert b.image.shape == SMALL and b.image.dtype == np.float32
    assert b.breast_mask.shape == SMALL and b.breast_mask.dtype == bool
    assert b.pectoral_mask.shape == SMALL and b.pectoral_mask.dtype == bool
    assert 0.0 <= b.image.min() and b.image.max() <= 1.0
    # Background is 0, the breast is bright, and it covers a plausible part of the canvas.
    assert b.image[~b.breast_mask].max() == 0.0
    assert 0.3 < b.breast_mask.mean() < 0.8
    assert 0.1 < float(np.median(b.image[b.breast_mask])) < 0.7
    assert {"view", "laterality", "density", "seed", "pixel_spacing_mm"} <= set(b.meta)
    assert b.meta["pixel_spacing_mm"] == pytest.approx(204.8 / SMALL[0])


def test_left_has_chest_wall_at_x0_and_right_is_its_mirror() -> None:
    left = render_breast(8, SMALL, view="CC", laterality="L")
    right = render_breast(8, SMALL, view="CC", laterality="R")
    np.testing.assert_array_equal(right.image, left.image[:, ::-1])
    # Chest wall column is mostly breast; the opposite edge is background.
    assert left.breast_mask[:, 0].mean() > 0.6 and left.breast_mask[:, -1].mean() == 0.0
    assert left.meta["nipple_xy"][0] > SMALL[1] / 2 > right.meta["nipple_xy"][0]


def test_mlo_has_pectoral_in_the_upper_chest_wall_corner_and_cc_none(cc_breast: PhantomBreast) -> None:
    assert not cc_breast.pectoral_mask.any()
    mlo = render_breast(4, SMALL, view="MLO", laterality="L")
    pect = mlo.pectoral_mask
    assert 0.03 < pect.mean() < 0.3
    assert pect[0, 0] and not pect[-1, 0] and (pect <= mlo.breast_mask).all()
    ys, xs = np.nonzero(pect)
    assert xs.mean() < SMALL[1] / 3 and ys.mean() < SMALL[0] / 3
    # The muscle is brighter than the fat-rich breast next to it.
    assert mlo.image[pect].mean() > np.median(mlo.image[mlo.breast_mask & ~pect])


def test_density_categories_order_the_fibroglandular_fraction() -> None:
    fractions = [render_breast(2, SMALL, density=d).meta["fibroglandular_fraction"] for d in "ABCD"]
    assert fractions == sorted(fractions) and fractions[-1] - fractions[0] > 0.3


def test_intensity_falls_off_towards_the_skin_with_a_bright_skin_line(full_breasts) -> None:
    b = full_breasts["CC"]
    depth = ndi.distance_transform_edt(np.pad(b.breast_mask, ((0, 0), (8, 0)), mode="edge"))[:, 8:] * 0.2
    ring = lambda lo, hi: float(b.image[(depth >= lo) & (depth < hi) & b.breast_mask].mean())  # noqa: E731
    edge, skin, subcutaneous = ring(0, 0.6), ring(1.5, 2.5), ring(6, 9)
    assert edge < skin and subcutaneous < skin  # thickness falloff at the edge, skin line inside


def test_power_law_noise_has_the_requested_slope() -> None:
    field = power_law_noise(np.random.default_rng(0), (256, 256), beta=3.0)
    assert field.dtype == np.float32 and abs(field.mean()) < 1e-4 and field.std() == pytest.approx(1.0, abs=1e-3)
    beta, n = power_spectrum_slope(field, np.ones_like(field, bool))
    assert n == 9 and beta == pytest.approx(3.0, abs=0.3)


def test_parenchyma_power_spectrum_slope_is_mammographic(full_breasts) -> None:
    """Real mammograms: beta ~ 2.5-3.5 in the breast interior (Burgess 2001)."""
    for view, b in full_breasts.items():
        interior = ndi.binary_erosion(b.breast_mask & ~b.pectoral_mask, iterations=40)
        beta, n = power_spectrum_slope(b.image, interior)
        assert n >= 10, view
        assert 2.6 < beta < 3.8, (view, beta)


def test_bad_arguments_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="view"):
        render_breast(0, SMALL, view="ML")
    with pytest.raises(ConfigError, match="density"):
        render_breast(0, SMALL, density="E")
    with pytest.raises(ConfigError, match="laterality"):
        render_breast(0, SMALL, laterality="X")


# -- masses -------------------------------------------------------------------------------
def test_every_shape_and_margin_renders_inside_the_breast(cc_breast: PhantomBreast) -> None:
    b = cc_breast
    cx, cy = int(b.meta["nipple_xy"][0] * 0.5), SMALL[0] // 2
    for shape in SHAPES:
        for margin in MARGINS:
            img, mask = render_mass(b, (cx, cy), 30.0, shape, margin, seed=1)
            assert img.shape == SMALL and img.dtype == np.float32 and mask.dtype == bool
            assert mask.sum() > 200, (shape, margin)
            assert (mask <= b.breast_mask).all()
            assert 0.0 <= img.min() and img.max() <= 1.0
            # A mass adds attenuation: brighter where it is, untouched far away.
            assert img[mask].mean() > b.image[mask].mean() + 0.03, (shape, margin)
            np.testing.assert_array_equal(img[:, :40], b.image[:, :40])
            assert not np.shares_memory(img, b.image)


def test_mass_is_deterministic_per_seed(cc_breast: PhantomBreast) -> None:
    a = render_mass(cc_breast, (120, 190), 28.0, "irregular", "spiculated", seed=4)
    b = render_mass(cc_breast, (120, 190), 28.0, "irregular", "spiculated", seed=4)
    c = render_mass(cc_breast, (120, 190), 28.0, "irregular", "spiculated", seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_spiculated_masks_have_more_boundary_than_circumscribed_round(cc_breast: PhantomBreast) -> None:
    for seed in range(3):
        _, round_mask = render_mass(cc_breast, (120, 190), 40.0, "round", "circumscribed", seed)
        _, spic_mask = render_mass(cc_breast, (120, 190), 40.0, "round", "spiculated", seed)
        assert _perimeter_ratio(spic_mask) > 1.5 * _perimeter_ratio(round_mask)
        assert _perimeter_ratio(round_mask) < 1.3 * 4 * np.pi * 1.3  # near-disc (pixel perimeter)


def test_margins_differ_in_edge_sharpness(cc_breast: PhantomBreast) -> None:
    """Ill-defined edges are blurred: a smaller intensity step across the outline."""

    def edge_step(margin: str, seed: int) -> float:
        img, mask = render_mass(cc_breast, (120, 190), 40.0, "round", margin, seed)
        inner = mask & ~ndi.binary_erosion(mask, iterations=2)
        outer = ndi.binary_dilation(mask, iterations=2) & ~mask & cc_breast.breast_mask
        return float(img[inner].mean() - img[outer].mean())

    sharp = np.mean([edge_step("circumscribed", s) for s in range(3)])
    blurred = np.mean([edge_step("ill_defined", s) for s in range(3)])
    assert sharp > 1.5 * blurred


def test_bad_mass_arguments_raise(cc_breast: PhantomBreast) -> None:
    with pytest.raises(ConfigError, match="margin"):
        render_mass(cc_breast, (100, 100), 20.0, "round", "fuzzy", 0)
    with pytest.raises(ConfigError, match="shape"):
        render_mass(cc_breast, (100, 100), 20.0, "square", "spiculated", 0)
    with pytest.raises(ConfigError, match="outside"):
        render_mass(cc_breast, (5000, 100), 20.0, "round", "obscured", 0)


# -- records and the store ----------------------------------------------------------------
@pytest.fixture(scope="module")
def lesion_records() -> list:
    return list(phantom_lesion_records(40, seed=1, full_shape=SMALL))


def test_lesion_records_are_balanced_labelled_and_consistent(lesion_records) -> None:
    recs = lesion_records
    assert len(recs) == 40
    # The first 20 are one full cycle of the 20 shape x margin pairs.
    assert len({(r.shape.value, r.margin.value) for r in recs[:20]}) == 20
    assert len({r.source_id for r in recs}) == 40
    patients = {r.patient_id for r in recs}
    assert 2 <= len(patients) <= 7 and all(p.startswith("PH") and len(p) == 6 for p in patients)
    for r in recs:
        assert r.source == "phantom" and r.patch.shape == r.mask.shape and r.patch.shape[0] == r.patch.shape[1]
        assert r.patch.dtype == np.float32 and r.mask.dtype == bool and r.mask.any()
        assert r.shape.raw == r.shape.value.upper() and r.shape.status == "exact"
        assert r.margin.raw == r.margin.value.upper() and r.pathology.value in ("benign", "malignant")
        ys, xs = np.nonzero(r.mask)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert r.lesion_size == (h, w) and r.bbox[2:] == (w, h)
        assert r.patch.shape[0] == round(max(h, w) * (1 + 2 * DEFAULT_CONTEXT))
        assert r.laterality in ("L", "R") and r.view in ("CC", "MLO") and r.pixel_spacing_mm > 0
        # The crop lies inside the full image (no invented background beyond the detector edge)
        # and holds the whole lesion bounding box.
        cx0, cy0 = r.extra["crop_xy"]
        side = r.patch.shape[0]
        assert 0 <= cx0 and cx0 + side <= SMALL[1] and 0 <= cy0 and cy0 + side <= SMALL[0]
        bx, by, bw, bh = r.bbox
        assert cx0 <= bx and bx + bw <= cx0 + side and cy0 <= by and by + bh <= cy0 + side
        # Plausible mass sizes: 8-35 mm (spicules may extend the bounding box).
        assert 7.0 <= max(h, w) * r.pixel_spacing_mm <= 35.0 * 2.6
    a = next(phantom_lesion_records(1, seed=1, full_shape=SMALL))
    np.testing.assert_array_equal(a.patch, recs[0].patch)


def test_pathology_follows_the_margin(lesion_records) -> None:
    assert malignancy_probability("irregular", "spiculated") > 0.9
    assert malignancy_probability("round", "circumscribed") < 0.1
    recs = lesion_records
    malignant = {m: np.mean([r.pathology.value == "malignant" for r in recs if r.margin.value == m]) for m in MARGINS}
    assert malignant["spiculated"] > malignant["circumscribed"]


def test_normal_records_cycle_views_sides_and_densities() -> None:
    shape = (256, 208)
    recs = list(phantom_normal_records(8, seed=0, full_shape=shape))
    assert [r.view for r in recs] == ["CC", "MLO"] * 4
    assert [r.laterality for r in recs] == ["L", "L", "R", "R"] * 2
    assert [r.density for r in recs] == ["A", "A", "B", "B", "C", "C", "D", "D"]
    assert recs[0].patient_id == recs[1].patient_id != recs[2].patient_id
    for r in recs:
        assert r.image.shape == r.breast_mask.shape == shape and r.breast_mask.any()
        assert r.image[~r.breast_mask].max() == 0.0
    # A right breast has its chest wall on the right.
    assert recs[2].breast_mask[:, -1].mean() > 0.5 and recs[2].breast_mask[:, 0].mean() == 0.0


def test_write_phantom_store_round_trips(tmp_path) -> None:
    out = tmp_path / "phantom.h5"
    manifest = write_phantom_store(out, n_lesions=20, n_normals=2, patch_size=32, full_shape=(320, 260),
                                   normal_size=(160, 130), seed=3, progress=False)
    assert manifest["n_lesions"] == 20 and manifest["n_normals"] == 2
    prov = manifest["provenance"]
    assert prov["source"] == "phantom" and prov["seed"] == 3 and prov["phantom_version"] == 2
    with Store(out) as store:
        assert store.n_lesions == 20 and store.n_normals == 2 and store.patch_size == 32
        les = store.lesions()
        assert les.patch.shape == (20, 32, 32) and les.mask.any(axis=(1, 2)).all()
        assert (les.shape >= 0).all() and (les.margin >= 0).all() and (les.pathology >= 0).all()
        info = store.info()
        assert info["n_skipped"] == 0
        # One full cycle of the 20 pairs: exactly balanced.
        assert all(info["shape"][s] == 5 for s in SHAPES) and all(info["margin"][m] == 4 for m in MARGINS)
        # Patient-level splits: no patient in two splits; every split used.
        split = store.h5["lesions/split"][...]
        pids = np.asarray(les.patient_id)
        for p in set(les.patient_id):
            assert len(set(split[pids == p])) == 1
        assert set(split) <= set(range(len(SPLITS)))
        normal = store.normal(0)
        assert normal["image"].shape == (160, 130) and normal["breast_mask"].any()
        assert (store.lesion_sizes() > 0).all()


def test_phantom_matches_the_reference_mammograms() -> None:
    """Phantom vs a real for-presentation mammogram (shared data, ~0.1 mm/px, so 2x binned):
    power-spectrum slope and the intensity histogram inside the breast."""
    from PIL import Image

    path = shared_data("reference-mammograms", "0_L-CC.png")
    ref = np.asarray(Image.open(path), dtype=np.float32) / 4095.0
    ref = ref[: ref.shape[0] // 2 * 2, : ref.shape[1] // 2 * 2].reshape(ref.shape[0] // 2, 2, -1, 2).mean(axis=(1, 3))
    ref_mask = ndi.binary_opening(ref > 0.02, iterations=2)
    phantom = render_breast(21, view="CC", density="B")
    beta_ref, _ = power_spectrum_slope(ref, ndi.binary_erosion(ref_mask, iterations=40))
    beta_ph, _ = power_spectrum_slope(phantom.image, ndi.binary_erosion(phantom.breast_mask, iterations=40))
    assert abs(beta_ph - beta_ref) < 0.6, (beta_ph, beta_ref)
    q = [25, 50, 75]
    np.testing.assert_allclose(np.percentile(phantom.image[phantom.breast_mask], q),
                               np.percentile(ref[ref_mask], q), atol=0.08)


# -- acquisition, styles, lesion options (issue #15) --------------------------------------------
def _interior_noise(b: PhantomBreast) -> float:
    from mammosynth.phantom.realism import immerkaer_noise

    interior = ndi.binary_erosion(b.breast_mask & ~b.pectoral_mask, iterations=max(4, b.image.shape[0] // 20))
    return immerkaer_noise(b.image, interior)


def test_immerkaer_noise_recovers_white_noise_and_ignores_planes() -> None:
    from mammosynth.phantom.realism import immerkaer_noise

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:200, 0:200].astype(np.float32)
    plane = 0.3 + 0.001 * xx - 0.002 * yy
    mask = np.ones((200, 200), bool)
    assert immerkaer_noise(plane, mask) < 1e-6
    noisy = plane + rng.normal(0, 0.05, plane.shape)
    assert immerkaer_noise(noisy, mask) == pytest.approx(0.05, rel=0.05)


def test_noise_grows_as_pixels_shrink_and_as_dose_falls() -> None:
    """Quantum noise: fewer quanta per smaller pixel, and per pixel at lower dose. The noise
    field is the image minus the same breast at the highest dose (same tissue, same seed)."""

    def noise_sd(shape: tuple[int, int], dose: float) -> float:
        a = render_breast(7, shape, density="B", dose=dose)
        ref = render_breast(7, shape, density="B", dose=100.0)
        inner = ndi.binary_erosion(a.breast_mask, iterations=shape[0] // 20)
        return float((a.image - ref.image)[inner].std())

    coarse, fine = noise_sd((256, 208), 1.0), noise_sd((512, 416), 1.0)   # 0.8 and 0.4 mm/px
    assert 1.6 < fine / coarse < 2.4  # sd ~ 1 / pixel side
    low, high = noise_sd((256, 208), 0.25), noise_sd((256, 208), 4.0)
    assert 1.6 < low / coarse < 2.4 and 1.6 < coarse / high < 2.4  # sd ~ 1 / sqrt(dose)


def test_film_style_is_a_brighter_lower_noise_film_look() -> None:
    ffdm = render_breast(9, SMALL, view="MLO", density="B")
    film = render_breast(9, SMALL, view="MLO", density="B", style="film")
    np.testing.assert_array_equal(film.breast_mask, ffdm.breast_mask)
    assert film.meta["style"] == "film" and film.image.dtype == np.float32
    assert film.image[~film.breast_mask].max() == 0.0 and film.image.max() <= 1.0
    # Film (like mini-MIAS): the interior is bright, the un-equalised periphery darker.
    assert np.median(film.image[film.breast_mask]) > np.median(ffdm.image[ffdm.breast_mask]) + 0.1
    depth = ndi.distance_transform_edt(np.pad(film.breast_mask, 8, mode="edge"))[8:-8, 8:-8] * film.meta["pixel_spacing_mm"]
    assert film.image[(depth > 1) & (depth < 5)].mean() < film.image[depth > 30].mean() - 0.1
    with pytest.raises(ConfigError, match="style"):
        render_breast(0, SMALL, style="xeroradiograph")
    with pytest.raises(ConfigError, match="dose"):
        render_breast(0, SMALL, dose=0.0)


def test_mass_contrast_follows_its_excess_attenuation(cc_breast: PhantomBreast) -> None:
    """A mass as dense as gland still shows over fat (it displaces fat); more excess, brighter."""
    b = cc_breast
    site = (int(b.meta["nipple_xy"][0] * 0.5), SMALL[0] // 2)
    base, mask = render_mass(b, site, 30.0, "round", "circumscribed", seed=2, contrast_range=(0.0, 0.0))
    more, mask2 = render_mass(b, site, 30.0, "round", "circumscribed", seed=2, contrast_range=(0.1, 0.1))
    np.testing.assert_array_equal(mask, mask2)
    gain0 = float((base - b.image)[mask].mean())
    gain1 = float((more - b.image)[mask].mean())
    assert 0.0 < gain0 < gain1
    # Glandular-like: the mass is not brighter than the breast's densest tissue.
    assert np.percentile(more[mask], 50) < np.percentile(b.image[b.breast_mask], 99.5)


def test_lesion_records_honour_size_and_contrast_ranges(tmp_path) -> None:
    recs = list(phantom_lesion_records(12, seed=2, full_shape=SMALL, size_range_mm=(5.0, 8.0)))
    assert all(4.0 <= r.extra["diameter_mm"] <= 8.0 for r in recs)
    with pytest.raises(ConfigError, match="size range"):
        next(phantom_lesion_records(1, size_range_mm=(20.0, 10.0)))
    with pytest.raises(ConfigError, match="contrast range"):
        next(phantom_lesion_records(1, contrast_range=(0.2, 0.1)))
    out = tmp_path / "subtle.h5"
    manifest = write_phantom_store(out, n_lesions=4, n_normals=1, patch_size=32, full_shape=(320, 260), seed=1,
                                   progress=False, mass_contrast_range=(0.0, 0.02), mass_size_range_mm=(6.0, 10.0),
                                   style="film")
    prov = manifest["provenance"]
    assert prov["mass_contrast_range"] == [0.0, 0.02] and prov["diameter_mm"]["range"] == [6.0, 10.0]
    assert prov["style"] == "film"


def test_realism_stats_of_a_phantom_are_finite_and_in_range(full_breasts) -> None:
    from mammosynth.phantom.realism import realism_stats

    s = realism_stats(full_breasts["MLO"].image, full_breasts["MLO"].breast_mask, 0.2)
    assert s["n_tiles"] > 10 and 2.0 < s["beta"] < 3.6
    assert 0.0 < s["p5"] < s["p50"] < s["p95"] <= 1.0 and 0.0 < s["noise"] < 0.1 and 0.0 < s["tile_cv"] < 1.0


def test_real_breast_mask_keeps_the_breast_and_drops_labels() -> None:
    from mammosynth.phantom.realism import bin2, real_breast_mask

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:256, 0:256]
    breast = (xx ** 2 + (yy - 128) ** 2) < 100 ** 2
    label = (yy > 20) & (yy < 40) & (xx > 200) & (xx < 240)  # a film label: bright, separate
    img = np.where(breast, 0.6, 0.0) + np.where(label, 0.9, 0.0) + rng.normal(0, 0.02, (256, 256))
    mask = real_breast_mask(img.astype(np.float32))
    assert mask.shape == img.shape and not mask[label].any()
    assert (mask & breast).sum() / breast.sum() > 0.97 and (mask & ~breast).sum() / breast.sum() < 0.03
    assert bin2(img).shape == (128, 128) and bin2(img)[0, 0] == pytest.approx(img[:2, :2].mean())
