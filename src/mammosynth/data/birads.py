"""The BI-RADS mass vocabulary and the explicit mapping from each source's labels to it.

Every mapped label keeps the raw value beside it (:class:`Label`), so nothing is silently
lost. The policy, documented in ``docs/labels.md``:

* an exact term (``OVAL``, ``SPICULATED``) maps to itself; ``status="exact"``;
* a combined CBIS-DDSM value (``LOBULATED-IRREGULAR``, ``CIRCUMSCRIBED-ILL_DEFINED``) maps to
  its *most suspicious* mass component, the BI-RADS convention for reporting the worst
  feature (shape order round < oval < lobulated < irregular; margin order circumscribed <
  obscured < microlobulated < ill_defined < spiculated); ``status="combined"``. Non-mass
  parts of a combined value (``IRREGULAR-ARCHITECTURAL_DISTORTION``) are ignored for the
  mass term and remain visible in ``raw``;
* a non-mass value alone (``ARCHITECTURAL_DISTORTION``, ``LYMPH_NODE``, ...) maps to
  ``None`` with ``status="non_mass"``;
* ``NA``, NaN, empty -> ``None`` with ``status="missing"``;
* anything else -> ``None`` with ``status="unknown"`` (reported by ``data labels``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

SHAPES: tuple[str, ...] = ("round", "oval", "lobulated", "irregular")
MARGINS: tuple[str, ...] = ("circumscribed", "obscured", "microlobulated", "ill_defined", "spiculated")
PATHOLOGIES: tuple[str, ...] = ("benign", "malignant")

LabelStatus = Literal["exact", "combined", "non_mass", "missing", "unknown"]

#: CBIS-DDSM shape/margin values that are not mass descriptors.
CBIS_NON_MASS: frozenset[str] = frozenset(
    {
        "ARCHITECTURAL_DISTORTION",
        "LYMPH_NODE",
        "ASYMMETRIC_BREAST_TISSUE",
        "FOCAL_ASYMMETRIC_DENSITY",
    }
)
_MISSING = frozenset({"", "NA", "N/A", "NAN", "NONE", "NULL"})


@dataclass(frozen=True)
class Label:
    """A label as the source wrote it (``raw``) and its BI-RADS term (``value``, or None)."""

    raw: str | None
    value: str | None
    status: LabelStatus

    @property
    def known(self) -> bool:
        return self.value is not None


def _is_missing(raw: object) -> bool:
    if raw is None:
        return True
    if isinstance(raw, float) and math.isnan(raw):
        return True
    return str(raw).strip().upper() in _MISSING


def _map_cbis(raw: object, vocab: tuple[str, ...]) -> Label:
    if _is_missing(raw):
        return Label(None if raw is None else str(raw), None, "missing")
    text = str(raw).strip()
    parts = [p for p in text.upper().split("-") if p]
    # Multi-word tokens keep their underscore (ILL_DEFINED), so splitting on '-' is exact.
    mass_parts = [p.lower() for p in parts if p.lower() in vocab]
    other = [p for p in parts if p.lower() not in vocab]
    unknown = [p for p in other if p not in CBIS_NON_MASS]
    if unknown:
        return Label(text, None, "unknown")
    if not mass_parts:
        return Label(text, None, "non_mass")
    worst = max(mass_parts, key=vocab.index)
    status: LabelStatus = "exact" if len(parts) == 1 else "combined"
    return Label(text, worst, status)


def map_cbis_shape(raw: object) -> Label:
    """Map a CBIS-DDSM ``mass shape`` value (see module docstring for the policy)."""
    return _map_cbis(raw, SHAPES)


def map_cbis_margin(raw: object) -> Label:
    """Map a CBIS-DDSM ``mass margins`` value (see module docstring for the policy)."""
    return _map_cbis(raw, MARGINS)


def map_pathology(raw: object) -> Label:
    """CBIS-DDSM ``BENIGN``, ``BENIGN_WITHOUT_CALLBACK``, ``MALIGNANT``; mini-MIAS ``B``/``M``."""
    if _is_missing(raw):
        return Label(None if raw is None else str(raw), None, "missing")
    text = str(raw).strip()
    up = text.upper()
    if up in {"MALIGNANT", "M"}:
        return Label(text, "malignant", "exact")
    if up in {"BENIGN", "B"}:
        return Label(text, "benign", "exact")
    if up == "BENIGN_WITHOUT_CALLBACK":
        return Label(text, "benign", "combined")
    return Label(text, None, "unknown")


def index_of(value: str | None, vocab: tuple[str, ...]) -> int:
    """Vocabulary index of a mapped value; -1 for None (missing labels are masked, not guessed)."""
    return -1 if value is None else vocab.index(value)


def parse_term(text: str, vocab: tuple[str, ...], what: str) -> str:
    """Normalise a user-typed term (``ill-defined``, ``Ill_Defined``) or raise a clear error."""
    from mammosynth.errors import ConfigError

    norm = text.strip().lower().replace("-", "_").replace(" ", "_")
    if norm not in vocab:
        raise ConfigError(f"unknown {what} {text!r}; choose one of: {', '.join(vocab)}")
    return norm
