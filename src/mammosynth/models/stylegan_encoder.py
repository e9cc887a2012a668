"""In-domain encoder for a trained StyleGAN (seed 004 "Method"; Zhu et al. 2020, In-domain GAN
inversion), phase 2 of seed 004 Fig. 2.

Encoder E: one initial convolution, 8 residual blocks (two 3x3 convs each, batch norm
everywhere, stride 2 in as many blocks as it takes to reach a 4-pixel shorter side), one dense
layer predicting W+ codes (``n_ws`` x ``w_dim``; ``w_plus: false`` predicts one w shared by all
layers). The dense output is added to the generator's mean w so training starts on the
generator's manifold (a constant offset; does not change the objective).

Training against the FROZEN generator G of a stylegan run (``generator_run``), on real images:

* eq. 2 (E): ``||x - G(E(x))||^2 + lambda1 ||F(x) - F(G(E(x)))||^2 - lambda2 log D(G(E(x)))``
  with lambda1 = 5e-5, lambda2 = 0.1; F = VGG16 conv4_3;
* eq. 3 (D): ``-log D(x) - log(1 - D(G(E(x)))) + gamma/2 ||grad_x D(x)||^2``, gamma = 10
  (R1 every step), D initialised from the stylegan run's discriminator.

Squared norms are means over elements (as in the In-domain GAN inversion code). Feature
scale: lambda1 = 5e-5 was chosen for a VGG fed 0..255 caffe-style input; our VGG takes
ImageNet-normalised input (features about 255 * 0.226 times smaller), so the feature distance
is multiplied by ``(255 * 0.226)^2`` to keep the paper's balance (``VGG_CAFFE_SCALE``).

Perceptual network: ``perceptual: auto`` uses the local VGG16 weights (`mammosynth weights get`);
when they are absent it falls back to the block features of a frozen copy of the stylegan
run's discriminator (``discriminator``), never a random VGG, and says so as loudly as infill
does: a boxed warning, ``perceptual`` in config.json's ``data`` and in the checkpoint state,
and ``perceptual_fallback`` = 1 in every metrics line. ``none`` drops the term.
Adam, lr 1e-4, betas (0.9, 0.99) (seed 004 implementation details).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mammosynth.errors import CheckpointError, ConfigError, WeightsError
from mammosynth.losses import d_loss_bce, r1_penalty
from mammosynth.models.stylegan import StyleGAN, StyleGANConfig, StyleGenerator
from mammosynth.train.method import Method, StepContext, TrainConfig, requires_grad

if TYPE_CHECKING:
    from mammosynth.synth.sample import Sample


log = logging.getLogger(__name__)

#: What config.json, the checkpoint state and the warning call the D-feature fallback.
PERCEPTUAL_FALLBACK_NOTE = "perceptual fallback"

#: (255 * ImageNet std)^2: rescales ImageNet-normalised VGG feature distances to the caffe
#: 0..255 input range that lambda1 = lambda3 = 5e-5 were tuned for (In-domain GAN inversion).
VGG_CAFFE_SCALE = (255.0 * 0.226) ** 2


@dataclass
class StyleGANEncoderConfig(TrainConfig):
    generator_run: str = ""  # run folder of a trained `stylegan` (required for training)
    w_plus: bool = True
    channels: int = 64  # first conv; doubles at each stride-2 block, capped at max_channels
    max_channels: int = 512
    n_blocks: int = 8
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    lambda_pixel: float = 1.0
    lambda_perceptual: float = 5e-5  # lambda1
    lambda_adv: float = 0.1  # lambda2
    r1_gamma: float = 10.0
    perceptual: Literal["auto", "vgg", "discriminator", "none"] = "auto"
    vgg_layer: str = "conv4_3"
    augment: bool = False
    ema_decay: float = 0.0  # the encoder has batch norm; it is used as trained

    def validate(self) -> None:
        super().validate()
        if self.n_blocks < 1:
            raise ConfigError(f"n_blocks must be >= 1, got {self.n_blocks}")


class ResidualBlock(nn.Module):
    """conv3-BN-lrelu-conv3-BN plus a (strided 1x1 + BN) shortcut, then lrelu."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2),
                                  nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.body(x) + self.skip(x), 0.2)


