"""DCGAN for 128x128 lesion patches (seed 003), optionally class-conditioned.

Seed 003 section 3: batches of 64 latent vectors of length 200 drawn from N(0, 1); G maps
them to lesion patches; D outputs the probability that a patch is real (a logit here, with
the loss taken on logits). The architecture is the DCGAN of Radford et al. (which the paper
cites for its training techniques): G = a 4x4 valid transposed conv from the latent then
4x4 stride-2 transposed convs, BatchNorm + ReLU, tanh output; D = 4x4 stride-2 convs,
BatchNorm (not on the first) + LeakyReLU(0.2), a 4x4 valid conv to one logit; Adam
lr 2e-4, beta1 0.5; weights initialised N(0, 0.02).

Conditioning (``condition: margin | shape | pathology``, as medigan's conditional DCGANs;
for calcifications ``morphology | distribution``, and ``lesion_type`` for a store of masses
and calcification clusters trained together, as seed 003 trained both):
a learned class embedding is concatenated to z in G, and D adds a projection term
<embed(y), phi(x)> to its logit (Miyato & Koyama 2018). Lesions whose label is unknown use
an extra "unknown" class, so they still train the model without a guessed label;
generation only asks for known classes. ``lesion_types: all | mass | calcification`` trains on
a store's lesions of one type only. The run records its class vocabulary (data_info
``condition_vocab``), so a loaded run decodes its classes as it was trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Literal

import numpy as np
import torch
from torch import nn

from mammosynth.data.birads import DISTRIBUTIONS, LESION_TYPES, MARGINS, MORPHOLOGIES, PATHOLOGIES, SHAPES, parse_term
from mammosynth.errors import ConfigError, DataError
from mammosynth.losses import d_loss_bce, g_loss_bce, r1_penalty
from mammosynth.nn.augment import diff_augment, parse_policy
from mammosynth.nn.init import dcgan_init
from mammosynth.nn.regularize import spectral_normalize
from mammosynth.nn.upsample import up_conv
from mammosynth.train.method import Method, StepContext, TrainConfig, requires_grad

if TYPE_CHECKING:
    from mammosynth.synth.sample import Sample

VOCABS: dict[str, tuple[str, ...]] = {"margin": MARGINS, "shape": SHAPES, "pathology": PATHOLOGIES,
                                       "morphology": MORPHOLOGIES, "distribution": DISTRIBUTIONS,
                                       "lesion_type": LESION_TYPES}
#: The labels ``generate`` accepts (one per conditionable attribute).
LABEL_OPTIONS: tuple[str, ...] = tuple(VOCABS)


@dataclass
class LesionDCGANConfig(TrainConfig):
    """Seed 003: 128x128 patches, 200-d N(0,1) latent, batch 64."""

    patch_size: int = 128  # patches are resized to this from the store
    nz: int = 200
    batch_size: int = 64
    g_channels: int = 64  # width of G's last hidden layer (x2 per halving of resolution, capped)
    d_channels: int = 64  # width of D's first layer
    max_channels: int = 1024
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    condition: Literal["none", "margin", "shape", "pathology", "morphology", "distribution", "lesion_type"] = "none"
    lesion_types: Literal["all", "mass", "calcification"] = "all"  # which of the store's lesions to train on
    embed_dim: int = 50  # class embedding concatenated to z
    augment: bool = True  # flips + random crops (LesionDataset)
    # -- where mammosynth departs from the paper (PAPER_RECIPE restores it; docs/quality.md) --
    ema_decay: float = 0.999  # EMA generator for sampling (the DCGAN keeps none)
    upsampling: Literal["transposed", "resize", "transposed_blur"] = "resize"  # G's 2x layers
    diffaug: str = "color,translation,cutout"  # DiffAugment policy on D's inputs ("" = off)
    d_reg: Literal["none", "spectral", "r1"] = "none"  # discriminator regularisation
    r1_gamma: float = 1.0  # R1 weight (d_reg: r1)

    PAPER_RECIPE: ClassVar[dict[str, Any]] = {"ema_decay": 0.0, "upsampling": "transposed", "diffaug": "", "d_reg": "none"}

    def validate(self) -> None:
        super().validate()
        if self.patch_size < 16 or self.patch_size & (self.patch_size - 1) or self.patch_size > 512:
            raise ConfigError(f"patch_size must be a power of two in 16..512, got {self.patch_size}")
        if self.nz < 1 or self.embed_dim < 1:
            raise ConfigError("nz and embed_dim must be >= 1")
        parse_policy(self.diffaug)


class DCGANGenerator(nn.Module):
    """z (B, nz) [+ class (B,)] -> (B, 1, S, S) in [-1, 1]. At S=128 and width 64:
    1024@4 -> 512@8 -> 256@16 -> 128@32 -> 64@64 -> 1@128. ``upsampling``: the 2x layers
    (DCGAN's transposed convs, or resize-convs / blurred ones: nn.upsample)."""

    def __init__(self, size: int = 128, nz: int = 200, width: int = 64, cap: int = 1024,
                 n_classes: int = 0, embed_dim: int = 50, upsampling: str = "transposed") -> None:
        super().__init__()
        n_up = int(math.log2(size // 4))
        chans = [min(cap, width * 2 ** (n_up - 1 - i)) for i in range(n_up)]  # widths at 4, 8, ..., S/2
        self.embed = nn.Embedding(n_classes + 1, embed_dim) if n_classes else None  # +1: "unknown"
        zin = nz + (embed_dim if n_classes else 0)
        layers: list[nn.Module] = [nn.ConvTranspose2d(zin, chans[0], 4, 1, 0, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU(True)]
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [up_conv(cin, cout, upsampling, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [up_conv(chans[-1], 1, upsampling), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.nz, self.n_classes = nz, n_classes
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if label is None:
                raise ConfigError("this generator is class-conditioned: pass a label")
            z = torch.cat([z, self.embed(label).to(z.dtype)], 1)
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """(B, 1, S, S) in [-1, 1] [+ class (B,)] -> real/fake logits (B,). At S=128, width 64:
    64@64 -> 128@32 -> 256@16 -> 512@8 -> 1024@4 -> logit; with a projection term when
    class-conditioned."""

    def __init__(self, size: int = 128, width: int = 64, cap: int = 1024, n_classes: int = 0) -> None:
        super().__init__()
        n_down = int(math.log2(size // 4))
        chans = [min(cap, width * 2 ** i) for i in range(n_down)]
        layers: list[nn.Module] = [nn.Conv2d(1, chans[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.out = nn.Conv2d(chans[-1], 1, 4, 1, 0)
        self.embed = nn.Embedding(n_classes + 1, chans[-1]) if n_classes else None
        self.n_classes = n_classes
        self.apply(dcgan_init)
        if self.embed is not None:
            # the projection <embed(y), sum_xy h> has the same form as ``out`` (a 4x4 conv over
            # the same features), so it gets the same N(0, 0.02) scale; PyTorch's N(0, 1) made
            # the conditioned logit ~100x the unconditioned one at step 0 (loss_d ~50 vs 1.4)
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(image)
        logit = self.out(h).flatten(1).squeeze(1)
        if self.embed is not None:
            if label is None:
                raise ConfigError("this discriminator is class-conditioned: pass a label")
            logit = logit + (self.embed(label).to(h.dtype) * h.sum(dim=(2, 3))).sum(1)  # projection term
        return logit


class LesionDCGAN(Method):
    """``lesion-dcgan``: networks ``generator`` and ``discriminator``."""

    name = "lesion-dcgan"
    Config = LesionDCGANConfig
    ema_networks = ("generator",)

    cfg: LesionDCGANConfig

    @property
    def vocab(self) -> tuple[str, ...]:
        """The condition's class names: as the run recorded them, else the current vocabulary."""
        if self.cfg.condition == "none":
            return ()
        return tuple(self.data_info.get("condition_vocab") or VOCABS[self.cfg.condition])

    @property
    def n_classes(self) -> int:
        return len(self.vocab)

    def _types(self) -> tuple[str, ...] | None:
        return None if self.cfg.lesion_types == "all" else (self.cfg.lesion_types,)

    def build(self) -> None:
        c = self.cfg
        self.nets["generator"] = DCGANGenerator(c.patch_size, c.nz, c.g_channels, c.max_channels, self.n_classes, c.embed_dim,
                                                c.upsampling)
        disc = DCGANDiscriminator(c.patch_size, c.d_channels, c.max_channels, self.n_classes)
        self.nets["discriminator"] = spectral_normalize(disc) if c.d_reg == "spectral" else disc

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.cfg
        return {"G": torch.optim.Adam(self.nets["generator"].parameters(), lr=c.lr, betas=(c.beta1, c.beta2)),
                "D": torch.optim.Adam(self.nets["discriminator"].parameters(), lr=c.lr, betas=(c.beta1, c.beta2))}

    def data_info_from_store(self, store_path: str) -> dict[str, Any]:
        """Adds the known-label class frequencies, so unconditioned requests draw classes as the data does."""
        from mammosynth.data.store import Store

        info = super().data_info_from_store(store_path)
        info["store_path"] = str(Path(store_path).resolve())
        with Store(store_path) as s:
            idx = s.split_indices("lesions", "train")
            types = np.asarray(s.lesion_types("train"))
            keep = np.ones(len(idx), bool) if self._types() is None else np.isin(types, self._types())
            if self._types() is not None and not keep.any():
                raise DataError(f"{store_path}: no {self.cfg.lesion_types} lesions in the train split (it has "
                                f"{', '.join(sorted(set(types))) or 'none'}); set lesion_types to all or another type")
            if self.cfg.condition != "none":
                labels = s.label_codes(self.cfg.condition)[idx][keep]
                vocab = VOCABS[self.cfg.condition]
                counts = np.bincount(labels[labels >= 0], minlength=len(vocab))
                if not counts.sum():  # every lesion would be "unknown": the condition could learn nothing
                    kind = "" if self._types() is None else f"{self.cfg.lesion_types} "
                    raise DataError(f"{store_path}: no {kind}lesion of the train split has a known "
                                    f"{self.cfg.condition}; condition on a label the data has (calcifications: morphology, "
                                    f"distribution) or set condition=none")
                info["class_counts"] = [int(v) for v in counts]
                info["condition_vocab"] = list(vocab)
        return info

    def make_dataset(self, store_path: str, split: str = "train") -> torch.utils.data.Dataset:
        from mammosynth.data.dataset import LesionDataset

        return LesionDataset(store_path, split=split, augment=self.cfg.augment and split == "train", size=self.cfg.patch_size,
                             lesion_types=self._types())

    def _class_of(self, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor | None:
        if not self.n_classes:
            return None
        y = batch[self.cfg.condition].to(device)
        return torch.where(y < 0, torch.full_like(y, self.n_classes), y)  # -1 -> the "unknown" class

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor | float]:
        G, D = ctx.nets["generator"], ctx.nets["discriminator"]
        real = batch["image"].to(ctx.device, non_blocking=True)
        y = self._class_of(batch, ctx.device)
        gen = ctx.generator()
        z = torch.randn(real.shape[0], self.cfg.nz, device=ctx.device, generator=gen)

        def aug(x: torch.Tensor) -> torch.Tensor:  # DiffAugment: reals and fakes alike, differentiably
            return diff_augment(x, self.cfg.diffaug, generator=gen) if self.cfg.diffaug else x

        out: dict[str, torch.Tensor | float] = {}
        with ctx.autocast():
            fake = G(z, y)
            real_in = aug(real)
            loss_d = d_loss_bce(D(real_in, y), D(aug(fake.detach()), y))
        if self.cfg.d_reg == "r1" and self.cfg.r1_gamma > 0:
            r1 = r1_penalty(D, real_in, y)
            loss_d = loss_d + 0.5 * self.cfg.r1_gamma * r1
            out["r1"] = r1.detach()
        ctx.backward_step(loss_d, "D")
        with requires_grad(D, False):
            with ctx.autocast():
                loss_g = g_loss_bce(D(aug(fake), y))
            ctx.backward_step(loss_g, "G")
        out.update({"loss_d": loss_d.detach(), "loss_g": loss_g.detach()})
        return out

    def _labels_for(self, n: int, rng: np.random.Generator, requested: str | None) -> np.ndarray | None:
        if not self.n_classes:
            return None
        vocab = self.vocab
        if requested is not None:
            return np.full(n, vocab.index(parse_term(requested, vocab, self.cfg.condition.replace("_", " "))), np.int64)
        counts = np.asarray(self.data_info.get("class_counts") or [1] * self.n_classes, np.float64)
        if counts.sum() <= 0:
            counts = np.ones(self.n_classes)
        return rng.choice(self.n_classes, n, p=counts / counts.sum()).astype(np.int64)

    @torch.no_grad()
    def sample_grid(self, nets: dict[str, nn.Module], n: int, seed: int) -> torch.Tensor | None:
        G = nets["generator"]
        dev = next(G.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.cfg.nz, generator=gen).to(dev)
        y = self._labels_for(n, np.random.default_rng(seed), None)
        was = G.training
        G.eval()
        try:
            return G(z, None if y is None else torch.from_numpy(y).to(dev)).float()
        finally:
            G.train(was)

    def generate(self, n: int, seed: int, shape: str | None = None, margin: str | None = None,
                 pathology: str | None = None, batch_size: int = 64, morphology: str | None = None,
                 distribution: str | None = None, lesion_type: str | None = None, **_: Any) -> Iterator["Sample"]:
        """``n`` patches (S,S) in [0,1] from z ~ N(0, I) seeded by ``seed`` (sample i uses the
        i-th draw, so the same seed gives the same images whatever the batch size). A
        conditioned model takes its class from the matching option (or draws it with the
        training frequencies) and records it; a label for an unconditioned attribute is refused."""
        from mammosynth.synth.sample import Sample

        requested = {"shape": shape, "margin": margin, "pathology": pathology, "morphology": morphology,
                     "distribution": distribution, "lesion_type": lesion_type}
        for key, val in requested.items():
            if val is not None and key != self.cfg.condition:
                raise ConfigError(f"this lesion-dcgan run is conditioned on {self.cfg.condition!r}; it cannot control {key}")
        G = self.nets["generator"]
        G.eval()
        dev = next(G.parameters()).device
        dtype = next(G.parameters()).dtype
        gen = torch.Generator().manual_seed(int(seed))
        z_all = torch.randn(n, self.cfg.nz, generator=gen)
        labels = self._labels_for(n, np.random.default_rng(seed), requested.get(self.cfg.condition))
        for i in range(0, n, batch_size):
            z = z_all[i:i + batch_size].to(dev, dtype)
            y = None if labels is None else torch.from_numpy(labels[i:i + batch_size]).to(dev)
            with torch.no_grad():
                imgs = ((G(z, y).float().cpu()[:, 0] + 1.0) / 2.0).clamp(0, 1).numpy()
            for k, img in enumerate(imgs):
                extra: dict[str, Any] = {"index": i + k, "condition": self.cfg.condition}
                lab = {}
                if labels is not None:
                    term = self.vocab[int(labels[i + k])]
                    extra["label"] = term  # the conditioning class, whatever the attribute
                    lab[self.cfg.condition] = term
                    if self.cfg.condition not in ("shape", "margin", "pathology"):  # no manifest column of its own
                        extra[self.cfg.condition] = term
                if self.cfg.lesion_types != "all":
                    extra["lesion_types"] = self.cfg.lesion_types
                    lab.setdefault("lesion_type", self.cfg.lesion_types)
                yield Sample(image=img.astype(np.float32), seed=int(seed), extra=extra, **lab)
