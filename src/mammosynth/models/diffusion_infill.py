"""Diffusion inpainting beside the GANs: ``diffusion-infill``.

A denoising diffusion model (Ho et al. 2020) that paints a lesion into its context, conditioned
exactly like the infilling GAN of seed 001 (:mod:`mammosynth.models.infill`): the three
Tri-label channels of :func:`mammosynth.data.context.tri_label` (tissue with the lesion region
replaced by noise, mask, margin ring) are concatenated to the noisy image at every step.

* **Network and schedules from MONAI** (``monai.networks.nets.DiffusionModelUNet``,
  ``monai.networks.schedulers.DDPMScheduler`` for the forward process in training and
  ``DDIMScheduler`` for sampling); this file holds only the conditioning, the loss and the
  sampling loop with inpainting replacement. docs/diffusion.md says why MONAI.
* **Objective**: v-prediction by default (Salimans & Ho 2022, v = sqrt(a_t) eps - sqrt(1-a_t) x0):
  it stays well-scaled at both ends of the schedule (eps-prediction divides by sqrt(a_t) to get
  x0, which blows up near t = T, where a small model's errors matter most), and it pairs well
  with the cosine schedule (Nichol & Dhariwal 2021) used for small images. ``prediction:
  epsilon`` is the DDPM original. The squared error is weighted 1 on the lesion and its margin
  ring (the only pixels the composite keeps) and ``outside_weight`` elsewhere.
* **BI-RADS labels**: an optional joint (shape, margin) class embedding added to the time
  embedding (the UNet's ``num_class_embeds``); index 0 is the null token. Labels are dropped to
  the null token with probability ``label_dropout`` in training, so one network is both the
  conditional and the unconditional model, and sampling uses classifier-free guidance (Ho &
  Salimans 2022): v = v_null + w (v_label - v_null); w = 0 is the unconditional model, w = 1 the
  plain conditional one, w > 1 pushes towards the label.
* **Sampling**: DDIM (Song et al. 2021) with ``sampler_steps`` steps (default 25), deterministic
  for ``eta = 0``. At every step the pixels outside the lesion and its ring are replaced by the
  context noised to that step (the standard replacement trick for inpainting with an
  unconditionally trained chain; Song et al. 2021 SDE, Lugmayr et al. 2022), so the generated
  region is always denoised next to the true context. ``repaint: r`` adds RePaint's
  resampling: r times per step the result is diffused back one step and denoised again.
* **Output** is composited exactly as the GAN's (:func:`mammosynth.data.context.composite`):
  only the mask and its ring change; every other pixel equals the input bit for bit.
* **Speed on CPU**: ``space_to_depth: 2`` folds each 2x2 block into channels
  (``pixel_unshuffle``), so a 64 px patch runs through the UNet at 32x32 (4x fewer positions);
  the output is unfolded with ``pixel_shuffle``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammosynth.data.birads import MARGINS, SHAPES
from mammosynth.data.context import PAPER_MARGIN_FACTOR, composite, enlarge_mask, margin_ring, tri_label
from mammosynth.errors import ConfigError, DataError
from mammosynth.train.method import Method, StepContext, TrainConfig, cpu_has_native_bf16

if TYPE_CHECKING:
    from mammosynth.synth.sample import Sample

log = logging.getLogger(__name__)

#: Joint (shape, margin) classes: (|SHAPES| + 1) x (|MARGINS| + 1), index 0 = both unknown (null).
N_LABEL_CLASSES = (len(SHAPES) + 1) * (len(MARGINS) + 1)
SAMPLER = "ddim"


@dataclass
class DiffusionInfillConfig(TrainConfig):
    """diffusion-infill options (defaults: the paper-size GPU model; configs/*-demo.yaml is the CPU one)."""

    steps: int = 200_000
    batch_size: int = 16
    patch_size: int = 0  # side S of the training patches; 0 = the store's patch size
    space_to_depth: int = 1  # pixel-unshuffle factor: the UNet runs at S / factor (1 = off)
    channels: tuple[int, ...] = (128, 256, 256, 512)  # UNet widths per level (MONAI DiffusionModelUNet)
    num_res_blocks: int = 2
    attention_levels: tuple[bool, ...] = (False, False, True, True)  # self-attention per level
    num_head_channels: int = 64
    norm_groups: int = 32  # GroupNorm groups (must divide every width)
    num_train_timesteps: int = 1000
    schedule: Literal["linear_beta", "scaled_linear_beta", "cosine"] = "cosine"
    prediction: Literal["v_prediction", "epsilon"] = "v_prediction"
    label_conditioning: bool = True  # joint BI-RADS (shape, margin) embedding with a null token
    label_dropout: float = 0.15  # P(labels -> null) in training, for classifier-free guidance
    outside_weight: float = 0.1  # loss weight outside the mask + ring (the composite discards those pixels)
    margin_factor: float = PAPER_MARGIN_FACTOR  # the ring, as the infill GAN's (296/256)
    noise_region: Literal["mask", "mask+ring"] = "mask"  # Tri-label tissue channel, as the infill GAN's
    crop_scale: tuple[float, float] = (0.85, 1.0)  # random-crop side fraction (seed-001 augmentation)
    lr: float = 1e-4
    weight_decay: float = 0.0  # AdamW
    # -- sampling defaults (generate / insert may override; recorded in the manifest) --
    sampler_steps: int = 25  # DDIM steps
    guidance_scale: float = 1.0  # classifier-free guidance w (0 = unconditional, 1 = conditional)
    eta: float = 0.0  # DDIM eta (0 = deterministic given the initial noise)
    repaint: int = 0  # RePaint resamplings per step (0 = off)
    sample_amp: Literal["auto", "bf16", "off"] = "auto"  # sampling autocast: auto = bf16 on CUDA / native-bf16 CPUs

    def validate(self) -> None:
        super().validate()
        if self.patch_size and (self.patch_size < 16 or self.patch_size & (self.patch_size - 1)):
            raise ConfigError(f"patch_size must be a power of two >= 16 (or 0 for the store's), got {self.patch_size}")
        if self.space_to_depth not in (1, 2, 4):
            raise ConfigError(f"space_to_depth must be 1, 2 or 4, got {self.space_to_depth}")
        if not self.channels or any(c < 1 for c in self.channels):
            raise ConfigError(f"channels must be positive widths, got {self.channels}")
        if len(self.attention_levels) != len(self.channels):
            raise ConfigError(f"attention_levels needs one flag per level ({len(self.channels)}), got {len(self.attention_levels)}")
        if any(c % self.norm_groups for c in self.channels):
            raise ConfigError(f"norm_groups ({self.norm_groups}) must divide every width in channels {self.channels}")
        if self.num_res_blocks < 1 or self.num_train_timesteps < 2:
            raise ConfigError("num_res_blocks must be >= 1 and num_train_timesteps >= 2")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ConfigError(f"label_dropout must be in [0, 1], got {self.label_dropout}")
        if self.outside_weight < 0:
            raise ConfigError(f"outside_weight must be >= 0, got {self.outside_weight}")
        if self.margin_factor <= 1.0:
            raise ConfigError(f"margin_factor must be > 1 (an enlargement), got {self.margin_factor}")
        _check_sampling(self.sampler_steps, self.guidance_scale, self.eta, self.repaint, self.num_train_timesteps)


def _check_sampling(steps: int, guidance: float, eta: float, repaint: int, timesteps: int) -> None:
    if not 1 <= int(steps) <= timesteps:
        raise ConfigError(f"sampler steps must be in 1..{timesteps}, got {steps}")
    if guidance < 0:
        raise ConfigError(f"guidance scale must be >= 0, got {guidance}")
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    if repaint < 0:
        raise ConfigError(f"repaint must be >= 0, got {repaint}")


def label_index(shape: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Joint class index of (shape, margin) vocabulary indices, -1 = unknown: (s + 1)(|M| + 1) + (m + 1).
    Index 0 (both unknown) is the null token of classifier-free guidance."""
    return (shape.long().clamp(-1, len(SHAPES) - 1) + 1) * (len(MARGINS) + 1) + margin.long().clamp(-1, len(MARGINS) - 1) + 1


class ConditionalDenoiser(nn.Module):
    """MONAI ``DiffusionModelUNet`` on [x_t, Tri-label], optionally space-to-depth folded.

    forward(x_t (B,1,S,S), cond (B,3,S,S) in [-1,1], t (B,) int, labels (B,) int or None)
    -> (B,1,S,S): v (or eps) prediction.
    """

    def __init__(self, cfg: DiffusionInfillConfig, cond_channels: int = 3) -> None:
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet

        self.fold = int(cfg.space_to_depth)
        f2 = self.fold * self.fold
        self.label_conditioning = bool(cfg.label_conditioning)
        self.unet = DiffusionModelUNet(
            spatial_dims=2, in_channels=(1 + cond_channels) * f2, out_channels=f2, channels=tuple(cfg.channels),
            num_res_blocks=cfg.num_res_blocks, attention_levels=tuple(cfg.attention_levels), norm_num_groups=cfg.norm_groups,
            num_head_channels=cfg.num_head_channels, num_class_embeds=N_LABEL_CLASSES if cfg.label_conditioning else None)

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.cat([x_t, cond.to(x_t.dtype)], dim=1)
        if self.fold > 1:
            h = F.pixel_unshuffle(h, self.fold)
        if self.label_conditioning:
            labels = labels if labels is not None else torch.zeros(x_t.shape[0], dtype=torch.long, device=x_t.device)
        else:
            labels = None
        out = self.unet(h, t, class_labels=labels)
        return F.pixel_shuffle(out, self.fold) if self.fold > 1 else out


class DiffusionInfill(Method):
    """Tri-label-conditioned DDPM/DDIM inpainting of a lesion into its context (MONAI UNet + schedulers)."""

    name = "diffusion-infill"
    Config = DiffusionInfillConfig
    version = 1
    ema_networks = ("unet",)
    cfg: DiffusionInfillConfig

    def build(self) -> None:
        cfg = self.cfg
        size = int(cfg.patch_size or self.data_info.get("patch_size") or 0)
        if not size:
            raise ConfigError("diffusion-infill: patch size unknown; set patch_size or train from a store")
        levels = len(cfg.channels) - 1
        if size < 16 or size & (size - 1) or (size // cfg.space_to_depth) % (2 ** levels):
            raise ConfigError(f"diffusion-infill: patch size {size} / space_to_depth {cfg.space_to_depth} must be "
                              f"divisible by 2^{levels} (one halving per UNet level)")
        self.size = size
        self.nets["unet"] = ConditionalDenoiser(cfg)
        self._grid_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        # sampling settings in use (generate/insert may override the config's; recorded per sample)
        self.sampling = {"sampler": SAMPLER, "sampler_steps": int(cfg.sampler_steps), "guidance_scale": float(cfg.guidance_scale),
                         "eta": float(cfg.eta), "repaint": int(cfg.repaint)}

    # -- schedules (MONAI) -----------------------------------------------------------
    def train_scheduler(self):
        from monai.networks.schedulers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=self.cfg.num_train_timesteps, schedule=self.cfg.schedule,
                             prediction_type=self.cfg.prediction, clip_sample=True)

    def sample_scheduler(self, steps: int):
        from monai.networks.schedulers import DDIMScheduler

        sched = DDIMScheduler(num_train_timesteps=self.cfg.num_train_timesteps, schedule=self.cfg.schedule,
                              prediction_type=self.cfg.prediction, clip_sample=True, set_alpha_to_one=True)
        sched.set_timesteps(int(steps))
        return sched

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"unet": torch.optim.AdamW(self.nets["unet"].parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)}

    def data_info_from_store(self, store_path: str) -> dict[str, Any]:
        """Store facts + how the patches were cut and their mm per model pixel (``insert`` reads them)."""
        info = super().data_info_from_store(store_path)
        info["store_path"] = str(store_path)
        from mammosynth.data.patch_scale import patch_scale_info

        info.update(patch_scale_info(store_path, int(self.cfg.patch_size or info.get("patch_size") or 0) or None,
                                     tuple(self.cfg.crop_scale)))
        return info

    def make_dataset(self, store_path: str, split: str = "train") -> torch.utils.data.Dataset:
        from mammosynth.data.dataset import LesionDataset

        self.data_info.setdefault("store_path", str(store_path))
        size = self.size if self.size != self.data_info.get("patch_size") else None
        return LesionDataset(store_path, split=split, augment=split == "train", crop_scale=tuple(self.cfg.crop_scale), size=size)

    # -- training --------------------------------------------------------------------
    def condition(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,1,S,S) image in [-1,1] + (B,1,S,S) mask -> (B,3,S,S) Tri-label (the infill GAN's input)."""
        return tri_label(image, mask, self.cfg.margin_factor, False, generator, noise_region=self.cfg.noise_region)

    def region(self, mask: torch.Tensor) -> torch.Tensor:
        """(B,1,S,S) bool: the lesion and its margin ring, the pixels the composite takes from the model."""
        return enlarge_mask(mask, self.cfg.margin_factor) | (mask > 0.5)

    def target(self, sched: Any, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return sched.get_velocity(x0, noise, t) if self.cfg.prediction == "v_prediction" else noise

    def loss(self, net: nn.Module, x0: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None,
             generator: torch.Generator | None, autocast: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoising loss: weighted MSE between the network's and the true v (or eps) at a
        uniformly drawn t. Returns (weighted loss, plain MSE on the lesion + ring)."""
        sched = self.train_scheduler()
        device = x0.device
        cond = self.condition(x0, mask, generator)
        noise = torch.randn(x0.shape, generator=generator, device=device)
        t = torch.randint(0, self.cfg.num_train_timesteps, (x0.shape[0],), generator=generator, device=device)
        x_t = sched.add_noise(x0, noise, t)
        target = self.target(sched, x0, noise, t)
        with autocast if autocast is not None else torch.autocast(device.type, enabled=False):
            pred = net(x_t, cond, t, labels)
        err = (pred.float() - target) ** 2
        inside = self.region(mask).to(err.dtype)
        w = inside + (1.0 - inside) * self.cfg.outside_weight
        loss = (w * err).sum() / w.sum().clamp_min(1.0)
        region_mse = (inside * err).sum() / inside.sum().clamp_min(1.0)
        return loss, region_mse

    def batch_labels(self, batch: dict[str, torch.Tensor], device: torch.device,
                     generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Joint label indices of a batch, each dropped to the null token with P = label_dropout."""
        if not self.cfg.label_conditioning:
            return None
        labels = label_index(batch["shape"].to(device), batch["margin"].to(device))
        if self.cfg.label_dropout > 0:
            drop = torch.rand(labels.shape, generator=generator, device=device) < self.cfg.label_dropout
            labels = torch.where(drop, torch.zeros_like(labels), labels)
        return labels

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor | float]:
        net = ctx.nets["unet"]
        x0 = batch["image"].to(ctx.device, non_blocking=True).float()
        mask = batch["mask"].to(ctx.device, non_blocking=True).float()
        gen = ctx.generator()
        labels = self.batch_labels(batch, ctx.device, gen)
        loss, region_mse = self.loss(net, x0, mask, labels, gen, ctx.autocast())
        ctx.backward_step(loss, "unet")
        return {"loss": loss.detach(), "region_mse": region_mse.detach()}

    # -- sampling --------------------------------------------------------------------
    def _net(self, net: nn.Module | None = None) -> nn.Module:
        return net if net is not None else self.nets["unet"]

    def _amp_dtype(self, device: torch.device) -> torch.dtype | None:
        if self.cfg.sample_amp == "off":
            return None
        if self.cfg.sample_amp == "bf16" or device.type == "cuda" or cpu_has_native_bf16():
            return torch.bfloat16
        return None  # emulated bf16 on this CPU is far slower than fp32 (docs/diffusion.md)

    def _predict(self, net: nn.Module, x: torch.Tensor, cond: torch.Tensor, t: int, labels: torch.Tensor | None,
                 guidance: float, amp: torch.dtype | None) -> torch.Tensor:
        """The network's output at step t with classifier-free guidance: v_null + w (v_label - v_null).
        w = 0 runs only the null-label pass, w = 1 only the labelled one; otherwise both in one batch."""
        B = x.shape[0]
        tt = torch.full((B,), int(t), dtype=torch.long, device=x.device)
        null = torch.zeros(B, dtype=torch.long, device=x.device)
        use_labels = labels is not None and self.cfg.label_conditioning

        def run(xx, cc, ts, ll):
            with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                return net(xx, cc, ts, ll).float()

        if not use_labels or guidance == 0.0:
            return run(x, cond, tt, null)
        if guidance == 1.0:
            return run(x, cond, tt, labels)
        both = run(torch.cat([x, x]), torch.cat([cond, cond]), torch.cat([tt, tt]), torch.cat([labels, null]))
        v_label, v_null = both[:B], both[B:]
        return v_null + guidance * (v_label - v_null)

    @torch.no_grad()
    def denoise(self, context: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                labels: torch.Tensor | None = None, net: nn.Module | None = None, steps: int | None = None,
                guidance_scale: float | None = None, eta: float | None = None, repaint: int | None = None) -> torch.Tensor:
        """DDIM inpainting at the model's size: context (B,1,S,S) in [-1,1], mask (B,1,S,S) {0,1}
        -> (B,1,S,S) x_0 in [-1,1] (not yet composited).

        Outside the lesion and its ring, x_t is replaced at every step by the context noised to
        that step (fresh noise from ``generator``); after the last step it is the context itself."""
        s = self.sampling
        steps = int(steps if steps is not None else s["sampler_steps"])
        guidance = float(guidance_scale if guidance_scale is not None else s["guidance_scale"])
        eta = float(eta if eta is not None else s["eta"])
        repaint = int(repaint if repaint is not None else s["repaint"])
        _check_sampling(steps, guidance, eta, repaint, self.cfg.num_train_timesteps)
        net = self._net(net)
        device = context.device
        amp = self._amp_dtype(device)
        sched = self.sample_scheduler(steps)
        acp = sched.alphas_cumprod.to(device=device, dtype=torch.float32)
        stride = self.cfg.num_train_timesteps // steps
        cond = self.condition(context, mask, generator)
        known = ~self.region(mask)
        x = torch.randn(context.shape, generator=generator, device=device)
        was_training = net.training
        net.eval()
        try:
            for t in sched.timesteps.tolist():
                prev_t = t - stride
                for r in range(repaint + 1):
                    out = self._predict(net, x, cond, t, labels, guidance, amp)
                    x_prev, _ = sched.step(out, t, x, eta=eta, generator=generator)
                    if prev_t >= 0:
                        noise = torch.randn(context.shape, generator=generator, device=device)
                        ctx_t = acp[prev_t].sqrt() * context + (1 - acp[prev_t]).sqrt() * noise
                    else:
                        ctx_t = context
                    x_prev = torch.where(known, ctx_t, x_prev)
                    if r == repaint or prev_t < 0:
                        break
                    # RePaint: diffuse x_{t'} back to x_t, q(x_t | x_t') = N(sqrt(a_t/a_t') x_t', 1 - a_t/a_t')
                    ratio = acp[t] / acp[prev_t]
                    x = ratio.sqrt() * x_prev + (1 - ratio).sqrt() * torch.randn(context.shape, generator=generator, device=device)
                x = x_prev
        finally:
            net.train(was_training)
        return x.clamp(-1.0, 1.0)

    @torch.no_grad()
    def infill(self, tissue: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
               net: nn.Module | None = None, shape: torch.Tensor | None = None, margin: torch.Tensor | None = None,
               **sampling: Any) -> torch.Tensor:
        """Infill lesions: tissue (B,1,S,S) in [-1,1], mask (B,1,S,S) in {0,1} -> (B,1,S,S) in [-1,1].

        The same contract as the infill GAN's ``infill`` (what ``insert`` calls): patches of
        another side are resized to the trained size and back; the result is composited so
        that only the mask and its ring change. ``shape``/``margin``: (B,) vocabulary indices
        (-1 = unknown) to condition on; None = the null label (unconditional). ``sampling``:
        steps, guidance_scale, eta, repaint (default: the method's ``sampling``)."""
        if tissue.dim() != 4 or tissue.shape[1] != 1 or tissue.shape != mask.shape:
            raise DataError(f"diffusion-infill: expected tissue and mask of shape (B, 1, S, S), got "
                            f"{tuple(tissue.shape)} and {tuple(mask.shape)}")
        net = self._net(net)
        device = next(net.parameters()).device
        if generator is not None and generator.device.type != device.type:
            raise DataError(f"diffusion-infill: the torch.Generator is on {generator.device}, the model on {device}")
        tissue, mask = tissue.to(device, torch.float32), mask.to(device, torch.float32)
        tissue_in, mask_in = tissue, mask
        in_hw = tuple(tissue.shape[-2:])
        if in_hw != (self.size, self.size):
            tissue = F.interpolate(tissue, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
            mask = (F.interpolate(mask, size=(self.size, self.size), mode="bilinear", align_corners=False) >= 0.5).float()
        labels = None
        if shape is not None or margin is not None:
            B = tissue.shape[0]
            minus = torch.full((B,), -1, dtype=torch.long)
            labels = label_index(shape if shape is not None else minus, margin if margin is not None else minus).to(device)
        out = self.denoise(tissue, mask, generator, labels, net, **sampling)
        if in_hw != (self.size, self.size):
            out = F.interpolate(out, size=in_hw, mode="bilinear", align_corners=False).clamp(-1.0, 1.0)
            tissue, mask = tissue_in, mask_in
        return composite(out, tissue, mask, self.cfg.margin_factor)

    def synthesis_info(self) -> dict[str, Any]:
        """What a synthetic set records about how it was sampled (manifest ``extra``)."""
        return dict(self.sampling)

    def configure_sampling(self, **overrides: Any) -> None:
        """Set sampler_steps / guidance_scale / eta / repaint for later ``infill``/``generate`` calls."""
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in self.sampling or key == "sampler":
                raise ConfigError(f"diffusion-infill: unknown sampling option {key!r}")
            self.sampling[key] = type(self.sampling[key])(value)
        s = self.sampling
        _check_sampling(s["sampler_steps"], s["guidance_scale"], s["eta"], s["repaint"], self.cfg.num_train_timesteps)

    def _store_path(self, options: dict[str, Any] | None = None) -> str:
        path = ((options or {}).get("data") or (options or {}).get("store") or self.data_info.get("store_path")
                or self.data_info.get("path"))
        if not path:
            raise DataError("diffusion-infill: no dataset file known; pass data=FILE.h5 (the store to take tissue patches from)")
        return str(path)

    def _fixed_patches(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The first n validation lesion patches (train split if val is empty) and their labels, cached."""
        if self._grid_batch is not None and self._grid_batch[0].shape[0] >= n:
            return self._grid_batch[0][:n], self._grid_batch[1][:n], self._grid_batch[2][:n]
        from mammosynth.data.dataset import fixed_lesion_items

        items = fixed_lesion_items(self.data_info, self.size, n)
        if items is None:
            return None
        labels = label_index(torch.stack([it["shape"] for it in items]), torch.stack([it["margin"] for it in items]))
        self._grid_batch = (torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items]), labels)
        return self._grid_batch

    @torch.no_grad()
    def sample_grid(self, nets: dict[str, nn.Module], n: int, seed: int) -> torch.Tensor | None:
        """(n, 1, S, 5S) strips in [-1,1]: tissue channel | mask | ring | composited sample | real."""
        fixed = self._fixed_patches(n)
        if fixed is None:
            return None
        image, mask, labels = fixed
        net = nets["unet"]
        device = next(net.parameters()).device
        gen = torch.Generator(device=device).manual_seed(int(seed))
        image, mask, labels = image.to(device), mask.to(device), labels.to(device)
        cond = self.condition(image, mask, gen)
        out = composite(self.denoise(image, mask, gen, labels if self.cfg.label_conditioning else None, net), image, mask,
                        self.cfg.margin_factor)
        ring = margin_ring(mask, self.cfg.margin_factor).float() * 2 - 1
        return torch.cat([cond[:, :1].float(), mask * 2 - 1, ring, out, image], dim=-1).cpu()

    @torch.no_grad()
    def generate(self, n: int, seed: int, **options: Any) -> Iterator["Sample"]:
        """Yield ``n`` lesions painted into real tissue contexts of a store split (as ``infill``'s generate).

        Options: ``data`` (store; default the training store), ``split`` (default "train"; an
        empty split is an error), ``mask`` ((H,W) bool for every sample; default each context's
        own lesion mask), ``shape``/``margin`` (BI-RADS terms to condition on; default each
        context's own labels), ``pathology``, ``batch_size`` (default 16), and the sampling
        options ``sampler_steps``, ``guidance_scale``, ``eta``, ``repaint``. Images (S,S) float32
        in [0,1]; every sample records the sampler, its steps, guidance scale, eta, RePaint and
        the conditioning labels in ``extra``.
        """
        from mammosynth.data.birads import PATHOLOGIES
        from mammosynth.data.context import context_labels, draw_contexts, user_mask_at
        from mammosynth.data.store import resize_image, resize_mask
        from mammosynth.synth.sample import Sample

        self.configure_sampling(**{k: options.get(k) for k in ("sampler_steps", "guidance_scale", "eta", "repaint")})
        path = self._store_path(options)
        split = options.get("split") or "train"
        uniq, repeat = draw_contexts(path, split, n, seed, "diffusion-infill")
        patches, own_masks = uniq.patch, uniq.mask
        own_shape, own_margin, own_path = uniq.shape, uniq.margin, uniq.pathology
        index = uniq.index
        source_ids = list(uniq.source_id)
        user_mask = user_mask_at(options.get("mask"), self.size, "diffusion-infill")
        want_shape = SHAPES.index(options["shape"]) if options.get("shape") else None
        want_margin = MARGINS.index(options["margin"]) if options.get("margin") else None
        shape_idx = np.full(n, want_shape) if want_shape is not None else own_shape.astype(np.int64)
        margin_idx = np.full(n, want_margin) if want_margin is not None else own_margin.astype(np.int64)
        if user_mask is not None:  # a user mask has no labels of its own: only what was asked for
            shape_idx = np.full(n, -1 if want_shape is None else want_shape)
            margin_idx = np.full(n, -1 if want_margin is None else want_margin)
        device = next(self.nets["unet"].parameters()).device
        gen = torch.Generator(device=device).manual_seed(int(seed))
        bs = int(options.get("batch_size") or 16)
        info = self.synthesis_info()

        def term(vocab: tuple[str, ...], i: int) -> str | None:
            return vocab[i] if 0 <= i < len(vocab) else None

        for start in range(0, n, bs):
            sl = slice(start, min(n, start + bs))
            tissue = np.stack([resize_image(p, (self.size, self.size)) for p in patches[sl]])
            if user_mask is not None:
                masks = np.repeat(user_mask[None], tissue.shape[0], axis=0)
            else:
                masks = np.stack([resize_mask(m, (self.size, self.size)) for m in own_masks[sl]])
            t = torch.from_numpy(tissue * 2.0 - 1.0)[:, None].float()
            m = torch.from_numpy(masks.astype(np.float32))[:, None]
            out = self.infill(t, m, gen, shape=torch.from_numpy(shape_idx[sl]), margin=torch.from_numpy(margin_idx[sl]))
            for k in range(out.shape[0]):
                i = start + k
                pathology = options.get("pathology") if user_mask is not None else term(PATHOLOGIES, int(own_path[i]))
                calc = context_labels(uniq, i) if user_mask is None else {}
                yield Sample(
                    image=((out[k, 0].cpu().numpy() + 1.0) * 0.5).astype(np.float32),
                    mask=masks[k].astype(bool),
                    shape=term(SHAPES, int(shape_idx[i])), margin=term(MARGINS, int(margin_idx[i])), pathology=pathology,
                    seed=int(seed), source_ids=[source_ids[i]],
                    extra={"tissue_split": split, "tissue_index": int(index[i]), "context_repeat": int(repeat[i]),
                           "mask_source": "option" if user_mask is not None else "own", **info,
                           **{k: v for k, v in calc.items() if v is not None}},
                    **calc,
                )
