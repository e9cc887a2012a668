"""``study create``: draw a balanced random sample, hide where each image came from, give each
reader their own order (with an unannounced retest subset) and a secret invitation link.

Protocol (seeds 003 and 004): K real and K synthetic images drawn at random (seed 003 used
75 + 75); every reader sees all 2K in their own random order. With ``retest = R``, R of the
images a reader saw in the first half of their sequence (balanced real/synthetic as far as
the first half allows) are shown again at random places in the second half, never directly
after their first showing and under a new opaque id, so nothing announces the repeat
(seed 004 asked a second judgement without telling readers beforehand).

What the reader can learn about an image is only its pixels:

- images are re-encoded from pixel arrays into ``STUDY/images/<item_id>.png`` (16-bit
  grayscale, no text chunks, no file names; ``item_id`` is 128 random bits);
- images of different sizes would betray their source, so when the sample mixes sizes all
  images are resized to one size (``size``; by default the most common real size);
- the truth (real/synthetic) and origin (file, store index) live only in ``study.sqlite``,
  which the server never serves.

The study folder is built beside its destination and renamed into place, so a failed create
leaves nothing half-made under the final name.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import os
import secrets
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mammosynth import __version__
from mammosynth.errors import ConfigError, DataError
from mammosynth.study import db
from mammosynth.study.stats import LEVELS

DEFAULT_N_PER_CLASS = 75  # seed 003: 75 real + 75 synthetic patches
DEFAULT_BASE_URL = "http://127.0.0.1:8765"
INVITATIONS = "invitations.csv"


@dataclass
class Source:
    """One candidate image: where it came from and how to read it as (H, W) float32 in [0, 1]."""

    origin: str
    load: Callable[[], np.ndarray]
    #: mass | non_mass | calcification (store label, or the synthetic set's manifest); None = unknown
    lesion_type: str | None = None


@dataclass
class Invitation:
    reader: str
    link: str


@dataclass
class CreatedStudy:
    path: Path
    invitations: list[Invitation]
    n_per_class: int
    retest: int
    image_shape: tuple[int, int]
    notes: list[str] = field(default_factory=list)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _png_sources(folder: Path, what: str) -> list[Source]:
    from mammosynth.synth.writer import load_png

    img_dir = folder / "images" if (folder / "images").is_dir() else folder
    files = sorted(p for p in img_dir.glob("*.png") if p.is_file())
    if not files:
        raise DataError(f"{img_dir}: no PNG images for the {what} set (expected DIR/images/*.png)")
    return [Source(str(p), (lambda p=p: load_png(p))) for p in files]


def real_sources(path: str | Path, split: str = "test") -> list[Source]:
    """Real images: lesion patches of ``split`` from a store file, or PNGs from a folder."""
    p = Path(path)
    if p.is_dir():
        return _png_sources(p, "real")
    if not p.is_file():
        raise DataError(f"{p}: no such store file or image folder for --real")
    from mammosynth.data.store import Store, from_uint16

    with Store(p) as store:
        idx = store.split_indices("lesions", split)
        if len(idx) == 0:
            raise DataError(f"{p}: the store has no lesions in the {split!r} split to show as real images")
        sids = store.h5["lesions/source_id"].asstr()[...]
        types = store.label_codes("lesion_type")
    from mammosynth.data.birads import LESION_TYPES

    def loader(i: int) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            with Store(p) as s:
                return from_uint16(s.h5["lesions/patch"][int(i)])
        return load

    return [Source(f"{p}#lesions/{int(i)} ({sids[int(i)]})", loader(int(i)), LESION_TYPES[int(types[int(i)])]) for i in idx]


def synthetic_sources(path: str | Path) -> list[Source]:
    """The synthetic set's PNGs; each with its lesion type when the set has a manifest.csv."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: no such synthetic-set folder for --synthetic")
    sources = _png_sources(p, "synthetic")
    if (p / "manifest.csv").is_file():
        from mammosynth.evaluate.synthetic import row_lesion_type
        from mammosynth.synth.writer import read_manifest

        by_file = {str((p / r["file"]).resolve()): row_lesion_type(r, p / "manifest.csv") for r in read_manifest(p) if r.get("file")}
        for src in sources:
            src.lesion_type = by_file.get(str(Path(src.origin).resolve()))
    return sources


