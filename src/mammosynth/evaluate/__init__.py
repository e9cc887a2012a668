"""Evaluation metrics for synthetic lesion sets (issue 6, sections 1-3).

Inputs everywhere: torch (N,1,H,W) float in [-1,1], or numpy (N,H,W)/(N,1,H,W) in [0,1].

- :mod:`.features`: ImageNet features (VGG16 conv5_3 pooled, EfficientNet-Lite0 pooled).
- :mod:`.lpips`: LPIPS (Alex/VGG, official v0.1 linear layers); seed-001 Table 1 mean distance.
- :mod:`.frechet`: FD-VGG16 / FD-EffNet, KID, with the real-train vs real-test floor and ratio.
- :mod:`.prdc`: precision, recall, density, coverage (k-NN manifolds, k=5).
- :mod:`.diversity`: MS-SSIM and MS-SSIM diversity.
- :mod:`.memorisation`: nearest training image, near-copy flags, histogram and pair PNGs.
- :mod:`.tsne`: seed-003 t-SNE of real, synthetic and normal patches.

Metrics that need pretrained weights raise :class:`mammosynth.errors.WeightsError` when the cache
(`mammosynth weights get`) is missing; report code turns that into "skipped: <reason>".
Sub-modules are imported on demand.
"""

from mammosynth.errors import WeightsError


def skipped(err: Exception) -> dict:
    """The report entry for a metric that could not run: ``{"skipped": "<reason>"}``."""
    return {"skipped": str(err)}


__all__ = ["WeightsError", "skipped"]
