"""``study create``: balanced sample, opaque metadata-free images, per-reader orders with an
unannounced retest subset in the second half, strong tokens; plus the tiny fake sets that the
other reader-study tests reuse (``make_sets``, ``make_study``)."""

from __future__ import annotations

import sqlite3
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammosynth.data.birads import map_cbis_margin, map_cbis_shape, map_pathology
from mammosynth.data.records import LesionRecord
from mammosynth.data.store import StoreWriter
from mammosynth.errors import ConfigError, DataError
from mammosynth.study import db
from mammosynth.study.create import create_study, token_sha256
from mammosynth.synth.writer import Lesion, SyntheticSetWriter

PATCH = 32


def make_sets(root: Path, n_real: int = 6, n_synth: int = 6, seed: int = 0) -> tuple[Path, Path]:
    """A tiny store (all lesions in the test split) and a tiny synthetic set of 32x32 patches.

    Real patches are darker (mean ~0.3) than synthetic ones (~0.7), so an answer key is easy
    to check by eye in the report; the tests read the truth from the DB instead.
    """
    rng = np.random.default_rng(seed)
    store = root / "real.h5"
    with StoreWriter(store, patch_size=PATCH, normal_size=(64, 48)) as w:
        for i in range(n_real):
            patch = np.clip(0.3 + 0.1 * rng.standard_normal((PATCH, PATCH)), 0, 1).astype(np.float32)
            mask = np.zeros((PATCH, PATCH), bool)
            mask[8:24, 8:24] = True
            w.add_lesion(LesionRecord(
                source="test", source_id=f"REAL-{i}", patient_id=f"P{i}", patch=patch, mask=mask,
                shape=map_cbis_shape("OVAL"), margin=map_cbis_margin("SPICULATED"),
                pathology=map_pathology("MALIGNANT"), split_hint="test",
            ))
    synth = root / "synth"
    with SyntheticSetWriter(synth, method="testgan", run="run0") as sw:
        for i in range(n_synth):
            img = np.clip(0.7 + 0.1 * rng.standard_normal((PATCH, PATCH)), 0, 1)
            mask = np.zeros((PATCH, PATCH), bool)
            mask[10:20, 10:20] = True
            sw.add(img, [Lesion(mask=mask, shape="oval", margin="spiculated")], seed=i)
    return store, synth


def make_study(root: Path, readers: int = 2, n_per_class: int = 2, retest: int = 1, realism: bool = False,
               seed: int = 0, base_url: str = "http://127.0.0.1:8765"):
    store, synth = make_sets(root)
    return create_study(store, synth, root / "study", readers=readers, n_per_class=n_per_class,
                        retest=retest, seed=seed, realism_score=realism, base_url=base_url)


def token_of(link: str) -> str:
    return link.rsplit("/r/", 1)[1]


