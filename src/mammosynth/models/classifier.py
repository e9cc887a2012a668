"""BI-RADS shape/margin classifier on lesion patches (``classifier``), the judge of label fidelity.

A small VGG-style CNN (four stages of two 3x3 conv-BN-ReLU and a 2x2 max-pool, global
average pooling, dropout) with linear heads: shape (4 classes) and margin (5 classes) for
masses, BI-RADS morphology and distribution for calcification clusters. A run saved before the
calcification heads existed (its config.json's ``train_labels`` has no morphology) is rebuilt
with shape and margin only, so its weights load; it reports those heads as untrained.
Trained on the store's real lesions with cross-entropy per head; a label missing in the
data (-1) is masked out of its head's loss (:func:`mammosynth.losses.masked_cross_entropy`),
so a lesion with only a margin still teaches the margin head. Evaluated on the test split
(:meth:`BiradsClassifier.evaluate_store`); used by :mod:`mammosynth.evaluate.label_fidelity`.

Margin-only (or shape-only) data, such as mini-MIAS, INbreast or VinDr: a head whose label
no lesion of the training split carries is not trained (left out of the optimizer and
frozen), the run says so (a warning, and ``untrained_heads`` in config.json's ``data``), its
accuracy is logged as absent (null) and :meth:`BiradsClassifier.predict_labels` answers -1
("cannot say") for it instead of a random head's guess.

``train_split`` (default train) chooses the store split the judge learns from. The label-
fidelity protocol (docs/evaluate.md) trains the judge on ``val`` (``--set train_split=val``)
so that it never sees the generator's seeds or training lesions, which come from ``train``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammosynth.data.birads import DISTRIBUTIONS, MARGINS, MORPHOLOGIES, SHAPES
from mammosynth.errors import ConfigError, DataError
from mammosynth.losses import masked_cross_entropy
from mammosynth.train.method import Method, StepContext, TrainConfig

log = logging.getLogger(__name__)

#: The heads: (name = label column, vocabulary). Shape and margin judge masses; BI-RADS
#: morphology and distribution judge calcifications.
HEADS: tuple[tuple[str, tuple[str, ...]], ...] = (("shape", SHAPES), ("margin", MARGINS),
                                                  ("morphology", MORPHOLOGIES), ("distribution", DISTRIBUTIONS))
MASS_HEADS: tuple[str, ...] = ("shape", "margin")
CALC_HEADS: tuple[str, ...] = ("morphology", "distribution")
_VOCAB = dict(HEADS)
#: Why a classifier run saved before the calcification heads cannot judge calcifications.
PREDATES_CALC_HEADS = ("this classifier run predates the calcification heads (its weights hold only shape and margin); "
                       "retrain it with `mammosynth train classifier` on a store with calcification labels to judge "
                       "calcification morphology/distribution")

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
    train_split: Literal["train", "val", "test"] = "train"  # the store split the judge learns from

    def validate(self) -> None:
        super().validate()
        if self.patch_size and self.patch_size < 2 ** self.n_stages:
            raise ConfigError(f"patch_size {self.patch_size} is too small for {self.n_stages} pooling stages")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


class BiradsCNN(nn.Module):
    """(B, 1, S, S) in [-1, 1] -> (shape logits (B, 4), margin logits (B, 5)); with the
    calcification heads (``heads`` includes them, the default) :meth:`forward_heads` also
    gives morphology (B, 9) and distribution (B, 5) logits."""

    def __init__(self, width: int = 32, n_stages: int = 4, dropout: float = 0.3,
                 heads: tuple[str, ...] = tuple(h for h, _ in HEADS)) -> None:
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
        self.heads = tuple(h for h, _ in HEADS if h in heads or h in MASS_HEADS)
        for head in self.heads:
            setattr(self, f"{head}_head", nn.Linear(cin, len(_VOCAB[head])))

    def forward_heads(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """{head: logits} for every head this network has."""
        h = self.dropout(self.features(image).mean(dim=(2, 3)))
        return {head: getattr(self, f"{head}_head")(h) for head in self.heads}

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.forward_heads(image)
        return out["shape"], out["margin"]


class BiradsClassifier(Method):
    """``classifier``: network ``classifier`` (:class:`BiradsCNN`)."""

    name = "classifier"
    Config = ClassifierConfig
    ema_networks = ()

    cfg: ClassifierConfig

    @property
    def patch_size(self) -> int:
        return int(self.cfg.patch_size or self.data_info.get("patch_size") or 64)

    @property
    def head_names(self) -> tuple[str, ...]:
        """The heads this classifier's network has: all of :data:`HEADS`, except for a run saved
        before the calcification heads (its ``data`` names ``train_labels`` without them)."""
        labels = self.data_info.get("train_labels")
        if isinstance(labels, dict) and not any(h in labels for h in CALC_HEADS):
            return MASS_HEADS
        return tuple(h for h, _ in HEADS)

    def build(self) -> None:
        self.nets["classifier"] = BiradsCNN(self.cfg.width, self.cfg.n_stages, self.cfg.dropout, heads=self.head_names)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        net = self.nets["classifier"]
        for head in self.untrained_heads:  # frozen and out of the optimizer: AdamW's decay would still move it
            if hasattr(net, f"{head}_head"):
                getattr(net, f"{head}_head").requires_grad_(False)
        params = [p for p in net.parameters() if p.requires_grad]
        return {"C": torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)}

    @property
    def untrained_heads(self) -> dict[str, str]:
        """{head: why it was not trained} for heads whose label the training split never has
        (and, for a run saved before the calcification heads, those heads: it has none)."""
        out = dict(self.data_info.get("untrained_heads") or {})
        for head, _ in HEADS:
            if head not in self.head_names:
                out[head] = PREDATES_CALC_HEADS
        return out

    def data_info_from_store(self, store_path: str) -> dict[str, Any]:
        """Store facts + the training split, its known-label counts and the heads left untrained."""
        from mammosynth.data.store import Store

        info = super().data_info_from_store(store_path)
        info["store_path"] = str(Path(store_path).resolve())  # default real set for label fidelity
        split = self.cfg.train_split
        with Store(store_path) as s:
            les = s.lesions(split=split)
        labels = {"n": int(len(les.index)), **{head: int((_column(les, head) >= 0).sum()) for head, _ in HEADS},
                  "n_calcification": int(sum(t == "calcification" for t in (les.lesion_type or [])))}
        info["train_split"] = split
        info["train_labels"] = labels
        info["untrained_heads"] = {
            head: f"no lesion of split {split!r} of {store_path} has a {head} label ({labels['n']} lesions)"
            for head, _ in HEADS if labels[head] == 0}
        if len(info["untrained_heads"]) == len(HEADS):
            raise DataError(f"{store_path}: no lesion of split {split!r} has a shape, margin, morphology or distribution label; "
                            "the classifier has nothing to learn (choose another train_split)")
        for head, why in info["untrained_heads"].items():
            # a store without calcifications has no morphology/distribution by nature: no warning
            (log.info if head in CALC_HEADS and labels["n_calcification"] == 0 else log.warning)("classifier: the %s head is NOT trained: %s; its accuracy is logged as absent and "
                        "label fidelity reports no %s numbers for this judge", head, why, head)
        return info

    def make_dataset(self, store_path: str, split: str = "train") -> torch.utils.data.Dataset:
        """The trainer asks for "train": the judge learns from ``cfg.train_split``."""
        from mammosynth.data.dataset import LesionDataset

        training = split == "train"
        return LesionDataset(store_path, split=self.cfg.train_split if training else split, augment=training,
                             crop_scale=tuple(self.cfg.crop_scale), size=self.patch_size)

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor | float | None]:
        net = ctx.nets["classifier"]
        image = batch["image"].to(ctx.device, non_blocking=True)
        heads = self.head_names
        targets = {h: batch[h].to(ctx.device) for h in heads}
        untrained = self.untrained_heads
        with ctx.autocast():
            logits = net.forward_heads(image)
            losses = {f"loss_{h}": masked_cross_entropy(logits[h].float(), targets[h]) for h in heads if h not in untrained}
            loss = sum(losses.values())
        ctx.backward_step(loss, "C")
        out: dict[str, torch.Tensor | float | None] = {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}
        with torch.no_grad():
            for head in heads:
                y = targets[head]
                known = y >= 0
                # a batch without a known label of this head (or an untrained head) measures nothing: absent
                out[f"acc_{head}"] = (float((logits[head].argmax(1)[known] == y[known]).float().mean())
                                      if head not in untrained and bool(known.any()) else None)
        return out

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

    @torch.no_grad()
    def predict_head_logits(self, images: torch.Tensor, batch_size: int = 128) -> dict[str, torch.Tensor]:
        """(N,1,H,W) in [-1,1] -> {head: (N, classes) logits} for every head the network has."""
        net = self.nets["classifier"]
        net.eval()
        dev = next(net.parameters()).device
        dtype = next(net.parameters()).dtype
        S = self.patch_size
        outs: dict[str, list[torch.Tensor]] = {h: [] for h in net.heads}
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(dev, dtype)
            if x.shape[-1] != S or x.shape[-2] != S:
                x = F.interpolate(x, size=(S, S), mode="bilinear", antialias=True, align_corners=False)
            for h, v in net.forward_heads(x).items():
                outs[h].append(v.float().cpu())
        return {h: torch.cat(v) if v else torch.zeros(0, len(_VOCAB[h])) for h, v in outs.items()}

    def predict_head_labels(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """(N,1,H,W) in [-1,1] -> {head: predicted index (N,) int64} for every head of
        :data:`HEADS`; -1 throughout for an untrained or absent head (:attr:`untrained_heads`)."""
        logits = self.predict_head_logits(images)
        pred = {h: v.argmax(1).numpy().astype(np.int64) for h, v in logits.items()}
        for head in self.untrained_heads:
            pred[head] = np.full(len(images), -1, np.int64)
        return pred

    def predict_labels(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N,1,H,W) in [-1,1] -> predicted (shape index (N,), margin index (N,)) int64; -1
        throughout for an untrained head (:attr:`untrained_heads`): it cannot say."""
        pred = self.predict_head_labels(images)
        return pred["shape"], pred["margin"]

    def evaluate_store(self, store_path: str | None = None, split: str = "test") -> dict[str, Any]:
        """Accuracy on a store split (known labels only), overall and per true class."""
        from mammosynth.data.store import read_lesion_split

        path = store_path or self.data_info.get("store_path")
        if not path:
            raise ConfigError("no store to evaluate on: pass store_path")
        les = read_lesion_split(path, split, "evaluate on")
        images = torch.from_numpy(les.patch).unsqueeze(1) * 2.0 - 1.0
        pred = self.predict_head_labels(images)
        out = {"store": str(path), "split": split, "n": int(len(les.index)),
               **{head: per_class_accuracy(pred[head], _column(les, head), vocab) for head, vocab in HEADS}}
        for head, vocab in HEADS:
            if head in self.untrained_heads:  # no numbers from a head that never learned
                out[head] = {"n": out[head]["n"], "accuracy": None, "per_class": {t: {"n": v["n"], "accuracy": None}
                             for t, v in out[head]["per_class"].items()}, "untrained": self.untrained_heads[head]}
        return out


def _column(les: Any, head: str) -> np.ndarray:
    """A head's true labels (-1 unknown) from LesionArrays (morphology/distribution -1 when absent)."""
    col = getattr(les, head, None)
    return np.full(len(les.index), -1, np.int64) if col is None else np.asarray(col, np.int64)


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
