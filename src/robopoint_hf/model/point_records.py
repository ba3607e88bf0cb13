"""Answer items as the records a robot reads: normalized and pixel coordinates, and a confidence per item.

One implementation for every entry point that turns an answer into records -- ``pipeline("robopoint")`` (local
generation) and `robopoint_hf.inference.serving.parse_response` (a served model) -- so that both give the same
records for the same answer. Pure Python: copied next to the weights with the rest of the model code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .points import Box, ParsedAnswer, Point, parse_points, to_normalized, to_pixels


def item_spans(text: str, parsed: ParsedAnswer) -> list[tuple[int, int]]:
    """Character span ``[start, end)`` of every item of ``parsed`` (points and boxes, in text order).

    :func:`~.points.parse_points` reports values, not positions; rather than a second grammar, the spans come from
    the parser itself: an item ends on a closing bracket, and the ``k``-th item ends where a prefix of the text first
    holds ``k + 1`` items (matches never change when text is appended after them). A tuple holds only numbers, so it
    starts at the last opening bracket before its end.
    """
    spans: list[tuple[int, int]] = []
    for end in (index + 1 for index, char in enumerate(text) if char in ")]"):
        if len(spans) == len(parsed.items):
            break
        if len(parse_points(text[:end]).items) > len(spans):
            start = max(text.rfind("(", 0, end - 1), text.rfind("[", 0, end - 1))
            spans.append((start, end))
    return spans


def item_scores(text: str, parsed: ParsedAnswer, char_ends: Sequence[int], token_logprobs: Sequence[float]) -> list:
    """Confidence of every parsed item: geometric mean of the probabilities of the tokens spelling its tuple.

    A token belongs to a tuple when its characters overlap the tuple's, from the opening to the closing bracket.
    The geometric mean (``exp`` of the mean token log-probability) is the per-token confidence of the whole tuple:
    it does not shrink with the number of tokens the tokenizer spends on it (a product would penalise ``0.461``
    against ``.5``), and unlike the minimum it is not decided by one near-tie in the last digit. Values lie in
    ``(0, 1]``.

    Args:
        text (`str`): the decoded answer the items were parsed from.
        parsed ([`~points.ParsedAnswer`]): ``parse_points(text)``.
        char_ends (`Sequence[int]`): :func:`token_char_ends` of the generated tokens.
        token_logprobs (`Sequence[float]`): log-probability of each generated token under the decoding distribution.

    Returns:
        `list[float]`: one score per item of ``parsed.items``.
    """
    scores = []
    for start, end in item_spans(text, parsed):
        covering = [
            logprob
            for index, (logprob, token_end) in enumerate(zip(token_logprobs, char_ends, strict=True))
            if token_end > start and (char_ends[index - 1] if index else 0) < end
        ]
        scores.append(math.exp(sum(covering) / len(covering)))
    return scores


def point_record(point: Point, image_size: tuple[int, int] | None, score: float | None = None) -> dict[str, Any]:
    """``{"x", "y", "x_px", "y_px", "score"}`` of one point: normalized to the ORIGINAL image and its pixels.

    Without the image size only the coordinates the answer itself gave are known; the others are None.
    """
    if image_size is None:
        if point.normalized:
            return {"x": float(point.x), "y": float(point.y), "x_px": None, "y_px": None, "score": score}
        return {"x": None, "y": None, "x_px": math.floor(point.x), "y_px": math.floor(point.y), "score": score}
    width, height = image_size
    normalized, pixel = to_normalized([point], width, height)[0], to_pixels([point], width, height)[0]
    return {
        "x": float(normalized.x),
        "y": float(normalized.y),
        "x_px": math.floor(pixel.x),
        "y_px": math.floor(pixel.y),
        "score": score,
    }


def box_record(box: Box, image_size: tuple[int, int] | None, score: float | None = None) -> dict[str, Any]:
    """``{"x0", "y0", "x1", "y1", "x0_px", "y0_px", "x1_px", "y1_px", "score"}`` of one box (see `point_record`)."""
    first = point_record(Point(box.x0, box.y0, box.normalized), image_size)
    second = point_record(Point(box.x1, box.y1, box.normalized), image_size)
    corners = {"0": first, "1": second}
    record = {f"{axis}{index}": corners[index][axis] for index in "01" for axis in "xy"}
    record.update({f"{axis}{index}_px": corners[index][f"{axis}_px"] for index in "01" for axis in "xy"})
    record["score"] = score
    return record


def answer_records(
    parsed: ParsedAnswer, image_size: tuple[int, int] | None, scores: Sequence[float | None] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(point records, box records) of every item of ``parsed``, in text order, with ``scores`` per item."""
    scores = [None] * len(parsed.items) if scores is None else scores
    points, boxes = [], []
    for item, score in zip(parsed.items, scores, strict=True):
        if isinstance(item, Box):
            boxes.append(box_record(item, image_size, score))
        else:
            points.append(point_record(item, image_size, score))
    return points, boxes


def drop_repeated_points(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points without the repetitions of an earlier point (same ``x`` and ``y``), in the model's order."""
    seen, kept = set(), []
    for point in points:
        if (point["x"], point["y"]) not in seen:
            seen.add((point["x"], point["y"]))
            kept.append(point)
    return kept


def keep_top_points(points: list[dict[str, Any]], max_points: int | None) -> list[dict[str, Any]]:
    """The ``max_points`` highest-scoring points, still in the model's order (ties: earlier point wins)."""
    if max_points is None or len(points) <= max_points:
        return points
    ranked = sorted(range(len(points)), key=lambda index: -points[index]["score"])[:max_points]
    return [points[index] for index in sorted(ranked)]


__all__ = [
    "answer_records",
    "box_record",
    "drop_repeated_points",
    "item_scores",
    "item_spans",
    "keep_top_points",
    "point_record",
]