class InDomainEncoder(nn.Module):
    """(B,1,H,W) in [-1,1] -> W+ codes (B, n_ws, w_dim) (or (B, w_dim) when ``w_plus`` is off).

    A conv, ``n_blocks`` residual blocks, a dense layer, batch norm throughout (seed 004).
    """

    def __init__(self, size: tuple[int, int], n_ws: int, w_dim: int, w_plus: bool = True, channels: int = 64,
                 max_channels: int = 512, n_blocks: int = 8) -> None:
        super().__init__()
        H, W = size
        n_down = int(round(math.log2(min(H, W) / 4)))
        if n_down > n_blocks:
            raise ConfigError(f"{n_blocks} residual blocks cannot reduce {size} to 4 pixels (needs {n_down} stride-2 blocks)")
        down_at = {int(i * n_blocks / n_down) for i in range(n_down)} if n_down else set()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.LeakyReLU(0.2))
        blocks, c = [], channels
        for i in range(n_blocks):
            stride = 2 if i in down_at else 1
            c_out = min(max_channels, c * 2) if stride == 2 else c
            blocks.append(ResidualBlock(c, c_out, stride))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.n_ws, self.w_dim, self.w_plus = n_ws, w_dim, w_plus
        out = n_ws * w_dim if w_plus else w_dim
        self.dense = nn.Linear(c * (H >> n_down) * (W >> n_down), out)
        nn.init.zeros_(self.dense.bias)
        with torch.no_grad():
            self.dense.weight.mul_(0.1)  # start near the mean w
        self.register_buffer("w_offset", torch.zeros(w_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x)).flatten(1)
        w = self.dense(h)
        if self.w_plus:
            return w.view(-1, self.n_ws, self.w_dim) + self.w_offset
        return w + self.w_offset


def describe_perceptual(kind: str, layer: str = "conv4_3") -> str:
    """What ``perceptual`` will resolve to, from the weight cache alone (nothing is loaded)."""
    if kind == "none":
        return "none (perceptual term dropped: perceptual=none)"
    if kind == "discriminator":
        return f"{PERCEPTUAL_FALLBACK_NOTE}: the frozen discriminator's block features, chosen in the config"
    from mammosynth.nn.weights import weight_file

    try:
        weight_file("vgg16")
    except WeightsError as err:
        return f"{PERCEPTUAL_FALLBACK_NOTE}: the frozen discriminator's block features; reason: {err}"
    return f"VGG16 {layer} (ImageNet weights), as seed 004"


