"""Mask-embedding conditional GAN for full mammograms (seed 002, Ren et al. 2019), with its two
baselines (no-embedding, pix2pix) selected by ``variant``.

Generator (Fig. 1, Sect. 4), U-Net style:

* mask projection path: ``n_levels`` (7) stride-2 convolutions, 8 features each, from the
  (H, W) breast skin mask down to (H/2^7, W/2^7); the last block is flattened into a dense
  layer giving the 32-d **mask embedding**;
* latent projection path: [100-d N(0,1) latent ++ 32-d embedding] -> dense -> (128, H/2^7, W/2^7)
  -> 7 transposed convolutions (kernel 4, stride 2) with 128, 102, 82, 66, 53, 42, 34 kernels
  (x0.8 per layer, rounded each time); the mask-path block of the same resolution is
  concatenated onto each latent block except the last (smallest) one, which only feeds the
  embedding.

Orientation: the paper writes "256 x 512" as width x height (mammograms are taller than wide);
here sizes are always (H, W), so the full size is (512, 256) and the first phase is (8, 4).

Training (Sect. 5): progressive growing (Karras et al. 2017): one phase per resolution, from
(8, 4) up to ``final_size``; when a phase starts the new highest-resolution layers
(generator deconvolution + to-image 1x1, mask-path and critic from-image 1x1 + convolution) are
faded in: the output is ``(1 - alpha) * upsample(old branch) + alpha * new branch`` with alpha
ramping linearly 0 -> 1 over ``fade_fraction`` of the phase. Batch size and learning rate are
set per phase (``phase_batch_sizes``, ``phase_lrs``). Loss: WGAN-GP (Gulrajani et al. 2017,
lambda 10, plus PGGAN's drift term 1e-3 E[D(x)^2]). The critic sees (image, mask).

``mask_output`` (ours, on by default; ``paper: true`` turns it off): outside the skin mask the
generator's output is replaced by background, in training and sampling, so every generated
breast lies inside the mask it was asked for. The paper relies on the critic alone for that;
at demo budgets the critic had not taught it yet (docs/quality.md).

Baselines (Sect. 6.3-6.4):

* ``no-embedding``: the dense mask-embedding layer is removed and the latent is 132-d (so the
  latent projection layer has the same number of parameters); mask-path concatenations stay
  (Tub-GAN). Trained with the same schedule.
* ``pix2pix`` (Isola et al. 2017): input = [Sobel edge map of the real image, skin mask]; U-Net
  generator with dropout, 70x70-style PatchGAN on (input, output), logit-BCE + 100 L1. Trained
  at ``final_size`` directly (no progressive growing: the paper uses it as published).

Normals are padded to the target aspect ratio then resized (Sect. 6.1 "padded and resized").
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammosynth.data.dataset import NormalDataset
from mammosynth.errors import ConfigError, DataError
from mammosynth.losses import d_loss_bce, d_loss_wgan, g_loss_bce, g_loss_wgan, gradient_penalty
from mammosynth.nn.init import he_init
from mammosynth.nn.upsample import up_conv
from mammosynth.train.method import Method, StepContext, TrainConfig, requires_grad

if TYPE_CHECKING:
    from mammosynth.synth.sample import Sample


@dataclass
class MaskEmbeddingConfig(TrainConfig):
    variant: Literal["embedding", "no-embedding", "pix2pix"] = "embedding"
    final_size: list[int] = field(default_factory=lambda: [512, 256])  # (H, W) of the last phase
    n_levels: int = 7  # resolutions / phases / stride-2 convolutions (seed 002: 7)
    latent_dim: int = 100  # 132 is used automatically for no-embedding (Sect. 6.4)
    embedding_dim: int = 32
    mask_features: int = 8
    first_kernels: int = 128
    kernel_decay: float = 0.8
    phase_steps: list[int] = field(default_factory=lambda: [2000] * 7)  # steps per phase
    phase_batch_sizes: list[int] = field(default_factory=lambda: [64, 64, 32, 32, 16, 8, 4])
    phase_lrs: list[float] = field(default_factory=lambda: [2e-4, 2e-4, 2e-4, 2e-4, 1.5e-4, 1e-4, 1e-4])
    fade_fraction: float = 0.5  # part of each phase (after the first) over which alpha ramps 0 -> 1
    n_critic: int = 1  # critic updates per generator update
    gp_lambda: float = 10.0
    drift: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    # pix2pix baseline
    pix2pix_lr: float = 2e-4
    pix2pix_l1: float = 100.0
    pix2pix_ngf: int = 32
    augment: bool = True  # vertical flips (the chest wall stays at x = 0)
    # ours (PAPER_RECIPE restores the paper): the generator paints only inside the skin mask it
    # is given; outside it the output is background (-1), as in the real images
    mask_output: bool = True
    # ours: He initialisation of the progressive generator and critic (nn.init.he_init). The
    # paper names none; PyTorch's default ("torch", what mammosynth used before) leaves the
    # 5-7-level critic with an input gradient of ~1e-6 at its last phase, so the gradient
    # penalty sits at ~1 and the critic gives no signal (docs/quality.md, full-mammogram rows)
    init: Literal["he", "torch"] = "he"
    # the paper's 4x4 stride-2 transposed convolutions; "resize" (nearest 2x + 3x3 conv) has no
    # checkerboard but measured worse at 251 steps on the phantom (two-sample AUC 0.92 vs 0.78,
    # docs/quality.md), so it is not the default until a longer row shows it winning
    upsampling: Literal["transposed", "resize", "transposed_blur"] = "transposed"

    PAPER_RECIPE: ClassVar[dict[str, Any]] = {"mask_output": False, "init": "torch", "upsampling": "transposed"}

    def validate(self) -> None:
        super().validate()
        if len(self.final_size) != 2:
            raise ConfigError(f"final_size must be [H, W], got {self.final_size}")
        if self.n_levels < 2:
            raise ConfigError(f"n_levels must be >= 2, got {self.n_levels}")
        for s in self.final_size:
            if s % (2 ** self.n_levels):
                raise ConfigError(f"final_size {self.final_size} must be divisible by 2^n_levels = {2 ** self.n_levels}")
        for name in ("phase_steps", "phase_batch_sizes", "phase_lrs"):
            if len(getattr(self, name)) != self.n_levels:
                raise ConfigError(f"{name} needs one value per phase ({self.n_levels}), got {getattr(self, name)}")
        if not 0.0 < self.fade_fraction <= 1.0:
            raise ConfigError(f"fade_fraction must be in (0, 1], got {self.fade_fraction}")

    @property
    def total_phase_steps(self) -> int:
        return int(sum(self.phase_steps))


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def pad_resize(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (1,h,w) image/mask at the bottom/right (away from the chest wall at x = 0) to the
    aspect ratio of ``size`` = (H, W), then resize: area-averaged image, thresholded mask."""
    h, w = image.shape[-2:]
    H, W = size
    if h * W > w * H:  # too tall: widen
        w_new, h_new = int(math.ceil(h * W / H)), h
    else:
        h_new, w_new = int(math.ceil(w * H / W)), w
    pad = (0, w_new - w, 0, h_new - h)
    bg = float(image.min())
    image = F.pad(image, pad, value=bg)
    mask = F.pad(mask, pad, value=0.0)
    image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    mask = (F.interpolate(mask[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0] >= 0.5).float()
    return image, mask


class PaddedNormalDataset(NormalDataset):
    """NormalDataset padded to the aspect of ``size`` then resized (seed 002 Sect. 6.1).

    Returns ``image`` (1,H,W) in [-1,1], ``breast_mask`` (1,H,W) {0,1} (the Otsu skin mask
    from ingest), ``index``.
    """

    def __init__(self, store_path, split: str | None = "train", size: tuple[int, int] = (512, 256), augment: bool = False) -> None:
        super().__init__(store_path, split=split, size=None, augment=False)
        self.out_size = (int(size[0]), int(size[1]))
        self.flip = augment
        if len(self) == 0:
            raise DataError(f"{store_path}: no normal mammograms in split {split!r}; this method trains on normals")

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(i)
        image, mask = pad_resize(item["image"], item["breast_mask"], self.out_size)
        if self.flip and torch.rand(()) < 0.5:
            image, mask = image.flip(-2), mask.flip(-2)
        return {"image": image, "breast_mask": mask, "index": item["index"]}


def sobel_edges(image: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude (horizontal and vertical filters) of (B,1,H,W) images in [-1,1],
    scaled per image to [-1,1] (seed 002 Sect. 6.1, pix2pix input)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=image.device, dtype=image.dtype)
    k = torch.stack([kx, kx.t()])[:, None]
    g = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), k)
    mag = g.pow(2).sum(1, keepdim=True).sqrt()
    peak = mag.flatten(1).amax(1).clamp_min(1e-6)[:, None, None, None]
    return mag / peak * 2.0 - 1.0


