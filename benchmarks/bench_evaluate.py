"""Seconds per section of a full ``evaluate`` (no downstream) on N real and N synthetic 64x64 patches.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_evaluate.py --n 1000 [--quick] [--device cpu]

The real store holds N training and N/5 test lesions plus 4 normal mammograms; the synthetic set
holds N lesions. Images are textured backgrounds with bright elliptical masses (the numbers of
the metrics are meaningless here; only time is measured). Reports wall and CPU seconds per
section and each section's share of the total, and, as the plain reference, the seconds of one
eager fp32 forward pass of the VGG16 feature network over all images at 224 px, the dominant
cost, so the ratio says how close the whole evaluation is to that floor.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _blob(rng: np.random.Generator, size: int, bright: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.4, size * 0.6, 2)
    ry, rx = rng.uniform(size * 0.12, size * 0.25, 2)
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return np.clip(0.3 + 0.08 * rng.standard_normal((size, size)) + bright * mask, 0, 1).astype(np.float32), mask


def make_inputs(d: Path, n: int, size: int = 64) -> tuple[Path, Path]:
    from mammosynth.data.birads import Label
    from mammosynth.data.records import LesionRecord, MammogramRecord
    from mammosynth.data.store import StoreWriter
    from mammosynth.synth.writer import Lesion, SyntheticSetWriter

    none = Label(None, None, "missing")
    rng = np.random.default_rng(0)
    n_test = max(n // 5, 10)
    with StoreWriter(d / "real.h5", patch_size=size, normal_size=(256, 208)) as w:
        for k in range(n + n_test):
            img, m = _blob(rng, size, 0.35)
            w.add(LesionRecord("bench", f"l{k}", f"p{k}", img, m, none, none, none, split_hint="train" if k < n else "test"))
        for k in range(4):
            img = np.clip(0.3 + 0.08 * rng.standard_normal((256, 208)), 0, 1).astype(np.float32)
            breast = np.zeros((256, 208), bool)
            breast[16:240, :160] = True
            w.add(MammogramRecord("bench", f"n{k}", f"q{k}", img * breast, breast, split_hint="train" if k < 2 else "test"))
    with SyntheticSetWriter(d / "syn", "bench") as w:
        for _ in range(n):
            img, m = _blob(rng, size, 0.3)
            w.add(img, [Lesion(m)])
    return d / "real.h5", d / "syn"


def reference_vgg16(n_images: int, device: str | None) -> float | None:
    """Seconds of one eager fp32 VGG16 pass (224 px, batch 64) over ``n_images`` gray patches."""
    import torch

    from mammosynth.errors import WeightsError
    from mammosynth.evaluate.features import load_feature_net, pick_device
    from mammosynth.nn.vgg import imagenet_input

    try:
        model = load_feature_net("vgg16").to(pick_device(device)).eval()
    except WeightsError:
        return None
    dev = pick_device(device)
    x = torch.rand(64, 1, 64, 64, device=dev) * 2 - 1
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, n_images, 64):
            model(imagenet_input(x[: min(64, n_images - start)], size=224))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="real training lesions and synthetic lesions")
    ap.add_argument("--quick", action="store_true", help="evaluate's quick mode")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--keep", type=Path, default=None, help="write the report here instead of a temporary folder")
    args = ap.parse_args()
    from mammosynth.evaluate.run import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        real, syn = make_inputs(d, args.n)
        print(f"inputs: {args.n} real train + {max(args.n // 5, 10)} real test + {args.n} synthetic 64x64 patches "
              f"(written in {time.perf_counter() - t0:.1f} s); OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        cpu0, t0 = time.process_time(), time.perf_counter()
        m = evaluate(real, syn, args.keep or d / "report", quick=args.quick, max_images=args.n, device=args.device)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    total, cpu_s = m["seconds"]["total"], m["cpu_seconds"]
    print("\n| section | wall s | CPU s | share of CPU |\n|---|---|---|---|")
    for k, v in m["seconds"].items():
        if k != "total":
            print(f"| {k} | {v:.1f} | {cpu_s[k]:.1f} | {cpu_s[k] / cpu_s['total']:.0%} |")
    print(f"| total | {total:.1f} | {cpu_s['total']:.1f} | 100% |")
    print(f"\nCPU seconds (this process): {cpu:.1f} for {wall:.1f} s wall")
    # the reference on 128 images, scaled: extraction is linear in N (a full pass would cost as much as evaluate)
    n_feat = m["inputs"]["n_real_train"] + m["inputs"]["n_real_test"] + m["inputs"]["n_synthetic"]
    ref128 = reference_vgg16(128, None if args.device == "auto" else args.device)
    ref = None if ref128 is None else ref128 * n_feat / 128
    if ref is None:
        print("reference: no VGG16 weights cached (`mammosynth weights get`); skipped")
    else:
        print(f"reference: one eager fp32 VGG16 pass over {n_feat} images at 224 px = {ref:.1f} s (128 timed, scaled); "
              f"full evaluate / reference = {total / ref:.2f}x")
    print("skipped:", {k: v[:60] for k, v in m["skipped"].items()})


if __name__ == "__main__":
    main()