def make_feature_fn(kind: str, layer: str = "conv4_3", discriminator: nn.Module | None = None,
                    who: str = "stylegan-encoder") -> tuple[Callable[[torch.Tensor], list[torch.Tensor]] | None, str, float]:
    """The perceptual feature extractor F of eq. 2 / eq. 4: (fn, name, scale).

    ``auto``/``vgg``: local VGG16 ``layer`` (``vgg`` raises WeightsError when absent; ``auto``
    warns loudly and falls back). ``discriminator``: block features of the given frozen D.
    ``none``: (None, "none", 0). ``fn`` maps (B,1,H,W) in [-1,1] to a list of feature maps;
    distances are multiplied by ``scale``.
    """
    if kind == "none":
        return None, "none", 0.0
    if kind in ("auto", "vgg"):
        try:
            from mammosynth.nn.vgg import imagenet_input, load_vgg_features

            vgg = load_vgg_features("vgg16", (layer,))
        except (WeightsError, ImportError) as err:
            if kind == "vgg":
                raise
            log.warning("\n" + "!" * 78 + "\n!! %s: NO IMAGENET VGG-16 WEIGHTS (%s)\n"
                        "!! The perceptual term of eq. 2 / eq. 4 is NOT the paper's VGG %s in this run: it uses the\n"
                        "!! frozen discriminator's features. Run `mammosynth weights get` for the paper's loss.\n"
                        + "!" * 78, who, err, layer)
        else:
            def vgg_fn(x: torch.Tensor) -> list[torch.Tensor]:
                dev = x.device
                if next(vgg.parameters()).device != dev:
                    vgg.to(dev)
                return vgg(imagenet_input(x))

            return vgg_fn, f"vgg16:{layer}", VGG_CAFFE_SCALE
    if discriminator is None:
        raise ConfigError(f"{who}: perceptual={kind!r} needs a discriminator for the feature fallback")
    disc = discriminator

    def disc_fn(x: torch.Tensor) -> list[torch.Tensor]:
        feats = disc.features(x)
        return feats[len(feats) // 2: len(feats) // 2 + 1]  # a middle block: conv4_3-like receptive field

    return disc_fn, "discriminator", 1.0


def perceptual_distance(fn: Callable[[torch.Tensor], list[torch.Tensor]] | None, scale: float, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """scale * sum over layers of mean((F(x) - F(y))^2); 0 when ``fn`` is None. (B,1,H,W) inputs."""
    if fn is None:
        return x.new_zeros(())
    return scale * sum(F.mse_loss(a.float(), b.float()) for a, b in zip(fn(x), fn(y)))


def _load_generator_method(run: str) -> StyleGAN:
    from mammosynth.train.run import load_method

    if not run:
        raise ConfigError("stylegan-encoder needs generator_run: PATH (a run folder of `mammosynth train stylegan`)")
    if not Path(run).exists():
        raise ConfigError(f"generator_run {run}: folder not found")
    m = load_method(run, device="cpu", ema=True, expect="stylegan")
    if not isinstance(m, StyleGAN):
        raise CheckpointError(f"generator_run {run}: is a {getattr(m, 'name', type(m).__name__)!r} run, not a stylegan run")
    return m


class StyleGANEncoder(Method):
    """Nets: ``encoder`` (trained), ``discriminator`` (trained, from the stylegan run),
    ``generator`` (frozen copy of the stylegan run's EMA generator, saved so the run is
    self-contained), and ``feature_discriminator`` (frozen, only with the D-feature fallback)."""

    name = "stylegan-encoder"
    Config = StyleGANEncoderConfig
    ema_networks = ()

    cfg: StyleGANEncoderConfig

    def build(self) -> None:
        c = self.cfg
        ginfo = self.data_info.get("generator")
        self._generator_loaded = False
        if ginfo is None or (c.generator_run and Path(c.generator_run).exists()):
            gm = _load_generator_method(c.generator_run)
            ginfo = {"config": dataclasses.asdict(gm.cfg), "data_info": gm.data_info}
            self.data_info["generator"] = ginfo
            self._generator_loaded = True
        else:
            from mammosynth.config import from_dict

            gm = StyleGAN(from_dict(StyleGANConfig, ginfo["config"]), ginfo.get("data_info"))
        self.gcfg: StyleGANConfig = gm.cfg
        G: StyleGenerator = gm.nets["generator"]
        G.requires_grad_(False)
        G.eval()
        self.nets["generator"] = G
        self.nets["discriminator"] = gm.nets["discriminator"]
        size = (int(self.gcfg.size[0]), int(self.gcfg.size[1]))
        E = InDomainEncoder(size, G.n_ws, G.w_dim, c.w_plus, c.channels, c.max_channels, c.n_blocks)
        E.w_offset.copy_(G.mean_w())
        self.nets["encoder"] = E
        self._feature_fn = None
        self.perceptual_status = ""
        if c.perceptual in ("auto", "discriminator"):
            fd = copy.deepcopy(gm.nets["discriminator"]).requires_grad_(False).eval()
            self.nets["feature_discriminator"] = fd

    def feature_fn(self) -> tuple[Callable | None, str, float]:
        """F of eq. 2/4, created on first use (VGG when available); records what it is in
        ``data_info["perceptual"]`` and the checkpoint state."""
        if self._feature_fn is None:
            self._feature_fn = make_feature_fn(self.cfg.perceptual, self.cfg.vgg_layer, self.nets["feature_discriminator"]
                                               if "feature_discriminator" in self.nets else None)
            name = self._feature_fn[1]
            if name == "discriminator":
                why = "chosen in the config" if self.cfg.perceptual == "discriminator" else "no ImageNet VGG-16 weights"
                self.perceptual_status = f"{PERCEPTUAL_FALLBACK_NOTE}: the frozen discriminator's block features ({why})"
            else:
                self.perceptual_status = describe_perceptual(self.cfg.perceptual if name != "none" else "none", self.cfg.vgg_layer)
            self.data_info["perceptual"] = self.perceptual_status
        return self._feature_fn

    @property
    def perceptual_fallback(self) -> bool:
        """True when ``perceptual: auto`` had to fall back to discriminator features."""
        return self.cfg.perceptual == "auto" and self.feature_fn()[1] == "discriminator"

    def extra_state(self) -> dict[str, Any]:
        return {"perceptual": self.perceptual_status} if self.perceptual_status else {}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if not self._generator_loaded:
            raise ConfigError(f"generator_run {self.cfg.generator_run!r}: not found; the encoder trains against a trained stylegan run")
        c = self.cfg
        return {"E": torch.optim.Adam(self.nets["encoder"].parameters(), lr=c.lr, betas=tuple(c.betas)),
                "D": torch.optim.Adam(self.nets["discriminator"].parameters(), lr=c.lr, betas=tuple(c.betas))}

    def data_info_from_store(self, store_path: str) -> dict[str, Any]:
        """Store facts plus the generator run's config and data info (saved in config.json so
        the encoder run rebuilds its frozen generator without the generator run)."""
        from mammosynth.train.run import read_run_config, resolve_run

        info = super().data_info_from_store(store_path)
        info["store_path"] = str(store_path)
        if not self.cfg.generator_run:
            raise ConfigError("stylegan-encoder needs generator_run: PATH (a run folder of `mammosynth train stylegan`)")
        doc = read_run_config(resolve_run(self.cfg.generator_run, "stylegan"))
        if doc["method"] != "stylegan":
            raise CheckpointError(f"generator_run {self.cfg.generator_run}: is a {doc['method']!r} run, not a stylegan run")
        info["generator"] = {"config": doc["config"], "data_info": doc.get("data") or {}}
        # which perceptual network this run will use, so a run without VGG says so in its config
        info["perceptual"] = describe_perceptual(self.cfg.perceptual, self.cfg.vgg_layer)
        return info

    def make_dataset(self, store_path: str, split: str = "train") -> torch.utils.data.Dataset:
        gm = StyleGAN.__new__(StyleGAN)  # reuse the generator's data choice without building nets
        gm.cfg = dataclasses.replace(self.gcfg, augment=self.cfg.augment)
        return StyleGAN.make_dataset(gm, store_path, split)

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor | float]:
        c = self.cfg
        E, G, D = ctx.nets["encoder"], ctx.nets["generator"], ctx.nets["discriminator"]
        G.eval()
        if "feature_discriminator" in ctx.nets:
            ctx.nets["feature_discriminator"].eval()
        x = batch["image"].to(ctx.device)
        with ctx.autocast():
            x_rec = G.synthesize(E(x), noise_mode="const")
        # eq. 3: D on real vs reconstructions, with R1 (gamma/2) on reals
        with ctx.autocast():
            loss_d = d_loss_bce(D(x).float(), D(x_rec.detach()).float())
            r1 = r1_penalty(D, x.float())
            loss_d_total = loss_d + (c.r1_gamma / 2) * r1
        ctx.backward_step(loss_d_total, "D")
        # eq. 2: pixel L2 + lambda1 perceptual + lambda2 adversarial (non-saturating)
        fn, _, scale = self.feature_fn()
        with requires_grad(D, False), ctx.autocast():
            pix = F.mse_loss(x_rec.float(), x.float())
            perc = perceptual_distance(fn, scale, x, x_rec)
            adv = F.softplus(-D(x_rec).float()).mean()
            loss_e = c.lambda_pixel * pix + c.lambda_perceptual * perc + c.lambda_adv * adv
        ctx.backward_step(loss_e, "E")
        return {"loss_e": loss_e.detach(), "pixel": pix.detach(), "perceptual": perc.detach(), "adv": adv.detach(),
                "loss_d": loss_d.detach(), "r1": r1.detach(), "perceptual_fallback": 1.0 if self.perceptual_fallback else 0.0}

    @torch.no_grad()
    def sample_grid(self, nets: dict[str, nn.Module], n: int, seed: int) -> torch.Tensor | None:
        """Real images and their reconstructions G(E(x)) interleaved (n images)."""
        path = self.data_info.get("store_path")
        if not path:
            return None
        ds = self.make_dataset(path, "train")
        g = torch.Generator().manual_seed(seed)
        k = max(1, n // 2)
        idx = torch.randint(0, len(ds), (k,), generator=g).tolist()
        E, G = nets["encoder"], nets["generator"]
        dev = next(E.parameters()).device
        was = E.training
        E.eval()
        x = torch.stack([ds[i]["image"] for i in idx]).to(dev)
        rec = G.synthesize(E(x), noise_mode="const").clamp(-1, 1)
        E.train(was)
        return torch.stack([x, rec], 1).flatten(0, 1)[:n]

    # -- synthesis -------------------------------------------------------------------------
    def as_stylegan(self) -> StyleGAN:
        """The frozen generator wrapped as a StyleGAN method (for plain ``generate``)."""
        gm = StyleGAN.__new__(StyleGAN)  # no rebuild: share the loaded nets
        gm.cfg, gm.data_info, gm.nets = self.gcfg, dict(self.data_info.get("generator", {}).get("data_info") or {}), nn.ModuleDict(
            {"generator": self.nets["generator"], "discriminator": self.nets["discriminator"]})
        return gm

    def generate(self, n: int, seed: int, **options: Any) -> Iterator["Sample"]:
        """Random samples of the frozen generator (same options as stylegan's ``generate``)."""
        return self.as_stylegan().generate(n, seed, **options)
