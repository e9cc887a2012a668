"""The one generic training loop. Methods plug in through :class:`mammosynth.train.method.Method`.

The method supplies networks, optimizers and one ``train_step``; this loop owns the device,
autocast (+ one GradScaler per optimizer for fp16), channels_last, ``torch.compile``, EMA
copies, data-parallel gradient averaging under ``torchrun``, seeding, run folders, progress,
sample grids, the metrics log, checkpoints and exact ``--resume``. See docs/training.md.

Exact resume rests on three things: every tensor and RNG state is checkpointed; each epoch's
data order is derived from (seed, epoch) and the batches already consumed are skipped; and
each item's augmentation draws come from its own seed (seed, epoch, position), so they do not
depend on DataLoader workers, prefetching or where a run was interrupted.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import json
import logging
import math
import os
import random
import resource
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mammosynth import __version__
from mammosynth.config import from_dict, to_dict
from mammosynth.errors import CheckpointError, ConfigError, DataError, MammosynthError
from mammosynth.io import write_json_atomic
from mammosynth.train import distributed as D
from mammosynth.train.checkpoint import (JSON_FILE, clean_stale_checkpoint_tmp, find_checkpoint, load_checkpoint,
                                         load_module_state, load_optimizer_state, save_checkpoint)
from mammosynth.train.method import Method, StepContext, TrainConfig, cpu_has_native_bf16  # noqa: F401 (re-exported)
from mammosynth.train.run import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    SAMPLES_DIR,
    WEIGHTS_FILE,
    check_method_matches,
    create_run_dir,
    read_run_config,
    resolve_run,
    save_inference_weights,
)

log = logging.getLogger("mammosynth.train")

#: Config fields that may differ when resuming (schedule and execution, not the model or data).
RESUMABLE_CHANGES = frozenset(
    {"steps", "device", "amp", "compile", "num_workers", "log_every", "sample_every", "ckpt_every", "n_samples"}
)


class TrainingDiverged(MammosynthError):
    """A loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


