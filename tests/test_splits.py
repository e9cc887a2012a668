"""Patient-level splits stratified by label (issue #11, "Splits"): settable fractions,
official hints honoured, normal-only patients split on their own, `data info` warnings."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from mammosynth.cli import main
from mammosynth.data.birads import MARGINS, map_pathology, map_term, SHAPES
from mammosynth.data.records import SPLITS, LesionRecord, MammogramRecord
from mammosynth.data.splits import Patient, label_coverage_warnings, parse_fractions, stratified_splits
from mammosynth.data.store import Store, StoreWriter
from mammosynth.errors import ConfigError


def _lesion(k: int, patient: str, margin: str, shape: str = "", pathology: str = "B", hint=None) -> LesionRecord:
    patch = np.random.default_rng(k).random((20, 20)).astype(np.float32)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    return LesionRecord(source="t", source_id=f"L{k}", patient_id=patient, patch=patch, mask=mask,
                        shape=map_term(shape, SHAPES), margin=map_term(margin, MARGINS),
                        pathology=map_pathology(pathology), split_hint=hint)


def _normal(k: int, patient: str, hint=None) -> MammogramRecord:
    img = np.zeros((40, 30), np.float32)
    img[:, :20] = 0.5
    return MammogramRecord(source="t", source_id=f"N{k}", patient_id=patient, image=img, breast_mask=img > 0,
                           laterality="L", split_hint=hint)


def _write(path, lesions, normals=(), **kw) -> None:
    with StoreWriter(path, patch_size=8, normal_size=(16, 12), **kw) as w:
        for rec in [*lesions, *normals]:
            assert w.add(rec)


def _margins_per_split(path) -> dict[str, Counter]:
    with Store(path) as s:
        split = s.h5["lesions/split"][...]
        margin = s.h5["lesions/margin"][...]
    return {name: Counter(MARGINS[m] for m in margin[split == i] if m >= 0) for i, name in enumerate(SPLITS)}


def _patients_in_one_split(path) -> None:
    with Store(path) as s:
        for group in ("lesions", "normals"):
            seen = defaultdict(set)
            for p, sp in zip(s.h5[f"{group}/patient_id"].asstr()[...], s.h5[f"{group}/split"][...]):
                seen[p].add(int(sp))
            assert all(len(v) == 1 for v in seen.values()), group


def _naive_split(patients: list[str], fractions, seed: int) -> dict[str, int]:
    """The split before issue #11: a seeded shuffle of patient ids cut at the fractions."""
    rng = np.random.default_rng(seed)
    pool = sorted(patients)
    rng.shuffle(pool)
    n = len(pool)
    n_train, n_val = int(round(fractions[0] * n)), max(int(round(fractions[1] * n)), 1)
    n_train = min(n_train, n - n_val - 1)
    return {p: 0 if i < n_train else (1 if i < n_train + n_val else 2) for i, p in enumerate(pool)}


#: One lesion per patient: a common margin and two rare ones (mini-MIAS-like proportions).
MARGIN_OF = ["spiculated"] * 30 + ["circumscribed"] * 6 + ["ill_defined"] * 4


def test_stratified_split_gives_every_class_to_every_split_where_a_naive_shuffle_does_not(tmp_path):
    patients = [f"P{i:02d}" for i in range(len(MARGIN_OF))]
    margin_of = dict(zip(patients, MARGIN_OF))
    seed = 0
    naive = _naive_split(patients, (0.8, 0.1, 0.1), seed)
    naive_test = Counter(margin_of[p] for p, s in naive.items() if s == 2)
    assert naive_test["circumscribed"] == 0 or naive_test["ill_defined"] == 0  # the defect, on this set
    path = tmp_path / "s.h5"
    _write(path, [_lesion(i, p, margin_of[p]) for i, p in enumerate(patients)], split_seed=seed)
    per_split = _margins_per_split(path)
    for name in SPLITS:
        assert set(per_split[name]) == {"spiculated", "circumscribed", "ill_defined"}, (name, per_split[name])
    assert sum(per_split["train"].values()) >= 28  # train still gets the bulk: 40 x 0.8 = 32 wanted
    with Store(path) as s:
        assert s.info()["split_warnings"] == []


