"""Before/after crops of an `insert` output at native scale (the pictures of docs/insert.md).

    python benchmarks/figure_insert.py OUT_DIR --out docs/insert_example.png [--margin 0.8]

For every image of an insert output folder: a crop around the inserted lesion, one image pixel
per picture pixel: before | after | after with the lesion mask (yellow) and the outline of every
changed pixel (cyan) | after, with the window widened to the lesion's range. The first three use
the before crop's 1st-99.5th percentile window. Sources are read from the manifest's
``source_file`` with the same readers insert uses.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def crop_box(bbox: tuple[int, int, int, int], shape: tuple[int, int], margin: float) -> tuple[slice, slice]:
    x, y, w, h = bbox
    side = int(max(w, h) * (1 + 2 * margin))
    cx, cy = x + w // 2, y + h // 2
    y0, x0 = max(0, cy - side // 2), max(0, cx - side // 2)
    return slice(y0, min(shape[0], y0 + side)), slice(x0, min(shape[1], x0 + side))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="an insert output folder (manifest.csv, images/, masks/)")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--margin", type=float, default=0.8, help="context around the box, in box sides (default 0.8)")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage

    from mammosynth.io import atomic_path
    from mammosynth.synth.targets import _is_dicom_file, _read_raster_native

    def read_target_pixels(path: Path) -> np.ndarray:
        if _is_dicom_file(path):
            import pydicom

            return pydicom.dcmread(path).pixel_array
        return _read_raster_native(path)

    with open(args.folder / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3.4 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        before = read_target_pixels(Path(row["source_file"])).astype(np.float64)
        after = read_target_pixels(args.folder / row["file"]).astype(np.float64)
        from PIL import Image

        mask = np.asarray(Image.open(args.folder / row["mask_file"])) > 0
        box = tuple(int(float(row[k])) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
        ys, xs = crop_box(box, before.shape, args.margin)
        b, a, m = before[ys, xs], after[ys, xs], mask[ys, xs]
        changed = b != a
        lo, hi = np.percentile(b, [1, 99.5])
        wlo, whi = np.percentile(np.concatenate([b.ravel(), a[m].ravel()]), [0.5, 100])
        edge = lambda z: z & ~ndimage.binary_erosion(z)  # noqa: E731
        overlay = np.dstack([np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1)] * 3)
        overlay[edge(m)] = (1, 1, 0)
        overlay[edge(changed)] = (0, 1, 1)
        mm = float(row["pixel_spacing_mm"] or "nan")
        title = f"{Path(row['source_file']).name}: {row['lesion_h_mm']} x {row['lesion_w_mm']} mm at {mm:g} mm/px"
        panels = ((b, lo, hi, "before"), (a, lo, hi, "after"), (overlay, None, None, "mask (yellow), changed (cyan)"),
                  (a, wlo, whi, "after, lesion window"))
        for c, (img, vlo, vhi, name) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=vlo, vmax=vhi, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(name, fontsize=8)
            if c == 0:
                ax.set_ylabel(title, fontsize=7)
        print(f"{row['file']}: {int(changed.sum())} pixels changed in the crop, mask {int(m.sum())} px; "
              f"lesion mean {a[m].mean():.0f} vs its ring-free surroundings {b[~changed].mean():.0f} before", flush=True)
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
