"""BI-RADS shape/margin classifier on lesion patches (``classifier``), the judge of label fidelity.

A small VGG-style CNN (four stages of two 3x3 conv-BN-ReLU and a 2x2 max-pool, global
average pooling, dropout) with two linear heads: shape (4 classes) and margin (5 classes).
Trained on the store's real lesions with cross-entropy per head; a label missing in the
data (-1) is masked out of its head's loss (:func:`mammosynth.losses.masked_cross_entropy`),
so a lesion with only a margin still teaches the margin head. Evaluated on the test split
(:meth:`BiradsClassifier.evaluate_store`); used by :mod:`mammosynth.evaluate.label_fidelity`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammosynth.data.birads import MARGINS, SHAPES
from mammosynth.errors import ConfigError
from mammosynth.losses import masked_cross_entropy
from mammosynth.train.method import Method, StepContext, TrainConfig


@dataclass
class ClassifierConfig(TrainConfig):
    patch_size: int = 0  # 0 = the store's patch size
    width: int = 32  # channels of the first stage, doubled per stage
    n_stages: int = 4
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    steps: int = 2000
    crop_scale: tuple[float, float] = (0.85, 1.0)
    ema_decay: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.patch_size and self.patch_size < 2 ** self.n_stages:
            raise ConfigError(f"patch_size {self.patch_size} is too small for {self.n_stages} pooling stages")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


class BiradsCNN(nn.Module):
    """(B, 1, S, S) in [-1, 1] -> (shape logits (B, 4), margin logits (B, 5))."""

    def __init__(self, width: int = 32, n_stages: int = 4, dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i in range(n_stages):
            cout = width * 2 ** i
            for _ in range(2):
                layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.shape_head = nn.Linear(cin, len(SHAPES))
        self.margin_head = nn.Linear(cin, len(MARGINS))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dropout(self.features(image).mean(dim=(2, 3)))
        return self.shape_head(h), self.margin_head(h)


class BiradsClassifier(Method):
    """``classifier``: network ``classifier`` (:class:`BiradsCNN`)."""

    name = "classifier"
    Config = ClassifierConfig
    ema_networks = ()

    cfg: ClassifierConfig

    @property
    def patch_size(self) -> int:
        return int(self.cfg.patch_size or self.data_info.get("patch_size") or 64)

    def build(self) -> None:
        self.nets["classifier"] = BiradsCNN(self.cfg.width, self.cfg.n_stages, self.cfg.dropout)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"C": torch.optim.AdamW(self.nets["classifier"].parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)}

    def data_info_from_store(self, store_path: str) -> dict[str, Any]:
        info = super().data_info_from_store(store_path)
        info["store_path"] = str(Path(store_path).resolve())  # default real set for label fidelity
        return info

    def make_dataset(self, store_path: str, split: str = "train") -> torch.utils.data.Dataset:
        from mammosynth.data.dataset import LesionDataset

        return LesionDataset(store_path, split=split, augment=split == "train", crop_scale=tuple(self.cfg.crop_scale),
                             size=self.patch_size)

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor | float]:
        net = ctx.nets["classifier"]
        image = batch["image"].to(ctx.device, non_blocking=True)
        shape, margin = batch["shape"].to(ctx.device), batch["margin"].to(ctx.device)
        with ctx.autocast():
            shape_logits, margin_logits = net(image)
            loss_shape = masked_cross_entropy(shape_logits.float(), shape)
            loss_margin = masked_cross_entropy(margin_logits.float(), margin)
            loss = loss_shape + loss_margin
        ctx.backward_step(loss, "C")
        with torch.no_grad():
            acc = {}
            for key, logits, y in (("acc_shape", shape_logits, shape), ("acc_margin", margin_logits, margin)):
                known = y >= 0
                acc[key] = float((logits.argmax(1)[known] == y[known]).float().mean()) if bool(known.any()) else float("nan")
        return {"loss": loss.detach(), "loss_shape": loss_shape.detach(), "loss_margin": loss_margin.detach(), **acc}

    # -- inference ------------------------------------------------------------------
    @torch.no_grad()
    def predict_logits(self, images: torch.Tensor, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,1,H,W) in [-1,1] (resized to the classifier's patch size) -> shape (N,4), margin (N,5) logits."""
        net = self.nets["classifier"]
        net.eval()
        dev = next(net.parameters()).device
        dtype = next(net.parameters()).dtype
        S = self.patch_size
        outs_s, outs_m = [], []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(dev, dtype)
            if x.shape[-1] != S or x.shape[-2] != S:
                x = F.interpolate(x, size=(S, S), mode="bilinear", antialias=True, align_corners=False)
            s, m = net(x)
            outs_s.append(s.float().cpu())
            outs_m.append(m.float().cpu())
        if not outs_s:
            return torch.zeros(0, len(SHAPES)), torch.zeros(0, len(MARGINS))
        return torch.cat(outs_s), torch.cat(outs_m)

    def predict_labels(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N,1,H,W) in [-1,1] -> predicted (shape index (N,), margin index (N,)) int64."""
        s, m = self.predict_logits(images)
        return s.argmax(1).numpy(), m.argmax(1).numpy()

    def evaluate_store(self, store_path: str | None = None, split: str = "test") -> dict[str, Any]:
        """Accuracy on a store split (known labels only), overall and per true class."""
        from mammosynth.data.store import read_lesion_split

        path = store_path or self.data_info.get("store_path")
        if not path:
            raise ConfigError("no store to evaluate on: pass store_path")
        les = read_lesion_split(path, split, "evaluate on")
        images = torch.from_numpy(les.patch).unsqueeze(1) * 2.0 - 1.0
        ps, pm = self.predict_labels(images)
        return {"store": str(path), "split": split, "n": int(len(les.index)),
                "shape": per_class_accuracy(ps, les.shape, SHAPES), "margin": per_class_accuracy(pm, les.margin, MARGINS)}


def per_class_accuracy(pred: np.ndarray, true: np.ndarray, vocab: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy over known labels and per true class (recall): {"accuracy", "n", "per_class": {term: {...}}}."""
    pred, true = np.asarray(pred), np.asarray(true)
    known = true >= 0
    out: dict[str, Any] = {"n": int(known.sum()),
                           "accuracy": float((pred[known] == true[known]).mean()) if known.any() else None,
                           "per_class": {}}
    for i, term in enumerate(vocab):
        sel = true == i
        out["per_class"][term] = {"n": int(sel.sum()), "accuracy": float((pred[sel] == i).mean()) if sel.any() else None}
    return out
