"""Seconds for the image-quality metrics on N real and N synthetic 64x64 patches.

Measures FD-VGG16 (+ its feature extraction), KID, PRDC, MS-SSIM diversity and mean LPIPS (Alex),
each next to a plain reference run in the same process, and reports the ratio:

- features: VGG16 pooled conv5_3 at ``--feature-size`` (224 = ImageNet), eager fp32 on CPU; on
  CUDA the default bf16 autocast is compared with fp32;
- FD: the default exact route (Gram / eigh) vs ``scipy.linalg.sqrtm`` of the covariance product;
- LPIPS: all real x synthetic pairs of the seed-001 selection (100 x 100) through the LPIPS
  embedding (one forward per image) vs one LPIPS forward per pair, timed on ``--naive-pairs``
  pairs and scaled to the same pair count.

Random data is used (the timings do not depend on image content). Needs the weight cache
(`mammosynth weights get`); metrics without weights are reported as skipped.

    OMP_NUM_THREADS=1 python benchmarks/bench_evaluate_metrics.py --n 1000 --feature-size 224
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch


CPU_SECONDS: list[float] = []  # process CPU time of each _timed call (the machine may be shared)


def _timed(fn, *args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    CPU_SECONDS.append(time.process_time() - c0)
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="real and synthetic patches each")
    parser.add_argument("--size", type=int, default=64, help="patch side in px")
    parser.add_argument("--feature-size", type=int, default=224, help="side the feature network sees")
    parser.add_argument("--feature-n", type=int, default=None,
                        help="extract VGG16 features of only this many images per set and scale the time "
                             "to --n (for slow CPUs); default: all")
    parser.add_argument("--naive-pairs", type=int, default=200, help="pairs for the per-pair LPIPS reference")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from mammosynth.errors import WeightsError
    from mammosynth.evaluate.diversity import msssim_diversity
    from mammosynth.evaluate.features import extract_features, load_feature_net, pick_device
    from mammosynth.evaluate.frechet import frechet_distance, kid
    from mammosynth.evaluate.lpips import load_lpips, lpips_distance, mean_lpips
    from mammosynth.evaluate.prdc import prdc

    device = pick_device(args.device)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    # smooth random textures (bicubic-upsampled noise) so MS-SSIM/LPIPS see structure, not pure noise
    def patches(n):
        low = torch.randn(n, 1, args.size // 8, args.size // 8, generator=g)
        return torch.tanh(torch.nn.functional.interpolate(low, size=(args.size, args.size), mode="bicubic"))

    real, synth = patches(args.n), patches(args.n)
    rows: list[dict] = []
    result = {"n_real": args.n, "n_synthetic": args.n, "size": args.size, "feature_size": args.feature_size,
              "device": str(device), "torch_threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows}

    # --- FD-VGG16 features ---
    try:
        net = load_feature_net("vgg16")
    except WeightsError as err:
        result["skipped"] = str(err)
        print(json.dumps(result) if args.json else f"skipped: {err}")
        return 0
    fn = args.feature_n or args.n
    extract_features(real[:4], "vgg16", size=args.feature_size, device=device, model=net)  # warm-up
    feats_real_part, t_real = _timed(extract_features, real[:fn], "vgg16", 64, device, size=args.feature_size, model=net)
    feats_syn_part, t_syn = _timed(extract_features, synth[:fn], "vgg16", 64, device, size=args.feature_size, model=net)
    t_feat = (t_real + t_syn) * args.n / fn
    c_feat = sum(CPU_SECONDS[-2:]) * args.n / fn
    ref_feat = None
    if device.type == "cuda":
        # reference: the same extraction without autocast (fp32)
        def fp32_extract(x):
            with torch.autocast("cuda", enabled=False):
                from mammosynth.nn.vgg import imagenet_input

                return torch.cat([net.to(device)(imagenet_input(x[i:i + 64].to(device), args.feature_size)).float().cpu()
                                  for i in range(0, x.shape[0], 64)])
        _, t1 = _timed(fp32_extract, real[:fn])
        _, t2 = _timed(fp32_extract, synth[:fn])
        ref_feat = (t1 + t2) * args.n / fn
    rows.append({"step": f"VGG16 features ({2 * args.n} images at {args.feature_size}px)"
                 + ("" if fn == args.n else f" [timed on {2 * fn}, scaled]"),
                 "seconds": t_feat, "cpu_seconds": c_feat, "reference_seconds": ref_feat,
                 "reference": "fp32 eager" if ref_feat else "(is the fp32 eager reference on CPU)"})
    if fn < args.n:  # tile the measured features so the statistics steps run at full N
        reps = int(np.ceil(args.n / fn))
        noise = np.random.default_rng(0).normal(scale=1e-3, size=(args.n, feats_real_part.shape[1]))
        feats_real = np.tile(feats_real_part, (reps, 1))[: args.n] + noise
        feats_syn = np.tile(feats_syn_part, (reps, 1))[: args.n] + noise[::-1]
    else:
        feats_real, feats_syn = feats_real_part, feats_syn_part

    fd, t_fd = _timed(frechet_distance, feats_real, feats_syn)
    fd_ref, t_fd_ref = _timed(frechet_distance, feats_real, feats_syn, "sqrtm")
    rows.append({"step": "FD-VGG16 (statistics + trace sqrt)", "seconds": t_fd, "cpu_seconds": CPU_SECONDS[-2],
                 "reference_seconds": t_fd_ref,
                 "reference": "scipy.linalg.sqrtm", "value": fd, "reference_value": fd_ref})
    k, t_kid = _timed(kid, feats_real, feats_syn, 100, 1000, 0)
    rows.append({"step": "KID-VGG16 (100 subsets of up to 1000)", "seconds": t_kid, "cpu_seconds": CPU_SECONDS[-1],
                 "value": k.mean})
    p, t_prdc = _timed(prdc, feats_real, feats_syn, 5)
    rows.append({"step": "PRDC (k=5)", "seconds": t_prdc, "cpu_seconds": CPU_SECONDS[-1], "value": p.to_dict()})
    d_syn, t_ms = _timed(msssim_diversity, synth, 1000, 0, 256, device)
    d_real, t_ms2 = _timed(msssim_diversity, real, 1000, 0, 256, device)
    rows.append({"step": "MS-SSIM diversity (1000 pairs, real and synthetic)", "seconds": t_ms + t_ms2,
                 "cpu_seconds": sum(CPU_SECONDS[-2:]),
                 "value": {"synthetic": d_syn.mean, "real": d_real.mean}})

    lp_model, t_load = _timed(load_lpips, "alex")
    lp, t_lp = _timed(mean_lpips, real, synth, "alex", None, 0, 100, lp_model, 64, device)
    c_lp = CPU_SECONDS[-1] + CPU_SECONDS[-2]
    n_naive = min(args.naive_pairs, lp.n_pairs)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, 100, n_naive), rng.integers(0, 100, n_naive)
    _, t_naive = _timed(lpips_distance, real[:100][i], synth[:100][j], "alex", lp_model, 64, device)
    rows.append({"step": f"mean LPIPS-Alex ({lp.n_pairs} pairs, seed-001 Table 1)", "seconds": t_lp + t_load,
                 "cpu_seconds": c_lp,
                 "reference_seconds": t_naive * lp.n_pairs / n_naive,
                 "reference": f"one forward per pair (timed on {n_naive}, scaled)", "value": lp.mean})
    total = sum(r["seconds"] for r in rows)
    result["total_seconds"] = total
    result["total_cpu_seconds"] = sum(r["cpu_seconds"] for r in rows)
    if args.json:
        print(json.dumps(result, default=float))
        return 0
    print(f"{args.n} real + {args.n} synthetic {args.size}x{args.size} patches on {device} "
          f"(torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    for r in rows:
        ref = r.get("reference_seconds")
        ratio = f"  x{ref / r['seconds']:.1f} vs {r['reference']} ({ref:.2f}s wall)" if ref else ""
        print(f"  {r['step']:<62} {r['seconds']:8.2f}s wall {r['cpu_seconds']:8.2f}s cpu{ratio}")
    print(f"  {'total':<62} {total:8.2f}s wall {result['total_cpu_seconds']:8.2f}s cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
