"""The one answer grammar of RoboPoint: model text <-> points and boxes.

RoboPoint answers "point to the free space left of the mug" with a Python-like list of tuples, e.g.
``[(0.461, 0.527), (0.498, 0.521)]``. Every entry point of the project (pipeline, CLI, Where2Place metric, demo,
synthetic data) reads and writes that text through this module, so there is exactly one definition of what a valid
answer is.

This file is pure Python + stdlib (no numpy, no torch, no transformers) because it is copied next to the model code
on the Hub and into the Where2Place metric Space (see `robopoint_hf.hub_files`). It only imports from the standard
library and must stay that way.

Two parsing modes share one parser:

* ``mode="robust"`` (default) -- what a user wants: tolerates spaces inside parentheses, leading-dot floats
  (``.5``), exponent floats (``1e-3``), ``[x, y]`` brackets and trailing text; never raises.
* ``mode="original"`` -- replicates the tuple grammar of RoboPoint's scorer (``robopoint/eval/summarize_vqa.py``,
  ``text2pts``) exactly, including its blind spots, so that the ``original`` Where2Place protocol reproduces the
  published numbers. See `parse_points` for the exact rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DEFAULT_MAX_NEW_TOKENS = 256
"""Longest answer, in tokens, wherever a RoboPoint answer is generated (pipeline, evaluation, served models).