def _pick(sources: list[Source], quota: dict[str, int] | None, k: int, rng: np.random.Generator) -> list[int]:
    """k indices into ``sources``: at random, or (``quota``: {type: n}) that many of each lesion
    type first, the rest filled at random from what is left."""
    if quota is None:
        return sorted(int(i) for i in rng.choice(len(sources), size=k, replace=False))
    chosen: list[int] = []
    for t, n in quota.items():
        pool = [i for i, s in enumerate(sources) if s.lesion_type == t]
        chosen += [pool[int(j)] for j in rng.choice(len(pool), size=min(n, len(pool)), replace=False)]
    rest = sorted(set(range(len(sources))) - set(chosen))
    chosen += [rest[int(j)] for j in rng.choice(len(rest), size=k - len(chosen), replace=False)]
    return sorted(chosen)


def _type_quota(reals: list[Source], synths: list[Source], k: int, rng: np.random.Generator) -> dict[str, int] | None:
    """Equal numbers of each lesion type present on both sides, the same for real and synthetic
    (so a lesion type never hints at the truth); None when there is nothing to stratify."""
    rt, st = Counter(s.lesion_type for s in reals), Counter(s.lesion_type for s in synths)
    common = sorted(t for t in set(rt) & set(st) if t is not None)
    if len(common) < 2 or None in rt or None in st:
        return None
    order = [common[int(i)] for i in rng.permutation(len(common))]  # who gets the odd ones: random
    quota = {t: k // len(common) + (j < k % len(common)) for j, t in enumerate(order)}
    return {t: min(n, rt[t], st[t]) for t, n in sorted(quota.items())}


def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if img.shape == shape:
        return img.astype(np.float32, copy=False)
    from skimage.transform import resize

    return resize(img.astype(np.float32), shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def _reader_sequence(
    items: list[tuple[str, str]], retest: int, rng: np.random.Generator
) -> list[tuple[str, bool]]:
    """items: (item_id, truth). Returns [(item_id, is_retest)] for one reader.

    First a random permutation of all items; then ``retest`` of the first-half items
    (balanced by truth where possible) are mixed into the second half at random, never
    directly after their first showing.
    """
    order = [items[i] for i in rng.permutation(len(items))]
    half = len(order) // 2
    first, second = order[:half], order[half:]
    if retest == 0:
        return [(iid, False) for iid, _ in order]
    by_truth = {t: [iid for iid, tt in first if tt == t] for t in ("real", "synthetic")}
    want = {"real": retest // 2, "synthetic": retest - retest // 2}
    if rng.random() < 0.5:  # odd R: which class gets the extra one is random
        want = {"real": want["synthetic"], "synthetic": want["real"]}
    chosen: list[str] = []
    for t in ("real", "synthetic"):
        pool = by_truth[t]
        take = min(want[t], len(pool))
        chosen += [pool[i] for i in rng.choice(len(pool), size=take, replace=False)]
    rest = [iid for iid, _ in first if iid not in set(chosen)]
    while len(chosen) < retest:  # one class too rare in the first half: fill from the other
        chosen.append(rest.pop(int(rng.integers(len(rest)))))
    tail = [(iid, False) for iid, _ in second] + [(iid, True) for iid in chosen]
    last_first = first[-1][0] if first else None
    for _ in range(1000):
        perm = [tail[i] for i in rng.permutation(len(tail))]
        if not (perm[0][1] and perm[0][0] == last_first):  # no back-to-back repeat
            break
    return [(iid, False) for iid, _ in first] + perm


def create_study(
    real: str | Path,
    synthetic: str | Path,
    out: str | Path,
    readers: int,
    n_per_class: int | None = None,
    retest: int = 0,
    seed: int = 0,
    realism_score: bool = False,
    base_url: str = DEFAULT_BASE_URL,
    size: int | None = None,
    real_split: str = "test",
) -> CreatedStudy:
    """Write a new study folder ``out`` (must not exist or be empty); returns the invitations.

    ``n_per_class`` None = min(75, available real, available synthetic). ``size`` None =
    keep sizes if all equal, else resize to the most common real (H, W); an int = (size, size).
    """
    out = Path(out)
    if readers < 1:
        raise ConfigError(f"--readers must be at least 1, got {readers}")
    if retest < 0:
        raise ConfigError(f"--retest must be 0 or more, got {retest}")
    if size is not None and size < 8:
        raise ConfigError(f"--size must be at least 8 pixels, got {size}")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"--base-url must start with http:// or https://, got {base_url!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not empty; a study is never overwritten")
    reals, synths = real_sources(real), synthetic_sources(synthetic)
    available = min(len(reals), len(synths))
    k = min(DEFAULT_N_PER_CLASS, available) if n_per_class is None else int(n_per_class)
    if k < 1:
        raise ConfigError(f"--n-per-class must be at least 1, got {k}")
    if k > len(reals):
        raise DataError(f"{real}: only {len(reals)} real images available, {k} asked for (--n-per-class)")
    if k > len(synths):
        raise DataError(f"{synthetic}: only {len(synths)} synthetic images available, {k} asked for (--n-per-class)")
    if retest > k:  # the first half holds k images
        raise ConfigError(f"--retest {retest} is more than the {k} images in the first half of each sequence")

    rng = np.random.default_rng(seed)
    quota = _type_quota(reals, synths, k, rng)
    picked = [("real", reals[i]) for i in _pick(reals, quota, k, rng)]
    picked += [("synthetic", synths[i]) for i in _pick(synths, quota, k, rng)]
    images = [(truth, src, src.load()) for truth, src in picked]
    type_counts = {truth: dict(sorted(Counter(src.lesion_type or "unknown" for t, src in picked if t == truth).items()))
                   for truth in ("real", "synthetic")}
    for truth, src, img in images:
        if img.ndim != 2:
            raise DataError(f"{src.origin}: expected a 2-D grayscale image, got shape {img.shape}")
    notes: list[str] = []
    shapes = Counter(img.shape for _, _, img in images)
    if size is not None:
        target = (int(size), int(size))
    elif len(shapes) == 1:
        target = next(iter(shapes))
    else:
        target = Counter(img.shape for t, _, img in images if t == "real").most_common(1)[0][0]
        notes.append(f"images come in {len(shapes)} sizes, which would reveal their source; all resized to {target[0]}x{target[1]}")
    if quota is not None and type_counts["real"] != type_counts["synthetic"]:
        notes.append(f"lesion types could not be drawn equally for real and synthetic images (real {type_counts['real']}, "
                     f"synthetic {type_counts['synthetic']}): a reader may use the type as a cue")

    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".building", dir=out.parent))
    try:
        from mammosynth.synth.writer import save_png16

        (build / db.IMAGES_DIR).mkdir()
        items: list[tuple[str, str, str, tuple[int, int]]] = []
        item_types: dict[str, str] = {}
        for truth, src, img in images:
            item_id = secrets.token_hex(16)
            save_png16(build / db.IMAGES_DIR / f"{item_id}.png", np.clip(_resize(img, target), 0.0, 1.0))
            items.append((item_id, truth, src.origin, target))
            item_types[item_id] = src.lesion_type or "unknown"
        meta = {
            "format": db.FORMAT,
            "format_version": db.FORMAT_VERSION,
            "mammosynth_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seed": int(seed),
            "n_per_class": k,
            "retest": int(retest),
            "realism_score": bool(realism_score),
            "base_url": base_url,
            "image_shape": list(target),
            "real_source": str(real),
            "synthetic_source": str(synthetic),
            "levels": {str(n): {"label": lab, "p_real": p} for n, (lab, p) in LEVELS.items()},
            "notes": notes,
            # the truth side of the case metadata (never served): each item's lesion type, and the draw
            "item_lesion_types": item_types,
            "lesion_types": {**type_counts, "stratified": quota is not None},
        }
        con = db.connect(build / db.DB_NAME, create=True)
        invitations: list[Invitation] = []
        try:
            db.init_schema(con, meta)
            reader_seeds = np.random.SeedSequence([int(seed), 1]).spawn(readers)
            with db.transaction(con):
                con.executemany(
                    "INSERT INTO items(item_id, truth, origin, height, width) VALUES (?, ?, ?, ?, ?)",
                    [(iid, t, o, s[0], s[1]) for iid, t, o, s in items],
                )
                pairs = [(iid, t) for iid, t, _, _ in items]
                for r in range(readers):
                    name = f"reader{r + 1:02d}"
                    token = secrets.token_urlsafe(32)  # 256 bits
                    cur = con.execute("INSERT INTO readers(name, token_sha256) VALUES (?, ?)", (name, token_sha256(token)))
                    seq = _reader_sequence(pairs, retest, np.random.default_rng(reader_seeds[r]))
                    con.executemany(
                        "INSERT INTO presentations(presentation_id, reader_id, position, item_id, is_retest) VALUES (?, ?, ?, ?, ?)",
                        [(secrets.token_hex(16), cur.lastrowid, pos, iid, int(rt)) for pos, (iid, rt) in enumerate(seq)],
                    )
                    invitations.append(Invitation(name, f"{base_url.rstrip('/')}/r/{token}"))
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["reader", "link"])
        w.writerows([(inv.reader, inv.link) for inv in invitations])
        inv_path = build / INVITATIONS
        inv_path.write_text(buf.getvalue())
        os.chmod(inv_path, 0o600)  # the links are the readers' passwords
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return CreatedStudy(out, invitations, k, int(retest), target, notes)
