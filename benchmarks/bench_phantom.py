"""Phantom generation speed, and how the phantom compares with real mammograms.

Speed (one thread; wall and CPU seconds, since a shared machine inflates wall time):

* lesion patches/s as shipped (``phantom_lesion_records``: several lesions per rendered
  breast, each mass drawn in a window around its site), against the plain reference of one
  full breast + one full-image ``render_mass`` per lesion, run in the same process;
* full mammograms/s at 1024x832 (0.2 mm/px) and 4084x3328 (0.05 mm/px);
* ``write_phantom_store`` end to end (the demo calls it with 400 lesions, 24 normals, 64 px).

Learnability (``--margins N``): a small CNN trained on the margins of N phantom patches
(64 px), tested on lesions of held-out patients.

Realism (when the reference mammograms are present): power-spectrum slope beta inside the
breast, intensity percentiles inside the breast, the mean intensity profile versus depth
from the skin, and the high-pass texture near the skin versus the interior.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_phantom.py [--quick] [--store] [--margins N] [--reference DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from mammosynth.data.birads import MARGINS, SHAPES  # noqa: E402
from mammosynth.phantom import (  # noqa: E402
    phantom_lesion_records,
    power_spectrum_slope,
    render_breast,
    render_mass,
    write_phantom_store,
)

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference-mammograms"
PROFILE_MM = (0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0)


def timed(fn, n: int) -> tuple[float, float]:
    """(items/s by wall clock, items/s by process CPU time) for ``fn()`` producing n items."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    w, c = time.perf_counter() - w, time.process_time() - c
    return n / w, n / c


