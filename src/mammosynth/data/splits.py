"""Patient-level train/val/test splits, stratified by label.

A store's splits must keep every patient's records together (no leakage between splits)
and still give each split its share of every label, or a small dataset ends up with a test
split that lacks a whole class (mini-MIAS, 58 masses, 80/10/10 by a plain shuffle of
patients: 6 test lesions, no circumscribed one).

Method: iterative stratification (Sechidis, Tsoumakas & Vlahavas, "On the stratification of
multi-label data", ECML PKDD 2011, the algorithm behind scikit-multilearn's
``IterativeStratification``) with *patients* as the examples and the number of their
lesions carrying each label as the label counts:

1. Every label ``l`` (``margin:spiculated``, ``shape:oval``, ``pathology:benign``, and
   ``margin:none`` etc. for unlabelled lesions) wants ``fraction[j] x count(l)`` lesions in
   split ``j``; every split wants ``fraction[j] x`` all lesions.
2. Patients with a fixed split (a hint such as CBIS-DDSM's official test set) are placed
   first and use up their splits' wants.
3. Repeatedly take the label held by the fewest still-unplaced patients (ties: margin before
   shape before pathology) and place each of those patients (most lesions of that label
   first) into the allowed split, among those with room for at least half of the patient's
   lesions if there are any (so patients with many lesions do not pile up in a small split),
   that
   a. has no lesion of that label yet, while the label has at least as many patients as
      there are splits with a non-zero fraction (so every class reaches every split when
      the counts allow it),
   b. then wants that label most,
   c. then wants the patient's margin, shape and pathology labels most, in that order
      (the priority the brief of issue #11 sets: margin, then shape, then pathology),
   d. then wants the most lesions overall, then by a seeded random draw.
4. Patients without any label (normal-only patients, split as their own pool by the store)
   are placed by 3d, with the pseudo-label ``normal`` so every split gets some.

A patient's allowed splits are all three, one (a fixed hint), or train and val (the hint
``trainval``: an official training set from which a val split is carved; its test set
stays the test set). The result is deterministic for a given seed and input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mammosynth.data.records import SPLITS
from mammosynth.errors import ConfigError

#: Label families in priority order; a label is ``"<family>:<value>"``. Masses carry margin,
#: shape and pathology labels; calcifications morphology, distribution, pathology and
#: ``type:calcification`` (so a mixed store spreads them over the splits too). A family a
#: patient lacks adds the same zero to every split's score, so mass-only stores split
#: exactly as before the calcification families existed.
FAMILIES: tuple[str, ...] = ("margin", "shape", "morphology", "distribution", "pathology", "type")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
METHOD = "iterative stratification of patients by label counts (Sechidis et al. 2011); margin > shape > pathology"


@dataclass
class Patient:
    """What the splitter knows of one patient: lesion counts per label, the number of its
    records (``size``), and the split indices it may go to (all three unless hinted)."""

    labels: dict[str, int] = field(default_factory=dict)
    size: int = 0
    allowed: tuple[int, ...] = (0, 1, 2)


def parse_fractions(value: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.6,0.2,0.2"`` (or a 3-sequence) -> (train, val, test) fractions summing to 1.

    Each must be a number in [0, 1], train > 0, and they must sum to 1 within 0.001 (then
    they are renormalised exactly). Anything else raises :class:`ConfigError` saying so.
    """
    text = value if isinstance(value, str) else ",".join(str(v) for v in value)
    parts = [p.strip() for p in str(text).replace(";", ",").replace("/", ",").split(",") if p.strip()]
    how = "--split-fractions must be three numbers train,val,test that sum to 1, e.g. 0.8,0.1,0.1"
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{how}; got {text!r}") from None
    if len(numbers) != 3 or not all(np.isfinite(numbers)):
        raise ConfigError(f"{how}; got {text!r}")
    if any(v < 0 or v > 1 for v in numbers):
        raise ConfigError(f"{how}, each between 0 and 1; got {text!r}")
    if numbers[0] <= 0:
        raise ConfigError(f"{how}, with a non-zero train fraction; got {text!r}")
    total = sum(numbers)
    if abs(total - 1.0) > 1e-3:
        raise ConfigError(f"{how}; got {text!r}, which sums to {total:g}")
    return (numbers[0] / total, numbers[1] / total, numbers[2] / total)


