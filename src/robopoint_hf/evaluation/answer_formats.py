"""Answer-format adapters: the text of any pointing model -> `points.Point` in normalized original-image coordinates.

Pointing models write points in different grammars and, worse, in different frames. Scoring them against one
benchmark needs every answer mapped to the same frame first, so each format below names its frame explicitly:

=================  ====================================================  ==========================================
format             what the model writes                                 frame of the numbers
=================  ====================================================  ==========================================
``robopoint``      ``[(0.46, 0.52), ...]`` (also RoboRefer)              0-1 of the original image (integer tuples:
                                                                          pixels of the original image)
``molmo``          ``<point x="61.5" y="40.4" alt="..">..</point>``,     0-100 of the image (Molmo)
                   ``<points x1=".." y1=".." x2=..>..</points>``
                   ``<points coords="1 1 900 400 2 911 800">..``         0-1000 of the image (Molmo2: image index,
                                                                         then ``point-index x y`` triplets)
``qwen2.5-vl``     JSON ``[{"point_2d": [x, y], "label": ..}]``, or      pixels of the model's RESIZED input
                   XML ``<points x1=".." y1="..">..</points>``           (`smart_resize`), mapped back here
``qwen3-vl``       as ``qwen2.5-vl``                                     0-1000 of the image
``gemini-er``      JSON ``[{"point": [y, x], "label": ..}]``             0-1000 of the image, **y first**
``robobrain2``     ``[(376, 309), (332, 357), ...]``                     pixels of the original image
``embodied-r1``    ``<point>[[x, y], ...]</point>`` (inside ``<answer>``  pixels of the original image; a value
                   when the model reasons)                               <= 1 is read as a fraction (its scorer's
                                                                          rule)
=================  ====================================================  ==========================================

Every adapter returns a `points.ParsedAnswer` whose points all have ``normalized=True``, so the Where2Place
protocols (and anything else taking a ``ParsedAnswer``) score any model the same way. The RoboPoint grammar itself
stays in `robopoint_hf.model.points.parse_points`; this module only adds the other grammars and the frame conversions.

Pure Python + stdlib (copied into the Where2Place metric Space with ``points.py``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

from robopoint_hf.model.points import Box, ParsedAnswer, Point, parse_points

ANSWER_FORMATS: tuple[str, ...] = (
    "robopoint",
    "roborefer",
    "molmo",
    "qwen2.5-vl",
    "qwen3-vl",
    "gemini-er",
    "robobrain2",
    "embodied-r1",
)
"""Names accepted by `parse_answer` (``roborefer`` is an alias of ``robopoint``: same grammar, same frame)."""

QWEN25_VL_PIXELS = (3136, 12845056)
"""``(min_pixels, max_pixels)`` of the released Qwen2.5-VL processors (``preprocessor_config.json``)."""
QWEN25_VL_FACTOR = 28
"""Patch size 14 x spatial merge 2: Qwen2.5-VL resizes images to multiples of 28."""

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_MOLMO_POINT = re.compile(rf'<point\s+x\s*=\s*"({_NUMBER})"\s+y\s*=\s*"({_NUMBER})"[^>]*>', re.IGNORECASE)
_MOLMO_POINTS = re.compile(r"<points\s+([^>]*)>", re.IGNORECASE)
_MOLMO_COORD = re.compile(rf'\b([xy])(\d+)\s*=\s*"({_NUMBER})"')
# Molmo2 `UnifiedPointFormatter` ("html-v1"/"html-v2"): coords="<image> <i> <x> <y> <i> <x> <y>..." in 0-1000, frames
# separated by tab, colon, comma or semicolon.
_MOLMO2_COORDS = re.compile(r'<(?:points|tracks)\b[^>]*?\bcoords="([0-9\t:;, .]+)"')
_MOLMO2_FRAME = re.compile(r"(?:^|\t|:|,|;)([0-9.]+) ([0-9. ]+)")
_MOLMO2_TRIPLET = re.compile(r"([0-9]+) ([0-9]{3,4}) ([0-9]{3,4})")
_JSON_PAIR = rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]"
_EMBODIED_BLOCK = re.compile(r"<point>(.*?)</point>", re.DOTALL)
_EMBODIED_PAIR = re.compile(_JSON_PAIR)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = QWEN25_VL_FACTOR,
    min_pixels: int = QWEN25_VL_PIXELS[0],
    max_pixels: int = QWEN25_VL_PIXELS[1],
) -> tuple[int, int]:
    """The ``(height, width)`` Qwen2-VL / Qwen2.5-VL resize an image to before the vision tower sees it.

    Both sides become multiples of ``factor`` closest to the original, then the area is scaled (keeping the aspect
    ratio) into ``[min_pixels, max_pixels]``. Qwen2.5-VL answers ``point_2d`` in pixels of THIS size, which is why
    its points must be mapped back before they can be compared with a mask of the original image.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} is over 200, which Qwen2-VL's processor refuses")
    new_height = round(height / factor) * factor
    new_width = round(width / factor) * factor
    if new_height * new_width > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        new_height = max(factor, math.floor(height / beta / factor) * factor)
        new_width = max(factor, math.floor(width / beta / factor) * factor)
    elif new_height * new_width < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        new_height = math.ceil(height * beta / factor) * factor
        new_width = math.ceil(width * beta / factor) * factor
    return new_height, new_width


