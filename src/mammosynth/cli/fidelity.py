"""CLI commands: ``mammosynth fidelity labels`` (label fidelity of a synthetic set)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

fidelity_app = typer.Typer(help="Does a synthetic set carry the labels it was generated for?", no_args_is_help=True)


@fidelity_app.command("labels")
def labels(
    classifier: Path = typer.Option(..., "--classifier", help="Run folder of `mammosynth train classifier` (or its parent: the latest classifier run): the judge. Train it on a split the generator never saw: `--set train_split=val`."),
    synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic set folder (manifest.csv + images/) written by generate/interpolate."),
    real: Optional[Path] = typer.Option(None, "--real", help="Dataset file for the real-accuracy baseline (default: the classifier's training data)."),
    split: str = typer.Option("test", "--split", help="Split of the real data to measure real accuracy on (train, val, test); default test."),
    allow_leakage: bool = typer.Option(False, "--allow-leakage", help="Report even when the judge has seen the generator's seeds or training lesions, or the real lesions it is measured on (the numbers are then flagged as leaked). Default: refuse."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else there."),
) -> None:
    """Per requested (shape, margin): the judge's accuracy on generated lesions, on the real
    test split for the same class, and their ratio. The judge must not have seen the generator's
    seeds or training lesions (checked by source id; docs/evaluate.md). The 0.8 reference line
    for the margin ratio is mammosynth's, not seed 000's."""
    from mammosynth.evaluate.label_fidelity import format_table, label_fidelity
    from mammosynth.train.run import resolve_run

    report = label_fidelity(resolve_run(classifier, "classifier"), synthetic, real_store=real, split=split, device=device,
                            allow_leakage=allow_leakage)
    if json_out:
        from mammosynth.cli.common import print_json

        print_json(report)
        return
    from mammosynth.cli.common import console

    p = report["protocol"]
    if not p["checked"]:
        console.print(f"[yellow]protocol not checked[/]: {p['note']}")
    elif p["clean"]:
        console.print(f"protocol: judge trained on {p['judge']['split']!r} ({p['judge']['n']} lesions), real accuracy on "
                      f"{p['real']['split']!r} ({p['real']['n']}); no overlap with the seeds, the generator's training "
                      "lesions or the real evaluation lesions")
    else:
        console.print(f"[bold red]LEAKED (--allow-leakage)[/]: {'; '.join(p['problems'])}")
    for head, why in report["judge_untrained_heads"].items():
        console.print(f"[yellow]no {head} numbers[/]: the judge's {head} head was not trained ({why})")
    r, g = report["real"], report["generated"]
    console.print(f"classifier {report['classifier']}: real {report['split']} accuracy shape "
                  f"{_fmt(r['shape_accuracy'])}, margin {_fmt(r['margin_accuracy'])} (n={report['n_real']}); "
                  f"generated shape {_fmt(g['shape_accuracy'])}, margin {_fmt(g['margin_accuracy'])} (n={report['n_generated']})")
    typer.echo(format_table(report))
    below = [f"{c['shape'] or '-'}/{c['margin']} ({_fmt(c['margin_ratio'])})" for c in report["categories"]
             if c["margin_ratio_at_reference"] is False]
    console.print(f"overall margin ratio {_fmt(report['margin_ratio'])}, shape ratio {_fmt(report['shape_ratio'])}; "
                  f"{report['categories_at_reference']} of {report['categories_judged']} categories reach margin ratio "
                  f">= {report['margin_ratio_reference']}" + (f"; below: {', '.join(below)}" if below else "")
                  + f" ({report['reference_note']})")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def register(app: typer.Typer) -> None:
    """Add the ``fidelity`` command group to the main app."""
    app.add_typer(fidelity_app, name="fidelity")
