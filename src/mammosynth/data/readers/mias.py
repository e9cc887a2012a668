"""mini-MIAS: ``Info.txt`` plus 1024 x 1024 8-bit binary PGMs (``mdb001.pgm`` ...).

``Info.txt`` rows are ``REFNUM BG CLASS SEVERITY X Y RADIUS`` separated by spaces, e.g.
``mdb001 G CIRC B 535 425 197``; normal rows stop after CLASS (``mdb003 D NORM``); some
abnormal rows have no coordinates; a REFNUM repeats when one image has several lesions.
Lines that do not start with ``mdbNNN`` (headers, notes) are ignored.

* Coordinates have their origin at the bottom-left corner: row = (H - 1) - Y.
* Masks are discs of the given RADIUS (pixels) around (X, Y); a radius <= 0 is a skip.
* The file is read as bytes: a UTF-8 or UTF-16 byte-order mark is dropped (an editor that
  adds one must not cost the first row), the rest decoded as Latin-1. A line that names an
  ``mdbNNN`` reference it cannot parse (``~mdb310 ...``) is a skip row, never silence.
* CLASS maps through :func:`mammosynth.data.birads.map_mias_class`: CIRC -> circumscribed,
  SPIC -> spiculated, MISC -> ill_defined (shape unknown: None); ARCH/ASYM -> non-mass
  lesions; CALC -> skipped "calcification (not a mass)" unless ``lesions`` is
  ``calcification`` or ``all``: then a calcification lesion whose mask is the disc around the
  cluster (morphology and distribution missing: mini-MIAS does not give them; a CALC row
  without coordinates is skipped with that reason, like any other); NORM -> a normal.
* Patient: images come in left/right pairs (mdb001 + mdb002), so patient = (N + 1) // 2.
* Pixel spacing 0.2 mm (the 50 um originals reduced by 4).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from mammosynth.data.birads import LESION_KINDS, Label, map_mias_class, map_pathology
from mammosynth.data.imaging import disk_mask, laterality_from_image, read_image
from mammosynth.data.readers import (
    Record,
    Unit,
    lesion_from_image,
    lesion_type_of,
    normal_from_image,
    read_each,
    unwanted_reason,
    wanted_kinds,
)
from mammosynth.data.records import DEFAULT_CONTEXT, SkipRecord
from mammosynth.errors import DataError

NAME = "mias"
PIXEL_SPACING_MM = 0.2
_REF = re.compile(r"^mdb(\d+)$", re.IGNORECASE)
_REF_ANYWHERE = re.compile(r"mdb(\d+)", re.IGNORECASE)


def _info_lines(p: Path) -> list[str]:
    """Lines of Info.txt: a UTF-8/UTF-16 byte-order mark dropped, Latin-1 otherwise (never fails)."""
    data = p.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    return text.splitlines()


def parse_info(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Rows of Info.txt as dicts: refnum, number, bg, cls, severity, x, y, radius (None if
    absent), line. A line whose first word mentions ``mdbNNN`` but is not one gives a row
    with ``error`` set (and refnum/number from the mention)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such mini-MIAS Info.txt")
    for line_no, line in enumerate(_info_lines(p), 1):
        tok = line.split()
        if not tok:
            continue
        ref = _REF.match(tok[0])
        if ref is None:
            mention = _REF_ANYWHERE.search(tok[0])
            if mention is not None:
                yield {"refnum": mention.group(0).lower(), "number": int(mention.group(1)), "line": line_no,
                       "error": f"{p}: line {line_no}: cannot read the reference {tok[0]!r} (expected mdbNNN)"}
            continue

        def num(i: int) -> float | None:
            try:
                return float(tok[i])
            except (IndexError, ValueError):  # absent, or "*NOTE 3*"-style notes
                return None
        yield {
            "refnum": tok[0].lower(), "number": int(ref.group(1)), "line": line_no,
            "bg": tok[1] if len(tok) > 1 else "", "cls": tok[2] if len(tok) > 2 else "",
            "severity": tok[3] if len(tok) > 3 and tok[3].upper() in ("B", "M") else "",
            "x": num(4), "y": num(5), "radius": num(6),
        }


def patient_of(number: int) -> str:
    """mini-MIAS pairs images per patient: mdb001/mdb002 -> patient 001."""
    return f"mias{(number + 1) // 2:03d}"


def _info_path(root: Path, csv_paths: list[Path]) -> Path:
    if csv_paths:
        return csv_paths[0]
    for name in ("Info.txt", "info.txt", "INFO.TXT"):
        if (root / name).is_file():
            return root / name
    found = [p for p in root.rglob("*") if p.name.lower() == "info.txt"]
    if not found:
        raise DataError(f"{root}: no Info.txt found; pass it with --csv")
    return found[0]


def iter_label_rows(paths: Iterable[str | os.PathLike]) -> Iterator[dict]:
    for path in paths:
        for row in parse_info(path):
            if "error" in row:
                yield {"kind": "unknown", "shape": None, "margin": None}
                continue
            f = map_mias_class(row["cls"])
            out = {"kind": f.kind, "shape": f.shape, "margin": f.margin}
            if f.kind != "normal":
                out["pathology"] = map_pathology(row["severity"] or None)
            yield out


def estimate_total(root: str | os.PathLike, csv_paths: Iterable[str | os.PathLike]) -> int | None:
    try:
        return sum(1 for _ in parse_info(_info_path(Path(root), [Path(p) for p in csv_paths])))
    except DataError:
        return None


def iter_records(
    root: str | os.PathLike,
    csv_paths: Iterable[str | os.PathLike] = (),
    include_normals: bool = True,
    include_calcifications: bool = False,
    context: float = DEFAULT_CONTEXT,
    lesions: str = "mass",
    **_: Any,
) -> Iterator[Record]:
    """Stream one record per Info.txt row (rows of one image share one image read, and are
    read under the reader guard as one unit)."""
    root = Path(root)
    kinds = wanted_kinds(lesions, include_calcifications)
    info = _info_path(root, [Path(p) for p in csv_paths])
    images = {p.stem.lower(): p for p in sorted(root.rglob("*")) if p.suffix.lower() == ".pgm"}
    # Group rows by image, keeping file order (repeated REFNUMs are usually adjacent).
    groups: dict[str, list[dict[str, Any]]] = {}
    bad: list[dict[str, Any]] = []
    for row in parse_info(info):
        (bad if "error" in row else groups.setdefault(row["refnum"], [])).append(row)
    units: list[Unit] = [(row["refnum"], str(info), (lambda row=row: SkipRecord(NAME, row["refnum"], str(info), row["error"])))
                         for row in bad]
    for refnum, rows in groups.items():
        path = images.get(refnum)
        units.append((refnum, str(path or refnum), (lambda refnum=refnum, rows=rows, path=path: _image_records(
            refnum, rows, path, include_normals, kinds, context))))
    return read_each(NAME, units)


def _image_records(refnum: str, rows: list[dict[str, Any]], path: Path | None, include_normals: bool,
                   kinds: frozenset[str], context: float) -> Iterator[Record]:
    wanted: list[tuple[str, dict[str, Any], Any]] = []
    for k, row in enumerate(rows):
        sid = refnum if len(rows) == 1 else f"{refnum}_{k + 1}"
        f = map_mias_class(row["cls"])
        where = str(path or refnum)
        if f.kind == "unknown":
            yield SkipRecord(NAME, sid, where, f"unknown mini-MIAS class {row['cls']!r}")
        elif f.kind == "normal":
            if include_normals:
                wanted.append((sid, row, f))
            else:
                yield SkipRecord(NAME, sid, where, "normal image (normals not requested)")
        elif f.kind not in kinds:
            yield SkipRecord(NAME, sid, where, unwanted_reason(f.kind))
        elif row["x"] is None or row["y"] is None or row["radius"] is None:
            yield SkipRecord(NAME, sid, where, f"no lesion coordinates in Info.txt (line {row['line']})")
        elif row["radius"] <= 0:
            yield SkipRecord(NAME, sid, where, f"radius {row['radius']:g} in Info.txt (line {row['line']}) is not positive")
        else:
            wanted.append((sid, row, f))
    if not wanted:
        return
    if path is None:
        for sid, _, _ in wanted:
            yield SkipRecord(NAME, sid, refnum, f"image file {refnum}.pgm not found under --root")
        return
    try:
        image = read_image(path)
    except DataError as err:
        for sid, _, _ in wanted:
            yield SkipRecord(NAME, sid, str(path), str(err))
        return
    H, W = image.shape
    side = laterality_from_image(image)  # mini-MIAS names no side; the tissue tells it
    for sid, row, f in wanted:
        patient = patient_of(row["number"])
        common = dict(density=row["bg"] or None, pixel_spacing_mm=PIXEL_SPACING_MM)
        if f.kind == "normal":
            yield normal_from_image(source=NAME, source_id=sid, patient_id=patient, image=image, path=str(path), **common)
            continue
        cx, cy = row["x"], (H - 1) - row["y"]  # bottom-left origin -> image rows
        mask = disk_mask((H, W), (cx, cy), row["radius"])
        shape, margin = f.shape, f.margin
        calc_labels: dict[str, Any] = {}
        if f.kind not in LESION_KINDS:  # calcification, when asked for: no morphology in mini-MIAS
            shape = margin = Label(row["cls"], None, "non_mass")
            calc_labels = {"morphology": Label(row["cls"], None, "missing"),
                           "distribution": Label(row["cls"], None, "missing")}
        yield lesion_from_image(
            source=NAME, source_id=sid, patient_id=patient, image=image, mask=mask,
            shape=shape, margin=margin, pathology=map_pathology(row["severity"] or None), path=str(path),
            context=context, laterality=side, extra={"mask_kind": "disk", "x": row["x"], "y": row["y"], "radius": row["radius"]},
            lesion_type=lesion_type_of(f.kind), **calc_labels, **common,
        )