@pytest.mark.parametrize("seed", range(6))
def test_stratified_split_on_multi_lesion_patients(seed):
    """Random patients with 1-3 lesions and three label families: patient-level, close to the
    fractions in lesions, and every label with >= 3 patients present in every split."""
    rng = np.random.default_rng(100 + seed)
    patients: dict[str, Patient] = {}
    margins = ["spiculated"] * 10 + ["circumscribed"] * 3 + ["obscured"] + ["ill_defined"] * 2
    for i in range(60):
        p = Patient()
        for _ in range(int(rng.integers(1, 4))):
            for key in (f"margin:{rng.choice(margins)}", f"shape:{rng.choice(['oval', 'irregular', 'irregular'])}",
                        f"pathology:{rng.choice(['benign', 'malignant'])}"):
                p.labels[key] = p.labels.get(key, 0) + 1
            p.size += 1
        patients[f"P{i}"] = p
    fractions = (0.6, 0.2, 0.2)
    mapping = stratified_splits(patients, fractions, seed)
    assert set(mapping) == set(patients)
    sizes = np.zeros(3)
    per_label: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(3))
    for pid, j in mapping.items():
        sizes[j] += patients[pid].size
        for lab, n in patients[pid].labels.items():
            per_label[lab][j] += n
    total = sizes.sum()
    assert np.all(np.abs(sizes - np.asarray(fractions) * total) <= 6), sizes  # within two patients' worth
    for lab, counts in per_label.items():
        holders = sum(1 for p in patients.values() if lab in p.labels)
        if holders >= 3:
            assert (counts > 0).all(), (lab, counts)
    assert stratified_splits(patients, fractions, seed) == mapping  # deterministic


def test_hints_are_honoured_and_trainval_never_reaches_test(tmp_path):
    lesions, k = [], 0
    for i in range(20):  # official training set
        for _ in range(1 + i % 2):
            lesions.append(_lesion(k, f"T{i}", ["spiculated", "circumscribed"][i % 2], hint="trainval"))
            k += 1
    for i in range(5):  # official test set
        lesions.append(_lesion(k, f"E{i}", "spiculated", hint="test"))
        k += 1
    lesions.append(_lesion(k, "FIXED", "circumscribed", hint="train"))
    path = tmp_path / "h.h5"
    _write(path, lesions, [_normal(0, "E0", hint="test")])
    _patients_in_one_split(path)
    with Store(path) as s:
        pid = s.h5["lesions/patient_id"].asstr()[...]
        split = s.h5["lesions/split"][...]
        assert {int(sp) for p, sp in zip(pid, split) if p.startswith("E")} == {2}
        assert {int(sp) for p, sp in zip(pid, split) if p.startswith("T")} == {0, 1}  # val carved from train
        assert int(split[list(pid).index("FIXED")]) == 0
        assert int(s.h5["normals/split"][0]) == 2  # a patient's normals follow the patient


def test_normal_only_patients_are_split_as_their_own_pool(tmp_path):
    path = tmp_path / "n.h5"
    lesions = [_lesion(i, f"P{i}", "spiculated") for i in range(10)]
    normals = [_normal(i, f"Q{i // 2}") for i in range(20)]  # 10 normal-only patients, 2 views each
    _write(path, lesions, normals, split_seed=3)
    _patients_in_one_split(path)
    with Store(path) as s:
        info = s.info()
    assert all(n > 0 for n in info["splits"]["normals"].values())
    assert info["splits"]["normals"]["train"] == 16  # 0.8 of 20 images, whole patients
    assert all(n > 0 for n in info["splits"]["lesions"].values())


def test_parse_fractions():
    assert parse_fractions("0.6,0.2,0.2") == pytest.approx((0.6, 0.2, 0.2))
    assert parse_fractions((0.7, 0.15, 0.15)) == pytest.approx((0.7, 0.15, 0.15))
    assert sum(parse_fractions("0.333,0.333,0.334")) == pytest.approx(1.0)
    assert parse_fractions("1,0,0") == (1.0, 0.0, 0.0)
    for bad in ("0.5,0.5", "a,b,c", "0.9,0.2,0.1", "-0.1,0.6,0.5", "0,0.5,0.5", "nan,0.5,0.5", ""):
        with pytest.raises(ConfigError, match="--split-fractions"):
            parse_fractions(bad)
    with pytest.raises(ConfigError, match="sums to 1.2"):
        StoreWriter("unused.h5", split_fractions=(0.9, 0.2, 0.1))


def test_zero_fraction_splits_stay_empty(tmp_path):
    path = tmp_path / "z.h5"
    _write(path, [_lesion(i, f"P{i}", "spiculated") for i in range(6)], [_normal(0, "Q0")], split_fractions=(1, 0, 0))
    with Store(path) as s:
        info = s.info()
    assert info["splits"]["lesions"] == {"train": 6, "val": 0, "test": 0}
    assert info["split_fractions"] == [1.0, 0.0, 0.0]
    assert "split 'val' has no lesions" in info["split_warnings"]


def test_label_coverage_warnings():
    counts = {
        "train": {"margin": {"circumscribed": 9, "spiculated": 5, "(none)": 3}, "shape": {"oval": 1}, "pathology": {}},
        "val": {"margin": {"circumscribed": 2, "spiculated": 1, "(none)": 0}, "shape": {"oval": 0}, "pathology": {}},
        "test": {"margin": {"circumscribed": 0, "spiculated": 2, "(none)": 0}, "shape": {"oval": 0}, "pathology": {}},
    }
    assert label_coverage_warnings(counts) == [
        "split 'val' has no lesion with shape 'oval' (train 1, test 0)",
        "split 'test' has no lesion with margin 'circumscribed' (train 9, val 2)",
        "split 'test' has no lesion with shape 'oval' (train 1, val 0)",
    ]