# -- seeding and data order -------------------------------------------------------------------
def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integer parts (numpy SeedSequence: well mixed, platform independent)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffle from seed + epoch, padded, sharded by rank) that can start
    mid-epoch and tags each index with its own augmentation seed.

    Yields ``(dataset_index, item_seed)``; the item seed depends on (seed, epoch, global position),
    so a 1-process run and an N-process run with the same global batch augment identically.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = list(super().__iter__())
        for pos in range(self.start, len(order)):
            global_pos = pos * self.num_replicas + self.rank
            yield order[pos], derive_seed(self.seed, self.epoch, global_pos)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class SeededItems(Dataset):
    """Wraps a dataset so ``ds[(index, seed)]`` runs the item's random augmentation under its own
    seed (torch, numpy and ``random`` global RNGs).

    The torch and ``random`` states of the caller are restored afterwards; numpy's global RNG is
    left reseeded (saving and restoring its state costs ~0.2 ms per item). Methods draw their
    own randomness from ``ctx.generator()`` or torch, so this stays exact and cheap.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        saved = (torch.get_rng_state(), random.getstate())
        torch.default_generator.manual_seed(seed)  # torch.manual_seed also walks every device: 100x slower
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])


def _worker_init(worker_id: int) -> None:
    # items reseed themselves; this only keeps stray numpy/random use in workers distinct
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _to_device(batch: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(batch, torch.Tensor):
        t = batch.to(device, non_blocking=True)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t
    if isinstance(batch, dict):
        return {k: _to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device, channels_last) for v in batch)
    return batch


# -- RNG state (per process) -----------------------------------------------------------------
def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
        "generator": gen.get_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return state


def _set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    gen.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# -- the context handed to Method.train_step ---------------------------------------------------
class _Context(StepContext):
    def __init__(self, trainer: "Trainer") -> None:
        self._t = trainer
        self.nets = trainer.step_nets
        self.device = trainer.device
        self.step = 0
        self.world_size = trainer.dist.world_size
        self.rank = trainer.dist.rank
        self.optimizers = trainer.optimizers
        self.losses: list[tuple[str, torch.Tensor]] = []

    def autocast(self):
        dtype = self._t.amp_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: str, retain_graph: bool = False) -> None:
        try:
            opt = self._t.optimizers[optimizer]
        except KeyError:
            raise ConfigError(
                f"train_step asked for optimizer {optimizer!r}; the method built {', '.join(self._t.optimizers)}"
            ) from None
        scaler = self._t.scalers[optimizer]
        self.losses.append((optimizer, loss.detach()))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward(retain_graph=retain_graph)
        if self.world_size > 1:
            # data parallel: every process applies the mean gradient of the global batch
            D.all_reduce_grads_((p for g in opt.param_groups for p in g["params"]), self.world_size)
        scaler.step(opt)  # unscales first; skips the step on inf/NaN grads under fp16
        scaler.update()

    def generator(self) -> torch.Generator:
        return self._t.gen


# -- the trainer -------------------------------------------------------------------------------
class Trainer:
    """One training run. ``Trainer(...).run()`` returns the run folder; :func:`train` wraps it.

    After ``run()`` the trained objects stay available: ``method`` (training nets in
    ``method.nets``), ``ema`` (EMA copies), ``optimizers``, ``run_dir``.
    """

    def __init__(
        self,
        method: str | type[Method],
        data: str | os.PathLike,
        out: str | os.PathLike,
        cfg: TrainConfig | None = None,
        resume: bool = False,
        progress: bool = True,
        config_source: str | None = None,
    ) -> None:
        if isinstance(method, str):
            from mammosynth.models import get_method

            method = get_method(method)
        self.method_cls: type[Method] = method
        self.data = Path(data).resolve()
        self.out = Path(out)
        self.resume = resume
        self.show_progress = progress
        self.config_source = config_source
        self.cfg = self._resolve_config(cfg)

    # -- set-up ----------------------------------------------------------------------------
    def _resolve_config(self, cfg: TrainConfig | None) -> TrainConfig:
        Config = self.method_cls.Config
        if cfg is None:
            if self.resume:
                doc = read_run_config(resolve_run(self.out, self.method_cls.name))
                return from_dict(Config, Config.from_saved(doc["config"]))
            cfg = Config()
        if not isinstance(cfg, Config):
            # a base TrainConfig (or another subclass): re-read its fields into the method's config
            cfg = from_dict(Config, {k: v for k, v in to_dict(cfg).items() if k in to_dict(Config())})
        cfg.validate()
        return cfg

    def _probe_data_info(self) -> dict[str, Any]:
        # data_info_from_store is an instance hook but build() needs its result: call it on a
        # bare instance that has only cfg set
        if not self.data.is_file():
            raise DataError(f"{self.data}: no such dataset file; create one with `mammosynth data phantom` or `mammosynth data ingest`")
        probe = self.method_cls.__new__(self.method_cls)
        probe.cfg = self.cfg
        probe.data_info = {}
        info = dict(probe.data_info_from_store(str(self.data)))
        return {"path": str(self.data), **info}

    def _setup_run_dir(self) -> tuple[Path, Path | None]:
        """(run folder, checkpoint to resume from or None). Rank 0 creates; others follow."""
        name = self.method_cls.name
        if self.resume:
            run = resolve_run(self.out, name)
            doc = read_run_config(run)
            check_method_matches(doc, run / CONFIG_FILE, self.method_cls)
            if self.dist.is_main:  # a checkpoint write killed mid-way left its temporary folder
                clean_stale_checkpoint_tmp(run / CHECKPOINT_DIR)
            ckpt = find_checkpoint(run / CHECKPOINT_DIR)
            if ckpt is None:
                raise CheckpointError(f"{run / CHECKPOINT_DIR}: no complete checkpoint to resume from")
            return run, ckpt
        number = -1
        if self.dist.is_main:
            run = create_run_dir(self.out, name)
            number = int(run.name.split("-", 1)[0])
        number = D.broadcast_int(number, self.device, self.dist.world_size)
        return self.out / f"{number:05d}-{name}", None

    def _check_resume_config(self, saved: dict[str, Any], source: Path) -> None:
        now = to_dict(self.cfg)
        # A field the checkpoint does not know was added in a later version; the run trained
        # with that field's default, so only a different value counts as a change.
        defaults = to_dict(type(self.cfg)())
        saved = type(self.cfg).from_saved(saved)
        saved = {**{k: defaults[k] for k in now if k not in saved and k in defaults}, **saved}
        changed = sorted(k for k in set(now) | set(saved) if k not in RESUMABLE_CHANGES and now.get(k) != saved.get(k))
        if changed:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise CheckpointError(
                f"{source}: cannot resume with a different model/data config ({detail}); "
                f"only {', '.join(sorted(RESUMABLE_CHANGES))} may change"
            )

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.cfg.amp
        if amp == "off":
            return None
        if amp == "auto":
            if self.device.type == "cuda":
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            # CPUs with native bf16 (AVX512-BF16 / AMX) run these convs 1.4-1.8x faster in bf16
            # autocast (benchmarks/bench_birads.py); elsewhere bf16 is emulated and slower
            return torch.bfloat16 if cpu_has_native_bf16() else None
        return torch.bfloat16 if amp == "bf16" else torch.float16

    def _build(self) -> None:
        cfg = self.cfg
        self.data_info = self._probe_data_info()
        seed_everything(cfg.seed)  # same initial weights on every rank (and broadcast below anyway)
        self.method = self.method_cls(cfg, self.data_info)
        self.nets: dict[str, nn.Module] = dict(self.method.nets.items())
        if not self.nets:
            raise ConfigError(f"method {self.method_cls.name!r} built no networks")
        # NHWC: cuDNN's tensor-core kernels on CUDA; on CPU oneDNN's blocked convs run the method
        # steps 1.2-1.3x faster in it too (benchmarks/bench_birads.py)
        self.channels_last = bool(cfg.channels_last)
        for net in self.nets.values():
            net.to(self.device)
            if self.channels_last and any(p.dim() == 4 for p in net.parameters()):
                net.to(memory_format=torch.channels_last)
            if self.dist.enabled:
                D.broadcast_module_(net)
        self.optimizers = dict(self.method.build_optimizers())
        self.amp_dtype = self._amp_dtype()
        use_scaler = self.amp_dtype == torch.float16
        self.scalers = {k: torch.amp.GradScaler(self.device.type, enabled=use_scaler) for k in self.optimizers}
        self.ema: dict[str, nn.Module] = {}
        if cfg.ema_decay > 0:
            for name in self.method_cls.ema_networks:
                if name not in self.nets:
                    raise ConfigError(f"ema_networks names {name!r}, which the method did not build")
                self.ema[name] = copy.deepcopy(self.nets[name]).eval().requires_grad_(False)
        # compiled wrappers share parameters with the eager modules that we checkpoint
        self.step_nets = {k: (torch.compile(v) if cfg.compile else v) for k, v in self.nets.items()}
        seed_everything(derive_seed(cfg.seed, 1 + self.dist.rank))
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(derive_seed(cfg.seed, 1000 + self.dist.rank))
        self.step = 0
        self.epoch = 0
        self.epoch_pos = 0  # items of the current epoch already consumed by this rank

    # -- checkpoint ------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "ema": {k: v.state_dict() for k, v in self.ema.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "scalers": {k: v.state_dict() for k, v in self.scalers.items()},
        }

    def _save(self) -> None:
        """Checkpoint + inference weights. Collective (RNG states of all ranks); rank 0 writes."""
        self._finalize_ema()  # on every rank: keeps EMA buffers identical across processes
        rng = json.dumps(_rng_state(self.gen)).encode()
        all_rng = [json.loads(b) for b in D.gather_bytes(rng, self.device, self.dist.world_size)]
        if self.dist.is_main:
            meta = {
                "method": self.method_cls.name,
                "method_version": self.method_cls.version,
                "mammosynth_version": __version__,
                "step": self.step,
                "world_size": self.dist.world_size,
                "config": to_dict(self.cfg),
                "data_position": {"epoch": self.epoch, "epoch_pos": self.epoch_pos, "batch_size": self.batch_size},
                "extra_state": self.method.extra_state(),
                "rng": all_rng,
                "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            save_checkpoint(self.run_dir / CHECKPOINT_DIR, self._state(), meta)
            inference = {k: self.ema.get(k, v) for k, v in self.nets.items()}
            save_inference_weights(self.run_dir / WEIGHTS_FILE, inference, self.method_cls.name, self.method_cls.version)
        self.last_good = self.step
        D.barrier(self.dist.world_size)

    def _load(self, ckpt: Path) -> None:
        state, meta = load_checkpoint(ckpt)
        check_method_matches(meta, ckpt, self.method_cls)
        self._check_resume_config(meta["config"], ckpt)
        for name, net in self.nets.items():
            load_module_state(net, state["nets"].get(name, {}), ckpt / "state.safetensors", name)
        for name, net in self.ema.items():
            if name in state["ema"]:
                load_module_state(net, state["ema"][name], ckpt / "state.safetensors", f"EMA {name}")
            else:  # EMA switched on at resume: start it from the training weights
                net.load_state_dict(self.nets[name].state_dict())
        for name, opt in self.optimizers.items():
            if name not in state["optimizers"]:
                raise CheckpointError(f"{ckpt}: no state for optimizer {name!r}")
            load_optimizer_state(opt, state["optimizers"][name], ckpt / JSON_FILE, name)
        for name, scaler in self.scalers.items():
            saved = state["scalers"].get(name) or {}
            if saved and scaler.is_enabled():
                scaler.load_state_dict(saved)
        self.step = int(meta["step"])
        pos = meta["data_position"]
        self.epoch, self.epoch_pos = int(pos["epoch"]), int(pos["epoch_pos"])
        try:
            self.method.load_extra_state(meta.get("extra_state") or {})
        except (TypeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{ckpt / JSON_FILE}: extra_state does not fit {self.method_cls.name!r} ({err})") from err
        rngs = meta.get("rng") or []
        if len(rngs) == self.dist.world_size:
            try:  # the generator's state depends on its device (checked here, not in read_checkpoint_meta)
                _set_rng_state(rngs[self.dist.rank], self.gen)
            except (TypeError, ValueError, RuntimeError) as err:
                raise CheckpointError(f"{ckpt / JSON_FILE}: rng[{self.dist.rank}] cannot be restored on {self.device} ({err})") from err
        elif self.dist.is_main:
            log.warning("%s: saved with %d process(es), resumed with %d: RNG streams restart (not bit-exact)",
                        ckpt, len(rngs), self.dist.world_size)
        self.last_good = self.step

    # -- data ------------------------------------------------------------------------------
    def _make_loader(self, batch_size: int) -> DataLoader:
        per_rank = self.sampler.num_samples
        if per_rank < batch_size:
            raise DataError(
                f"{self.data}: the training split has {len(self.dataset)} item(s) "
                f"({per_rank} per process), fewer than the batch size {batch_size}; lower batch_size"
            )
        workers = self.cfg.num_workers
        gen = torch.Generator()
        gen.manual_seed(derive_seed(self.cfg.seed, 2000 + self.dist.rank))
        return DataLoader(
            self.items, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
            drop_last=True,  # full batches only: BatchNorm statistics and images/step stay constant
            pin_memory=self.device.type == "cuda", generator=gen, worker_init_fn=_worker_init,
            persistent_workers=workers > 0,
        )

    def _next_batch(self) -> Any:
        """Next batch, rebuilding the loader when the method's batch size changes or an epoch ends."""
        size = self.method.batch_size(self.step) or self.cfg.batch_size
        if size != self.batch_size or self.loader is None:
            self.loader = self._make_loader(size)
            self.batch_size = size
            self.loader_iter = None
        for _ in range(2):
            if self.loader_iter is None:
                self.sampler.set_position(self.epoch, self.epoch_pos)
                self.loader_iter = iter(self.loader)
            try:
                batch = next(self.loader_iter)
                self.epoch_pos += size
                return batch
            except StopIteration:  # epoch over (a partial last batch is dropped)
                self.epoch += 1
                self.epoch_pos = 0
                self.loader_iter = None
        raise DataError(f"{self.data}: the data loader yielded no batch")

    # -- logging ---------------------------------------------------------------------------
    def _finalize_ema(self) -> None:
        if self.ema:
            with torch.no_grad():
                self.method.finalize_ema(self.ema)
            for net in self.ema.values():
                net.eval()

    def _sample_grid(self) -> None:
        self._finalize_ema()
        nets = {k: self.ema.get(k, v) for k, v in self.nets.items()}
        modes = {k: v.training for k, v in nets.items()}
        for v in nets.values():
            v.eval()
        try:
            with torch.no_grad():
                images = self.method.sample_grid(nets, self.cfg.n_samples, self.cfg.seed)
        finally:
            for k, v in nets.items():
                v.train(modes[k])
        if images is None:
            return
        save_image_grid(images, self.run_dir / SAMPLES_DIR / f"step_{self.step:06d}.png")

    def _write_metrics(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, self.step)

    def _truncate_metrics(self) -> None:
        """On resume, drop log lines written after the checkpoint (they will be logged again)."""
        path = self.run_dir / METRICS_FILE
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
        from mammosynth.io import write_text_atomic

        write_text_atomic(path, "".join(k + "\n" for k in keep))

    def _peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            torch.cuda.reset_peak_memory_stats(self.device)
            return round(peak, 1)
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # process RSS peak

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> Path:
        self.dist, self.device = D.init_distributed(self.cfg.device)
        return self._run()

    def _run(self) -> Path:
        cfg = self.cfg
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self._build()
        self.run_dir, ckpt = self._setup_run_dir()
        self.last_good: int | None = None
        if ckpt is not None:
            saved = read_run_config(self.run_dir)
            if saved.get("data", {}).get("patch_size") != self.data_info.get("patch_size"):
                raise CheckpointError(
                    f"{self.run_dir / CONFIG_FILE}: trained on patch size {saved.get('data', {}).get('patch_size')}, "
                    f"but {self.data} has patch size {self.data_info.get('patch_size')}"
                )
            self._load(ckpt)
        elif self.dist.is_main:
            write_json_atomic(self.run_dir / CONFIG_FILE, {
                "method": self.method_cls.name,
                "method_version": self.method_cls.version,
                "mammosynth_version": __version__,
                "config": to_dict(cfg),
                "config_source": self.config_source,
                "data": self.data_info,
                "world_size": self.dist.world_size,
                "device": str(self.device),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            })
        self.tb = None
        if self.dist.is_main:
            if ckpt is not None:
                self._truncate_metrics()
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir))
            except ImportError:  # TensorBoard is optional; metrics.jsonl always exists
                self.tb = None

        self.dataset = self.method.make_dataset(str(self.data), "train")
        if len(self.dataset) == 0:  # type: ignore[arg-type]
            raise DataError(f"{self.data}: the training split is empty")
        self.items = SeededItems(self.dataset)
        self.sampler = ResumableSampler(self.dataset, self.dist.world_size, self.dist.rank, cfg.seed)
        self.loader: DataLoader | None = None
        self.loader_iter = None
        self.batch_size = 0
        ctx = _Context(self)
        for net in self.nets.values():
            net.train()

        try:
            self._loop(ctx)
        finally:
            if self.tb is not None:
                self.tb.close()
        return self.run_dir

    def _loop(self, ctx: _Context) -> None:
        cfg = self.cfg
        start_step = self.step
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}  # steps that measured each value (metrics may be absent in some)
        absent: set[str] = set()
        n_logged = 0
        images_since = 0
        t_last = time.perf_counter()
        bar = _progress(self.show_progress and self.dist.is_main)
        with bar:
            task = bar.add_task(self.method_cls.name, total=cfg.steps, completed=self.step, info="")
            while self.step < cfg.steps:
                batch = _to_device(self._next_batch(), self.device, self.channels_last)
                ctx.step = self.step
                ctx.losses = []
                losses = self.method.train_step(batch, ctx)
                values = self._check_finite(losses, ctx.losses)
                if self.dist.enabled:
                    for net in self.nets.values():  # BatchNorm running stats follow rank 0 (as DDP does)
                        D.broadcast_module_(net, buffers_only=True)
                self._update_ema()
                self.step += 1
                images_since += self.batch_size * self.dist.world_size
                for k, v in values.items():
                    if v is None:  # a metric with nothing to measure this step (e.g. no labelled item)
                        absent.add(k)
                        continue
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                n_logged += 1
                last = self.step == cfg.steps
                if cfg.log_every and (self.step % cfg.log_every == 0 or last):
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    now = time.perf_counter()
                    ips = images_since / max(now - t_last, 1e-9)
                    record = {
                        "step": self.step,
                        "epoch": self.epoch,
                        "kimg": round(self.step * self.batch_size * self.dist.world_size / 1000, 4),
                        **{k: v / counts[k] for k, v in sums.items()},
                        **{k: None for k in sorted(absent - set(sums))},  # absent all window: null, never NaN
                        "images_per_s": round(ips, 2),
                        "s_per_kimg": round(1000 / ips, 3) if ips > 0 else None,
                        "peak_mem_mb": self._peak_memory_mb(),
                        "lr": {k: o.param_groups[0]["lr"] for k, o in self.optimizers.items()},
                        "batch_size": self.batch_size,
                        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    }
                    info = "  ".join([f"{k} {v / counts[k]:.3f}" for k, v in sums.items()]
                                     + [f"{k} absent" for k in sorted(absent - set(sums))]) + f"  {ips:.1f} img/s"
                    bar.update(task, info=info)
                    if self.dist.is_main:
                        self._write_metrics(record)
                        log.info("step %d/%d %s", self.step, cfg.steps, info)
                    sums, counts, absent, n_logged, images_since, t_last = {}, {}, set(), 0, 0, time.perf_counter()
                if self.dist.is_main and cfg.sample_every and (self.step % cfg.sample_every == 0 or last):
                    self._sample_grid()
                if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or last:
                    self._save()
                bar.update(task, completed=self.step)
        if self.step == start_step and start_step >= cfg.steps and self.dist.is_main:
            log.info("run already at step %d of %d: nothing to do", self.step, cfg.steps)

    def _check_finite(self, losses: dict[str, Any], backward: list[tuple[str, torch.Tensor]]) -> dict[str, float | None]:
        """Python floats of the returned values; raise TrainingDiverged when a loss is NaN/inf (one sync).

        Only losses are guarded: every loss given to ``backward_step`` and every returned tensor
        (a loss or loss term). A returned Python number (an accuracy, a flag) or None is a
        metric: when it is None or not finite it is absent this step (None here, logged as null),
        never a divergence, so an accuracy over a batch with no labelled item stops nothing.
        """
        loss_keys = [k for k, v in losses.items() if isinstance(v, torch.Tensor)]
        names = loss_keys + [f"the loss given to backward_step for optimizer {n!r}" for n, _ in backward]
        tensors = [losses[k].detach().float().mean().to(self.device) for k in loss_keys]
        tensors += [t.float().mean() for _, t in backward]
        values = torch.stack(tensors).tolist() if tensors else []
        bad = [(n, v) for n, v in zip(names, values) if not math.isfinite(v)]
        if D.any_flag(bool(bad), self.device, self.dist.world_size):
            which = f"{bad[0][0]} = {bad[0][1]}" if bad else "a loss on another process"
            if self.last_good is not None:
                kept = f"the last good checkpoint (step {self.last_good}) is kept in {self.run_dir / CHECKPOINT_DIR}"
            else:
                kept = f"no checkpoint had been written yet (ckpt_every={self.cfg.ckpt_every})"
            raise TrainingDiverged(
                f"training diverged at step {self.step}: {which} is not finite; {kept}. "
                "Try a lower learning rate, amp=off, or resume with --resume"
            )
        out: dict[str, float | None] = dict(zip(loss_keys, values[: len(loss_keys)]))
        for k, v in losses.items():
            if k not in out:
                f = None if v is None else float(v)
                out[k] = f if f is not None and math.isfinite(f) else None
        return {k: out[k] for k in losses}

    @torch.no_grad()
    def _update_ema(self) -> None:
        if not self.ema:
            return
        # ramp (1+t)/(10+t) so short runs are not dominated by the random initial weights
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for name, ema in self.ema.items():
            net = self.nets[name]
            ema_p = [p for p in ema.parameters()]
            net_p = [p.detach() for p in net.parameters()]
            torch._foreach_lerp_(ema_p, net_p, 1.0 - decay)
            for b_ema, b in zip(ema.buffers(), net.buffers()):
                b_ema.copy_(b)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        disable=not enabled,
    )


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, ncol: int | None = None, pad: int = 2) -> Path:
    """Write (N,C,H,W) images in [-1,1] (C = 1 or 3) as one 8-bit PNG grid, atomically."""
    from PIL import Image

    from mammosynth.io import atomic_path

    x = images.detach().float().cpu().clamp(-1, 1)
    x = ((x + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    ncol = ncol or max(1, math.ceil(math.sqrt(n)))
    nrow = math.ceil(n / ncol)
    grid = torch.zeros((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    arr = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(path)


def train(
    method_name: str | type[Method],
    data: str | os.PathLike,
    out: str | os.PathLike,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    config_source: str | None = None,
) -> Path:
    """Train ``method_name`` (a registry name, or a Method subclass) on the store ``data``.

    ``out`` is the parent of numbered run folders; a new run gets the next number. With
    ``resume=True``, ``out`` may be a run folder or its parent (the latest run of this method
    is used) and the run continues bit-exactly from its checkpoint; ``cfg=None`` then reuses
    the run's saved config. Returns the run folder.
    """
    return Trainer(method_name, data, out, cfg, resume=resume, progress=progress, config_source=config_source).run()
