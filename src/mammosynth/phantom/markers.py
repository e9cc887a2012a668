"""Radio-opaque markers on phantom mammograms: the laterality/view letters and a nipple bead.

Real mammograms carry a lead marker naming the side and view ("L CC", "R MLO") in a corner
outside the breast, and sometimes a metal bead taped on the nipple (or on a skin lesion). Lead
and steel stop nearly every quantum, so they show as the brightest, sharpest things in the
image. They are not lesions: each is labelled with the category ``marker`` (see
:class:`mammosynth.data.records.Marker`), written by the store in a table of its own, never in
``/lesions``.

``draw_markers(breast, rng)`` returns a copy of the breast image with the markers drawn and
their labels; it never touches the breast's own random streams, so a phantom drawn without
markers is unchanged (issue #15: markers are optional and off by default).
"""

from __future__ import annotations

import numpy as np

from mammosynth.data.records import Marker

#: 5 x 7 glyphs of the letters a laterality/view marker needs ("#" = lead).
GLYPHS: dict[str, tuple[str, ...]] = {
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    " ": (".....",) * 7,
}
#: Letter height of the laterality/view marker (mm): commercial lead letters are ~6-12 mm.
LETTER_HEIGHT_MM = (6.0, 9.0)
#: Clearance (mm) of the laterality marker from the breast and from the image edge.
MARKER_CLEARANCE_MM = 3.0
#: Nipple bead diameter (mm): metal nipple markers are ~1.5-4 mm balls.
NIPPLE_BEAD_MM = (1.5, 3.0)
#: Display level of lead/steel (1 = the brightest level; the processed image saturates).
MARKER_LEVEL = (0.93, 1.0)
_SUPER = 4  # sub-samples per pixel side of the bead's rim: an exact, pixel-sharp edge


def text_mask(text: str, height_px: float) -> np.ndarray:
    """Coverage (h, w) float32 of ``text`` in lead letters about ``height_px`` tall: each glyph
    cell is a whole number of pixels (at least 1), so every edge lies on a pixel edge (lead
    letters are as sharp as the detector draws them)."""
    cell = max(1, int(round(height_px / 7.0)))
    cols = []
    for ch in text.upper():
        cols.append(np.array([[c == "#" for c in row] for row in GLYPHS[ch]], bool))
        cols.append(np.zeros((7, 1), bool))  # one cell between letters
    bitmap = np.concatenate(cols[:-1], axis=1) if cols else np.zeros((7, 1), bool)
    return np.kron(bitmap, np.ones((cell, cell), bool)).astype(np.float32)


def disc_coverage(shape: tuple[int, int], cx: float, cy: float, radius: float) -> np.ndarray:
    """Area coverage (H, W) float32 of a disc (centre in pixel coordinates), sampled
    ``_SUPER`` x ``_SUPER`` per pixel in its bounding box only."""
    H, W = shape
    out = np.zeros((H, W), np.float32)
    x0, x1 = max(0, int(np.floor(cx - radius)) - 1), min(W, int(np.ceil(cx + radius)) + 2)
    y0, y1 = max(0, int(np.floor(cy - radius)) - 1), min(H, int(np.ceil(cy + radius)) + 2)
    if x0 >= x1 or y0 >= y1:
        return out
    sx = x0 - 0.5 + (np.arange((x1 - x0) * _SUPER) + 0.5) / _SUPER
    sy = y0 - 0.5 + (np.arange((y1 - y0) * _SUPER) + 0.5) / _SUPER
    inside = (sx[None, :] - cx) ** 2 + (sy[:, None] - cy) ** 2 <= radius * radius
    out[y0:y1, x0:x1] = inside.reshape(y1 - y0, _SUPER, x1 - x0, _SUPER).mean(axis=(1, 3))
    return out


