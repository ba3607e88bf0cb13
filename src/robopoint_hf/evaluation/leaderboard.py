"""Score answer files on any benchmark layout under any protocol, and tabulate models x benchmarks x protocols.

`score_records` is the one entry point that joins the pieces: benchmark records (`robopoint_hf.evaluation.benchmarks`), answers
in a model's own format (`robopoint_hf.evaluation.answer_formats`), and a protocol -- RoboPoint's family
(`robopoint_hf.evaluation.where2place.PROTOCOLS`) or a published harness's scorer (`robopoint_hf.evaluation.protocols`).

The leaderboard reports, per model x benchmark x protocol, the overall score and one row per category, each with a
95 % **percentile bootstrap** interval over questions (seeded, questions resampled with replacement, the protocol's
own aggregation recomputed on every resample). The RoboPoint paper reports ± the standard deviation over repeated
sampled runs instead; that measures decoding noise, the bootstrap measures how much the score depends on which
questions the benchmark happened to contain. (``micro`` of `robopoint_hf.evaluation.where2place` keeps no point counts per
question, so its interval resamples questions weighted equally.)
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .answer_formats import parse_answer
from .benchmarks import BenchmarkRecord
from .protocols import PUBLISHED_PROTOCOLS, ProtocolResult, score_published
from .where2place import PROTOCOLS, Where2PlaceResult, score_where2place

ALL_PROTOCOLS: tuple[str, ...] = (*PROTOCOLS, *PUBLISHED_PROTOCOLS)
Result = Where2PlaceResult | ProtocolResult


def mask_array(mask: Path | Image.Image | np.ndarray | None, *, name: str = "mask") -> np.ndarray | None:
    """A mask as the RoboPoint-family protocols read it: 2-D, channel 0 of a colour mask (values kept)."""
    if mask is None:
        return None
    if isinstance(mask, (str, os.PathLike)):
        if not Path(mask).is_file():
            raise FileNotFoundError(f"{name}: mask file {mask} does not exist")
        with Image.open(mask) as image:
            values = np.asarray(image)
    else:
        values = np.asarray(mask)
    return values[:, :, 0] if values.ndim == 3 else values


def align_answers(records: Sequence[BenchmarkRecord], answers: Sequence[dict[str, Any]], *, by_position: bool):
    """Answer text per record: by ``question_id`` (missing ones `None`, unknown ids refused), or by line position
    (the original RoboPoint scorer's rule)."""
    if by_position:
        return [answers[i]["text"] if i < len(answers) else None for i in range(len(records))]
    key = lambda qid: json.dumps(qid, sort_keys=True)  # noqa: E731 -- 1 and "1" stay apart
    by_id = {}
    for line, answer in enumerate(answers, start=1):
        qid = key(answer.get("question_id"))
        if qid in by_id:
            raise ValueError(f"answer line {line}: duplicate question_id {answer.get('question_id')!r}")
        by_id[qid] = answer["text"]
    known = {key(r.question_id) for r in records}
    unknown = [k for k in by_id if k not in known]
    if unknown:
        raise ValueError(f"answers to question_ids not in the benchmark: {unknown[:10]}")
    return [by_id.get(key(r.question_id)) for r in records]


def score_records(
    records: Sequence[BenchmarkRecord],
    texts: Sequence[str | None],
    protocol: str,
    *,
    answer_format: str = "robopoint",
    masks: Sequence[np.ndarray | None] | None = None,
) -> Result:
    """Score answer texts of one model on benchmark records under one protocol.

    RoboPoint-family protocols read the answers through the ``answer_format`` adapter (``robopoint`` keeps the
    raw text, so ``original`` applies its own grammar); published protocols read the raw text with their own parser.

    Args:
        masks (`Sequence[np.ndarray]`, *optional*): `mask_array` of every record, to decode masks once for many
            models and protocols.
    """
    if protocol in PUBLISHED_PROTOCOLS:
        return score_published(
            protocol,
            texts,
            [r.mask for r in records],
            benchmark=records[0].benchmark if records else "where2place",
            answer_format=answer_format,
            categories=[r.category for r in records],
            counts=[r.extra.get("count") for r in records],
        )
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(ALL_PROTOCOLS)}, got {protocol!r}")
    if masks is None:
        masks = [mask_array(r.mask, name=f"question {r.question_id!r}") for r in records]
    missing = [r.question_id for r, m in zip(records, masks, strict=True) if m is None]
    if missing:
        raise ValueError(f"protocol {protocol!r} needs a mask for every question; none for {missing[:10]}")
    predictions: list = list(texts)
    if answer_format not in ("robopoint", "roborefer"):
        predictions = [
            None if t is None else parse_answer(t, answer_format, image_size=(m.shape[1], m.shape[0]))
            for t, m in zip(texts, masks, strict=True)
        ]
    categories = [r.category for r in records]
    has_categories = all(c is not None for c in categories)
    return score_where2place(predictions, masks, protocol=protocol, categories=categories if has_categories else None)


