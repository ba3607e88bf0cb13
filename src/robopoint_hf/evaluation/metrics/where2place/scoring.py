"""Where2Place scoring protocols as pure functions (numpy + PIL only).

Where2Place (RoboPoint paper, HF dataset ``wentao-yuan/where2place``) scores an answer by looking up the predicted
points in a ground-truth free-space mask. Published numbers were produced with slightly different rules, so the
protocol is an explicit argument, never a silent default:

======================  ==============  ============  ==================  ==============  ====================
protocol                normalized ->   rounding      mask value          unparseable     aggregation
                        pixels scale
======================  ==============  ============  ==================  ==============  ====================
``original``            640 x 480       ``int()``     soft, value / 255   skipped         mean of questions
``strict`` (default)    real mask size  floor         value/255 >= 0.5    scores 0        mean of questions
``micro``               real mask size  floor         value > 0           no points       mean over all points
``strict_round``        real mask size  ``round()``   value/255 >= 0.5    scores 0        mean of questions
``category_mean``       as ``strict``   floor         value/255 >= 0.5    scores 0        mean of category means
======================  ==============  ============  ==================  ==============  ====================

* ``original`` reproduces RoboPoint's ``robopoint/eval/summarize_vqa.py`` (commit ``adbee8d``) bit for bit: its tuple
  grammar (`robopoint_hf.model.points.parse_points` with ``mode="original"``), 640x480 scaling whatever the image size,
  4-tuples expanded to every pixel of ``grid[y0:y1, x0:x1]`` on a 480x640 grid (numpy slice semantics: clipping and
  negative-bound wrap-around), out-of-image points scoring 0 but counted, and the per-question mean computed as
  ``concatenate([in-range values, zeros]).mean()``. The original ran on numpy 1.x, whose float64 sum adds
  8192-element buffers sequentially, each summed pairwise; numpy 2 sums the whole array pairwise, which moves the
  last bit for large boxes. `_numpy1_sum` replays the numpy 1.x order with elementwise operations only, so the
  result does not depend on the installed numpy. A missing answer or a parse failure skips the question (counted in
  ``num_skipped``) -- "fixes" nothing, by design.
* ``strict`` fixes the original's bugs: points scale by the real image size, JPEG masks are binarised, an unparseable
  answer is a wrong answer (0), boxes are clipped (no wrap-around).
* ``micro``, ``strict_round`` and ``category_mean`` are ours; no published scorer is any of them. ``micro`` pools all
  predicted points of all questions (a point counts where ``mask > 0``; an unparseable answer adds no points),
  ``strict_round`` is ``strict`` with Python ``round()`` instead of floor, ``category_mean`` averages ``strict``'s
  per-question scores per category first, then the categories. The published scorers they resemble are reproduced
  bit-exactly in `robopoint_hf.evaluation.protocols`: Embodied-R1's micro average is ``embodied_r1``, RoboAfford-Eval's
  ``round()`` reading is ``roboafford_eval``; lmms-eval, RoboAfford-Eval and RoboRefer all average over questions.

Box expansion for the non-original protocols: corners are scaled like points, the box is the half-open pixel range
``[x0, x1) x [y0, y1)`` clipped to the image, every pixel counts as one point (as in the original).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from .points import Box, ParsedAnswer, Point, parse_points

Protocol = Literal["original", "strict", "micro", "strict_round", "category_mean"]
PROTOCOLS: tuple[str, ...] = ("original", "strict", "micro", "strict_round", "category_mean")
ORIGINAL_FRAME = (640, 480)
"""(width, height) the original scorer scales normalized coordinates by, whatever the image size."""

MaskLike = np.ndarray | Image.Image | str | os.PathLike
PredictionLike = str | ParsedAnswer | Sequence[Sequence[float]] | None

# numpy 1.x pairwise summation constants (numpy/core/src/umath/loops_utils.h.src) and its reduction buffer size.
_PAIRWISE_BLOCK = 128
_NUMPY1_BUFFER = 8192


@dataclass(frozen=True)
class Where2PlaceResult:
    """Scores of one set of answers.

    Args:
        accuracy (`float`): the protocol's headline number (a fraction in [0, 1]; NaN if nothing was scored).
        per_question (`list[float | None]`): per-question score; `None` = skipped (``original`` protocol only).
        per_category (`dict[str, float]`): mean score per category of the scored questions (empty without
            categories).
        num_questions (`int`): number of questions.
        num_parsed (`int`): answers read without a parse failure (empty answers included).
        num_failed (`int`): parse failures (unreadable text).
        num_empty (`int`): readable answers without any point or box.
        num_skipped (`int`): questions left out of the mean (``original``: parse failures and missing answers).
        num_missing (`int`): questions without an answer (`None` prediction).
    """

    accuracy: float
    per_question: list[float | None]
    per_category: dict[str, float] = field(default_factory=dict)
    num_questions: int = 0
    num_parsed: int = 0
    num_failed: int = 0
    num_empty: int = 0
    num_skipped: int = 0
    num_missing: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (floats, ints, lists, dicts) for JSON or `evaluate`."""
        return asdict(self)


