"""The synthetic-set writer: COCO loads in pycocotools, manifest columns, PNG and DICOM round trips; a set
appears whole or not at all, never overwrites without asking, and leaves no debris."""

from __future__ import annotations

import csv
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammosynth.errors import DataError
from mammosynth.synth.writer import (Lesion, SyntheticSetWriter, clean_stale_siblings, load_png, mask_bbox, prepare_output_dir,
                                     read_manifest)


def _mask(h=40, w=50):
    m = np.zeros((h, w), bool)
    m[5:15, 10:30] = True
    return m


def test_coco_manifest_and_images(tmp_path):
    from pycocotools.coco import COCO

    img = np.linspace(0, 1, 40 * 50, dtype=np.float32).reshape(40, 50)
    with SyntheticSetWriter(tmp_path, method="test", run="r1", dicom=True) as w:
        w.add(img, [Lesion(_mask(), shape="oval", margin="spiculated")], seed=3, source_ids=["a", "b"], weights=[0.25, 0.75])
        w.add(img)  # an image without a lesion
    coco = COCO(str(tmp_path / "annotations.json"))
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert ann["bbox"] == [10.0, 5.0, 20.0, 10.0] and ann["area"] == 200
    assert (coco.annToMask(ann) == _mask()).all()
    assert ann["attributes"]["margin"] == "spiculated" and ann["attributes"]["seed"] == 3
    rows = list(csv.DictReader(open(tmp_path / "manifest.csv")))
    assert len(rows) == 2 and rows[0]["weights"] == "0.25;0.75" and rows[0]["source_ids"] == "a;b"
    back = load_png(tmp_path / rows[0]["file"])
    assert np.abs(back - img).max() < 1 / 65535 + 1e-6
    ds = pydicom.dcmread(tmp_path / "dicom" / "test_000001.dcm")
    assert "SYNTHETIC" in ds.ImageType and ds.BitsStored == 16
    assert np.abs(ds.pixel_array / 65535.0 - img).max() < 1e-4


def test_mask_shape_mismatch_is_refused(tmp_path):
    with SyntheticSetWriter(tmp_path, method="t") as w, pytest.raises(ValueError, match="differs"):
        w.add(np.zeros((10, 10)), [Lesion(np.ones((5, 5), bool))])


