"""BI-RADS-controlled autoencoder GAN with visual-feature processing (seed 000).

The generator G is an encoder/decoder fed a lesion patch concatenated with two embedded
BI-RADS labels (eq. 1): ``I' = G(I, E1(margin), E2(shape))``. The encoder maps the
concatenation to a 1024-d *visual feature*; the decoder maps a visual feature back to pixels.
Two discriminators each predict real/fake plus one auxiliary label: D1 the margin, D2 the
shape. Losses (eq. 3-5), on logits, with lambda1..lambda4 = 10, 10, 10, 300::

    L_D1 = BCE(D1_rf(I), 1) + BCE(D1_rf(I'), 0) + lambda1 * [CE(D1_m(I), m) + CE(D1_m(I'), m)]
    L_D2 = BCE(D2_rf(I), 1) + BCE(D2_rf(I'), 0) + lambda2 * [CE(D2_s(I), s) + CE(D2_s(I'), s)]
    L_G  = BCE(D1_rf(I'), 1) + BCE(D2_rf(I'), 1) + lambda3 * [CE(D1_m(I'), m) + CE(D2_s(I'), s)]
           + lambda4 * L1(I, I')

Feature mixing (``lambda_mix`` > 0; ours, off by default). Category generation (section 3.4)
decodes convex combinations of features, but eq. 3-5 only ever decode features of single
lesions, so nothing in training asks a *mixture* to decode to a realistic lesion of its
category; the paper credits the adversarial loss with forming that manifold. With
``lambda_mix`` each training sample also gets a mixture ``v_mix = sum_k a_k v_k`` of its own
feature and up to ``mix_partners - 1`` batch features of the same margin (Dirichlet(1)
weights). D1/D2 see the decoded mixtures as fake; G gets, weighted by ``lambda_mix``::

    BCE(D1_rf(I_mix), 1) + BCE(D2_rf(I_mix), 1) + lambda3 * [CE(D1_m(I_mix), m) + CE(D2_s(I_mix), s_mix)]

with ``s_mix`` the shape when all mixed lesions share it, else masked out. The mixtures have
no pixel target, so there is no L1 term for them (as in adversarially constrained
interpolation, Berthelot et al. 2019).

The paper's ``log(1 - (m - D_m(I)))`` terms are the log-likelihood of the ground-truth label
under the auxiliary head, i.e. a cross-entropy; labels missing in the dataset (-1) are masked
out of those terms (:func:`mammosynth.losses.masked_cross_entropy`), never guessed. G uses
the non-saturating form of its adversarial terms (Goodfellow et al.), as DCGAN-era code does.

Calcifications (``labels: calcification``; our extension of seed 000): the same networks and
losses with other label sets: E1/D1 carry the BI-RADS calcification *morphology* where they
carried the margin, E2/D2 the *distribution* where they carried the shape, and the model
trains on (and draws seeds from) the store's calcification clusters only. Network names stay
``embed_margin``/``disc_margin``/... (the slots); :data:`LABEL_SETS` maps slots to labels.

Generation (section 2.2-2.3, eq. 2) encodes seed lesions with their embedded labels and
decodes convex combinations of the visual features; see :mod:`mammosynth.synth.latent` and
:meth:`BiradsAEGAN.generate` / :meth:`BiradsAEGAN.interpolate`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammosynth.data.birads import DISTRIBUTIONS, MARGINS, MORPHOLOGIES, PATHOLOGIES, SHAPES, parse_term
from mammosynth.errors import ConfigError, DataError
from mammosynth.losses import d_loss_bce, g_loss_bce, masked_cross_entropy, r1_penalty
from mammosynth.nn.augment import diff_augment, parse_policy
from mammosynth.nn.regularize import spectral_normalize
from mammosynth.nn.upsample import up_conv
from mammosynth.train.method import Method, StepContext, TrainConfig, requires_grad

if TYPE_CHECKING:
    from mammosynth.synth.sample import Sample

log = logging.getLogger(__name__)

#: ``labels`` -> slot ("margin": E1/D1, "shape": E2/D2) -> (label name, vocabulary).
LABEL_SETS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "mass": {"margin": ("margin", MARGINS), "shape": ("shape", SHAPES)},
    "calcification": {"margin": ("morphology", MORPHOLOGIES), "shape": ("distribution", DISTRIBUTIONS)},
}

@dataclass
class BiradsAEGANConfig(TrainConfig):
    """Seed 000, section 3.2. ``patch_size`` 0 = the store's patch size (64 in the paper)."""

    patch_size: int = 0
    feature_dim: int = 1024  # visual feature size (section 2.3)
    embed_hidden: int = 256  # first FC of each embedding module (section 3.2)
    base_channels: int = 64  # channels at full resolution; doubled per halving, capped at max_channels
    max_channels: int = 512
    lr: float = 2e-4
    beta1: float = 0.9  # "pytorch default Adam optimizer settings"
    beta2: float = 0.999
    lambda_margin_d: float = 10.0  # lambda1, eq. 3
    lambda_shape_d: float = 10.0  # lambda2, eq. 4
    lambda_aux_g: float = 10.0  # lambda3, eq. 5
    lambda_rec: float = 300.0  # lambda4, eq. 5
    crop_scale: tuple[float, float] = (0.85, 1.0)  # random-crop side as a fraction of the patch
    leaky_slope: float = 0.2
    batch_size: int = 64  # the paper uses 512 on a GPU (configs/birads-aegan-full.yaml)
    ema_decay: float = 0.999  # EMA of E1, E2, encoder and decoder for generation (the paper keeps none)
    n_features: int = 20  # category generation: features combined per sample (section 3.4)
    weight_step: float = 0.05  # category generation: convex weights are multiples of this
    seed_split: str = "train"  # store split the seed lesions for generation come from
    labels: Literal["mass", "calcification"] = "mass"  # calcification: E1/D1 morphology, E2/D2 distribution, clusters only
    # Feature-mixing term (ours, off in the paper's losses; see module docstring): weight of the
    # adversarial + auxiliary terms on decoded convex mixtures of same-margin features.
    lambda_mix: float = 0.0
    mix_partners: int = 4  # features per training mixture (the sample itself + up to 3 of its margin)
    # -- where mammosynth departs from the paper (PAPER_RECIPE restores it; docs/quality.md) --
    upsampling: Literal["transposed", "resize", "transposed_blur"] = "resize"  # decoder's 2x layers
    diffaug: str = "color,translation,flip"  # DiffAugment on D1/D2 inputs ("" = off; no cutout: it can hide the margin D classifies)
    d_reg: Literal["none", "spectral", "r1"] = "none"  # regularisation of D1 and D2
    r1_gamma: float = 1.0  # R1 weight (d_reg: r1)

    PAPER_RECIPE: ClassVar[dict[str, Any]] = {"ema_decay": 0.0, "upsampling": "transposed", "diffaug": "", "d_reg": "none"}

    def validate(self) -> None:
        super().validate()
        if self.patch_size and (self.patch_size < 16 or self.patch_size > 256 or self.patch_size & (self.patch_size - 1)):
            raise ConfigError(f"patch_size must be a power of two in 16..256 (or 0 = the store's), got {self.patch_size}")
        if self.feature_dim < 1 or self.base_channels < 1:
            raise ConfigError("feature_dim and base_channels must be >= 1")
        if not 0 < self.weight_step <= 1 or abs(round(1 / self.weight_step) * self.weight_step - 1) > 1e-6:
            raise ConfigError(f"weight_step must divide 1 (e.g. 0.05), got {self.weight_step}")
        if self.n_features < 1:
            raise ConfigError(f"n_features must be >= 1, got {self.n_features}")
        if self.lambda_mix < 0:
            raise ConfigError(f"lambda_mix must be >= 0 (0 = the paper's losses only), got {self.lambda_mix}")
        if self.mix_partners < 2:
            raise ConfigError(f"mix_partners must be >= 2 (a mixture needs two features), got {self.mix_partners}")
        parse_policy(self.diffaug)


