"""Memorisation check: is any synthetic image a near-copy of a real training image?

For each synthetic image we find its nearest real *training* image and the distance, and compare
with how close real training images are to each other: a synthetic image closer to a training
image than the ``percentile``-th percentile (default 1st) of the training set's own
nearest-neighbour distances is flagged as a near-copy.

Distance spaces:

- ``"pixel"`` (default): RMS pixel difference of the images in [-1,1],
  ``||a - b||_2 / sqrt(H*W)``, optionally after area-resizing to ``size``. With
  ``dihedral=True`` (default) the minimum over the 8 flips/90-degree rotations of the synthetic
  image is used, since training augmentation (seed 001) flips and rotates patches and a memorised
  patch may come back transformed. For the train-train reference the same minimum is taken and an
  image is never compared with (a transform of) itself.
- ``"features"``: Euclidean distance between given feature vectors (e.g. FD-VGG16 features);
  no transforms.

Outputs: the distances, the flag list, a histogram PNG (synthetic->train vs train->train
nearest-neighbour distances with the threshold) and a side-by-side PNG of the flagged pairs
(or, when none is flagged, the closest pairs, titled as such).
Inputs: torch (N,1,H,W) in [-1,1] or numpy in [0,1] (see evaluate.features).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mammosynth.errors import MammosynthError
from mammosynth.evaluate.features import to_model_range
from mammosynth.io import atomic_path


@dataclass
class MemorisationResult:
    """Nearest real training image of every synthetic image, and the near-copy flags."""

    space: str
    nearest_index: np.ndarray  # (M,) index into the training set
    distances: np.ndarray  # (M,) distance to that image
    train_nn_distances: np.ndarray  # (N,) each training image to its nearest other training image
    threshold: float
    percentile: float
    flagged: list[int] = field(default_factory=list)  # synthetic indices below the threshold
    histogram_png: str | None = None
    pairs_png: str | None = None

    def summary(self) -> dict:
        """JSON-able numbers for a report."""
        return {
            "space": self.space, "threshold": self.threshold, "threshold_percentile": self.percentile,
            "n_synthetic": int(self.distances.size), "n_train": int(self.train_nn_distances.size),
            "n_flagged": len(self.flagged), "fraction_flagged": len(self.flagged) / max(1, self.distances.size),
            "synthetic_to_train_median": float(np.median(self.distances)) if self.distances.size else None,
            "synthetic_to_train_min": float(self.distances.min()) if self.distances.size else None,
            "train_to_train_median": float(np.median(self.train_nn_distances)),
            "flagged": [{"synthetic": int(i), "train": int(self.nearest_index[i]),
                         "distance": float(self.distances[i])} for i in self.flagged],
            "histogram_png": self.histogram_png, "pairs_png": self.pairs_png,
        }


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/rotations of square images (B,1,S,S)."""
    out = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(-2, -1))
        out += [r, torch.flip(r, dims=(-1,))]
    return out


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows: (M,D), (N,D) -> (M,N), float64."""
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min(0)


def nearest_neighbours(query: torch.Tensor, ref: torch.Tensor, exclude_self: bool = False,
                       chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Index and Euclidean distance of each query row's nearest ref row: (M,), (M,).

    ``exclude_self``: query and ref are the same set; row i never matches ref i.
    """
    q, r = query.double(), ref.double()
    idx, dist = [], []
    for s in range(0, q.shape[0], chunk):
        d = _sq_dists(q[s:s + chunk], r)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + s] = float("inf")
        m = d.min(dim=1)
        idx.append(m.indices)
        dist.append(m.values.sqrt())
    return torch.cat(idx).numpy(), torch.cat(dist).numpy()


