"""VinDr-Mammo: ``finding_annotations.csv`` plus DICOMs at ``images/<study_id>/<image_id>.dicom``.

CSV columns: study_id, series_id, image_id, laterality, view_position, height, width,
breast_birads, breast_density, finding_categories (a Python-list string such as
``"['Mass', 'Suspicious Calcification']"``, parsed with :func:`ast.literal_eval`),
finding_birads, xmin, ymin, xmax, ymax, split. One row per finding; an image without
findings has one row with ``['No Finding']`` and empty box.

VinDr gives boxes, not outlines: the lesion mask is the ellipse inscribed in the box, and
the record says so in ``extra["mask_kind"] = "ellipse_from_box"``. It gives no BI-RADS
shape or margin, so masses have missing (None) labels and no pathology; the finding's
BI-RADS assessment is kept in ``extra``. Categories map through
:func:`mammosynth.data.birads.map_vindr_categories` (asymmetries, distortion and lymph
nodes are non-mass lesions; calcifications and skin/nipple findings are skipped with the
reason). ``No Finding`` images are normals. The patient is the study (VinDr publishes no
patient id); the split comes from the ``split`` column (training -> ``trainval``: train or
val, never test; test -> test). A study or image id that would lead outside ``--root``
(``../``) is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from mammosynth.data.birads import LESION_KINDS, Label, map_vindr_categories
from mammosynth.data.imaging import ellipse_in_box, read_dicom
from mammosynth.data.readers import (
    Record,
    Unit,
    leaves_root,
    lesion_from_image,
    normal_from_image,
    read_csv_rows,
    read_each,
    row_problem,
    side_letter,
    view_name,
)
from mammosynth.data.records import DEFAULT_CONTEXT, SkipRecord
from mammosynth.errors import DataError

NAME = "vindr"
#: The CSV's split column -> split hint; the official training set may give val patients.
_SPLITS = {"training": "trainval", "train": "trainval", "test": "test", "testing": "test", "val": "val", "validation": "val"}


def _csv_path(root: Path, csv_paths: list[Path]) -> Path:
    if csv_paths:
        return csv_paths[0]
    for cand in (root / "finding_annotations.csv", *root.rglob("finding_annotations.csv")):
        if cand.is_file():
            return cand
    raise DataError(f"{root}: no finding_annotations.csv found; pass it with --csv")


def _image_path(root: Path, study: str, image: str) -> Path | None:
    for base in (root / "images" / study, root / study, root / "images"):
        for suffix in (".dicom", ".dcm"):
            p = base / f"{image}{suffix}"
            if p.is_file():
                return p
    return None


def _box(row: dict[str, str]) -> tuple[float, float, float, float] | None:
    try:
        box = tuple(float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (KeyError, ValueError):
        return None
    if any(v != v for v in box) or box[2] <= box[0] or box[3] <= box[1]:  # NaN or degenerate
        return None
    return box  # type: ignore[return-value]


def _density(text: str) -> str | None:
    t = (text or "").strip().upper().replace("DENSITY", "").strip()
    return t or None


def iter_label_rows(paths: Iterable[str | os.PathLike]) -> Iterator[dict]:
    """One entry per finding row; VinDr has neither shape/margin descriptors nor pathology."""
    for path in paths:
        for row in read_csv_rows(path):
            if row_problem(row):  # a line that could not be read: counted, never guessed
                yield {"kind": "unreadable"}
                continue
            f = map_vindr_categories(row.get("finding categories", ""))
            yield {"kind": f.kind, "shape": f.shape, "margin": f.margin}


def estimate_total(root: str | os.PathLike, csv_paths: Iterable[str | os.PathLike]) -> int | None:
    try:
        return sum(1 for _ in read_csv_rows(_csv_path(Path(root), [Path(p) for p in csv_paths])))
    except DataError:
        return None


def iter_records(
    root: str | os.PathLike,
    csv_paths: Iterable[str | os.PathLike] = (),
    include_normals: bool = True,
    include_calcifications: bool = False,
    context: float = DEFAULT_CONTEXT,
    **_: Any,
) -> Iterator[Record]:
    """Stream lesions (one per mass-type finding row), normals (No Finding images) and skips."""
    root = Path(root)
    csv_path = _csv_path(root, [Path(p) for p in csv_paths])
    # Rows are grouped per image so that each DICOM is decoded once (metadata only in memory).
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    units: list[Unit] = []
    for row in read_csv_rows(csv_path):
        problem = row_problem(row)
        if problem:
            sid = row.get("image id") or "?"
            skip = SkipRecord(NAME, sid, str(csv_path), f"{csv_path}: {problem}")
            units.append((sid, str(csv_path), lambda skip=skip: skip))
            continue
        groups.setdefault((row.get("study id", ""), row.get("image id", "")), []).append(row)
    for (study, image_id), rows in groups.items():
        units.append((image_id, f"images/{study}/{image_id}.dicom", (
            lambda study=study, image_id=image_id, rows=rows:
            _image_records(root, study, image_id, rows, include_normals, include_calcifications, context))))
    return read_each(NAME, units)


def _image_records(root: Path, study: str, image_id: str, rows: list[dict[str, str]], include_normals: bool,
                   include_calcifications: bool, context: float) -> Iterator[Record]:
    if leaves_root(f"images/{study}/{image_id}") or "/" in study.replace("\\", "/") or "/" in image_id.replace("\\", "/"):
        yield SkipRecord(NAME, image_id, f"images/{study}/{image_id}.dicom",
                         f"study id {study!r} / image id {image_id!r} would lead outside --root")
        return
    findings = [map_vindr_categories(r.get("finding categories", "")) for r in rows]
    is_normal = all(f.kind == "normal" for f in findings)
    wanted = []
    for k, (row, f) in enumerate(zip(rows, findings)):
        sid = f"{image_id}_{k}"
        raw = row.get("finding categories", "")
        if f.kind == "normal":
            continue
        if f.kind == "unknown":
            yield SkipRecord(NAME, sid, image_id, f"unknown finding category {raw!r}")
        elif f.kind == "calcification" and not include_calcifications:
            yield SkipRecord(NAME, sid, image_id, "calcification (not a mass)")
        elif f.kind == "other":
            yield SkipRecord(NAME, sid, image_id, f"{raw} is not a mass finding")
        elif _box(row) is None:
            yield SkipRecord(NAME, sid, image_id, f"no usable bounding box for {raw}")
        else:
            wanted.append((sid, row, f))
    if is_normal and not include_normals:
        yield SkipRecord(NAME, image_id, image_id, "normal image (normals not requested)")
        return
    if not wanted and not is_normal:
        return  # every finding of this image was skipped above
    path = _image_path(root, study, image_id)
    if path is None:
        for sid in [w[0] for w in wanted] or [image_id]:
            yield SkipRecord(NAME, sid, f"images/{study}/{image_id}.dicom", "DICOM file not found under --root")
        return
    try:
        image, meta = read_dicom(path)
    except DataError as err:
        for sid in [w[0] for w in wanted] or [image_id]:
            yield SkipRecord(NAME, sid, str(path), str(err))
        return
    first = rows[0]
    split = _SPLITS.get(first.get("split", "").strip().lower())
    common = dict(view=view_name(first.get("view position")) or meta.get("view"), density=_density(first.get("breast density", "")),
                  pixel_spacing_mm=meta.get("pixel_spacing_mm"), split_hint=split, warnings=meta.get("warnings", []))
    lat = side_letter(first.get("laterality")) or meta.get("laterality")
    if not wanted:
        yield normal_from_image(source=NAME, source_id=image_id, patient_id=study, image=image, path=str(path),
                                laterality=lat, extra={"breast_birads": first.get("breast birads", "")}, **common)
        return
    for sid, row, f in wanted:
        mask = ellipse_in_box(image.shape, _box(row))  # type: ignore[arg-type]
        shape, margin = f.shape, f.margin
        if f.kind not in LESION_KINDS:
            shape = margin = Label(row.get("finding categories", ""), None, "non_mass")
        yield lesion_from_image(
            source=NAME, source_id=sid, patient_id=study, image=image, mask=mask,
            shape=shape, margin=margin, pathology=Label(None, None, "missing"), path=str(path), context=context,
            laterality=lat,
            extra={"mask_kind": "ellipse_from_box", "box_xyxy": list(_box(row) or ()),
                   "finding_categories": row.get("finding categories", ""),
                   "finding_birads": row.get("finding birads", ""), "breast_birads": row.get("breast birads", "")},
            **common,
        )
