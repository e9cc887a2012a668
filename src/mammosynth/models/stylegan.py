"""StyleGAN for lesion patches or downsampled full mammograms (seed 004, "GAN" section; Karras
et al. 2019 / 2020).

Generator: z (z_dim, N(0,1)) -> pixel norm -> 8-layer mapping MLP (lr multiplier 0.01) -> w;
synthesis from a learned constant (512 x 4 x 4 at full size; (C, H/2^k, W/2^k) for non-square
sizes) through blocks of [upsample, conv, conv], each conv followed by per-layer Gaussian noise
(learned per-channel strength), bias and leaky ReLU, styled either by

* ``conv: adain`` -- StyleGAN1 adaptive instance normalisation (seed 004: "merged into the
  synthesis network via AdaIN at each convolutional layer ... noise is added after each
  convolution, before the AdaIN layer"), or
* ``conv: modulated`` -- StyleGAN2 weight modulation + demodulation (no droplet artefacts),

with skip-connection to-image layers (StyleGAN2 output skips) at every resolution. Each conv
and the last to-image layer read their own w (``n_ws`` of them), so the encoder can predict W+.
All layers use equalised learning rate.

Discriminator: StyleGAN2 residual discriminator with minibatch-std. Losses: non-saturating
logistic (eq. 1 in practical form) + lazy R1 (gamma 10, applied every ``r1_every`` = 16 D
steps and scaled by 16). Style mixing regularisation (p 0.9), EMA generator (trainer), tracked
average w for the truncation trick (off by default: ``generate`` uses psi = 1 unless asked,
because psi < 1 trades diversity for fidelity and flatters precision, FD and the two-sample
test; evaluation always assumes psi = 1).

``data: lesions`` trains on LesionDataset patches resized to ``size``; ``data: normals`` on
NormalDataset mammograms padded to the aspect of ``size`` then resized (e.g. [128, 64]).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammosynth.data.dataset import LesionDataset
from mammosynth.errors import ConfigError
from mammosynth.losses import d_loss_bce, g_loss_bce, r1_penalty
from mammosynth.train.method import Method, StepContext, TrainConfig, requires_grad

if TYPE_CHECKING:
    from mammosynth.synth.sample import Sample


@dataclass
class StyleGANConfig(TrainConfig):
    data: Literal["lesions", "normals"] = "lesions"
    size: list[int] = field(default_factory=lambda: [128, 128])  # (H, W); both 4 * 2^k * (h0, w0)
    conv: Literal["modulated", "adain"] = "modulated"
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_mult: float = 0.01
    channel_base: int = 16384  # channels at resolution r: min(channel_max, channel_base / r)
    channel_max: int = 512
    lr: float = 0.002
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    r1_gamma: float = 10.0
    r1_every: int = 16  # lazy regularisation interval (D steps)
    style_mixing: float = 0.9
    w_avg_beta: float = 0.995
    truncation_psi: float = 1.0  # latent interpolation's default psi (1 = none); `generate` takes --truncation
    augment: bool = True

    def validate(self) -> None:
        super().validate()
        if len(self.size) != 2:
            raise ConfigError(f"size must be [H, W], got {self.size}")
        h, w = self.size
        k = int(round(math.log2(min(h, w) / 4)))
        if k < 1 or h % (2 ** k) or w % (2 ** k) or min(h, w) != 4 * 2 ** k:
            raise ConfigError(f"size {self.size}: the shorter side must be 4*2^k (k >= 1) and the longer a multiple of 2^k")
        if self.r1_every < 1:
            raise ConfigError(f"r1_every must be >= 1, got {self.r1_every}")


# ---------------------------------------------------------------------------------------
# layers (equalised learning rate: weights ~ N(0,1), scaled by He's constant at run time)
# ---------------------------------------------------------------------------------------
class EqualLinear(nn.Module):
    def __init__(self, c_in: int, c_out: int, bias_init: float = 0.0, lr_mult: float = 1.0, activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mult)
        self.bias = nn.Parameter(torch.full((c_out,), float(bias_init) / lr_mult))
        self.scale = lr_mult / math.sqrt(c_in)
        self.lr_mult = lr_mult
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mult)
        return F.leaky_relu(out, 0.2) * math.sqrt(2) if self.activate else out


class EqualConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True, activate: bool = False, down: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.scale = 1.0 / math.sqrt(c_in * kernel * kernel)
        self.pad = kernel // 2
        self.activate, self.down = activate, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.pad)
        if self.down:
            out = F.avg_pool2d(out, 2)
        return F.leaky_relu(out, 0.2) * math.sqrt(2) if self.activate else out


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> w (B, w_dim): pixel norm then ``n_layers`` leaky-ReLU dense layers.
    Holds ``w_avg`` (running mean of w, for truncation)."""

    def __init__(self, z_dim: int, w_dim: int, n_layers: int = 8, lr_mult: float = 0.01) -> None:
        super().__init__()
        dims = [z_dim] + [w_dim] * n_layers
        self.layers = nn.Sequential(*[EqualLinear(dims[i], dims[i + 1], lr_mult=lr_mult, activate=True) for i in range(n_layers)])
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.register_buffer("w_avg_updates", torch.zeros((), dtype=torch.long))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
        return self.layers(z)

    @torch.no_grad()
    def update_w_avg(self, w: torch.Tensor, beta: float) -> None:
        self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, beta) if int(self.w_avg_updates) else w.detach().float().mean(0))
        self.w_avg_updates += 1


