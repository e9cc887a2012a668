"""CLI commands: ``mammosynth fidelity labels`` (label fidelity of a synthetic set)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

fidelity_app = typer.Typer(help="Does a synthetic set carry the labels it was generated for?", no_args_is_help=True)


@fidelity_app.command("labels")
def labels(
    classifier: Path = typer.Option(..., "--classifier", help="Run folder of `mammosynth train classifier` (or its parent: the latest classifier run)."),
    synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic set folder (manifest.csv + images/) written by generate/interpolate."),
    real: Optional[Path] = typer.Option(None, "--real", help="Dataset file for the real-accuracy baseline (default: the classifier's training data)."),
    split: str = typer.Option("test", "--split", help="Split of the real data to measure on (train, val, test)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else there."),
) -> None:
    """Per requested (shape, margin): the classifier's accuracy on generated lesions, on the
    real test split for the same class, and their ratio (seed 000's target: margin ratio >= 0.8)."""
    from mammosynth.evaluate.label_fidelity import format_table, label_fidelity
    from mammosynth.train.run import resolve_run

    report = label_fidelity(resolve_run(classifier, "classifier"), synthetic, real_store=real, split=split, device=device)
    if json_out:
        from mammosynth.cli.common import print_json

        print_json(report)
        return
    from mammosynth.cli.common import console

    r, g = report["real"], report["generated"]
    console.print(f"classifier {report['classifier']}: real {report['split']} accuracy shape "
                  f"{_fmt(r['shape_accuracy'])}, margin {_fmt(r['margin_accuracy'])} (n={report['n_real']}); "
                  f"generated shape {_fmt(g['shape_accuracy'])}, margin {_fmt(g['margin_accuracy'])} (n={report['n_generated']})")
    typer.echo(format_table(report))
    below = [f"{c['shape'] or '-'}/{c['margin']} ({_fmt(c['margin_ratio'])})" for c in report["categories"]
             if c["margin_ratio_ok"] is False]
    console.print(f"overall margin ratio {_fmt(report['margin_ratio'])}, shape ratio {_fmt(report['shape_ratio'])}; "
                  f"{report['categories_meeting_target']} of {report['categories_judged']} categories reach margin ratio "
                  f">= {report['margin_ratio_target']}" + (f"; below: {', '.join(below)}" if below else ""))


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def register(app: typer.Typer) -> None:
    """Add the ``fidelity`` command group to the main app."""
    app.add_typer(fidelity_app, name="fidelity")
