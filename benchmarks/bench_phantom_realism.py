"""How real does the phantom look? Today's phantom (main), the new one and real mammograms.

Texture and noise statistics of normal mammograms inside the breast (``phantom.realism``:
power-spectrum slope beta on 128 px tiles deeper than 12 mm, Immerkaer noise, tile CV,
intensity quantiles; images scaled to their maximum in the breast), compared at matched
pixel spacing:

* 0.1 mm/px: phantom rendered at 0.1 mm/px vs the two reference FFDM views, native;
* 0.2 mm/px: phantom at 0.2 mm/px vs the references binned 2x2 and the mini-MIAS normal
  films (0.2 mm/px, Suckling et al. 1994).

Two classifier two-sample tests (``evaluate.two_sample``, quick mode: 3 folds, 10 epochs,
groups = images, so no image's tiles are on both sides of a fold):

* 128 px tissue tiles at 0.2 mm/px, phantom normals vs mini-MIAS normals, every image
  windowed to its breast's 1st..99th percentile;
* 64 px mass patches, phantom masses (circumscribed / spiculated / ill-defined, the margins
  mini-MIAS has) vs mini-MIAS masses, each patch windowed to its own 1st..99th percentile,
  the 8 dihedral views of a lesion kept as one group.

Margin learnability: the project's BI-RADS classifier (``mammosynth train classifier``,
demo config) trained on the train split of a phantom store, accuracy on held-out patients.

"Today's" phantom is main's ``src/mammosynth/phantom`` copied into a temporary package
(``git show 9f6996b:...``, the commit before v2 merged), so both run in the same process on the same machine. The table
goes into docs/phantom.md between the ``realism-table`` markers.

    OMP_NUM_THREADS=1 python benchmarks/bench_phantom_realism.py [--quick] [--parts stats,speed,auc,margins,figure]

Each part writes ``benchmarks/results/phantom_realism_<part>.json``; the table in the doc is
made from all the part files there, so parts can run separately (or at the same time).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from mammosynth.phantom.realism import bin2, real_breast_mask, realism_stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MARK_BEGIN, MARK_END = "<!-- realism-table:begin -->", "<!-- realism-table:end -->"
STATS = ("beta", "noise", "p5", "p50", "p95", "tile_cv")


#: "Today's" phantom of issue 15: the v1 package as it was before the v2 rewrite merged into
#: main (4c81646). Pinned, so that "today" keeps meaning v1 now that main holds v2.
V1_REF = "9f6996b"


def old_phantom(ref: str = V1_REF):
    """The v1 phantom package (commit ``ref``), imported from a temporary copy under another name."""
    tmp = Path(tempfile.mkdtemp(prefix="old_phantom_"))
    pkg = tmp / "old_phantom"
    pkg.mkdir()
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{ref}:src/mammosynth/phantom/"],
                           check=True, capture_output=True, text=True).stdout.split()
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:src/mammosynth/phantom/{name}"],
                                  check=True, capture_output=True, text=True).stdout
            (pkg / name).write_text(text.replace("mammosynth.phantom", "old_phantom"))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], check=True, capture_output=True, text=True).stdout.strip()
    sys.path.insert(0, str(tmp))
    return importlib.import_module("old_phantom"), commit


# -- real images ------------------------------------------------------------------------------
def reference_views() -> list[tuple[str, np.ndarray, np.ndarray]]:
    from PIL import Image

    out = []
    for path in sorted((SHARED / "reference-mammograms").glob("*.png")):
        img = np.asarray(Image.open(path), dtype=np.float32) / 4095.0
        out.append((path.stem, img, real_breast_mask(img)))
    return out


def mias_rows() -> list[list[str]]:
    info = SHARED / "mini-mias" / "Info.txt"
    return [line.split() for line in info.read_text(encoding="latin-1").splitlines() if line.startswith("mdb")]


def mias_normals(limit: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from mammosynth.data.imaging import read_image

    out = []
    for row in [r for r in mias_rows() if len(r) >= 3 and r[2] == "NORM"][:limit]:
        path = SHARED / "mini-mias" / f"{row[0]}.pgm"
        if path.exists():
            img = read_image(path).astype(np.float32)
            out.append((row[0], img, real_breast_mask(img)))
    return out


def mias_mass_patches(size: int = 64) -> np.ndarray:
    """Square crops around mini-MIAS masses (the mias reader: disc mask, 30 % context), resized."""
    from mammosynth.data.readers import iter_records
    from mammosynth.data.records import LesionRecord
    from mammosynth.data.store import resize_image

    patches = []
    for rec in iter_records("mias", SHARED / "mini-mias", [SHARED / "mini-mias" / "Info.txt"]):
        if isinstance(rec, LesionRecord) and rec.margin.value in ("circumscribed", "spiculated", "ill_defined"):
            patches.append(resize_image(rec.patch.astype(np.float32), (size, size)))
    return np.stack(patches)


# -- statistics -------------------------------------------------------------------------------
def summarise(stats: list[dict]) -> dict[str, list[float]]:
    """(min, max) of each statistic over images (NaN-free)."""
    out = {}
    for k in STATS:
        v = np.array([s[k] for s in stats], float)
        v = v[np.isfinite(v)]
        out[k] = [float(v.min()), float(v.max())] if len(v) else [float("nan")] * 2
    return out


def phantom_normals(pkg, n: int, shape: tuple[int, int], **kw) -> list:
    views = [("CC", "A"), ("MLO", "B"), ("CC", "C"), ("MLO", "D"), ("CC", "B"), ("MLO", "C"), ("CC", "D"), ("MLO", "A")]
    return [pkg.render_breast(100 + i, shape, view=views[i % 8][0], laterality="LR"[i // 8 % 2], density=views[i % 8][1], **kw)
            for i in range(n)]


def window(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img[mask], [1, 99])
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def tissue_tiles(images: list[tuple[np.ndarray, np.ndarray]], per_image: int, rng: np.random.Generator,
                 tile: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_image`` random 128 px tiles wholly in each breast (>12 mm deep at 0.2 mm/px),
    each image windowed first. Returns (tiles (N, 128, 128), image index (N,))."""
    from mammosynth.phantom.realism import skin_depth_mm, tiles_inside

    tiles, groups = [], []
    for i, (img, mask) in enumerate(images):
        corners = tiles_inside(mask, skin_depth_mm(mask, 0.2), tile, 12.0, step=tile // 2)
        w = window(img, mask)
        for j in rng.permutation(len(corners))[:per_image]:
            y, x = corners[j]
            tiles.append(w[y:y + tile, x:x + tile])
            groups.append(i)
    return np.stack(tiles), np.array(groups)


def patch_window(p: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(p, [1, 99])
    return np.clip((p - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def dihedral(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4 views per patch (identity, mirror, 180 degrees, its mirror), grouped by patch."""
    views, groups = [], []
    for i, p in enumerate(patches):
        for k in (0, 2):
            r = np.rot90(p, k)
            views += [r, r[:, ::-1]]
            groups += [i, i]
    return np.stack(views), np.array(groups)


def phantom_mass_patches(pkg, n: int, size: int = 64, **kw) -> np.ndarray:
    from mammosynth.data.store import resize_image

    keep = ("circumscribed", "spiculated", "ill_defined")
    out = []
    for rec in pkg.phantom_lesion_records(n, seed=5, **kw):
        if rec.margin.value in keep:
            out.append(resize_image(rec.patch.astype(np.float32), (size, size)))
    return np.stack(out)


def c2st(real: np.ndarray, synthetic: np.ndarray, g_real: np.ndarray, g_syn: np.ndarray) -> dict:
    from mammosynth.evaluate.two_sample import classifier_two_sample_test

    r = classifier_two_sample_test(real, synthetic, seed=0, size=real.shape[-1], real_groups=g_real,
                                   synthetic_groups=g_syn, quick=True, device="cpu")
    return {"auc": r["auc"], "auc_ci": r["auc_ci"], "n_real": r["n_real"], "n_synthetic": r["n_synthetic"]}


# -- margin learnability ----------------------------------------------------------------------
def margin_learnability(write_store, n_lesions: int, steps: int, workdir: Path, name: str) -> dict:
    """Train the project's classifier (demo config) on a phantom store's train split; margin
    accuracy on the test split (other patients)."""
    import torch

    from mammosynth.train.run import load_method

    torch.set_num_threads(1)
    store = workdir / f"{name}.h5"
    write_store(store, n_lesions=n_lesions, n_normals=0, patch_size=64, seed=11, progress=False,
                split_fractions=(0.6, 0.2, 0.2))
    out = workdir / f"{name}-cls"
    cmd = [sys.executable, "-m", "mammosynth", "train", "classifier", "--data", str(store), "--out", str(out),
           "--config", str(ROOT / "configs" / "classifier-demo.yaml"), "--set", f"steps={steps}", "--device", "cpu"]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    run = sorted(p.parent for p in out.rglob("config.json"))[-1]
    res = load_method(str(run), device="cpu", expect="classifier").evaluate_store(str(store), split="test")
    return {"margin_accuracy": res["margin"]["accuracy"], "n_test": res["margin"]["n"], "chance": 0.2,
            "per_class": {k: v["accuracy"] for k, v in res["margin"]["per_class"].items()},
            "shape_accuracy": res["shape"]["accuracy"], "steps": steps, "n_lesions": n_lesions}


# -- report -----------------------------------------------------------------------------------
def fmt(r: list[float], d: int = 2) -> str:
    return "–" if not np.isfinite(r[0]) else (f"{r[0]:.{d}f}" if abs(r[1] - r[0]) < 10 ** -d else f"{r[0]:.{d}f}–{r[1]:.{d}f}")


def table(rows: list[tuple[str, str, int, dict]]) -> str:
    lines = ["| image set | spacing | n | β | noise | p5 | p50 | p95 | tile CV |", "|---|---|---|---|---|---|---|---|---|"]
    for name, spacing, n, s in rows:
        lines.append(f"| {name} | {spacing} | {n} | {fmt(s['beta'])} | {fmt(s['noise'], 3)} | {fmt(s['p5'])} | "
                     f"{fmt(s['p50'])} | {fmt(s['p95'])} | {fmt(s['tile_cv'])} |")
    return "\n".join(lines)


def write_docs(text: str, path: Path) -> None:
    doc = path.read_text()
    if MARK_BEGIN in doc and MARK_END in doc:
        head, rest = doc.split(MARK_BEGIN, 1)
        doc = head + MARK_BEGIN + "\n" + text + "\n" + MARK_END + rest.split(MARK_END, 1)[1]
    else:
        doc += f"\n{MARK_BEGIN}\n{text}\n{MARK_END}\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(doc)
    tmp.replace(path)


PARTS = ("stats", "speed", "auc", "margins", "figure")


def figure(out: Path) -> None:
    """Today's phantom, the new one (ffdm) and the new film look: one MLO and one CC breast each
    (same seed and density), 0.2 mm/px, shown at half size, side by side."""
    from PIL import Image, ImageDraw

    import mammosynth.phantom as new

    old, commit = old_phantom()
    cols = [(f"today ({commit})", old, {}), ("new, ffdm", new, {}), ("new, film", new, {"style": "film"})]
    tiles = []
    for view, density in (("MLO", "B"), ("CC", "C")):
        row = []
        for _, pkg, kw in cols:
            img = pkg.render_breast(3, (1024, 832), view=view, density=density, **kw).image
            row.append(Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((416, 512), Image.LANCZOS))
        tiles.append(row)
    pad, title = 6, 20
    sheet = Image.new("L", (3 * 416 + 4 * pad, 2 * 512 + 3 * pad + title), 255)
    draw = ImageDraw.Draw(sheet)
    for j, (name, _, _) in enumerate(cols):
        draw.text((pad + j * (416 + pad), 4), name, fill=0)
        for i in range(2):
            sheet.paste(tiles[i][j], (pad + j * (416 + pad), title + pad + i * (512 + pad)))
    tmp = out.with_suffix(".tmp.png")
    sheet.save(tmp, optimize=True)
    tmp.replace(out)


def run_parts(parts: set[str], args, results: dict, t0: float) -> None:
    import mammosynth.phantom as new

    old, commit = old_phantom()
    results["commit_today"] = commit
    n_ph = 4 if args.quick else 8
    sets: dict = {}
    todo = tuple(t for t, key in zip(((f"phantom today ({commit})", old, {}), ("phantom new, ffdm", new, {}),
                                      ("phantom new, film", new, {"style": "film"})), ("today", "ffdm", "film"))
                 if key in args.sets)
    if "stats" in parts:
        rows = []
        if "real" in args.sets:
            refs = reference_views()
            mias = mias_normals(40 if args.quick else None)
            rows += [("real FFDM reference views (native)", "~0.1", len(refs), summarise([realism_stats(i, m, 0.1) for _, i, m in refs])),
                     ("real FFDM reference views, binned 2x2", "~0.2", len(refs),
                      summarise([realism_stats(bin2(i), bin2(m.astype(np.float32)) > 0.5, 0.2) for _, i, m in refs])),
                     ("real mini-MIAS normal films", "0.2", len(mias), summarise([realism_stats(i, m, 0.2) for _, i, m in mias]))]
            print(f"[{time.perf_counter() - t0:6.0f} s] real images", flush=True)
        for label, pkg, kw in todo:
            for spacing, shape in ((0.2, (1024, 832)), (0.1, (2048, 1664))):
                if spacing == 0.1 and kw.get("style") == "film":
                    continue  # mini-MIAS is 0.2 mm/px only
                ims = phantom_normals(pkg, n_ph if spacing == 0.2 else max(2, n_ph // 2), shape, **kw)
                # The same breast-mask rule as for the real images (a film's burnt-out periphery
                # falls below its threshold there too), inside the phantom's own breast.
                rows.append((label, f"{spacing}", len(ims), summarise([
                    realism_stats(b.image, real_breast_mask(b.image) & b.breast_mask, spacing) for b in ims])))
                print(f"[{time.perf_counter() - t0:6.0f} s] {label} at {spacing} mm/px", flush=True)
        results["rows"] = rows
        print(table(rows), flush=True)
    if "speed" in parts:
        # The demo phantom (400 lesions, 24 normals, 64 px), today's and the new one, same process.
        results["speed"] = {}
        for label, pkg in (("today", old), ("new", new)):
            with tempfile.TemporaryDirectory() as tmp:
                w, c = time.perf_counter(), time.process_time()
                pkg.write_phantom_store(Path(tmp) / "p.h5", n_lesions=400, n_normals=24, patch_size=64, progress=False)
                results["speed"][label] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c}
            print(f"[{time.perf_counter() - t0:6.0f} s] demo store {label}: {results['speed'][label]}", flush=True)
    if "auc" in parts:
        results["auc"] = {}
        rng = np.random.default_rng(0)
        per = 2
        mias = mias_normals(40 if args.quick else None)
        real_tiles, g_real = tissue_tiles([(i, m) for _, i, m in mias], per, rng)
        real_mass, g_rm = dihedral(np.stack([patch_window(p) for p in mias_mass_patches()]))
        for label, pkg, kw in todo:
            ims = [(b.image, b.breast_mask) for b in phantom_normals(pkg, 8 if args.quick else 24, (1024, 832), **kw)]
            syn_tiles, g_syn = tissue_tiles(ims, len(real_tiles) // len(ims) + 1, rng)
            tiles = c2st(real_tiles, syn_tiles, g_real, g_syn)
            masses = phantom_mass_patches(pkg, 60 if args.quick else 100, **kw)
            syn_mass, g_sm = dihedral(np.stack([patch_window(p) for p in masses]))
            mass = c2st(real_mass, syn_mass, g_rm, g_sm)
            results["auc"][label] = {"tissue_tiles_128": tiles, "mass_patches_64": mass}
            print(f"[{time.perf_counter() - t0:6.0f} s] C2ST {label}: tiles {tiles['auc']:.3f}, masses {mass['auc']:.3f}", flush=True)
    if "margins" in parts:
        results["margins"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for label, pkg in (("today", old), ("new", new)):
                if {"today": "today", "new": "ffdm"}[label] not in args.sets:
                    continue
                results["margins"][label] = margin_learnability(pkg.write_phantom_store, args.margin_lesions, args.margin_steps, Path(tmp), label)
                print(f"[{time.perf_counter() - t0:6.0f} s] margins {label}: {results['margins'][label]}", flush=True)


def render(results: dict) -> str:
    commit = results.get("commit_today", V1_REF)
    text = [f"Made by `OMP_NUM_THREADS=1 python benchmarks/bench_phantom_realism.py` (one thread; parts: "
            + ", ".join(f"{k} {v['minutes']:.0f} min{' quick' if v['quick'] else ''}" for k, v in results.get("runs", {}).items())
            + f"); ranges are min–max over the images; \"today\" is main at {commit}.", ""]
    if results.get("rows"):
        order = ("real", "phantom today", "phantom new, ffdm", "phantom new, film")
        rows = sorted(results["rows"], key=lambda r: (next(i for i, o in enumerate(order) if r[0].startswith(o)), r[1]))
        text.append(table([tuple(r) for r in rows]))
    if results.get("auc"):
        text += ["", "| phantom | C2ST AUC, 128 px tissue tiles vs mini-MIAS normals (95 % CI) | C2ST AUC, 64 px masses vs mini-MIAS masses (95 % CI) |",
                 "|---|---|---|"]
        for label, r in results["auc"].items():
            a, b = r["tissue_tiles_128"], r["mass_patches_64"]
            text.append(f"| {label} | {a['auc']:.3f} ({a['auc_ci'][0]:.2f}–{a['auc_ci'][1]:.2f}; {a['n_real']} real / {a['n_synthetic']} phantom tiles) | "
                        f"{b['auc']:.3f} ({b['auc_ci'][0]:.2f}–{b['auc_ci'][1]:.2f}; {b['n_real'] // 4} real / {b['n_synthetic'] // 4} phantom lesions) |")
    if results.get("margins"):
        text += ["", "| phantom | store lesions / classifier steps | margin accuracy, held-out patients (chance 0.20) | per class (circ. / obsc. / microlob. / ill-def. / spic.) | shape accuracy (chance 0.25) | test lesions |",
                 "|---|---|---|---|---|---|"]
        for label, r in results["margins"].items():
            pc = " / ".join("–" if v is None else f"{v:.2f}" for v in r["per_class"].values())
            text.append(f"| {label} | {r['n_lesions']} / {r['steps']} | {r['margin_accuracy']:.3f} | {pc} | {r['shape_accuracy']:.3f} | {r['n_test']} |")
    if results.get("speed"):
        sp = results["speed"]
        text += ["", f"Demo phantom store (400 lesions, 24 normals, 64 px), same process: today {sp['today']['wall_s']:.1f} s wall / "
                 f"{sp['today']['cpu_s']:.1f} s CPU, new {sp['new']['wall_s']:.1f} s wall / {sp['new']['cpu_s']:.1f} s CPU."]
    return "\n".join(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 phantom normals per set, 40 mini-MIAS normals, fewer tiles")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)} (default all)")
    ap.add_argument("--sets", default="real,today,ffdm,film",
                    help="image sets for the stats part (real, today, ffdm, film) and the auc part (today, ffdm, film); default all")
    ap.add_argument("--margin-lesions", type=int, default=600, help="lesions in the learnability store (default 600)")
    ap.add_argument("--margin-steps", type=int, default=600, help="classifier steps (default 600)")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results",
                    help="folder of the per-part JSON files (each run updates its parts' files)")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "phantom.md", help="doc to write the table into ('' = none)")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    args.sets = {v.strip() for v in args.sets.split(",") if v.strip()}
    if not parts <= set(PARTS):
        ap.error(f"--parts: unknown {sorted(parts - set(PARTS))}; choose from {','.join(PARTS)}")
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results: dict = {}
    if "figure" in parts:
        figure(ROOT / "docs" / "phantom_today_vs_new.png")
        parts.discard("figure")
        if not parts:
            return
    run_parts(parts, args, results, t0)
    minutes = (time.perf_counter() - t0) / 60
    args.results.mkdir(parents=True, exist_ok=True)
    def save(name: str, key: str, value) -> None:
        out = {key: value, "commit_today": results["commit_today"], "minutes": minutes, "quick": bool(args.quick)}
        tmp = args.results / f".phantom_realism_{name}.json.tmp"
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(args.results / f"phantom_realism_{name}.json")

    if "speed" in parts:
        save("speed", "speed", results["speed"])
    if "margins" in parts:  # one file per phantom, so they can run in separate processes
        for label, value in results["margins"].items():
            save(f"margins-{label}", "margins", {label: value})
    if "stats" in parts:  # one file per set of images, so sets can run in separate processes
        save("stats-" + "-".join(k for k in ("real", "today", "ffdm", "film") if k in args.sets), "rows", results["rows"])
    if "auc" in parts:  # one file per phantom set, so sets can run in separate processes
        for label, value in results["auc"].items():
            save("auc-" + label.split(" (")[0].replace("phantom ", "").replace(", ", "-"), "auc", {label: value})
    merged: dict = {"runs": {}, "auc": {}, "margins": {}, "rows": []}
    files = [(p, p.stem.removeprefix("phantom_realism_")) for p in sorted(args.results.glob("phantom_realism_*.json"))]
    for f, name in files:
        d = json.loads(f.read_text())
        key = next(k for k in ("rows", "speed", "auc", "margins") if k in d)
        if key in ("auc", "margins"):
            merged.setdefault(key, {}).update(d[key])
        elif key == "rows":
            merged["rows"] += [r for r in d["rows"] if r not in merged["rows"]]
        else:
            merged[key] = d[key]
        merged["commit_today"] = d["commit_today"]
        merged["runs"][name] = {"minutes": d["minutes"], "quick": d["quick"]}
    text = render(merged)
    if str(args.docs):
        write_docs(text, args.docs)
    print(text)


if __name__ == "__main__":
    main()
