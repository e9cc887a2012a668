"""The picture of docs/phantom.md's "Markers": phantom normals drawn with ``markers=True``.

    python benchmarks/figure_markers.py --out docs/phantom_markers.png

Two normals of ``phantom_normal_records(markers=True)`` (seed 0, 768 x 624, 0.27 mm/px; an
L CC and an L MLO, as drawn, not left-oriented) at half size, then each one's laterality marker
(2x enlarged) and nipple bead (8x), their label masks outlined in yellow just outside them.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402


def _rgb(img: np.ndarray) -> np.ndarray:
    g = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _outline(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    edge = mask & ~ndi.binary_erosion(mask)
    out = rgb.copy()
    out[edge] = (255, 220, 0)
    return out


def _zoom(rgb: np.ndarray, mask: np.ndarray, hw: tuple[int, int], k: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    cy, cx = int(ys.mean()), int(xs.mean())
    H, W = mask.shape
    h, w = hw
    y0 = min(max(0, cy - h // 2), H - h)
    x0 = min(max(0, cx - w // 2), W - w)
    return rgb[y0:y0 + h, x0:x0 + w].repeat(k, axis=0).repeat(k, axis=1)


def main() -> None:
    from PIL import Image

    from mammosynth.phantom import phantom_normal_records

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/phantom_markers.png")
    args = ap.parse_args()
    recs = list(phantom_normal_records(2, seed=0, full_shape=(768, 624), markers=True))
    panels = []
    for rec in recs:
        rgb = _rgb(rec.image)
        masks = {m.kind: m.mask for m in rec.markers}
        small = rgb[::2, ::2]
        # Zooms: the mask's outline drawn one pixel outside it, so the lead stays visible.
        z1 = _zoom(_outline(rgb, ndi.binary_dilation(masks["laterality"])), masks["laterality"], (80, 192), 2)
        z2 = _zoom(_outline(rgb, ndi.binary_dilation(masks["nipple"])), masks["nipple"], (24, 48), 8)
        col = np.concatenate([z1, np.zeros((8, 384, 3), np.uint8), z2], axis=0)
        col = np.concatenate([col, np.zeros((small.shape[0] - col.shape[0], 384, 3), np.uint8)], axis=0)
        panels += [small, np.zeros((small.shape[0], 8, 3), np.uint8), col, np.zeros((small.shape[0], 16, 3), np.uint8)]
    Image.fromarray(np.concatenate(panels[:-1], axis=1)).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
