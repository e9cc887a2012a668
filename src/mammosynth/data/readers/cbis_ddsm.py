"""CBIS-DDSM: the four TCIA case-description CSVs plus the DICOM full images and ROI masks.

Layout under ``root`` (as the TCIA download places it; a ``CBIS-DDSM/`` level is also
accepted)::

    Mass-Training_P_00001_LEFT_CC/<study uid>/<series uid>/000000.dcm      full mammogram
    Mass-Training_P_00001_LEFT_CC_1/<study uid>/<series uid>/000000.dcm    crop or ROI mask
    Mass-Training_P_00001_LEFT_CC_1/<study uid>/<series uid>/000001.dcm    ROI mask or crop

Quirks handled: quoted paths that end in a newline; ``breast_density`` vs ``breast
density``; ``NA`` margins; combined labels (see :mod:`mammosynth.data.birads`); the crop
and the ROI mask both named ``000000.dcm`` in different folders, or swapped. The mask is
told from the crop by content (only the values 0 and max, at the full image's size), not
by name. When the uid sub-folders on disk differ from the CSV (other download tools), the
files are found under the path's first folder; a path that leaves ``--root`` (``../``) is
skipped. The official split is kept as ``split_hint`` (``*_train_set`` -> ``trainval``:
train or val, never test; ``*_test_set`` -> test). Calcification rows are skipped
("calcification (not a mass)") unless ``lesions`` is ``calcification`` or ``all``; then they
are lesions of type calcification with their ROI mask and BI-RADS morphology and
distribution (and mass rows are skipped for ``calcification``); mass rows with a non-mass
shape (``ARCHITECTURAL_DISTORTION``) become lesions with shape None. A mass CSV without its
``mass shape``, ``mass margins`` or ``pathology`` column is read with those labels unknown
and a warning row says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from mammosynth.data.birads import (
    NOT_MASS,
    Label,
    map_cbis_distribution,
    map_cbis_margin,
    map_cbis_morphology,
    map_cbis_shape,
    map_pathology,
)
from mammosynth.data.imaging import is_binary_mask, read_dicom
from mammosynth.data.readers import (
    Record,
    Unit,
    count_csv_rows,
    lesion_type_of,
    unwanted_reason,
    wanted_kinds,
    leaves_root,
    lesion_from_image,
    missing_columns_warning,
    read_csv_rows,
    read_each,
    row_problem,
    side_letter,
    unknown_label_reason,
    view_name,
)
from mammosynth.data.records import DEFAULT_CONTEXT, SkipRecord
from mammosynth.errors import DataError

NAME = "cbis-ddsm"
_PATH_COLS = ("image file path", "cropped image file path", "roi mask file path")


def split_of(csv_path: str | os.PathLike) -> str | None:
    """Split hint from the CSV's file name: ``*_train_set`` -> ``trainval`` (the official
    training set: train or val, never test), ``*_test_set`` -> test."""
    name = Path(csv_path).name.lower()
    if "train" in name:
        return "trainval"
    if "test" in name:
        return "test"
    return None


def row_kind(row: dict[str, str]) -> str:
    """``mass`` or ``calcification`` from the row's abnormality type (or its columns)."""
    t = row.get("abnormality type", "").strip().lower()
    if t.startswith("calc") or ("calc type" in row and "mass shape" not in row):
        return "calcification"
    return "mass"


def clean_rel(path_text: str) -> str:
    """A CSV path cell as a relative POSIX path: quotes, trailing newline and backslashes removed."""
    return path_text.strip().strip('"').strip().replace("\\", "/").lstrip("/")


