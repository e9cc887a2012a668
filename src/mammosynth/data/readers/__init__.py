"""Dataset readers: each streams typed records from one public dataset's on-disk layout.

Every reader module exposes

* ``NAME`` - the SOURCE name used on the command line;
* ``iter_records(root, csv_paths=(), include_normals=True, lesions="mass",
  context=DEFAULT_CONTEXT) -> Iterator[LesionRecord | MammogramRecord | SkipRecord | WarningRecord]``
  - a generator: one image is in memory at a time, and every unusable record becomes a
  :class:`SkipRecord` with the file and the reason instead of an exception. Readers do
  this structurally: they list *units* (one record, or one image with its findings) and
  :func:`read_each` runs each unit's read under a guard, so *any* exception raised while
  reading one unit, foreseen or not, becomes a skip row and the next unit is read;
* ``iter_label_rows(paths) -> Iterator[dict]`` - the labels from metadata files alone
  (``kind`` plus ``shape``/``margin``/``pathology`` :class:`Label` s), for ``data labels``;
* ``estimate_total(root, csv_paths) -> int | None`` - how many records to expect (for a
  progress bar), from metadata alone.

``lesions`` (``data ingest --lesions``) says which findings become lesions: ``mass`` (masses
and the non-mass findings kept with them, as before), ``calcification`` or ``all``; the rest
are skipped with the reason (:func:`wanted_kinds`, :func:`unwanted_reason`). The old
``include_calcifications=True`` means ``all``.

The helpers below turn a full image plus a lesion mask into a LesionRecord (square,
context-padded crop at native resolution) and a normal image into a MammogramRecord.
"""

from __future__ import annotations

import csv
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from mammosynth.data.birads import Label
from mammosynth.data.imaging import STORE_OPEN_FRAC, breast_mask, extract_roi, laterality_from_image, mask_bbox, one_line_error, roi_window
from mammosynth.data.records import DEFAULT_CONTEXT, LesionRecord, MammogramRecord, SkipRecord, WarningRecord
from mammosynth.errors import ConfigError, DataError

#: SOURCE name on the command line -> reader module.
READERS: dict[str, str] = {
    "cbis-ddsm": "mammosynth.data.readers.cbis_ddsm",
    "inbreast": "mammosynth.data.readers.inbreast",
    "mias": "mammosynth.data.readers.mias",
    "vindr": "mammosynth.data.readers.vindr",
    "folder": "mammosynth.data.readers.folder",
}
SOURCES: tuple[str, ...] = tuple(READERS)
_ALIASES = {"cbis": "cbis-ddsm", "cbis_ddsm": "cbis-ddsm", "cbisddsm": "cbis-ddsm", "mini-mias": "mias",
            "minimias": "mias", "vindr-mammo": "vindr", "vindr_mammo": "vindr"}

Record = LesionRecord | MammogramRecord | SkipRecord | WarningRecord
#: ``--lesions`` choices.
LESION_CHOICES: tuple[str, ...] = ("mass", "calcification", "all")
#: Readers that read calcifications (``--lesions calcification|all``).
CALCIFICATION_SOURCES: tuple[str, ...] = ("cbis-ddsm", "mias", "inbreast")
#: The label families :func:`label_report` counts (``data labels``).
LABEL_FIELDS: tuple[str, ...] = ("shape", "margin", "pathology", "morphology", "distribution")
#: One unit of reading: (source id, file, read) where ``read()`` returns a record or an
#: iterable of records (an image with several findings). See :func:`read_each`.
Unit = tuple[str, str, Callable[[], "Record | Iterable[Record]"]]
#: Key of a :func:`read_csv_rows` row that could not be read as it stands (a malformed line,
#: a NUL byte); its value is the reason. Readers turn such a row into a skip row.
ROW_ERROR = "__row_error__"


def wanted_kinds(lesions: str = "mass", include_calcifications: bool = False) -> frozenset[str]:
    """Finding kinds (:data:`birads.FindingKind`) that become lesions for ``--lesions``:
    ``mass`` -> mass and non_mass (as before calcifications existed), ``calcification``,
    ``all``; the deprecated ``include_calcifications=True`` widens ``mass`` to ``all``."""
    key = str(lesions).strip().lower()
    if key not in LESION_CHOICES:
        raise ConfigError(f"--lesions must be one of: {', '.join(LESION_CHOICES)}; got {lesions!r}")
    if key == "mass" and include_calcifications:
        key = "all"
    return frozenset({"mass": ("mass", "non_mass"), "calcification": ("calcification",),
                      "all": ("mass", "non_mass", "calcification")}[key])


