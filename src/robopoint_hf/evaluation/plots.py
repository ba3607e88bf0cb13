"""Pictures of a benchmark evaluation: one PNG per question with every model's points, and a summary bar chart.

Like the original ``visualize_vqa.py`` (image, ground-truth mask overlaid in ``Set1`` colour 0 with alpha =
mask x 0.6, model ``i`` in ``Set1`` colour ``i + 1``, points as a dot inside a ring, boxes as rectangles, legend
with each model's score), with its flaws fixed:

* a model whose answer cannot be read keeps its colour and its legend entry (the original dropped the entry, so the
  colours of all later models shifted and the legend lied);
* points are placed with the REAL image size (the original assumed 640x480);
* files are named by question position and image name, so several questions about one image do not overwrite
  each other (the original used the image name alone).

Uses matplotlib's object API with the Agg canvas only -- no ``pyplot``, no global backend switch, no windows --
so it is safe on servers and inside other programs that use matplotlib.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from robopoint_hf.model.templates import IMAGE_PLACEHOLDER

from .answer_formats import parse_answer
from .where2place import Where2PlaceQuestion, Where2PlaceResult

FIGURE_SIZE = (10.2, 6.6)
"""Inches, as the original."""
_RING_RADIUS = 10  # pixels of the image, as the original's hollow circle
_DOT_RADIUS = 3


def _colors(count: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    set1 = colormaps["Set1"]
    return [set1(i % set1.N) for i in range(count)]


def question_title(text: str) -> str:
    """The question without its answer-format sentence (and without the ``<image>`` line), as the original."""
    if IMAGE_PLACEHOLDER in text and "\n" in text:
        text = text.split("\n", 1)[1]
    return text.split("Your answer should", 1)[0].strip()


def plot_question(
    image: Image.Image,
    mask: np.ndarray | None,
    answers: Sequence[tuple[str, str | None, float | None]],
    *,
    title: str = "",
    score_name: str = "accuracy",
    answer_format: str = "robopoint",
):
    """A figure of one question: image, mask overlay and each model's points in that model's colour.

    Args:
        image (`PIL.Image.Image`): the question's image.
        mask (`np.ndarray`, *optional*): its free-space mask (uint8 0..255 or 0..1 floats).
        answers (`Sequence[tuple[str, str | None, float | None]]`): ``(label, answer text, score)`` per model, in
            colour order; a `None` text is a missing answer, a `None` score a question the protocol skipped.
        title (`str`, *optional*): the figure title.
        score_name (`str`, *optional*): how the legend names the score (the protocol).
        answer_format (`str`, *optional*): how the answers write points (see `robopoint_hf.evaluation.answer_formats`).

    Returns:
        `matplotlib.figure.Figure` (Agg canvas attached; ``fig.savefig`` works without pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, Patch, Rectangle

    figure = Figure(figsize=FIGURE_SIZE)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.005, 0.01, 0.825, 0.945))
    axes.set_axis_off()
    rgb = image.convert("RGB")
    width, height = rgb.size
    axes.imshow(rgb)
    colors = _colors(len(answers) + 1)
    handles = []
    if mask is not None:
        values = mask.astype(np.float64) / (255.0 if np.issubdtype(mask.dtype, np.integer) else 1.0)
        overlay = np.zeros((*values.shape, 4))
        overlay[..., :3] = colors[0][:3]
        overlay[..., 3] = values * 0.6
        axes.imshow(overlay, extent=(-0.5, values.shape[1] - 0.5, values.shape[0] - 0.5, -0.5))
        handles.append(Patch(color=colors[0], alpha=0.6, label="Ground Truth"))
    for index, (label, text, score) in enumerate(answers):
        color = colors[index + 1]
        parsed = parse_answer(text, answer_format, image_size=(width, height)) if text is not None else None
        for point in parsed.points if parsed else ():
            x, y = (point.x * width, point.y * height) if point.normalized else (point.x, point.y)
            axes.add_patch(Circle((x, y), _DOT_RADIUS, color=color))
            axes.add_patch(Circle((x, y), _RING_RADIUS, fill=False, edgecolor=color, linewidth=1.5))
        for box in parsed.boxes if parsed else ():
            scale = (width, height) if box.normalized else (1, 1)
            x0, x1 = sorted((box.x0 * scale[0], box.x1 * scale[0]))
            y0, y1 = sorted((box.y0 * scale[1], box.y1 * scale[1]))
            axes.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=2))
        if text is None:
            status = "no answer"
        elif parsed.parse_failed:
            status = "unreadable answer"
        elif parsed.is_empty:
            status = "no points"
        else:
            status = f"{len(parsed.points)} points" + (f", {len(parsed.boxes)} boxes" if parsed.boxes else "")
        shown = "skipped" if score is None or (isinstance(score, float) and math.isnan(score)) else f"{score:.2f}"
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markersize=8,
                color=color,
                label=f"{label}\n{score_name}: {shown} ({status})",
            )
        )
    axes.set_xlim(-0.5, width - 0.5)
    axes.set_ylim(height - 0.5, -0.5)
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=9, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10, wrap=True)
    return figure


