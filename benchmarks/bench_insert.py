"""Insertion throughput and peak memory at native resolution: 16-bit DICOM mammograms of
4084 x 3328 px in, DICOMs with one inserted mass each + COCO/YOLO labels out.

Reference (the I/O floor): the same files read (pydicom decode) and written back as derived
DICOMs with their own pixels (:func:`mammosynth.synth.dicom.derived_dicom`), no insertion.
The ratio is insert time / floor time, both per image, in the same run. Each measurement runs
in a fresh subprocess (after a one-image warm-up, so imports and first calls are not counted)
so its peak RSS (VmHWM) is its own; two counts show whether memory is flat (streaming one
image at a time). Floor and insert alternate for ``--rounds`` rounds and the median ratio is
reported, so load from other processes on a shared machine hits both alike.

The infilling model is the real ``InfillGAN`` U-Net (untrained weights: speed does not depend
on them) at the demo size (64 px, ngf 32) or the paper's (256 px, ngf 64); masks come from an
untrained-free stand-in (seeded ellipses; a 64 px DCGAN forward is negligible next to the
rest) unless trained runs are given.

    OMP_NUM_THREADS=2 python benchmarks/bench_insert.py --counts 4 8 --patch 64 256 --workdir /tmp/bench_insert
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

H, W = 4084, 3328  # rows x columns of a full-field digital mammogram (Hologic-like, 0.07 mm)
SPACING = 0.07


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def make_inputs(folder: Path, n: int) -> list[Path]:
    """n 16-bit MONOCHROME2 mammography DICOMs (phantom anatomy upsampled x4 + quantum noise)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from mammosynth.phantom import render_breast

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        p = folder / f"img{k:03d}.dcm"
        paths.append(p)
        if p.exists():
            continue
        lat = "L" if k % 2 == 0 else "R"
        view = "MLO" if k % 3 == 0 else "CC"
        small = render_breast(seed=k, shape=(1021, 832), view=view, laterality=lat).image
        img = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)[:H, :W]
        rng = np.random.default_rng(k)
        img = np.clip(img + rng.normal(0, 0.004, img.shape).astype(np.float32), 0, 1)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.Modality, ds.PatientID, ds.ImageLaterality, ds.ViewPosition = "MG", f"P{k}", lat, view
        ds.ImagerPixelSpacing = [str(SPACING), str(SPACING)]
        ds.Rows, ds.Columns = img.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.round(img * 65535).astype(np.uint16).tobytes()
        ds.save_as(p, enforce_file_format=True)
    return paths


class EllipseMasks:
    """Seeded ellipse masks (64 px), the stand-in for a trained mask DCGAN."""

    def sample_masks(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:64, :64]
        a, b = rng.uniform(14, 22, size=2)
        return (((yy - 32) / a) ** 2 + ((xx - 32) / b) ** 2 <= 1)[None]


def _infill_model(patch: int, run: str | None = None):
    import torch

    from mammosynth.models.infill import InfillConfig, InfillGAN

    if run:
        from mammosynth.train.run import load_method

        torch.set_grad_enabled(False)
        return load_method(run, device="cpu")
    # untrained weights: their activations underflow to denormal floats, which x86 computes an
    # order of magnitude slower than normal ones; flushing them measures a working model's cost
    torch.set_flush_denormal(True)
    cfg = InfillConfig(patch_size=patch, ngf=32 if patch <= 64 else 64, ndf=32, fm_weights="discriminator")
    m = InfillGAN(cfg, {"patch_size": patch})
    m.build()
    for net in m.nets.values():
        net.eval()
    torch.set_grad_enabled(False)
    return m


def worker(mode: str, folder: Path, n: int, patch: int, out: Path, run: str | None = None) -> dict:
    import shutil

    import pydicom

    from mammosynth.synth.dicom import SetUIDs, derived_dicom, save_dataset

    paths = sorted(folder.glob("*.dcm"))[:n]

    def floor(files: list[Path], dest: Path) -> None:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        uids = SetUIDs()
        for p in files:
            ds = pydicom.dcmread(p)
            save_dataset(dest / p.name, derived_dicom(ds, ds.pixel_array, uids, "floor"))

    if mode == "floor":
        floor(paths[:1], out.with_name(out.name + "_warm"))
        t0 = time.perf_counter()
        floor(paths, out)
        dt = time.perf_counter() - t0
    else:
        from mammosynth.synth.insert import insert_lesions

        model = _infill_model(patch, run)

        def insert_into(files: list[Path], dest: Path, count: int):
            shutil.rmtree(dest, ignore_errors=True)
            return insert_lesions(EllipseMasks(), model, files, count, dest, seed=0, yolo=True, progress=False,
                                  max_size_mm=30.0)

        insert_into(paths[:1], out.with_name(out.name + "_warm"), 1)
        t0 = time.perf_counter()
        rep = insert_into([folder], out, n)
        dt = time.perf_counter() - t0
        assert rep.written == n, rep.as_dict()
    return {"mode": mode, "n": n, "patch": patch, "seconds": dt, "s_per_image": dt / n, "peak_rss_mb": _rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--patch", type=int, nargs="+", default=[64])
    ap.add_argument("--rounds", type=int, default=3, help="alternating floor/insert rounds; the median ratio is reported")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_insert"))
    ap.add_argument("--infill-run", default=None, help="a trained infill run folder (default: the untrained U-Net of --patch)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.workdir / "in", args.n, args.patch[0], args.workdir / f"out_{args.worker}",
                                args.infill_run)))
        return
    make_inputs(args.workdir / "in", max(args.counts))
    rows = []
    for n in args.counts:
        for patch in args.patch:
            res: dict[str, list[dict]] = {"floor": [], "insert": []}
            for _ in range(args.rounds):
                for mode in ("floor", "insert"):
                    cmd = [sys.executable, __file__, "--worker", mode, "--n", str(n), "--patch", str(patch),
                           "--workdir", str(args.workdir)] + (["--infill-run", args.infill_run] if args.infill_run else [])
                    res[mode].append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                                               env=os.environ).stdout.strip().splitlines()[-1]))
            ratios = [i["s_per_image"] / f["s_per_image"] for f, i in zip(res["floor"], res["insert"])]
            med = lambda mode, key: float(np.median([r[key] for r in res[mode]]))  # noqa: E731
            row = {"n": n, "patch": patch, "rounds": args.rounds,
                   "floor_s_per_image": round(med("floor", "s_per_image"), 3),
                   "insert_s_per_image": round(med("insert", "s_per_image"), 3),
                   "insert_images_per_s": round(1 / med("insert", "s_per_image"), 3),
                   "ratio_median": round(float(np.median(ratios)), 2),
                   "ratios": [round(r, 2) for r in ratios],
                   "floor_peak_rss_mb": round(med("floor", "peak_rss_mb")),
                   "insert_peak_rss_mb": round(med("insert", "peak_rss_mb"))}
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
