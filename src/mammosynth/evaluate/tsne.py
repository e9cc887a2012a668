"""t-SNE picture of real lesions, synthetic lesions and normal tissue (seed 003, sec. 4.1 and Fig. 2).

Protocol of seed 003: the patches (128 x 128 there) are flattened to pixel vectors and embedded in
2-D with t-SNE, 500 patches per group (real mass lesions, synthetic mass lesions, real normal
tissue), perplexity 250, 4000 iterations. Here: scikit-learn ``TSNE`` (Barnes-Hut, PCA
initialisation, seeded) on the pixels in [-1,1] (optionally area-resized to ``size``).

With fewer samples the parameters are reduced automatically and reported: each group is capped at
its available size, and perplexity is capped at (n_total - 1) / 3 (Barnes-Hut needs about
3 x perplexity neighbours; scikit-learn requires perplexity < n_samples). The scatter follows the
paper's Fig. 2 style: real = red crosses, synthetic = green circles, normal = purple triangles.
Inputs: torch (N,1,H,W) in [-1,1] or numpy in [0,1] (see evaluate.features).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mammosynth.errors import MammosynthError
from mammosynth.evaluate.features import to_model_range
from mammosynth.io import atomic_path

SEED003_PER_GROUP = 500
SEED003_PERPLEXITY = 250.0
SEED003_ITERATIONS = 4000
GROUP_STYLE = {  # label -> (colour, marker), as in seed 003 Fig. 2
    "real lesions": ("tab:red", "x"),
    "synthetic lesions": ("tab:green", "o"),
    "normal tissue": ("tab:purple", "^"),
}


@dataclass
class TSNEResult:
    """2-D embedding with one group label per row and the parameters actually used."""

    embedding: np.ndarray  # (n_total, 2)
    labels: np.ndarray  # (n_total,) group names
    indices: np.ndarray  # (n_total,) index of each row within its group's input
    params: dict = field(default_factory=dict)  # perplexity, iterations, per-group counts, reductions
    png: str | None = None

    def summary(self) -> dict:
        return {"params": self.params, "png": self.png}


def _flatten(images, size: int | None) -> torch.Tensor:
    x = to_model_range(images)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    return x


def tsne_embedding(real, synthetic, normal=None, n_per_group: int = SEED003_PER_GROUP,
                   perplexity: float = SEED003_PERPLEXITY, n_iter: int = SEED003_ITERATIONS, seed: int = 0,
                   size: int | None = None, out_png: str | os.PathLike | None = None,
                   title: str = "t-SNE of pixel vectors (seed 003 protocol)") -> TSNEResult:
    """Seed-003 t-SNE of real lesions, synthetic lesions and (optionally) normal tissue patches.

    Each group is randomly subsampled (seeded) to ``n_per_group``. All groups must share one image
    size unless ``size`` is given. Returns the embedding; saves the scatter PNG when ``out_png``.
    """
    from sklearn.manifold import TSNE

    groups = [("real lesions", real), ("synthetic lesions", synthetic)]
    if normal is not None:
        groups.append(("normal tissue", normal))
    rng = np.random.default_rng(seed)
    vectors, labels, indices, counts, reductions = [], [], [], {}, []
    shape = None
    for name, imgs in groups:
        x = _flatten(imgs, size)
        if shape is None:
            shape = tuple(x.shape[-2:])
        elif tuple(x.shape[-2:]) != shape:
            raise MammosynthError(f"t-SNE: '{name}' images are {tuple(x.shape[-2:])}, others {shape}; pass size=")
        n = x.shape[0]
        if n == 0:
            raise MammosynthError(f"t-SNE: no '{name}' images")
        take = min(n_per_group, n)
        if take < n_per_group:
            reductions.append(f"{name}: {n} available < {n_per_group} requested")
        sel = np.sort(rng.choice(n, take, replace=False))
        vectors.append(x[torch.from_numpy(sel)].flatten(1).double().numpy())
        labels += [name] * take
        indices.append(sel)
        counts[name] = take
    data = np.concatenate(vectors)
    n_total = data.shape[0]
    if n_total < 4:
        raise MammosynthError(f"t-SNE needs at least 4 samples in all, got {n_total}")
    used_perplexity = float(min(perplexity, (n_total - 1) / 3.0))
    if used_perplexity < perplexity:
        reductions.append(f"perplexity {perplexity:g} -> {used_perplexity:.3g} for {n_total} samples")
    kwargs = dict(n_components=2, perplexity=used_perplexity, init="pca", random_state=seed,
                  learning_rate="auto")
    # scikit-learn renamed n_iter to max_iter in 1.5
    iter_arg = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"
    kwargs[iter_arg] = int(n_iter)
    embedding = TSNE(**kwargs).fit_transform(data)
    params = {"perplexity": used_perplexity, "perplexity_requested": perplexity, "iterations": int(n_iter),
              "per_group": counts, "n_per_group_requested": n_per_group, "image_size": list(shape),
              "reductions": reductions, "seed": seed, "features": "pixels in [-1,1]"}
    result = TSNEResult(embedding=embedding, labels=np.array(labels), indices=np.concatenate(indices), params=params)
    if out_png is not None:
        result.png = str(save_tsne_png(result, out_png, title))
    return result


def save_tsne_png(result: TSNEResult, path: str | os.PathLike, title: str = "t-SNE") -> Path:
    """Scatter PNG in the style of seed 003 Fig. 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    for name, (colour, marker) in GROUP_STYLE.items():
        sel = result.labels == name
        if sel.any():
            kw = {"facecolors": "none", "edgecolors": colour} if marker == "o" else {"c": colour}
            ax.scatter(result.embedding[sel, 0], result.embedding[sel, 1], marker=marker, s=14, lw=0.8,
                       label=f"{name} ({int(sel.sum())})", **kw)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    p = result.params
    ax.set_title(f"{title}\nperplexity {p['perplexity']:.3g}, {p['iterations']} iterations", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


__all__ = ["tsne_embedding", "save_tsne_png", "TSNEResult", "SEED003_PER_GROUP", "SEED003_PERPLEXITY",
           "SEED003_ITERATIONS"]
