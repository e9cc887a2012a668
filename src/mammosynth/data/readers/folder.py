"""The folder format: the documented layout for users' own data (see docs/data.md).

::

    root/
      images/<stem>.(png|tif|tiff|dcm|dicom|pgm)   full mammograms or lesion crops
      masks/<stem>.(png|tif|tiff|dcm|dicom|pgm)    lesion masks, same stem, same size (non-zero = lesion)
      labels.csv

``labels.csv`` columns: ``file`` (name in images/, the suffix may be left out),
``patient_id``, ``shape``, ``margin``, ``pathology`` and, optionally, ``laterality`` (L/R),
``view`` (CC/MLO), ``kind`` (lesion | normal; default lesion), ``mask`` (name in masks/,
for several lesions on one image), ``split`` (train/val/test), ``density``,
``pixel_spacing_mm`` (mm per image pixel; PNG/TIFF/PGM carry none, a DICOM's own spacing
is used when the column is empty). File names must stay inside ``images/`` and
``masks/``: an absolute path or one that climbs out with ``..`` is skipped.
Labels use the BI-RADS words (``oval``, ``Ill-Defined``; case- and dash-insensitive; empty
or NA = unknown, ``non_mass`` allowed); an unrecognised word skips the row with its reason.

A lesion row whose mask leaves room for the context window is cropped like every other
source (square, context-padded around the mask). A lesion *crop* (an image too small for
that window) is accepted as it is: the whole image is the patch, mirrored to a square.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from mammosynth.data.birads import MARGINS, SHAPES, map_pathology, map_term
from mammosynth.data.imaging import IMAGE_SUFFIXES, mask_bbox, pad_to_square, read_image, read_mask, roi_window
from mammosynth.data.readers import (
    Record,
    Unit,
    count_csv_rows,
    leaves_root,
    lesion_from_image,
    normal_from_image,
    read_csv_rows,
    read_each,
    row_problem,
    side_letter,
    unknown_label_reason,
    view_name,
)
from mammosynth.data.records import DEFAULT_CONTEXT, SPLITS, LesionRecord, SkipRecord
from mammosynth.errors import DataError

NAME = "folder"
COLUMNS: tuple[str, ...] = ("file", "patient_id", "shape", "margin", "pathology", "laterality", "view", "kind")


def _labels_path(root: Path, csv_paths: list[Path]) -> Path:
    if csv_paths:
        return csv_paths[0]
    p = root / "labels.csv"
    if not p.is_file():
        raise DataError(f"{root}: no labels.csv found; pass it with --csv (columns: {', '.join(COLUMNS)})")
    return p


def _find(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it exists, else ``folder/<stem>.<any image suffix>``."""
    if not name:
        return None
    p = folder / name
    if p.is_file():
        return p
    stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name
    for suffix in IMAGE_SUFFIXES:
        for cand in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if cand.is_file():
                return cand
    return None


def _label_dict(row: dict[str, str]) -> dict:
    return {"shape": map_term(row.get("shape"), SHAPES), "margin": map_term(row.get("margin"), MARGINS),
            "pathology": map_pathology(row.get("pathology"))}


def iter_label_rows(paths: Iterable[str | os.PathLike]) -> Iterator[dict]:
    for path in paths:
        for row in read_csv_rows(path):
            if row_problem(row):  # a line that could not be read: counted, never guessed
                yield {"kind": "unreadable"}
                continue
            kind = (row.get("kind") or "lesion").strip().lower()
            if kind == "normal":
                yield {"kind": "normal"}
                continue
            labels = _label_dict(row)
            yield {"kind": "non_mass" if labels["shape"].status == "non_mass" else "mass", **labels}


def estimate_total(root: str | os.PathLike, csv_paths: Iterable[str | os.PathLike]) -> int | None:
    try:
        return count_csv_rows([_labels_path(Path(root), [Path(p) for p in csv_paths])])
    except DataError:
        return None


def iter_records(
    root: str | os.PathLike,
    csv_paths: Iterable[str | os.PathLike] = (),
    include_normals: bool = True,
    context: float = DEFAULT_CONTEXT,
    **_: Any,
) -> Iterator[Record]:
    """Stream one record per labels.csv row (each read under the reader guard)."""
    root = Path(root)
    labels = _labels_path(root, [Path(p) for p in csv_paths])
    return read_each(NAME, _units(root, labels, include_normals, context))


def _units(root: Path, labels: Path, include_normals: bool, context: float) -> Iterator[Unit]:
    seen: dict[str, int] = {}
    for row_no, row in enumerate(read_csv_rows(labels), start=2):
        name = row.get("file", "")
        stem = Path(name).stem if name else f"row{row_no}"
        seen[stem] = seen.get(stem, 0) + 1
        sid = stem if seen[stem] == 1 else f"{stem}#{seen[stem]}"
        where = f"images/{name}" if name else f"{labels.name} row {row_no}"
        yield sid, where, (lambda row=row, row_no=row_no, sid=sid, where=where:
                           _record(root, labels, row, row_no, sid, where, include_normals, context))