def _json_values(text: str, key: str) -> list[tuple[float, float]]:
    """``[a, b]`` pairs stored under ``key`` anywhere in the text, JSON-decoded when possible.

    Models wrap the JSON in ```json fences, add prose, or get cut off mid-list; a regex over ``"key": [a, b]`` reads
    all of those the same way, in text order.
    """
    pattern = re.compile(rf'["\']{re.escape(key)}["\']\s*:\s*{_JSON_PAIR}')
    return [(float(a), float(b)) for a, b in pattern.findall(text)]


def _point_tags(text: str) -> list[tuple[float, float, float]]:
    """Molmo-style point tags as ``(x, y, scale)`` in text order.

    ``x``/``y`` attributes come with scale 100 (Molmo's 0-100 frame), Molmo2 coords with scale 1000; Molmo2 points
    outside 0-1000 are dropped, as its own ``extract_multi_image_points`` drops points off the image.
    """
    found: list[tuple[int, list[tuple[float, float, float]]]] = []
    for match in _MOLMO_POINT.finditer(text):
        found.append((match.start(), [(float(match.group(1)), float(match.group(2)), 100.0)]))
    for match in _MOLMO_POINTS.finditer(text):
        coords: dict[tuple[str, str], float] = {}
        for axis, index, value in _MOLMO_COORD.findall(match.group(1)):
            coords[(axis, index)] = float(value)
        indices = sorted({i for _, i in coords}, key=int)
        tags = [
            (coords[("x", i)], coords[("y", i)], 100.0) for i in indices if ("x", i) in coords and ("y", i) in coords
        ]
        found.append((match.start(), tags))
    for match in _MOLMO2_COORDS.finditer(text):
        tags = []
        for frame in _MOLMO2_FRAME.finditer(match.group(1)):
            for _, x, y in _MOLMO2_TRIPLET.findall(frame.group(2)):
                if float(x) <= 1000 and float(y) <= 1000:
                    tags.append((float(x), float(y), 1000.0))
        found.append((match.start(), tags))
    return [tag for _, tags in sorted(found, key=lambda f: f[0]) for tag in tags]


def _qwen_pairs(text: str) -> list[tuple[float, float]]:
    """Qwen's ``point_2d`` JSON values, or else the values of its documented XML form (``<points x1=".." y1="..">``)."""
    pairs = _json_values(text, "point_2d")
    return pairs if pairs else [(x, y) for x, y, _ in _point_tags(text)]


def _embodied_pairs(text: str) -> list[tuple[float, float]]:
    answer = _ANSWER_TAG.search(text)
    body = answer.group(1) if answer else text
    pairs: list[tuple[float, float]] = []
    for block in _EMBODIED_BLOCK.findall(body):
        pairs.extend((float(a), float(b)) for a, b in _EMBODIED_PAIR.findall(block))
    return pairs


def _require_size(image_size: tuple[int, int] | None, answer_format: str) -> tuple[int, int]:
    if image_size is None:
        raise ValueError(f"answer format {answer_format!r} writes pixels: image_size=(width, height) is required")
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size}")
    return int(width), int(height)


def _normalized(pairs: Sequence[tuple[float, float]], sx: float, sy: float) -> list[Point]:
    return [Point(x / sx, y / sy, True) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]


