"""INbreast: DICOM images plus OsiriX XML plist ROI files.

Layout under ``root`` (folders may be nested anywhere below it)::

    AllDICOMs/20586908_6c613a14b80a8591_MG_R_CC_ANON.dcm   <file id>_<patient>_MG_<side>_<view>_ANON
    AllXML/20586908.xml                                    ROIs of that image (absent: no ROIs)
    INbreast.csv  (optional, ``;``-separated: File Name, ACR, Bi-Rads)   via --csv

Each XML is an Apple plist: ``Images`` -> ``ROIs`` -> dicts with ``Name`` and ``Point_px``
(strings ``"(x, y)"`` in image pixels), read with :mod:`plistlib`; polygons are rasterised
with ``skimage.draw.polygon``. ROI names map through
:func:`mammosynth.data.birads.map_inbreast_name`: Mass -> mass; Spiculated Region -> mass
with margin spiculated; Distortion / Asymmetry -> non-mass lesion (labels None);
Calcification / Cluster -> skipped "calcification (not a mass)" unless ``lesions`` is
``calcification`` or ``all``: then each calcification polygon is a calcification lesion
(INbreast gives no BI-RADS morphology or distribution: missing), and the single-point
calcification ROIs inside it are its ``points`` (a point outside every kept polygon is
skipped, as a point is no outline); with ``lesions="calcification"`` the mass ROIs are
skipped. An unknown name is skipped with the name. An image with no ROI of a requested type
is a normal (``include_normals``) when it has no mass-type ROI either; its other ROIs, if
any, are named in ``extra["other_findings"]``. An XML file that is not laid out that way (root, Images or an
ROI not a dict/list, ``IndexInImage`` not a number, a malformed point) skips its whole image
with the reason: an image whose ROIs cannot be read is never taken for a normal.
"""

from __future__ import annotations

import os
import plistlib
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from mammosynth.data.birads import LESION_KINDS, Label, map_inbreast_name
from mammosynth.data.imaging import polygon_mask, read_dicom
from mammosynth.data.readers import (
    Record,
    Unit,
    lesion_from_image,
    lesion_type_of,
    normal_from_image,
    read_csv_rows,
    read_each,
    unwanted_reason,
    view_name,
    wanted_kinds,
)
from mammosynth.data.records import DEFAULT_CONTEXT, SkipRecord
from mammosynth.errors import DataError

NAME = "inbreast"
_POINT = re.compile(r"\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)")


def parse_point(text: str) -> tuple[float, float]:
    """``"(1853.69, 2115.06)"`` or ``"(x, y, z)"`` -> (x, y) floats; DataError if malformed."""
    m = _POINT.search(str(text))
    if not m:
        raise DataError(f"malformed point {text!r}")
    return float(m.group(1)), float(m.group(2))


def read_rois(xml_path: str | os.PathLike) -> list[dict[str, Any]]:
    """ROIs of an OsiriX XML plist: list of {"name", "points" (N, 2) float (x, y), "index"}."""
    p = Path(xml_path)
    try:
        with open(p, "rb") as fh:
            plist = plistlib.load(fh)
    except Exception as err:
        raise DataError(f"{p}: not a readable OsiriX ROI plist ({type(err).__name__}: {err})") from err
    def expect(value: Any, kind: type, what: str) -> Any:
        if not isinstance(value, kind):
            raise DataError(f"{p}: {what} is a {type(value).__name__}, not a {'dict' if kind is dict else 'list'} "
                            "(not an OsiriX ROI file)")
        return value

    out: list[dict[str, Any]] = []
    expect(plist, dict, "the plist root")
    if "Images" not in plist:
        raise DataError(f"{p}: no 'Images' entry (not an OsiriX ROI file)")
    for k, image in enumerate(expect(plist["Images"], list, "Images")):
        expect(image, dict, f"Images[{k}]")
        for i, roi in enumerate(expect(image.get("ROIs", []) or [], list, f"Images[{k}].ROIs")):
            expect(roi, dict, f"ROI {i}")
            pts = expect(roi.get("Point_px", []) or [], list, f"ROI {i} Point_px")
            try:
                points = np.asarray([parse_point(t) for t in pts], dtype=np.float64).reshape(-1, 2)
            except DataError as err:
                raise DataError(f"{p}: ROI {i}: {err}") from err
            index = roi.get("IndexInImage", i)
            if isinstance(index, bool) or not isinstance(index, (int, float)) or index != int(index):
                raise DataError(f"{p}: ROI {i}: IndexInImage {index!r} is not a whole number")
            out.append({"name": str(roi.get("Name", "")), "points": points, "index": int(index)})
    return out