def check_patch_size(size: int) -> int:
    if size < 16 or size > 256 or size & (size - 1):
        raise ConfigError(f"birads-aegan needs a power-of-two patch size in 16..256, got {size}")
    return size


def one_hot_or_zero(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B,) int64 with -1 = unknown -> (B, n_classes) float one-hot; unknown rows are all zero."""
    known = labels >= 0
    out = F.one_hot(labels.clamp(min=0), n_classes).float()
    return out * known.unsqueeze(1).float()


def _pre_act_conv(cin: int, cout: int, k: int, s: int, p: int, slope: float, act: bool = True, bn: bool = True,
                  transposed: bool = False) -> nn.Sequential:
    """LeakyReLU-Conv(or ConvTranspose)-BatchNorm, the block the paper uses throughout (section 3.2)."""
    conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers: list[nn.Module] = []
    if act:
        layers.append(nn.LeakyReLU(slope))
    layers.append(conv_cls(cin, cout, k, s, p, bias=not bn))
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    return nn.Sequential(*layers)


def _up_block(cin: int, cout: int, slope: float, bn: bool, upsampling: str) -> nn.Sequential:
    """LeakyReLU-(2x upsampling conv)-BatchNorm: the decoder's stride-2 block (nn.upsample modes)."""
    layers: list[nn.Module] = [nn.LeakyReLU(slope), up_conv(cin, cout, upsampling, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    return nn.Sequential(*layers)


def _channels(size: int, res: int, base: int, cap: int) -> int:
    """Channels at spatial resolution ``res`` of a ``size`` patch: ``base`` doubled per halving."""
    return min(cap, base * (size // res))


class LabelEmbedding(nn.Module):
    """E1 / E2 (section 2.3, 3.2): one-hot label -> FC 256 -> FC S*S, reshaped to a (B,1,S,S) map.

    Unknown labels (-1) give an all-zero one-hot, so only the biases reach the map.
    """

    def __init__(self, n_classes: int, size: int, hidden: int = 256, slope: float = 0.2) -> None:
        super().__init__()
        self.n_classes, self.size = n_classes, size
        self.fc1 = nn.Linear(n_classes, hidden)
        self.act = nn.LeakyReLU(slope)
        self.fc2 = nn.Linear(hidden, size * size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (B,) int64 (-1 = unknown) -> (B,1,S,S) float."""
        h = self.act(self.fc1(one_hot_or_zero(labels, self.n_classes)))
        return self.fc2(h).view(-1, 1, self.size, self.size)


class Encoder(nn.Module):
    """7 convolutions: (B, 3, S, S) [image, margin map, shape map] -> (B, feature_dim) visual feature.

    Layout (the paper gives only the count): a 3x3 stride-1 stem, 4x4 stride-2 convolutions
    down to 4x4, 3x3 stride-1 convolutions filling the count, then a 4x4 valid convolution to
    1x1 (DCGAN practice). At 64: 64 -> 64 -> 32 -> 16 -> 8 -> 4 -> 4 -> 1. The stem has no
    activation before it (a LeakyReLU on the raw image would only bend its negative half) and
    the feature layer has no BatchNorm (the visual feature should not depend on batch statistics).
    """

    n_layers = 7

    def __init__(self, size: int, in_channels: int = 3, feature_dim: int = 1024, base: int = 64,
                 cap: int = 512, slope: float = 0.2) -> None:
        super().__init__()
        check_patch_size(size)
        n_down = int(math.log2(size // 4))
        n_same = self.n_layers - 2 - n_down
        if n_same < 0:
            raise ConfigError(f"patch size {size} needs more than {self.n_layers} encoder convolutions")
        ch = _channels(size, size, base, cap)
        layers = [_pre_act_conv(in_channels, ch, 3, 1, 1, slope, act=False)]
        res = size
        for _ in range(n_down):
            res //= 2
            nxt = _channels(size, res, base, cap)
            layers.append(_pre_act_conv(ch, nxt, 4, 2, 1, slope))
            ch = nxt
        for _ in range(n_same):
            layers.append(_pre_act_conv(ch, ch, 3, 1, 1, slope))
        layers.append(_pre_act_conv(ch, feature_dim, 4, 1, 0, slope, bn=False))
        self.layers = nn.Sequential(*layers)
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1)


class Decoder(nn.Module):
    """7 transposed convolutions: (B, feature_dim) -> (B, 1, S, S) in [-1, 1] (tanh output).

    Mirror of :class:`Encoder`: a 4x4 valid transposed conv from 1x1 to 4x4, 4x4 stride-2
    transposed convs up to S, then 3x3 stride-1 ones; the last maps to one channel without
    BatchNorm, followed by tanh (DCGAN practice for images in [-1, 1]). ``upsampling`` swaps the
    stride-2 layers for resize-convs or blurred transposed convs (nn.upsample): same count.
    """

    n_layers = 7

    def __init__(self, size: int, feature_dim: int = 1024, base: int = 64, cap: int = 512, slope: float = 0.2,
                 upsampling: str = "transposed") -> None:
        super().__init__()
        check_patch_size(size)
        n_up = int(math.log2(size // 4))
        n_same = self.n_layers - 1 - n_up
        if n_same < 0:
            raise ConfigError(f"patch size {size} needs more than {self.n_layers} decoder layers")
        res = 4
        ch = _channels(size, res, base, cap)
        # the first layer sees the raw feature: no activation before it
        layers = [_pre_act_conv(feature_dim, ch, 4, 1, 0, slope, act=False, transposed=True)]
        specs = [("up", None)] * n_up + [("same", None)] * n_same
        for i, (kind, _) in enumerate(specs):
            last = i == len(specs) - 1
            if kind == "up":
                res *= 2
                nxt = 1 if last else _channels(size, res, base, cap)
                layers.append(_up_block(ch, nxt, slope, not last, upsampling))
            else:
                nxt = 1 if last else ch
                layers.append(_pre_act_conv(ch, nxt, 3, 1, 1, slope, bn=not last, transposed=True))
            ch = nxt
        self.layers = nn.Sequential(*layers)
        self.size = size

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layers(feature.view(feature.shape[0], -1, 1, 1)))


class AuxDiscriminator(nn.Module):
    """D1 / D2 (section 3.2): 10 convolutions and 3 FC layers; real/fake logit + label logits.

    The 10 convolutions alternate 3x3 stride 1 and 4x4 stride 2 until 4x4, then stay at 4x4.
    FC 1 and FC 2 are shared; the third FC layer is the output layer, split into a
    real/fake head (1 logit) and an auxiliary classifier head (``n_classes`` logits).
    The first convolution has no BatchNorm (DCGAN practice: normalising the raw input hurts D).
    """

    n_convs = 10

    def __init__(self, size: int, n_classes: int, base: int = 64, cap: int = 512, fc_hidden: int = 1024,
                 slope: float = 0.2) -> None:
        super().__init__()
        check_patch_size(size)
        n_down = int(math.log2(size // 4))
        if n_down <= self.n_convs // 2:
            down_at = {2 * i + 1 for i in range(n_down)}
        else:
            down_at = set(range(self.n_convs - n_down, self.n_convs))
        layers: list[nn.Module] = []
        ch_in, res = 1, size
        for i in range(self.n_convs):
            if i in down_at:
                res //= 2
                cout = _channels(size, res, base, cap)
                layers.append(_pre_act_conv(ch_in, cout, 4, 2, 1, slope, act=i > 0, bn=i > 0))
            else:
                cout = ch_in if i else base  # stride-1 convs keep the width
                layers.append(_pre_act_conv(ch_in, cout, 3, 1, 1, slope, act=i > 0, bn=i > 0))
            ch_in = cout
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.LeakyReLU(slope), nn.Flatten(), nn.Linear(ch_in * 4 * 4, fc_hidden),
            nn.LeakyReLU(slope), nn.Linear(fc_hidden, fc_hidden // 2), nn.LeakyReLU(slope),
        )
        self.real_fake = nn.Linear(fc_hidden // 2, 1)
        self.classifier = nn.Linear(fc_hidden // 2, n_classes)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,1,S,S) in [-1,1] -> real/fake logits (B,), class logits (B, n_classes)."""
        h = self.fc(self.convs(image))
        return self.real_fake(h).squeeze(1), self.classifier(h)


def mix_weights(shape: torch.Tensor, margin: torch.Tensor, partners: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training mixtures for the feature-mixing term: row i of W mixes sample i with up to
    ``partners - 1`` other batch samples of the same (known) margin, Dirichlet(1) weights.

    shape, margin (B,) int64 (-1 = unknown). Returns W (B, B) float32 (rows sum to 1, zero
    outside i's margin; a sample with no partner or no margin mixes with itself only), the
    mixtures' margin (B,) and shape (B,) (-1 where the mixed lesions' shapes differ)."""
    b = margin.shape[0]
    dev = generator.device if generator is not None else margin.device
    m, s = margin.to(dev), shape.to(dev)
    eye = torch.eye(b, dtype=torch.bool, device=dev)
    mate = (m[:, None] == m[None, :]) & (m[:, None] >= 0) & ~eye
    # up to partners - 1 random mates per row (vectorised: the top random keys among valid mates)
    keys = torch.rand(b, b, generator=generator, device=dev).masked_fill(~mate, -1.0)
    top = keys.topk(min(partners - 1, b), dim=1)
    members = eye.clone()
    members.scatter_(1, top.indices, top.values >= 0)
    members |= eye
    g = -torch.log(torch.rand(b, b, generator=generator, device=dev).clamp_min(1e-12))  # Exp(1) -> Dirichlet(1)
    g = g * members
    w = g / g.sum(1, keepdim=True)
    mixed_shape = torch.where(((s[None, :] != s[:, None]) & (w > 0)).any(1), torch.full_like(s, -1), s)
    return w.to(margin.device), margin.clone(), mixed_shape.to(shape.device)


def aegan_losses(nets: dict[str, nn.Module], image: torch.Tensor, shape: torch.Tensor, margin: torch.Tensor,
                 cfg: BiradsAEGANConfig, part: str, fake: torch.Tensor | None = None,
                 mix: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                 aug: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Terms of eq. 3-4 (``part="D"``, needs ``fake`` detached) or eq. 5 (``part="G"``).

    image (B,1,S,S) in [-1,1]; shape, margin (B,) int64 with -1 = unknown. ``mix``: decoded
    feature mixtures with their (shape, margin) labels, for the ``lambda_mix`` term (D: as
    fakes; G: adversarial + auxiliary, see the module docstring). ``aug``: DiffAugment applied
    to every image D1/D2 see (the reconstruction term compares unaugmented images).
    """
    d_margin, d_shape = nets["disc_margin"], nets["disc_shape"]
    aug = aug or (lambda x: x)
    if part == "D":
        assert fake is not None
        image_in, fake_in = aug(image), aug(fake)
        rf_real_1, m_real = d_margin(image_in)
        rf_fake_1, m_fake = d_margin(fake_in)
        rf_real_2, s_real = d_shape(image_in)
        rf_fake_2, s_fake = d_shape(fake_in)
        adv1 = d_loss_bce(rf_real_1, rf_fake_1)
        adv2 = d_loss_bce(rf_real_2, rf_fake_2)
        aux1 = masked_cross_entropy(m_real, margin) + masked_cross_entropy(m_fake, margin)
        aux2 = masked_cross_entropy(s_real, shape) + masked_cross_entropy(s_fake, shape)
        loss_d1 = adv1 + cfg.lambda_margin_d * aux1
        loss_d2 = adv2 + cfg.lambda_shape_d * aux2
        out = {"aux_margin_d": aux1, "aux_shape_d": aux2}
        if cfg.d_reg == "r1" and cfg.r1_gamma > 0:
            r1 = r1_penalty(lambda x: d_margin(x)[0], image_in) + r1_penalty(lambda x: d_shape(x)[0], image_in)
            loss_d1 = loss_d1 + 0.5 * cfg.r1_gamma * r1
            out["r1"] = r1
        if mix is not None:
            mix_in = aug(mix[0])
            mix_d1 = F.softplus(d_margin(mix_in)[0]).mean()  # -log(1 - D1_rf(I_mix))
            mix_d2 = F.softplus(d_shape(mix_in)[0]).mean()
            loss_d1, loss_d2 = loss_d1 + cfg.lambda_mix * mix_d1, loss_d2 + cfg.lambda_mix * mix_d2
            out["mix_d"] = mix_d1 + mix_d2
        return {"loss_d": loss_d1 + loss_d2, "loss_d1": loss_d1, "loss_d2": loss_d2, **out}
    assert fake is not None
    fake_in = aug(fake)
    rf1, m_logits = d_margin(fake_in)
    rf2, s_logits = d_shape(fake_in)
    adv = g_loss_bce(rf1) + g_loss_bce(rf2)
    aux = masked_cross_entropy(m_logits, margin) + masked_cross_entropy(s_logits, shape)
    rec = (fake - image).abs().mean()
    loss_g = adv + cfg.lambda_aux_g * aux + cfg.lambda_rec * rec
    out = {"adv_g": adv, "aux_g": aux, "rec_l1": rec}
    if mix is not None:
        mix_image, mix_shape, mix_margin = mix
        mix_in = aug(mix_image)
        rf1m, m_logits_m = d_margin(mix_in)
        rf2m, s_logits_m = d_shape(mix_in)
        mix_adv = g_loss_bce(rf1m) + g_loss_bce(rf2m)
        mix_aux = masked_cross_entropy(m_logits_m, mix_margin) + masked_cross_entropy(s_logits_m, mix_shape)
        loss_g = loss_g + cfg.lambda_mix * (mix_adv + cfg.lambda_aux_g * mix_aux)
        out.update({"mix_adv_g": mix_adv, "mix_aux_g": mix_aux})
    return {"loss_g": loss_g, **out}


class BiradsAEGAN(Method):
    """``birads-aegan``: seed 000's autoencoder GAN. Networks in ``self.nets``:
    ``embed_margin`` (E1), ``embed_shape`` (E2), ``encoder``, ``decoder``, ``disc_margin`` (D1),
    ``disc_shape`` (D2)."""

    name = "birads-aegan"
    Config = BiradsAEGANConfig
    ema_networks = ("embed_margin", "embed_shape", "encoder", "decoder")

    cfg: BiradsAEGANConfig

    # -- networks ---------------------------------------------------------------------
    @property
    def patch_size(self) -> int:
        return int(self.cfg.patch_size or self.data_info.get("patch_size") or 64)

    @property
    def label_set(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Slot ("margin", "shape") -> (label name, vocabulary) for this run's ``labels``."""
        return LABEL_SETS[self.cfg.labels]

    @property
    def lesion_types(self) -> tuple[str, ...] | None:
        return ("calcification",) if self.cfg.labels == "calcification" else None

    def _slot_index(self, slot: str, value: str | None) -> int | None:
        name, vocab = self.label_set[slot]
        return vocab.index(parse_term(value, vocab, name)) if value else None

    def _requested(self, shape: str | None, margin: str | None, more: dict[str, Any]) -> tuple[str | None, str | None]:
        """The (shape-slot, margin-slot) terms asked for: shape/margin on a mass run,
        morphology/distribution on a calcification run; the other family is refused."""
        asked = {"shape": shape, "margin": margin, "morphology": more.get("morphology"), "distribution": more.get("distribution")}
        mine = {name for name, _ in self.label_set.values()}
        wrong = [k for k, v in asked.items() if v and k not in mine]
        if wrong:
            raise ConfigError(f"this birads-aegan run has {self.cfg.labels} labels ({', '.join(sorted(mine))}); "
                              f"it cannot control {wrong[0]}")
        return asked[self.label_set["shape"][0]], asked[self.label_set["margin"][0]]

    def _label_meta(self, s_i: int | None, m_i: int | None) -> dict[str, str | None]:
        """Sample label fields for slot indices (None = not one category)."""
        (s_name, s_vocab), (m_name, m_vocab) = self.label_set["shape"], self.label_set["margin"]
        meta: dict[str, str | None] = {s_name: s_vocab[s_i] if s_i is not None else None,
                                       m_name: m_vocab[m_i] if m_i is not None else None}
        if self.cfg.labels == "calcification":
            meta["lesion_type"] = "calcification"
        return meta

    def build(self) -> None:
        c, S = self.cfg, check_patch_size(self.patch_size)
        margins, shapes = self.label_set["margin"][1], self.label_set["shape"][1]
        self.nets["embed_margin"] = LabelEmbedding(len(margins), S, c.embed_hidden, c.leaky_slope)
        self.nets["embed_shape"] = LabelEmbedding(len(shapes), S, c.embed_hidden, c.leaky_slope)
        self.nets["encoder"] = Encoder(S, 3, c.feature_dim, c.base_channels, c.max_channels, c.leaky_slope)
        self.nets["decoder"] = Decoder(S, c.feature_dim, c.base_channels, c.max_channels, c.leaky_slope, c.upsampling)
        for key, vocab in (("disc_margin", margins), ("disc_shape", shapes)):
            disc = AuxDiscriminator(S, len(vocab), c.base_channels, c.max_channels, slope=c.leaky_slope)
            self.nets[key] = spectral_normalize(disc) if c.d_reg == "spectral" else disc

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.cfg
        g_params = [p for k in ("embed_margin", "embed_shape", "encoder", "decoder") for p in self.nets[k].parameters()]
        d_params = [p for k in ("disc_margin", "disc_shape") for p in self.nets[k].parameters()]
        return {"G": torch.optim.Adam(g_params, lr=c.lr, betas=(c.beta1, c.beta2)),
                "D": torch.optim.Adam(d_params, lr=c.lr, betas=(c.beta1, c.beta2))}

    def data_info_from_store(self, store_path: str) -> dict[str, Any]:
        info = super().data_info_from_store(store_path)
        info["store_path"] = str(Path(store_path).resolve())  # default seed store for generate/interpolate
        if self.cfg.labels == "calcification":
            from mammosynth.data.store import Store

            with Store(store_path) as s:
                if "calcification" not in s.lesion_types("train"):
                    raise DataError(f"{store_path}: labels=calcification needs calcification clusters in the train split "
                                    f"and it has none; ingest with --lesions calcification or set labels=mass")
            info["labels"] = {slot: list(vocab) for slot, (_, vocab) in self.label_set.items()}
        return info

    def make_dataset(self, store_path: str, split: str = "train") -> torch.utils.data.Dataset:
        from mammosynth.data.dataset import LesionDataset

        return LesionDataset(store_path, split=split, augment=split == "train", crop_scale=tuple(self.cfg.crop_scale),
                             size=self.patch_size, lesion_types=self.lesion_types)

    # -- G(I, E1(m), E2(s)), eq. 1 ------------------------------------------------------
    @staticmethod
    def encode_with(nets: dict[str, nn.Module], image: torch.Tensor, shape: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
        """(B,1,S,S) [-1,1] + labels (B,) -> visual features (B, feature_dim)."""
        x = torch.cat([image, nets["embed_margin"](margin).to(image.dtype), nets["embed_shape"](shape).to(image.dtype)], 1)
        return nets["encoder"](x)

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor | float]:
        nets = ctx.nets
        image = batch["image"].to(ctx.device, non_blocking=True)
        shape = batch[self.label_set["shape"][0]].to(ctx.device)  # the slots: shape/margin, or distribution/morphology
        margin = batch[self.label_set["margin"][0]].to(ctx.device)
        mix = None
        gen = ctx.generator()

        def aug(x: torch.Tensor) -> torch.Tensor:
            return diff_augment(x, self.cfg.diffaug, generator=gen) if self.cfg.diffaug else x

        with ctx.autocast():
            feature = self.encode_with(nets, image, shape, margin)
            fake = nets["decoder"](feature)
            if self.cfg.lambda_mix > 0:
                w, mix_margin, mix_shape = mix_weights(shape, margin, self.cfg.mix_partners, ctx.generator())
                mix = (nets["decoder"](w.to(feature.dtype) @ feature), mix_shape, mix_margin)
            d_terms = aegan_losses(nets, image, shape, margin, self.cfg, "D", fake=fake.detach(),
                                   mix=None if mix is None else (mix[0].detach(), *mix[1:]), aug=aug)
        ctx.backward_step(d_terms["loss_d"], "D")
        with requires_grad(nets["disc_margin"], False), requires_grad(nets["disc_shape"], False):
            with ctx.autocast():
                g_terms = aegan_losses(nets, image, shape, margin, self.cfg, "G", fake=fake, mix=mix, aug=aug)
            ctx.backward_step(g_terms["loss_g"], "G")
        return {k: v.detach() for k, v in {**d_terms, **g_terms}.items()}

    @torch.no_grad()
    def sample_grid(self, nets: dict[str, nn.Module], n: int, seed: int) -> torch.Tensor | None:
        """Rows of real val/train lesions followed by their reconstructions: (n,1,S,S) in [-1,1]."""
        store = self.data_info.get("store_path")
        if not store or not Path(store).exists():
            return None
        bank = (_load_seed_bank(store, "val", self.patch_size, self.cfg.labels)
                or _load_seed_bank(store, "train", self.patch_size, self.cfg.labels))
        if bank is None:
            return None
        k = max(1, min(n // 2, len(bank.source_ids)))
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(bank.source_ids), k, replace=False))
        dev = next(nets["encoder"].parameters()).device
        was = {name: net.training for name, net in nets.items()}
        for net in nets.values():
            net.eval()
        try:
            img = bank.images[pick].to(dev)
            rec = nets["decoder"](self.encode_with(nets, img, bank.shape[pick].to(dev), bank.margin[pick].to(dev)))
        finally:
            for name, net in nets.items():
                net.train(was[name])
        return torch.cat([img, rec.float()], 0)

    # -- visual-feature processing (section 2.2-3.4) --------------------------------------
    def _device(self) -> torch.device:
        return next(self.nets["encoder"].parameters()).device

    @torch.no_grad()
    def encode(self, images: torch.Tensor, shape: torch.Tensor, margin: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Visual features (N, feature_dim) of (N,1,S,S) images in [-1,1] with labels (N,) (-1 = none)."""
        dev = self._device()
        out = []
        for i in range(0, len(images), batch_size):
            out.append(self.encode_with(self.nets, images[i:i + batch_size].to(dev), shape[i:i + batch_size].to(dev),
                                        margin[i:i + batch_size].to(dev)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.cfg.feature_dim)

    @torch.no_grad()
    def decode(self, features: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(N, feature_dim) -> (N,1,S,S) images in [-1,1] (on CPU)."""
        dev = self._device()
        dtype = next(self.nets["decoder"].parameters()).dtype
        out = [self.nets["decoder"](features[i:i + batch_size].to(dev, dtype)).float().cpu()
               for i in range(0, len(features), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 1, self.patch_size, self.patch_size)

    def _seed_bank(self, store: str | None, split: str | None) -> "SeedBank":
        path = store or self.data_info.get("store_path")
        if not path:
            raise ConfigError("no seed store: pass store=PATH (a dataset file with lesions)")
        key = (str(path), split)
        cache = getattr(self, "_bank_cache", None)
        if cache is not None and cache[0] == key:
            return cache[1]
        bank = _load_seed_bank(path, split, self.patch_size, self.cfg.labels)
        if bank is None:
            kind = "calcification clusters" if self.cfg.labels == "calcification" else "lesions"
            raise DataError(f"{path}: no {kind} in split {split or 'all'!r} to use as seeds")
        self._bank_cache = (key, bank)
        return bank

    def categories(self, store: str | None = None, split: str | None = None, shape: str | None = None,
                   margin: str | None = None, pathology: str | None = None) -> dict[str, Any]:
        """The BI-RADS categories the seed lesions have, as :meth:`generate` draws them.

        Categories are the label combinations of the data: (shape, margin) pairs when the seeds
        carry both labels, one category per margin (shape None) when no seed has a shape
        (mini-MIAS, INbreast, VinDr), one per shape when no seed has a margin. ``shape`` /
        ``margin`` restrict them; ``pathology`` restricts the seeds. Returns
        ``{"axes": ("shape", "margin") | ("margin",) | ("shape",), "split", "store",
        "present": [{"shape", "margin", "n_seeds"}], "absent": [{"shape", "margin"}]}`` where
        ``absent`` lists the vocabulary's categories (on the axes the data has) with no seed.
        """
        if self.cfg.labels != "mass":
            raise ConfigError("categories (generate --per-category) cover shape and margin; this birads-aegan run has "
                              "calcification labels: generate with --morphology / --distribution instead")
        bank = self._seed_bank(store, split or self.cfg.seed_split)
        shape_i = SHAPES.index(parse_term(shape, SHAPES, "shape")) if shape else None
        margin_i = MARGINS.index(parse_term(margin, MARGINS, "margin")) if margin else None
        path_i = PATHOLOGIES.index(parse_term(pathology, PATHOLOGIES, "pathology")) if pathology else None
        cats, counts, axes = _seed_categories(bank, path_i, shape_i, margin_i)
        vocab_s = [shape_i] if shape_i is not None else (list(range(len(SHAPES))) if "shape" in axes else [None])
        vocab_m = [margin_i] if margin_i is not None else (list(range(len(MARGINS))) if "margin" in axes else [None])
        have = {(s_, m_) for s_, m_ in cats}
        name = lambda vocab, i: None if i is None else vocab[i]  # noqa: E731
        return {"axes": axes, "split": bank.split, "store": str(bank.path),
                "present": [{"shape": name(SHAPES, s_), "margin": name(MARGINS, m_), "n_seeds": int(c)}
                            for (s_, m_), c in zip(cats, counts)],
                "absent": [{"shape": name(SHAPES, s_), "margin": name(MARGINS, m_)}
                           for s_ in vocab_s for m_ in vocab_m if (s_, m_) not in have]}

    def generate(self, n: int, seed: int, shape: str | None = None, margin: str | None = None,
                 pathology: str | None = None, batch_size: int = 64, store: str | None = None,
                 n_features: int | None = None, weight_step: float | None = None, spherical: bool = False,
                 split: str | None = None, **more: Any) -> Iterator["Sample"]:
        """Category-specific generation (section 3.4, eq. 2): per sample, pick ``n_features``
        (K = 20) seed lesions of the requested category, encode each with its embedded labels,
        combine the features with random convex weights on a ``weight_step`` (0.05) grid and
        decode. A margin-only request draws seeds of that margin whatever their shape (and vice
        versa). With no category requested, each sample's category is drawn in proportion to its
        frequency among the seeds (:meth:`categories`: per margin on margin-only data).
        ``pathology`` also restricts seeds. A ``labels: calcification`` run takes ``morphology``
        and ``distribution`` instead of ``margin`` and ``shape``.

        A category with fewer than K seeds uses its whole pool for every sample (samples then
        differ only in their weights: less diverse); each such sample records
        ``n_features_requested`` and ``pool_size`` in ``extra``, and a warning names the category.
        """
        from mammosynth.synth import latent

        shape, margin = self._requested(shape, margin, more)
        bank = self._seed_bank(store, split or self.cfg.seed_split)
        shape_i, margin_i = self._slot_index("shape", shape), self._slot_index("margin", margin)
        path_i = PATHOLOGIES.index(parse_term(pathology, PATHOLOGIES, "pathology")) if pathology else None
        eligible = np.ones(len(bank.source_ids), bool)
        if path_i is not None:
            eligible &= bank.pathology.numpy() == path_i
        k_feat = n_features or self.cfg.n_features
        step = weight_step or self.cfg.weight_step
        rng = np.random.default_rng(seed)
        feats = self._bank_features(bank, batch_size)
        s_arr, m_arr = bank.shape.numpy(), bank.margin.numpy()
        if shape_i is None and margin_i is None:
            cats, counts, _ = _seed_categories(bank, path_i, None, None, self.label_set)
        warned: set[tuple[int | None, int | None]] = set()
        pending: list[tuple[torch.Tensor, dict[str, Any]]] = []
        for i in range(n):
            if shape_i is None and margin_i is None:
                s_req, m_req = cats[rng.choice(len(cats), p=counts / counts.sum())]
            else:
                s_req, m_req = shape_i, margin_i
            member = eligible.copy()
            if s_req is not None:
                member &= s_arr == s_req
            if m_req is not None:
                member &= m_arr == m_req
            pool = np.flatnonzero(member)
            label = self._label_meta(s_req, m_req)
            if len(pool) == 0:
                what = ", ".join(f"{k}={v}" for k, v in ({**label, "lesion_type": None, "pathology": pathology}).items() if v)
                missing = [self.label_set[k][0] for k, col in (("shape", s_arr), ("margin", m_arr)) if not (col[eligible] >= 0).any()]
                raise DataError(f"{bank.path}: no seed lesions with {what} in split {bank.split or 'all'!r}"
                                + (f" (no seed has a {' or '.join(missing)} label)" if missing else ""))
            if len(pool) < k_feat and (s_req, m_req) not in warned:
                warned.add((s_req, m_req))
                log.warning("birads-aegan: %s has %d seed lesion(s) in split %r, fewer than K = %d: every sample "
                            "combines all %d (samples differ only in their weights; see `generate --help`, --n-features)",
                            _category_name({k: v for k, v in label.items() if k != "lesion_type"}), len(pool), bank.split or "all", k_feat, len(pool))
            chosen = np.sort(rng.choice(pool, min(k_feat, len(pool)), replace=False))
            weights = latent.convex_weights(len(chosen), step, rng)
            v = latent.combine(feats[chosen], torch.from_numpy(weights)[None], spherical=spherical)[0]
            meta = {
                **label,
                "pathology": PATHOLOGIES[path_i] if path_i is not None else None,
                "seed": seed,
                "source_ids": [bank.source_ids[j] for j in chosen],
                "weights": [float(w) for w in weights],
                "extra": {"mode": "category", "index": i, "n_features": int(len(chosen)), "weight_step": step,
                          "n_features_requested": int(k_feat), "pool_size": int(len(pool)),
                          "seed_split": bank.split, "spherical": bool(spherical), "seed_store": str(bank.path)},
            }
            meta["mask"] = latent.blend_masks(bank.masks[chosen], weights[None])[0]
            meta["extra"]["mask"] = "sdf_blend"
            pending.append((v, meta))
            if len(pending) >= batch_size or i == n - 1:
                yield from self._emit(pending, batch_size)
                pending = []

    def interpolate(self, sources: list[str | int] | None = None, mode: str | None = None, steps: int = 8,
                    divisions: int = 4, spherical: bool = False, extrapolate: float = 0.0,
                    shape: str | None = None, margin: str | None = None, store: str | None = None,
                    split: str | None = None, n: int = 1, seed: int = 0, n_features: int | None = None,
                    weight_step: float | None = None, batch_size: int = 64, strip: str | None = None,
                    **more: Any) -> Iterator["Sample"]:
        """Visual-feature interpolation (section 3.3-3.4). Modes:

        * ``pair`` (2 sources): the two endpoint reconstructions and ``steps`` (8) equidistant
          features in between; ``extrapolate`` e in (0, 0.5] adds points beyond each end up to
          t = -e and 1 + e (same spacing), outside the convex hull by a bounded step;
        * ``triangle`` (3 sources): the barycentric grid with ``divisions`` (4) per side:
          3 vertex reconstructions + the 12 interpolated points of Fig. 4;
        * ``loop`` (3 sources): A -> B -> C -> A, ``steps`` in-between points per segment;
        * ``category``: as :meth:`generate` with ``shape``/``margin`` (``n`` samples).

        ``sources`` are store ``source_id`` strings, integer store row indices, or PNG paths
        (labels then unknown unless ``shape``/``margin`` are given). Each source is encoded
        with its own labels, or with ``shape``/``margin`` when given (the embedded description
        steers the feature, section 2.2). ``spherical`` interpolates on the sphere (slerp, norm
        interpolated linearly). ``strip`` = a PNG path for the decoded images. Masks are the
        same convex combination applied to the sources' signed distance maps (approximate:
        the decoder itself outputs no mask), recorded as ``extra["mask"] = "sdf_blend"``.
        """
        from mammosynth.synth import latent

        shape, margin = self._requested(shape, margin, more)  # calcification runs: distribution, morphology
        if mode is None:
            mode = "category" if not sources else {2: "pair", 3: "triangle"}.get(len(sources), "")
        if mode == "category":
            samples = list(self.generate(n, seed, shape=shape, margin=margin, batch_size=batch_size, store=store,
                                         n_features=n_features, weight_step=weight_step, spherical=spherical, split=split))
            if strip:
                latent.save_strip([s.image for s in samples], strip)
            yield from samples
            return
        need = {"pair": 2, "triangle": 3, "loop": 3}.get(mode)
        if need is None:
            raise ConfigError(f"unknown interpolation mode {mode!r}; choose pair, triangle, loop or category")
        if not sources or len(sources) != need:
            raise ConfigError(f"mode {mode!r} needs exactly {need} sources (store source ids, row indices or PNG paths), got {sources!r}")
        if extrapolate and mode != "pair":
            raise ConfigError("extrapolate is available in pair mode only")
        images, s_lab, m_lab, ids, masks = self._resolve_sources(sources, store, split)
        if shape:
            s_lab[:] = self._slot_index("shape", shape)
        if margin:
            m_lab[:] = self._slot_index("margin", margin)
        feats = self.encode(images, s_lab, m_lab, batch_size)
        row_lengths = None
        if mode == "pair":
            ts = latent.pair_positions(steps, extrapolate)
            weights = np.stack([1.0 - ts, ts], 1)
            feats_out = latent.interpolate_pair(feats[0], feats[1], torch.from_numpy(ts), spherical=spherical)
        elif mode == "triangle":
            weights = latent.triangle_weights(divisions)
            feats_out = latent.combine(feats, torch.from_numpy(weights), spherical=spherical)
            row_lengths = latent.triangle_row_lengths(divisions)
        else:
            ts = torch.from_numpy(latent.pair_positions(steps)[:-1])  # each segment drops its end: the next starts there
            parts, wparts = [], []
            for a, b in ((0, 1), (1, 2), (2, 0)):
                parts.append(latent.interpolate_pair(feats[a], feats[b], ts, spherical=spherical))
                w = np.zeros((len(ts), 3))
                w[:, a], w[:, b] = 1.0 - ts.numpy(), ts.numpy()
                wparts.append(w)
            feats_out, weights = torch.cat(parts), np.concatenate(wparts)
        out_masks = latent.blend_masks(masks, weights) if masks is not None else None
        same_s = len(set(s_lab.tolist())) == 1 and int(s_lab[0]) >= 0
        same_m = len(set(m_lab.tolist())) == 1 and int(m_lab[0]) >= 0
        (s_name, s_vocab), (m_name, m_vocab) = self.label_set["shape"], self.label_set["margin"]
        pending = []
        for k in range(len(feats_out)):
            pending.append((feats_out[k], {
                **self._label_meta(int(s_lab[0]) if same_s else None, int(m_lab[0]) if same_m else None),
                "pathology": None, "seed": seed, "source_ids": list(ids),
                "weights": [float(w) for w in weights[k]],
                "mask": None if out_masks is None else out_masks[k],
                "extra": {"mode": mode, "index": k, "spherical": bool(spherical),
                          f"source_{s_name}s": [s_vocab[v] if v >= 0 else None for v in s_lab.tolist()],
                          f"source_{m_name}s": [m_vocab[v] if v >= 0 else None for v in m_lab.tolist()],
                          **({"mask": "sdf_blend"} if out_masks is not None else {})},
            }))
        samples = list(self._emit(pending, batch_size))
        if strip:
            latent.save_strip([s.image for s in samples], strip, row_lengths=row_lengths)
        yield from samples

    def _resolve_sources(self, sources: list[str | int], store: str | None, split: str | None):
        """Sources -> images (k,1,S,S) [-1,1], shape/margin labels (k,), ids, masks (k,S,S) bool or None."""
        from mammosynth.synth.writer import load_png

        bank: SeedBank | None = None
        images, s_lab, m_lab, ids, masks = [], [], [], [], []
        for src in sources:
            if isinstance(src, str) and src.lower().endswith(".png"):
                path = Path(src)
                if not path.exists():
                    raise DataError(f"{path}: source image not found")
                img = torch.from_numpy(load_png(path))[None, None] * 2.0 - 1.0
                if img.shape[-2:] != (self.patch_size, self.patch_size):
                    img = F.interpolate(img, size=(self.patch_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
                images.append(img[0])
                s_lab.append(-1)
                m_lab.append(-1)
                ids.append(str(path))
                masks.append(None)
                continue
            if bank is None:
                bank = self._seed_bank(store, split)
            r = bank.row_of(src)
            images.append(bank.images[r])
            s_lab.append(int(bank.shape[r]))
            m_lab.append(int(bank.margin[r]))
            ids.append(bank.source_ids[r])
            masks.append(bank.masks[r])
        mask_arr = None if any(m is None for m in masks) else np.stack(masks)
        return torch.stack(images), torch.tensor(s_lab), torch.tensor(m_lab), ids, mask_arr

    def _bank_features(self, bank: "SeedBank", batch_size: int) -> torch.Tensor:
        if bank.features is None:
            bank.features = self.encode(bank.images, bank.shape, bank.margin, batch_size)
        return bank.features

    def _emit(self, pending: list[tuple[torch.Tensor, dict[str, Any]]], batch_size: int) -> Iterator["Sample"]:
        from mammosynth.synth.sample import Sample

        if not pending:
            return
        images = self.decode(torch.stack([v for v, _ in pending]), batch_size)
        for img, (_, meta) in zip(images, pending):
            yield Sample(image=((img[0].numpy() + 1.0) / 2.0).clip(0, 1).astype(np.float32), **meta)


@dataclass
class SeedBank:
    """Seed lesions from a store: images (N,1,S,S) in [-1,1], labels (N,) int64, ids."""

    path: Path
    split: str | None
    images: torch.Tensor
    shape: torch.Tensor
    margin: torch.Tensor
    pathology: torch.Tensor
    source_ids: list[str]
    index: np.ndarray
    masks: np.ndarray  # (N,S,S) bool lesion masks
    features: torch.Tensor | None = None

    def row_of(self, source: str | int) -> int:
        """Row of a store source_id, or of an integer store index (as int or digit string)."""
        if isinstance(source, str) and source in self._id_rows():
            return self._id_rows()[source]
        try:
            idx = int(source)
        except (TypeError, ValueError):
            raise DataError(f"{self.path}: no lesion with source id {source!r} in split {self.split or 'all'!r}") from None
        hits = np.flatnonzero(self.index == idx)
        if len(hits) == 0:
            raise DataError(f"{self.path}: lesion index {idx} is not in split {self.split or 'all'!r}")
        return int(hits[0])

    def _id_rows(self) -> dict[str, int]:
        if not hasattr(self, "_rows"):
            self._rows = {s: i for i, s in enumerate(self.source_ids)}
        return self._rows


def _category_name(label: dict[str, str | None]) -> str:
    return "category " + "/".join(f"{k} {v}" for k, v in label.items() if v)


def _seed_categories(bank: SeedBank, path_i: int | None, shape_i: int | None, margin_i: int | None,
                     label_set: dict[str, tuple[str, tuple[str, ...]]] | None = None,
                     ) -> tuple[list[tuple[int | None, int | None]], np.ndarray, tuple[str, ...]]:
    """Categories of the seeds (restricted to pathology/shape/margin when given) and their seed
    counts: (shape, margin) pairs when the seeds carry both labels, margins alone when none has
    a shape, shapes alone when none has a margin. Returns (categories, counts, axes)."""
    s_arr, m_arr = bank.shape.numpy(), bank.margin.numpy()
    ok = np.ones(len(s_arr), bool) if path_i is None else bank.pathology.numpy() == path_i
    axes = tuple(k for k, col in (("shape", s_arr), ("margin", m_arr)) if (col[ok] >= 0).any())
    if not axes:
        names = (label_set or LABEL_SETS["mass"])
        raise DataError(f"{bank.path}: no seed lesion in split {bank.split or 'all'!r} has a {names['shape'][0]} or a "
                        f"{names['margin'][0]} label")
    for k, want in (("shape", shape_i), ("margin", margin_i)):
        if want is not None and k not in axes:
            raise DataError(f"{bank.path}: no seed lesion in split {bank.split or 'all'!r} has a {k} label; "
                            f"categories here are per {' and '.join(axes)}")
    if shape_i is not None:
        ok &= s_arr == shape_i
    if margin_i is not None:
        ok &= m_arr == margin_i
    cols = [s_arr if "shape" in axes else np.full_like(s_arr, -1), m_arr if "margin" in axes else np.full_like(m_arr, -1)]
    for k, col in zip(("shape", "margin"), cols):
        if k in axes:
            ok &= col >= 0
    if not ok.any():
        raise DataError(f"{bank.path}: no seed lesions of the requested category in split {bank.split or 'all'!r}")
    pairs, counts = np.unique(np.stack([cols[0][ok], cols[1][ok]], 1), axis=0, return_counts=True)
    cats = [(int(a) if a >= 0 else None, int(b) if b >= 0 else None) for a, b in pairs]
    return cats, counts, axes


def _load_seed_bank(path: str | os.PathLike, split: str | None, size: int, labels: str = "mass") -> SeedBank | None:
    """Seed lesions of ``split``; ``labels="calcification"``: the calcification clusters only,
    their distribution in the shape slot and morphology in the margin slot (LABEL_SETS)."""
    from mammosynth.data.store import Store

    with Store(path) as s:
        if labels == "calcification":
            idx = s.split_indices("lesions", split)
            idx = idx[np.asarray(s.lesion_types(split)) == "calcification"]
            les = s.lesions(indices=idx)
            les.shape, les.margin = les.distribution, les.morphology
        else:
            les = s.lesions(split=split)
    if len(les.index) == 0:
        return None
    images = torch.from_numpy(les.patch).unsqueeze(1)
    masks = torch.from_numpy(les.mask).unsqueeze(1).float()
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
    return SeedBank(Path(path), split, images * 2.0 - 1.0, torch.from_numpy(les.shape), torch.from_numpy(les.margin),
                    torch.from_numpy(les.pathology), list(les.source_id), np.asarray(les.index),
                    (masks[:, 0] >= 0.5).numpy())