def _run(capsys, *argv):
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_data_info_warns_when_a_split_lacks_a_label(tmp_path, capsys):
    path = tmp_path / "w.h5"
    lesions = [_lesion(i, f"P{i}", "circumscribed" if i < 4 else "spiculated", hint="train" if i < 4 else None)
               for i in range(12)]  # every circumscribed patient pinned to train
    _write(path, lesions)
    rc, out, err = _run(capsys, "data", "info", str(path), "--json")
    info = json.loads(out)
    assert rc == 0 and any("'test' has no lesion with margin 'circumscribed'" in w for w in info["split_warnings"])
    assert info["split_labels"]["train"]["margin"]["circumscribed"] == 4
    rc, out, err = _run(capsys, "data", "info", str(path))
    assert rc == 0 and "warning:" in err and "circumscribed" in err


def test_split_fractions_option_on_phantom_and_ingest(tmp_path, capsys):
    import dicom_fixtures as F

    out = tmp_path / "ph.h5"
    rc, stdout, _ = _run(capsys, "data", "phantom", "--out", str(out), "--lesions", "40", "--normals", "0", "--size", "16",
                         "--split-fractions", "0.6,0.2,0.2", "--json")
    assert rc == 0
    info = json.loads(stdout)
    assert info["split_fractions"] == [0.6, 0.2, 0.2] and info["split_method"].startswith("iterative stratification")
    assert info["splits"]["lesions"]["test"] >= 6  # 0.2 of 40, whole patients
    with Store(out) as s:
        assert s.manifest["split_fractions"] == [0.6, 0.2, 0.2]
    F.write_folder_fixture(tmp_path / "f")
    rc, stdout, _ = _run(capsys, "data", "ingest", "folder", "--root", str(tmp_path / "f"), "--out", str(tmp_path / "f.h5"),
                         "--normal-size", "64x52", "--split-fractions", "0.5,0.25,0.25", "--json")
    assert rc == 0 and json.loads(stdout)["split_fractions"] == [0.5, 0.25, 0.25]
    for cmd in (["data", "phantom", "--out", str(tmp_path / "x.h5")],
                ["data", "ingest", "folder", "--root", str(tmp_path / "f"), "--out", str(tmp_path / "x.h5")]):
        rc, _, err = _run(capsys, *cmd, "--split-fractions", "0.7,0.2")
        assert rc == 2 and err.count("\n") == 1 and "--split-fractions must be three numbers" in err
        assert not (tmp_path / "x.h5").exists()


def test_an_overfull_official_test_set_leaves_train_and_val_their_ratio():
    """CBIS-DDSM's official test set holds 22% of its masses, more than a 0.1 test share: the
    rest is shared 0.8 : 0.1 between train and val, so val is not starved (water-filling)."""
    patients = {f"T{i}": Patient({f"margin:{['oval', 'round'][i % 2]}": 1}, 1, (0, 1)) for i in range(90)}
    patients.update({f"E{i}": Patient({"margin:oval": 1}, 1, (2,)) for i in range(60)})
    mapping = stratified_splits(patients, (0.8, 0.1, 0.1), 0)
    counts = Counter(mapping.values())
    assert counts[2] == 60 and counts[1] == 10 and counts[0] == 80  # 90 x 0.1 / 0.9 = 10 to val


@pytest.mark.parametrize("seed", range(4))
def test_patients_with_many_lesions_do_not_overfill_a_small_split(seed):
    """The phantom's patients carry 6-14 lesions each: the rarest-label-first placement must
    not pile them into val/test (a split takes a patient only while it has room for half of
    it, as long as another split has)."""
    rng = np.random.default_rng(seed)
    patients = {}
    for i in range(40):
        p = Patient()
        for _ in range(int(rng.integers(6, 15))):
            for key in (f"margin:{rng.choice(MARGINS)}", f"shape:{rng.choice(SHAPES)}", f"pathology:{rng.choice(['benign', 'malignant'])}"):
                p.labels[key] = p.labels.get(key, 0) + 1
            p.size += 1
        patients[f"P{i}"] = p
    mapping = stratified_splits(patients, (0.8, 0.1, 0.1), seed)
    sizes = np.zeros(3)
    for pid, j in mapping.items():
        sizes[j] += patients[pid].size
    target = np.asarray((0.8, 0.1, 0.1)) * sizes.sum()
    assert np.all(np.abs(sizes - target) <= 7.5), (sizes, target)  # within half of the largest patient