class _Finder:
    """Resolve CSV paths against ``root`` with fallbacks, caching folder listings."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bases = [root] + [root / d for d in ("CBIS-DDSM", "cbis-ddsm", "CBIS_DDSM") if (root / d).is_dir()]
        self._listing: dict[str, list[Path]] = {}

    def exact(self, rel: str) -> Path | None:
        for base in self.bases:
            p = base / rel
            if p.is_file():
                return p
        return None

    def in_first_folder(self, rel: str) -> list[Path]:
        """All DICOM files under the folder named by the path's first component."""
        first = rel.split("/", 1)[0]
        if first in self._listing:
            return self._listing[first]
        found: list[Path] = []
        for base in self.bases:
            d = base / first
            if d.is_dir():
                found = sorted(q for q in d.rglob("*") if q.is_file() and q.suffix.lower() in (".dcm", ".dicom"))
                break
        if len(self._listing) > 4096:  # bounded cache: memory stays flat on the full dataset
            self._listing.clear()
        self._listing[first] = found
        return found

    def full_image(self, rel: str) -> Path | None:
        p = self.exact(rel)
        if p is not None:
            return p
        cands = self.in_first_folder(rel)
        if not cands:
            return None
        return max(cands, key=lambda q: q.stat().st_size)  # one file expected; else the largest

    def roi_candidates(self, rels: Iterable[str]) -> list[Path]:
        """Crop/mask candidates: the exact CSV paths first, then every DICOM in their folders."""
        out: list[Path] = []
        rels = list(rels)
        for rel in rels:
            p = self.exact(rel)
            if p is not None and p not in out:
                out.append(p)
        for rel in rels:
            exact = self.exact(rel)
            for q in (exact.parent.glob("*") if exact is not None else []):
                if q.is_file() and q.suffix.lower() in (".dcm", ".dicom") and q not in out:
                    out.append(q)
            for q in self.in_first_folder(rel):
                if q not in out:
                    out.append(q)
        return out


def _find_mask(cands: list[Path], full_shape: tuple[int, int]) -> tuple[Path | None, Any, str]:
    """Pick the ROI mask among candidate files by content: binary (0 and max only) and the
    full image's size. Returns (path, mask bool array or None, reason when none was found)."""
    if not cands:
        return None, None, "ROI mask file not found under --root"
    reasons: list[str] = []
    mismatch: tuple[int, ...] | None = None
    for p in cands:
        try:
            img, _ = read_dicom(p, apply_voi=False)
        except DataError as err:
            reasons.append(str(err))
            continue
        if not is_binary_mask(img):
            reasons.append(f"{p.name}: not a binary mask (a crop)")
        elif img.shape != tuple(full_shape):
            mismatch = img.shape
            reasons.append(f"{p.name}: binary but {img.shape}")
        else:
            return p, img > 0, ""
    if mismatch is not None:
        return None, None, f"ROI mask size {tuple(mismatch)} differs from image size {tuple(full_shape)}"
    return None, None, "no ROI mask among the files: " + "; ".join(reasons)


def _labels(row: dict[str, str], kind: str) -> dict[str, Label]:
    if kind == "calcification":
        return {"shape": NOT_MASS, "margin": NOT_MASS, "pathology": map_pathology(row.get("pathology")),
                "morphology": map_cbis_morphology(row.get("calc type")),
                "distribution": map_cbis_distribution(row.get("calc distribution"))}
    return {"shape": map_cbis_shape(row.get("mass shape")), "margin": map_cbis_margin(row.get("mass margins")),
            "pathology": map_pathology(row.get("pathology"))}


def iter_label_rows(paths: Iterable[str | os.PathLike]) -> Iterator[dict]:
    """Labels per CSV row: mass rows give shape/margin/pathology; calcification rows give
    morphology/distribution/pathology."""
    for path in paths:
        for row in read_csv_rows(path):
            if row_problem(row):  # a line that could not be read: counted, never guessed
                yield {"kind": "unreadable"}
                continue
            kind = row_kind(row)
            if kind == "calcification":
                labels = _labels(row, kind)
                yield {"kind": kind, **{k: labels[k] for k in ("morphology", "distribution", "pathology")}}
                continue
            labels = _labels(row, kind)
            if labels["shape"].status == "non_mass":
                kind = "non_mass"
            yield {"kind": kind, **labels}


def estimate_total(root: str | os.PathLike, csv_paths: Iterable[str | os.PathLike]) -> int | None:
    return count_csv_rows(list(csv_paths))


