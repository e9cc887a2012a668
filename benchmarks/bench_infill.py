"""Infilling GAN training throughput (seed 001): the method's ``train_step`` vs a plain eager
fp32 loop of the same networks and losses, in the same process.

For each generator (U-Net, CRN), patch size and batch size it times ``--steps`` training
iterations of each path after ``--warmup`` (the two paths' steps interleaved, so load drift on
a shared machine hits both alike) and reports images/s for both, and their ratio (method /
eager; > 1 means the method path is faster). The eager reference builds the same Tri-label, runs the
same G, PatchGAN and feature-matching loss with zero_grad/backward/step and nothing else (no
autocast, no channels_last, no compile, no requires_grad toggling).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_infill.py --sizes 128 --batches 1 4
    # GPU: --device cuda --amp bf16 --channels-last --compile --batches 64

Numbers on a shared machine are noisy: compare the ratio, and rerun before trusting a small
difference. Prints a table and, with ``--json FILE``, writes the rows.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass

import torch

from mammosynth.data.context import tri_label
from mammosynth.losses import d_loss_bce, g_loss_bce
from mammosynth.models.infill import InfillConfig, InfillGAN, feature_matching_l1
from _bench_context import BenchContext, make_batch, sync  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def eager_step(method: InfillGAN, G, D, opts, batch, gen: torch.Generator) -> None:
    """The reference: eq. 3-5 written as a plain fp32 loop over the same modules."""
    cfg = method.cfg
    real, mask = batch["image"], batch["mask"]
    cond = tri_label(real, mask, cfg.margin_factor, cfg.two_channel, gen)
    fake = G(cond)
    loss_d = 0.5 * d_loss_bce(D(cond, real), D(cond, fake.detach()))
    opts["D"].zero_grad(set_to_none=True)
    loss_d.backward()
    opts["D"].step()
    fm = method.feature_matching()
    if fm is not None:
        loss_fm, _ = fm(real, fake)
        logits = D(cond, fake)
    else:
        logits, ff = D(cond, fake, return_features=True)
        with torch.no_grad():
            _, rf = D(cond, real, return_features=True)
        loss_fm, _ = feature_matching_l1([real] + rf, [fake] + ff)
    loss_g = g_loss_bce(logits) + cfg.lambda_fm * loss_fm
    opts["G"].zero_grad(set_to_none=True)
    loss_g.backward()
    opts["G"].step()


@dataclass
class Row:
    generator: str
    size: int
    batch: int
    method_ips: float
    eager_ips: float
    feature_matching: str

    @property
    def ratio(self) -> float:
        return self.method_ips / self.eager_ips if self.eager_ips else float("nan")


def _time_interleaved(fns, steps: int, warmup: int, device: torch.device, warm_fns) -> list[float]:
    """Seconds spent in each of ``fns`` over ``steps`` calls, the calls interleaved
    (a, b, a, b, ...) so that load drifting on a shared machine hits both alike."""
    for _ in range(warmup):
        for w in warm_fns:
            w()
    sync(device)
    spent = [0.0] * len(fns)
    for _ in range(steps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            sync(device)
            spent[i] += time.perf_counter() - t0
    return spent


def bench_one(generator: str, size: int, batch: int, args, device: torch.device) -> Row:
    cfg = InfillConfig(generator=generator, patch_size=size, ngf=args.ngf, ndf=args.ndf, batch_size=batch,
                       fm_weights=args.fm_weights, weights_dir=args.weights_dir)
    data = make_batch(batch, size, device)
    # method path: the nets as the trainer would prepare them
    torch.manual_seed(0)
    method = InfillGAN(cfg, {"patch_size": size})
    method.nets.to(device).train()
    if args.channels_last:
        method.nets.to(memory_format=torch.channels_last)
    fm = method.feature_matching()
    if fm is not None:
        fm.to(device)
    opts = method.build_optimizers()
    step_nets = {k: (torch.compile(v) if args.compile else v) for k, v in method.nets.items()}
    ctx = BenchContext(step_nets, opts, device, args.amp)
    # eager reference: fresh copies of the same networks, fp32, contiguous, no compile
    torch.manual_seed(0)
    ref = InfillGAN(cfg, {"patch_size": size})
    ref.nets.to(device).train()
    ref._fm, ref._fm_resolved, ref.fm_status = method._fm, True, method.fm_status
    ref_opts = ref.build_optimizers()
    gen = torch.Generator(device=device).manual_seed(0)
    G, D = ref.nets["generator"], ref.nets["discriminator"]
    # warm-up at the timed shape by default: the first call at a new shape pays one-off kernel set-up
    warm = {k: v[: min(batch, args.warmup_batch or batch)] for k, v in data.items()}
    method_s, eager_s = _time_interleaved(
        [lambda: method.train_step(data, ctx), lambda: eager_step(ref, G, D, ref_opts, data, gen)],
        args.steps, args.warmup, device,
        [lambda: method.train_step(warm, ctx), lambda: eager_step(ref, G, D, ref_opts, warm, gen)])
    n_img = args.steps * batch
    return Row(generator, size, batch, n_img / method_s, n_img / eager_s, method.fm_status)


def main(argv: list[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generators", nargs="+", default=["unet", "crn"], choices=["unet", "crn"])
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16])
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--steps", type=int, default=2, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--warmup-batch", type=int, default=0, help="images per warm-up step (0 = the full batch; a smaller one skips first-call costs at the timed shape)")
    p.add_argument("--fm-weights", default="auto", choices=["vgg19", "vgg16", "auto", "discriminator"])
    p.add_argument("--weights-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="method path only")
    p.add_argument("--channels-last", action="store_true", help="method path only")
    p.add_argument("--compile", action="store_true", help="method path only")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"
    print(f"# infill training throughput on {device} ({where}); ngf={args.ngf} ndf={args.ndf}; "
          f"{args.steps} timed step(s) after {args.warmup} warm-up; method: amp={args.amp} "
          f"channels_last={args.channels_last} compile={args.compile}; eager: fp32")
    rows = []
    print(f"{'gen':5} {'size':>5} {'batch':>5} {'method img/s':>13} {'eager img/s':>12} {'ratio':>6}")
    for generator in args.generators:
        for size in args.sizes:
            for batch in args.batches:
                row = bench_one(generator, size, batch, args, device)
                rows.append(row)
                print(f"{row.generator:5} {row.size:5d} {row.batch:5d} {row.method_ips:13.3f} {row.eager_ips:12.3f} {row.ratio:6.2f}", flush=True)
    if rows:
        print(f"# feature matching: {rows[0].feature_matching}")
    if args.json:
        from mammosynth.io import write_json_atomic

        write_json_atomic(args.json, [{**r.__dict__, "ratio": r.ratio, "device": str(device)} for r in rows])
    return rows


if __name__ == "__main__":
    main()