@dataclass(frozen=True)
class Where2PlaceQuestion:
    """One question of a Where2Place-layout folder; `mask` is ``masks/{position:02d}.jpg``."""

    question_id: Any
    image: Path
    mask: Path
    text: str
    category: str | None = None


# --------------------------------------------------------------------------------------------------- exact sums


def _pairwise_sum(values: np.ndarray) -> float:
    """numpy's classic pairwise float64 sum (8 accumulators per block of <= 128, recursive halving above)."""
    n = values.size
    if n < 8:
        total = 0.0
        for v in values.tolist():
            total += v
        return total
    if n <= _PAIRWISE_BLOCK:
        k = n - n % 8
        lanes = values[:k].reshape(-1, 8)
        acc = lanes[0].copy()
        for row in lanes[1:]:
            acc += row
        a = acc.tolist()
        total = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
        for v in values[k:].tolist():
            total += v
        return total
    half = n // 2
    half -= half % 8
    return _pairwise_sum(values[:half]) + _pairwise_sum(values[half:])


def _full_buffer_sums(values: np.ndarray) -> list[float]:
    """Pairwise sums of consecutive 8192-element buffers, vectorised across buffers.

    An 8192 buffer splits evenly down to 64 blocks of 128, so every buffer has the same balanced tree: lane sums
    inside each block, the fixed 8-lane combination, then adjacent pairs level by level.
    """
    blocks = values.reshape(-1, _NUMPY1_BUFFER // _PAIRWISE_BLOCK, _PAIRWISE_BLOCK // 8, 8)
    acc = blocks[:, :, 0, :].copy()
    for i in range(1, blocks.shape[2]):
        acc += blocks[:, :, i, :]
    level = ((acc[..., 0] + acc[..., 1]) + (acc[..., 2] + acc[..., 3])) + (
        (acc[..., 4] + acc[..., 5]) + (acc[..., 6] + acc[..., 7])
    )
    while level.shape[1] > 1:
        level = level[:, 0::2] + level[:, 1::2]
    return level[:, 0].tolist()


def _numpy1_sum(values: np.ndarray) -> float:
    """Sum a 1-D float64 array in exactly the order numpy 1.x's ``np.add.reduce`` used (see module docstring)."""
    n_full = values.size - values.size % _NUMPY1_BUFFER
    total = 0.0
    if n_full:
        for s in _full_buffer_sums(values[:n_full]):
            total += s
    if values.size > n_full:
        total += _pairwise_sum(values[n_full:])
    return total


def _numpy1_mean(values: np.ndarray) -> float:
    return _numpy1_sum(values) / values.size if values.size else math.nan


# ------------------------------------------------------------------------------------------------------- masks


def load_mask(mask: MaskLike, *, name: str = "mask") -> np.ndarray:
    """Read a mask as a 2-D array, without rescaling (uint8 stays 0..255, bool and float stay as they are).

    Args:
        mask (`np.ndarray`, `PIL.Image.Image`, `str` or `os.PathLike`): the mask or its file.
        name (`str`, *optional*): how to name the mask in error messages (e.g. ``"question 7 (masks/07.jpg)"``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the mask is not single-channel. Where2Place masks are greyscale; an RGB mask is refused rather
            than guessed (the original crashes on it too). Convert it with ``Image.convert("L")`` if intended.
    """
    if isinstance(mask, (str, os.PathLike)):
        path = Path(mask)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: mask file {path} does not exist")
        with Image.open(path) as image:
            return load_mask(image, name=f"{name} ({path})")
    if isinstance(mask, Image.Image):
        if mask.mode not in ("L", "1", "I", "I;16", "F"):
            raise ValueError(f"{name}: mask has mode {mask.mode!r}, expected a single-channel image (mode 'L')")
        array = np.asarray(mask)
    else:
        array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name}: mask must be 2-D (height, width), got shape {array.shape}")
    return array


