"""A contact sheet of the phantom: four full mammograms (L-CC A, L-MLO B, R-CC C, R-MLO D)
and one 64x64 lesion patch per BI-RADS shape x margin, labelled. Written by
``mammosynth data phantom --contact-sheet PNG``; the README's picture is made this way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mammosynth.data.birads import MARGINS, SHAPES
from mammosynth.data.store import resize_image
from mammosynth.io import atomic_path
from mammosynth.phantom import phantom_lesion_records, render_breast


def _u8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_contact_sheet(out: str | Path, seed: int = 0, patch_size: int = 64) -> Path:
    """Render the sheet to ``out`` (PNG, atomically) and return the path."""
    try:
        font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        font = small = ImageFont.load_default()
    pad, title_h, mw, mh, shown = 8, 22, 416, 512, 256
    width = max(4 * mw + 5 * pad, 5 * shown + 6 * pad)
    height = 34 + title_h + mh + 2 * pad + 26 + 4 * (shown + title_h + pad) + pad
    sheet = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 6), f"mammosynth phantom (seed {seed}): full mammograms (1024x832 at 0.2 mm/px, shown 1/2) and "
                        f"{patch_size}x{patch_size} lesion patches (shown enlarged)", fill=0, font=font)
    y0 = 34
    for k, (view, lat, density) in enumerate([("CC", "L", "A"), ("MLO", "L", "B"), ("CC", "R", "C"), ("MLO", "R", "D")]):
        b = render_breast(seed + k, view=view, laterality=lat, density=density)
        x = pad + k * (mw + pad)
        draw.text((x, y0), f"{lat}-{view}  density {density}", fill=0, font=small)
        sheet.paste(Image.fromarray(_u8(resize_image(b.image, (mh, mw)))), (x, y0 + title_h))
    records = {(r.shape.value, r.margin.value): r for r in phantom_lesion_records(len(SHAPES) * len(MARGINS), seed=seed)}
    y1 = y0 + title_h + mh + 2 * pad
    draw.text((pad, y1), "rows: " + ", ".join(SHAPES) + "    columns: " + ", ".join(MARGINS), fill=0, font=small)
    y1 += 26
    for i, shape in enumerate(SHAPES):
        for j, margin in enumerate(MARGINS):
            r = records.get((shape, margin))
            if r is None:
                continue
            x, y = pad + j * (shown + pad), y1 + i * (shown + title_h + pad)
            mm = r.extra.get("diameter_mm")
            label = f"{shape}/{margin}" + (f" {mm:.0f} mm" if mm else "") + (f" {r.pathology.value[0].upper()}" if r.pathology.value else "")
            draw.text((x, y), label, fill=0, font=small)
            patch = Image.fromarray(_u8(resize_image(r.patch, (patch_size, patch_size))))
            sheet.paste(patch.resize((shown, shown), Image.NEAREST), (x, y + title_h))
    with atomic_path(out, ".png") as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return Path(out)
