"""CLI command group: benchmark (``benchmark downstream``: seed 001's detection protocol on full films)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mammosynth.cli.common import console, print_json

benchmark_app = typer.Typer(help="Benchmarks that answer 'are the synthetic labels worth using?'.", no_args_is_help=True)


def _floats(text: str, name: str) -> tuple[float, ...]:
    from mammosynth.errors import ConfigError

    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise ConfigError(f"{name}: expected comma-separated numbers, got {text!r}") from err


@benchmark_app.command("downstream")
def downstream(
    data: Path = typer.Option(..., "--data", help="Dataset file (.h5) from `data ingest` (its lesion films are read back through the source reader its manifest names; the source folder must be here) or `data phantom` (lesion films drawn by the benchmark)."),
    out: Path = typer.Option(..., "--out", help="Output folder: benchmark.json, benchmark.md, recall_vs_size.png, froc.png, coco/."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: 2 folds, 2 seeds, fractions 0.5,1, 60 detector steps, 40 generator steps, 200 bootstrap resamples, 24 phantom films (options given explicitly still win)."),
    folds: Optional[int] = typer.Option(None, "--folds", min=2, help="Patient-level stratified cross-validation folds [default: 5]."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Detector seeds per arm (0..N-1) [default: 5]."),
    fractions: Optional[str] = typer.Option(None, "--fractions", help="Fractions of each fold's real training lesion patients, comma-separated [default: 0.25,0.5,1.0]."),
    arms: str = typer.Option("real,traditional,copy-paste,infill,diffusion-infill", "--arms", help="Arms: real, traditional, copy-paste, and generator method names with an infill() API (infill, diffusion-infill, ...); unregistered methods are skipped with a message."),
    ratios: str = typer.Option("1", "--ratios", help="Added lesions per real training lesion, comma-separated (the schedule of N; each ratio is one more model per arm)."),
    resolution_mm: float = typer.Option(0.4, "--resolution-mm", help="Film resolution the detector works at (mm per pixel): a 1024^2 mini-MIAS film at 0.2 mm becomes 512^2; a 3-30 mm mass spans 8-75 px."),
    tile: int = typer.Option(64, "--tile", help="Training tile side (pixels at --resolution-mm; 64 px = 25.6 mm at 0.4 mm)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps per detector [default: 200]."),
    gen_steps: Optional[int] = typer.Option(None, "--gen-steps", min=1, help="Training steps per generator run (one per fold and regime) [default: 100]."),
    width: int = typer.Option(8, "--width", min=1, help="U-Net channels at the first level."),
    depth: int = typer.Option(3, "--depth", min=1, help="U-Net poolings."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Detector batch size (tiles)."),
    threshold: float = typer.Option(0.5, "--threshold", help="Probability threshold of the detector's components."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", min=10, help="Bootstrap resamples of the test films [default: 1000]."),
    phantom_films: Optional[int] = typer.Option(None, "--phantom-films", min=4, help="Phantom stores only: lesion films drawn (one mass each) [default: 60]."),
    phantom_diameter_mm: str = typer.Option("4,9", "--phantom-diameter-mm", help="Phantom stores only: mass diameter range (mm), uniform."),
    phantom_contrast: float = typer.Option(0.35, "--phantom-contrast", help="Phantom stores only: fraction of the rendered mass's contrast kept (1 = the phantom's own)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds, regimes and bootstrap."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0 = torch's default)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Seed 001 sec. 4.5 on full films: k-fold CV, low-data regimes, real / traditional / copy-paste / generator arms, CIs."""
    import torch

    from mammosynth.evaluate.benchmark import BenchmarkConfig, run_benchmark

    if threads:
        torch.set_num_threads(threads)
    over = {k: v for k, v in dict(folds=folds, steps=steps, gen_steps=gen_steps, bootstrap=bootstrap, phantom_films=phantom_films).items()
            if v is not None}
    if seeds is not None:
        over["seeds"] = tuple(range(seeds))
    if fractions is not None:
        over["fractions"] = _floats(fractions, "--fractions")
    d = _floats(phantom_diameter_mm, "--phantom-diameter-mm")
    over.update(arms=tuple(a.strip() for a in arms.split(",") if a.strip()), ratios=_floats(ratios, "--ratios"),
                resolution_mm=resolution_mm, tile=tile, width=width, depth=depth, batch_size=batch_size, threshold=threshold,
                phantom_diameter_mm=(d[0], d[-1]), phantom_contrast=phantom_contrast, fold_seed=seed, device=device)
    cfg = BenchmarkConfig.quick(**over) if quick else BenchmarkConfig(**over)
    res = run_benchmark(data, out, cfg, overwrite=overwrite, progress=not json_out,
                        log=(lambda m: None) if json_out else (lambda m: console.print(m, highlight=False)))
    if json_out:
        print_json({"summary": res["summary"], "seconds": res["seconds"], "skipped_arms": res["skipped_arms"],
                    "report": str(out / "benchmark.md"), "results": str(out / "benchmark.json")})
    else:
        for s in res["summary"]:
            r = s["recall@1fppi"]
            console.print(f"  {s['fraction']:g} {s['arm']:<16} recall@1FPPI {r['mean']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]")
        console.print(f"report: [bold]{out / 'benchmark.md'}[/]")


def register(app: typer.Typer) -> None:
    """Add the ``benchmark`` command group to the main app."""
    app.add_typer(benchmark_app, name="benchmark")
