"""Ingest a dataset into one store file: reader -> StoreWriter, plus a skip report.

``ingest("cbis-ddsm", root, csv_paths, "data.h5")`` streams the reader's records into
:class:`mammosynth.data.store.StoreWriter` (one image in memory at a time), shows a rich
progress bar on stderr, and writes ``data.skips.csv`` atomically beside the store: columns
source_id, path, reason, kind, one row per record the reader or the store could not use
(kind ``skipped``) and per thing it kept but flags (kind ``warning``: an unreadable
PixelSpacing left unknown, an invalid window ignored, a CSV without its ``mass shape``
column). The store itself is written under a temporary name and renamed only on success,
so an interrupted ingest never leaves a half-written file under the final name. If
nothing usable was read, no store is written and :class:`DataError` says why (the skip
report is still written).

One bad file costs one skip row, never the ingest: readers guard each record's read
(:func:`mammosynth.data.readers.read_each`), the writer guards each append, and should a
reader itself stop half-way (an unforeseen error outside any one record), the records
read so far are kept and a skip row says where and why it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from mammosynth.data.imaging import one_line_error
from mammosynth.data.readers import CALCIFICATION_SOURCES, get_reader, wanted_kinds
from mammosynth.data.records import DEFAULT_CONTEXT, SkipRecord, WarningRecord
from mammosynth.data.store import StoreWriter
from mammosynth.errors import ConfigError, DataError, MammosynthError
from mammosynth.io import write_text_atomic


@dataclass
class IngestSummary:
    """What an ingest produced. ``skip_reasons`` counts skips per reason (file names removed)."""

    source: str
    out: str
    skip_report: str
    n_lesions: int
    n_normals: int
    n_skipped: int
    seconds: float
    skip_reasons: dict[str, int] = field(default_factory=dict)
    n_warnings: int = 0
    warning_reasons: dict[str, int] = field(default_factory=dict)
    split_fractions: list[float] = field(default_factory=list)

    @property
    def n_kept(self) -> int:
        return self.n_lesions + self.n_normals

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_kept"] = self.n_kept
        return d


def skip_report_path(out: str | os.PathLike) -> Path:
    """``data.h5`` -> ``data.skips.csv`` (beside the store)."""
    out = Path(out)
    return out.with_name(out.stem + ".skips.csv")


def write_skip_report(path: str | os.PathLike, skips: Iterable[SkipRecord],
                      warnings: Iterable[WarningRecord] = ()) -> None:
    """CSV with columns source_id, path, reason, kind (``skipped`` | ``warning``); atomic."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["source_id", "path", "reason", "kind"])
    for kind, rows in (("skipped", skips), ("warning", warnings)):
        for r in rows:
            w.writerow([r.source_id, r.path, r.reason, kind])
    write_text_atomic(path, buf.getvalue())