def downsample_pair(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-downsample (B,1,H,W) image and mask to ``size``; the mask is re-binarised at 0.5."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    return F.adaptive_avg_pool2d(image, size), (F.adaptive_avg_pool2d(mask, size) >= 0.5).to(mask.dtype)


# ---------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------
def deconv_kernels(first: int, decay: float, n: int) -> list[int]:
    """Kernel counts of the n deconvolutions: ``first`` then x``decay`` rounded each time
    (128 -> 128, 102, 82, 66, 53, 42, 34)."""
    out = [first]
    for _ in range(n - 1):
        out.append(int(round(out[-1] * decay)))
    return out


class PixelNorm(nn.Module):
    """PGGAN pixelwise feature normalisation (keeps generator magnitudes in check under WGAN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class MaskEmbeddingGenerator(nn.Module):
    """Generator of seed 002 (Fig. 1) with progressive outputs.

    ``forward(z, mask, phase, alpha)``: z (B, latent_dim) N(0,1); mask (B,1,h,w) {0,1} at the
    phase resolution ``sizes[phase]``; returns (B,1,h,w) in [-1,1].
    """

    def __init__(self, final_size: tuple[int, int], n_levels: int = 7, latent_dim: int = 100, embedding_dim: int = 32,
                 mask_features: int = 8, first_kernels: int = 128, kernel_decay: float = 0.8, use_embedding: bool = True,
                 upsampling: str = "transposed") -> None:
        super().__init__()
        H, W = final_size
        self.n_levels = n_levels
        self.use_embedding = use_embedding
        self.latent_dim = latent_dim
        #: (h, w) at level k = 0..n-1 (level k is the output of deconvolution k); level -1 = dense.
        self.sizes = [(H >> (n_levels - 1 - k), W >> (n_levels - 1 - k)) for k in range(n_levels)]
        self.base = (H >> n_levels, W >> n_levels)
        mf = mask_features
        kernels = deconv_kernels(first_kernels, kernel_decay, n_levels)
        self.kernels = kernels
        # mask projection path: from_mask[k] lifts the mask at level k to 8 features; down[k]
        # is the stride-2 convolution level k -> level k-1 (down[0] -> the dense-level block)
        self.from_mask = nn.ModuleList([nn.Conv2d(1, mf, 1) for _ in range(n_levels)])
        self.down = nn.ModuleList([nn.Conv2d(mf, mf, 4, stride=2, padding=1) for _ in range(n_levels)])
        bh, bw = self.base
        if use_embedding:
            self.embed = nn.Linear(mf * bh * bw, embedding_dim)
            in_dim = latent_dim + embedding_dim
        else:
            in_dim = latent_dim
        self.dense = nn.Linear(in_dim, first_kernels * bh * bw)
        self.dense_channels = first_kernels
        ups = []
        for k in range(n_levels):
            c_in = first_kernels if k == 0 else kernels[k - 1] + mf  # skip concat except at the dense level
            ups.append(up_conv(c_in, kernels[k], upsampling))
        self.up = nn.ModuleList(ups)
        self.to_image = nn.ModuleList([nn.Conv2d(c, 1, 1) for c in kernels])
        self.norm = PixelNorm()

    def mask_features(self, mask: torch.Tensor, phase: int, alpha: float) -> list[torch.Tensor]:
        """Mask-path blocks for levels -1..phase-1 (index 0 = dense level)."""
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        feats: dict[int, torch.Tensor] = {}
        f = act(self.from_mask[phase](mask))
        h = act(self.down[phase](f))  # level phase-1
        if phase > 0 and alpha < 1.0:
            old = act(self.from_mask[phase - 1](F.avg_pool2d(mask, 2)))
            h = alpha * h + (1.0 - alpha) * old
        feats[phase - 1] = h
        for k in range(phase - 1, -1, -1):
            h = act(self.down[k](h))
            feats[k - 1] = h
        return [feats[k] for k in range(-1, phase)]

    def forward(self, z: torch.Tensor, mask: torch.Tensor, phase: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        phase = self.n_levels - 1 if phase is None else phase
        if tuple(mask.shape[-2:]) != self.sizes[phase]:
            raise ValueError(f"mask size {tuple(mask.shape[-2:])} != phase-{phase} size {self.sizes[phase]}")
        mfeats = self.mask_features(mask, phase, alpha)  # levels -1 .. phase-1
        if self.use_embedding:
            emb = self.embed(mfeats[0].flatten(1))
            latent = torch.cat([z, emb], 1)
        else:
            latent = z
        h = self.dense(latent).view(z.shape[0], self.dense_channels, *self.base)
        h = self.norm(F.leaky_relu(h, 0.2))
        prev = None
        for k in range(phase + 1):
            inp = h if k == 0 else torch.cat([h, mfeats[k]], 1)  # mfeats[k] is level k-1
            prev = h if k > 0 else None
            h = self.norm(F.leaky_relu(self.up[k](inp), 0.2))
        out = self.to_image[phase](h)
        if phase > 0 and alpha < 1.0:
            # prev = block at level phase-1; fade from its upsampled image
            old = F.interpolate(self.to_image[phase - 1](prev), scale_factor=2, mode="nearest")
            out = alpha * out + (1.0 - alpha) * old
        return torch.tanh(out)


class MinibatchStd(nn.Module):
    """Appends the mean over features/pixels of the minibatch std (PGGAN) as one channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = x.float().std(0, unbiased=False).mean().to(x.dtype) if x.shape[0] > 1 else x.new_zeros(())
        return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], 1)


