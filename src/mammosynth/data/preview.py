"""A contact sheet of a store: lesion patches with mask contours and labels, plus normals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mammosynth.data.birads import DISTRIBUTIONS, MARGINS, MORPHOLOGIES, PATHOLOGIES, SHAPES
from mammosynth.data.store import Store
from mammosynth.errors import DataError
from mammosynth.io import atomic_path


def _caption(shape: int, margin: int, pathology: int, vocabs: tuple[tuple[str, ...], ...] = (SHAPES, MARGINS)) -> str:
    """Two labels (shape and margin, or a calcification's morphology and distribution) and
    the pathology's initial."""
    s = vocabs[0][shape] if shape >= 0 else "-"
    m = vocabs[1][margin] if margin >= 0 else "-"
    p = PATHOLOGIES[pathology][0].upper() if pathology >= 0 else ""
    return f"{s.replace('_', ' ')}\n{m.replace('_', '-')}" + (f" ({p})" if p else "")


def write_preview(
    store_path: str | os.PathLike,
    out: str | os.PathLike,
    n_lesions: int = 32,
    n_normals: int = 4,
    columns: int = 8,
    seed: int = 0,
    dpi: int = 100,
) -> Path:
    """Write a PNG grid: ``n_lesions`` lesion patches (drawn at random with ``seed``), each
    with its mask contour (red) and its shape / margin / pathology caption, then a row of up to
    ``n_normals`` normal mammograms with their breast-mask outline. Written atomically.
    Returns the output path; DataError if the store holds neither lesions nor normals."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out)
    rng = np.random.default_rng(seed)
    with Store(store_path) as store:
        n_l, n_n = store.n_lesions, store.n_normals
        if n_l == 0 and n_n == 0:
            raise DataError(f"{store_path}: the store holds no lesions and no normals to preview")
        pick = np.sort(rng.choice(n_l, size=min(n_lesions, n_l), replace=False)) if n_l else np.zeros(0, int)
        les = store.lesions(indices=pick) if len(pick) else None
        points = [store.lesion_points(int(i)) for i in pick]
        normals = [store.normal(int(i)) for i in range(min(n_normals, n_n))]
        title = f"{Path(store_path).name}: {n_l} lesions, {n_n} normals (patch {store.patch_size} px)"
    cols = max(1, columns)
    les_rows = int(np.ceil(len(pick) / cols)) if len(pick) else 0
    norm_cols = max(1, len(normals))
    fig_w = 1.5 * cols
    fig = plt.figure(figsize=(fig_w, 1.8 * les_rows + (3.2 if normals else 0) + 0.4))
    grid = fig.add_gridspec(les_rows + (1 if normals else 0), 1,
                            height_ratios=[1.8] * les_rows + ([3.2] if normals else []))
    for r in range(les_rows):
        sub = grid[r].subgridspec(1, cols)
        for c in range(cols):
            ax = fig.add_subplot(sub[c])
            ax.set_axis_off()
            k = r * cols + c
            if les is None or k >= len(pick):
                continue
            ax.imshow(les.patch[k], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            if les.mask[k].any():
                ax.contour(les.mask[k].astype(np.float32), levels=[0.5], colors="red", linewidths=0.8)
            if les.lesion_type[k] == "calcification":  # morphology / distribution, and each calcification
                caption = _caption(int(les.morphology[k]), int(les.distribution[k]), int(les.pathology[k]),
                                   (MORPHOLOGIES, DISTRIBUTIONS))
                if len(points[k]):
                    ax.plot(points[k][:, 0], points[k][:, 1], "+", color="cyan", markersize=3, markeredgewidth=0.5)
            else:
                caption = _caption(int(les.shape[k]), int(les.margin[k]), int(les.pathology[k]))
            ax.set_title(caption, fontsize=6.5, pad=2)
    if normals:
        sub = grid[les_rows].subgridspec(1, max(norm_cols, 1))
        for c, nrm in enumerate(normals):
            ax = fig.add_subplot(sub[c])
            ax.set_axis_off()
            ax.imshow(nrm["image"], cmap="gray", vmin=0.0, vmax=1.0)
            ax.contour(nrm["breast_mask"].astype(np.float32), levels=[0.5], colors="yellow", linewidths=0.6)
            sid = nrm["source_id"]
            ax.set_title(f"normal …{sid[-20:]}" if len(sid) > 20 else f"normal {sid}", fontsize=6.5, pad=2)
    fig.suptitle(title, fontsize=8)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out