def _reason_key(reason: str) -> str:
    """Group skip reasons for the summary: drop the leading file name, exception details and
    sizes, so that e.g. every truncated DICOM counts under one key."""
    import re

    text = reason.strip()
    head, sep, rest = text.partition(": ")
    if sep and ("/" in head or "\\" in head or "." in head):
        text = rest
    text = re.sub(r"^line \d+: ", "", text)  # one key for every bad row of a CSV
    text = re.sub(r"\s*\(\w*(Error|Exception|Warning)\b.*$", "", text)
    text = re.sub(r"\(\d+(, \d+)*\)", "(...)", text)
    return text.split("; use ", 1)[0][:100]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ingest(
    source: str,
    root: str | os.PathLike,
    csv_paths: Iterable[str | os.PathLike] = (),
    out: str | os.PathLike = "data.h5",
    patch_size: int = 64,
    normal_size: tuple[int, int] = (1024, 832),
    include_normals: bool = True,
    progress: bool = True,
    **opts: Any,
) -> IngestSummary:
    """Read ``source`` (cbis-ddsm | inbreast | mias | vindr | folder) under ``root`` into ``out``.

    ``patch_size``: lesion patch side in the store (pixels); ``normal_size``: (H, W) canvas
    for normal mammograms (pixels); ``opts`` go to the reader (``lesions``: mass |
    calcification | all, ``context``) and to the writer (``split_fractions``, ``split_seed``).
    Returns an :class:`IngestSummary`; raises :class:`DataError` when no record was usable.
    """
    reader = get_reader(source)
    lesions = str(opts.get("lesions", "mass"))
    wanted_kinds(lesions)  # ConfigError for an unknown --lesions value
    if lesions.strip().lower() != "mass" and reader.NAME not in CALCIFICATION_SOURCES:
        raise ConfigError(f"--lesions {lesions}: the {reader.NAME} reader reads masses only; calcifications come from "
                          f"{', '.join(CALCIFICATION_SOURCES)}")
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder (--root)")
    csv_list = [Path(p) for p in (csv_paths or ())]
    for p in csv_list:
        if not p.is_file():
            raise DataError(f"{p}: no such metadata file (--csv)")
    out = Path(out)
    writer_opts = {k: opts.pop(k) for k in ("split_fractions", "split_seed") if k in opts}
    context = float(opts.get("context", DEFAULT_CONTEXT))
    provenance = {
        "source": reader.NAME,
        "root": str(root.resolve()),
        "metadata": [{"file": str(p.resolve()), "sha256": _file_digest(p)} for p in csv_list],
        "reader_options": {"include_normals": include_normals, **{k: v for k, v in opts.items()}},
        "preprocessing": {
            "context": context, "patch_size": patch_size, "normal_size": list(normal_size),
            "intensity": "DICOM: modality LUT + VOI window, scaled to [0,1], MONOCHROME1 inverted; rasters: / full scale",
            "normals": "left-oriented (chest wall at x=0), downsampled to fit, zero-padded",
        },
    }
    total = reader.estimate_total(root, csv_list) if hasattr(reader, "estimate_total") else None
    t0 = time.perf_counter()
    records = reader.iter_records(root, csv_paths=csv_list, include_normals=include_normals, **opts)
    writer = StoreWriter(out, patch_size=patch_size, normal_size=normal_size, provenance=provenance, **writer_opts)
    try:
        stream = _until_reader_stops(records, reader.NAME, root, writer)
        if progress:
            _consume_with_progress(stream, writer, total, f"ingest {reader.NAME}")
        else:
            for rec in stream:
                writer.add(rec)
        skips, warnings = writer.skips, writer.warnings
        usable = writer.n_lesions + writer.n_normals
        report = skip_report_path(out)
        if usable == 0:
            writer.abort()
            write_skip_report(report, skips, warnings)
            top = Counter(_reason_key(s.reason) for s in skips).most_common(3)
            why = "; ".join(f"{n} x {r}" for r, n in top) or "the reader found no records"
            raise DataError(f"{root}: nothing usable was read from {reader.NAME} data ({why}); see {report}")
        writer.close()
        write_skip_report(report, skips, warnings)
    except BaseException:
        writer.abort()  # no half-written store under the final name
        raise
    return IngestSummary(
        source=reader.NAME, out=str(out), skip_report=str(report), n_lesions=writer.n_lesions,
        n_normals=writer.n_normals, n_skipped=len(skips), seconds=round(time.perf_counter() - t0, 3),
        skip_reasons=dict(Counter(_reason_key(s.reason) for s in skips).most_common()),
        n_warnings=len(warnings), warning_reasons=dict(Counter(_reason_key(w.reason) for w in warnings).most_common()),
        split_fractions=[round(f, 6) for f in writer.split_fractions],
    )


def _until_reader_stops(records: Iterable, source: str, root: Path, writer: StoreWriter) -> Iterator:
    """The reader's records; should the reader itself raise (outside the guard around each
    record, e.g. a metadata file that turns unreadable half-way), stop there, keep what was
    read and add a skip row saying where and why. A MammosynthError raised before any
    record (no such metadata file) still ends the ingest with its one-line message."""
    n = 0
    it = iter(records)
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - keep what was read
            if n == 0 and isinstance(err, MammosynthError):
                raise
            reason = str(err) if isinstance(err, MammosynthError) else one_line_error(err)
            writer.add_skip(SkipRecord(source, "(reader)", str(root),
                                       f"{root}: the {source} reader stopped after {n} records ({reason}); "
                                       "the records after that point were not read"))
            return
        n += 1
        yield rec


def _consume_with_progress(records, writer: StoreWriter, total: int | None, label: str) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("kept {task.fields[kept]} skipped {task.fields[skipped]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        disable=not console.is_terminal and os.environ.get("MAMMOSYNTH_PROGRESS") != "1",
    ) as bar:
        task = bar.add_task(label, total=total, kept=0, skipped=0)
        kept = skipped = 0
        for rec in records:
            if writer.add(rec):
                kept += 1
            elif isinstance(rec, WarningRecord):
                continue  # a note about a file, not a record
            else:
                skipped += 1
            bar.update(task, advance=1, kept=kept, skipped=skipped)