def _pixel_vectors(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    return x


def _nn_pixel(query: torch.Tensor, ref: torch.Tensor, dihedral: bool, exclude_self: bool):
    """Nearest ref image of each query image in RMS pixel distance, min over query transforms."""
    d = query.shape[-2] * query.shape[-1]
    views = _dihedral(query) if dihedral and query.shape[-2] == query.shape[-1] else [query]
    ref_flat = ref.flatten(1)
    best_idx = best = None
    for view in views:
        idx, dist = nearest_neighbours(view.flatten(1), ref_flat, exclude_self=exclude_self)
        if best is None:
            best_idx, best = idx, dist
        else:
            better = dist < best
            best_idx, best = np.where(better, idx, best_idx), np.where(better, dist, best)
    return best_idx, best / np.sqrt(d)


def memorisation_check(synthetic, train, out_dir: str | os.PathLike | None = None, space: str = "pixel",
                       synthetic_features=None, train_features=None, percentile: float = 1.0,
                       size: int | None = None, dihedral: bool = True, max_pairs_shown: int = 16
                       ) -> MemorisationResult:
    """Nearest training image of each synthetic image; flags near-copies; optional PNGs in ``out_dir``.

    ``space="pixel"`` uses the images; ``space="features"`` uses ``synthetic_features`` and
    ``train_features`` ((M,D), (N,D)) and the images only for the pictures. The threshold is the
    ``percentile``-th percentile of the training set's nearest-neighbour distances.
    """
    syn, tr = to_model_range(synthetic), to_model_range(train)
    if tr.shape[0] < 2:
        raise MammosynthError(f"memorisation check needs at least 2 training images, got {tr.shape[0]}")
    if space == "pixel":
        syn_v, tr_v = _pixel_vectors(syn, size), _pixel_vectors(tr, size)
        if syn_v.shape[-2:] != tr_v.shape[-2:]:
            raise MammosynthError(f"synthetic {tuple(syn_v.shape[-2:])} and training {tuple(tr_v.shape[-2:])} "
                                  "image sizes differ; pass size= to resize both")
        nearest, dist = _nn_pixel(syn_v, tr_v, dihedral, exclude_self=False)
        _, train_nn = _nn_pixel(tr_v, tr_v, dihedral, exclude_self=True)
        label = "RMS pixel distance ([-1,1] units" + (", min over 8 flips/rotations)" if dihedral else ")")
    elif space == "features":
        if synthetic_features is None or train_features is None:
            raise MammosynthError("space='features' needs synthetic_features and train_features")
        sf = torch.as_tensor(np.asarray(synthetic_features, dtype=np.float64))
        tf = torch.as_tensor(np.asarray(train_features, dtype=np.float64))
        if sf.shape[0] != syn.shape[0] or tf.shape[0] != tr.shape[0]:
            raise MammosynthError("feature rows must match the number of synthetic and training images")
        nearest, dist = nearest_neighbours(sf, tf)
        _, train_nn = nearest_neighbours(tf, tf, exclude_self=True)
        label = "feature-space Euclidean distance"
    else:
        raise MammosynthError(f"unknown memorisation space '{space}' (expected 'pixel' or 'features')")
    threshold = float(np.percentile(train_nn, percentile))
    flagged = [int(i) for i in np.argsort(dist) if dist[i] < threshold]
    result = MemorisationResult(space=space, nearest_index=nearest, distances=dist, train_nn_distances=train_nn,
                                threshold=threshold, percentile=percentile, flagged=flagged)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        result.histogram_png = str(save_histogram(result, out / "memorisation_histogram.png", label))
        result.pairs_png = str(save_pairs(result, syn, tr, out / "memorisation_pairs.png", max_pairs_shown))
    return result


def save_histogram(result: MemorisationResult, path: str | os.PathLike, xlabel: str) -> Path:
    """Histogram PNG of synthetic->train and train->train nearest-neighbour distances with the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    hi = float(max(result.distances.max(initial=0), result.train_nn_distances.max(initial=0))) or 1.0
    bins = np.linspace(0, hi * 1.02, 40)
    ax.hist(result.train_nn_distances, bins=bins, alpha=0.55, density=True, label="real train -> nearest other real train")
    ax.hist(result.distances, bins=bins, alpha=0.55, density=True, label="synthetic -> nearest real train")
    ax.axvline(result.threshold, color="k", ls="--", lw=1,
               label=f"near-copy threshold (percentile {result.percentile:g} of real-real) = {result.threshold:.3g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(f"Memorisation: {len(result.flagged)} of {result.distances.size} synthetic flagged")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def save_pairs(result: MemorisationResult, synthetic: torch.Tensor, train: torch.Tensor,
               path: str | os.PathLike, max_pairs: int = 16) -> Path:
    """Side-by-side PNG: each flagged synthetic image next to its nearest training image.

    With nothing flagged it shows the closest pairs instead and says so in the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = result.flagged[:max_pairs]
    title = f"Flagged near-copies ({len(result.flagged)}): synthetic | nearest real train"
    if not shown:
        shown = [int(i) for i in np.argsort(result.distances)[: min(8, max_pairs, result.distances.size)]]
        title = "No near-copies flagged; the closest pairs: synthetic | nearest real train"
    rows = max(1, len(shown))
    fig, axes = plt.subplots(rows, 2, figsize=(3.2, 1.6 * rows + 0.5), dpi=120, squeeze=False)
    for r, i in enumerate(shown):
        j = int(result.nearest_index[i])
        for c, (img, name) in enumerate(((synthetic[i], f"synthetic {i}"), (train[j], f"train {j}"))):
            axes[r, c].imshow(((img[0].numpy() + 1) / 2).clip(0, 1), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_title(name + (f"  d={result.distances[i]:.3g}" if c == 0 else ""), fontsize=6)
            axes[r, c].axis("off")
    if not shown:
        for ax in axes.ravel():
            ax.axis("off")
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


__all__ = ["memorisation_check", "MemorisationResult", "nearest_neighbours", "save_histogram", "save_pairs"]