def _record(root: Path, labels: Path, row: dict[str, str], row_no: int, sid: str, where: str, include_normals: bool,
            context: float) -> Record:
    name = row.get("file", "")
    kind = (row.get("kind") or "lesion").strip().lower()
    problem = row_problem(row)
    if problem:
        return SkipRecord(NAME, sid, where, f"{labels}: {problem}")
    if not name:
        return SkipRecord(NAME, sid, where, f"labels.csv row {row_no} has no file name")
    for column in ("file", "mask"):
        if row.get(column) and leaves_root(row[column]):
            return SkipRecord(NAME, sid, where, f"the {column} path {row[column]!r} leaves --root "
                                                "(names in labels.csv are relative to images/ and masks/)")
    if kind not in ("lesion", "normal"):
        return SkipRecord(NAME, sid, where, f"unknown kind {kind!r} (expected lesion or normal)")
    if kind == "normal" and not include_normals:
        return SkipRecord(NAME, sid, where, "normal image (normals not requested)")
    split = (row.get("split") or "").strip().lower() or None
    if split is not None and split not in SPLITS:
        return SkipRecord(NAME, sid, where, f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    image_path = _find(root / "images", name)
    if image_path is None:
        return SkipRecord(NAME, sid, where, "image file not found in images/")
    patient = row.get("patient id") or Path(name).stem
    common: dict[str, Any] = dict(view=view_name(row.get("view")), density=row.get("density") or None, split_hint=split)
    lat = side_letter(row.get("laterality"))
    if kind == "normal":
        try:
            image, meta = read_image(image_path, with_meta=True)
        except DataError as err:
            return SkipRecord(NAME, sid, str(image_path), str(err))
        common.update(_spacing(row, meta, labels, row_no))
        return normal_from_image(source=NAME, source_id=sid, patient_id=patient, image=image, path=str(image_path),
                                 laterality=lat, **common)
    labels = _label_dict(row)
    reason = unknown_label_reason(labels)
    if reason:
        return SkipRecord(NAME, sid, str(image_path), f"{reason}; use the BI-RADS words ({', '.join(SHAPES)} / {', '.join(MARGINS)})")
    stem = Path(name).stem
    mask_path = _find(root / "masks", row.get("mask") or stem)
    if mask_path is None:
        return SkipRecord(NAME, sid, str(image_path), f"no mask for this lesion in masks/ (expected masks/{stem}.png or .tif/.dcm)")
    try:
        image, meta = read_image(image_path, with_meta=True)
        mask = read_mask(mask_path)
    except DataError as err:
        return SkipRecord(NAME, sid, str(image_path), str(err))
    common.update(_spacing(row, meta, labels, row_no))
    extra = {"mask_path": str(mask_path), "mask_kind": "mask"}
    bbox = mask_bbox(mask) if mask.shape == image.shape else None
    if bbox is not None:
        _, _, side = roi_window(bbox, image.shape, context)
        if side > min(image.shape):  # a lesion crop: the whole image is the patch
            patch, patch_mask = pad_to_square(image, mask)
            extra.update(path=str(image_path), crop="whole_image")
            return LesionRecord(source=NAME, source_id=sid, patient_id=patient, patch=patch, mask=patch_mask,
                                bbox=bbox, lesion_size=(bbox[3], bbox[2]), laterality=lat, extra=extra,
                                **labels, **common)
    return lesion_from_image(source=NAME, source_id=sid, patient_id=patient, image=image, mask=mask,
                             path=str(image_path), context=context, laterality=lat, extra=extra, **labels, **common)


def _spacing(row: dict[str, str], meta: dict[str, Any], labels: Path, row_no: int) -> dict[str, Any]:
    """``pixel_spacing_mm`` and ``warnings`` for a record: the CSV's ``pixel_spacing_mm``
    column when filled (a raster has no spacing of its own), else the image's (DICOM); an
    unreadable CSV value leaves the spacing unknown and says so."""
    warnings = list(meta.get("warnings", []))
    spacing = meta.get("pixel_spacing_mm")
    text = (row.get("pixel spacing mm") or "").strip()
    if text:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if value > 0 and value < float("inf"):
            spacing = value
        else:
            warnings.append(f"{labels} row {row_no}: pixel_spacing_mm {text!r} is not a positive number; "
                            f"{'the image spacing is used' if spacing else 'pixel spacing left unknown'}")
    return {"pixel_spacing_mm": spacing, "warnings": warnings}
