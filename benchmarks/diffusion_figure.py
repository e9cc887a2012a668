"""The picture in docs/diffusion.md: held-out real lesions beside diffusion-infill samples.

Row 1: real test-split lesion patches of the store. Row 2: the Tri-label tissue channel of
training-split contexts (what the model is given). Row 3: diffusion-infill output in those
contexts with their own masks and labels (DDIM, the run's sampler settings). Row 4: the same
contexts with ``--repaint`` resampling (when ``--repaint`` > 0).

    .venv/bin/python benchmarks/diffusion_figure.py RUN STORE.h5 docs/diffusion_samples.png --n 8 --repaint 1

With ``--repaint`` it also prints a border-harmony score for both samplings: the mean gradient
magnitude on the outer edge of the margin ring (where the composite hands over to the context)
divided by the same in the real patches at the same places. 1 = as smooth a hand-over as real
tissue; above 1 = a visible seam.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("store", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repaint", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from PIL import Image

    from mammosynth.data.context import tri_label
    from mammosynth.data.store import Store
    from mammosynth.train.run import load_method

    method = load_method(args.run, device="cpu")
    with Store(args.store) as st:
        real = st.lesions(split="test").patch[: args.n]
    samples = list(method.generate(args.n, args.seed, data=str(args.store), split="train", batch_size=args.n))
    images = np.stack([s.image for s in samples])
    masks = np.stack([s.mask for s in samples])
    rows = [real, None, images]
    # the conditioning the model saw for row 3 (fresh Tri-label noise, for display)
    with Store(args.store) as st:
        ctx = st.lesions(indices=sorted({int(s.extra["tissue_index"]) for s in samples}))
        by_index = {int(i): p for i, p in zip(ctx.index, ctx.patch)}
    tissue = np.stack([by_index[int(s.extra["tissue_index"])] for s in samples])
    cond = tri_label(torch.from_numpy(tissue[:, None] * 2 - 1).float(), torch.from_numpy(masks[:, None].astype(np.float32)),
                     method.cfg.margin_factor, generator=torch.Generator().manual_seed(0))
    rows[1] = ((cond[:, 0].numpy() + 1) / 2).clip(0, 1)
    if args.repaint:
        rp = list(method.generate(args.n, args.seed, data=str(args.store), split="train", batch_size=args.n,
                                  repaint=args.repaint))
        rows.append(np.stack([s.image for s in rp]))
        from mammosynth.data.context import enlarge_mask

        edge = []
        for m in masks:
            big = enlarge_mask(m, method.cfg.margin_factor)
            edge.append(big & ~enlarge_mask(m, 1.0 + 0.6 * (method.cfg.margin_factor - 1.0)))  # outer part of the ring

        def seam(imgs: np.ndarray) -> float:
            gy, gx = np.gradient(imgs.astype(np.float64), axis=(1, 2))
            g = np.hypot(gy, gx)
            return float(np.mean([g[k][e].mean() for k, e in enumerate(edge)]))

        real_ctx = tissue  # the real patches the contexts were cut from
        for name, imgs in (("repaint 0", images), (f"repaint {args.repaint}", rows[-1])):
            print(f"border harmony {name}: {seam(imgs) / seam(real_ctx):.3f} (outer-ring gradient / real)")
    S = images.shape[-1]
    gap = 2
    canvas = np.ones((len(rows) * (S + gap) - gap, args.n * (S + gap) - gap), np.float32)
    for r, row in enumerate(rows):
        for c in range(min(args.n, len(row))):
            canvas[r * (S + gap): r * (S + gap) + S, c * (S + gap): c * (S + gap) + S] = row[c]
    big = Image.fromarray(np.round(canvas * 255).astype(np.uint8)).resize((canvas.shape[1] * 2, canvas.shape[0] * 2), Image.NEAREST)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    big.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
