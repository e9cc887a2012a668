"""The BI-RADS mass vocabulary and the explicit mapping from each source's labels to it.

Every mapped label keeps the raw value beside it (:class:`Label`), so nothing is silently
lost. The policy, documented in ``docs/data.md`` (label mapping table):

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

Calcifications (CBIS-DDSM ``calc type`` and ``calc distribution``) follow the same policy
with their own vocabularies, :data:`MORPHOLOGIES` and :data:`DISTRIBUTIONS`, each ordered
from typically benign to most suspicious, so a combined value
(``PLEOMORPHIC-FINE_LINEAR_BRANCHING``) maps to its most suspicious part. The source's
spelling variants map explicitly (:data:`CBIS_MORPHOLOGY_TERMS`,
:data:`CBIS_DISTRIBUTION_TERMS`): ``LUCENT_CENTER`` and ``LUCENT_CENTERED`` are one term,
``DIFFUSELY_SCATTERED`` is ``diffuse``, and ``GROUPED`` (BI-RADS 5th edition) is
``clustered`` (the 4th edition's and CBIS-DDSM's name). A mass has no morphology or
distribution (``status="non_calcification"``); a calcification has no shape or margin
(``status="non_mass"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

SHAPES: tuple[str, ...] = ("round", "oval", "lobulated", "irregular")
MARGINS: tuple[str, ...] = ("circumscribed", "obscured", "microlobulated", "ill_defined", "spiculated")
PATHOLOGIES: tuple[str, ...] = ("benign", "malignant")
#: BI-RADS calcification morphology, typically benign first, most suspicious last (the
#: order decides combined values): the benign types, then punctate, amorphous, (fine)
#: pleomorphic and fine linear (branching), the order of the BI-RADS atlas's suspicion.
MORPHOLOGIES: tuple[str, ...] = (
    "skin", "vascular", "coarse", "large_rodlike", "round_and_regular", "lucent_centered", "eggshell",
    "milk_of_calcium", "dystrophic", "punctate", "amorphous", "pleomorphic", "fine_linear_branching",
)
#: BI-RADS calcification distribution, least to most suspicious (BI-RADS 5th edition order).
DISTRIBUTIONS: tuple[str, ...] = ("diffuse", "regional", "clustered", "linear", "segmental")
#: What a stored lesion is: a mass, a non-mass finding kept as a lesion (architectural
#: distortion, asymmetry), or a calcification cluster.
LESION_TYPES: tuple[str, ...] = ("mass", "non_mass", "calcification")

#: CBIS-DDSM ``calc type`` tokens (one part of a combined value) -> morphology term.
CBIS_MORPHOLOGY_TERMS: dict[str, str] = {
    "SKIN": "skin", "VASCULAR": "vascular", "COARSE": "coarse", "LARGE_RODLIKE": "large_rodlike",
    "ROUND_AND_REGULAR": "round_and_regular", "LUCENT_CENTER": "lucent_centered",
    "LUCENT_CENTERED": "lucent_centered", "EGGSHELL": "eggshell", "MILK_OF_CALCIUM": "milk_of_calcium",
    "DYSTROPHIC": "dystrophic", "PUNCTATE": "punctate", "AMORPHOUS": "amorphous",
    "PLEOMORPHIC": "pleomorphic", "FINE_LINEAR_BRANCHING": "fine_linear_branching",
}
#: CBIS-DDSM ``calc distribution`` tokens -> distribution term (GROUPED: the 5th edition's name).
CBIS_DISTRIBUTION_TERMS: dict[str, str] = {
    "DIFFUSELY_SCATTERED": "diffuse", "DIFFUSE": "diffuse", "REGIONAL": "regional", "CLUSTERED": "clustered",
    "GROUPED": "clustered", "LINEAR": "linear", "SEGMENTAL": "segmental",
}

LabelStatus = Literal["exact", "combined", "non_mass", "non_calcification", "missing", "unknown"]

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


def _map_cbis(raw: object, vocab: tuple[str, ...], terms: dict[str, str] | None = None,
              non_terms: frozenset[str] = CBIS_NON_MASS) -> Label:
    """Map one CBIS-DDSM cell: each ``-``-separated token through ``terms`` (default: the
    token itself, lower-cased, when it is in ``vocab``); the most suspicious one wins."""
    if _is_missing(raw):
        return Label(None if raw is None else str(raw), None, "missing")
    text = str(raw).strip()
    parts = [p for p in text.upper().split("-") if p]
    # Multi-word tokens keep their underscore (ILL_DEFINED), so splitting on '-' is exact.
    term_of = {p: (terms.get(p) if terms is not None else (p.lower() if p.lower() in vocab else None)) for p in parts}
    mass_parts = [t for t in term_of.values() if t is not None]
    unknown = [p for p, t in term_of.items() if t is None and p not in non_terms]
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


def map_cbis_morphology(raw: object) -> Label:
    """Map a CBIS-DDSM ``calc type`` value (``PLEOMORPHIC``, ``ROUND_AND_REGULAR-LUCENT_CENTER``)."""
    return _map_cbis(raw, MORPHOLOGIES, CBIS_MORPHOLOGY_TERMS, frozenset())


def map_cbis_distribution(raw: object) -> Label:
    """Map a CBIS-DDSM ``calc distribution`` value (``CLUSTERED``, ``CLUSTERED-LINEAR``)."""
    return _map_cbis(raw, DISTRIBUTIONS, CBIS_DISTRIBUTION_TERMS, frozenset())


#: The morphology / distribution of a lesion that is not a calcification.
NOT_CALCIFICATION = Label(None, None, "non_calcification")
#: The shape / margin of a calcification.
NOT_MASS = Label(None, None, "non_mass")


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


# --------------------------------------------------------------------------------------
# Other sources: mini-MIAS, INbreast, VinDr-Mammo, the user's folder format
# --------------------------------------------------------------------------------------
FindingKind = Literal["mass", "non_mass", "calcification", "normal", "other", "unknown"]
#: Finding kinds a reader turns into LesionRecords (non-mass findings keep None labels,
#: masked in training, exactly like CBIS-DDSM's ARCHITECTURAL_DISTORTION rows).
LESION_KINDS: frozenset[str] = frozenset({"mass", "non_mass"})


@dataclass(frozen=True)
class Finding:
    """What a source's finding label means: its kind plus BI-RADS shape and margin labels."""

    kind: FindingKind
    shape: Label
    margin: Label