def _mask_scale(mask: np.ndarray) -> float:
    # Integer masks are 0..255 images (JPEG/PNG or lists of ints); bool and float masks are already 0..1.
    return 255.0 if np.issubdtype(mask.dtype, np.integer) else 1.0


def load_masks(references: Sequence[MaskLike], *, names: Sequence[str] | None = None) -> list[np.ndarray]:
    """`load_mask` for many masks, decoding files in parallel threads.

    JPEG decoding is the dominant cost of scoring (~0.5 ms per 640x480 mask, against ~0.04 ms to score an answer),
    so code that scores several answer files or protocols against one data set should call this once and pass the
    arrays to `score_where2place` (as `score_answer_files` does) instead of passing paths every time.

    Args:
        references (`Sequence`): masks or mask files.
        names (`Sequence[str]`, *optional*): how to name each mask in error messages; defaults to
            ``"reference <i>"``.
    """
    if names is None:
        names = [f"reference {i}" for i in range(len(references))]
    elif len(names) != len(references):
        raise ValueError(f"got {len(references)} masks but {len(names)} names")
    paths = [isinstance(r, (str, os.PathLike)) for r in references]
    if sum(paths) > 4 and (os.cpu_count() or 1) > 1:
        # PIL releases the GIL while decoding, so threads overlap the decoding of several files.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return list(pool.map(lambda rn: load_mask(rn[0], name=rn[1]), zip(references, names, strict=True)))
    return [load_mask(r, name=n) for r, n in zip(references, names, strict=True)]


# ---------------------------------------------------------------------------------------------------- geometry


def _to_answer(prediction: PredictionLike, parse_mode: str, index: int) -> ParsedAnswer | None:
    if prediction is None or isinstance(prediction, ParsedAnswer):
        return prediction
    if isinstance(prediction, str):
        return parse_points(prediction, mode=parse_mode)
    # Parsed points: [[x, y], ...] normalized points and/or [x0, y0, x1, y1] normalized boxes.
    items: list[Point | Box] = []
    for j, values in enumerate(prediction):
        values = [float(v) for v in values]
        if len(values) == 2:
            items.append(Point(values[0], values[1], True))
        elif len(values) == 4:
            items.append(Box(*values, normalized=True))
        else:
            raise ValueError(
                f"prediction {index}, item {j}: expected [x, y] or [x0, y0, x1, y1], got {len(values)} values"
            )
    points = [i for i in items if isinstance(i, Point)]
    boxes = [i for i in items if isinstance(i, Box)]
    return ParsedAnswer(points=points, boxes=boxes, text="", parse_failed=False, items=tuple(items))


def _scale(value: float, size: int, rounding: str) -> int:
    scaled = value * size
    if rounding == "truncate":
        return int(scaled)
    if rounding == "round":
        return int(round(scaled))
    return math.floor(scaled)