def unwanted_reason(kind: str) -> str:
    """The skip reason for a lesion finding of ``kind`` that ``--lesions`` left out."""
    return "calcification (not a mass)" if kind == "calcification" else f"{kind.replace('_', '-')} (not a calcification)"


def lesion_type_of(kind: str) -> str:
    """The stored lesion type (:data:`birads.LESION_TYPES`) of a finding kind."""
    return "calcification" if kind == "calcification" else ("non_mass" if kind == "non_mass" else "mass")


def get_reader(source: str) -> ModuleType:
    """The reader module for a SOURCE name (case-insensitive); ConfigError if unknown."""
    key = str(source).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in READERS:
        raise ConfigError(f"unknown data source {source!r}; choose one of: {', '.join(SOURCES)}")
    return importlib.import_module(READERS[key])


def iter_records(source: str, root: str | os.PathLike, csv_paths: Iterable[str | os.PathLike] = (), **opts: Any) -> Iterator[Record]:
    """Stream the records of ``source`` under ``root`` (see the module docstring)."""
    return get_reader(source).iter_records(root, csv_paths=list(csv_paths or ()), **opts)


# --------------------------------------------------------------------------------------
# helpers shared by the readers
# --------------------------------------------------------------------------------------
_RECORD_TYPES = (LesionRecord, MammogramRecord, SkipRecord, WarningRecord)


def guarded(source: str, source_id: str, path: str, read: Callable[[], "Record | Iterable[Record]"]) -> Iterator[Record]:
    """Run one unit's ``read()`` and stream its records; whatever it raises becomes one
    :class:`SkipRecord` for ``source_id`` naming ``path`` and the reason (a DataError's own
    one-line message, or ``unexpected Type: message`` for anything nobody foresaw). Records
    the unit yielded before failing are kept. KeyboardInterrupt and the like pass through."""
    try:
        result = read()
        if isinstance(result, _RECORD_TYPES):
            yield result
            return
        for rec in result:
            yield rec
    except DataError as err:
        yield SkipRecord(source, source_id, path, str(err))
    except Exception as err:  # noqa: BLE001 - the point: one bad file never stops an ingest
        yield SkipRecord(source, source_id, path, f"{path}: unexpected {one_line_error(err)}")


def read_each(source: str, units: Iterable[Unit]) -> Iterator[Record]:
    """Stream the records of ``units`` (``(source_id, path, read)``), each read under
    :func:`guarded`: the structural guarantee that one bad file costs one skip row."""
    for source_id, path, read in units:
        yield from guarded(source, source_id, path, read)


def leaves_root(path_text: str) -> bool:
    """True when a path written in a metadata file would point outside ``--root``: an
    absolute path (``/x``, ``C:\\x``, ``\\\\server\\x``) or one whose ``..`` components climb
    above its start. Checked on the text, so a symlinked folder inside the root still works."""
    text = str(path_text).strip().replace("\\", "/")
    if text.startswith("/") or (len(text) >= 2 and text[1] == ":" and text[0].isalpha()):
        return True
    depth = 0
    for part in text.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def row_problem(row: dict[str, str]) -> str | None:
    """The reason a :func:`read_csv_rows` row cannot be used as it stands, or None."""
    return row.get(ROW_ERROR)


def missing_columns_warning(source: str, path: str | os.PathLike, row: dict[str, str], columns: Iterable[str],
                            meaning: str) -> WarningRecord | None:
    """A WarningRecord when a metadata file's header lacks some of ``columns`` (checked on
    its first data row); ``meaning`` says what follows, e.g. "every mass's shape is unknown"."""
    missing = [c for c in columns if c not in row]
    if not missing:
        return None
    names = ", ".join(f"'{c}'" for c in missing)
    return WarningRecord(source, Path(path).name, str(path),
                         f"{path}: no {names} column{'s' if len(missing) > 1 else ''}; {meaning}")


