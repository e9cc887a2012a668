"""diffusion-infill speed: training images/s against an eager fp32 reference loop in the same
process, sampling lesions/s at 25 and 50 DDIM steps, and ``insert`` time against the infill GAN.

* **train**: the method's ``train_step`` (as the trainer runs it: the config's autocast and
  channels_last) against a plain fp32 loop over the same UNet (Tri-label, DDPM forward noising,
  v target, weighted MSE, zero_grad/backward/step; nothing else), the steps interleaved so load
  drift on a shared machine hits both alike. Ratio > 1: the method path is faster.
* **sample**: ``infill`` (DDIM with context replacement + composite) on ``--sample-batches``
  patches at each of ``--sampler-steps``; lesions/s. ``--guidance 2`` adds the second
  (null-label) pass of classifier-free guidance.
* **insert** (``--insert N``): ``insert_lesions`` on N synthetic 16-bit breast PNGs with the same
  stand-in mask model, once with the infill GAN (configs/infill-demo.yaml networks) and once
  with diffusion-infill (configs/diffusion-infill-demo.yaml, its default step count): seconds
  per image and the ratio. Untrained networks: the compute is the trained one's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_diffusion.py --threads 1 --insert 6
    # GPU: --device cuda --config diffusion-infill-full.yaml --batches 16 --sample-batches 16

Prints a table; ``--json FILE`` writes every number. ``--clock cpu`` times with the process's
CPU time instead of the wall clock: on a shared, oversubscribed machine with ``--threads 1``
that is what the work costs on an idle core (the wall clock counts the waits for a core too).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _bench_context import BenchContext, make_batch, sync  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from mammosynth.config import default_config_path, load_config
from mammosynth.models.diffusion_infill import DiffusionInfill, DiffusionInfillConfig

ROOT = Path(__file__).resolve().parents[1]
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def eager_step(method: DiffusionInfill, net, opt, batch, gen: torch.Generator) -> None:
    """The reference: the same denoising loss written as a plain fp32 loop."""
    from monai.networks.schedulers import DDPMScheduler

    from mammosynth.data.context import enlarge_mask, tri_label
    from mammosynth.models.diffusion_infill import label_index

    cfg = method.cfg
    x0, mask = batch["image"], batch["mask"]
    sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, schedule=cfg.schedule, prediction_type=cfg.prediction)
    cond = tri_label(x0, mask, cfg.margin_factor, False, gen)
    labels = label_index(batch["shape"], batch["margin"]).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen, device=x0.device)
    t = torch.randint(0, cfg.num_train_timesteps, (x0.shape[0],), generator=gen, device=x0.device)
    pred = net(sched.add_noise(x0, noise, t), cond, t, labels)
    region = (enlarge_mask(mask, cfg.margin_factor) | (mask > 0.5)).float()
    w = region + (1 - region) * cfg.outside_weight
    loss = (w * (pred - sched.get_velocity(x0, noise, t)) ** 2).sum() / w.sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _interleaved(fns, steps: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    spent = [0.0] * len(fns)
    for _ in range(steps):
        for i, fn in enumerate(fns):
            t0 = clock()
            fn()
            sync(device)
            spent[i] += clock() - t0
    return spent


def bench_train(cfg: DiffusionInfillConfig, size: int, batch: int, args, device: torch.device) -> dict:
    from mammosynth.train.trainer import cpu_has_native_bf16  # the trainer's rule for amp: auto

    amp = args.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "off"
    data = make_batch(batch, size, device, labels=True)
    torch.manual_seed(0)
    method = DiffusionInfill(cfg, {"patch_size": size})
    method.nets.to(device).train()
    if cfg.channels_last:
        method.nets.to(memory_format=torch.channels_last)
    opts = method.build_optimizers()
    step_nets = {k: (torch.compile(v) if args.compile else v) for k, v in method.nets.items()}
    ctx = BenchContext(step_nets, opts, device, None if amp == "off" else amp)
    torch.manual_seed(0)
    ref = DiffusionInfill(cfg, {"patch_size": size})
    ref.nets.to(device).train()
    ref_opt = ref.build_optimizers()["unet"]
    gen = torch.Generator(device=device).manual_seed(0)
    m_s, e_s = _interleaved([lambda: method.train_step(data, ctx), lambda: eager_step(ref, ref.nets["unet"], ref_opt, data, gen)],
                            args.steps, args.warmup, device)
    n = args.steps * batch
    return {"size": size, "batch": batch, "amp": amp, "channels_last": cfg.channels_last, "compile": args.compile,
            "method_img_s": n / m_s, "eager_fp32_img_s": n / e_s, "ratio": (n / m_s) / (n / e_s)}


def bench_sample(cfg: DiffusionInfillConfig, size: int, batch: int, steps: int, guidance: float, args,
                 device: torch.device) -> dict:
    method = DiffusionInfill(cfg, {"patch_size": size})
    method.nets.to(device).eval()
    data = make_batch(batch, size, device, seed=1, labels=True)
    labels = {"shape": data["shape"], "margin": data["margin"]} if guidance != 1.0 else {}
    gen = torch.Generator(device=device).manual_seed(0)
    method.infill(data["image"][:1], data["mask"][:1], gen, steps=2)  # warm-up
    sync(device)
    t0 = clock()
    reps = max(1, args.sample_reps)
    for _ in range(reps):
        method.infill(data["image"], data["mask"], gen, steps=steps, guidance_scale=guidance, **labels)
    sync(device)
    secs = (clock() - t0) / reps
    return {"size": size, "batch": batch, "sampler_steps": steps, "guidance_scale": guidance,
            "lesions_s": batch / secs, "s_per_batch": secs}


class _Masks:
    """Stand-in mask model: a seeded ellipse in a 32x32 patch (the same for both infill models)."""

    def sample_masks(self, n, seed):
        yy, xx = np.mgrid[:32, :32]
        a, b = np.random.default_rng(seed).uniform(7, 11, size=2)
        return (((yy - 16) / a) ** 2 + ((xx - 16) / b) ** 2 <= 1)[None]


def _synthetic_breasts(folder: Path, n: int, h: int = 4084, w: int = 3328) -> None:
    """n 16-bit PNG 'mammograms' of a full-field detector's size (4084 x 3328, as
    benchmarks/bench_insert.py): a half-ellipse breast with smooth texture, left-oriented."""
    from PIL import Image
    from scipy import ndimage

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    breast = ((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.8 * w)) ** 2 < 1
    for i in range(n):
        tex = ndimage.zoom(ndimage.gaussian_filter(rng.normal(size=(h // 4, w // 4)), 3), 4, order=1)[:h, :w]
        img = np.where(breast, 0.45 + 0.15 * tex / np.abs(tex).max(), 0.02)
        Image.fromarray(np.round(np.clip(img, 0, 1) * 4095).astype(np.uint16)).save(folder / f"b{i:02d}_L_CC.png")


def bench_insert(n: int, device: torch.device) -> dict:
    from mammosynth.models.infill import InfillConfig, InfillGAN
    from mammosynth.synth.insert import insert_lesions

    gan_cfg = load_config(InfillConfig, default_config_path("infill", "demo"))
    dif_cfg = load_config(DiffusionInfillConfig, default_config_path("diffusion-infill", "demo"))
    models = {"infill (GAN)": InfillGAN(gan_cfg, {"patch_size": 64}),
              f"diffusion-infill ({dif_cfg.sampler_steps} DDIM steps)": DiffusionInfill(dif_cfg, {"patch_size": 64})}
    out: dict = {"n_images": n}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        _synthetic_breasts(src, n)
        for k, (name, model) in enumerate(models.items()):
            model.nets.to(device)
            model.on_load()
            insert_lesions(_Masks(), model, src, 1, Path(tmp) / f"warm{k}", seed=0, pixel_spacing=0.1, progress=False)
            t0 = clock()
            rep = insert_lesions(_Masks(), model, src, n, Path(tmp) / f"out{k}", seed=0, pixel_spacing=0.1, progress=False)
            out[name] = {"s_per_image": (clock() - t0) / max(1, rep.written), "written": rep.written}
    names = list(models)
    out["ratio_diffusion_over_gan"] = out[names[1]]["s_per_image"] / out[names[0]]["s_per_image"]
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="diffusion-infill-demo.yaml", help="config under configs/ (default the CPU demo)")
    p.add_argument("--size", type=int, default=64, help="patch side in px (default 64)")
    p.add_argument("--batches", nargs="*", type=int, default=[8], help="training batch sizes (default 8, the demo's; none = skip)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per path")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"], help="method path (auto: the trainer's rule)")
    p.add_argument("--compile", action="store_true", help="method path only")
    p.add_argument("--sampler-steps", nargs="*", type=int, default=[25, 50], help="DDIM steps for the sampling rows (none = skip)")
    p.add_argument("--sample-batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--sample-reps", type=int, default=1)
    p.add_argument("--guidance", type=float, default=1.0, help="guidance scale for the sampling rows (1 = one pass)")
    p.add_argument("--insert", type=int, default=0, help="also time insert on this many 4084 x 3328 images, GAN vs diffusion (0 = skip)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="wall clock, or process CPU time (see above)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    global clock
    clock = CLOCK[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cfg = load_config(DiffusionInfillConfig, ROOT / "configs" / args.config)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"
    print(f"# diffusion-infill speed on {device} ({where}); config {args.config}: channels {cfg.channels}, "
          f"space_to_depth {cfg.space_to_depth}, {args.size} px; {args.clock} clock")
    result: dict = {"device": str(device), "where": where, "config": args.config, "clock": args.clock, "train": [], "sample": []}
    print(f"{'batch':>5} {'amp':>5} {'method img/s':>13} {'eager fp32 img/s':>17} {'ratio':>6}")
    for b in args.batches:
        r = bench_train(cfg, args.size, b, args, device)
        result["train"].append(r)
        print(f"{b:5d} {r['amp']:>5} {r['method_img_s']:13.2f} {r['eager_fp32_img_s']:17.2f} {r['ratio']:6.2f}", flush=True)
    print(f"{'steps':>5} {'batch':>5} {'lesions/s':>10} {'s/batch':>8}")
    for steps in args.sampler_steps:
        for b in args.sample_batches:
            r = bench_sample(cfg, args.size, b, steps, args.guidance, args, device)
            result["sample"].append(r)
            print(f"{steps:5d} {b:5d} {r['lesions_s']:10.2f} {r['s_per_batch']:8.2f}", flush=True)
    if args.insert:
        r = bench_insert(args.insert, device)
        result["insert"] = r
        for k, v in r.items():
            if isinstance(v, dict):
                print(f"insert {k}: {v['s_per_image']:.2f} s/image ({v['written']} written)")
        print(f"insert diffusion / GAN time: {r['ratio_diffusion_over_gan']:.2f}x", flush=True)
    if args.json:
        from mammosynth.io import write_json_atomic

        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
