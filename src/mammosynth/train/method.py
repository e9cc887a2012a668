"""The contract between the generic trainer and a method (one file per method under ``models/``).

A method supplies its networks, its optimizers and one training step. The trainer owns
everything else: device, autocast + GradScaler, channels_last, optional ``torch.compile``,
EMA copies, data-parallel gradient averaging under ``torchrun``, seeding, run folders,
progress, sample grids, the metrics log, checkpoints (safetensors + JSON) and ``--resume``.

A minimal method::

    @dataclass
    class MyConfig(TrainConfig):
        nz: int = 100

    class MyGAN(Method):
        name = "my-gan"
        Config = MyConfig

        def build(self):                        # networks, on CPU; trainer moves them
            self.nets["generator"] = G(...)
            self.nets["discriminator"] = D(...)

        def build_optimizers(self):
            return {"G": Adam(self.nets["generator"].parameters(), ...),
                    "D": Adam(self.nets["discriminator"].parameters(), ...)}

        def make_dataset(self, store_path, split):
            return LesionDataset(store_path, split=split, ...)

        def train_step(self, batch, ctx):
            G, D = ctx.nets["generator"], ctx.nets["discriminator"]
            with ctx.autocast():
                loss_d = ...
            ctx.backward_step(loss_d, "D")      # zero_grad, (scaled) backward, grad all-reduce, step
            with ctx.autocast():
                loss_g = ...
            ctx.backward_step(loss_g, "G")
            return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

        @torch.no_grad()
        def sample_grid(self, nets, n, seed):   # nets = EMA copies where they exist
            return nets["generator"](torch.randn(n, ..., generator=...))  # (n,C,H,W) in [-1,1]
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, ContextManager, Iterator, Literal

import torch
from torch import nn

from mammosynth.errors import ConfigError

if TYPE_CHECKING:
    from mammosynth.synth.sample import Sample


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check for AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class TrainConfig:
    """Options every method shares. Method configs subclass this and add their own fields.

    Units: ``steps`` are optimiser iterations of the whole method (one ``train_step``);
    ``batch_size`` is per process; ``*_every`` are in steps (0 = never).
    """

    steps: int = 1000
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto: bf16 on CUDA / CPUs with native bf16, else fp16 (CUDA) / off
    channels_last: bool = True
    compile: bool = False
    ema_decay: float = 0.999  # per step; 0 disables EMA
    num_workers: int = 0  # DataLoader worker processes
    log_every: int = 10
    sample_every: int = 200
    ckpt_every: int = 500
    n_samples: int = 16  # images in each sample grid
    # True: set every field named in the method's PAPER_RECIPE to the paper's value (the exact
    # published recipe at whatever network size the config chooses); see docs/quality.md.
    paper: bool = False

    #: The fields where mammosynth's default recipe departs from the method's paper, with the
    #: paper's values. A method config overrides this; ``paper: true`` applies it.
    PAPER_RECIPE: ClassVar[dict[str, Any]] = {}

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """A run's saved config with every PAPER_RECIPE field it lacks set to the paper's value:
        such a field did not exist when the run was made, and the code then did what the paper
        does, so its networks are rebuilt as they were trained."""
        return {**{k: v for k, v in cls.PAPER_RECIPE.items() if k not in saved}, **saved}

    def validate(self) -> None:
        if self.paper:
            for key, value in self.PAPER_RECIPE.items():
                setattr(self, key, value)
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


class StepContext(abc.ABC):
    """What the trainer hands to ``Method.train_step`` (implemented in ``train/trainer.py``)."""

    nets: dict[str, nn.Module]  # the training copies, on the device
    device: torch.device
    step: int  # 0-based index of the step being taken
    world_size: int
    rank: int

    @abc.abstractmethod
    def autocast(self) -> ContextManager[Any]:
        """Autocast context for forward passes (a no-op when AMP is off)."""

    @abc.abstractmethod
    def backward_step(self, loss: torch.Tensor, optimizer: str, retain_graph: bool = False) -> None:
        """Zero that optimizer's grads, backward ``loss`` (scaled for fp16), average grads
        across processes, unscale, step, update the scaler."""

    @abc.abstractmethod
    def generator(self) -> torch.Generator:
        """A per-process torch.Generator on the device, seeded from (seed, rank); part of the
        checkpointed RNG state so ``--resume`` reproduces the same draws."""


class Method(abc.ABC):
    """Base class for every trainable method. Subclasses set ``name`` and ``Config``."""

    name: ClassVar[str]
    Config: ClassVar[type[TrainConfig]]
    #: Bump when the state-dict layout changes; a checkpoint from another version is refused.
    version: ClassVar[int] = 1
    #: Names of networks that get an EMA copy (used for sampling and saved as inference weights).
    ema_networks: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: TrainConfig, data_info: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.data_info = dict(data_info or {})
        self.nets: nn.ModuleDict = nn.ModuleDict()
        self.build()

    # -- what a method must supply ------------------------------------------------------
    @abc.abstractmethod
    def build(self) -> None:
        """Create the networks in ``self.nets`` (on CPU). Read sizes from cfg / data_info."""

    @abc.abstractmethod
    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers over ``self.nets`` parameters, keyed by a short name ("G", "D")."""

    @abc.abstractmethod
    def make_dataset(self, store_path: str, split: str = "train") -> torch.utils.data.Dataset:
        """The torch Dataset this method trains on."""

    @abc.abstractmethod
    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor | float]:
        """One optimisation step; returns scalars to log. Tensors are losses: the trainer's
        divergence guard stops the run when one is NaN or infinite. Python numbers are metrics
        (e.g. an accuracy): None or NaN means "not measured in this batch", logged as null and
        left out of the interval's mean, never a divergence."""

    def sample_grid(self, nets: dict[str, nn.Module], n: int, seed: int) -> torch.Tensor | None:
        """(n, C, H, W) images in [-1, 1] for the sample grid, or None for no grid."""
        return None

    # -- optional hooks -----------------------------------------------------------------
    def data_info_from_store(self, store_path: str) -> dict[str, Any]:
        """Facts from the dataset the networks' shapes depend on (saved in config.json)."""
        from mammosynth.data.store import Store

        with Store(store_path) as s:
            return {"patch_size": s.patch_size, "normal_size": s.manifest.get("normal_size")}

    def extra_state(self) -> dict[str, Any]:
        """JSON-able state beyond nets/optimizers to checkpoint (e.g. a progressive phase)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def finalize_ema(self, ema_nets: dict[str, nn.Module]) -> None:
        """Called on the EMA copies before a sample grid and before inference weights are
        saved, e.g. to recompute BatchNorm statistics for the averaged weights (the copied
        running statistics belong to the training weights). Must not touch the global RNG."""

    def batch_size(self, step: int) -> int | None:
        """Per-phase batch size (progressive growing); None = ``cfg.batch_size``. The trainer
        rebuilds its DataLoader whenever the value changes."""
        return None

    # -- synthesis (called by the CLI; a method implements what it supports) -------------
    def generate(self, n: int, seed: int, **options: Any) -> Iterator["Sample"]:
        """Yield ``n`` samples. Options a method may read: ``shape``, ``margin``,
        ``pathology`` (BI-RADS terms), ``mask`` ((H,W) bool array), ``batch_size``."""
        raise ConfigError(f"method {self.name!r} cannot generate images; see `mammosynth generate --help`")

    def interpolate(self, **options: Any) -> Iterator["Sample"]:
        """Latent interpolation between encoded/sampled sources (methods that have a latent)."""
        raise ConfigError(f"method {self.name!r} has no latent space to interpolate")

    def on_load(self) -> None:
        """Called after weights are loaded for inference (e.g. to set eval mode)."""
        self.nets.eval()


@contextlib.contextmanager
def requires_grad(module: nn.Module, flag: bool):
    """Temporarily switch ``requires_grad`` of all parameters (e.g. freeze D during G's step)."""
    prev = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(flag)
    try:
        yield module
    finally:
        for p, r in zip(module.parameters(), prev):
            p.requires_grad_(r)


class EagerContext(StepContext):
    """A StepContext without the trainer: one process, no GradScaler, no bookkeeping.

    For running a method's ``train_step`` by hand (tests, benchmarks, notebooks). ``nets``: the
    method's networks (a Method is accepted and its ``nets`` used); ``opts``: its optimizers by
    name; ``amp``: None/"off", "bf16", "fp16" or a torch dtype (autocast only: fp16 without a
    scaler may underflow, which is the trainer's job to handle).
    """

    _AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, nets: "dict[str, nn.Module] | Method", opts: dict[str, torch.optim.Optimizer],
                 device: torch.device | str = "cpu", amp: Any = None, seed: int = 0) -> None:
        self.nets = nets.nets if isinstance(nets, Method) else nets
        self.opts, self.device = opts, torch.device(device)
        self.step, self.world_size, self.rank = 0, 1, 0
        self.amp_dtype = amp if isinstance(amp, torch.dtype) else self._AMP.get(amp)
        self._gen = torch.Generator(device=self.device).manual_seed(seed)

    def autocast(self) -> ContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: str, retain_graph: bool = False) -> None:
        opt = self.opts[optimizer]
        opt.zero_grad(set_to_none=True)
        loss.backward(retain_graph=retain_graph)
        opt.step()

    def generator(self) -> torch.Generator:
        return self._gen
