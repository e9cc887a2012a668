"""Ingest throughput and peak memory for full-field 16-bit DICOMs (3328 x 4084 px).

Writes N phantom-like mammograms as uncompressed 16-bit MONOCHROME2 DICOMs into a
folder-format dataset (every 5th image also carries a lesion mask, so both the normal and the
lesion path run), then ingests them with ``mammosynth.data.ingest.ingest``. Each count runs
in a fresh subprocess, so the peak RSS (VmHWM; ``resource.getrusage`` off Linux) of one count is
not inherited by the next; flat memory means the peak does not grow with N. The reference is a plain
pydicom decode of the same files in the same subprocess (read + ``pixel_array``), reported
as the ratio ingest time / decode-only time.

Images: ``mammosynth.phantom.render_breast`` at 1021 x 832 (or 1024 x 832 cropped), upsampled
x4 to 4084 x 3328 with per-image quantum noise at full resolution, so no two files are equal.

    OMP_NUM_THREADS=1 python benchmarks/bench_ingest.py --counts 50 100 200 --workdir /tmp/bench_ingest
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

H, W = 4084, 3328  # rows x columns of a full-field digital mammogram
UNIQUE_BREASTS = 10  # distinct phantom anatomies; every file still gets its own noise


def _rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    Linux: VmHWM from /proc/self/status (reset by exec, unlike ru_maxrss, which a child
    inherits from the parent it was forked from); elsewhere ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    scale = 1024.0 if sys.platform.startswith("linux") else 1024.0 * 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _base_breast(k: int) -> np.ndarray:
    """A (H/4, W/4) phantom breast in [0, 1] (or a 1/f texture if the phantom is unavailable)."""
    try:
        from mammosynth.phantom import render_breast

        lat = "L" if k % 2 == 0 else "R"
        img = render_breast(seed=k, shape=(1024, 832), view="CC" if k % 3 else "MLO", laterality=lat).image
        return img[: H // 4]
    except Exception as err:  # fall back to a synthetic texture inside a half-ellipse
        print(f"phantom unavailable ({err}); using a synthetic texture", file=sys.stderr)
        rng = np.random.default_rng(k)
        h, w = H // 4, W // 4
        f = np.fft.rfft2(rng.standard_normal((h, w)))
        fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.rfftfreq(w), indexing="ij")
        tex = np.fft.irfft2(f / np.maximum(np.hypot(fx, fy), 1.0 / h) ** 1.5, s=(h, w))
        tex = (tex - tex.mean()) / tex.std()
        yy, xx = np.mgrid[0:h, 0:w]
        inside = (xx / (0.7 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2 < 1
        return np.where(inside, np.clip(0.45 + 0.12 * tex, 0, 1), 0.02).astype(np.float32)


def write_dataset(root: Path, n: int) -> None:
    """N DICOMs in root/images, masks for every 5th in root/masks, and labels.csv."""
    import pydicom  # noqa: F401  (fail early if missing)
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from dicom_fixtures import write_dicom

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rows = ["file,patient_id,shape,margin,pathology,laterality,view,kind,mask"]
    bases: dict[int, np.ndarray] = {}
    for i in range(n):
        name = f"mg{i:04d}.dcm"
        k = i % UNIQUE_BREASTS
        if not (root / "images" / name).exists():
            if k not in bases:
                bases[k] = _base_breast(k)
            full = np.repeat(np.repeat(bases[k], 4, axis=0), 4, axis=1)[:H, :W]
            rng = np.random.default_rng(1000 + i)
            noisy = full * np.float32(65535.0) + np.float32(300.0) * rng.standard_normal(full.shape, dtype=np.float32)
            write_dicom(root / "images" / name, np.clip(noisy, 0, 65535), bits_stored=16, patient_id=f"p{i}")
            del full, noisy
        lat = "L" if k % 2 == 0 else "R"
        rows.append(f"{name},p{i},,,,{lat},CC,normal,")
        if i % 5 == 0:
            mask = np.zeros((H, W), np.uint8)
            cx = 700 if lat == "L" else W - 700
            yy, xx = np.ogrid[0:H, 0:W]
            mask[(xx - cx) ** 2 + (yy - H // 2) ** 2 <= 150**2] = 255
            Image.fromarray(mask).save(root / "masks" / f"les{i:04d}.png")
            # the 'mask' column names the lesion's mask file (masks/<stem>.* is the default)
            rows.append(f"{name},p{i},oval,circumscribed,benign,{lat},CC,lesion,les{i:04d}.png")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def child(root: Path, n: int, out: Path) -> dict:
    """Run in a fresh process: decode-only reference, then the ingest; returns the numbers."""
    import pydicom

    from mammosynth.data.ingest import ingest

    rss_start = _rss_mb()
    files = sorted((root / "images").glob("*.dcm"))[:n]
    t0 = time.perf_counter()
    for f in files:
        arr = pydicom.dcmread(f).pixel_array
        del arr
    t_decode = time.perf_counter() - t0
    rss_after_decode = _rss_mb()
    labels = root / f"labels_{n}.csv"
    lines = (root / "labels.csv").read_text().splitlines()
    keep = [lines[0]] + [ln for ln in lines[1:] if int(ln.split(",")[0][2:6]) < n]
    labels.write_text("\n".join(keep) + "\n")
    t0 = time.perf_counter()
    summary = ingest("folder", root, [labels], out, patch_size=64, normal_size=(1024, 832), progress=False)
    t_ingest = time.perf_counter() - t0
    return {
        "n_mammograms": n, "n_lesions": summary.n_lesions, "n_normals": summary.n_normals,
        "n_skipped": summary.n_skipped, "ingest_s": round(t_ingest, 2),
        "mammograms_per_s": round(n / t_ingest, 3), "decode_only_s": round(t_decode, 2),
        "ratio_ingest_vs_decode": round(t_ingest / max(t_decode, 1e-9), 2),
        "rss_after_imports_mb": round(rss_start, 1), "rss_after_decode_mb": round(rss_after_decode, 1),
        "peak_rss_mb": round(_rss_mb(), 1), "store_mb": round(out.stat().st_size / 2**20, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", type=int, nargs="+", default=[50, 100, 200], help="dataset sizes (mammograms)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_ingest"), help="where the DICOMs go (~27 MB each)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = args.workdir / "dataset"
    if args.child is not None:
        print(json.dumps(child(root, args.child, args.workdir / f"store_{args.child}.h5")))
        return
    t0 = time.perf_counter()
    write_dataset(root, max(args.counts))
    print(f"wrote {max(args.counts)} DICOMs of {W}x{H} 16-bit in {time.perf_counter() - t0:.0f} s to {root}", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    results = []
    for n in args.counts:
        proc = subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--child", str(n)],
                              capture_output=True, text=True, env=env, check=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(json.dumps(res), flush=True)
    print(f"\n{'N':>5} {'mammo/s':>8} {'ingest s':>9} {'x decode':>9} {'peak RSS MiB':>13} {'store MiB':>10}")
    for r in results:
        print(f"{r['n_mammograms']:>5} {r['mammograms_per_s']:>8.3f} {r['ingest_s']:>9.1f} {r['ratio_ingest_vs_decode']:>9.2f} "
              f"{r['peak_rss_mb']:>13.0f} {r['store_mb']:>10.1f}")


if __name__ == "__main__":
    main()