def parse_file_name(path: Path) -> dict[str, str | None]:
    """``<id>_<patient>_MG_<L|R>_<CC|ML>_ANON.dcm`` -> file id, patient, laterality, view."""
    parts = path.stem.split("_")
    info: dict[str, str | None] = {"file_id": parts[0], "patient_id": parts[1] if len(parts) > 1 else parts[0],
                                   "laterality": None, "view": None}
    for tok in parts[2:]:
        t = tok.upper()
        if t in ("L", "R"):
            info["laterality"] = t
        elif t in ("CC", "ML", "MLO"):
            info["view"] = view_name(t)
    return info


def _xml_index(root: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(root.rglob("*")) if p.suffix.lower() == ".xml" and p.is_file()}


def _csv_info(csv_paths: Iterable[str | os.PathLike]) -> dict[str, dict[str, str]]:
    """File id -> {"density", "birads"} from INbreast.csv (``;``-separated), if given."""
    info: dict[str, dict[str, str]] = {}
    for p in csv_paths:
        if Path(p).suffix.lower() != ".csv":
            continue
        for row in read_csv_rows(p):
            fid = row.get("file name", "").split(".")[0]
            if fid:
                info[fid] = {"density": row.get("acr", ""), "birads": row.get("bi rads", "") or row.get("bi-rads", "")}
    return info


def iter_label_rows(paths: Iterable[str | os.PathLike]) -> Iterator[dict]:
    """Labels per ROI from XML files (or folders of them); INbreast has no pathology column."""
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise DataError(f"{p}: no such INbreast XML file or folder")
        xmls = sorted(q for q in p.rglob("*.xml")) if p.is_dir() else ([p] if p.suffix.lower() == ".xml" else [])
        for xml in xmls:
            for roi in read_rois(xml):
                f = map_inbreast_name(roi["name"])
                yield {"kind": f.kind, "shape": f.shape, "margin": f.margin}


def estimate_total(root: str | os.PathLike, csv_paths: Iterable[str | os.PathLike]) -> int | None:
    return sum(1 for q in Path(root).rglob("*") if q.suffix.lower() == ".dcm")