class ProgressiveCritic(nn.Module):
    """WGAN critic on (image, mask) with progressive from-image inputs, mirrored on the generator.

    ``forward(image, mask, phase, alpha)``: (B,1,h,w) each at ``sizes[phase]`` -> (B,) scores.
    """

    def __init__(self, final_size: tuple[int, int], n_levels: int = 7, first_kernels: int = 128, kernel_decay: float = 0.8) -> None:
        super().__init__()
        H, W = final_size
        self.n_levels = n_levels
        self.sizes = [(H >> (n_levels - 1 - k), W >> (n_levels - 1 - k)) for k in range(n_levels)]
        ch = deconv_kernels(first_kernels, kernel_decay, n_levels)  # channels at level k
        self.from_image = nn.ModuleList([nn.Conv2d(2, c, 1) for c in ch])
        blocks = []
        for k in range(n_levels):
            c_out = ch[k - 1] if k > 0 else first_kernels
            blocks.append(nn.Sequential(nn.Conv2d(ch[k], ch[k], 3, padding=1), nn.LeakyReLU(0.2),
                                        nn.Conv2d(ch[k], c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)))
        self.blocks = nn.ModuleList(blocks)
        bh, bw = H >> n_levels, W >> n_levels
        self.head = nn.Sequential(MinibatchStd(), nn.Conv2d(first_kernels + 1, first_kernels, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Flatten(), nn.Linear(first_kernels * bh * bw, first_kernels), nn.LeakyReLU(0.2),
                                  nn.Linear(first_kernels, 1))

    def forward(self, image: torch.Tensor, mask: torch.Tensor, phase: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        phase = self.n_levels - 1 if phase is None else phase
        x = torch.cat([image, mask], 1)
        h = F.leaky_relu(self.from_image[phase](x), 0.2)
        h = self.blocks[phase](h)
        if phase > 0 and alpha < 1.0:
            old = F.leaky_relu(self.from_image[phase - 1](F.avg_pool2d(x, 2)), 0.2)
            h = alpha * h + (1.0 - alpha) * old
        for k in range(phase - 1, -1, -1):
            h = self.blocks[k](h)
        return self.head(h).squeeze(1)


class UNetGenerator(nn.Module):
    """pix2pix U-Net (Isola et al. 2017): C64-C128-... encoder, mirrored decoder with skips and
    dropout 0.5 in the three innermost decoder blocks (its only noise source).
    ``forward(cond)``: (B,2,H,W) [edge map, skin mask] -> (B,1,H,W) in [-1,1]."""

    def __init__(self, in_channels: int = 2, ngf: int = 32, depth: int = 7, max_channels: int = 256) -> None:
        super().__init__()
        chans = [min(ngf * 2 ** i, max_channels) for i in range(depth)]
        self.enc = nn.ModuleList()
        c_prev = in_channels
        for i, c in enumerate(chans):
            layers: list[nn.Module] = [nn.Conv2d(c_prev, c, 4, 2, 1)]
            if 0 < i < depth - 1:
                layers.append(nn.BatchNorm2d(c))
            self.enc.append(nn.Sequential(*layers))
            c_prev = c
        self.dec = nn.ModuleList()
        for i in range(depth - 1, -1, -1):
            c_in = chans[i] if i == depth - 1 else chans[i] * 2
            c_out = chans[i - 1] if i > 0 else 1
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)]
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out))
                if i >= depth - 3:
                    layers.append(nn.Dropout(0.5))
            self.dec.append(nn.Sequential(*layers))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        skips = []
        h = cond
        for i, layer in enumerate(self.enc):
            h = layer(h if i == 0 else F.leaky_relu(h, 0.2))
            skips.append(h)
        for j, layer in enumerate(self.dec):
            if j > 0:
                h = torch.cat([h, skips[len(skips) - 1 - j]], 1)
            h = layer(h)
        return torch.tanh(h)


