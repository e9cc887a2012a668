"""Small helpers shared by the CLI modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import typer
from rich.console import Console

#: Human-facing output goes to stderr so that ``--json`` keeps stdout to one JSON object.
console = Console(stderr=True)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def write_samples(samples: Iterable[Any], out: Path, method: str, run: str, total: int | None, progress: bool = True,
                  dicom: bool = False, overwrite: bool = False,
                  extras: Callable[[Path, list[np.ndarray]], None] | None = None) -> list[np.ndarray]:
    """Write :class:`~mammosynth.synth.sample.Sample` objects as a synthetic set in ``out``
    (refused if ``out`` is not empty, unless ``overwrite``); returns the images.

    ``extras(work_dir, images)`` writes additional files (a strip, a GIF) into the set before it
    is renamed into place, so they appear with it or not at all.
    """
    from mammosynth.synth.writer import SyntheticSetWriter

    with SyntheticSetWriter(out, method=method, run=run, dicom=dicom, overwrite=overwrite) as writer:
        images = add_samples(writer, samples, total, progress)
        if extras is not None:
            extras(writer.work_dir, images)
    return images


def add_samples(writer: Any, samples: Iterable[Any], total: int | None, progress: bool = True) -> list[np.ndarray]:
    """Add Samples to an open :class:`~mammosynth.synth.writer.SyntheticSetWriter` with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mammosynth.synth.writer import Lesion

    images: list[np.ndarray] = []
    with Progress(TextColumn(f"[bold]{writer.method}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not progress) as bar:
        task = bar.add_task("generate", total=total)
        for s in samples:
            # no mask: an all-empty one writes no COCO annotation but keeps the labels in the manifest
            mask = np.zeros(np.shape(s.image), bool) if s.mask is None else np.asarray(s.mask, bool)
            calc = {k: getattr(s, k, None) for k in ("lesion_type", "morphology", "distribution")}
            lesions = [Lesion(mask=mask, shape=s.shape, margin=s.margin, pathology=s.pathology,
                              attributes={k: v for k, v in calc.items() if v is not None},
                              category="calcification" if calc["lesion_type"] == "calcification" else "mass")]
            writer.add(np.asarray(s.image, np.float32), lesions, seed=s.seed, source_ids=list(s.source_ids),
                       weights=list(s.weights), extra=dict(s.extra))
            images.append(np.asarray(s.image, np.float32))
            bar.advance(task)
    return images


def overwrite_option() -> Any:
    """The ``--overwrite`` option of every command that writes a synthetic set."""
    return typer.Option(False, "--overwrite", help="Replace OUT if it already holds a synthetic set (default: a non-empty "
                        "OUT is refused). The old set is replaced only once the new one is complete.")


def save_strip(images: list[np.ndarray], path: Path, max_images: int = 24) -> None:
    """Images side by side in one 8-bit PNG (an interpolation strip)."""
    from PIL import Image

    from mammosynth.io import atomic_path

    imgs = [np.clip(im, 0, 1) for im in images[:max_images]]
    if not imgs:
        return
    h = max(im.shape[0] for im in imgs)
    pad = 2
    strip = np.ones((h, sum(im.shape[1] for im in imgs) + pad * (len(imgs) - 1)), np.float32)
    x = 0
    for im in imgs:
        strip[: im.shape[0], x: x + im.shape[1]] = im
        x += im.shape[1] + pad
    with atomic_path(path, ".png") as tmp:
        Image.fromarray((strip * 255).astype(np.uint8)).save(tmp, format="PNG")


def save_gif(images: list[np.ndarray], path: Path, ms_per_frame: int = 120) -> None:
    from PIL import Image

    from mammosynth.io import atomic_path

    frames = [Image.fromarray((np.clip(im, 0, 1) * 255).astype(np.uint8)) for im in images]
    if not frames:
        return
    with atomic_path(path, ".gif") as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0)