def _pixel_coords(answer: ParsedAnswer, frame: tuple[int, int], rounding: str, wrap_boxes: bool):
    """All points of an answer as integer pixel arrays (xs, ys), boxes expanded row-major, in text order."""
    width, height = frame
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    singles_x: list[int] = []
    singles_y: list[int] = []

    def flush() -> None:
        if singles_x:
            xs.append(np.array(singles_x, dtype=np.int64))
            ys.append(np.array(singles_y, dtype=np.int64))
            singles_x.clear()
            singles_y.clear()

    items = answer.items or (*answer.points, *answer.boxes)
    for item in items:
        if isinstance(item, Point):
            if item.normalized:
                singles_x.append(_scale(item.x, width, rounding))
                singles_y.append(_scale(item.y, height, rounding))
            else:
                singles_x.append(math.floor(item.x))
                singles_y.append(math.floor(item.y))
            continue
        flush()
        corners = (item.x0, item.y0, item.x1, item.y1)
        if item.normalized:
            x0, y0, x1, y1 = (
                _scale(v, s, rounding) for v, s in zip(corners, (width, height, width, height), strict=True)
            )
        else:
            x0, y0, x1, y1 = (math.floor(v) for v in corners)
        if wrap_boxes:  # numpy slice semantics on the (height, width) grid, as the original
            x_range = range(*slice(x0, x1).indices(width))
            y_range = range(*slice(y0, y1).indices(height))
        else:
            x_range = range(max(x0, 0), min(x1, width))
            y_range = range(max(y0, 0), min(y1, height))
        grid_y, grid_x = np.meshgrid(
            np.asarray(y_range, dtype=np.int64), np.asarray(x_range, dtype=np.int64), indexing="ij"
        )
        xs.append(grid_x.ravel())
        ys.append(grid_y.ravel())
    flush()
    if not xs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(xs), np.concatenate(ys)


