"""Training throughput of the full-mammogram and inversion methods (seeds 002 and 004) at demo
size: each method's ``train_step`` vs a plain eager fp32 loop of the same networks and losses,
in the same process.

Rows: mask-embedding (last phase, and mid fade-in), its no-embedding and pix2pix baselines,
stylegan (lazy-R1 step and R1 step averaged by running ``r1_every`` steps), stylegan-encoder.
The eager reference runs the same forward passes and losses with zero_grad/backward/step and
nothing else (no autocast, no requires_grad toggling). A ratio > 1 means the method path is
faster. With ``--modconv`` stylegan is also timed with StyleGAN2's per-sample grouped
modulated convolution (the published formulation) instead of our input-modulation /
output-demodulation form (same maths).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fullmammo.py --steps 6 --modconv
    # GPU: --device cuda --amp bf16

``--inversion ENCODER_RUN --data STORE`` instead measures reconstruction quality of held-out
lesions (the store's test split): PSNR and LPIPS (VGG, official linear layers; the VGG16
conv4_3 feature distance when LPIPS weights are absent) for G(E(x)) alone vs after the eq. 4
optimisation, and prints a table (``--inv-steps``, ``--n``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fullmammo.py --inversion RUNS/00001-stylegan-encoder --data phantom.h5

Numbers on a shared machine are noisy: compare ratios, and rerun before trusting a small
difference. Prints a table; ``--json FILE`` writes the rows.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import torch
import torch.nn.functional as F

from mammosynth.config import load_config
from mammosynth.losses import d_loss_bce, d_loss_wgan, g_loss_bce, g_loss_wgan, gradient_penalty, r1_penalty
from mammosynth.models.mask_embedding import MaskEmbeddingConfig, MaskEmbeddingGAN, sobel_edges
from mammosynth.models.stylegan import StyleGAN, StyleGANConfig, StyledConv
from mammosynth.models.stylegan_encoder import InDomainEncoder
from _bench_context import BenchContext, sync  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

CONFIGS = "src/mammosynth/configs"


def _time(fn, steps: int, warmup: int, device: torch.device) -> float:
    for i in range(warmup):
        fn(i)
    sync(device)
    t = time.perf_counter()
    for i in range(steps):
        fn(warmup + i)
    sync(device)
    return (time.perf_counter() - t) / steps


# -- eager references ---------------------------------------------------------------------------
def eager_mask_embedding(m: MaskEmbeddingGAN, batch, device, phase: int, alpha: float):
    G, D = m.nets["generator"], m.nets["discriminator"]
    og, od = torch.optim.Adam(G.parameters(), 1e-4, betas=(0.0, 0.99)), torch.optim.Adam(D.parameters(), 1e-4, betas=(0.0, 0.99))
    real, mask = batch["image"], batch["breast_mask"]
    real, mask = F.adaptive_avg_pool2d(real, G.sizes[phase]), (F.adaptive_avg_pool2d(mask, G.sizes[phase]) >= 0.5).float()

    def step(_):
        z = torch.randn(real.shape[0], G.latent_dim, device=device)
        fake = G(z, mask, phase, alpha).detach()
        rs, fs = D(real, mask, phase, alpha), D(fake, mask, phase, alpha)
        gp = gradient_penalty(lambda x, mm: D(x, mm, phase, alpha), real, fake, mask)
        loss_d = d_loss_wgan(rs, fs) + 10 * gp + 1e-3 * rs.pow(2).mean()
        od.zero_grad(set_to_none=True)
        loss_d.backward()
        od.step()
        loss_g = g_loss_wgan(D(G(torch.randn_like(z), mask, phase, alpha), mask, phase, alpha))
        og.zero_grad(set_to_none=True)
        loss_g.backward()
        og.step()
    return step


def eager_pix2pix(m: MaskEmbeddingGAN, batch, device):
    G, D = m.nets["generator"], m.nets["discriminator"]
    og, od = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999)), torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    real = batch["image"]
    cond = torch.cat([sobel_edges(real), batch["breast_mask"] * 2 - 1], 1)

    def step(_):
        fake = G(cond)
        loss_d = 0.5 * d_loss_bce(D(cond, real), D(cond, fake.detach()))
        od.zero_grad(set_to_none=True)
        loss_d.backward()
        od.step()
        loss_g = g_loss_bce(D(cond, fake)) + 100 * (fake - real).abs().mean()
        og.zero_grad(set_to_none=True)
        loss_g.backward()
        og.step()
    return step


def eager_stylegan(m: StyleGAN, batch, device):
    G, D = m.nets["generator"], m.nets["discriminator"]
    c = m.cfg
    og, od = torch.optim.Adam(G.parameters(), c.lr, betas=(0.0, 0.99)), torch.optim.Adam(D.parameters(), c.lr, betas=(0.0, 0.99))
    real = batch["image"]

    def step(i):
        z = torch.randn(real.shape[0], G.z_dim, device=device)
        loss_d = d_loss_bce(D(real), D(G(z).detach()))
        if i % c.r1_every == 0:
            loss_d = loss_d + c.r1_gamma / 2 * r1_penalty(D, real) * c.r1_every
        od.zero_grad(set_to_none=True)
        loss_d.backward()
        od.step()
        loss_g = g_loss_bce(D(G(torch.randn_like(z))))
        og.zero_grad(set_to_none=True)
        loss_g.backward()
        og.step()
    return step


def eager_encoder(G, D, E, batch, device):
    oe, od = torch.optim.Adam(E.parameters(), 1e-4, betas=(0.9, 0.99)), torch.optim.Adam(D.parameters(), 1e-4, betas=(0.9, 0.99))
    x = batch["image"]

    def step(_):
        rec = G.synthesize(E(x), noise_mode="const")
        loss_d = d_loss_bce(D(x), D(rec.detach())) + 5 * r1_penalty(D, x)
        od.zero_grad(set_to_none=True)
        loss_d.backward()
        od.step()
        loss_e = F.mse_loss(rec, x) + 0.1 * F.softplus(-D(rec)).mean()
        oe.zero_grad(set_to_none=True)
        loss_e.backward()
        oe.step()
    return step


def grouped_modconv_forward(self: StyledConv, x, w, noise=None):
    """StyleGAN2's published form: per-sample modulated+demodulated weights, grouped conv."""
    if self.up:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    B, C, H, W = x.shape
    s = self.affine(w)
    wt = self.weight[None] * self.scale * s[:, None, :, None, None]
    wt = wt * torch.rsqrt(wt.pow(2).sum([2, 3, 4], keepdim=True) + 1e-8)
    out = F.conv2d(x.reshape(1, B * C, H, W), wt.reshape(B * self.c_out, C, *wt.shape[3:]), padding=wt.shape[-1] // 2, groups=B)
    out = self.noise(out.reshape(B, self.c_out, H, W), noise)
    return F.leaky_relu(out + self.bias[None, :, None, None], 0.2) * 2 ** 0.5


# -- driver -----------------------------------------------------------------------------------------
def _row(name, device, batch_size, steps, warmup, method_step, eager_step):
    """Interleave method and eager steps (one each, ``steps`` times) and compare medians, so
    load changes on a shared machine hit both alike."""
    for i in range(warmup):
        method_step(i)
        eager_step(i)
    t_m, t_e = [], []
    for i in range(steps):
        t_m.append(_one(method_step, warmup + i, device))
        t_e.append(_one(eager_step, warmup + i, device))
    tm, te = sorted(t_m)[len(t_m) // 2], sorted(t_e)[len(t_e) // 2]
    return {"method": name, "batch": batch_size, "method_img_s": round(batch_size / tm, 2), "eager_fp32_img_s": round(batch_size / te, 2),
            "ratio": round(te / tm, 3)}


def _one(fn, i, device) -> float:
    sync(device)
    t = time.perf_counter()
    fn(i)
    sync(device)
    return time.perf_counter() - t


def inversion_table(run: str, data: str, n: int, steps: int, split: str = "test") -> list[dict]:
    """PSNR / LPIPS of held-out lesions: encoder alone vs eq. 4 optimisation (mean +- std)."""
    import numpy as np

    from mammosynth.errors import WeightsError
    from mammosynth.synth.inversion import invert_tensor, load_encoder_run, psnr

    method = load_encoder_run(run, "cpu")
    ds = method.make_dataset(data, split)
    ds.augment = False
    k = min(n, len(ds))
    x = torch.stack([ds[i]["image"] for i in range(k)])
    t = time.perf_counter()
    inv = invert_tensor(method, x, steps=steps)
    secs = time.perf_counter() - t
    try:
        from mammosynth.evaluate.lpips import lpips_distance

        dist = lambda a, b: lpips_distance(a, b, net="vgg", device="cpu")  # noqa: E731
        dname = "LPIPS (vgg)"
    except (WeightsError, ImportError):
        from mammosynth.models.stylegan_encoder import make_feature_fn

        fn, dname, _ = make_feature_fn("vgg")
        dist = lambda a, b: np.array([float(F.mse_loss(fa, fb)) for fa, fb in zip(fn(a)[0], fn(b)[0])])  # noqa: E731
        dname = f"VGG16 conv4_3 MSE"
    rows = []
    for what, rec in (("G(E(x)) encoder only", inv.x_encoder), (f"G(w_inv) after {steps} steps eq. 4", inv.x_optimised)):
        p = psnr(rec, x).numpy()
        try:
            d = dist(rec.clamp(-1, 1), x)
        except WeightsError:
            d = np.full(k, np.nan)
        rows.append({"reconstruction": what, "n": k, "psnr_db": f"{p.mean():.2f} +- {p.std():.2f}", dname: f"{d.mean():.4f} +- {d.std():.4f}"})
    rows.append({"reconstruction": f"optimisation time: {secs / k:.2f} s per image ({steps} steps, batch {k}, CPU)"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modconv", action="store_true", help="also time StyleGAN2's grouped per-sample modulated conv")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--inversion", default=None, help="stylegan-encoder run: measure reconstruction instead of speed")
    ap.add_argument("--data", default=None, help="store for --inversion (its test split)")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--inv-steps", type=int, default=100)
    args = ap.parse_args()
    if args.inversion:
        rows = inversion_table(args.inversion, args.data, args.n, args.inv_steps)
        for r in rows:
            print(" | ".join(str(v) for v in r.values()))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=2)
        return
    dev = torch.device(args.device)
    torch.manual_seed(0)
    rows = []

    def want(name):
        return args.only is None or any(o in name for o in args.only)

    me_cfg = load_config(MaskEmbeddingConfig, f"{CONFIGS}/mask-embedding-demo.yaml")
    H, W = me_cfg.final_size
    for variant in ("embedding", "no-embedding", "pix2pix"):
        for phase, alpha in ((me_cfg.n_levels - 1, 1.0), (me_cfg.n_levels - 1, 0.5)):
            if variant == "pix2pix" and alpha < 1:
                continue
            name = f"mask-embedding[{variant}] {H >> (me_cfg.n_levels - 1 - phase)}x{W >> (me_cfg.n_levels - 1 - phase)}" + (
                f" fade a={alpha}" if alpha < 1 else "")
            if not want(name):
                continue
            cfg = copy.deepcopy(me_cfg)
            cfg.variant = variant
            m = MaskEmbeddingGAN(cfg)
            m.nets.to(dev)
            b = cfg.phase_batch_sizes[phase] if variant != "pix2pix" else cfg.batch_size
            batch = {"image": torch.rand(b, 1, H, W, device=dev) * 2 - 1, "breast_mask": (torch.rand(b, 1, H, W, device=dev) > 0.3).float()}
            ctx = BenchContext(dict(m.nets.items()), m.build_optimizers(), dev, args.amp)
            start = sum(cfg.phase_steps[:phase]) + (int(cfg.phase_steps[phase] * cfg.fade_fraction * alpha) if alpha < 1 else cfg.phase_steps[phase])

            def method_step(i, m=m, ctx=ctx, batch=batch, start=start, alpha=alpha):
                ctx.step = start if alpha < 1 else start + i  # hold alpha fixed mid-fade
                m.train_step(batch, ctx)
            ref = m2 = copy.deepcopy(m)
            eager = eager_pix2pix(m2, batch, dev) if variant == "pix2pix" else eager_mask_embedding(ref, batch, dev, phase, alpha)
            rows.append(_row(name, dev, b, args.steps, args.warmup, method_step, eager))
            print(rows[-1], flush=True)

    sg_cfg = load_config(StyleGANConfig, f"{CONFIGS}/stylegan-demo.yaml")
    b = sg_cfg.batch_size
    S = sg_cfg.size
    batch = {"image": torch.rand(b, 1, *S, device=dev) * 2 - 1}
    if want("stylegan"):
        m = StyleGAN(sg_cfg)
        m.nets.to(dev)
        ctx = BenchContext(dict(m.nets.items()), m.build_optimizers(), dev, args.amp)

        def sg_step(i, m=m, ctx=ctx):
            ctx.step = i
            m.train_step(batch, ctx)
        steps = max(args.steps, sg_cfg.r1_every)  # one R1 step per r1_every, as in training
        rows.append(_row(f"stylegan {S[0]}x{S[1]}", dev, b, steps, args.warmup, sg_step, eager_stylegan(copy.deepcopy(m), batch, dev)))
        print(rows[-1], flush=True)
        if args.modconv:
            fast = StyledConv.forward
            t_ours = _time(sg_step, steps, args.warmup, dev)
            StyledConv.forward = grouped_modconv_forward
            try:
                t_grp = _time(sg_step, steps, args.warmup, dev)
            finally:
                StyledConv.forward = fast
            rows.append({"method": "stylegan modconv: ours vs grouped per-sample (StyleGAN2 form)", "batch": b,
                         "method_img_s": round(b / t_ours, 2), "eager_fp32_img_s": round(b / t_grp, 2), "ratio": round(t_grp / t_ours, 3)})
            print(rows[-1], flush=True)
    if want("encoder"):
        from mammosynth.models.stylegan_encoder import StyleGANEncoder, StyleGANEncoderConfig

        enc_cfg = load_config(StyleGANEncoderConfig, f"{CONFIGS}/stylegan-encoder-demo.yaml", ["perceptual=none"])
        g = StyleGAN(sg_cfg)
        m = StyleGANEncoder.__new__(StyleGANEncoder)  # no generator run needed to time a step
        m.cfg, m.data_info = enc_cfg, {}
        m.nets = torch.nn.ModuleDict({"generator": g.nets["generator"].requires_grad_(False), "discriminator": g.nets["discriminator"]})
        G = m.nets["generator"]
        m.nets["encoder"] = InDomainEncoder(tuple(S), G.n_ws, G.w_dim, True, enc_cfg.channels, enc_cfg.max_channels, enc_cfg.n_blocks)
        m._feature_fn, m._generator_loaded, m.gcfg = None, True, sg_cfg
        m.nets.to(dev)
        ctx = BenchContext(dict(m.nets.items()), m.build_optimizers(), dev, args.amp)

        def enc_step(i, m=m, ctx=ctx):
            ctx.step = i
            m.train_step(batch, ctx)
        ref = copy.deepcopy(m.nets)
        rows.append(_row(f"stylegan-encoder {S[0]}x{S[1]} (no perceptual)", dev, b, args.steps, args.warmup, enc_step,
                         eager_encoder(ref["generator"], ref["discriminator"], ref["encoder"], batch, dev)))
        print(rows[-1], flush=True)

    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, device {dev}, amp {args.amp}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'method':<64} {'batch':>5} {'method img/s':>12} {'eager img/s':>12} {'ratio':>6}")
    for r in rows:
        print(f"{r['method']:<64} {r['batch']:>5} {r['method_img_s']:>12} {r['eager_fp32_img_s']:>12} {r['ratio']:>6}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
