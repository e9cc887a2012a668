"""Training and generation speed of birads-aegan (64x64) and lesion-dcgan (128x128).

Each method's ``train_step`` (the library path the trainer calls) is timed against a plain
eager fp32 reference loop written here from scratch with the same networks and losses, in
the same process, rounds interleaved so that load from other processes hits both alike.
Variants: channels_last memory format, bf16 autocast (CPU or CUDA), and ``--compile``.
Generation rate: ``generate`` samples/s (birads-aegan: category mode incl. the convex
combination; lesion-dcgan: z -> image), seed features encoded once beforehand.

    OMP_NUM_THREADS=1 python benchmarks/bench_birads.py --batch 16 --rounds 3
    python benchmarks/bench_birads.py --device cuda --paper --batch 64   # paper widths

Prints one JSON object (and a short table on stderr).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mammosynth.models.birads_aegan import BiradsAEGAN, BiradsAEGANConfig
from mammosynth.models.lesion_dcgan import LesionDCGAN, LesionDCGANConfig
from _bench_context import BenchContext, sync  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


# -- eager fp32 references, written without the library's losses or train_step ----------------
def reference_aegan_step(nets, opts, batch, lam=(10.0, 10.0, 10.0, 300.0)):
    image, shape, margin = batch["image"], batch["shape"], batch["margin"]
    enc_in = torch.cat([image, nets["embed_margin"](margin), nets["embed_shape"](shape)], 1)
    fake = nets["decoder"](nets["encoder"](enc_in))
    ones, zeros = torch.ones(len(image)), torch.zeros(len(image))
    ones, zeros = ones.to(image.device), zeros.to(image.device)
    bce, ce = F.binary_cross_entropy_with_logits, lambda lg, y: F.cross_entropy(lg, y, ignore_index=-1)
    loss_d = 0
    for d_name, y, lam_d in (("disc_margin", margin, lam[0]), ("disc_shape", shape, lam[1])):
        rf_r, c_r = nets[d_name](image)
        rf_f, c_f = nets[d_name](fake.detach())
        loss_d = loss_d + bce(rf_r, ones) + bce(rf_f, zeros) + lam_d * (ce(c_r, y) + ce(c_f, y))
    opts["D"].zero_grad(set_to_none=True)
    loss_d.backward()
    opts["D"].step()
    rf1, m_lg = nets["disc_margin"](fake)
    rf2, s_lg = nets["disc_shape"](fake)
    loss_g = bce(rf1, ones) + bce(rf2, ones) + lam[2] * (ce(m_lg, margin) + ce(s_lg, shape)) + lam[3] * (fake - image).abs().mean()
    opts["G"].zero_grad(set_to_none=True)
    loss_g.backward()  # D's grads from this pass are cleared before D's next step
    opts["G"].step()


def reference_dcgan_step(nets, opts, batch, nz):
    G, D = nets["generator"], nets["discriminator"]
    real = batch["image"]
    z = torch.randn(len(real), nz, device=real.device)
    fake = G(z)
    ones, zeros = torch.ones(len(real), device=real.device), torch.zeros(len(real), device=real.device)
    loss_d = F.binary_cross_entropy_with_logits(D(real), ones) + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros)
    opts["D"].zero_grad(set_to_none=True)
    loss_d.backward()
    opts["D"].step()
    loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
    opts["G"].zero_grad(set_to_none=True)
    loss_g.backward()
    opts["G"].step()


# -- timing -------------------------------------------------------------------------------------
def time_steps(fn, n_steps, device):
    fn()  # warm-up (allocator, oneDNN primitive cache, CUDA kernels)
    sync(device)
    t = time.perf_counter()
    for _ in range(n_steps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / n_steps


def bench_training(method, make_batch, reference, variants, device, batch, steps, rounds):
    """images/s per variant; ``reference`` and each variant get their own copy of the networks."""
    import copy

    results = {name: [] for name in ["reference_eager_fp32", *variants]}
    runners = {}
    ref_nets = copy.deepcopy(method.nets).to(device)
    ref_opts = type(method)(method.cfg, method.data_info).build_optimizers()  # throwaway for param groups
    ref_opts = {k: type(o)([p for p in _params_for(ref_nets, method, k)], **o.defaults) for k, o in ref_opts.items()}
    data = make_batch()
    data = {k: v.to(device) for k, v in data.items()}
    runners["reference_eager_fp32"] = lambda: reference(ref_nets, ref_opts, data)
    for name, opts_v in variants.items():
        m = type(method)(method.cfg, method.data_info)
        m.nets.load_state_dict(method.nets.state_dict())
        m.nets.to(device)
        b = dict(data)
        if opts_v.get("channels_last"):
            m.nets.to(memory_format=torch.channels_last)
            b["image"] = b["image"].contiguous(memory_format=torch.channels_last)
        nets = {k: (torch.compile(v) if opts_v.get("compile") else v) for k, v in m.nets.items()}
        ctx = BenchContext(nets, m.build_optimizers(), device, opts_v.get("amp"))
        runners[name] = (lambda m=m, b=b, ctx=ctx: m.train_step(b, ctx))
    for _ in range(rounds):
        for name, fn in runners.items():
            results[name].append(batch / time_steps(fn, steps, device))
    return {name: statistics.median(v) for name, v in results.items()}


def _params_for(nets, method, opt_name):
    groups = {"birads-aegan": {"G": ("embed_margin", "embed_shape", "encoder", "decoder"), "D": ("disc_margin", "disc_shape")},
              "lesion-dcgan": {"G": ("generator",), "D": ("discriminator",)}}[method.name]
    return [p for k in groups[opt_name] for p in nets[k].parameters()]


def tiny_phantom_like_store(path, n=64, size=64):
    """Random ellipses with labels (the benchmark must not depend on the phantom's speed)."""
    from mammosynth.data.birads import MARGINS, SHAPES, Label
    from mammosynth.data.records import LesionRecord
    from mammosynth.data.store import StoreWriter

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    with StoreWriter(path, patch_size=size, normal_size=(64, 64)) as w:
        for i in range(n):
            s, mg = SHAPES[i % 4], MARGINS[i % 5]
            mask = (yy / rng.uniform(0.1, 0.3)) ** 2 + (xx / rng.uniform(0.1, 0.3)) ** 2 <= 1
            patch = (0.2 + 0.1 * rng.random((size, size)) + 0.6 * mask).astype(np.float32)
            w.add_lesion(LesionRecord("bench", f"L{i}", f"P{i}", patch, mask, Label(s, s, "exact"), Label(mg, mg, "exact"),
                                      Label(None, None, "missing"), split_hint="train"))
    return path


def bench_generation(method, n, device, **opts):
    sync(device)
    list(method.generate(min(n, 8), seed=1, **opts))  # warm-up + seed features encoded once
    t = time.perf_counter()
    out = list(method.generate(n, seed=0, **opts))
    sync(device)
    return len(out) / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--paper", action="store_true", help="paper widths (base 64) instead of the demo widths (16)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--gen-n", type=int, default=64)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    width = 64 if args.paper else 16
    variants = {"train_step_fp32": {}, "train_step_channels_last": {"channels_last": True},
                "train_step_bf16_autocast": {"amp": torch.bfloat16}}
    if args.compile:
        variants["train_step_compile"] = {"compile": True}
    B = args.batch
    out = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": B,
           "widths": "paper" if args.paper else "demo", "note": "shared machine: other processes load the CPU"}

    with tempfile.TemporaryDirectory() as tmp:
        store = tiny_phantom_like_store(Path(tmp) / "bench.h5")
        aegan = BiradsAEGAN(BiradsAEGANConfig(patch_size=64, base_channels=width, max_channels=width * 8),
                            {"patch_size": 64, "store_path": str(store)})

        def aegan_batch():
            return {"image": torch.rand(B, 1, 64, 64) * 2 - 1, "shape": torch.randint(-1, 4, (B,)), "margin": torch.randint(-1, 5, (B,))}

        out["birads_aegan_64_train_img_per_s"] = bench_training(aegan, aegan_batch, reference_aegan_step, variants, device, B,
                                                                args.steps, args.rounds)
        aegan.nets.to(device)
        aegan.on_load()
        out["birads_aegan_64_generate_img_per_s"] = bench_generation(aegan, args.gen_n, device, shape="round", margin="spiculated",
                                                                     batch_size=64)

        dcgan = LesionDCGAN(LesionDCGANConfig(patch_size=128, g_channels=width, d_channels=width, max_channels=width * 16), {})

        def dcgan_batch():
            return {"image": torch.rand(B, 1, 128, 128) * 2 - 1}

        out["lesion_dcgan_128_train_img_per_s"] = bench_training(
            dcgan, dcgan_batch, lambda n, o, b: reference_dcgan_step(n, o, b, 200), variants, device, B, args.steps, args.rounds)
        dcgan.nets.to(device)
        dcgan.on_load()
        out["lesion_dcgan_128_generate_img_per_s"] = bench_generation(dcgan, args.gen_n, device, batch_size=64)

    for key in ("birads_aegan_64_train_img_per_s", "lesion_dcgan_128_train_img_per_s"):
        ref = out[key]["reference_eager_fp32"]
        out[key.replace("img_per_s", "ratio_vs_reference")] = {k: v / ref for k, v in out[key].items()}
    for key, val in out.items():
        print(f"{key}: {json.dumps(val, default=lambda x: round(x, 3)) if isinstance(val, dict) else val}", file=sys.stderr)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
