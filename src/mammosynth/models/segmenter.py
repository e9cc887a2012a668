"""Lesion segmenter (registry name ``segmenter``): a U-Net (Ronneberger et al. 2015) trained on
real lesion patches, with optional lesion-free tiles cut from normal mammograms.

It serves two evaluations (issue #6): **mask fidelity** — the Dice between the mask a
synthetic lesion was asked to fill and the lesion the segmenter finds in the synthetic
image — and the **segmentation-based detector** of the downstream experiment (U-Net ->
connected components -> boxes scored by mean probability, the usual mammography-CAD design;
see ``evaluate/downstream.py``).

Loss: binary cross-entropy on logits + soft Dice (Milletari et al. 2016), equally weighted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from mammosynth.data.dataset import LesionDataset, NormalDataset
from mammosynth.errors import ConfigError
from mammosynth.train.method import Method, StepContext, TrainConfig


@dataclass
class SegmenterConfig(TrainConfig):
    width: int = 16  # channels at the first level; doubles per level
    depth: int = 4  # number of 2x poolings
    lr: float = 1e-3
    dice_weight: float = 1.0
    negatives_per_lesion: float = 0.0  # lesion-free tiles from normals per lesion patch (detector training)
    negatives_from: str = ""  # store file whose normals give those tiles ("" = the training store)
    steps: int = 600
    batch_size: int = 16
    ema_decay: float = 0.0
    sample_every: int = 0

    def validate(self) -> None:
        super().validate()
        if self.depth < 1 or self.width < 1:
            raise ConfigError("segmenter: depth and width must be >= 1")
        if self.negatives_per_lesion < 0:
            raise ConfigError("segmenter: negatives_per_lesion must be >= 0")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Ronneberger U-Net with same-padded 3x3 convs and BatchNorm.

    forward: (B, 1, H, W) in [-1, 1], H and W divisible by 2**depth -> (B, 1, H, W) logits.
    """

    def __init__(self, width: int = 16, depth: int = 4, in_ch: int = 1, out_ch: int = 1) -> None:
        super().__init__()
        widths = [width * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_ch, widths[0])] + [_block(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))])
        self.dec = nn.ModuleList([_block(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.out = nn.Conv2d(widths[0], out_ch, 1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 ** self.depth or x.shape[-2] % 2 ** self.depth:
            raise ValueError(f"U-Net input sides must be divisible by {2 ** self.depth}, got {tuple(x.shape[-2:])}")
        skips = []
        h = x
        for i, blk in enumerate(self.down):
            h = blk(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            h = dec(torch.cat([up(h), skip], dim=1))
        return self.out(h)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged; an image with an empty target scores by its false positives."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def dice_coefficient(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


class NormalTiles(NormalDataset):
    """Lesion-free square tiles (side S) centred on random breast pixels of normal mammograms;
    returned in LesionDataset's format (image (1,S,S) in [-1,1], empty mask).

    Breast pixels are indexed once (every 4th pixel of each breast mask), then each item reads
    only its tile's rows from the HDF5 file, not the whole mammogram (~100x less decoding).
    """

    _STRIDE = 4

    def __init__(self, store_path: str, split: str | None, size: int, count: int, seed: int = 0) -> None:
        super().__init__(store_path, split=split)
        if len(self.indices) == 0:
            raise ConfigError(f"{store_path}: no normal mammograms in split {split!r} to cut negative tiles from")
        self.size, self.count, self.seed = size, count, seed
        g = self._file()["normals"]
        self.centres = []
        for j in self.indices:
            ys, xs = np.nonzero(g["breast_mask"][int(j), ::self._STRIDE, ::self._STRIDE])
            if len(ys) == 0:
                raise ConfigError(f"{store_path}: normal mammogram {int(j)} has an empty breast mask")
            self.centres.append(np.stack([ys, xs], 1).astype(np.int32) * self._STRIDE)
        self.hw = tuple(g["image"].shape[1:])

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i])
        k = int(rng.integers(len(self.indices)))
        cy, cx = self.centres[k][int(rng.integers(len(self.centres[k])))]
        H, W = self.hw
        y0 = int(np.clip(cy - self.size // 2, 0, max(H - self.size, 0)))
        x0 = int(np.clip(cx - self.size // 2, 0, max(W - self.size, 0)))
        raw = self._file()["normals"]["image"][int(self.indices[k]), y0:y0 + self.size, x0:x0 + self.size]
        tile = torch.from_numpy(raw.astype(np.float32) / 65535.0)[None] * 2 - 1
        if tile.shape[-1] != self.size or tile.shape[-2] != self.size:
            tile = F.pad(tile, (0, self.size - tile.shape[-1], 0, self.size - tile.shape[-2]), value=-1.0)
        return {"image": tile, "mask": torch.zeros_like(tile), "shape": torch.tensor(-1), "margin": torch.tensor(-1),
                "pathology": torch.tensor(-1), "morphology": torch.tensor(-1), "distribution": torch.tensor(-1),
                "lesion_type": torch.tensor(-1), "index": torch.tensor(-1)}


def tile_from_normal(image: torch.Tensor, breast: torch.Tensor, size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A (1,size,size) tile whose centre lies inside the breast (image in [-1,1])."""
    H, W = image.shape[-2:]
    ys, xs = np.nonzero(breast[0].numpy() > 0.5)
    for _ in range(20):
        k = int(rng.integers(len(ys)))
        y0 = int(np.clip(ys[k] - size // 2, 0, max(H - size, 0)))
        x0 = int(np.clip(xs[k] - size // 2, 0, max(W - size, 0)))
        if breast[0, y0 + min(size, H) // 2, x0 + min(size, W) // 2] > 0.5:
            break
    tile = image[:, y0:y0 + size, x0:x0 + size]
    if tile.shape[-1] != size or tile.shape[-2] != size:
        tile = F.pad(tile, (0, size - tile.shape[-1], 0, size - tile.shape[-2]), value=-1.0)
    return {"image": tile, "mask": torch.zeros_like(tile), "shape": torch.tensor(-1), "margin": torch.tensor(-1),
            "pathology": torch.tensor(-1), "morphology": torch.tensor(-1), "distribution": torch.tensor(-1),
            "lesion_type": torch.tensor(-1), "index": torch.tensor(-1)}


class Segmenter(Method):
    name = "segmenter"
    Config = SegmenterConfig
    version = 1

    def build(self) -> None:
        cfg: SegmenterConfig = self.cfg  # type: ignore[assignment]
        S = int(self.data_info.get("patch_size", 64))
        if S % 2 ** cfg.depth:
            raise ConfigError(f"segmenter: patch size {S} must be divisible by 2**depth = {2 ** cfg.depth}")
        self.nets["unet"] = UNet(cfg.width, cfg.depth)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": torch.optim.Adam(self.nets["unet"].parameters(), lr=self.cfg.lr)}  # type: ignore[attr-defined]

    def make_dataset(self, store_path: str, split: str = "train") -> Dataset:
        cfg: SegmenterConfig = self.cfg  # type: ignore[assignment]
        lesions = LesionDataset(store_path, split=split, augment=True)
        n_neg = int(round(cfg.negatives_per_lesion * len(lesions)))
        if n_neg == 0:
            return lesions
        source = cfg.negatives_from or store_path
        return ConcatDataset([lesions, NormalTiles(source, split, lesions.patch_size, n_neg, seed=cfg.seed)])

    def train_step(self, batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        unet = ctx.nets["unet"]
        x, m = batch["image"].to(ctx.device), batch["mask"].to(ctx.device)
        with ctx.autocast():
            logits = unet(x)
        logits = logits.float()
        bce = F.binary_cross_entropy_with_logits(logits, m)
        dice = soft_dice_loss(logits, m)
        loss = bce + self.cfg.dice_weight * dice  # type: ignore[attr-defined]
        ctx.backward_step(loss, "opt")
        return {"loss": loss.detach(), "loss_bce": bce.detach(), "loss_dice": dice.detach()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(B,1,H,W) in [-1,1] -> lesion probability (B,1,H,W) in [0,1]."""
        unet = self.nets["unet"].eval()
        dev = next(unet.parameters()).device
        outs = [torch.sigmoid(unet(images[i:i + batch_size].to(dev)).float()).cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(outs) if outs else images.new_zeros(images.shape)

    def sample_grid(self, nets, n: int, seed: int):
        return None