Decoding stops at the answer's closing ``]``; 256 tokens hold about twenty points, more than any RoboPoint answer,
and bound a free-text answer that never closes (the original's 1024 let such answers run to ~2,700 characters).
"""

ANSWER_FORMAT_SUFFIX = (
    "Your answer should be formatted as a list of tuples, i.e. [(x1, y1), (x2, y2), ...], where each tuple contains "
    "the x and y coordinates of a point satisfying the conditions above. The coordinates should be between 0 and 1, "
    "indicating the normalized pixel locations of the points in the image."
)
"""The exact answer-format sentence RoboPoint was trained and evaluated with (training data, Where2Place questions,
Gradio demo). Changing one character changes the model's input distribution."""

ParseMode = Literal["robust", "original"]
BoxFormat = Literal["xyxy", "cxcywh"]
Rounding = Literal["floor", "truncate", "round", "none"]

# The original scorer's tuple pattern: optional sign, digits, optional dot and digits; comma-separated with optional
# whitespace after (never before) each comma; no whitespace just inside the parentheses.
_ORIGINAL_NUMBER = r"[-+]?\d+\.?\d*"
_ORIGINAL_TUPLE = re.compile(rf"\(({_ORIGINAL_NUMBER}(?:,\s*{_ORIGINAL_NUMBER})*?)\)")

# Robust pattern: innermost (...) or [...] groups that contain only numbers separated by commas.
_ROBUST_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_ROBUST_TUPLE = re.compile(rf"[\(\[]\s*({_ROBUST_NUMBER}(?:\s*,\s*{_ROBUST_NUMBER})*)\s*[\)\]]")
_EMPTY_LIST = re.compile(r"^\s*\[\s*\]\s*$")


def answer_regex(max_points: int | None = None, *, decimals: int = 3, tuple_size: int = 2) -> str:
    """The answer language as ONE regular expression: what constrained decoding allows and `parse_points` reads.

    ``[(x1, y1), (x2, y2), ...]`` exactly as RoboPoint writes it (`format_points`): every coordinate a normalized
    value in ``[0, 1]`` with ``decimals`` digits (``0.ddd`` or ``1.000``), ``", "`` between values and tuples, at
    most ``max_points`` tuples, ``[]`` for none. An optional leading space lets the first token be a
    SentencePiece word-start token (``▁[(``), which decodes without it. Every string it matches parses with
    `parse_points` (both modes) to exactly the tuples written, all normalized.

    Args:
        max_points (`int`, *optional*): the most tuples an answer may hold; unlimited by default.
        decimals (`int`, *optional*, defaults to 3): digits after the decimal point (RoboPoint's labels use 3).
        tuple_size (`int`, *optional*, defaults to 2): 2 for points ``(x, y)``, 4 for boxes ``(x0, y0, x1, y1)``.

    Example:

    ```python
    >>> import re
    >>> bool(re.fullmatch(answer_regex(max_points=2), "[(0.461, 0.527), (1.000, 0.521)]"))
    True
    ```
    """
    if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 1:
        raise ValueError(f"decimals must be a positive integer, got {decimals!r}")
    if tuple_size not in (2, 4):
        raise ValueError(f"tuple_size must be 2 (points) or 4 (boxes), got {tuple_size!r}")
    if max_points is not None and (isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1):
        raise ValueError(f"max_points must be a positive integer or None, got {max_points!r}")
    number = rf"(?:0\.[0-9]{{{decimals}}}|1\.0{{{decimals}}})"
    item = r"\(" + ", ".join([number] * tuple_size) + r"\)"
    more = "*" if max_points is None else f"{{0,{max_points - 1}}}"
    return rf" ?\[(?:{item}(?:, {item}){more})?\]"


ANSWER_REGEX = answer_regex()
"""`answer_regex` with its defaults: any number of points with 3 decimals."""


@dataclass(frozen=True)
class Point:
    """A 2-D point.

    Args:
        x (`float`): horizontal coordinate (left to right).
        y (`float`): vertical coordinate (top to bottom).
        normalized (`bool`): `True` if `x`, `y` are fractions of the image width/height (RoboPoint's convention),
            `False` if they are pixel coordinates of the original image.
    """

    x: float
    y: float
    normalized: bool


@dataclass(frozen=True)
class Box:
    """An axis-aligned box, always stored as corners ``(x0, y0, x1, y1)`` whatever format it was parsed from.

    Args:
        x0, y0, x1, y1 (`float`): corners (not necessarily ordered: an inverted box is kept as written).
        normalized (`bool`): same meaning as `Point.normalized`.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    normalized: bool


@dataclass(frozen=True)
class ParsedAnswer:
    """Result of `parse_points`.

    Args:
        points (`list[Point]`): 2-tuples, in text order.
        boxes (`list[Box]`): 4-tuples, in text order.
        text (`str`): the raw model text, kept so nothing is lost.
        parse_failed (`bool`): robust mode: no point or box could be read and the text is not an explicit empty
            list ``[]``; original mode: the original scorer would raise on this text (a 4-tuple with an integer
            ``x0`` and a float elsewhere), i.e. the question is skipped by the original protocol.
        items (`tuple[Point | Box, ...]`, *optional*): points and boxes interleaved in text order. Scorers need the
            order because the original protocol's floating-point sum depends on it.
    """

    points: list[Point]
    boxes: list[Box]
    text: str
    parse_failed: bool
    items: tuple[Point | Box, ...] = ()

    @property
    def is_empty(self) -> bool:
        """`True` if the answer holds neither points nor boxes."""
        return not self.points and not self.boxes


def _answer(items: list[Point | Box], text: str, parse_failed: bool) -> ParsedAnswer:
    points = [i for i in items if isinstance(i, Point)]
    boxes = [i for i in items if isinstance(i, Box)]
    return ParsedAnswer(points=points, boxes=boxes, text=text, parse_failed=parse_failed, items=tuple(items))


def _original_number(token: str) -> int | float:
    # The original types a number by the presence of a dot: "5." is a float, "5" an int.
    return float(token) if "." in token else int(token)


def _is_float_literal(token: str) -> bool:
    return any(c in token for c in ".eE")


def _parse_original(text: str, box_format: BoxFormat) -> ParsedAnswer:
    if box_format != "xyxy":
        raise ValueError(
            f"mode='original' reads boxes as 'xyxy' only (the original scorer's rule), got {box_format!r}"
        )
    items: list[Point | Box] = []
    for match in _ORIGINAL_TUPLE.finditer(text):
        values = [_original_number(t) for t in match.group(1).split(",")]
        if len(values) == 2:
            # Either coordinate being a float makes the whole point normalized (both get scaled).
            normalized = any(isinstance(v, float) for v in values)
            items.append(Point(values[0], values[1], normalized))
        elif len(values) == 4:
            # Only x0 decides; an int x0 with a float elsewhere makes the original slice with a float -> TypeError,
            # which its bare `except` turns into a skipped question.
            normalized = isinstance(values[0], float)
            if not normalized and any(isinstance(v, float) for v in values[1:]):
                return ParsedAnswer(points=[], boxes=[], text=text, parse_failed=True)
            items.append(Box(*values, normalized=normalized))
        # Any other arity is ignored, as in the original.
    return _answer(items, text, parse_failed=False)


def _parse_robust(text: str, box_format: BoxFormat) -> ParsedAnswer:
    items: list[Point | Box] = []
    for match in _ROBUST_TUPLE.finditer(text):
        tokens = [t.strip() for t in match.group(1).split(",")]
        if len(tokens) not in (2, 4):
            continue
        values = [float(t) for t in tokens]
        if not all(math.isfinite(v) for v in values):  # e.g. "1e999"
            continue
        # Rule: a tuple written with any float literal is normalized; an all-integer tuple is in pixels.
        normalized = any(_is_float_literal(t) for t in tokens)
        if len(values) == 2:
            items.append(Point(values[0], values[1], normalized))
        else:
            if box_format == "cxcywh":
                cx, cy, w, h = values
                values = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            items.append(Box(*values, normalized=normalized))
    return _answer(items, text, parse_failed=not items and not _EMPTY_LIST.match(text))


def parse_points(text: str, *, mode: ParseMode = "robust", box_format: BoxFormat = "xyxy") -> ParsedAnswer:
    """Parse a model answer into points and boxes. Never raises on bad text.

    Args:
        text (`str`): the model's answer, e.g. ``"[(0.461, 0.527), (0.498, 0.521)]"``.
        mode (`str`, *optional*, defaults to `"robust"`): one of

            - ``"robust"``: every innermost ``(...)`` or ``[...]`` holding 2 or 4 comma-separated numbers; numbers
              may be signed, leading-dot (``.5``) or exponent (``1e-3``) floats, with spaces anywhere around them.
              A tuple containing a float literal is normalized, an all-integer tuple is pixels. Other arities and
              non-finite values are ignored. ``parse_failed`` is set when nothing was read and the text is not
              ``[]``.
            - ``"original"``: the original scorer's grammar: regex ``\\(([-+]?\\d+\\.?\\d*(?:,\\s*[-+]?\\d+\\.?\\d*)*?)\\)``
              (no ``.5``, no ``1e-3``, no space after ``(`` or before ``,``, no ``[x, y]``); a number is a float iff
              it contains a dot. 2 numbers: normalized iff either is a float. 4 numbers: a box, normalized iff
              ``x0`` is a float; an int ``x0`` with a float elsewhere sets ``parse_failed`` (the original raises and
              skips the question). Other arities are ignored.
        box_format (`str`, *optional*, defaults to `"xyxy"`): how to read 4-tuples: ``"xyxy"`` corners (what the
            Where2Place scorer reads) or ``"cxcywh"`` centre and size (RoboPoint's LVIS training answers). Boxes are
            returned as corners either way. The format is never guessed.

    Returns:
        `ParsedAnswer`: the points, boxes, raw text and failure flag.

    Example:

    ```python
    >>> parse_points("[( 0.5, .25), (10, 20)] done").points
    [Point(x=0.5, y=0.25, normalized=True), Point(x=10.0, y=20.0, normalized=False)]
    ```
    """
    if mode == "robust":
        return _parse_robust(text, box_format)
    if mode == "original":
        return _parse_original(text, box_format)
    raise ValueError(f"mode must be one of 'robust', 'original', got {mode!r}")


def _scale(value: float, size: int, rounding: Rounding) -> float:
    scaled = value * size
    if rounding == "floor":
        return math.floor(scaled)
    if rounding == "truncate":
        return int(scaled)
    if rounding == "round":
        return round(scaled)
    return scaled


def to_pixels(points: Sequence[Point], width: int, height: int, *, rounding: Rounding = "floor") -> list[Point]:
    """Convert normalized points to pixel coordinates of the ORIGINAL (un-padded) image; pixel points pass through.

    Args:
        points (`Sequence[Point]`): points to convert.
        width, height (`int`): size of the image the normalized coordinates refer to.
        rounding (`str`, *optional*, defaults to `"floor"`): ``"floor"`` (the pixel that contains the point; a
            slightly negative value stays outside the image), ``"truncate"`` (Python ``int()``, toward zero: what the
            original scorer does, so ``-0.001`` lands on pixel 0), ``"round"`` (Python ``round``, half to even) or
            ``"none"`` (keep fractional pixels).

    Returns:
        `list[Point]`: points with ``normalized=False``.
    """
    if rounding not in ("floor", "truncate", "round", "none"):
        raise ValueError(f"rounding must be one of 'floor', 'truncate', 'round', 'none', got {rounding!r}")
    return [
        Point(_scale(p.x, width, rounding), _scale(p.y, height, rounding), False) if p.normalized else p
        for p in points
    ]


def to_normalized(points: Sequence[Point], width: int, height: int) -> list[Point]:
    """Convert pixel points to fractions of the original image size; normalized points pass through."""
    return [p if p.normalized else Point(p.x / width, p.y / height, True) for p in points]


def in_range(point: Point, width: int | None = None, height: int | None = None) -> bool:
    """Whether a point lies inside the image: ``[0, 1]`` when normalized, ``[0, width) x [0, height)`` in pixels."""
    if point.normalized:
        return 0.0 <= point.x <= 1.0 and 0.0 <= point.y <= 1.0
    if width is None or height is None:
        raise ValueError(f"width and height are required to check pixel point {point}")
    return 0 <= point.x < width and 0 <= point.y < height


def clamp_points(points: Sequence[Point], width: int | None = None, height: int | None = None) -> list[Point]:
    """Clamp points into the image (``[0, 1]`` normalized, ``[0, width - 1] x [0, height - 1]`` pixels).

    Use `in_range` first if out-of-range answers must be reported rather than silently moved.
    """
    clamped = []
    for p in points:
        if p.normalized:
            clamped.append(Point(min(max(p.x, 0.0), 1.0), min(max(p.y, 0.0), 1.0), True))
        else:
            if width is None or height is None:
                raise ValueError(f"width and height are required to clamp pixel point {p}")
            clamped.append(Point(min(max(p.x, 0), width - 1), min(max(p.y, 0), height - 1), False))
    return clamped


def format_points(points: Sequence[tuple[float, ...]] | Sequence[Point], decimals: int = 3) -> str:
    """Format points the way RoboPoint writes answers.

    Args:
        points (`Sequence[tuple[float, ...]]` or `Sequence[Point]`): normalized ``(x, y)`` pairs (or boxes
            ``(x0, y0, x1, y1)``, written the same way).
        decimals (`int`, *optional*, defaults to 3): digits after the decimal point (RoboPoint's labels use 3).

    Example:

    ```python
    >>> format_points([(0.4612, 0.527), (0.498, 0.521)])
    '[(0.461, 0.527), (0.498, 0.521)]'
    ```
    """
    tuples = [(p.x, p.y) if isinstance(p, Point) else p for p in points]
    return "[" + ", ".join("(" + ", ".join(f"{v:.{decimals}f}" for v in values) + ")" for values in tuples) + "]"


def add_answer_format(instruction: str, sep: str = " ") -> str:
    """Append `ANSWER_FORMAT_SUFFIX` to an instruction unless it already contains it (idempotent).

    Example:

    ```python
    >>> q = add_answer_format("Point to the mug.")
    >>> q == add_answer_format(q)
    True
    ```
    """
    if ANSWER_FORMAT_SUFFIX in instruction:
        return instruction
    return f"{instruction}{sep}{ANSWER_FORMAT_SUFFIX}"


__all__ = [
    "ANSWER_FORMAT_SUFFIX",
    "DEFAULT_MAX_NEW_TOKENS",
    "ANSWER_REGEX",
    "Box",
    "ParsedAnswer",
    "Point",
    "add_answer_format",
    "answer_regex",
    "clamp_points",
    "format_points",
    "in_range",
    "parse_points",
    "to_normalized",
    "to_pixels",
]
