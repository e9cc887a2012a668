"""The README's calcification picture: real mini-MIAS calcification clusters beside generated ones
at the same scale and windowing rule, and one cluster inserted into a real mini-MIAS NORMAL film.

    .venv/bin/python benchmarks/figure_calcification.py --out docs/calcification_real_vs_generated.png \
        [--dcgan-run /tmp/mammosynth_bench_quality_calc/runs/mias/lesion-dcgan-calc-f0/<run>]

Rows of the left panel (every tile 128 x 128 px = 25.6 mm at mini-MIAS's 0.2 mm/px, one film
pixel per tile pixel, each tile windowed to its own 1st-99.8th percentile, the same rule for real
and generated): (1) real mini-MIAS CALC clusters, centred on their Info.txt circle (Suckling et al.
1994, research use); (2) procedural clusters, ``insert_lesions(lesion_type="calcification")`` into
mini-MIAS normal films at 0.2 mm, the cluster size model fitted to the 15 mini-MIAS clusters;
(3, with ``--dcgan-run``) the 64-px store patches: real clusters vs a lesion-dcgan run's samples
(each patch framed by its own cluster size, so not at one mm scale). Right: the whole film with
the inserted cluster's COCO box, and a zoom on it. Inputs are read from ``--mias-root``; the
insert output goes to ``--work``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import MIAS_ROOT, save_figure  # noqa: E402
from bench_quality_calc import mias_calc_store, mias_normals, procedural  # noqa: E402

TILE = 128  # px: 25.6 mm at 0.2 mm/px


def crop(image: np.ndarray, cx: float, cy: float, side: int = TILE) -> np.ndarray:
    H, W = image.shape
    x0 = int(min(max(round(cx) - side // 2, 0), W - side))
    y0 = int(min(max(round(cy) - side // 2, 0), H - side))
    return image[y0:y0 + side, x0:x0 + side]


def window(tile: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(tile, (1.0, 99.8))
    return float(lo), float(max(hi, lo + 1e-3))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/calcification_real_vs_generated.png"), help="PNG to write")
    ap.add_argument("--mias-root", type=Path, default=MIAS_ROOT, help=f"mini-MIAS folder (default {MIAS_ROOT})")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mammosynth_figure_calcification"),
                    help="the ingested store and insert outputs (default /tmp/mammosynth_figure_calcification)")
    ap.add_argument("--dcgan-run", type=Path, default=None, help="a lesion-dcgan run (lesion_types: calcification)")
    ap.add_argument("--n", type=int, default=8, help="tiles per row (default 8)")
    ap.add_argument("--seed", type=int, default=3, help="which normals and clusters are drawn (default 3)")
    ap.add_argument("--morphology", default="pleomorphic", help="of the cluster inserted in the overview (default pleomorphic)")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from mammosynth.data.imaging import read_image
    from mammosynth.data.readers.mias import parse_info
    from mammosynth.data.store import Store
    from mammosynth.synth.insert import insert_lesions

    args.work.mkdir(parents=True, exist_ok=True)
    store = mias_calc_store(args.work, args.mias_root)
    # (1) real clusters at their circles' centres (Info.txt: origin bottom-left)
    rows = [r for r in parse_info(args.mias_root / "Info.txt")
            if "error" not in r and r["cls"].upper() == "CALC" and r["radius"] is not None]
    real = []
    for r in rows[: args.n]:
        img = read_image(args.mias_root / f"{r['refnum']}.pgm")
        real.append((crop(img, r["x"], img.shape[0] - 1 - r["y"]), f"{r['refnum']} d={2 * r['radius'] * 0.2:.0f} mm"))
    # (2) procedural clusters in normal films
    normals = [p for _, p in mias_normals(args.mias_root)]
    rng = np.random.default_rng(args.seed)
    picks = [normals[i] for i in rng.choice(len(normals), args.n, replace=False)]
    _, info, _ = procedural(picks, args.n, args.work / "insert", args.seed, store, "disc")
    gen = []
    ann = json.loads((args.work / "insert" / "annotations.json").read_text())
    labels = [f"{a['attributes']['morphology'][:10]} d={2 * i['r'] * 0.2:.0f} mm"
              for a, i in zip([a for a in ann["annotations"] if a.get("category_id") == 2], info)]
    for i, lab in zip(info, labels):
        gen.append((crop(read_image(i["file"]), i["cx"], i["cy"]), lab))
    # (3) store patches: real vs lesion-dcgan
    patch_rows = []
    if args.dcgan_run is not None:
        from mammosynth.train.run import load_method

        with Store(store) as st:
            p_real = st.lesions().patch[: args.n // 2]
        samples = list(load_method(args.dcgan_run, device="cpu").generate(args.n - len(p_real), args.seed, batch_size=16))
        patch_rows = [(p, "real 64-px patch") for p in p_real] + [(np.asarray(s.image, np.float32), "lesion-dcgan")
                                                                  for s in samples]
    # one cluster into one normal film, overview + zoom
    one = args.work / "insert_one"
    if one.exists():
        import shutil

        shutil.rmtree(one)
    film = normals[int(rng.integers(len(normals)))]
    insert_lesions(None, None, [film], 1, one, seed=args.seed, size_from=store, pixel_spacing=0.2,
                   lesion_type="calcification", morphology=args.morphology, distribution="clustered",
                   progress=False, out_format="png")
    a1 = json.loads((one / "annotations.json").read_text())
    after = read_image(one / a1["images"][0]["file_name"])
    before = read_image(film)
    x, y, w, h = a1["annotations"][0]["bbox"]
    att = a1["annotations"][0]["attributes"]

    n_rows = 2 + (1 if patch_rows else 0)
    fig = plt.figure(figsize=(args.n * 1.15 + 6.4, n_rows * 1.45 + 0.7))
    gs = fig.add_gridspec(n_rows, args.n + 5, width_ratios=[1] * args.n + [0.15, 1.7, 1.7, 1.7, 0.05])
    tiles = [("real mini-MIAS", real), ("procedural\n(insert)", gen)]
    for r, (name, items) in enumerate(tiles):
        for c in range(args.n):
            ax = fig.add_subplot(gs[r, c])
            ax.set_xticks([]), ax.set_yticks([])
            if c < len(items):
                t, lab = items[c]
                lo, hi = window(t)
                ax.imshow(t, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_title(lab, fontsize=6, pad=2)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if patch_rows:
        for c, (t, lab) in enumerate(patch_rows[: args.n]):
            ax = fig.add_subplot(gs[2 + c // args.n, c % args.n])
            ax.set_xticks([]), ax.set_yticks([])
            ax.imshow(t, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(lab, fontsize=6, pad=2)
            if c == 0:
                ax.set_ylabel("store patches\n[0, 1] window", fontsize=8)
    span = slice(0, n_rows)
    ax = fig.add_subplot(gs[span, args.n + 1])
    ax.imshow(after, cmap="gray", vmin=0, vmax=1)
    ax.add_patch(Rectangle((x, y), w, h, fill=False, ec="yellow", lw=1.6))
    ax.set_title(f"normal film {film.stem}, cluster boxed", fontsize=7)
    ax.set_xticks([]), ax.set_yticks([])
    cx, cy = x + w / 2, y + h / 2
    zb, za = crop(before, cx, cy, int(max(w, h) * 1.6)), crop(after, cx, cy, int(max(w, h) * 1.6))
    lo, hi = window(zb)
    for k, (t, lab) in enumerate(((zb, "zoom: before"), (za, f"after: {att['n_calcifications']} {att['morphology']}\n"
                                                           f"calcifications, {att['distribution']}"))):
        ax = fig.add_subplot(gs[span, args.n + 2 + k])
        ax.imshow(t, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(lab, fontsize=7)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Calcification clusters at mini-MIAS's 0.2 mm/px (Suckling et al. 1994): real (top) and procedural "
                 "(insert) tiles 25.6 mm wide, each windowed to its 1st-99.8th percentile; right: one cluster "
                 "inserted into a real normal film", fontsize=8)
    save_figure(fig, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
