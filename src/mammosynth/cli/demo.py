"""CLI command: demo."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for everything the demo writes (dataset, runs, synthetic sets, report.html)."),
        seed: int = typer.Option(0, "--seed", help="Random seed for the phantom, training and synthesis."),
        lesions: int = typer.Option(400, "--lesions", min=20, help="Phantom lesion patches to draw."),
        normals: int = typer.Option(24, "--normals", min=2, help="Phantom normal mammograms to draw."),
        insert_n: int = typer.Option(8, "--insert", min=1, help="Normal mammograms to insert a mass into."),
        mask_steps: int = typer.Option(None, "--mask-steps", help="Override the mask DCGAN's training steps (default: configs/mask-dcgan-demo.yaml)."),
        infill_steps: int = typer.Option(None, "--infill-steps", help="Override the infilling GAN's training steps (default: configs/infill-demo.yaml)."),
        evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Run the quick evaluation and link it from the report."),
    ) -> None:
        """Run the whole flow on the built-in breast phantom (no data needed) and write report.html."""
        from mammosynth.demo import DemoSettings, run_demo

        run_demo(DemoSettings(out=out, seed=seed, n_lesions=lesions, n_normals=normals, n_insert=insert_n,
                              mask_steps=mask_steps, infill_steps=infill_steps, evaluate=evaluate))
