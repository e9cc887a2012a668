"""CLI commands: ``mammosynth study create | serve | analyze | status``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

HELP = (
    "Reader study: radiologists judge real vs synthetic images (seeds 002, 003, 004). "
    "Workflow: `study create` (sample + invitation links), send each reader their link, "
    "`study serve`, then `study analyze`. See docs/study.md."
)


def register(app: typer.Typer) -> None:
    """Add the ``study`` sub-app to the main app."""
    study = typer.Typer(name="study", help=HELP, no_args_is_help=True)

    @study.command("create")
    def create(
        real: Path = typer.Option(..., "--real", help="Real images: a store file (.h5; lesion patches of its test split) or a folder with images/*.png."),
        synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic set folder (images/*.png, as written by `mammosynth generate`/`insert`)."),
        readers: int = typer.Option(..., "--readers", min=1, help="Number of readers; each gets their own order and invitation link."),
        out: Path = typer.Option(..., "--out", help="New study folder (must not exist or be empty). Holds study.sqlite, images/, invitations.csv."),
        n_per_class: Optional[int] = typer.Option(None, "--n-per-class", min=1, help="Images drawn per class (real, synthetic). Default: min(75, available), as seed 003's 75 + 75."),
        retest: int = typer.Option(0, "--retest", min=0, help="Images each reader sees a second time, unannounced, in the second half of their sequence (seed 004 test-retest). 0 = none."),
        seed: int = typer.Option(0, "--seed", help="Seed of the sample and of every reader's order."),
        realism_score: bool = typer.Option(False, "--realism-score/--no-realism-score", help="Also ask a 1-5 realism score with every image (seed 002)."),
        base_url: str = typer.Option("http://127.0.0.1:8765", "--base-url", help="Where readers will reach the server; the links are BASE_URL/r/<token>."),
        size: Optional[int] = typer.Option(None, "--size", min=8, help="Resize every image to SIZE x SIZE. Default: keep sizes when all equal, else resize all to the most common real size (mixed sizes would reveal the source)."),
    ) -> None:
        """Draw a balanced random sample, copy it under opaque ids, print one invitation link per reader."""
        from mammosynth.study.create import create_study

        made = create_study(real, synthetic, out, readers, n_per_class=n_per_class, retest=retest, seed=seed,
                            realism_score=realism_score, base_url=base_url, size=size)
        for note in made.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"study {made.path}: {made.n_per_class} real + {made.n_per_class} synthetic images "
                   f"({made.image_shape[0]}x{made.image_shape[1]}), {made.retest} retest showings per reader", err=True)
        typer.echo("invitation links (secret: send each to its reader only; also in invitations.csv):", err=True)
        for inv in made.invitations:
            typer.echo(f"{inv.reader}\t{inv.link}")

    @study.command("serve")
    def serve(
        study_dir: Path = typer.Argument(..., help="Study folder made by `study create`."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind. Loopback by default; anything else exposes the study to the network."),
        port: int = typer.Option(8765, "--port", min=1, max=65535, help="TCP port."),
    ) -> None:
        """Serve the reader web app (FastAPI + uvicorn) until Ctrl-C. Answers are saved as they come."""
        from mammosynth.study.server import is_loopback, serve as run_server

        if not is_loopback(host):
            typer.secho(
                f"WARNING: binding to {host}, not a loopback address: anyone who can reach this machine can reach the "
                "study. Use it only on a trusted network, or put it behind HTTPS (a reverse proxy), since the links are the readers' passwords.",
                fg=typer.colors.RED, bold=True, err=True,
            )
        # uvicorn announces "Uvicorn running on http://HOST:PORT (Press CTRL+C to quit)" once the
        # study has opened, so a study that cannot be served is one error line, not a banner and one
        run_server(study_dir, host=host, port=port)

    @study.command("analyze")
    def analyze(
        study_dir: Path = typer.Argument(..., help="Study folder made by `study create`."),
        out: Path = typer.Option(..., "--out", help="Report folder: report.html, metrics.json, answers.csv, plots."),
        as_json: bool = typer.Option(False, "--json", help="Print metrics.json on stdout and nothing else there."),
    ) -> None:
        """Accuracy, ROC/AUC with CIs, d', test-retest Sokal-Michener and realism means, per reader and pooled."""
        from mammosynth.study.analyze import analyze_study

        metrics = analyze_study(study_dir, out)
        if as_json:
            typer.echo(json.dumps(metrics))
            return
        for m in metrics["readers"]:
            auc = m["auc"]
            typer.echo(f"{m['reader']}: {m['answered']}/{m['total']} answered, accuracy "
                       f"{m['accuracy'] if m['accuracy'] is None else round(m['accuracy'], 3)}, AUC "
                       f"{auc if auc is None else round(auc, 3)}, d' {m['d_prime'] if m['d_prime'] is None else round(m['d_prime'], 3)}")
        typer.echo(f"report: {out / 'report.html'}")

    @study.command("simulate")
    def simulate(
        study_dir: Path = typer.Argument(..., help="A fresh study folder (no answers yet)."),
        d_prime: float = typer.Option(1.0, "--d-prime", help="How well the simulated readers tell real from synthetic (0 = chance)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the simulated answers."),
    ) -> None:
        """Fill a fresh study with simulated readers, for demos and pipeline checks only (the report says so)."""
        from mammosynth.study.simulate import simulate_readers

        n = simulate_readers(study_dir, d_prime=d_prime, seed=seed)
        typer.echo(f"{n} simulated answers saved in {study_dir} (marked as simulated)", err=True)

    @study.command("status")
    def status(study_dir: Path = typer.Argument(..., help="Study folder made by `study create`.")) -> None:
        """How many images each reader has answered (reads the DB; safe while serving)."""
        from mammosynth.study import db

        con, _ = db.open_study(study_dir)
        try:
            for r in con.execute("SELECT reader_id, name FROM readers ORDER BY reader_id").fetchall():
                answered, total, _ = db.reader_progress(con, int(r["reader_id"]))
                typer.echo(f"{r['name']}\t{answered}/{total}")
        finally:
            con.close()

    app.add_typer(study)