def test_create_balanced_opaque_and_ordered(tmp_path):
    made = make_study(tmp_path, readers=3, n_per_class=4, retest=3, seed=7)
    study = made.path
    assert made.n_per_class == 4 and made.image_shape == (PATCH, PATCH) and len(made.invitations) == 3
    con = sqlite3.connect(study / db.DB_NAME)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    items = con.execute("SELECT item_id, truth, origin FROM items").fetchall()
    assert Counter(t for _, t, _ in items) == {"real": 4, "synthetic": 4}
    # origins name the source; the served file names do not
    assert all(("real.h5#lesions/" in o) if t == "real" else o.endswith(".png") for _, t, o in items)
    files = sorted(p.name for p in (study / "images").iterdir())
    assert files == sorted(f"{iid}.png" for iid, _, _ in items)
    for iid, _, _ in items:
        assert db.OPAQUE_ID.match(iid)
        with Image.open(study / "images" / f"{iid}.png") as im:
            assert im.size == (PATCH, PATCH) and im.mode.startswith("I;16")
            # no text chunks or other metadata travel with the pixels
            assert not getattr(im, "text", {}) and not set(im.info) - {"dpi"}
    orders = []
    for (rid,) in con.execute("SELECT reader_id FROM readers"):
        seq = con.execute("SELECT item_id, is_retest, presentation_id FROM presentations WHERE reader_id = ? ORDER BY position", (rid,)).fetchall()
        assert len(seq) == 8 + 3
        first = [i for i, r, _ in seq if not r]
        assert sorted(first) == sorted(i for i, _, _ in items)  # every image once as a first showing
        retests = [(pos, i) for pos, (i, r, _) in enumerate(seq) if r]
        assert len(retests) == 3
        for pos, iid in retests:
            first_pos = [p for p, (i, r, _) in enumerate(seq) if i == iid and not r][0]
            assert first_pos < 4 <= pos  # first showing in the first half, the repeat in the second
            assert pos > first_pos + 1  # never back to back
        truths = dict((i, t) for i, t, _ in items)
        assert sorted(Counter(truths[i] for _, i in retests).values()) == [1, 2]  # balanced as far as R=3 allows
        assert len({p for _, _, p in seq}) == len(seq)  # a repeat gets its own opaque showing id
        orders.append(first)
    assert orders[0] != orders[1] or orders[1] != orders[2]  # each reader their own order
    # tokens: 256-bit urlsafe, only their hashes stored
    hashes = {h for (h,) in con.execute("SELECT token_sha256 FROM readers")}
    for inv in made.invitations:
        tok = token_of(inv.link)
        assert len(tok) >= 43 and inv.link.startswith("http://127.0.0.1:8765/r/")
        assert token_sha256(tok) in hashes
        assert tok not in (study / db.DB_NAME).read_bytes().decode("latin-1")
    mode = stat.S_IMODE((study / "invitations.csv").stat().st_mode)
    assert mode == 0o600
    con.close()


def test_create_is_seeded(tmp_path):
    a = make_study(tmp_path / "a", readers=2, n_per_class=3, retest=2, seed=3)
    b = make_study(tmp_path / "b", readers=2, n_per_class=3, retest=2, seed=3)

    def seqs(study: Path) -> list[list[tuple[str, int]]]:
        con = sqlite3.connect(study / db.DB_NAME)
        origin = dict(con.execute("SELECT item_id, origin FROM items").fetchall())
        out = [[(origin[i].split("/")[-1], r) for i, r in con.execute(
            "SELECT item_id, is_retest FROM presentations WHERE reader_id = ? ORDER BY position", (rid,))]
            for (rid,) in con.execute("SELECT reader_id FROM readers ORDER BY reader_id")]
        con.close()
        return out

    assert seqs(a.path) == seqs(b.path)  # same seed: same sample and orders (ids are fresh random)


def test_create_resizes_mixed_sizes_and_rejects_bad_input(tmp_path):
    store, synth = make_sets(tmp_path)
    with SyntheticSetWriter(tmp_path / "big", method="g") as sw:
        for i in range(3):
            sw.add(np.full((48, 40), 0.5))
    made = create_study(store, tmp_path / "big", tmp_path / "s1", readers=1, n_per_class=2)
    assert made.image_shape == (PATCH, PATCH) and made.notes  # resized to the real size, and said so
    with pytest.raises(DataError, match="only 3 synthetic"):
        create_study(store, tmp_path / "big", tmp_path / "s2", readers=1, n_per_class=5)
    with pytest.raises(DataError, match="not empty"):
        create_study(store, synth, tmp_path / "s1", readers=1, n_per_class=2)
    with pytest.raises(ConfigError, match="retest"):
        create_study(store, synth, tmp_path / "s3", readers=1, n_per_class=2, retest=3)
    with pytest.raises(DataError, match="no such"):
        create_study(tmp_path / "missing.h5", synth, tmp_path / "s4", readers=1)
    assert not (tmp_path / "s2").exists() and not (tmp_path / "s3").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".building")]  # nothing half-made left