class PatchDiscriminator(nn.Module):
    """pix2pix PatchGAN on (condition, image): (B,2,H,W)+(B,1,H,W) -> (B,1,h',w') logits."""

    def __init__(self, in_channels: int = 3, ndf: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ndf
        for i in range(1, n_layers + 1):
            c_next = min(ndf * 2 ** i, 8 * ndf)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_next, 4, stride, 1), nn.BatchNorm2d(c_next), nn.LeakyReLU(0.2)]
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, cond: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([cond, image], 1))


# ---------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------
class MaskEmbeddingGAN(Method):
    """Seed 002 method (``variant`` embedding | no-embedding | pix2pix). Trains on normals."""

    name = "mask-embedding"
    Config = MaskEmbeddingConfig
    ema_networks = ("generator",)

    cfg: MaskEmbeddingConfig

    def build(self) -> None:
        c = self.cfg
        size = (int(c.final_size[0]), int(c.final_size[1]))
        self.phase, self.alpha = (c.n_levels - 1, 1.0) if c.variant == "pix2pix" else (0, 0.0)
        self._lr_phase = -1
        if c.variant == "pix2pix":
            depth = min(8, int(math.log2(min(size))))
            self.nets["generator"] = UNetGenerator(2, c.pix2pix_ngf, depth)
            self.nets["discriminator"] = PatchDiscriminator(3, c.pix2pix_ngf, 3 if min(size) >= 64 else 2)
        else:
            emb = c.variant == "embedding"
            latent = c.latent_dim if emb else c.latent_dim + c.embedding_dim  # 132-d without embedding
            self.nets["generator"] = MaskEmbeddingGenerator(size, c.n_levels, latent, c.embedding_dim, c.mask_features,
                                                            c.first_kernels, c.kernel_decay, use_embedding=emb,
                                                            upsampling=c.upsampling)
            self.nets["discriminator"] = ProgressiveCritic(size, c.n_levels, c.first_kernels, c.kernel_decay)
            if c.init == "he":
                self.nets["generator"].apply(he_init)
                self.nets["discriminator"].apply(he_init)

    def masked(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """With ``mask_output``: background (-1) outside the skin mask, the generator's pixels
        inside it (so the output respects the mask by construction); else ``image`` as is."""
        if not self.cfg.mask_output or self.cfg.variant == "pix2pix":
            return image
        return torch.where(mask > 0.5, image, torch.full_like(image, -1.0))

    # -- schedule ------------------------------------------------------------------------
    def phase_at(self, step: int) -> tuple[int, float]:
        """(phase, alpha) at 0-based ``step``: alpha ramps linearly 0 -> 1 over the first
        ``fade_fraction`` of every phase after the first; the last phase runs on for ever."""
        c = self.cfg
        if c.variant == "pix2pix":
            return c.n_levels - 1, 1.0
        start = 0
        for p, n in enumerate(c.phase_steps):
            if step < start + n or p == c.n_levels - 1:
                if p == 0:
                    return 0, 1.0
                fade = max(1, int(round(n * c.fade_fraction)))
                return p, min(1.0, (step - start) / fade)
            start += n
        raise AssertionError("unreachable")

    def batch_size(self, step: int) -> int | None:
        if self.cfg.variant == "pix2pix":
            return None
        return int(self.cfg.phase_batch_sizes[self.phase_at(step)[0]])

    def extra_state(self) -> dict[str, Any]:
        return {"phase": int(self.phase), "alpha": float(self.alpha)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.phase = int(state.get("phase", self.phase))
        self.alpha = float(state.get("alpha", self.alpha))
        self._state_loaded = True

    def on_load(self) -> None:
        """After loading inference weights: take (phase, alpha) from the run's latest checkpoint
        (a run stopped early generates at the size it reached), else from its last step."""
        super().on_load()
        if getattr(self, "_state_loaded", False):
            return
        self.phase, self.alpha = self.phase_at(self.cfg.steps - 1)
        run_dir = getattr(self, "run_dir", None)
        if run_dir is None:
            return
        from mammosynth.errors import CheckpointError
        from mammosynth.train.checkpoint import find_checkpoint, read_checkpoint_meta

        try:
            ckpt = find_checkpoint(Path(run_dir) / "checkpoint")
            extra = read_checkpoint_meta(ckpt).get("extra_state") if ckpt is not None else None
        except CheckpointError:
            extra = None
        if extra and "phase" in extra:
            self.phase, self.alpha = int(extra["phase"]), float(extra.get("alpha", 1.0))

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the images the generator produces now (the current phase)."""
        H, W = self.cfg.final_size
        s = self.cfg.n_levels - 1 - self.phase
        return int(H) >> s, int(W) >> s

    # -- training ------------------------------------------------------------------------
    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.cfg
        if c.variant == "pix2pix":
            lr, betas = c.pix2pix_lr, (0.5, 0.999)
        else:
            lr, betas = c.phase_lrs[0], tuple(c.betas)
        self._optimizers = {"G": torch.optim.Adam(self.nets["generator"].parameters(), lr=lr, betas=betas),
                            "D": torch.optim.Adam(self.nets["discriminator"].parameters(), lr=lr, betas=betas)}
        self._lr_phase = -1
        return self._optimizers

    def data_info_from_store(self, store_path: str) -> dict[str, Any]:
        info = super().data_info_from_store(store_path)
        info["store_path"] = str(store_path)  # generate() draws skin masks from it when none is given
        return info

    def make_dataset(self, store_path: str, split: str = "train") -> torch.utils.data.Dataset:
        size = (int(self.cfg.final_size[0]), int(self.cfg.final_size[1]))
        return PaddedNormalDataset(store_path, split=split, size=size, augment=self.cfg.augment and split == "train")

    def _set_lr(self, phase: int) -> None:
        """Per-phase learning rate (Sect. 5), set on the optimizers this method built."""
        opts = getattr(self, "_optimizers", None)
        if not opts or self._lr_phase == phase:
            return
        for opt in opts.values():
            for g in opt.param_groups:
                g["lr"] = float(self.cfg.phase_lrs[phase])
        self._lr_phase = phase

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor | float]:
        if self.cfg.variant == "pix2pix":
            return self._pix2pix_step(batch, ctx)
        c = self.cfg
        G, D = ctx.nets["generator"], ctx.nets["discriminator"]
        phase, alpha = self.phase_at(ctx.step)
        self.phase, self.alpha = phase, alpha
        self._set_lr(phase)
        real, mask = downsample_pair(batch["image"].to(ctx.device), batch["breast_mask"].to(ctx.device), G.sizes[phase])
        gen = ctx.generator()
        b = real.shape[0]
        for _ in range(c.n_critic):
            z = torch.randn(b, G.latent_dim, device=ctx.device, generator=gen)
            with ctx.autocast():
                with torch.no_grad():
                    fake = self.masked(G(z, mask, phase, alpha), mask)
                real_scores = D(real, mask, phase, alpha)
                fake_scores = D(fake, mask, phase, alpha)
                critic = lambda x, m: D(x, m, phase, alpha)  # noqa: E731
                gp = gradient_penalty(critic, real.float(), fake.float(), mask, generator=gen)
                loss_d = d_loss_wgan(real_scores.float(), fake_scores.float()) + c.gp_lambda * gp + c.drift * real_scores.float().pow(2).mean()
            ctx.backward_step(loss_d, "D")
        z = torch.randn(b, G.latent_dim, device=ctx.device, generator=gen)
        with requires_grad(D, False), ctx.autocast():
            loss_g = g_loss_wgan(D(self.masked(G(z, mask, phase, alpha), mask), mask, phase, alpha).float())
        ctx.backward_step(loss_g, "G")
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "gp": gp.detach(), "phase": float(phase), "alpha": float(alpha)}

    def _pix2pix_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor | float]:
        G, D = ctx.nets["generator"], ctx.nets["discriminator"]
        real = batch["image"].to(ctx.device)
        cond = torch.cat([sobel_edges(real), batch["breast_mask"].to(ctx.device) * 2 - 1], 1)
        with ctx.autocast():
            fake = G(cond)
            loss_d = 0.5 * d_loss_bce(D(cond, real).float(), D(cond, fake.detach()).float())
        ctx.backward_step(loss_d, "D")
        with requires_grad(D, False), ctx.autocast():
            adv = g_loss_bce(D(cond, fake).float())
            l1 = (fake.float() - real.float()).abs().mean()
            loss_g = adv + self.cfg.pix2pix_l1 * l1
        ctx.backward_step(loss_g, "G")
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "l1": l1.detach()}

    # -- sampling ------------------------------------------------------------------------
    def _masks_from_store(self, n: int, seed: int, split: str | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """n (image, skin mask) pairs drawn (seeded) from the training store at the final size."""
        path = self.data_info.get("store_path")
        if not path:
            raise ConfigError("no mask given and the run does not record its dataset; pass mask=(H,W) bool array")
        try:
            ds = PaddedNormalDataset(path, split=split, size=tuple(int(s) for s in self.cfg.final_size))
        except (OSError, DataError) as err:
            raise DataError(f"{path}: cannot draw skin masks from the run's dataset ({err}); pass a mask instead") from err
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(ds), size=n)
        items = [ds[int(i)] for i in idx]
        return (torch.stack([it["image"] for it in items]), torch.stack([it["breast_mask"] for it in items]),
                [f"normal:{int(it['index'])}" for it in items])

    @torch.no_grad()
    def generate(self, n: int, seed: int, **options: Any) -> Iterator["Sample"]:
        """Yield n mammograms (Sample.image (H,W) [0,1] at the current phase's size).

        Options: ``mask`` (H,W) bool skin mask (any size; padded/resized like the data) used for
        every sample; otherwise one skin mask per sample is drawn from the run's store (seeded).
        ``batch_size`` (default 8). pix2pix needs the real image for its edge map, so it always
        draws (image, mask) pairs from the store.
        """
        from mammosynth.synth.sample import Sample

        G = self.nets["generator"]
        G.eval()
        dev = next(G.parameters()).device
        bs = int(options.get("batch_size") or 8)
        user_mask = options.get("mask")
        H, W = int(self.cfg.final_size[0]), int(self.cfg.final_size[1])
        if user_mask is not None and self.cfg.variant != "pix2pix":
            m = torch.as_tensor(np.asarray(user_mask), dtype=torch.float32)
            if m.ndim != 2 or not bool(m.any()):
                raise ConfigError(f"mask must be a non-empty (H, W) boolean array, got shape {tuple(m.shape)}")
            _, m = pad_resize(m[None] * 0, m[None], (H, W))
            masks, images, ids = m[None].expand(n, 1, H, W), None, ["mask:user"] * n
        else:
            images, masks, ids = self._masks_from_store(n, seed)
        gen = torch.Generator().manual_seed(int(seed))
        for start in range(0, n, bs):
            sl = slice(start, min(n, start + bs))
            m = masks[sl].to(dev)
            if self.cfg.variant == "pix2pix":
                cond = torch.cat([sobel_edges(images[sl].to(dev)), m * 2 - 1], 1)
                out = G(cond)
                m_out = m
            else:
                img_dummy = torch.zeros_like(m)
                _, m_out = downsample_pair(img_dummy, m, G.sizes[self.phase])
                z = torch.randn(m.shape[0], G.latent_dim, generator=gen).to(dev)
                out = self.masked(G(z, m_out, self.phase, self.alpha), m_out)
            for j in range(out.shape[0]):
                k = start + j
                yield Sample(image=((out[j, 0].float().cpu().numpy() + 1.0) / 2.0).clip(0, 1).astype(np.float32), mask=None,
                             seed=int(seed), source_ids=[ids[k]],
                             extra={"variant": self.cfg.variant, "phase": int(self.phase), "breast_fraction": float(m_out[j].mean())})

    @torch.no_grad()
    def sample_grid(self, nets: dict[str, nn.Module], n: int, seed: int) -> torch.Tensor | None:
        G = nets["generator"]
        try:
            images, masks, _ = self._masks_from_store(n, seed)
        except (ConfigError, DataError) as err:
            warnings.warn(f"mask-embedding: no sample grid ({err})", stacklevel=2)
            return None
        dev = next(G.parameters()).device
        if self.cfg.variant == "pix2pix":
            return G(torch.cat([sobel_edges(images.to(dev)), masks.to(dev) * 2 - 1], 1))
        _, m = downsample_pair(images, masks, G.sizes[self.phase])
        z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
        return self.masked(G(z, m.to(dev), self.phase, self.alpha), m.to(dev))