def _file_name(position: int, question) -> str:
    name = question.image_name if hasattr(question, "image_name") else Path(question.image).name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(name)).stem)
    return f"{position:03d}_{stem}.png"


def _image_and_mask(question) -> tuple[Image.Image, np.ndarray | None]:
    """The question's image and its mask (channel 0 of a colour mask), from files or decoded records."""
    from .leaderboard import mask_array

    if isinstance(question.image, Image.Image):
        image = question.image
    else:
        with Image.open(question.image) as opened:
            opened.load()
            image = opened
    mask = question.mask
    if isinstance(mask, (str, os.PathLike)) and not Path(mask).is_file():
        mask = None
    return image, mask_array(mask, name=f"question {question.question_id!r}")


def save_question_plots(
    questions: Sequence[Where2PlaceQuestion],
    labels: Sequence[str],
    texts: Sequence[Sequence[str | None]],
    results: Sequence[Where2PlaceResult],
    out_dir: str | os.PathLike,
    *,
    score_name: str = "accuracy",
    dpi: int = 80,
    answer_format: str = "robopoint",
) -> list[Path]:
    """One PNG per question (``<position>_<image stem>.png``) comparing every model's answer.

    Args:
        questions (`Sequence`): the benchmark's questions (`Where2PlaceQuestion` or
            `robopoint_hf.evaluation.benchmarks.BenchmarkRecord` of any benchmark).
        labels (`Sequence[str]`): model labels, one per answer set.
        texts (`Sequence[Sequence[str | None]]`): per model, the answer text of each question (aligned).
        results (`Sequence[Where2PlaceResult]`): per model, its scores under the protocol named ``score_name``.
        out_dir (`str` or `os.PathLike`): created if needed.
    """
    if not len(labels) == len(texts) == len(results):
        raise ValueError(f"got {len(labels)} labels, {len(texts)} answer sets and {len(results)} results")
    for label, model_texts, result in zip(labels, texts, results, strict=True):
        if len(model_texts) != len(questions) or len(result.per_question) != len(questions):
            raise ValueError(f"{label}: answers or scores do not cover the {len(questions)} questions")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for position, question in enumerate(questions):
        image, mask = _image_and_mask(question)
        answers = [
            (label, model_texts[position], result.per_question[position])
            for label, model_texts, result in zip(labels, texts, results, strict=True)
        ]
        figure = plot_question(
            image,
            mask,
            answers,
            title=question_title(question.text),
            score_name=score_name,
            answer_format=answer_format,
        )
        path = out / _file_name(position, question)
        figure.savefig(path, dpi=dpi)
        written.append(path)
    return written


def save_summary_chart(
    labels: Sequence[str],
    results: Sequence[dict[str, Where2PlaceResult]],
    protocols: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "Where2Place accuracy",
) -> Path:
    """Grouped bar chart: one group per protocol, one bar per model (accuracy in %), values printed on the bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(5.0, 1.6 + 1.1 * len(protocols) * max(1, len(labels)) ** 0.7), 4.2))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colors = _colors(len(labels) + 1)[1:]  # the models' colours in the per-question plots
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(protocols))
    for index, (label, by_protocol) in enumerate(zip(labels, results, strict=True)):
        values = [100 * by_protocol[p].accuracy for p in protocols]
        bars = axes.bar(x + (index - (len(labels) - 1) / 2) * width, values, width, label=label, color=colors[index])
        axes.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    axes.set_xticks(x, protocols)
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title(title)
    axes.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


__all__ = ["FIGURE_SIZE", "plot_question", "question_title", "save_question_plots", "save_summary_chart"]
