"""CLI command: evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mammosynth.cli.common import console, print_json


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate(
        real: Path = typer.Option(..., "--real", help="Dataset file (.h5) with the real lesions: train (what the generator learned from: floor, memorisation), val and test (held-out reference)."),
        synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic set folder written by `generate`, `interpolate` or `insert`."),
        out: Path = typer.Option(..., "--out", help="Report folder: report.html, metrics.json and PNG plots."),
        downstream: bool = typer.Option(False, "--downstream", help="Also run the detection experiment (trains several detectors: minutes to hours)."),
        classifier: Optional[Path] = typer.Option(None, "--classifier", help="BI-RADS classifier run (`train classifier`) for label fidelity."),
        segmenter: Optional[Path] = typer.Option(None, "--segmenter", help="Segmenter run (`train segmenter`) for mask fidelity."),
        weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="ImageNet weight cache (default $MAMMOSYNTH_WEIGHTS or ~/.cache/mammosynth/weights)."),
        max_images: int = typer.Option(1000, "--max-images", min=8, help="At most this many images per set (randomly chosen)."),
        quick: bool = typer.Option(False, "--quick", help="Fewer bootstrap resamples and a reduced t-SNE (for a first look)."),
        downstream_steps: int = typer.Option(300, "--downstream-steps", min=1, help="Training steps per detector in the downstream experiment."),
        downstream_seeds: int = typer.Option(3, "--downstream-seeds", min=1, help="Detectors trained per amount (seeds 0..N-1); CIs need >= 2."),
        downstream_amounts: str = typer.Option("0,0.5,1", "--downstream-amounts", help="Synthetic lesions added, as fractions of the real training lesions, comma-separated (0 = real only)."),
        detector: str = typer.Option("unet", "--detector", help="Downstream detector: unet (U-Net segmentation -> boxes; CPU or GPU) or retinanet (MONAI; needs torchvision + monai)."),
        allow_leakage: bool = typer.Option(False, "--allow-leakage", help="Evaluate even when synthetic images were made from lesions of the evaluation splits (val/test; manifest source_ids), reporting them as leaked. Default: refuse. Also lets label fidelity run with a judge that saw the seeds (flagged)."),
        lesion_type: str = typer.Option("all", "--lesion-type", help="all (default: every lesion pooled, plus every section per lesion type when the store or the set holds more than one), mass, calcification or non_mass (only that type, real and synthetic, in every section)."),
        seed: int = typer.Option(0, "--seed", help="Random seed for sampling, splits and bootstraps."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    ) -> None:
        """Measure realism, diversity, memorisation, label/mask fidelity and downstream benefit of a synthetic set."""
        from mammosynth.errors import ConfigError
        from mammosynth.evaluate.run import LESION_TYPE_CHOICES
        from mammosynth.evaluate.run import evaluate as run_eval

        if lesion_type not in LESION_TYPE_CHOICES:
            raise ConfigError(f"--lesion-type must be one of {', '.join(LESION_TYPE_CHOICES)}, got {lesion_type!r}")
        try:
            amounts = tuple(float(a) for a in downstream_amounts.split(",") if a.strip())
        except ValueError as err:
            raise ConfigError(f"--downstream-amounts: expected comma-separated numbers, got {downstream_amounts!r}") from err
        if downstream:
            from mammosynth.evaluate.downstream import check_detector

            check_detector(detector)  # fail before the other sections run, not after
        metrics = run_eval(real, synthetic, out, quick=quick, downstream=downstream, classifier=classifier, segmenter=segmenter,
                           weights_dir=weights_dir, max_images=max_images, seed=seed, device=device, downstream_steps=downstream_steps,
                           downstream_seeds=tuple(range(downstream_seeds)), downstream_amounts=amounts, detector=detector,
                           allow_leakage=allow_leakage, lesion_type=lesion_type)
        if json_out:
            print_json({"summary": metrics["summary"], "skipped": metrics["skipped"], "leakage": metrics["leakage"],
                        "summary_by_type": {t: b["summary"] for t, b in metrics["results_by_type"].items()},
                        "types_not_evaluated": metrics["types_not_evaluated"],
                        "seconds": metrics["seconds"],
                        "report": str(out / "report.html"), "metrics": str(out / "metrics.json")})
        else:
            for k, v in metrics["summary"].items():
                console.print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
            for k, v in metrics["skipped"].items():
                console.print(f"  [yellow]skipped[/] {k}: {v}")
            for t, block in metrics["results_by_type"].items():
                console.print(f"[bold]{t}[/] ({block['n_real_test']} real test, {block['n_synthetic']} synthetic):")
                for k, v in block["summary"].items():
                    console.print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
            for t, why in metrics["types_not_evaluated"].items():
                console.print(f"  [yellow]{t} not evaluated on its own[/]: {why}")
            console.print(f"report: [bold]{out / 'report.html'}[/]")
