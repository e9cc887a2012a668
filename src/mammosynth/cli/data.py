"""CLI commands: ``mammosynth data phantom | ingest | labels | info | preview``.

Thin wrappers: parse options, call the library, print a rich table (or one JSON object on
stdout with ``--json``). Errors are :mod:`mammosynth.errors` exceptions, which
``mammosynth.cli.main`` turns into a one-line reason and a non-zero exit status.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from mammosynth.errors import ConfigError

SOURCE_HELP = "Data source: cbis-ddsm | inbreast | mias | vindr | folder (see docs/data.md)."

data_app = typer.Typer(
    name="data",
    help="Build, inspect and preview the one-file dataset (HDF5) that training reads.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


def parse_hw(text: str, what: str = "--normal-size") -> tuple[int, int]:
    """``"1024x832"`` (or ``1024,832``) -> (1024, 832); ConfigError if malformed."""
    parts = str(text).lower().replace(",", "x").replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{what} must be HxW in pixels, e.g. 1024x832; got {text!r}") from None
    if h < 16 or w < 16:
        raise ConfigError(f"{what} must be at least 16x16 pixels; got {text!r}")
    return h, w


def _check_patch_size(size: int) -> None:
    if size < 8 or size > 1024:
        raise ConfigError(f"--size must be between 8 and 1024 pixels (64, 128 or 256 are usual); got {size}")


def _print_json(obj: Any) -> None:
    from mammosynth.io import _json_default

    typer.echo(json.dumps(obj, default=_json_default))


SPLIT_FRACTIONS_HELP = ("Train,val,test fractions of the patient-level split, three numbers that sum to 1 "
                        "(e.g. 0.6,0.2,0.2 for a small dataset); the split is stratified by margin, shape and "
                        "pathology and recorded in the manifest.")


def _console():
    from mammosynth.cli.common import console

    return console  # human output on stderr: stdout is for --json


def _split_fractions(text: str) -> tuple[float, float, float]:
    from mammosynth.data.splits import parse_fractions

    return parse_fractions(text)


def _pair(text: str, option: str) -> tuple[float, float]:
    """'LO,HI' -> (lo, hi) floats, or a one-line ConfigError naming the option."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{option}: expected two numbers LO,HI, got {text!r}") from None
    return lo, hi


def _info_tables(info: dict[str, Any]) -> None:
    from rich.table import Table

    con = _console()
    head = Table(title=f"{info['file']}", show_header=False, box=None)
    head.add_row("lesions", str(info["n_lesions"]), "patients", str(info["n_patients"]["lesions"]))
    head.add_row("normals", str(info["n_normals"]), "patients", str(info["n_patients"]["normals"]))
    head.add_row("patch size", f"{info['patch_size']} px", "normal size", "x".join(str(v) for v in info["normal_size"] or []) + " px")
    head.add_row("skipped", str(info["n_skipped"]), "source", str(info.get("provenance", {}).get("source", "")))
    head.add_row("warnings", str(info.get("n_warnings", 0)), "split fractions",
                 ",".join(f"{f:g}" for f in info.get("split_fractions") or []))
    con.print(head)
    labels = Table(title="lesions per label")
    labels.add_column("field")
    labels.add_column("value")
    labels.add_column("count", justify="right")
    for fname in ("shape", "margin", "pathology", "lesion_type", "morphology", "distribution"):
        counts = info.get(fname) or {}
        if fname in ("morphology", "distribution") and not any(v for k, v in counts.items() if k != "(none)"):
            continue  # no calcification labels in this store
        for k, v in counts.items():
            labels.add_row(fname, k, str(v))
        labels.add_section()
    con.print(labels)
    splits = Table(title="patient-level splits (records per split)")
    splits.add_column("group")
    for s in ("train", "val", "test"):
        splits.add_column(s, justify="right")
    for grp, counts in info["splits"].items():
        splits.add_row(grp, *(str(counts.get(s, 0)) for s in ("train", "val", "test")))
    per_split = info.get("split_labels") or {}
    if info["n_lesions"] and per_split:
        splits.add_section()
        for fname in [f for f in ("margin", "shape", "morphology", "distribution", "pathology", "type") if f in per_split["train"]]:
            for value in per_split["train"][fname]:
                row = [per_split[s][fname].get(value, 0) for s in ("train", "val", "test")]
                if any(row):
                    splits.add_row(f"  {fname} {value}", *(str(n) for n in row))
    con.print(splits)
    for line in info.get("split_warnings") or []:
        con.print(f"[bold yellow]warning:[/] {line}")