def read_csv_rows(path: str | os.PathLike, delimiter: str | None = None) -> Iterator[dict[str, str]]:
    """Stream the rows of a CSV as dicts keyed by a normalised header (lower case, ``_`` as
    space, stripped: ``breast_density`` and ``breast density`` both become ``breast density``).
    Values are stripped of surrounding whitespace, so TCIA's quoted paths that end in a
    newline come out clean. ``delimiter`` None sniffs ``,`` / ``;`` / tab from the header.
    A UTF-8 BOM is dropped; undecodable bytes become U+FFFD.

    A line the csv module cannot parse (a field over the size limit, a NUL byte on Python
    3.10) or a row holding a NUL byte (which no HDF5 string can store) is still yielded, with
    :data:`ROW_ERROR` set to ``"line N: reason"``; readers turn it into a skip row."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such metadata file")
    with open(p, newline="", encoding="utf-8-sig", errors="replace") as fh:
        if delimiter is None:
            head = fh.readline()
            fh.seek(0)
            counts = {d: head.count(d) for d in (",", ";", "\t")}
            delimiter = max(counts, key=counts.get) if any(counts.values()) else ","
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(f"{p}: cannot read the header line ({err})") from err
        keys = [h.strip().lower().replace("_", " ") for h in header]
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as err:  # the reader resumes at the next line
                yield {ROW_ERROR: f"line {reader.line_num}: {err}"}
                continue
            if not any(v.strip() for v in values):
                continue
            row = {k: (values[i].strip() if i < len(values) else "") for i, k in enumerate(keys)}
            nul = [k for k, v in row.items() if "\x00" in v]
            if nul:
                row[ROW_ERROR] = f"line {reader.line_num}: a NUL byte in column {', '.join(repr(k) for k in nul)}"
            yield row


def count_csv_rows(paths: Iterable[str | os.PathLike]) -> int | None:
    """Number of data rows in the CSVs (metadata only), or None if one cannot be read."""
    total = 0
    try:
        for p in paths:
            total += sum(1 for _ in read_csv_rows(p))
    except (DataError, OSError):
        return None
    return total


def unknown_label_reason(labels: dict[str, Label]) -> str | None:
    """A skip reason if any label has status ``unknown``, else None."""
    bad = [f"{name} {lab.raw!r}" for name, lab in labels.items() if lab is not None and lab.status == "unknown"]
    return f"unknown label: {', '.join(bad)}" if bad else None


def lesion_from_image(
    *,
    source: str,
    source_id: str,
    patient_id: str,
    image: np.ndarray,
    mask: np.ndarray,
    shape: Label,
    margin: Label,
    pathology: Label,
    path: str,
    context: float = DEFAULT_CONTEXT,
    points_xy: np.ndarray | None = None,
    **fields: Any,
) -> LesionRecord | SkipRecord:
    """LesionRecord from a full image (H, W) in [0, 1] and its lesion mask (H, W) bool.

    ``points_xy`` (K, 2): centres of individual calcifications in full-image pixels (x, y),
    kept as the record's ``points`` in patch pixels.

    The patch is the square crop with ``context`` padding (:func:`imaging.extract_roi`);
    ``bbox`` and ``lesion_size`` = (h, w) are in full-image pixels. A size mismatch or an
    empty mask gives a SkipRecord with that reason. ``fields`` go to the record
    (laterality, view, density, split_hint, pixel_spacing_mm, extra).
    """
    if mask.shape != image.shape:
        return SkipRecord(source, source_id, path, f"mask size {tuple(mask.shape)} differs from image size {tuple(image.shape)}")
    if mask_bbox(mask) is None:
        return SkipRecord(source, source_id, path, "the lesion mask is empty")
    patch, patch_mask, bbox = extract_roi(image, mask, context)
    if points_xy is not None and len(points_xy):
        x0, y0, _ = roi_window(bbox, image.shape, context)
        fields["points"] = np.asarray(points_xy, np.float32).reshape(-1, 2) - np.float32([x0, y0])
    extra = dict(fields.pop("extra", {}) or {})
    extra.setdefault("path", path)
    extra.setdefault("context", context)
    return LesionRecord(
        source=source, source_id=source_id, patient_id=patient_id, patch=patch, mask=patch_mask,
        shape=shape, margin=margin, pathology=pathology, bbox=bbox, lesion_size=(bbox[3], bbox[2]),
        extra=extra, full_image=image, full_mask=mask, **fields,
    )


def normal_from_image(
    *,
    source: str,
    source_id: str,
    patient_id: str,
    image: np.ndarray,
    path: str,
    laterality: str | None = None,
    **fields: Any,
) -> MammogramRecord | SkipRecord:
    """MammogramRecord from a lesion-free full image (H, W) in [0, 1].

    The breast mask comes from :func:`imaging.breast_mask`. ``laterality`` is what the store
    uses to left-orient the image, so the image decides it: when the metadata's side
    disagrees with where the tissue is, the image wins and the metadata's value is kept in
    ``extra["laterality_meta"]``.
    """
    bmask = breast_mask(image, open_frac=STORE_OPEN_FRAC)  # film labels and strips cut off
    if not bmask.any():
        return SkipRecord(source, source_id, path, "no breast found in the image")
    side = laterality_from_image(image)
    extra = dict(fields.pop("extra", {}) or {})
    extra.setdefault("path", path)
    if laterality is not None and laterality != side:
        extra["laterality_meta"] = laterality
    return MammogramRecord(
        source=source, source_id=source_id, patient_id=patient_id, image=image, breast_mask=bmask,
        laterality=side, extra=extra, **fields,
    )


def side_letter(text: str | None) -> str | None:
    """LEFT / L / left -> "L"; RIGHT / R -> "R"; anything else -> None."""
    t = (text or "").strip().upper()
    return t[0] if t[:1] in ("L", "R") else None


def view_name(text: str | None) -> str | None:
    """CC -> "CC"; MLO / ML -> "MLO"; other non-empty values -> "other"; empty -> None."""
    t = (text or "").strip().upper()
    if not t:
        return None
    if t == "CC":
        return "CC"
    if t in ("MLO", "ML"):
        return "MLO"
    return "other"


# --------------------------------------------------------------------------------------
# label report (metadata only)
# --------------------------------------------------------------------------------------
def label_report(source: str, csv_paths) -> dict:
    """Count the label vocabulary of a source from its metadata files alone (no images).

    ``source``: cbis-ddsm | inbreast | mias | vindr | folder; ``csv_paths``: the metadata
    files (CBIS-DDSM description CSVs; INbreast XML files, folders of them or INbreast.csv;
    mini-MIAS Info.txt; VinDr finding_annotations.csv; the folder format's labels.csv).

    Returns a JSON-ready dict: ``files``, ``rows``, ``kinds`` (rows per finding kind), and
    for each of ``shape``, ``margin``, ``pathology``, ``morphology`` and ``distribution``
    (the last two for calcification rows): ``raw`` (count per value exactly as
    written, "" for an empty cell), ``mapped`` (count per vocabulary term, "(none)" for
    unmapped), ``status`` (count per mapping status) and ``unmapped`` (raw values that map
    to no term, with their status); plus ``unknown``: raw values nobody recognises.
    """
    from collections import Counter

    reader = get_reader(source)
    paths = [str(p) for p in ([csv_paths] if isinstance(csv_paths, (str, bytes)) else list(csv_paths or []))]
    rows = 0
    kinds: Counter = Counter()
    fields = LABEL_FIELDS
    raw_c = {f: Counter() for f in fields}
    mapped_c = {f: Counter() for f in fields}
    status_c = {f: Counter() for f in fields}
    unmapped: dict[str, dict[str, str]] = {f: {} for f in fields}
    for row in reader.iter_label_rows(paths):
        rows += 1
        kinds[row["kind"]] += 1
        for f in fields:
            label: Label | None = row.get(f)
            if label is None:  # the source has no such column for this row (e.g. calcifications)
                continue
            key = "" if label.raw is None else label.raw
            raw_c[f][key] += 1
            mapped_c[f][label.value if label.value is not None else "(none)"] += 1
            status_c[f][label.status] += 1
            if label.value is None:
                unmapped[f][key] = label.status
    report: dict = {"source": reader.NAME, "files": paths, "rows": rows, "kinds": dict(kinds.most_common())}
    unknown: set[str] = set()
    for f in fields:
        report[f] = {
            "raw": dict(raw_c[f].most_common()),
            "mapped": dict(mapped_c[f].most_common()),
            "status": dict(status_c[f].most_common()),
            "unmapped": [{"raw": k, "status": s, "count": raw_c[f][k]} for k, s in sorted(unmapped[f].items())],
        }
        unknown.update(k for k, s in unmapped[f].items() if s == "unknown")
    report["unknown"] = sorted(unknown)
    return report