def parse_answer(
    text: str,
    answer_format: str = "robopoint",
    *,
    image_size: tuple[int, int] | None = None,
    min_pixels: int = QWEN25_VL_PIXELS[0],
    max_pixels: int = QWEN25_VL_PIXELS[1],
) -> ParsedAnswer:
    """Read a model's answer in its own format as normalized points of the original image. Never raises on bad text.

    Args:
        text (`str`): the model's answer.
        answer_format (`str`, *optional*, defaults to `"robopoint"`): one of `ANSWER_FORMATS` (see the module table).
        image_size (`tuple[int, int]`, *optional*): ``(width, height)`` of the ORIGINAL image. Required by the
            pixel formats (``qwen2.5-vl``, ``robobrain2``, ``embodied-r1``) and by ``robopoint`` answers holding
            integer (pixel) tuples.
        min_pixels, max_pixels (`int`, *optional*): the Qwen2.5-VL processor's limits used by `smart_resize`
            (defaults: the released models' ``preprocessor_config.json``); only read by ``qwen2.5-vl``.

    Returns:
        `ParsedAnswer`: points with ``normalized=True`` in text order (boxes only for ``robopoint``);
        ``parse_failed`` when no point could be read.

    Example:

    ```python
    >>> parse_answer('<point x="61.5" y="40.5" alt="mug">mug</point>', "molmo").points
    [Point(x=0.615, y=0.405, normalized=True)]
    >>> parse_answer('```json\\n[{"point": [250, 750], "label": "cup"}]\\n```', "gemini-er").points
    [Point(x=0.75, y=0.25, normalized=True)]
    ```
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {', '.join(ANSWER_FORMATS)}, got {answer_format!r}")
    if answer_format in ("robopoint", "roborefer"):
        parsed = parse_points(text)
        if all(p.normalized for p in parsed.items if isinstance(p, Point)) and all(b.normalized for b in parsed.boxes):
            return parsed
        width, height = _require_size(image_size, answer_format)
        items = tuple(
            (Point(i.x / width, i.y / height, True) if isinstance(i, Point) and not i.normalized else i)
            for i in parsed.items
        )
        items = tuple(
            i
            if isinstance(i, Point) or i.normalized
            else Box(i.x0 / width, i.y0 / height, i.x1 / width, i.y1 / height, True)
            for i in items
        )
        points = [i for i in items if isinstance(i, Point)]
        boxes = [i for i in items if isinstance(i, Box)]
        return ParsedAnswer(points, boxes, text, parsed.parse_failed, items)

    if answer_format == "molmo":
        points = [Point(x / scale, y / scale, True) for x, y, scale in _point_tags(text)]
    elif answer_format == "qwen3-vl":
        points = _normalized(_qwen_pairs(text), 1000.0, 1000.0)
    elif answer_format == "gemini-er":
        points = _normalized([(x, y) for y, x in _json_values(text, "point")], 1000.0, 1000.0)
    elif answer_format == "qwen2.5-vl":
        width, height = _require_size(image_size, answer_format)
        resized_h, resized_w = smart_resize(height, width, min_pixels=min_pixels, max_pixels=max_pixels)
        points = _normalized(_qwen_pairs(text), resized_w, resized_h)
    elif answer_format == "robobrain2":
        width, height = _require_size(image_size, answer_format)
        pairs = [(p.x, p.y) for p in parse_points(text).points]
        points = _normalized(pairs, width, height)
    else:  # embodied-r1
        width, height = _require_size(image_size, answer_format)
        points = [
            Point(x if x <= 1 else x / width, y if y <= 1 else y / height, True) for x, y in _embodied_pairs(text)
        ]
    return ParsedAnswer(points, [], text, not points and not _is_explicitly_empty(text), tuple(points))


def _is_explicitly_empty(text: str) -> bool:
    stripped = text.strip().removeprefix("```json").removesuffix("```").strip()
    try:
        return json.loads(stripped) == []
    except ValueError:
        return False


def parse_answers(
    texts: Sequence[str | None],
    answer_format: str = "robopoint",
    *,
    image_sizes: Sequence[tuple[int, int] | None] | None = None,
    **kwargs,
) -> list[ParsedAnswer | None]:
    """`parse_answer` for a list of answers (a `None` text, i.e. a missing answer, stays `None`)."""
    if image_sizes is not None and len(image_sizes) != len(texts):
        raise ValueError(f"got {len(texts)} answers but {len(image_sizes)} image sizes")
    sizes = image_sizes if image_sizes is not None else [None] * len(texts)
    return [
        None if text is None else parse_answer(text, answer_format, image_size=size, **kwargs)
        for text, size in zip(texts, sizes, strict=True)
    ]


__all__ = ["ANSWER_FORMATS", "QWEN25_VL_FACTOR", "QWEN25_VL_PIXELS", "parse_answer", "parse_answers", "smart_resize"]