def _siblings(folder):
    """Hidden temporary folders beside ``folder`` (what a run in progress or killed leaves)."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def _write_set(out, n=2, value=0.5, **kw):
    with SyntheticSetWriter(out, method="t", **kw) as w:
        for _ in range(n):
            w.add(np.full((8, 8), value), [Lesion(_mask(8, 8) | True)])
    return out


def test_set_appears_whole_at_close(tmp_path):
    out = tmp_path / "sets" / "a"
    with SyntheticSetWriter(out, method="t") as w:
        w.add(np.zeros((8, 8)))
        assert not out.exists()  # nothing under the final name while the set is incomplete
        assert w.out == out and w.work_dir.parent == out.parent and (w.work_dir / "images").is_dir()
        (w.work_dir / "strip.png").write_bytes(b"x")  # callers' extra files travel with the set
    assert sorted(p.name for p in out.iterdir()) == ["annotations.json", "images", "manifest.csv", "masks", "strip.png"]
    assert _siblings(out) == []
    assert len(read_manifest(out)) == 1


def test_failed_run_leaves_no_set_and_no_debris(tmp_path):
    out = tmp_path / "new" / "deeper" / "set"
    with pytest.raises(RuntimeError):
        with SyntheticSetWriter(out, method="t") as w:
            w.add(np.zeros((8, 8)), [Lesion(_mask(8, 8) | True)])
            raise RuntimeError("crash")
    assert not (tmp_path / "new").exists()  # the set folder and the parents the writer made are gone
    assert list(tmp_path.iterdir()) == []
    assert mask_bbox(np.zeros((3, 3), bool)) is None


def test_rle_from_the_bounding_box_equals_pycocotools():
    """mask_to_rle counts runs inside the mask's box only; it must equal pycocotools' own encoding."""
    from pycocotools import mask as mask_utils

    from mammosynth.synth.writer import mask_to_rle

    rng = np.random.default_rng(0)
    for i in range(400):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        m = rng.random((h, w)) < rng.random()
        if i % 3 == 0:  # a compact blob somewhere, with empty columns either side
            m[:] = False
            m[rng.integers(0, h): rng.integers(0, h) + 3, rng.integers(0, w): rng.integers(0, w) + 4] = True
        if i % 11 == 0:
            m[:] = i % 2 == 0
        ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        ref["counts"] = ref["counts"].decode("ascii")
        assert mask_to_rle(m) == ref


def test_non_empty_folder_is_refused_without_overwrite(tmp_path):
    out = _write_set(tmp_path / "s", value=0.25)
    before = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    with pytest.raises(DataError, match=r"s: output folder is not empty; pass --overwrite to replace it"):
        SyntheticSetWriter(out, method="t")
    with pytest.raises(DataError, match="not empty"):
        prepare_output_dir(out)
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == before
    (tmp_path / "e").mkdir()
    _write_set(tmp_path / "e")  # an empty folder is fine
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="exists and is not a folder"):
        SyntheticSetWriter(tmp_path / "f", method="t", overwrite=True)


def test_overwrite_replaces_the_old_set_only_once_the_new_one_is_whole(tmp_path):
    out = _write_set(tmp_path / "s", n=3, value=0.25)
    (out / "images" / "orphan.png").write_bytes(b"left by an old run")
    with pytest.raises(RuntimeError):  # a failed replacement keeps the old set as it was
        with SyntheticSetWriter(out, method="t", overwrite=True) as w:
            w.add(np.ones((8, 8)))
            raise RuntimeError("crash")
    assert len(read_manifest(out)) == 3 and (out / "images" / "orphan.png").exists()
    with SyntheticSetWriter(out, method="t", overwrite=True) as w:
        w.add(np.ones((8, 8)))
        assert len(read_manifest(out)) == 3  # still the old set while the new one is written
    assert len(read_manifest(out)) == 1 and not (out / "images" / "orphan.png").exists()
    assert sorted(p.name for p in (out / "images").iterdir()) == ["t_000001.png"]
    assert _siblings(out) == []


def test_overwrite_never_replaces_a_folder_that_is_not_a_set(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="not a synthetic set"):
        SyntheticSetWriter(home, method="t", overwrite=True)
    assert (home / "thesis.tex").read_text() == "years of work"


def test_symlinked_output_folder_is_replaced_at_its_target(tmp_path):
    target = _write_set(tmp_path / "real", n=2)
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    _write_set(link, n=1, overwrite=True)
    assert link.is_symlink() and len(read_manifest(link)) == 1 and len(read_manifest(target)) == 1


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_siblings_of_killed_runs_are_removed_and_only_those(tmp_path):
    from mammosynth.synth.writer import STALE_AFTER_S, _host_tag

    out = tmp_path / "s"
    host, other = _host_tag(), "0" * 8 if _host_tag() != "0" * 8 else "1" * 8

    def sibling(kind, host_tag, pid, age_s=0.0):
        p = tmp_path / f".s.mammosynth-{kind}-{host_tag}-{pid}-{secrets.token_hex(4)}"
        (p / "images").mkdir(parents=True)
        if age_s:
            t = time.time() - age_s
            for q in (p / "images", p):
                os.utime(q, (t, t))
        return p.name

    dead = sibling("partial", host, _dead_pid())
    alive = sibling("partial", host, os.getpid())  # a run in progress (this process)
    remote = sibling("partial", other, 1)  # another machine's run: its pid means nothing here
    remote_old = sibling("partial", other, 1, age_s=STALE_AFTER_S + 60)
    (tmp_path / ".s.keep").mkdir()  # not named by us: never touched
    (tmp_path / ".t.mammosynth-partial-00000000-1-00000000").mkdir()  # a sibling of another set
    removed = clean_stale_siblings(out)
    assert sorted(p.name for p in removed) == sorted([dead, remote_old])
    assert sorted(_siblings(out)) == sorted([alive, remote, ".s.keep"])
    assert (tmp_path / ".t.mammosynth-partial-00000000-1-00000000").exists()


def test_a_set_moved_aside_by_a_killed_replacement_is_restored(tmp_path):
    from mammosynth.synth.writer import _host_tag

    old = _write_set(tmp_path / "s", n=2)
    aside = tmp_path / f".s.mammosynth-replaced-{_host_tag()}-{_dead_pid()}-{secrets.token_hex(4)}"
    old.rename(aside)  # killed between the two renames: no set under the final name
    prepare_output_dir(tmp_path / "s", overwrite=True)
    assert len(read_manifest(tmp_path / "s")) == 2 and not aside.exists()


_KILLED_WRITER = """
import sys, time
import numpy as np
from mammosynth.synth.writer import SyntheticSetWriter
with SyntheticSetWriter(sys.argv[1], method="t") as w:
    for i in range(1000):
        w.add(np.zeros((8, 8)))
        if i == 3:
            print(w.work_dir, flush=True)
            time.sleep(60)
"""


def test_a_killed_run_leaves_no_half_set_and_the_next_run_cleans_up(tmp_path):
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        work = Path(proc.stdout.readline().strip())
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert len(list((work / "images").iterdir())) == 4  # the killed run had written images...
    assert not out.exists()  # ...but none under the set's name
    _write_set(out, n=1)  # the next run starts: the dead run's folder goes
    assert not work.exists() and _siblings(out) == [] and len(read_manifest(out)) == 1
