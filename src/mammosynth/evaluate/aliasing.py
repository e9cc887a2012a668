"""Aliasing score: spectral peaks at a generator's upsampling frequencies, relative to real images.

A stride-2 transposed convolution whose kernel does not divide evenly by its stride (Odena,
Dumoulin & Olah 2016, "Deconvolution and checkerboard artifacts"), or any unfiltered 2x
upsampling (Karras et al. 2021, "Alias-free GANs"), leaves a pattern of period 2, 4, 8 ... pixels
in the output. In the image's power spectrum that is a peak at the frequencies

    (fy, fx) = (a / p, b / p),  p in {2, 4, 8},  a, b integers, (a, b) != (0, 0)

in cycles per pixel (0.5 = Nyquist). Real mammogram patches have a smooth ~1/f^beta spectrum
there. We take the mean periodogram of each set (Hann window, mean removed per image) and their
ratio R(f) = P_synthetic(f) / P_real(f), which is smooth where the two sets differ only in
overall texture or contrast. The score at an upsampling frequency is R there over the median of
R on a thin ring of bins around it: a local spectral excess that real images do not have. The
reported score is the maximum over the frequencies (``worst``) and where it occurs. 1 = no peak
beyond real; because it is a maximum over ~60 noisy bins, two halves of the same real set score
about 2 (150 patches each; compare with :func:`real_floor` on your data), while a checkerboard of
1% amplitude scores 10^3-10^4. ``peakiness`` of each set alone (its power over its own ring's
median) is reported too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


def mean_periodogram(images: np.ndarray) -> np.ndarray:
    """(N, H, W) images -> (H, W) geometric-mean power spectrum, DC at the centre (fftshift).

    Each image has its mean removed and a 2-D Hann window applied (limits leakage from the
    patch borders, which would otherwise smear power along the axes). The geometric mean over
    images (exp of the mean log-periodogram) keeps one high-contrast or film-textured image from
    dominating a small set; a pattern every image shares still shows in full."""
    x = np.asarray(images, np.float64)
    if x.ndim != 3 or x.shape[0] == 0:
        raise ValueError(f"expected (N, H, W) images with N >= 1, got shape {x.shape}")
    _, H, W = x.shape
    window = np.outer(np.hanning(H), np.hanning(W))
    x = (x - x.mean(axis=(1, 2), keepdims=True)) * window
    power = np.abs(np.fft.fft2(x)) ** 2
    return np.fft.fftshift(np.exp(np.log(power + 1e-30).mean(axis=0)))


def upsampling_frequencies(H: int, W: int, periods: tuple[int, ...] = (2, 4, 8)) -> list[tuple[int, int, str]]:
    """Spectrum bins (row, col) in fftshift coordinates of the frequencies (a/p, b/p) for the
    given periods, excluding DC, with a label like "(1/2, 1/4)" in cycles/pixel."""
    from fractions import Fraction

    out: dict[tuple[int, int], str] = {}
    cy, cx = H // 2, W // 2
    for p in periods:
        if H % p or W % p:
            continue
        for a in range(-(p // 2), p // 2 + 1):
            for b in range(-(p // 2), p // 2 + 1):
                if a == 0 and b == 0:
                    continue
                fy, fx = Fraction(a, p), Fraction(b, p)
                r, c = cy + int(fy * H), cx + int(fx * W)
                if 0 <= r < H and 0 <= c < W:
                    out.setdefault((r, c), f"({fy}, {fx})")
    return [(r, c, lab) for (r, c), lab in sorted(out.items())]


def peakiness(spectrum: np.ndarray, r: int, c: int, inner: int = 1, outer: int = 3) -> float:
    """Power at bin (r, c) over the median power on the ring inner < d <= outer (Chebyshev
    distance in bins, wrapping around the spectrum's edges: Nyquist bins neighbour -Nyquist)."""
    H, W = spectrum.shape
    dy, dx = np.meshgrid(np.arange(-outer, outer + 1), np.arange(-outer, outer + 1), indexing="ij")
    d = np.maximum(np.abs(dy), np.abs(dx))
    ring = (d > inner) & (d <= outer)
    vals = spectrum[(r + dy[ring]) % H, (c + dx[ring]) % W]
    background = float(np.median(vals))
    return float(spectrum[r, c]) / max(background, 1e-30)


@dataclass
class AliasingScore:
    """``worst``: max over upsampling frequencies of the local excess of the synthetic/real
    spectral ratio (1 = no peak beyond real); ``at``: that frequency in cycles/pixel;
    ``per_frequency``: every frequency's local excess and each set's own peakiness."""

    worst: float
    at: str
    synthetic_peakiness: float
    real_peakiness: float
    per_frequency: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def aliasing_score(real: np.ndarray, synthetic: np.ndarray, periods: tuple[int, ...] = (2, 4, 8)) -> AliasingScore:
    """Compare the spectral peaks of ``synthetic`` (N, H, W) with ``real`` (M, H, W), both in [0, 1]
    at the same size, at the upsampling frequencies of periods ``periods`` (pixels)."""
    real, synthetic = np.asarray(real), np.asarray(synthetic)
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(f"real and synthetic images differ in size: {real.shape[1:]} vs {synthetic.shape[1:]}")
    ps, pr = mean_periodogram(synthetic), mean_periodogram(real)
    ratio = ps / np.maximum(pr, 1e-30)
    H, W = ps.shape
    per: dict[str, dict[str, float]] = {}
    for r, c, label in upsampling_frequencies(H, W, periods):
        per[label] = {"synthetic": peakiness(ps, r, c), "real": peakiness(pr, r, c), "ratio": peakiness(ratio, r, c)}
    if not per:
        raise ValueError(f"no upsampling frequency fits a {H}x{W} image for periods {periods}")
    label = max(per, key=lambda k: per[k]["ratio"])
    w = per[label]
    return AliasingScore(worst=w["ratio"], at=label, synthetic_peakiness=w["synthetic"], real_peakiness=w["real"],
                         per_frequency=per)


def real_floor(real: np.ndarray, groups: np.ndarray | None = None, seed: int = 0,
               periods: tuple[int, ...] = (2, 4, 8)) -> AliasingScore:
    """The score of one half of ``real`` against the other (split by ``groups``, e.g. patients or
    lesions, when given): what "no peak beyond real" looks like for sets of this size."""
    real = np.asarray(real)
    rng = np.random.default_rng(seed)
    keys = np.arange(len(real)) if groups is None else np.asarray(groups)
    uniq = np.unique(keys)
    rng.shuffle(uniq)
    half = np.isin(keys, uniq[: len(uniq) // 2])
    if half.all() or not half.any():
        raise ValueError("the real set needs at least two groups to split into halves")
    return aliasing_score(real[~half], real[half], periods)
