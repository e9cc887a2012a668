"""The seed-001 "Tri-label" input of the infilling GAN (Shen et al. 2021, Sec. 3.1, 3.3, 4.1).

Three grayscale channels, concatenated:

1. *tissue patch*: the patch with the lesion region replaced by uniformly random values in
   the image's value range (the paper: "between 0 and 255"; here [-1, 1]);
2. *mask patch*: the lesion mask;
3. *margin patch*: the margin ring, i.e. the mask enlarged about its centroid by
   ``factor`` (the paper resizes the 256 px mask region to 296 px, factor 296/256) minus
   the mask itself.

The paper's ablation (Table 1, "two-channel input") drops the margin ring.

Compositing (ours; issue #13): a generator may only change the lesion and its margin ring,

    output = alpha * G(x) + (1 - alpha) * context,

with ``alpha`` 1 inside the mask, 0 outside the enlarged mask, and falling linearly across the
ring (:func:`composite_alpha`). Pixels outside the ring are then bit-identical to the context.

Every function takes numpy (``(H, W)``) or torch (``(B, 1, H, W)``) input and returns the
same kind; the numpy path runs through the torch one so both give identical geometry.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mammosynth.errors import ConfigError, DataError

#: The paper's margin enlargement: the 256 px mask region rescaled to 296 px (Sec. 4.1).
PAPER_MARGIN_FACTOR = 296.0 / 256.0

NoiseRegion = Literal["mask", "mask+ring"]


def _as_batch(mask: np.ndarray | torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    """(H,W) numpy or (B,1,H,W) torch -> (B,1,H,W) float tensor, and whether input was numpy."""
    if isinstance(mask, np.ndarray):
        if mask.ndim != 2:
            raise DataError(f"{name}: expected a (H, W) array, got shape {mask.shape}")
        return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None], True
    if not isinstance(mask, torch.Tensor):
        raise DataError(f"{name}: expected a numpy array or torch tensor, got {type(mask).__name__}")
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise DataError(f"{name}: expected a (B, 1, H, W) tensor, got shape {tuple(mask.shape)}")
    return mask, False


def enlarge_mask(mask: np.ndarray | torch.Tensor, factor: float = PAPER_MARGIN_FACTOR) -> np.ndarray | torch.Tensor:
    """The mask scaled by ``factor`` about its own centroid (bool; same kind and shape as ``mask``).

    Each output pixel p is inside when the mask, bilinearly sampled at c + (p - c) / factor,
    is >= 0.5 (c = centroid in pixel-centre coordinates). An empty mask stays empty.
    """
    if factor <= 0:
        raise ConfigError(f"margin factor must be > 0, got {factor}")
    m, was_numpy = _as_batch(mask, "mask")
    m = (m > 0.5).to(torch.float32)
    B, _, H, W = m.shape
    ys = torch.arange(H, dtype=torch.float32, device=m.device)
    xs = torch.arange(W, dtype=torch.float32, device=m.device)
    area = m.sum(dim=(1, 2, 3)).clamp_min(1.0)
    cy = (m.sum(dim=(1, 3)) * ys).sum(dim=1) / area  # (B,) centroid row, pixel units
    cx = (m.sum(dim=(1, 2)) * xs).sum(dim=1) / area
    # pixel index -> normalised coordinate for align_corners=False: (i + 0.5) / N * 2 - 1
    cxn = (cx + 0.5) / W * 2.0 - 1.0
    cyn = (cy + 0.5) / H * 2.0 - 1.0
    inv = 1.0 / float(factor)
    theta = torch.zeros(B, 2, 3, dtype=torch.float32, device=m.device)
    theta[:, 0, 0] = inv
    theta[:, 1, 1] = inv
    theta[:, 0, 2] = cxn * (1.0 - inv)
    theta[:, 1, 2] = cyn * (1.0 - inv)
    grid = F.affine_grid(theta, [B, 1, H, W], align_corners=False)
    big = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False) >= 0.5
    if was_numpy:
        return big[0, 0].cpu().numpy()
    return big


def margin_ring(mask: np.ndarray | torch.Tensor, factor: float = PAPER_MARGIN_FACTOR) -> np.ndarray | torch.Tensor:
    """Margin patch (Sec. 4.1 step 3): the mask enlarged by ``factor`` about its centroid
    minus the mask. numpy (H,W) -> (H,W) bool; torch (B,1,H,W) -> (B,1,H,W) bool."""
    big = enlarge_mask(mask, factor)
    if isinstance(mask, np.ndarray):
        return np.logical_and(big, ~(mask > 0.5))
    return big & ~(mask > 0.5)


def _noise_region(mask, region: NoiseRegion, factor: float):
    if region == "mask":
        return mask > 0.5
    if region == "mask+ring":
        big = enlarge_mask(mask, factor)
        return (big | (mask > 0.5)) if not isinstance(mask, np.ndarray) else np.logical_or(big, mask > 0.5)
    raise ConfigError(f"noise region must be 'mask' or 'mask+ring', got {region!r}")


def noise_corrupt_tissue(
    patch: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    rng: np.random.Generator | torch.Generator | None = None,
    *,
    region: NoiseRegion = "mask",
    factor: float = PAPER_MARGIN_FACTOR,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> np.ndarray | torch.Tensor:
    """Tissue patch (Sec. 3.1): ``patch`` with the lesion region replaced by i.i.d. uniform
    noise over ``value_range`` (the paper's 0..255 in 8-bit units; [-1, 1] for our tensors).

    numpy: ``patch`` and ``mask`` (H,W), ``rng`` a ``np.random.Generator``.
    torch: (B,1,H,W), ``rng`` a ``torch.Generator`` on the patch's device (or None).
    ``region="mask+ring"`` also corrupts the margin ring (an option, not the paper's default).
    """
    lo, hi = float(value_range[0]), float(value_range[1])
    if isinstance(patch, np.ndarray):
        if patch.shape != np.shape(mask):
            raise DataError(f"patch shape {patch.shape} differs from mask shape {np.shape(mask)}")
        where = _noise_region(np.asarray(mask), region, factor)
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng()
        noise = gen.uniform(lo, hi, size=patch.shape).astype(patch.dtype if patch.dtype.kind == "f" else np.float32)
        return np.where(where, noise, patch)
    if not isinstance(patch, torch.Tensor) or patch.dim() != 4:
        raise DataError(f"patch: expected a (B, 1, H, W) tensor or (H, W) array, got {getattr(patch, 'shape', type(patch))}")
    if patch.shape != mask.shape:
        raise DataError(f"patch shape {tuple(patch.shape)} differs from mask shape {tuple(mask.shape)}")
    where = _noise_region(mask, region, factor)
    gen = rng if isinstance(rng, torch.Generator) else None
    noise = torch.rand(patch.shape, generator=gen, device=patch.device, dtype=torch.float32)
    noise = (noise * (hi - lo) + lo).to(patch.dtype)
    return torch.where(where, noise, patch)


def tri_label(
    patch: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    factor: float = PAPER_MARGIN_FACTOR,
    two_channel: bool = False,
    generator: np.random.Generator | torch.Generator | None = None,
    noise_region: NoiseRegion = "mask",
) -> np.ndarray | torch.Tensor:
    """The generator input (Sec. 3.3): [noise-corrupted tissue, mask, margin ring], all in [-1, 1].

    torch: ``patch`` (B,1,H,W) in [-1,1], ``mask`` (B,1,H,W) in {0,1} -> (B,3,H,W), or
    (B,2,H,W) with ``two_channel=True`` (the paper's ablation without the margin ring).
    numpy: (H,W) each -> (3 or 2, H, W) float32.
    """
    tissue = noise_corrupt_tissue(patch, mask, generator, region=noise_region, factor=factor)
    if isinstance(patch, np.ndarray):
        m = (np.asarray(mask) > 0.5).astype(np.float32)
        chans = [tissue.astype(np.float32), m * 2.0 - 1.0]
        if not two_channel:
            chans.append(margin_ring(m, factor).astype(np.float32) * 2.0 - 1.0)
        return np.stack(chans, axis=0)
    m = (mask > 0.5).to(patch.dtype)
    chans = [tissue, m * 2.0 - 1.0]
    if not two_channel:
        chans.append(margin_ring(m, factor).to(patch.dtype) * 2.0 - 1.0)
    return torch.cat(chans, dim=1)


def composite_alpha(mask: np.ndarray | torch.Tensor, factor: float = PAPER_MARGIN_FACTOR, steps: int = 8) -> np.ndarray | torch.Tensor:
    """Blend weight for compositing a generated lesion into its context (same kind and shape as
    ``mask``, float32 in [0, 1]): 1 on the mask, 0 outside the mask enlarged by ``factor``, and in
    the margin ring the fraction of ``steps`` enlargements 1 < s <= factor (about the centroid,
    as :func:`enlarge_mask`) that cover the pixel: a ramp across the ring that follows its shape."""
    m, was_numpy = _as_batch(mask, "mask")
    inside = (m > 0.5).to(torch.float32)
    if factor <= 1.0:
        raise ConfigError(f"margin factor must be > 1 to blend across a ring, got {factor}")
    alpha = torch.zeros_like(inside)
    scales = torch.linspace(1.0, float(factor), steps + 1)[1:]
    for s in scales.tolist():
        alpha += enlarge_mask(inside, s).to(torch.float32)
    alpha = torch.maximum(alpha / steps, inside)
    alpha = alpha * enlarge_mask(inside, factor).to(torch.float32).clamp(min=inside)  # exactly 0 outside
    if was_numpy:
        return alpha[0, 0].cpu().numpy()
    return alpha.to(mask.dtype if mask.is_floating_point() else torch.float32)


def composite(generated: torch.Tensor, context: torch.Tensor, mask: torch.Tensor,
              factor: float = PAPER_MARGIN_FACTOR) -> torch.Tensor:
    """``alpha * generated + (1 - alpha) * context`` with :func:`composite_alpha` (torch, (B,1,H,W)).

    Outside the enlarged mask alpha is exactly 0, so those pixels equal ``context`` bit for bit
    (for finite ``generated``); gradients reach ``generated`` only inside the mask and ring."""
    alpha = composite_alpha(mask, factor).to(generated.dtype)
    out = alpha * generated + (1 - alpha) * context.to(generated.dtype)
    return torch.where(alpha > 0, out, context.to(generated.dtype))


#: Immerkaer's (1996) noise kernel (a difference of two discrete Laplacians): its response to
#: white noise of sd s has sd 6 s, and to any plane exactly 0.
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def immerkaer_sd(image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Immerkaer's fast noise estimate: per-image noise sd (B,) of ``image`` (B,1,H,W) over the
    pixels of ``region`` (B,1,H,W bool; callers erode it so edges do not count), sqrt(pi/2) / 6
    x the mean |kernel response|. The border is padded by edge replication (for a 3x3 kernel the
    same as scipy's "reflect"). NaN for an image whose region is empty. The phantom's realism
    benchmark (phantom.realism.immerkaer_noise) and :func:`match_grain` both use it."""
    k = _IMMERKAER.to(image.device, image.dtype)[None, None]
    resp = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), k).abs()
    region = region.to(torch.bool)
    n = region.sum(dim=(1, 2, 3))
    mean = (resp * region).sum(dim=(1, 2, 3)) / n.clamp(min=1)
    return torch.where(n > 0, mean * (np.pi / 2.0) ** 0.5 / 6.0, torch.full_like(mean, float("nan")))


def _erode(region: torch.Tensor) -> torch.Tensor:
    """3 x 3 binary erosion of a (B,1,H,W) mask (as bool)."""
    return -F.max_pool2d(-region.to(torch.float32), 3, stride=1, padding=1) > 0.5


def match_grain(composed: torch.Tensor, context: torch.Tensor, mask: torch.Tensor, factor: float = PAPER_MARGIN_FACTOR,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Give an infilled lesion the grain of its context: white Gaussian noise of variance
    sd_context^2 - sd_fill^2 (Immerkaer estimates: the context outside the enlarged mask, the
    fill inside the mask; none where the fill is already as grainy), weighted by the composite's
    alpha, so pixels outside the margin ring stay bit-identical. A generator trained for a few
    hundred steps paints smooth lesions while quantum noise and film grain run over real ones
    (docs/quality.md: the phantom v2 row). Torch (B,1,H,W) in [-1, 1]; returns the same."""
    alpha = composite_alpha(mask, factor).to(composed.dtype)
    sd_ctx = immerkaer_sd(context.to(composed.dtype), _erode(alpha == 0))
    sd_fill = immerkaer_sd(composed, _erode(mask > 0.5))
    add = torch.nan_to_num((sd_ctx ** 2 - sd_fill ** 2).clamp(min=0.0).sqrt(), nan=0.0)
    noise = torch.randn(composed.shape, generator=generator, device=composed.device if generator is None else generator.device,
                        dtype=composed.dtype).to(composed.device)
    out = composed + alpha * add.view(-1, 1, 1, 1) * noise
    return torch.where(alpha > 0, out.clamp(-1.0, 1.0), composed)


def draw_contexts(path: str, split: str, n: int, seed: int, who: str):
    """The tissue contexts an infilling method's ``generate`` paints into: ``n`` lesion patches
    of ``split`` of the store at ``path``, drawn in rounds (each round a fresh permutation, so a
    context is reused only when ``n`` exceeds the split, and then said in a warning). Returns
    (LesionArrays in draw order, repeat): ``repeat[k]`` is 0 on a context's first use, k on its
    k-th reuse (the manifest's ``context_repeat``)."""
    import logging

    from mammosynth.data.store import Store

    with Store(path) as store:
        idx = store.split_indices("lesions", split)
        if not len(idx):
            raise DataError(f"{path}: split {split!r} has no lesion patches to take tissue from; choose another --split")
        rng = np.random.default_rng(seed)
        rounds = -(-n // len(idx))
        chosen = np.concatenate([rng.permutation(idx) for _ in range(rounds)])[:n]
        repeat = np.arange(n) // len(idx)
        if rounds > 1:
            logging.getLogger(__name__).warning(
                "%s generate: %d images from the %d tissue contexts of split %r of %s: each context is reused up to %d "
                "times with fresh noise (manifest extra context_repeat)", who, n, len(idx), split, path, rounds - 1)
        unique, back = np.unique(chosen, return_inverse=True)  # h5py reads strictly increasing indices
        uniq = store.lesions(indices=unique)
    pick = np.asarray(back).reshape(-1)
    arrays = type(uniq)(index=uniq.index[pick], patch=uniq.patch[pick], mask=uniq.mask[pick],
                        shape=uniq.shape[pick], margin=uniq.margin[pick], pathology=uniq.pathology[pick],
                        source_id=[uniq.source_id[k] for k in pick], patient_id=[uniq.patient_id[k] for k in pick],
                        morphology=uniq.morphology[pick], distribution=uniq.distribution[pick],
                        lesion_type=[uniq.lesion_type[k] for k in pick])
    return arrays, repeat


def context_labels(arrays, i: int) -> dict[str, str | None]:
    """Lesion type, morphology and distribution of context ``i`` drawn by :func:`draw_contexts`
    (None where unknown), so a lesion painted into a calcification cluster's own mask is
    written as a calcification with its labels."""
    from mammosynth.data.birads import DISTRIBUTIONS, MORPHOLOGIES

    def term(vocab: tuple[str, ...], col) -> str | None:
        k = -1 if col is None else int(col[i])
        return vocab[k] if 0 <= k < len(vocab) else None

    return {"lesion_type": None if arrays.lesion_type is None else str(arrays.lesion_type[i]),
            "morphology": term(MORPHOLOGIES, arrays.morphology), "distribution": term(DISTRIBUTIONS, arrays.distribution)}


def user_mask_at(mask, size: int, who: str) -> np.ndarray | None:
    """A user's ``--mask`` for ``generate``: a non-empty (H, W) array resized to ``size``, or None."""
    if mask is None:
        return None
    from mammosynth.data.store import resize_mask

    mask = np.asarray(mask)
    if mask.ndim != 2 or not mask.any():
        raise DataError(f"{who} generate: mask must be a non-empty (H, W) array, got shape {mask.shape}")
    return resize_mask(mask.astype(bool), (size, size))