def _norm_key(raw: object) -> str:
    return " ".join(str(raw).replace("_", " ").replace("-", " ").split()).upper()


def _finding(kind: FindingKind, raw: str, shape: str | None = None, margin: str | None = None) -> Finding:
    """Build a Finding; a label the source does not describe is None with status ``missing``
    (mass kinds) or ``non_mass`` / ``unknown`` (other kinds), keeping ``raw`` beside it."""
    if kind == "mass":
        sh = Label(raw, shape, "exact") if shape else Label(None, None, "missing")
        mg = Label(raw, margin, "exact") if margin else Label(None, None, "missing")
        return Finding(kind, sh, mg)
    if kind == "unknown":
        return Finding(kind, Label(raw, None, "unknown"), Label(raw, None, "unknown"))
    if kind == "normal":
        return Finding(kind, Label(raw, None, "missing"), Label(raw, None, "missing"))
    return Finding(kind, Label(raw, None, "non_mass"), Label(raw, None, "non_mass"))


#: mini-MIAS ``CLASS`` column -> (kind, shape, margin). The classes describe margins only.
MIAS_CLASSES: dict[str, tuple[FindingKind, str | None, str | None]] = {
    "CIRC": ("mass", None, "circumscribed"),
    "SPIC": ("mass", None, "spiculated"),
    "MISC": ("mass", None, "ill_defined"),  # "other, ill-defined masses"
    "ARCH": ("non_mass", None, None),  # architectural distortion
    "ASYM": ("non_mass", None, None),  # asymmetry
    "CALC": ("calcification", None, None),
    "NORM": ("normal", None, None),
}


def map_mias_class(raw: object) -> Finding:
    """Map a mini-MIAS class (CIRC, SPIC, MISC, ARCH, ASYM, CALC, NORM) to a Finding."""
    text = "" if raw is None else str(raw).strip()
    entry = MIAS_CLASSES.get(text.upper())
    if entry is None:
        return _finding("unknown", text)
    return _finding(entry[0], text, entry[1], entry[2])