def iter_records(
    root: str | os.PathLike,
    csv_paths: Iterable[str | os.PathLike] = (),
    include_normals: bool = True,
    include_calcifications: bool = False,
    context: float = DEFAULT_CONTEXT,
    lesions: str = "mass",
    **_: Any,
) -> Iterator[Record]:
    """Stream LesionRecords (or SkipRecords) for every row of the description CSVs.

    ``csv_paths`` default to the ``*case_description*.csv`` files found in ``root``.
    CBIS-DDSM has no normal mammograms, so ``include_normals`` has no effect.
    """
    root = Path(root)
    paths = [Path(p) for p in csv_paths] or sorted(root.glob("*case_description*.csv"))
    if not paths:
        raise DataError(f"{root}: no CBIS-DDSM description CSV given (--csv) or found in the folder")
    return read_each(NAME, _units(root, paths, wanted_kinds(lesions, include_calcifications), context))


#: Columns a mass description CSV needs for its labels, and what their absence means.
_MASS_LABEL_COLUMNS = ("mass shape", "mass margins", "pathology")


def _units(root: Path, paths: list[Path], kinds: frozenset[str], context: float) -> Iterator[Unit]:
    finder = _Finder(root)
    for csv_path in paths:
        split = split_of(csv_path)
        header_checked = False
        for row in read_csv_rows(csv_path):
            if not header_checked and not row_problem(row):
                header_checked = True
                warn = missing_columns_warning(NAME, csv_path, row, _MASS_LABEL_COLUMNS,
                                               "those labels are unknown for every mass of this file")
                if warn is not None and row_kind(row) == "mass":
                    yield warn.source_id, warn.path, (lambda w=warn: w)
            image_rel, crop_rel, roi_rel = (clean_rel(row.get(c, "")) for c in _PATH_COLS)
            source_id = (roi_rel or crop_rel).split("/", 1)[0] or f"{row.get('patient id', '')}_{row.get('abnormality id', '')}"
            yield source_id, image_rel or str(csv_path), (
                lambda row=row, csv_path=csv_path, split=split, source_id=source_id:
                _record(row, csv_path, split, source_id, finder, kinds, context))


def _record(row: dict[str, str], csv_path: Path, split: str | None, source_id: str, finder: _Finder,
            kinds: frozenset[str], context: float) -> Record:
    kind = row_kind(row)
    image_rel, crop_rel, roi_rel = (clean_rel(row.get(c, "")) for c in _PATH_COLS)
    problem = row_problem(row)
    if problem:
        return SkipRecord(NAME, source_id, str(csv_path), f"{csv_path}: {problem}")
    labels = _labels(row, kind)
    if kind == "mass" and labels["shape"].status == "non_mass":
        kind = "non_mass"
    if kind not in kinds:
        return SkipRecord(NAME, source_id, image_rel, unwanted_reason(kind))
    for rel in (image_rel, crop_rel, roi_rel):
        if rel and leaves_root(rel):
            return SkipRecord(NAME, source_id, rel, f"{csv_path.name}: the path {rel!r} leaves --root")
    reason = unknown_label_reason(labels)
    if reason:
        return SkipRecord(NAME, source_id, image_rel, reason)
    if not image_rel:
        return SkipRecord(NAME, source_id, str(csv_path), "row has no image file path")
    full_path = finder.full_image(image_rel)
    if full_path is None:
        return SkipRecord(NAME, source_id, image_rel, "full mammogram file not found under --root")
    try:
        image, meta = read_dicom(full_path)
    except DataError as err:
        return SkipRecord(NAME, source_id, str(full_path), str(err))
    cands = [c for c in finder.roi_candidates([r for r in (roi_rel, crop_rel) if r]) if c != full_path]
    mask_path, mask, why = _find_mask(cands, image.shape)
    if mask is None:
        return SkipRecord(NAME, source_id, roi_rel or crop_rel, why)
    density = row.get("breast density", "") or None
    extra = {
        "path": str(full_path), "mask_path": str(mask_path), "mask_kind": "roi",
        "csv": csv_path.name, "abnormality_id": row.get("abnormality id", ""),
        "assessment": row.get("assessment", ""), "subtlety": row.get("subtlety", ""),
    }
    return lesion_from_image(
        source=NAME, source_id=source_id, patient_id=row.get("patient id", "") or source_id,
        image=image, mask=mask, path=str(full_path), context=context,
        laterality=side_letter(row.get("left or right breast")), view=view_name(row.get("image view")),
        density=density, split_hint=split, pixel_spacing_mm=meta.get("pixel_spacing_mm"),
        warnings=meta.get("warnings", []), extra=extra, lesion_type=lesion_type_of(kind), **labels,
    )