# ------------------------------------------------------------------------------------------------ bootstrap


def _aggregate(result: Result, protocol: str, index: np.ndarray, categories: np.ndarray | None) -> float:
    scores = np.array([math.nan if s is None else s for s in result.per_question], dtype=np.float64)[index]
    weights = getattr(result, "weights", None)
    if weights is not None:  # micro average (embodied_r1)
        w = np.asarray(weights, dtype=np.float64)[index]
        return float(np.sum(scores * w) / np.sum(w)) if np.sum(w) else 0.0
    if protocol == "category_mean" and categories is not None:
        cats = categories[index]
        means = [np.nanmean(scores[cats == c]) for c in np.unique(cats) if np.any(~np.isnan(scores[cats == c]))]
        return float(np.mean(means)) if means else math.nan
    kept = scores[~np.isnan(scores)]
    return float(kept.mean()) if kept.size else math.nan


def bootstrap_interval(
    result: Result,
    protocol: str,
    *,
    subset: Sequence[int] | None = None,
    categories: Sequence[str | None] | None = None,
    num_samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a protocol's score, resampling questions (of ``subset``) with replacement."""
    pool = np.arange(len(result.per_question)) if subset is None else np.asarray(subset, dtype=np.int64)
    if pool.size == 0 or num_samples < 1:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    cats = np.asarray([str(c) for c in categories]) if categories is not None else None
    values = np.array(
        [_aggregate(result, protocol, rng.choice(pool, size=pool.size), cats) for _ in range(num_samples)]
    )
    values = values[~np.isnan(values)]
    if not values.size:
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


# ----------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class LeaderboardRow:
    """One line of the leaderboard (``category`` is ``"all"`` for the overall score)."""

    model: str
    benchmark: str
    protocol: str
    category: str
    score: float
    ci_low: float
    ci_high: float
    num_questions: int


def leaderboard_rows(
    model: str,
    benchmark: str,
    protocol: str,
    result: Result,
    categories: Sequence[str | None],
    *,
    num_samples: int = 1000,
    seed: int = 0,
) -> list[LeaderboardRow]:
    """The overall row and one row per category for one model x benchmark x protocol.

    Args:
        categories (`Sequence[str | None]`): each question's category, in the order of ``result.per_question``.
    """
    if len(categories) != len(result.per_question):
        raise ValueError(f"got {len(result.per_question)} scored questions but {len(categories)} categories")
    rows = [
        LeaderboardRow(
            model,
            benchmark,
            protocol,
            "all",
            result.accuracy,
            *bootstrap_interval(result, protocol, categories=categories, num_samples=num_samples, seed=seed),
            len(categories),
        )
    ]
    for category in sorted({c for c in categories if c is not None}):
        subset = [i for i, c in enumerate(categories) if c == category]
        kept = [result.per_question[i] for i in subset if result.per_question[i] is not None]
        weights = getattr(result, "weights", None)
        if weights is not None:
            total = sum(weights[i] for i in subset)
            score = sum(result.per_question[i] * weights[i] for i in subset) / total if total else 0.0
        else:
            score = math.fsum(kept) / len(kept) if kept else math.nan
        low, high = bootstrap_interval(
            result,
            "strict" if protocol == "category_mean" else protocol,
            subset=subset,
            num_samples=num_samples,
            seed=seed,
        )
        rows.append(LeaderboardRow(model, benchmark, protocol, category, score, low, high, len(subset)))
    return rows


def _percent(value: float) -> str:
    return "nan" if math.isnan(value) else f"{100 * value:.2f}"


def format_markdown(rows: Sequence[LeaderboardRow]) -> str:
    """The leaderboard as a Markdown table (scores in %, 95 % bootstrap interval in brackets)."""
    lines = [
        "| model | benchmark | protocol | category | n | score (%) | 95% CI (bootstrap) |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.benchmark} | {r.protocol} | {r.category} | {r.num_questions} | {_percent(r.score)} "
            f"| [{_percent(r.ci_low)}, {_percent(r.ci_high)}] |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- score files


def question_fields(records: Sequence[BenchmarkRecord]) -> dict[str, Any]:
    """What a score file (``eval score --json``) keeps of the questions, so that `read_score_file` can rebuild
    per-category rows and their intervals without the benchmark folder."""
    return {
        "benchmark": records[0].benchmark if records else None,
        "question_ids": [r.question_id for r in records],
        "categories": [r.category for r in records],
    }


def result_from_dict(data: dict[str, Any]) -> Result:
    """The `ProtocolResult` or `Where2PlaceResult` whose ``to_dict()`` is ``data`` (unknown keys are refused)."""
    kind = ProtocolResult if "protocol" in data else Where2PlaceResult
    names = set(kind.__dataclass_fields__)
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown result fields {unknown}")
    return kind(**data)


@dataclass(frozen=True)
class ScoredRun:
    """One model x benchmark x protocol of a score file: its result and each question's category."""

    model: str
    benchmark: str
    protocol: str
    result: Result
    categories: list[str | None]
    source: str


def read_score_file(path: str | os.PathLike) -> list[ScoredRun]:
    """Every model x protocol a score file written by ``robopoint eval score --json`` holds.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not such a score file; the message starts with the file and names the model and
            protocol at fault.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a JSON score file ({e})") from e
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected the object `robopoint eval score --json` writes, {{model: scores}}")
    runs = []
    for model, entry in data.items():
        where = f"{path}: model {model!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object of scores, got {type(entry).__name__}")
        if "categories" not in entry or not entry.get("benchmark"):
            raise ValueError(
                f"{where}: no benchmark and per-question categories; rewrite it with `robopoint eval score --json`"
            )
        protocols = [name for name in entry if name in ALL_PROTOCOLS]
        if not protocols:
            raise ValueError(f"{where}: no scores under any protocol ({', '.join(ALL_PROTOCOLS)})")
        for protocol in protocols:
            try:
                result = result_from_dict(entry[protocol])
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}, protocol {protocol!r}: {e}") from e
            if len(entry["categories"]) != len(result.per_question):
                raise ValueError(
                    f"{where}, protocol {protocol!r}: {len(result.per_question)} scored questions but "
                    f"{len(entry['categories'])} categories"
                )
            runs.append(ScoredRun(model, entry["benchmark"], protocol, result, entry["categories"], str(path)))
    return runs


def leaderboard_from_score_files(
    paths: Sequence[str | os.PathLike], *, num_samples: int = 1000, seed: int = 0
) -> list[LeaderboardRow]:
    """The leaderboard of several score files: rows ordered by benchmark, protocol, then score (best first).

    One model x benchmark x protocol may appear in one file only; a second one is refused, naming both files.
    """
    seen: dict[tuple[str, str, str], str] = {}
    runs = []
    for path in paths:
        for run in read_score_file(path):
            key = (run.model, run.benchmark, run.protocol)
            if key in seen:
                raise ValueError(
                    f"{path}: model {run.model!r} on {run.benchmark} under {run.protocol} is also in {seen[key]}"
                )
            seen[key] = run.source
            runs.append(run)
    runs.sort(key=lambda r: (r.benchmark, ALL_PROTOCOLS.index(r.protocol), -_sortable(r.result.accuracy), r.model))
    rows = []
    for run in runs:
        rows += leaderboard_rows(
            run.model, run.benchmark, run.protocol, run.result, run.categories, num_samples=num_samples, seed=seed
        )
    return rows


def _sortable(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def write_leaderboard(rows: Sequence[LeaderboardRow], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv`` and ``leaderboard.json`` (fractions, not %) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = list(LeaderboardRow.__dataclass_fields__)
    (out / "leaderboard.md").write_text(format_markdown(rows), encoding="utf-8")
    with (out / "leaderboard.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        writer.writerows([[getattr(r, k) for k in fields] for r in rows])
    payload = {"interval": "95% percentile bootstrap over questions", "rows": [r.__dict__ for r in rows]}
    (out / "leaderboard.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return [out / "leaderboard.md", out / "leaderboard.csv", out / "leaderboard.json"]


__all__ = [
    "ALL_PROTOCOLS",
    "LeaderboardRow",
    "ScoredRun",
    "align_answers",
    "bootstrap_interval",
    "format_markdown",
    "leaderboard_from_score_files",
    "leaderboard_rows",
    "mask_array",
    "question_fields",
    "read_score_file",
    "result_from_dict",
    "score_records",
    "write_leaderboard",
]