#: INbreast OsiriX ROI ``Name`` (normalised: upper case, single spaces) -> (kind, shape, margin).
#: INbreast annotates finding types, not BI-RADS descriptors; only a spiculated region
#: carries a margin. The misspellings occur in the released XML files.
INBREAST_NAMES: dict[str, tuple[FindingKind, str | None, str | None]] = {
    "MASS": ("mass", None, None),
    "SPICULATED REGION": ("mass", None, "spiculated"),
    "ESPICULATED REGION": ("mass", None, "spiculated"),
    "SPICULATION": ("mass", None, "spiculated"),
    "DISTORTION": ("non_mass", None, None),
    "ARCHITECTURAL DISTORTION": ("non_mass", None, None),
    "ASYMMETRY": ("non_mass", None, None),
    "ASSYMETRY": ("non_mass", None, None),
    "FOCAL ASYMMETRY": ("non_mass", None, None),
    "CALCIFICATION": ("calcification", None, None),
    "CALCIFICATIONS": ("calcification", None, None),
    "CLUSTER": ("calcification", None, None),
}


def map_inbreast_name(raw: object) -> Finding:
    """Map an INbreast ROI name (Mass, Calcification, Cluster, Spiculated Region,
    Distortion, Asymmetry) to a Finding; anything else (e.g. ``Point 1``) is unknown."""
    text = "" if raw is None else str(raw).strip()
    entry = INBREAST_NAMES.get(_norm_key(text))
    if entry is None:
        return _finding("unknown", text)
    return _finding(entry[0], text, entry[1], entry[2])


#: VinDr-Mammo ``finding_categories`` entries -> kind. VinDr gives boxes and categories,
#: never BI-RADS shape or margin, so masses have missing labels.
VINDR_CATEGORIES: dict[str, FindingKind] = {
    "MASS": "mass",
    "ARCHITECTURAL DISTORTION": "non_mass",
    "ASYMMETRY": "non_mass",
    "FOCAL ASYMMETRY": "non_mass",
    "GLOBAL ASYMMETRY": "non_mass",
    "SUSPICIOUS LYMPH NODE": "non_mass",
    "SUSPICIOUS CALCIFICATION": "calcification",
    "SKIN THICKENING": "other",
    "SKIN RETRACTION": "other",
    "NIPPLE RETRACTION": "other",
    "NO FINDING": "normal",
}
_KIND_PRIORITY: tuple[str, ...] = ("mass", "non_mass", "calcification", "other", "unknown", "normal")


def map_vindr_category(raw: object) -> Finding:
    """Map one VinDr-Mammo finding category (``Mass``, ``No Finding``, ...) to a Finding."""
    text = "" if raw is None else str(raw).strip()
    kind = VINDR_CATEGORIES.get(_norm_key(text))
    return _finding(kind or "unknown", text)


def parse_vindr_categories(raw: object) -> list[str]:
    """Parse VinDr's ``finding_categories`` cell, a Python-list string like ``"['Mass']"``."""
    import ast

    if isinstance(raw, (list, tuple)):
        return [str(v) for v in raw]
    text = "" if raw is None else str(raw).strip()
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return [text]  # a bare category name
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def map_vindr_categories(raw: object) -> Finding:
    """Map a whole ``finding_categories`` cell: the most lesion-like category decides the
    kind (mass > non_mass > calcification > other > unknown > normal); the raw cell is kept."""
    cats = parse_vindr_categories(raw)
    if not cats:
        return _finding("unknown", "")
    found = [map_vindr_category(c) for c in cats]
    best = min(found, key=lambda f: _KIND_PRIORITY.index(f.kind))
    return _finding(best.kind, str(raw).strip() if not isinstance(raw, (list, tuple)) else repr(list(raw)))


def map_term(raw: object, vocab: tuple[str, ...]) -> Label:
    """Map a user's label (folder format) written in the BI-RADS vocabulary, case- and
    dash-insensitive like :func:`parse_term`; ``non_mass`` is accepted; an unknown term
    gives status ``unknown`` instead of raising (the reader turns it into a SkipRecord)."""
    if _is_missing(raw):
        return Label(None if raw is None else str(raw), None, "missing")
    text = str(raw).strip()
    norm = text.lower().replace("-", "_").replace(" ", "_")
    if norm in vocab:
        return Label(text, norm, "exact")
    if norm in ("non_mass", "nonmass"):
        return Label(text, None, "non_mass")
    return Label(text, None, "unknown")