def _free_spots(free: np.ndarray, h: int, w: int, pad: int, laterality: str, prefer_top: bool):
    """Top-left corners (x, y) where an h x w block, ``pad`` px from the image edge, lies in
    ``free`` (no breast within the clearance): the two corners away from the chest wall
    first, then along that edge, then along the top and bottom edges."""
    H, W = free.shape
    right = laterality != "R"  # a left breast has its chest wall at x = 0: the marker goes right
    x_edge = W - pad - w if right else pad
    ys = [pad, H - pad - h] if prefer_top else [H - pad - h, pad]
    step = max(1, h // 2)
    ys += list(range(pad, H - pad - h + 1, step))
    for y in ys:
        yield x_edge, y
    xs = range(W - pad - w, pad - 1, -step) if right else range(pad, W - pad - w + 1, step)
    for x in xs:
        for y in ys[:2]:
            yield x, y


def draw_markers(breast, rng: np.random.Generator, *, laterality_marker: bool = True,
                 nipple_marker: bool = True) -> tuple[np.ndarray, list[Marker]]:
    """The breast image with radio-opaque markers drawn in, and their labels.

    * laterality/view marker: "<L|R> <CC|MLO>" in lead letters 6-9 mm tall, in a corner on the
      nipple side at least 3 mm from the breast and the image edge (sliding along the edges
      when the corner is taken; letters shrunk up to 3 times when nothing fits, else left out);
    * nipple bead: a 1.5-3 mm metal ball on the nipple (``meta["nipple_xy"]``), its centre
      half a radius inside the skin line.

    Lead is drawn at a display level of 0.93-1.0: letters on whole pixels, the bead's rim
    area-sampled (pixel-sharp edges). The
    input breast is not modified. Returns (image float32, [Marker]) with each marker's mask in
    image pixels.
    """
    from scipy import ndimage as ndi

    img = breast.image.copy()
    H, W = img.shape
    spacing = float(breast.meta["pixel_spacing_mm"])
    lat, view = str(breast.meta["laterality"]), str(breast.meta["view"])
    markers: list[Marker] = []
    if laterality_marker:
        text = f"{lat} {view}"
        level = np.float32(rng.uniform(*MARKER_LEVEL))
        height_mm = float(rng.uniform(*LETTER_HEIGHT_MM))
        prefer_top = bool(rng.random() < 0.5)
        pad = int(np.ceil(MARKER_CLEARANCE_MM / spacing))
        free = ~ndi.binary_dilation(breast.breast_mask, iterations=pad)
        # An integral image of "taken" pixels: a block is free when its sum is 0.
        taken = np.pad(np.cumsum(np.cumsum(~free, 0, dtype=np.int64), 1), ((1, 0), (1, 0)))
        for _shrink in range(4):
            cov = text_mask(text, height_mm / spacing)
            h, w = cov.shape
            spot = None
            if h + 2 * pad <= H and w + 2 * pad <= W:
                for x, y in _free_spots(free, h, w, pad, lat, prefer_top):
                    if taken[y + h, x + w] - taken[y, x + w] - taken[y + h, x] + taken[y, x] == 0:
                        spot = (x, y)
                        break
            if spot is not None:
                x, y = spot
                win = img[y:y + h, x:x + w]
                img[y:y + h, x:x + w] = win + cov * (level - win)
                mask = np.zeros((H, W), bool)
                mask[y:y + h, x:x + w] = cov >= 0.5
                markers.append(Marker(kind="laterality", text=text, mask=mask))
                break
            height_mm *= 0.75
    if nipple_marker:
        level = np.float32(rng.uniform(*MARKER_LEVEL))
        radius = float(rng.uniform(*NIPPLE_BEAD_MM)) / 2.0 / spacing
        nx, ny = breast.meta["nipple_xy"]
        # Half a radius inside the skin line: towards the chest wall.
        cx = float(nx) - 0.5 * radius if lat != "R" else float(nx) + 0.5 * radius
        cov = disc_coverage((H, W), cx, float(ny), radius)
        if (cov >= 0.5).any():
            img = img + cov * (level - img)
            markers.append(Marker(kind="nipple", text="nipple bead", mask=cov >= 0.5))
    return img.astype(np.float32, copy=False), markers
