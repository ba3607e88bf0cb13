"""Published pointing scorers, reproduced rule for rule (numpy + PIL only).

Every benchmark paper and harness scores pointing answers with its own code: its own answer grammar, its own pixel
rounding, its own reading of the mask (soft JPEG values, rounded, ``> 0``, ``> 127``...) and its own average. Numbers
are comparable only under the same scorer, so each one is implemented here as a named protocol and checked
bit-exactly against the values its own code produces (``tests/fixtures/benchmarks/protocol_references.json``):

==================  =================================================================  ===============================
protocol            source (code read and run)                                         aggregation
==================  =================================================================  ===============================
``lmms_eval``       lmms-eval 0.7.3 ``tasks/{where2place,refspatial,pointbench}/        mean of questions (pointbench:
                    utils.py`` ``*_process_results``                                  also ``binary_accuracy``)
``lmms_eval_json``  the same tasks' ``*_process_results_json`` (``point_2d`` JSON)     as ``lmms_eval``
``roboafford_eval`` tyb197/RoboAfford ``evaluation.py`` (``695c35e``)                  mean of answered questions
``roborefer``       Zhoues/RoboRefer ``Evaluation/summarize_acc.py`` (``d97a995``);    mean of parsed questions
                    its parser is chosen by the answer format, as it chose by model
``embodied_r1``     pickxiguapi/Embodied-R1 ``eval/hf_inference_where2place.py``      points in mask / all points
                    (``e599e95``), reasoning model (``<answer>`` required)             (micro average)
==================  =================================================================  ===============================

RoboPoint's own scorer is the ``original`` protocol of `robopoint_hf.evaluation.where2place`. The quirks of each source are kept
on purpose (they are what its published numbers mean) and listed in each function's docstring.

This module is copied into the Where2Place metric Space, so it imports only numpy, PIL and the standard library.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

PUBLISHED_PROTOCOLS: tuple[str, ...] = ("lmms_eval", "lmms_eval_json", "roboafford_eval", "roborefer", "embodied_r1")
LMMS_EVAL_TASKS: tuple[str, ...] = ("where2place", "refspatial", "pointbench")
"""Benchmarks lmms-eval has a task for (RefSpatial's three splits share one scorer)."""

MaskInput = np.ndarray | Image.Image | str | os.PathLike | None

# lmms-eval where2place/refspatial `_text2pts` and RoboRefer `text2pts` (RoboPoint's tuple grammar).
_TUPLE = re.compile(r"\(([-+]?\d+\.?\d*(?:,\s*[-+]?\d+\.?\d*)*?)\)")
# lmms-eval `_task_utils/point_format.parse_point2d`.
_POINT2D = re.compile(r"[\[\(]\s*([-+]?\d+\.?\d*)\s*,\s*([-+]?\d+\.?\d*)\s*[\]\)]")
# lmms-eval pointbench `_text_to_points`.
_POINTBENCH_TUPLE = re.compile(r"\(([-+]?\d*\.?\d+)\s*,\s*([-+]?\d*\.?\d+)\)")
# RoboAfford `parse_points_from_answer`: every pattern is applied and every match kept (a point can count twice).
_ROBOAFFORD_PATTERNS = (
    re.compile(r"\((\d+\.?\d*)\s*,\s*(\d+\.?\d*)\)"),
    re.compile(r"\[(\d+\.?\d*)\s*,\s*(\d+\.?\d*)\]"),
    re.compile(r"(\d+\.?\d*)\s+(\d+\.?\d*)"),
    re.compile(r"(\d+\.?\d*),(\d+\.?\d*)"),
)
# RoboRefer `xml2pts` (numbered Molmo attributes only) and `json2pts` (a fenced JSON block of {"point": [y, x]}).
_ROBOREFER_XML = re.compile(r'(x\d+)="(-?\d+\.?\d*)"\s+(y\d+)="(-?\d+\.?\d*)"')
_FENCED = re.compile(r"```(?:\w+)?\n(.*?)```", re.DOTALL)
# Embodied-R1: the reasoning model's answer, then its first <point>[...]</point>.
_E1_ANSWER = re.compile(r"<answer>(.*?)<\/answer>")
_E1_POINT = re.compile(r"<point>\[(.*?)\]</point>")
_E1_COORD = re.compile(r"\[(\d+\.?\d*),\s*(\d+\.?\d*)\]")


@dataclass(frozen=True)
class ProtocolResult:
    """Scores of one set of answers under one published protocol.

    Args:
        protocol (`str`): the protocol's name.
        accuracy (`float`): its headline number, computed as the source computes it (NaN if nothing was scored).
        per_question (`list[float | None]`): per-question score; `None` = left out by the source's scorer.
        weights (`list[int] | None`): points per question, for the micro-averaged ``embodied_r1`` (its accuracy is
            ``sum(score * weight) / sum(weight)``); `None` for means of questions.
        per_category (`dict[str, float]`): mean of the scored questions per category (our addition: the sources
            print one number).
        extra (`dict[str, float]`): other headline numbers of the source (``binary_accuracy`` for Point-Bench).
        extra_per_question (`dict[str, list]`): their per-question values.
        num_questions, num_missing, num_failed, num_skipped (`int`): questions, answers missing, answers the
            scorer could not read, questions left out of the mean.
    """

    protocol: str
    accuracy: float
    per_question: list[float | None]
    weights: list[int] | None = None
    per_category: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)
    extra_per_question: dict[str, list] = field(default_factory=dict)
    num_questions: int = 0
    num_missing: int = 0
    num_failed: int = 0
    num_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict for JSON or `evaluate`."""
        return asdict(self)


# ------------------------------------------------------------------------------------------------------ masks


def open_mask_image(mask: MaskInput, *, name: str = "mask") -> Image.Image | None:
    """The mask as the sources open it: a PIL image in its stored mode (RGB, palette, ... are kept)."""
    if mask is None:
        return None
    if isinstance(mask, Image.Image):
        return mask
    if isinstance(mask, np.ndarray):
        return Image.fromarray(mask)
    path = os.fspath(mask)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: mask file {path} does not exist")
    with Image.open(path) as image:
        image.load()
        return image


def _first_channel(values: np.ndarray) -> np.ndarray:
    return values[:, :, 0] if values.ndim == 3 else values


# ----------------------------------------------------------------------------------------------- lmms-eval


def _lmms_text2pts(text: str, width: int, height: int) -> np.ndarray:
    points = []
    for match in _TUPLE.findall(text):
        vector = [float(num) if "." in num else int(num) for num in match.split(",")]
        if len(vector) == 2:
            x, y = vector
            points.append((int(x / 1 * width), int(y / 1 * height)))
    return np.array(points)


def _lmms_point2d(text: str, width: int, height: int) -> np.ndarray:
    points = []
    for xs, ys in _POINT2D.findall(text):
        xf, yf = float(xs), float(ys)
        if "." in xs or "." in ys:
            points.append((int(xf * width), int(yf * height)))
        else:
            points.append((int(xf / 1000 * width), int(yf / 1000 * height)))
    return np.array(points)


def _pointbench_text2pts(text: str, width: int, height: int) -> np.ndarray:
    points = []
    for x_raw, y_raw in _POINTBENCH_TUPLE.findall(text):
        x, y = float(x_raw), float(y_raw)
        if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0:
            points.append((int(round(x * width)), int(round(y * height))))
        elif 0.0 <= x <= 1000.0 and 0.0 <= y <= 1000.0:
            points.append((int(round((x / 1000.0) * width)), int(round((y / 1000.0) * height))))
        else:
            points.append((int(round(x)), int(round(y))))
    return np.array(points, dtype=np.int32)


def _fraction_in_mask(mask: np.ndarray, points: np.ndarray):
    """Mean mask value over all points, out-of-image points as 0 (the shape RoboPoint's scorer gave everyone)."""
    if len(points) == 0:
        return 0.0
    inside = (
        (points[:, 0] >= 0) & (points[:, 0] < mask.shape[1]) & (points[:, 1] >= 0) & (points[:, 1] < mask.shape[0])
    )
    return np.concatenate(
        [mask[points[inside, 1], points[inside, 0]], np.zeros(points.shape[0] - inside.sum())]
    ).mean()


def _pointbench_binary(points: np.ndarray, mask: np.ndarray, category: str, expected_count: int) -> int:
    if len(points) == 0:
        return 0
    height, width = mask.shape
    for x, y in points if category == "counting" else points[:1]:
        if not (0 <= x < width and 0 <= y < height and mask[y, x]):
            return 0
    if category == "counting" and len(points) != expected_count:
        return 0
    return 1


def score_lmms_eval(
    predictions: Sequence[str | None],
    masks: Sequence[MaskInput],
    *,
    task: str = "where2place",
    json_points: bool = False,
    categories: Sequence[str | None] | None = None,
    counts: Sequence[int | None] | None = None,
) -> ProtocolResult:
    """lmms-eval's ``process_results`` + aggregation for ``where2place``, ``refspatial_*`` and ``pointbench``.

    where2place / refspatial: the mask is ``round(value / 255)`` (channel 0 of RGB), RoboPoint's tuple grammar with
    4-tuples ignored, coordinates ``int(x * mask width)``, out-of-image points count as 0. pointbench: the mask is
    ``convert("L") > 127``, tuples in 0-1, 0-1000 or pixels guessed per point, ``int(round(...))``; also the binary
    metric (first point in the mask; counting: every point and the right count). ``json_points`` uses
    ``parse_point2d`` (the ``*_json`` task variants). A missing answer is scored as the empty string; a missing
    Point-Bench mask scores 0, as lmms-eval does.
    """
    if task not in LMMS_EVAL_TASKS:
        raise ValueError(f"lmms-eval has no pointing task {task!r}; tasks: {', '.join(LMMS_EVAL_TASKS)}")
    n = len(predictions)
    _check_lengths(n, masks=masks, categories=categories, counts=counts)
    if task == "pointbench":
        parse = _lmms_point2d if json_points else _pointbench_text2pts
    else:
        parse = _lmms_point2d if json_points else _lmms_text2pts
    scores: list[float | None] = []
    binary: list[int] = []
    for i, (text, mask_input) in enumerate(zip(predictions, masks, strict=True)):
        image = open_mask_image(mask_input, name=f"question {i}")
        if task == "pointbench":
            if image is None:
                scores.append(0.0)
                binary.append(0)
                continue
            mask = (np.array(image.convert("L")) > 127).astype(np.int32)
        else:
            mask = np.round(np.array(image) / 255.0, 0).astype(int)
            mask = _first_channel(mask)
        points = parse(text or "", mask.shape[1], mask.shape[0])
        scores.append(float(_fraction_in_mask(mask, points)))
        if task == "pointbench":
            category = (categories[i] if categories is not None else None) or "unknown"
            count = int((counts[i] if counts is not None else 0) or 0)
            binary.append(_pointbench_binary(points, mask, category, count))
    result = _finish(
        "lmms_eval_json" if json_points else "lmms_eval",
        scores,
        categories,
        accuracy=float(np.mean(scores)) if scores else 0.0,
        num_missing=sum(p is None for p in predictions),
    )
    if task == "pointbench":
        extra = {"binary_accuracy": float(np.mean(binary)) if binary else 0.0}
        return _replace(result, extra=extra, extra_per_question={"binary_accuracy": binary})
    return result


# ----------------------------------------------------------------------------------------------- RoboAfford


def _roboafford_points(text: str) -> list[tuple[float, float]]:
    points = []
    for pattern in _ROBOAFFORD_PATTERNS:
        for match in pattern.findall(text):
            points.append((float(match[0]), float(match[1])))
    return points


def score_roboafford_eval(
    predictions: Sequence[str | None],
    masks: Sequence[MaskInput],
    *,
    categories: Sequence[str | None] | None = None,
) -> ProtocolResult:
    """RoboAfford-Eval's ``evaluation.py``: ``evaluate_model_results`` + ``calculate_accuracy``.

    Four regexes (``(x, y)``, ``[x, y]``, ``x y``, ``x,y``) are ALL applied and every match kept, so ``(0.5,0.5)``
    counts as two points; no signs. The answer is normalized iff every point is in ``[0, 1]``; coordinates
    ``int(round(x * width))``; a hit is ``value / 255 > 0.5`` on channel 0 of ``np.array(mask)`` (a palette PNG
    is read as its indices, as the source does). A question without an answer is left out; an unreadable one scores
    0; the mean is a sequential Python sum over answered questions.
    """
    _check_lengths(len(predictions), masks=masks, categories=categories)
    scores: list[float | None] = []
    failed = 0
    for i, (text, mask_input) in enumerate(zip(predictions, masks, strict=True)):
        if text is None:
            scores.append(None)
            continue
        points = _roboafford_points(text)
        if not points:
            failed += 1
            scores.append(0.0)
            continue
        image = open_mask_image(mask_input, name=f"question {i}")
        mask = _first_channel(np.array(image) / 255.0)
        height, width = mask.shape
        normalized = all(0 <= x <= 1 and 0 <= y <= 1 for x, y in points)
        correct = 0
        for x, y in points:
            px, py = (int(round(x * width)), int(round(y * height))) if normalized else (int(round(x)), int(round(y)))
            if 0 <= px < width and 0 <= py < height and mask[py, px] > 0.5:
                correct += 1
        scores.append(correct / len(points))
    total = 0.0
    for score in scores:
        if score is not None:
            total += score
    answered = sum(s is not None for s in scores)
    return _finish(
        "roboafford_eval",
        scores,
        categories,
        accuracy=total / answered if answered else 0.0,
        num_missing=sum(p is None for p in predictions),
        num_failed=failed,
    )


# ------------------------------------------------------------------------------------------------ RoboRefer


def _roborefer_text2pts(text: str, width: int, height: int, is_absolute: bool) -> np.ndarray:
    points: list = []
    for match in _TUPLE.findall(text):
        vector = [float(num) if "." in num else int(num) for num in match.split(",")]
        if len(vector) == 2:
            x, y = vector
            if not is_absolute and (isinstance(x, float) or isinstance(y, float)):
                x, y = int(x * width), int(y * height)
            points.append((x, y))
        elif len(vector) == 4:
            x0, y0, x1, y1 = vector
            if not is_absolute:
                x0, y0, x1, y1 = int(x0 * width), int(y0 * height), int(x1 * width), int(y1 * height)
            ys, xs = np.where(np.ones((y1 - y0, x1 - x0)))
            points.extend(list(np.stack([xs + x0, ys + y0], axis=1)))
    return np.array(points)


def _roborefer_xml2pts(text: str, width: int, height: int) -> np.ndarray:
    return np.array(
        [(int(float(x) / 100 * width), int(float(y) / 100 * height)) for _, x, _, y in _ROBOREFER_XML.findall(text)]
    )


def _roborefer_json2pts(text: str, width: int, height: int) -> np.ndarray:
    match = _FENCED.search(text)
    if not match:
        return np.empty((0, 2), dtype=int)
    try:
        data = json.loads(match.group(1).strip())
    except json.JSONDecodeError:
        return np.empty((0, 2), dtype=int)
    points = []
    for item in data:
        if "point" in item and isinstance(item["point"], list) and len(item["point"]) == 2:
            y_norm, x_norm = item["point"]
            points.append((int(x_norm / 1000 * width), int(y_norm / 1000 * height)))
    return np.array(points)


ROBOREFER_PARSERS: dict[str, Callable[[str, int, int], np.ndarray]] = {
    "robopoint": lambda text, w, h: _roborefer_text2pts(text, w, h, is_absolute=False),
    "roborefer": lambda text, w, h: _roborefer_text2pts(text, w, h, is_absolute=False),
    "robobrain2": lambda text, w, h: _roborefer_text2pts(text, w, h, is_absolute=True),
    "qwen2.5-vl": lambda text, w, h: _roborefer_text2pts(text, w, h, is_absolute=True),
    "molmo": _roborefer_xml2pts,
    "gemini-er": _roborefer_json2pts,
}
"""Answer format -> the parser ``summarize_acc.py`` picks for that model family (by model name there)."""


def score_roborefer(
    predictions: Sequence[str | None],
    masks: Sequence[MaskInput],
    *,
    answer_format: str = "roborefer",
    categories: Sequence[str | None] | None = None,
) -> ProtocolResult:
    """RoboRefer's ``Evaluation/summarize_acc.py`` (RefSpatial-Bench): ``compute_accuracy`` with the parser of
    ``main`` for the model family (`ROBOREFER_PARSERS`).

    The mask is ``value / 255 > 0`` on channel 0; RoboPoint tuples are scaled only when a coordinate is a float
    (integer tuples are pixels), 4-tuples expand to every pixel of the box; Molmo is read only from numbered
    ``x1=".." y1=".."`` attributes; Gemini only from a fenced JSON block. A question whose answer raises in the
    parser (e.g. an inverted box) is left out of the mean; a missing answer too.
    """
    if answer_format not in ROBOREFER_PARSERS:
        raise ValueError(
            f"RoboRefer's summarize_acc.py has no parser for answer format {answer_format!r}; "
            f"it reads {', '.join(ROBOREFER_PARSERS)}"
        )
    parse = ROBOREFER_PARSERS[answer_format]
    _check_lengths(len(predictions), masks=masks, categories=categories)
    scores: list[float | None] = []
    failed = 0
    for i, (text, mask_input) in enumerate(zip(predictions, masks, strict=True)):
        if text is None:
            scores.append(None)
            continue
        image = open_mask_image(mask_input, name=f"question {i}")
        mask = (_first_channel(np.array(image) / 255.0) > 0).astype(np.uint8)
        try:
            points = parse(text, mask.shape[1], mask.shape[0])
        except Exception:  # the source's `except Exception: continue`
            failed += 1
            scores.append(None)
            continue
        if len(points) and not np.issubdtype(points.dtype, np.integer):
            raise ValueError(
                f"question {i}: pixel answer {text[:60]!r} holds fractional coordinates, which RoboRefer's scorer "
                "cannot index a mask with (it crashes); score it with another protocol"
            )
        scores.append(_fraction_in_mask(mask, points))
    scored = [s for s in scores if s is not None]
    return _finish(
        "roborefer",
        scores,
        categories,
        accuracy=float(np.mean(scored)) if scored else math.nan,
        num_missing=sum(p is None for p in predictions),
        num_failed=failed,
    )


# ---------------------------------------------------------------------------------------------- Embodied-R1


def _embodied_r1_points(answer: str) -> list:
    match = _E1_POINT.search(answer)
    if not match or not match.group(1).strip():
        return []
    points_str = match.group(1).replace("'", '"')
    try:
        return json.loads(f"[{points_str}]")
    except json.JSONDecodeError:
        return [[float(x), float(y)] for x, y in _E1_COORD.findall(points_str)]


def score_embodied_r1(
    predictions: Sequence[str | None],
    masks: Sequence[MaskInput],
    *,
    reasoning: bool = True,
    categories: Sequence[str | None] | None = None,
) -> ProtocolResult:
    """Embodied-R1's Where2Place evaluation (``eval/hf_inference_where2place.py``), micro-averaged over points.

    With ``reasoning`` (the released script's setting) the answer is the text of ``<answer>...</answer>`` on one
    line, else nothing. Points come from the first ``<point>[...]</point>``; a coordinate ``<= 1`` is a fraction
    (``int(x * width)``), a larger one a pixel (``int(x)``); a hit is ``convert("L") > 0``. The accuracy is all
    hits over all points; questions without points add nothing to either.
    """
    _check_lengths(len(predictions), masks=masks, categories=categories)
    scores: list[float | None] = []
    weights: list[int] = []
    total_hits = 0
    for i, (text, mask_input) in enumerate(zip(predictions, masks, strict=True)):
        predicted = text or ""
        if reasoning:
            match = _E1_ANSWER.search(predicted)
            predicted = match.group(1).strip() if match else ""
        points = _embodied_r1_points(predicted)
        image = open_mask_image(mask_input, name=f"question {i}")
        width, height = image.size
        mask = np.array(image.convert("L"))
        hits = 0
        for point in points:
            if not isinstance(point, list):
                raise ValueError(f"question {i}: Embodied-R1's scorer cannot read the points of {predicted[:60]!r}")
            if len(point) == 2:
                x, y = point
                px = int(x * width) if x <= 1 else int(x)
                py = int(y * height) if y <= 1 else int(y)
                if 0 <= px < width and 0 <= py < height and mask[py, px] > 0:
                    hits += 1
        scores.append(hits / len(points) if points else 0)
        weights.append(len(points))
        total_hits += hits
    total_points = sum(weights)
    result = _finish(
        "embodied_r1",
        scores,
        categories,
        accuracy=total_hits / total_points if total_points > 0 else 0,
        num_missing=sum(p is None for p in predictions),
    )
    return _replace(result, weights=weights)


# ----------------------------------------------------------------------------------------------- dispatch


def score_published(
    protocol: str,
    predictions: Sequence[str | None],
    masks: Sequence[MaskInput],
    *,
    benchmark: str = "where2place",
    answer_format: str | None = None,
    categories: Sequence[str | None] | None = None,
    counts: Sequence[int | None] | None = None,
) -> ProtocolResult:
    """Score answer texts under one of `PUBLISHED_PROTOCOLS`.

    Args:
        protocol (`str`): the protocol.
        predictions (`Sequence[str | None]`): answer texts, `None` for a missing answer.
        masks (`Sequence`): one mask per question (file, PIL image or array), in its stored form.
        benchmark (`str`, *optional*): which lmms-eval task scores it (``where2place``, ``refspatial``,
            ``roboafford`` -- scored like where2place --, ``pointbench``).
        answer_format (`str`, *optional*): the answers' format; picks RoboRefer's parser.
        categories, counts (`Sequence`, *optional*): per question (Point-Bench's binary metric reads both).
    """
    if protocol == "lmms_eval" or protocol == "lmms_eval_json":
        task = benchmark if benchmark in LMMS_EVAL_TASKS else "where2place"
        return score_lmms_eval(
            predictions,
            masks,
            task=task,
            json_points=protocol == "lmms_eval_json",
            categories=categories,
            counts=counts,
        )
    if protocol == "roboafford_eval":
        return score_roboafford_eval(predictions, masks, categories=categories)
    if protocol == "roborefer":
        return score_roborefer(predictions, masks, answer_format=answer_format or "roborefer", categories=categories)
    if protocol == "embodied_r1":
        return score_embodied_r1(predictions, masks, categories=categories)
    raise ValueError(f"protocol must be one of {', '.join(PUBLISHED_PROTOCOLS)}, got {protocol!r}")


# ------------------------------------------------------------------------------------------------ helpers


def _check_lengths(n: int, **arrays: Sequence | None) -> None:
    for name, values in arrays.items():
        if values is not None and len(values) != n:
            raise ValueError(f"got {n} predictions but {len(values)} {name}")


def _finish(
    protocol: str,
    scores: list,
    categories: Sequence[str | None] | None,
    *,
    accuracy: float,
    num_missing: int = 0,
    num_failed: int = 0,
) -> ProtocolResult:
    per_category: dict[str, list[float]] = {}
    if categories is not None:
        for score, category in zip(scores, categories, strict=True):
            if score is not None and category is not None:
                per_category.setdefault(str(category), []).append(float(score))
    return ProtocolResult(
        protocol=protocol,
        accuracy=float(accuracy),
        per_question=[None if s is None else float(s) for s in scores],
        per_category={c: math.fsum(v) / len(v) for c, v in sorted(per_category.items())},
        num_questions=len(scores),
        num_missing=num_missing,
        num_failed=num_failed,
        num_skipped=sum(s is None for s in scores),
    )


def _replace(result: ProtocolResult, **changes: Any) -> ProtocolResult:
    return ProtocolResult(**{**asdict(result), **changes})


__all__ = [
    "LMMS_EVAL_TASKS",
    "PUBLISHED_PROTOCOLS",
    "ROBOREFER_PARSERS",
    "ProtocolResult",
    "open_mask_image",
    "score_embodied_r1",
    "score_lmms_eval",
    "score_published",
    "score_roboafford_eval",
    "score_roborefer",
]