@data_app.command("phantom")
def phantom_cmd(
    out: Path = typer.Option(..., "--out", help="Dataset file to write (.h5). Written atomically."),
    lesions: int = typer.Option(400, "--lesions", min=0, help="Number of lesion patches to draw."),
    calcifications: int = typer.Option(0, "--calcifications", min=0, help="Number of calcification clusters to draw as well (every BI-RADS morphology x distribution in turn, with each calcification's centre); 0 keeps the file as it was."),
    normals: int = typer.Option(24, "--normals", min=0, help="Number of normal full mammograms to draw."),
    size: int = typer.Option(64, "--size", help="Lesion patch side in pixels (64, 128 or 256)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same file."),
    normal_size: str = typer.Option("1024x832", "--normal-size", help="Normal mammogram canvas HxW in pixels (drawn at 1024x832, 0.2 mm/px, then resized)."),
    contact_sheet: Optional[Path] = typer.Option(None, "--contact-sheet", help="Also write a labelled contact sheet PNG (4 mammograms + one patch per shape x margin)."),
    split_fractions: str = typer.Option("0.8,0.1,0.1", "--split-fractions", help=SPLIT_FRACTIONS_HELP),
    style: str = typer.Option("ffdm", "--style", help="Look of the images: ffdm (processed full-field digital) or film (digitised screen-film, like mini-MIAS)."),
    mass_contrast: str = typer.Option("0,0.1", "--mass-contrast", help="LO,HI range of each mass's excess attenuation over fibroglandular tissue (0.05 = 5 % denser); lower for subtler masses."),
    mass_size: str = typer.Option("8,35", "--mass-size", help="LO,HI range of mass diameters in mm (log-normal around 15 mm, clipped)."),
    markers: bool = typer.Option(False, "--markers", help="Draw radio-opaque markers on the normal mammograms: the laterality/view letters (\"L CC\") outside the breast and a metal bead on the nipple, each labelled in the file as category 'marker' (never a lesion). Default: off (the file is what it always was)."),
    nipple_bead: bool = typer.Option(True, "--nipple-bead/--no-nipple-bead", help="With --markers: also draw the nipple bead. Default: on."),
    as_json: bool = typer.Option(False, "--json", help="Print the dataset summary as one JSON object on stdout."),
) -> None:
    """Draw a procedural phantom dataset (breasts with BI-RADS-labelled masses, and calcification
    clusters on request) into FILE.h5."""
    from mammosynth.data.store import Store
    from mammosynth.phantom import write_phantom_store

    _check_patch_size(size)
    hw = parse_hw(normal_size)
    fractions = _split_fractions(split_fractions)
    write_phantom_store(out, lesions, normals, size, normal_size=hw, seed=seed, progress=not as_json,
                        split_fractions=fractions, style=style, mass_contrast_range=_pair(mass_contrast, "--mass-contrast"),
                        mass_size_range_mm=_pair(mass_size, "--mass-size"), n_calcifications=calcifications,
                        markers=markers, nipple_marker=nipple_bead)
    if contact_sheet is not None:
        from mammosynth.phantom.contact_sheet import write_contact_sheet

        write_contact_sheet(contact_sheet, seed=seed, patch_size=size)
    with Store(out) as store:
        info = store.info()
    _print_json(info) if as_json else _info_tables(info)