def iter_records(
    root: str | os.PathLike,
    csv_paths: Iterable[str | os.PathLike] = (),
    include_normals: bool = True,
    include_calcifications: bool = False,
    context: float = DEFAULT_CONTEXT,
    lesions: str = "mass",
    **_: Any,
) -> Iterator[Record]:
    """Stream one LesionRecord per mass-type ROI, a MammogramRecord per image without one
    (when ``include_normals``), and SkipRecords for everything unusable."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    kinds = wanted_kinds(lesions, include_calcifications)
    xmls = _xml_index(root)
    extra_info = _csv_info(csv_paths)
    dicoms = sorted(q for q in root.rglob("*") if q.suffix.lower() == ".dcm" and q.is_file())
    if not dicoms:
        raise DataError(f"{root}: no INbreast .dcm files found")
    units: Iterator[Unit] = ((str(parse_file_name(dcm)["file_id"]), str(dcm), (
        lambda dcm=dcm: _image_records(dcm, xmls, extra_info, include_normals, kinds, context)))
        for dcm in dicoms)
    return read_each(NAME, units)


def _image_records(dcm: Path, xmls: dict[str, Path], extra_info: dict, include_normals: bool,
                   kinds: frozenset[str], context: float) -> Iterator[Record]:
    info = parse_file_name(dcm)
    fid = str(info["file_id"])
    rois: list[dict[str, Any]] = []
    xml = xmls.get(fid)
    if xml is not None:
        try:
            rois = read_rois(xml)
        except DataError as err:
            yield SkipRecord(NAME, fid, str(xml), str(err))
            return
    lesions, others, calc_points = [], [], []
    for roi in rois:
        finding = map_inbreast_name(roi["name"])
        sid = f"{fid}_roi{roi['index']}"
        if finding.kind in kinds:
            if len(roi["points"]) >= 3:
                lesions.append((sid, roi, finding))
            elif finding.kind == "calcification" and len(roi["points"]) == 1:
                calc_points.append((sid, roi))  # one calcification: a point of the cluster around it
            else:
                yield SkipRecord(NAME, sid, str(xml), f"ROI {roi['name']!r} has {len(roi['points'])} point(s), not a polygon")
        elif finding.kind in ("mass", "non_mass", "calcification"):
            others.append(roi["name"])
            yield SkipRecord(NAME, sid, str(xml), unwanted_reason(finding.kind))
        elif finding.kind == "unknown":
            others.append(roi["name"])
            yield SkipRecord(NAME, sid, str(xml), f"unknown ROI name {roi['name']!r}")
        else:
            others.append(roi["name"])
            yield SkipRecord(NAME, sid, str(xml), f"ROI {roi['name']!r} is not a mass finding")
    had_mass_roi = any(map_inbreast_name(r["name"]).kind in LESION_KINDS for r in rois)
    stray = "is a single point outside every calcification cluster"
    if not lesions:
        for psid, roi in calc_points:
            yield SkipRecord(NAME, psid, str(xml), f"ROI {roi['name']!r} {stray}")
    if not lesions and (had_mass_roi or calc_points):
        return  # its lesion ROIs were skipped above; such an image is not a normal either
    if not lesions and not include_normals:
        yield SkipRecord(NAME, fid, str(dcm), "normal image (normals not requested)")
        return
    try:
        image, meta = read_dicom(dcm)
    except DataError as err:
        yield SkipRecord(NAME, fid, str(dcm), str(err))
        return
    density = (extra_info.get(fid, {}).get("density") or None)
    common = dict(view=info["view"] or meta.get("view"), density=density, pixel_spacing_mm=meta.get("pixel_spacing_mm"),
                  warnings=meta.get("warnings", []))
    birads = extra_info.get(fid, {}).get("birads", "")
    if not lesions:
        yield normal_from_image(source=NAME, source_id=fid, patient_id=str(info["patient_id"]), image=image,
                                path=str(dcm), laterality=info["laterality"] or meta.get("laterality"),
                                extra={"other_findings": others, "birads": birads}, **common)
        return
    masks = {sid: polygon_mask(image.shape, roi["points"]) for sid, roi, _ in lesions}
    inside: dict[str, list[tuple[float, float]]] = {sid: [] for sid, _, finding in lesions if finding.kind == "calcification"}
    for psid, roi in calc_points:
        col, row = (int(round(v)) for v in roi["points"][0])
        home = next((sid for sid in inside if 0 <= row < image.shape[0] and 0 <= col < image.shape[1]
                     and masks[sid][row, col]), None)
        if home is None:
            yield SkipRecord(NAME, psid, str(xml), f"ROI {roi['name']!r} {stray}")
        else:
            inside[home].append(tuple(roi["points"][0]))
    for sid, roi, finding in lesions:
        mask = masks[sid]
        shape, margin = finding.shape, finding.margin
        calc: dict[str, Any] = {}
        if finding.kind == "calcification":
            shape = margin = Label(roi["name"], None, "non_mass")
            calc = {"morphology": Label(None, None, "missing"), "distribution": Label(None, None, "missing"),
                    "points_xy": np.asarray(inside.get(sid, []), np.float64).reshape(-1, 2)}
        yield lesion_from_image(
            source=NAME, source_id=sid, patient_id=str(info["patient_id"]), image=image, mask=mask,
            shape=shape, margin=margin, pathology=Label(None, None, "missing"), path=str(dcm), context=context,
            laterality=info["laterality"] or meta.get("laterality"),
            extra={"roi_name": roi["name"], "xml": str(xml), "mask_kind": "polygon", "birads": birads},
            lesion_type=lesion_type_of(finding.kind), **calc, **common,
        )
