"""What a method's ``generate`` / ``interpolate`` yields; the CLI writes it with SyntheticSetWriter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Sample:
    """One synthetic image and its labels.

    ``image``: (H, W) float32 in [0, 1]. ``mask``: (H, W) bool lesion mask (None when the
    method has no mask; the writer then records no annotation). ``source_ids`` and
    ``weights``: the real lesions and convex weights a latent operation combined, so every
    sample is traceable. ``extra``: anything else worth a manifest column (JSON-able).
    ``lesion_type`` ("calcification" makes the COCO annotation a calcification), ``morphology``
    and ``distribution``: a calcification cluster's labels (None when not known).
    """

    image: np.ndarray
    mask: np.ndarray | None = None
    shape: str | None = None
    margin: str | None = None
    pathology: str | None = None
    seed: int | None = None
    source_ids: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    lesion_type: str | None = None
    morphology: str | None = None
    distribution: str | None = None