@data_app.command("ingest")
def ingest_cmd(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    root: Path = typer.Option(..., "--root", help="Folder holding the dataset's images (paths in the CSVs are relative to it)."),
    csv: Optional[list[Path]] = typer.Option(None, "--csv", help="Metadata file(s); repeat for several. CBIS-DDSM: the description CSVs; mias: Info.txt; vindr: finding_annotations.csv; folder: labels.csv; inbreast: INbreast.csv (optional). Default: looked up in --root."),
    out: Path = typer.Option(..., "--out", help="Dataset file to write (.h5); the skip report goes beside it as <name>.skips.csv."),
    size: int = typer.Option(64, "--size", help="Lesion patch side in the store, pixels (64, 128 or 256)."),
    normal_size: str = typer.Option("1024x832", "--normal-size", help="Canvas for normal mammograms, HxW pixels."),
    normals: bool = typer.Option(True, "--normals/--no-normals", help="Also store lesion-free mammograms."),
    lesions: str = typer.Option("mass", "--lesions", help="Which findings become lesions: mass (masses and the non-mass findings kept with them, as before), calcification (calcification clusters with BI-RADS morphology and distribution) or all. Calcifications: cbis-ddsm, mias, inbreast."),
    calcifications: bool = typer.Option(False, "--calcifications", hidden=True, help="Deprecated: use --lesions all."),
    context: float = typer.Option(0.3, "--context", min=0.0, help="Context around a lesion, as a fraction of its larger side on each side."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed for the patient-level train/val/test split of patients without an official split."),
    split_fractions: str = typer.Option("0.8,0.1,0.1", "--split-fractions", help=SPLIT_FRACTIONS_HELP + " An official test set (CBIS-DDSM, VinDr) stays the test set; val is carved from the official training set."),
    as_json: bool = typer.Option(False, "--json", help="Print the ingest summary as one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Read a public dataset (or your own folder) into one dataset file; unusable records are
    listed with their reason in the skip report (with warnings for what was kept but is worth
    a look). Exit status is non-zero only if nothing was usable."""
    from mammosynth.data.ingest import ingest

    _check_patch_size(size)
    fractions = _split_fractions(split_fractions)
    if calcifications:
        if lesions.strip().lower() not in ("mass", "all"):
            raise ConfigError(f"--calcifications (deprecated: it means --lesions all) contradicts --lesions {lesions}")
        lesions = "all"
        _console().print("[bold yellow]warning:[/] --calcifications is deprecated; it means --lesions all")
    summary = ingest(
        source, root, list(csv or []), out, patch_size=size, normal_size=parse_hw(normal_size),
        include_normals=normals, progress=not (quiet or as_json), lesions=lesions,
        context=context, split_seed=split_seed, split_fractions=fractions,
    )
    if as_json:
        _print_json(summary.as_dict())
        return
    from rich.table import Table

    t = Table(title=f"ingest {summary.source} -> {summary.out}")
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_row("lesions kept", str(summary.n_lesions))
    t.add_row("normals kept", str(summary.n_normals))
    t.add_row("skipped", str(summary.n_skipped))
    for reason, n in list(summary.skip_reasons.items())[:12]:
        t.add_row(f"  {reason}", str(n))
    t.add_row("warnings (kept)", str(summary.n_warnings))
    for reason, n in list(summary.warning_reasons.items())[:12]:
        t.add_row(f"  {reason}", str(n))
    t.add_row("seconds", f"{summary.seconds:.1f}")
    con = _console()
    con.print(t)
    con.print(f"skip report (skips and warnings): {summary.skip_report}")
    from mammosynth.data.store import Store

    with Store(summary.out) as store:
        for line in store.info()["split_warnings"]:
            con.print(f"[bold yellow]warning:[/] {line}")


@data_app.command("labels")
def labels_cmd(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    csv: list[Path] = typer.Option(..., "--csv", help="Metadata file(s) to read; repeat for several (CBIS-DDSM CSVs, INbreast XML files or folders, mini-MIAS Info.txt, VinDr finding_annotations.csv, folder labels.csv)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
) -> None:
    """Report the label vocabulary from metadata alone: counts per raw value, per mapped
    BI-RADS term, and which raw values map to no term."""
    from mammosynth.data.readers import label_report

    report = label_report(source, [str(p) for p in csv])
    if as_json:
        _print_json(report)
        return
    from rich.table import Table

    con = _console()
    con.print(f"{report['source']}: {report['rows']} rows in {len(report['files'])} file(s); kinds: "
              + ", ".join(f"{k} {v}" for k, v in report["kinds"].items()))
    from mammosynth.data.readers import LABEL_FIELDS

    for fname in LABEL_FIELDS:
        sect = report[fname]
        if not sect["raw"]:
            continue
        t = Table(title=f"{fname}: raw value -> BI-RADS term")
        t.add_column("raw value")
        t.add_column("count", justify="right")
        t.add_column("maps to")
        unmapped = {u["raw"]: u["status"] for u in sect["unmapped"]}
        for raw, n in sect["raw"].items():
            t.add_row(raw or '""', str(n), f"({unmapped[raw]})" if raw in unmapped else "mapped")
        t.add_section()
        for term, n in sect["mapped"].items():
            t.add_row(f"-> {term}", str(n), "")
        con.print(t)
    if report["unknown"]:
        con.print("[bold red]unknown raw values:[/] " + ", ".join(report["unknown"]))


@data_app.command("info")
def info_cmd(
    file: Path = typer.Argument(..., help="Dataset file (.h5) written by `data phantom` or `data ingest`."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout."),
) -> None:
    """Summarise a dataset file: counts per label, sizes, patient-level splits, skipped records."""
    from mammosynth.data.store import Store

    with Store(file) as store:
        info = store.info()
    _print_json(info) if as_json else _info_tables(info)


@data_app.command("preview")
def preview_cmd(
    file: Path = typer.Argument(..., help="Dataset file (.h5)."),
    out: Path = typer.Option(..., "--out", help="PNG file to write (atomically)."),
    lesions: int = typer.Option(32, "--lesions", min=0, help="Lesion patches to show, drawn at random."),
    normals: int = typer.Option(4, "--normals", min=0, help="Normal mammograms to show in the last row."),
    columns: int = typer.Option(8, "--columns", min=1, help="Patches per row."),
    seed: int = typer.Option(0, "--seed", help="Seed for choosing the patches."),
) -> None:
    """Write a contact sheet: lesion patches with mask contours and shape/margin captions,
    and a row of normal mammograms with their breast outline."""
    from mammosynth.data.preview import write_preview

    path = write_preview(file, out, n_lesions=lesions, n_normals=normals, columns=columns, seed=seed)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the main app."""
    app.add_typer(data_app, name="data")
