"""Mask DCGAN training speed: the generic trainer vs a plain eager fp32 loop of the same networks.

Both run in this process on the same random-ellipse mask store. The reference loop keeps the
masks in memory as one tensor and does exactly the method's D and G updates (Adam, logit BCE)
with nothing else; the trainer adds HDF5 reads + augmentation, per-item seeding, the NaN
guard, EMA, metrics and checkpoints. ratio = trainer images/s / reference images/s
(1.0 = no overhead). A second trainer run reads the masks from memory without augmentation
(``trainer_in_memory``), which separates the loop's own overhead from the data pipeline.
Steady state only: the first ``--warmup`` steps of each are not timed.

    python benchmarks/bench_mask_dcgan.py                       # CPU, eager fp32, 64 x 64
    python benchmarks/bench_mask_dcgan.py --device cuda --amp bf16 --compile --batch 64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mammosynth.data.birads import map_cbis_margin, map_cbis_shape, map_pathology
from mammosynth.data.records import LesionRecord
from mammosynth.data.store import StoreWriter
from mammosynth.losses import d_loss_bce, g_loss_bce
from mammosynth.models.mask_dcgan import MaskDCGAN, MaskDCGANConfig, sample_latent
from mammosynth.train.method import requires_grad
from mammosynth.train.trainer import train


def make_store(path: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    with StoreWriter(path, patch_size=size, normal_size=(64, 48)) as w:
        for i in range(n):
            cy, cx = rng.uniform(0.4, 0.6, 2) * size
            a, b = rng.uniform(0.15, 0.3, 2) * size
            t = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
            v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
            w.add_lesion(LesionRecord(
                source="bench", source_id=f"L{i}", patient_id=f"P{i}", patch=rng.random((size, size)).astype(np.float32),
                mask=(u / a) ** 2 + (v / b) ** 2 <= 1, shape=map_cbis_shape("OVAL"), margin=map_cbis_margin("CIRCUMSCRIBED"),
                pathology=map_pathology("BENIGN"), split_hint="train",
            ))
    return path


def reference_loop(cfg: MaskDCGANConfig, store: Path, device: torch.device, warmup: int, steps: int) -> float:
    """Images/s of a plain eager fp32 loop: in-memory masks, the method's two updates, no extras."""
    from mammosynth.data.store import Store

    with Store(store) as s:
        masks = torch.from_numpy(s.lesions(split="train").mask).float()[:, None].to(device) * 2 - 1
    torch.manual_seed(cfg.seed)
    method = MaskDCGAN(cfg, {"patch_size": cfg.size, "image_size": cfg.size})
    G, D = method.nets["generator"].to(device), method.nets["discriminator"].to(device)
    opt = method.build_optimizers()
    gen = torch.Generator(device=device).manual_seed(0)
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        real = masks[torch.randint(0, len(masks), (cfg.batch_size,), device=device, generator=gen)]
        z = sample_latent(cfg.batch_size, cfg.nz, cfg.latent, gen)
        fake = G(z)
        loss_d = d_loss_bce(D(real), D(fake.detach()))
        opt["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        opt["D"].step()
        with requires_grad(D, False):
            loss_g = g_loss_bce(D(fake))
            opt["G"].zero_grad(set_to_none=True)
            loss_g.backward()
            opt["G"].step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


class InMemoryMasks(torch.utils.data.Dataset):
    """The store's masks held in memory, no augmentation: isolates the loop from HDF5 reads."""

    def __init__(self, store: str) -> None:
        from mammosynth.data.store import Store

        with Store(store) as s:
            self.masks = torch.from_numpy(s.lesions(split="train").mask).float()[:, None]

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"mask": self.masks[i]}


class MaskDCGANInMemory(MaskDCGAN):
    def make_dataset(self, store_path: str, split: str = "train") -> torch.utils.data.Dataset:
        return InMemoryMasks(store_path)


def trainer_run(cfg: MaskDCGANConfig, store: Path, out: Path, warmup: int, method=None) -> tuple[float, float]:
    """(steady images/s from metrics.jsonl, wall seconds of the whole train() call)."""
    t0 = time.perf_counter()
    run = train(method or "mask-dcgan", store, out, cfg, progress=False)
    wall = time.perf_counter() - t0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if r["step"] > warmup]
    seconds = sum(cfg.batch_size * 1 / r["images_per_s"] for r in timed)  # log_every = 1
    return len(timed) * cfg.batch_size / seconds, wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ngf", type=int, default=64, help="generator/discriminator width (the paper's DCGAN: 64)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="off", choices=["off", "bf16", "fp16", "auto"], help="trainer only; the reference is fp32")
    ap.add_argument("--channels-last", action="store_true", help="trainer only (CUDA)")
    ap.add_argument("--compile", action="store_true", help="trainer only")
    ap.add_argument("--num-workers", type=int, default=0)
    args = ap.parse_args(argv)

    device = torch.device(args.device if args.device != "cuda" else "cuda:0")
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp) / "masks.h5", n=max(256, 4 * args.batch), size=args.size)
        cfg = MaskDCGANConfig(
            steps=args.warmup + args.steps, batch_size=args.batch, ngf=args.ngf, ndf=args.ngf, size=args.size,
            device=args.device, amp=args.amp, channels_last=args.channels_last, compile=args.compile,
            num_workers=args.num_workers, log_every=1, sample_every=0, ckpt_every=0,
        )
        ref = reference_loop(MaskDCGANConfig(**{**cfg.__dict__, "amp": "off", "compile": False}), store, device, args.warmup, args.steps)
        ips, wall = trainer_run(cfg, store, Path(tmp) / "runs", args.warmup)
        ips_mem, _ = trainer_run(cfg, store, Path(tmp) / "runs", args.warmup, MaskDCGANInMemory)
    result = {
        "size": args.size, "batch": args.batch, "ngf": args.ngf, "device": str(device), "threads": torch.get_num_threads(),
        "trainer": {"amp": args.amp, "channels_last": args.channels_last, "compile": args.compile},
        "reference_images_per_s": round(ref, 1), "trainer_images_per_s": round(ips, 1),
        "ratio_trainer_over_reference": round(ips / ref, 3),
        "trainer_in_memory_images_per_s": round(ips_mem, 1),
        "ratio_trainer_in_memory_over_reference": round(ips_mem / ref, 3),
        "trainer_wall_s_incl_setup_and_final_ckpt": round(wall, 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
