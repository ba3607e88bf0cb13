"""Draw RoboPoint's predicted points (and boxes) onto an image.

The original demo drew thin red crosses with a fixed 640x480-based size, which vanish on red or dark scenes
and on small images. Here each point is a filled disc with a two-tone outline (white inside, black outside),
so it stays visible on light and dark backgrounds alike, sized relative to the image. Optional numbers make
the order of the points readable (RoboPoint's answers are ordered lists).

Coordinates are explicit: pass ``normalized=True`` for RoboPoint's 0-1 answers (fractions of the ORIGINAL
image) or ``normalized=False`` for pixels; parsed points that carry their own ``.normalized`` flag need neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .deproject import as_point_array

__all__ = ["draw_points"]

_OUTLINE_LIGHT = (255, 255, 255)
_OUTLINE_DARK = (0, 0, 0)


def _to_pixels(coords: np.ndarray, normalized: bool, size: tuple[int, int]) -> np.ndarray:
    """Continuous pixel coordinates (x, y) measured from the top-left image corner."""
    return coords * np.asarray(size, dtype=np.float64) if normalized else coords


def _box_flag(boxes: Sequence[Any]) -> bool | None:
    """The shared ``.normalized`` flag of parsed boxes, or None for plain tuples (the caller must then say)."""
    flags = {getattr(box, "normalized", None) for box in boxes}
    return flags.pop() if len(flags) == 1 else None


def draw_points(
    image: Image.Image,
    points: Sequence[Any] | np.ndarray,
    *,
    normalized: bool | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    color: tuple[int, int, int] = (230, 25, 75),
    numbered: bool = False,
    radius: int | None = None,
) -> Image.Image:
    """Return an RGB copy of ``image`` with markers at ``points`` (the input image is never modified).

    Args:
        image (`PIL.Image.Image`):
            The original image the points refer to (any mode; the result is RGB).
        points (sequence of `(x, y)`, `np.ndarray` of shape `(N, 2)`, or parsed points with `.x`/`.y`):
            Points to mark, in the order given.
        normalized (`bool`, *optional*):
            ``True`` for 0-1 fractions of the image (RoboPoint's answers), ``False`` for pixels. Required for
            plain numbers; may be left out for parsed points that state it.
        boxes (sequence of `(x0, y0, x1, y1)` or parsed boxes with `.x0`/`.y0`/`.x1`/`.y1`, *optional*):
            Rectangles to outline, in the same coordinate system as ``points``.
        color (`tuple[int, int, int]`, *optional*, defaults to `(230, 25, 75)`):
            Fill colour of the markers and box outlines.
        numbered (`bool`, *optional*, defaults to `False`):
            Label each marker with its 1-based index in ``points``.
        radius (`int`, *optional*):
            Marker radius in pixels; defaults to 1.2 % of the shorter image side, at least 3 pixels.

    Returns:
        `PIL.Image.Image`: the annotated RGB copy.

    Example:

    ```python
    >>> from PIL import Image
    >>> annotated = draw_points(Image.new("RGB", (64, 48)), [(0.5, 0.5)], normalized=True)
    >>> annotated.getpixel((32, 24)) != (0, 0, 0)
    True

    ```
    """
    canvas = image.convert("RGB")  # convert() always returns a new image, so the input stays untouched
    width, height = canvas.size
    if radius is None:
        radius = max(3, round(0.012 * min(width, height)))
    if radius < 1:
        raise ValueError(f"radius must be at least 1 pixel, got {radius}")
    outline = max(1, radius // 3)
    draw = ImageDraw.Draw(canvas)

    box_rows = [(b.x0, b.y0, b.x1, b.y1) if hasattr(b, "x0") else tuple(b) for b in boxes or ()]
    if normalized is None and len(points) == 0 and boxes:
        normalized = _box_flag(boxes)
    coords, normalized = as_point_array(points, normalized)
    if box_rows:
        corners = _to_pixels(np.asarray(box_rows, dtype=np.float64).reshape(-1, 2), normalized, (width, height))
        for (x0, y0), (x1, y1) in corners.reshape(-1, 2, 2):
            rectangle = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            draw.rectangle(rectangle, outline=_OUTLINE_DARK, width=outline + 2)
            draw.rectangle(rectangle, outline=color, width=outline)

    font = ImageFont.load_default(size=max(8, 2 * radius)) if numbered else None
    for index, (x, y) in enumerate(_to_pixels(coords, normalized, (width, height)), start=1):
        outer = radius + outline
        draw.ellipse((x - outer, y - outer, x + outer, y + outer), fill=_OUTLINE_DARK)
        draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius), fill=color, outline=_OUTLINE_LIGHT, width=outline
        )
        if font is not None:
            anchor = (x + outer, y - outer)
            label = str(index)
            left, top, right, bottom = draw.textbbox(anchor, label, font=font, anchor="lb")
            draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=_OUTLINE_DARK)
            draw.text(anchor, label, fill=_OUTLINE_LIGHT, font=font, anchor="lb")
    return canvas