class NoiseInjection(nn.Module):
    """Adds per-pixel N(0,1) noise times a learned per-channel strength (zero-initialised)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.strength * noise


class StyledConv(nn.Module):
    """One synthesis convolution: (B,C_in,h,w) + w (B,w_dim) -> (B,C_out,h',w') (h' = 2h when up).

    ``modulated``: conv weight scaled per input channel by the style s = A(w) and demodulated
    (StyleGAN2 eq. 1-3), then noise, bias, lrelu. ``adain``: conv, noise, bias, lrelu,
    instance norm, then y_s * x + y_b from A(w) (StyleGAN1 AdaIN).
    """

    def __init__(self, c_in: int, c_out: int, w_dim: int, kind: str, up: bool = False, kernel: int = 3) -> None:
        super().__init__()
        self.kind, self.up = kind, up
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.scale = 1.0 / math.sqrt(c_in * kernel * kernel)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.noise = NoiseInjection(c_out)
        if kind == "modulated":
            self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)
        else:
            self.affine = EqualLinear(w_dim, 2 * c_out)
            with torch.no_grad():  # style scale starts at 1, bias at 0
                self.affine.bias[:c_out] = 1.0
        self.c_out = c_out

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        B, C, H, W = x.shape
        if self.kind == "modulated":
            s = self.affine(w)  # (B, C_in)
            weight = self.weight * self.scale
            # modulate the input instead of the weight, demodulate the output: the same as
            # StyleGAN2 eq. 1-3 (per-sample weights) but one shared, fast convolution
            demod = torch.rsqrt(s.pow(2) @ weight.pow(2).sum([2, 3]).t() + 1e-8)  # (B, O)
            out = F.conv2d(x * s[:, :, None, None], weight, padding=weight.shape[-1] // 2)
            out = out * demod[:, :, None, None]
            out = self.noise(out, noise)
            return F.leaky_relu(out + self.bias[None, :, None, None], 0.2) * math.sqrt(2)
        out = F.conv2d(x, self.weight * self.scale, padding=self.weight.shape[-1] // 2)
        out = self.noise(out, noise)
        out = F.leaky_relu(out + self.bias[None, :, None, None], 0.2)
        out = F.instance_norm(out)
        ys, yb = self.affine(w).chunk(2, dim=1)
        return out * ys[:, :, None, None] + yb[:, :, None, None]


class ToImage(nn.Module):
    """1x1 to-image layer: modulated without demodulation (StyleGAN2) or a styled 1x1 (AdaIN)."""

    def __init__(self, c_in: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(1, c_in, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1))
        self.scale = 1.0 / math.sqrt(c_in)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w) * self.scale  # (B, C)
        return F.conv2d(x * s[:, :, None, None], self.weight) + self.bias.view(1, 1, 1, 1)


class SynthesisNetwork(nn.Module):
    """ws (B, n_ws, w_dim) -> image (B,1,H,W) (linear; about [-1,1] after training).

    Layer order of ws: const conv (0), then per block conv-up, conv; the to-image layer of each
    resolution reads the w of the next conv (StyleGAN2 convention); the last one ws[-1].
    """

    def __init__(self, size: tuple[int, int], w_dim: int, kind: str, channel_base: int, channel_max: int) -> None:
        super().__init__()
        H, W = size
        self.n_up = int(round(math.log2(min(H, W) / 4)))
        self.base = (H >> self.n_up, W >> self.n_up)
        res = [4 * 2 ** k for k in range(self.n_up + 1)]  # shorter-side resolution per block
        ch = [min(channel_max, channel_base // r) for r in res]
        self.const = nn.Parameter(torch.randn(1, ch[0], *self.base))
        self.convs = nn.ModuleList([StyledConv(ch[0], ch[0], w_dim, kind)])
        self.to_images = nn.ModuleList([ToImage(ch[0], w_dim)])
        self.sizes = [(self.base[0] << k, self.base[1] << k) for k in range(self.n_up + 1)]
        for k in range(1, self.n_up + 1):
            self.convs.append(StyledConv(ch[k - 1], ch[k], w_dim, kind, up=True))
            self.convs.append(StyledConv(ch[k], ch[k], w_dim, kind))
            self.to_images.append(ToImage(ch[k], w_dim))
        self.n_ws = len(self.convs) + 1

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        B = ws.shape[0]
        x = self.const.expand(B, -1, -1, -1)

        def noise_for(h: int, w: int, layer: int) -> torch.Tensor | None:
            if noise_mode == "random":
                return None
            if noise_mode == "none":
                return torch.zeros(B, 1, h, w, device=ws.device, dtype=ws.dtype)
            g = torch.Generator().manual_seed(1000 + layer)  # "const": fixed per layer, for inversion
            return torch.randn(1, 1, h, w, generator=g).to(ws.device, ws.dtype).expand(B, -1, -1, -1)

        x = self.convs[0](x, ws[:, 0], noise_for(*self.sizes[0], 0))
        img = self.to_images[0](x, ws[:, 1])
        for k in range(1, self.n_up + 1):
            i = 2 * k - 1
            x = self.convs[i](x, ws[:, i], noise_for(*self.sizes[k], i))
            x = self.convs[i + 1](x, ws[:, i + 1], noise_for(*self.sizes[k], i + 1))
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + self.to_images[k](x, ws[:, i + 2])
        return img


class StyleGenerator(nn.Module):
    """Mapping + synthesis. ``forward(z)``: (B, z_dim) -> (B,1,H,W); ``synthesize(ws)`` for W/W+."""

    def __init__(self, size: tuple[int, int], z_dim: int = 512, w_dim: int = 512, mapping_layers: int = 8, kind: str = "modulated",
                 channel_base: int = 16384, channel_max: int = 512, mapping_lr_mult: float = 0.01) -> None:
        super().__init__()
        self.z_dim, self.w_dim = z_dim, w_dim
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_mult)
        self.synthesis = SynthesisNetwork(size, w_dim, kind, channel_base, channel_max)
        self.n_ws = self.synthesis.n_ws
        self.size = tuple(size)

    def map(self, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        """z (B, z_dim) -> ws (B, n_ws, w_dim), truncated towards w_avg by ``psi`` (1 = none)."""
        w = self.mapping(z)
        if psi != 1.0:
            w = self.mapping.w_avg.to(w.dtype).lerp(w, psi)
        return w[:, None].expand(-1, self.n_ws, -1)

    def synthesize(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """ws: (B, w_dim) (W) or (B, n_ws, w_dim) (W+) -> (B,1,H,W)."""
        if ws.dim() == 2:
            ws = ws[:, None].expand(-1, self.n_ws, -1)
        return self.synthesis(ws, noise_mode)

    def forward(self, z: torch.Tensor, psi: float = 1.0, noise_mode: str = "random") -> torch.Tensor:
        return self.synthesize(self.map(z, psi), noise_mode)

    @torch.no_grad()
    def mean_w(self, n: int = 2048, seed: int = 0) -> torch.Tensor:
        """w_avg if it was tracked in training, else the mean of n mapped draws. (w_dim,)"""
        if int(self.mapping.w_avg_updates) > 0:
            return self.mapping.w_avg.clone()
        dev = self.mapping.w_avg.device
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
        return self.mapping(z).mean(0)


class ResidualDiscriminator(nn.Module):
    """StyleGAN2 residual D: (B,1,H,W) -> (B,) logits. ``features(x)`` returns the block outputs
    (used as a perceptual-loss fallback when no VGG weights are present)."""

    def __init__(self, size: tuple[int, int], channel_base: int = 16384, channel_max: int = 512, in_channels: int = 1) -> None:
        super().__init__()
        H, W = size
        n = int(round(math.log2(min(H, W) / 4)))
        res = [4 * 2 ** k for k in range(n, -1, -1)]  # from the top resolution down to 4
        ch = [min(channel_max, channel_base // r) for r in res]
        self.from_image = EqualConv2d(in_channels, ch[0], 1, activate=True)
        self.blocks = nn.ModuleList()
        self.skips = nn.ModuleList()
        for k in range(n):
            self.blocks.append(nn.Sequential(EqualConv2d(ch[k], ch[k], 3, activate=True), EqualConv2d(ch[k], ch[k + 1], 3, activate=True, down=True)))
            self.skips.append(EqualConv2d(ch[k], ch[k + 1], 1, bias=False, down=True))
        bh, bw = H >> n, W >> n
        self.mbstd = MinibatchStdGroup()
        self.conv = EqualConv2d(ch[-1] + 1, ch[-1], 3, activate=True)
        self.fc = EqualLinear(ch[-1] * bh * bw, ch[-1], activate=True)
        self.out = EqualLinear(ch[-1], 1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.from_image(x)
        feats = []
        for block, skip in zip(self.blocks, self.skips):
            h = (block(h) + skip(h)) / math.sqrt(2)
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)[-1] if len(self.blocks) else self.from_image(x)
        h = self.conv(self.mbstd(h))
        return self.out(self.fc(h.flatten(1))).squeeze(1)


class MinibatchStdGroup(nn.Module):
    """Minibatch standard deviation over groups of up to 4 samples (StyleGAN)."""

    def __init__(self, group: int = 4) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        g = min(self.group, B)
        if B % g:
            g = 1
        if g == 1:
            return torch.cat([x, x.new_zeros(B, 1, H, W)], 1)
        y = x.float().reshape(g, -1, C, H, W)
        y = (y - y.mean(0)).pow(2).mean(0).add(1e-8).sqrt().mean([1, 2, 3])  # (B/g,)
        y = y.to(x.dtype).reshape(-1, 1, 1, 1).repeat(g, 1, H, W)
        return torch.cat([x, y], 1)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
class _ResizedNormals(torch.utils.data.Dataset):
    """Normals padded to the aspect of ``size`` and resized; yields {"image", "mask"(breast)}."""

    def __init__(self, store_path: str, split: str | None, size: tuple[int, int], augment: bool) -> None:
        from mammosynth.models.mask_embedding import PaddedNormalDataset

        self.inner = PaddedNormalDataset(store_path, split=split, size=size, augment=augment)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        it = self.inner[i]
        return {"image": it["image"], "mask": it["breast_mask"], "index": it["index"]}


# ---------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------
class StyleGAN(Method):
    """Seed 004 GAN (phase 1 of Fig. 2). Nets: ``generator`` (EMA copy kept), ``discriminator``."""

    name = "stylegan"
    Config = StyleGANConfig
    ema_networks = ("generator",)

    cfg: StyleGANConfig

    def build(self) -> None:
        c = self.cfg
        size = (int(c.size[0]), int(c.size[1]))
        self.nets["generator"] = StyleGenerator(size, c.z_dim, c.w_dim, c.mapping_layers, c.conv, c.channel_base, c.channel_max, c.mapping_lr_mult)
        self.nets["discriminator"] = ResidualDiscriminator(size, c.channel_base, c.channel_max)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.cfg
        # lazy R1: D's Adam hyper-parameters corrected for updating the penalty every r1_every steps
        ratio = c.r1_every / (c.r1_every + 1)
        return {"G": torch.optim.Adam(self.nets["generator"].parameters(), lr=c.lr, betas=tuple(c.betas)),
                "D": torch.optim.Adam(self.nets["discriminator"].parameters(), lr=c.lr * ratio, betas=tuple(b ** ratio for b in c.betas))}

    def data_info_from_store(self, store_path: str) -> dict[str, Any]:
        info = super().data_info_from_store(store_path)
        info["store_path"] = str(store_path)
        return info

    def make_dataset(self, store_path: str, split: str = "train") -> torch.utils.data.Dataset:
        c = self.cfg
        size = (int(c.size[0]), int(c.size[1]))
        aug = c.augment and split == "train"
        if c.data == "normals":
            return _ResizedNormals(store_path, split, size, aug)
        if size[0] != size[1]:
            raise ConfigError(f"data: lesions needs a square size, got {c.size}")
        return LesionDataset(store_path, split=split, augment=aug, size=size[0])

    def _ws(self, G: StyleGenerator, b: int, ctx: StepContext) -> torch.Tensor:
        """Mapped ws (b, n_ws, w_dim) with style mixing: after a random cutoff, a second z's w."""
        gen = ctx.generator()
        z = torch.randn(b, G.z_dim, device=ctx.device, generator=gen)
        w = G.mapping(z)
        if G.training:
            G.mapping.update_w_avg(w, self.cfg.w_avg_beta)
        ws = w[:, None].expand(-1, G.n_ws, -1)
        if self.cfg.style_mixing > 0 and random.Random(ctx.step).random() < self.cfg.style_mixing:
            cutoff = random.Random(ctx.step + 7919).randrange(1, G.n_ws)
            w2 = G.mapping(torch.randn(b, G.z_dim, device=ctx.device, generator=gen))
            ws = torch.cat([ws[:, :cutoff], w2[:, None].expand(-1, G.n_ws - cutoff, -1)], 1)
        return ws

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor | float]:
        c = self.cfg
        G, D = ctx.nets["generator"], ctx.nets["discriminator"]
        real = batch["image"].to(ctx.device)
        b = real.shape[0]
        # D: logistic loss (eq. 1) + lazy R1 (eq. 3's gamma/2 term, every r1_every steps, scaled)
        with ctx.autocast():
            with torch.no_grad():
                fake = G.synthesize(self._ws(G, b, ctx))
            loss_d = d_loss_bce(D(real).float(), D(fake).float())
        out: dict[str, torch.Tensor | float] = {}
        if ctx.step % c.r1_every == 0:
            with ctx.autocast():
                r1 = r1_penalty(D, real.float())
            loss_d = loss_d + (c.r1_gamma / 2) * r1 * c.r1_every
            out["r1"] = r1.detach()
        ctx.backward_step(loss_d, "D")
        with requires_grad(D, False), ctx.autocast():
            loss_g = g_loss_bce(D(G.synthesize(self._ws(G, b, ctx))).float())
        ctx.backward_step(loss_g, "G")
        out.update(loss_d=loss_d.detach(), loss_g=loss_g.detach())
        return out

    @torch.no_grad()
    def sample_grid(self, nets: dict[str, nn.Module], n: int, seed: int) -> torch.Tensor | None:
        G = nets["generator"]
        dev = next(G.parameters()).device
        z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
        return G(z, psi=1.0).clamp(-1, 1)

    def _psi_w(self, G: StyleGenerator, z: torch.Tensor, psi: float) -> torch.Tensor:
        w = G.mapping(z)
        if psi != 1.0:
            w = G.mean_w().to(w).lerp(w, psi)
        return w

    @torch.no_grad()
    def generate(self, n: int, seed: int, **options: Any) -> Iterator["Sample"]:
        """Yield n images (Sample.image (H,W) [0,1], mask None: StyleGAN has no mask output).

        Options: ``truncation`` psi (default 1 = off, whatever the run's config says: psi < 1
        trades diversity for fidelity, so it must be asked for; it is recorded in every sample's
        ``extra["truncation"]``), ``batch_size`` (16). Sample i uses z from seed ``seed + i`` so
        single images can be regenerated.
        """
        from mammosynth.synth.sample import Sample

        G = self.nets["generator"]
        dev = next(G.parameters()).device
        psi = float(options.get("truncation") if options.get("truncation") is not None else 1.0)
        if not 0.0 <= psi <= 1.0:
            raise ConfigError(f"truncation psi must be in [0, 1] (1 = none), got {psi}")
        bs = int(options.get("batch_size") or 16)
        for start in range(0, n, bs):
            seeds = list(range(seed + start, seed + min(n, start + bs)))
            z = torch.stack([torch.randn(G.z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(dev)
            imgs = G.synthesize(self._psi_w(G, z, psi), noise_mode="const")
            for s, img in zip(seeds, imgs):
                yield Sample(image=to_unit(img), seed=s, extra={"truncation": psi, "data": self.cfg.data})


def to_unit(img: torch.Tensor) -> np.ndarray:
    """(1,H,W) or (H,W) tensor in [-1,1] -> (H,W) float32 numpy in [0,1]."""
    a = img.detach().float().cpu().numpy()
    a = a[0] if a.ndim == 3 else a
    return ((a + 1.0) / 2.0).clip(0.0, 1.0).astype(np.float32)