def stratified_splits(patients: Mapping[str, Patient], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                      seed: int = 0) -> dict[str, int]:
    """Patient id -> split index (into :data:`records.SPLITS`) by the method of the module
    docstring. ``patients`` with one allowed split keep it; the rest are stratified."""
    fr = np.asarray(parse_fractions(fractions), np.float64)
    rng = np.random.default_rng(seed)
    n_splits = len(SPLITS)
    open_splits = int((fr > 0).sum())
    ids = sorted(patients)
    rank = {p: int(r) for p, r in zip(ids, rng.permutation(len(ids)))}  # seeded order among equals
    labels = sorted({lab for p in ids for lab in patients[p].labels})
    holders = {lab: sum(1 for p in ids if patients[p].labels.get(lab, 0) > 0) for lab in labels}
    fixed = [p for p in ids if len(patients[p].allowed) == 1]
    fixed_size, fixed_lab = np.zeros(n_splits), {lab: np.zeros(n_splits) for lab in labels}
    for p in fixed:
        fixed_size[patients[p].allowed[0]] += patients[p].size
        for lab, n in patients[p].labels.items():
            fixed_lab[lab][patients[p].allowed[0]] += n
    # what each split should end with; the fixed patients are placed first and use it up
    total = {lab: sum(patients[p].labels.get(lab, 0) for p in ids) for lab in labels}
    reach_lab = {lab: np.zeros(n_splits, bool) for lab in labels}  # splits a free holder of the label may enter
    reach_size = np.zeros(n_splits, bool)
    for p in ids:
        if len(patients[p].allowed) > 1:
            reach_size[list(patients[p].allowed)] = True
            for lab in patients[p].labels:
                reach_lab[lab][list(patients[p].allowed)] = True
    want = {lab: _targets(fr, fixed_lab[lab], total[lab], reach_lab[lab]) for lab in labels}  # still wanted
    want_size = _targets(fr, fixed_size, sum(patients[p].size for p in ids), reach_size)
    have = {lab: np.zeros(n_splits) for lab in labels}
    mapping: dict[str, int] = {}

    def place(p: str, j: int) -> None:
        mapping[p] = j
        for lab, n in patients[p].labels.items():
            want[lab][j] -= n
            have[lab][j] += n
        want_size[j] -= patients[p].size

    def family_want(p: str, family: str, j: int) -> float:
        return float(sum(want[lab][j] for lab in patients[p].labels if lab.startswith(family + ":")))

    def choose(p: str, lab: str | None) -> int:
        allowed = [j for j in patients[p].allowed if fr[j] > 0] or list(patients[p].allowed)
        # a split is not overfilled by more than half a patient while another one has room
        allowed = [j for j in allowed if want_size[j] >= patients[p].size / 2] or allowed
        draw = rng.random(n_splits)

        def key(j: int) -> tuple:
            if lab is None:
                return (want_size[j], draw[j])
            fill_empty = holders[lab] >= open_splits and have[lab][j] == 0
            return (fill_empty, want[lab][j], *(family_want(p, f, j) for f in FAMILIES), want_size[j], draw[j])

        return max(allowed, key=key)

    for p in fixed:
        place(p, patients[p].allowed[0])
    remaining = [p for p in ids if p not in mapping]
    while remaining:
        left = {lab: sum(1 for p in remaining if patients[p].labels.get(lab, 0) > 0) for lab in labels}
        left = {lab: n for lab, n in left.items() if n > 0}
        if not left:
            for p in sorted(remaining, key=lambda q: (-patients[q].size, rank[q])):
                place(p, choose(p, None))
            break
        lab = min(left, key=lambda x: (left[x], _priority(x), x))
        group = [p for p in remaining if patients[p].labels.get(lab, 0) > 0]
        for p in sorted(group, key=lambda q: (-patients[q].labels[lab], rank[q])):
            place(p, choose(p, lab))
        placed = set(group)
        remaining = [p for p in remaining if p not in placed]
    return mapping


def _targets(fractions: np.ndarray, fixed: np.ndarray, total: float, reachable: np.ndarray) -> np.ndarray:
    """Count each split should end with (of all lesions, or of one label's): ``fractions x
    total``, except that a split which fixed (hinted) patients already fill beyond its share,
    or which no free patient may enter, keeps just its fixed count, and the rest is shared
    among the other splits in proportion to their fractions (water-filling). So CBIS-DDSM's
    official test set (22% of the masses) leaves train and val 0.8 : 0.1 of the official
    training set, instead of starving val."""
    closed = ~np.asarray(reachable, bool)
    while True:
        open_ = ~closed
        rest = total - float(fixed[closed].sum())
        weight = float(fractions[open_].sum())
        target = np.where(closed, fixed, rest * fractions / weight if weight > 0 else fixed)
        newly = open_ & (fixed > target + 1e-9)
        if not newly.any():
            return target.astype(np.float64)
        closed |= newly


def _priority(label: str) -> int:
    family = label.split(":", 1)[0]
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def label_coverage_warnings(counts: Mapping[str, Mapping[str, Mapping[str, int]]]) -> list[str]:
    """Warnings for labels a split lacks while another split has them.

    ``counts[split][family][value]`` = lesions; returns one line per (split, label), e.g.
    ``"split 'test' has no lesion with margin 'circumscribed' (train 9, val 2)"``, and one
    per split without any lesion while others have some.
    """
    out: list[str] = []
    sizes = {s: sum(counts[s].get(FAMILIES[0], {}).values()) for s in counts}
    for split in counts:
        if sizes[split] == 0 and any(sizes.values()):
            out.append(f"split {split!r} has no lesions")
            continue
        for family in FAMILIES:
            for value in sorted({v for s in counts for v in counts[s].get(family, {})}):
                if value == "(none)" or counts[split].get(family, {}).get(value, 0) > 0:
                    continue
                if family == "type" and value == "non_mass":  # kept with the masses, never stratified
                    continue
                others = {s: counts[s].get(family, {}).get(value, 0) for s in counts if s != split}
                if any(others.values()):
                    where = ", ".join(f"{s} {n}" for s, n in others.items())
                    out.append(f"split {split!r} has no lesion with {family} {value!r} ({where})")
    return out