def _lookup(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask values at the in-image points (in order) and the number of out-of-image points."""
    height, width = mask.shape
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return mask[ys[inside], xs[inside]], int(xs.size - np.count_nonzero(inside))


# ------------------------------------------------------------------------------------------------------ scoring


def score_where2place(
    predictions: Sequence[PredictionLike],
    references: Sequence[MaskLike],
    *,
    protocol: Protocol = "strict",
    image_sizes: Sequence[tuple[int, int] | None] | None = None,
    categories: Sequence[str | None] | None = None,
) -> Where2PlaceResult:
    """Score Where2Place answers against free-space masks.

    Args:
        predictions (`Sequence`): one per question: the model's text, a `ParsedAnswer`, a list of normalized
            ``[x, y]`` points / ``[x0, y0, x1, y1]`` boxes, or `None` for a missing answer.
        references (`Sequence`): one mask per question (numpy array, PIL image or file path). uint8/integer masks
            are 0..255, bool and float masks 0..1.
        protocol (`str`, *optional*, defaults to `"strict"`): one of `PROTOCOLS`; see the module docstring.
        image_sizes (`Sequence[tuple[int, int]]`, *optional*): ``(width, height)`` of each image. Checked against the
            mask size (a mask must have the image's resolution); ignored by ``original``, which always uses 640x480.
        categories (`Sequence[str]`, *optional*): category of each question (e.g. ``"seen"``/``"unseen"``); required
            by ``category_mean``.

    Returns:
        `Where2PlaceResult`

    Example:

    ```python
    >>> import numpy as np
    >>> mask = np.zeros((4, 4), dtype=np.uint8); mask[:, :2] = 255     # left half is free space
    >>> score_where2place(["[(0.1, 0.5), (0.9, 0.5)]"], [mask]).accuracy
    0.5
    ```
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    n = len(predictions)
    if len(references) != n:
        raise ValueError(f"got {n} predictions but {len(references)} references")
    for arg_name, arg in (("image_sizes", image_sizes), ("categories", categories)):
        if arg is not None and len(arg) != n:
            raise ValueError(f"got {n} predictions but {len(arg)} {arg_name}")
    if protocol == "category_mean" and (categories is None or any(c is None for c in categories)):
        raise ValueError("protocol 'category_mean' needs a category for every question (categories=...)")

    original = protocol == "original"
    parse_mode = "original" if original else "robust"
    rounding = {"original": "truncate", "strict_round": "round"}.get(protocol, "floor")
    masks = load_masks(references)

    per_question: list[float | None] = []
    num_parsed = num_failed = num_empty = num_skipped = num_missing = 0
    micro_hits = micro_points = 0
    for i, (prediction, mask) in enumerate(zip(predictions, masks, strict=True)):
        answer = _to_answer(prediction, parse_mode, i)
        if answer is None:
            num_missing += 1
        elif answer.parse_failed:
            num_failed += 1
        else:
            num_parsed += 1
            num_empty += answer.is_empty
        if answer is None or answer.parse_failed:
            if original:  # the original's bare `except` drops the question from the mean
                num_skipped += 1
                per_question.append(None)
            else:
                per_question.append(0.0)
            continue

        height, width = mask.shape
        if original:
            frame = ORIGINAL_FRAME
        else:
            frame = (width, height)
            size = image_sizes[i] if image_sizes is not None else None
            if size is not None and tuple(size) != frame:
                raise ValueError(f"question {i}: image size {tuple(size)} differs from mask size {frame} (w, h)")
        xs, ys = _pixel_coords(answer, frame, rounding, wrap_boxes=original)
        if xs.size == 0:
            per_question.append(0.0)
            continue
        values, num_outside = _lookup(mask, xs, ys)
        if original:
            soft = values / _mask_scale(mask)
            per_question.append(_numpy1_mean(np.concatenate([soft, np.zeros(num_outside)])))
            continue
        if protocol == "micro":
            hits = int(np.count_nonzero(values > 0))
        else:
            hits = int(np.count_nonzero(values >= 0.5 * _mask_scale(mask)))
        micro_hits += hits
        micro_points += xs.size
        per_question.append(hits / xs.size)

    scored = [s for s in per_question if s is not None]
    per_category: dict[str, float] = {}
    if categories is not None:
        buckets: dict[str, list[float]] = {}
        for score, category in zip(per_question, categories, strict=True):
            if score is not None and category is not None:
                buckets.setdefault(str(category), []).append(score)
        per_category = {c: _mean(v, exact_numpy1=original) for c, v in sorted(buckets.items())}

    if protocol == "micro":
        accuracy = micro_hits / micro_points if micro_points else 0.0
    elif protocol == "category_mean":
        accuracy = sum(per_category.values()) / len(per_category) if per_category else math.nan
    else:
        accuracy = _mean(scored, exact_numpy1=original)
    return Where2PlaceResult(
        accuracy=accuracy,
        per_question=per_question,
        per_category=per_category,
        num_questions=n,
        num_parsed=num_parsed,
        num_failed=num_failed,
        num_empty=num_empty,
        num_skipped=num_skipped,
        num_missing=num_missing,
    )


def _mean(values: Sequence[float], *, exact_numpy1: bool) -> float:
    if not values:
        return math.nan
    if exact_numpy1:  # the original prints np.mean(list of per-question floats)
        return _numpy1_mean(np.asarray(values, dtype=np.float64))
    return math.fsum(values) / len(values)


# ------------------------------------------------------------------------------------------------- data files


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    records = []
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {line_number}: invalid JSON ({e.msg})") from e
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def load_questions(
    data_dir: str | os.PathLike, question_file: str = "point_questions.jsonl", *, check_files: bool = True
) -> list[Where2PlaceQuestion]:
    """Read a Where2Place-layout folder: ``point_questions.jsonl``, ``images/``, ``masks/NN.jpg`` by position.

    Raises:
        FileNotFoundError: the question file, an image or a mask is missing (named with the question id).
        ValueError: a record lacks ``question_id``, ``image`` or ``text``.
    """
    root = Path(data_dir)
    questions = []
    for position, record in enumerate(_read_jsonl(root / question_file)):
        for key in ("question_id", "image", "text"):
            if key not in record:
                raise ValueError(f"{root / question_file}, record {position}: missing field {key!r}")
        question = Where2PlaceQuestion(
            question_id=record["question_id"],
            image=root / "images" / record["image"],
            mask=root / "masks" / f"{position:02d}.jpg",
            text=record["text"],
            category=record.get("category"),
        )
        if check_files:
            for kind, path in (("image", question.image), ("mask", question.mask)):
                if not path.is_file():
                    raise FileNotFoundError(
                        f"question {question.question_id!r} (line {position + 1}): {kind} {path} is missing"
                    )
        questions.append(question)
    return questions


def load_answers(answer_file: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``model_vqa.py``-style answer file (``question_id, prompt, text, answer_id, model_id, category``)."""
    path = Path(answer_file)
    records = _read_jsonl(path)
    for line, record in enumerate(records, start=1):
        if "text" not in record:
            raise ValueError(f"{path}, record {line}: missing field 'text'")
    return records


def align_answers(
    questions: Sequence[Where2PlaceQuestion], answers: Sequence[dict[str, Any]], *, protocol: Protocol
) -> list[str | None]:
    """Answer text for each question.

    ``original`` replicates the original: answers are matched by LINE POSITION, a shorter answer file leaves the
    last questions without answer (they are skipped), extra answers are ignored. Every other protocol matches by
    ``question_id`` and refuses files whose ids differ from the questions' (missing, extra or duplicated ids).
    """
    if protocol == "original":
        return [answers[i]["text"] if i < len(answers) else None for i in range(len(questions))]
    by_id: dict[Any, str] = {}
    for line, answer in enumerate(answers, start=1):
        qid = answer.get("question_id")
        if qid in by_id:
            raise ValueError(f"answer line {line}: duplicate question_id {qid!r}")
        by_id[qid] = answer["text"]
    question_ids = [q.question_id for q in questions]
    missing = [qid for qid in question_ids if qid not in by_id]
    extra = sorted(set(by_id) - set(question_ids), key=str)
    if missing or extra or len(answers) != len(questions):
        raise ValueError(
            f"answers do not match questions: {len(answers)} answers for {len(questions)} questions; "
            f"missing question_ids {missing[:10]}, unknown question_ids {extra[:10]}"
        )
    return [by_id[qid] for qid in question_ids]


def score_answer_file(
    answer_file: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    protocol: Protocol = "strict",
    question_file: str = "point_questions.jsonl",
) -> Where2PlaceResult:
    """Score a ``model_vqa.py`` answer file against a Where2Place-layout folder (categories from the questions)."""
    return score_answer_files([answer_file], data_dir, protocols=[protocol], question_file=question_file)[0][protocol]


def score_answer_files(
    answer_files: Sequence[str | os.PathLike],
    data_dir: str | os.PathLike,
    *,
    protocols: Sequence[Protocol] = ("strict", "original"),
    question_file: str = "point_questions.jsonl",
    questions: Sequence[Where2PlaceQuestion] | None = None,
) -> list[dict[str, Where2PlaceResult]]:
    """Score several answer files under several protocols, decoding the data set's masks only once.

    Comparing models is the usual evaluation (several answer files, ``strict`` and ``original``); the original
    scorer re-reads every mask for each file. All files are read and aligned before any mask is decoded, so a bad
    file fails fast.

    Args:
        answer_files (`Sequence[str | os.PathLike]`): ``model_vqa.py``-style answer files.
        data_dir (`str` or `os.PathLike`): the Where2Place-layout folder (``images/``, ``masks/``, question file).
        protocols (`Sequence[str]`, *optional*, defaults to `("strict", "original")`): protocols of `PROTOCOLS`.
        question_file (`str`, *optional*, defaults to `"point_questions.jsonl"`): question file inside ``data_dir``.
        questions (`Sequence[Where2PlaceQuestion]`, *optional*): already loaded questions (skips re-reading them).

    Returns:
        `list[dict[str, Where2PlaceResult]]`: for each answer file, ``{protocol: result}``.
    """
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if questions is None:
        questions = load_questions(data_dir, question_file)
    aligned = []
    for answer_file in answer_files:
        answers = load_answers(answer_file)
        try:
            aligned.append({p: align_answers(questions, answers, protocol=p) for p in protocols})
        except ValueError as e:
            raise ValueError(f"{answer_file}: {e}") from e
    masks = load_masks([q.mask for q in questions], names=[f"question {q.question_id!r}" for q in questions])
    categories = [q.category for q in questions]
    has_categories = all(c is not None for c in categories)
    return [
        {
            p: score_where2place(texts[p], masks, protocol=p, categories=categories if has_categories else None)
            for p in protocols
        }
        for texts in aligned
    ]


__all__ = [
    "ORIGINAL_FRAME",
    "PROTOCOLS",
    "Where2PlaceQuestion",
    "Where2PlaceResult",
    "align_answers",
    "load_answers",
    "load_mask",
    "load_masks",
    "load_questions",
    "score_answer_file",
    "score_answer_files",
    "score_where2place",
]
