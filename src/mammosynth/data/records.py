"""Typed records that readers stream and the store consumes.

Arrays are numpy. Intensities are float32 in [0, 1] with 1 = dense/bright (MONOCHROME2
convention, after any MONOCHROME1 inversion); masks are bool. Coordinates are (x, y) in
pixels of the record's own array unless stated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from mammosynth.data.birads import NOT_CALCIFICATION, Label

Laterality = Literal["L", "R"]
View = Literal["CC", "MLO", "other"]
Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: A record's ``split_hint``: one split, or ``"trainval"`` for a dataset's official training
#: set (CBIS-DDSM ``*_train_set``, VinDr ``training``): the patient goes to train or val,
#: never to test, so the official test set stays the test set and val is carved out of train.
SplitHint = Literal["train", "val", "test", "trainval"]
SPLIT_HINTS: tuple[str, ...] = (*SPLITS, "trainval")
#: Context padding on each side of a lesion crop, as a fraction of the lesion's larger side:
#: the lesion then spans about 1 / (1 + 2 * 0.3) = 62% of the patch, leaving room for the
#: seed-001 margin ring (mask enlarged by 296/256) and surrounding tissue.
DEFAULT_CONTEXT = 0.3


@dataclass
class LesionRecord:
    """One lesion: a context-padded crop around it, its exact mask and its labels.

    ``patch`` and ``mask`` are (H, W) at the source's pixel spacing (the store resizes).
    ``bbox`` is the lesion's (x, y, w, h) in the *full image* (pixels), when known.
    ``lesion_size`` is the lesion's (h, w) in full-image pixels, used by ``insert`` to fit
    the size distribution. ``warnings`` are things the reader had to work around (an
    unreadable PixelSpacing, an invalid window); the ingest lists them in the skip report.

    ``lesion_type`` is one of :data:`birads.LESION_TYPES`; a calcification cluster has
    ``morphology`` and ``distribution`` labels (shape and margin ``non_mass``), a mass has
    shape and margin (morphology and distribution ``non_calcification``). ``points`` are the
    centres (x, y) of a cluster's individual calcifications in patch pixels, (K, 2) float,
    when the source knows them (the phantom does; CBIS-DDSM does not), else None.
    """

    source: str
    source_id: str
    patient_id: str
    patch: np.ndarray
    mask: np.ndarray
    shape: Label
    margin: Label
    pathology: Label
    laterality: Laterality | None = None
    view: View | None = None
    bbox: tuple[int, int, int, int] | None = None
    lesion_size: tuple[int, int] | None = None
    pixel_spacing_mm: float | None = None
    density: str | None = None
    split_hint: SplitHint | None = None
    extra: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    lesion_type: str = "mass"
    morphology: Label = NOT_CALCIFICATION
    distribution: Label = NOT_CALCIFICATION
    points: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: The full image the patch was cut from and the lesion's mask on it (H, W), when the
    #: reader had them: references to the reader's arrays, not copies. The store does not keep
    #: them; the full-film downstream benchmark (``evaluate/benchmark.py``) reads films back
    #: through the reader with them.
    full_image: np.ndarray | None = field(default=None, repr=False, compare=False)
    full_mask: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass
class Marker:
    """A radio-opaque marker on a mammogram (not a lesion): ``kind`` "laterality" (the side
    and view in lead letters, e.g. "L CC") or "nipple" (a metal bead on the nipple), ``text``
    what it says, ``mask`` (H, W) bool in the record image's pixels. ``category`` is always
    "marker": stores keep markers in a table of their own, apart from the lesions."""

    kind: str
    text: str
    mask: np.ndarray
    category: str = "marker"


@dataclass
class MammogramRecord:
    """A normal (lesion-free) mammogram with its breast mask, at full or reduced size."""

    source: str
    source_id: str
    patient_id: str
    image: np.ndarray
    breast_mask: np.ndarray
    laterality: Laterality | None = None
    view: View | None = None
    density: str | None = None
    pixel_spacing_mm: float | None = None
    split_hint: SplitHint | None = None
    extra: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: Radio-opaque markers drawn in ``image`` (phantom ``markers=True``); none by default.
    markers: list[Marker] = field(default_factory=list)


@dataclass(frozen=True)
class SkipRecord:
    """A record a reader could not use, with the file and the reason (for the skip report)."""

    source: str
    source_id: str
    path: str
    reason: str


@dataclass(frozen=True)
class WarningRecord:
    """Something the ingest kept but the user should check (a metadata file without its
    ``mass shape`` column, a kept image whose PixelSpacing was unreadable), with the file."""

    source: str
    source_id: str
    path: str
    reason: str
