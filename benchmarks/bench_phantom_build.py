"""How long the demo phantom store takes to build: a reference commit against this tree, same run.

Issue #15 asks that the demo phantom (400 lesions, 24 normals, 64 px patches) still builds in
about 20 s on an idle 2-core machine. This times ``write_phantom_store`` as the demo calls it
(``demo.py``: 768 x 624 canvas) and at the phantom's default 1024 x 832, for the package at a
reference commit (exported with ``git archive`` into a temporary folder) and for this working
tree, each in a fresh one-thread subprocess, alternating old/new ``--repeats`` times. It reports
CPU seconds (the process's own: a shared machine inflates wall time) and wall seconds, the
new/old ratio, and whether the two stores hold bit-identical data (sha256 over every dataset;
the manifest, which holds a timestamp, is left out).

    OMP_NUM_THREADS=1 python benchmarks/bench_phantom_build.py [--ref 2439e01] [--repeats 1] [--shapes 768x624,1024x832]

Writes ``benchmarks/results/phantom_build.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from mammosynth.data.store import store_digest  # noqa: E402

#: The tree before the speed work of issue 15 (markers and the batched store writer came after).
DEFAULT_REF = "2439e01"

CHILD = r"""
import json, sys, time
from mammosynth.phantom import write_phantom_store
H, W = (int(v) for v in sys.argv[1].split("x"))
out = sys.argv[2]
w, c = time.perf_counter(), time.process_time()
write_phantom_store(out, n_lesions=400, n_normals=24, patch_size=64, full_shape=(H, W), seed=0, progress=False)
wall, cpu = time.perf_counter() - w, time.process_time() - c
import mammosynth
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "package": mammosynth.__file__}))
"""


def export(ref: str, dest: Path) -> str:
    """``src/`` of commit ``ref`` under ``dest``; returns the short commit."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], check=True, capture_output=True,
                          text=True).stdout.strip()


def build(src: Path, shape: str, tmp: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(src)}
    out = tmp / f"p-{time.time_ns()}.h5"
    res = subprocess.run([sys.executable, "-c", CHILD, shape, str(out)], env=env, check=True, capture_output=True, text=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r["sha256"] = store_digest(out)  # hashed here, by this tree's code, whichever package wrote it
    out.unlink(missing_ok=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default=DEFAULT_REF, help="reference commit (default: %(default)s, before the speed work)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--shapes", default="768x624,1024x832", help="canvas HxW list; the demo uses 768x624")
    args = ap.parse_args()
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    results: dict = {"ref": None, "shapes": {}, "load_before": load}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "old").mkdir()
        results["ref"] = export(args.ref, tmp / "old")
        old_src, new_src = tmp / "old" / "src", ROOT / "src"
        for shape in args.shapes.split(","):
            runs: dict[str, list] = {"old": [], "new": []}
            for _ in range(args.repeats):
                for label, src in (("old", old_src), ("new", new_src)):
                    r = build(src, shape, tmp)
                    runs[label].append(r)
                    print(f"[{time.perf_counter() - t0:5.0f} s] {shape} {label}: {r['cpu_s']:.1f} CPU-s, "
                          f"{r['wall_s']:.1f} wall-s ({r['package']})", flush=True)
            best = {k: min(v, key=lambda r: r["cpu_s"]) for k, v in runs.items()}
            identical = len({r["sha256"] for v in runs.values() for r in v}) == 1
            results["shapes"][shape] = {"runs": runs, "cpu_ratio_new_over_old": best["new"]["cpu_s"] / best["old"]["cpu_s"],
                                        "identical_data": identical}
            print(f"{shape}: old {best['old']['cpu_s']:.1f} CPU-s / {best['old']['wall_s']:.1f} wall-s, "
                  f"new {best['new']['cpu_s']:.1f} CPU-s / {best['new']['wall_s']:.1f} wall-s, "
                  f"new/old CPU {results['shapes'][shape]['cpu_ratio_new_over_old']:.2f}; "
                  f"bit-identical store data: {identical}", flush=True)
    results["load_after"] = os.getloadavg()[0]
    out = ROOT / "benchmarks" / "results" / "phantom_build.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"load average {load:.1f} before, {results['load_after']:.1f} after; wrote {out}")


if __name__ == "__main__":
    main()