def bench_lesions(n: int) -> tuple[tuple[float, float], tuple[float, float]]:
    shipped = timed(lambda: [None for _ in phantom_lesion_records(n, seed=7)], n)
    n_ref = max(2, n // 12)

    def reference() -> None:
        # One full breast and a full-image mass per lesion, cropped afterwards.
        for i in range(n_ref):
            b = render_breast(1000 + i, view=("CC", "MLO")[i % 2], density="B")
            cy, cx = np.argwhere(ndi.binary_erosion(b.breast_mask, iterations=120))[0]
            render_mass(b, (int(cx), int(cy)), 75.0, SHAPES[i % 4], MARGINS[i % 5], seed=i)

    return shipped, timed(reference, n_ref)


def bench_full(shape: tuple[int, int], n: int) -> tuple[float, float]:
    return timed(lambda: [render_breast(i, shape, view=("CC", "MLO")[i % 2], density="ABCD"[i % 4]) for i in range(n)], n)


def realism(reference_dir: Path | None) -> list[tuple[str, str]]:
    """Rows (name, numbers) for the phantom (CC and MLO, densities B/C) and the reference."""

    def stats(img: np.ndarray, mask: np.ndarray, pect: np.ndarray | None, spacing: float) -> str:
        depth = ndi.distance_transform_edt(np.pad(mask, ((0, 0), (8, 0)), mode="edge"))[:, 8:] * spacing
        body = mask if pect is None else mask & ~pect
        beta, n_roi = power_spectrum_slope(img, body & (depth > 12.0))
        pct = np.percentile(img[mask], [5, 25, 50, 75, 95])
        prof = [img[(depth >= d - 0.25) & (depth < d + 0.25) & mask].mean() for d in PROFILE_MM]
        hp = img - ndi.gaussian_filter(img, 1.0 / spacing)
        near, inner = hp[(depth > 3) & (depth < 10) & body].std(), hp[(depth > 20) & body].std()
        return (f"beta {beta:.2f} ({n_roi:3d} ROIs) | pct5/25/50/75/95 " + " ".join(f"{v:.2f}" for v in pct)
                + " | skin profile " + " ".join(f"{v:.2f}" for v in prof) + f" | hp-sd near/inner {near:.3f}/{inner:.3f}")

    rows = []
    for view, dens in (("CC", "B"), ("CC", "C"), ("MLO", "B"), ("MLO", "C")):
        b = render_breast(21, view=view, density=dens)
        rows.append((f"phantom {view} {dens}", stats(b.image, b.breast_mask, b.pectoral_mask, b.meta["pixel_spacing_mm"])))
    if reference_dir is not None and reference_dir.exists():
        from PIL import Image

        for path in sorted(reference_dir.glob("*.png")):
            ref = np.asarray(Image.open(path), dtype=np.float32) / 4095.0
            # Assumed ~0.1 mm/px (a CC breast ~200 mm tall over 2023 rows): bin 2x -> ~0.2 mm/px.
            ref = ref[: ref.shape[0] // 2 * 2, : ref.shape[1] // 2 * 2].reshape(ref.shape[0] // 2, 2, -1, 2).mean(axis=(1, 3))
            mask = ndi.binary_opening(ref > 0.02, iterations=2)
            lab, _ = ndi.label(mask)
            mask = lab == np.argmax(np.bincount(lab.ravel())[1:]) + 1
            rows.append((f"reference {path.stem}", stats(ref, mask, None, 0.2)))
    return rows


def margin_learnability(n_lesions: int, epochs: int = 25) -> tuple[float, np.ndarray, int, int]:
    """Can a margin classifier learn from 64 px phantom patches? A 4-conv CNN trained on the
    train split of a fresh ``n_lesions`` store, tested on val + test (other patients).
    Returns (accuracy, confusion matrix (5, 5) true x predicted, n_train, n_test)."""
    import torch
    from torch import nn

    from mammosynth.data.store import Store

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "phantom.h5"
        write_phantom_store(path, n_lesions=n_lesions, n_normals=0, patch_size=64, seed=11, progress=False)
        with Store(path) as store:
            train = store.lesions(split="train")
            held = store.lesions(np.concatenate([store.split_indices("lesions", s) for s in ("val", "test")]))

    def tensors(a):  # (N,1,64,64) in [-1,1], labels
        return torch.from_numpy(a.patch[:, None] * 2 - 1).float(), torch.from_numpy(a.margin)

    x_tr, y_tr = tensors(train)
    x_te, y_te = tensors(held)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, len(MARGINS)),
    )
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x_tr))
        for i in range(0, len(perm), 32):
            b = perm[i:i + 32]
            x = x_tr[b].flip(-1) if torch.rand(()) < 0.5 else x_tr[b]
            loss = nn.functional.cross_entropy(net(x), y_tr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = net(x_te).argmax(1).numpy()
    cm = np.zeros((len(MARGINS), len(MARGINS)), int)
    np.add.at(cm, (y_te.numpy(), pred), 1)
    return float((pred == y_te.numpy()).mean()), cm, len(x_tr), len(x_te)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, one large mammogram")
    ap.add_argument("--store", action="store_true", help="also time write_phantom_store(400, 24, 64)")
    ap.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="folder of reference PNGs")
    ap.add_argument("--margins", type=int, default=0, metavar="N",
                    help="also train a small CNN on the margins of N phantom lesions (e.g. 800)")
    args = ap.parse_args()
    n_les = 48 if args.quick else 120
    n_full = 4 if args.quick else 12
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, cpus visible: {os.cpu_count()}")
    print(f"{'what':48s} {'items/s wall':>13s} {'items/s cpu':>12s} {'ratio':>7s}")
    render_breast(0, (256, 208))  # warm-up: imports, FFT plans
    (sw, sc), (rw, rc) = bench_lesions(n_les)
    print(f"{'lesion patches, shipped (lesions per breast)':48s} {sw:13.2f} {sc:12.2f} {sc / rc:6.1f}x")
    print(f"{'lesion patches, reference (a breast per lesion)':48s} {rw:13.2f} {rc:12.2f} {1.0:6.1f}x")
    w, c = bench_full((1024, 832), n_full)
    print(f"{'full mammograms 1024x832 (0.2 mm/px)':48s} {w:13.2f} {c:12.2f}")
    w, c = bench_full((4084, 3328), 1 if args.quick else 2)
    print(f"{'full mammograms 4084x3328 (0.05 mm/px)':48s} {w:13.3f} {c:12.3f}")
    if args.store:
        with tempfile.TemporaryDirectory() as tmp:
            w0, c0 = time.perf_counter(), time.process_time()
            write_phantom_store(Path(tmp) / "phantom.h5", n_lesions=400, n_normals=24, patch_size=64, progress=False)
            print(f"{'write_phantom_store(400, 24, 64): seconds':48s} {time.perf_counter() - w0:13.1f} {time.process_time() - c0:12.1f}")
    print("\nrealism (inside the breast; reference binned to ~0.2 mm/px):")
    for name, numbers in realism(args.reference):
        print(f"  {name:22s} {numbers}")
    if args.margins:
        acc, cm, n_tr, n_te = margin_learnability(args.margins)
        print(f"\nmargin from 64 px patches: accuracy {acc:.3f} on {n_te} held-out lesions "
              f"(trained on {n_tr}; chance {1 / len(MARGINS):.2f}); confusion (rows true, cols predicted):")
        print("  " + " ".join(f"{m[:6]:>7s}" for m in MARGINS))
        for m, row in zip(MARGINS, cm):
            print(f"  {' '.join(f'{v:7d}' for v in row)}   {m}")


if __name__ == "__main__":
    main()
