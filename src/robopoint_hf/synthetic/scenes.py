"""Procedural tabletop scenes with RoboPoint-style pointing questions, for training and testing without downloads.

RoboPoint's own data comes from photo-realistic 3D scenes; a CPU-only project needs something a few-million-
parameter model can learn in an hour. So scenes here are small (160x120 by default, the 4:3 shape of
Where2Place) and made of strong, simple cues: a wall and a table of muted colours under a soft light
gradient, and 2-5 objects of saturated colours drawn as clean shapes (mug, box, plate, ball, bottle). No two
objects overlap and no two share both colour and kind, so every object can be named unambiguously.

Each question belongs to a family (the ``category`` of the evaluation split):

* ``object_attribute`` -- "Point to the blue mug."
* ``object_relation`` -- the object just left/right of, in front of (lower), behind (upper), between two
  others, or nearest to an anchor object; only asked when the answer is unique.
* ``object_highlight`` -- the object inside a red rectangle drawn on the image (RoboPoint's visual prompt).
* ``free_space_relation`` -- vacant table area left/right of, in front of or behind an object.
* ``free_space_between`` -- vacant table area between two objects.
* ``free_space_surface`` -- vacant area on a part of the table (left/right side, front, back, middle).

The ground-truth region is a pixel mask (an object's instance mask, or a free-space rectangle on the table minus
every object grown by a margin). Answers are 3-8 pixel centres sampled inside the region (eroded by one pixel
when possible, so JPEG-blurred mask edges do not matter), normalized by the image size and formatted exactly like
RoboPoint's training answers (or, with ``SynthConfig(answer="centre")``, one point at the region's centre, a
curriculum step for small models). Everything is drawn from ``numpy.random.default_rng((seed, split, index))``, so a
scene does not depend on the others and the output is byte-identical for a given seed, whatever the number of
worker processes.

Output of [`generate_dataset`] (``robopoint synth``)::

    OUT/train.json                  RoboPoint training list (data.write_robopoint_records); image paths relative to OUT
    OUT/images/000000.jpg ...       training images (one per scene; highlighted variants get a suffix)
    OUT/eval/point_questions.jsonl  Where2Place layout: question_id, image, text, category (= family)
    OUT/eval/images/NN.jpg          evaluation images
    OUT/eval/masks/NN.jpg           greyscale ground-truth masks (0/255) named by line position
    OUT/synth_info.json             parameters and per-family counts
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from robopoint_hf.model.points import add_answer_format
from robopoint_hf.training.data import make_pointing_record, write_robopoint_records

__all__ = [
    "ANSWER_KINDS",
    "FAMILIES",
    "Question",
    "Scene",
    "SceneObject",
    "SynthConfig",
    "SynthSummary",
    "centre_point",
    "generate_dataset",
    "generate_sample",
    "make_question",
    "render_scene",
    "sample_points",
]

KINDS = ("mug", "box", "plate", "ball", "bottle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "green": (40, 165, 65),
    "blue": (35, 80, 210),
    "yellow": (240, 205, 40),
    "orange": (245, 135, 30),
    "purple": (135, 60, 175),
    "white": (245, 245, 240),
    "black": (30, 30, 30),
}
# Muted surfaces so that saturated objects always stand out.
_WALLS = ((200, 196, 188), (170, 180, 190), (215, 205, 180), (150, 150, 155), (190, 175, 165))
_TABLES = ((150, 110, 75), (120, 90, 60), (165, 160, 150), (110, 115, 120), (185, 165, 130), (95, 80, 70))
_HIGHLIGHT = (255, 0, 0)

FAMILIES = (
    "object_attribute",
    "object_relation",
    "object_highlight",
    "free_space_relation",
    "free_space_between",
    "free_space_surface",
)
ANSWER_KINDS = ("points", "centre")
_DEFAULT_WEIGHTS = (0.2, 0.2, 0.1, 0.25, 0.1, 0.15)

_OBJECT_TEMPLATES = (
    "Point to {target}.",
    "Locate several points on {target}.",
    "Find a few spots on {target}.",
    "Identify some points on {target}.",
    "Pick a few points that lie on {target}.",
)
_FREE_TEMPLATES = (
    "Find a few spots within the vacant area {where}.",
    "Point to the empty space {where}.",
    "Identify several places in the unoccupied space {where}.",
    "Locate some free spots {where}.",
    "Mark a few points in the free area {where}.",
)
_RELATION_TARGETS = {
    "left": ("the object just to the left of {a}", "the item immediately left of {a}"),
    "right": ("the object just to the right of {a}", "the item immediately right of {a}"),
    # No "right in front of": "right" must only ever mean the direction.
    "front": ("the object directly in front of {a}", "the item just in front of {a}"),
    "behind": ("the object just behind {a}", "the item directly behind {a}"),
    "between": ("the object between {a} and {b}", "the item located between {a} and {b}"),
    "nearest": ("the object closest to {a}", "the item nearest to {a}"),
}
_HIGHLIGHT_TARGETS = (
    "the object inside the red box",
    "the item marked with the red rectangle",
    "the highlighted object",
)
_FREE_RELATIONS = {
    "left": ("to the left of {a}", "on the left side of {a}"),
    "right": ("to the right of {a}", "on the right side of {a}"),
    "front": ("in front of {a}", "below {a} in the image"),
    "behind": ("behind {a}", "above {a} in the image"),
}
_SURFACE_PARTS = {
    "left": ("on the left side of the table", "on the left part of the table"),
    "right": ("on the right side of the table", "on the right part of the table"),
    "front": ("at the front of the table", "on the near part of the table"),
    "back": ("at the back of the table", "on the far part of the table"),
    "middle": ("in the middle of the table", "around the center of the table"),
}


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the generator.

    Args:
        width (`int`, *optional*, defaults to `160`): image width in pixels (at most 1000, so that 3-decimal
            answers still land in their pixel).
        height (`int`, *optional*, defaults to `120`): image height in pixels (at most 1000).
        min_objects (`int`, *optional*, defaults to `2`): fewest objects per scene.
        max_objects (`int`, *optional*, defaults to `5`): most objects per scene.
        answer (`str`, *optional*, defaults to `"points"`): ``"points"`` answers with ``min_points``-``max_points``
            points sampled inside the region, like RoboPoint's data; ``"centre"`` answers with ONE point, the region
            pixel nearest its centroid. A tiny model learns *where* an object is far sooner from one point that is
            a function of the image than from several random ones, whose digits are mostly noise (the first two
            stages of the tiny model's training use it).
        min_points (`int`, *optional*, defaults to `3`): fewest answer points.
        max_points (`int`, *optional*, defaults to `8`): most answer points.
        questions_per_scene (`int`, *optional*, defaults to `1`): training records per scene (distinct questions
            sharing the image).
        jpeg_quality (`int`, *optional*, defaults to `90`): JPEG quality of the images.
        family_weights (`tuple[float, ...]`, *optional*): sampling weight per family, in the order of `FAMILIES`.
    """

    width: int = 160
    height: int = 120
    min_objects: int = 2
    max_objects: int = 5
    answer: str = "points"
    min_points: int = 3
    max_points: int = 8
    questions_per_scene: int = 1
    jpeg_quality: int = 90
    family_weights: tuple[float, ...] = _DEFAULT_WEIGHTS

    def __post_init__(self) -> None:
        if not (32 <= self.width <= 1000 and 32 <= self.height <= 1000):
            raise ValueError(f"image size must be within 32..1000 pixels per side, got {self.width}x{self.height}")
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= 8, got {self.min_objects}, {self.max_objects}")
        if self.answer not in ANSWER_KINDS:
            raise ValueError(f"answer must be one of {ANSWER_KINDS}, got {self.answer!r}")
        if not 1 <= self.min_points <= self.max_points:
            raise ValueError(f"need 1 <= min_points <= max_points, got {self.min_points}, {self.max_points}")
        if self.questions_per_scene < 1:
            raise ValueError(f"questions_per_scene must be >= 1, got {self.questions_per_scene}")
        if len(self.family_weights) != len(FAMILIES) or min(self.family_weights) < 0 or sum(self.family_weights) <= 0:
            raise ValueError(
                f"family_weights must be {len(FAMILIES)} non-negative numbers (for {FAMILIES}), got {self.family_weights}"
            )

    @property
    def scale(self) -> float:
        """Object and margin sizes are tuned at 160x120 and scaled with the image."""
        return min(self.width / 160, self.height / 120)


@dataclass
class SceneObject:
    """One object: its kind, colour name and inclusive-exclusive pixel box ``(x0, y0, x1, y1)``."""

    kind: str
    colour: str
    box: tuple[int, int, int, int]
    label: int

    @property
    def name(self) -> str:
        return f"the {self.colour} {self.kind}"

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


@dataclass
class Scene:
    """A rendered scene.

    Attributes:
        image (`PIL.Image.Image`): the RGB image.
        objects (`list[SceneObject]`): the objects, ``objects[i].label == i + 1``.
        labels (`np.ndarray` of shape `(H, W)`, uint8): instance masks, 0 = background, ``i + 1`` = object ``i``.
        table_top (`int`): first image row of the table; rows above are wall.
    """

    image: Image.Image
    objects: list[SceneObject]
    labels: np.ndarray
    table_top: int

    def mask(self, obj: SceneObject) -> np.ndarray:
        """Boolean instance mask of one object."""
        return self.labels == obj.label


@dataclass
class Question:
    """A question about a scene: its family, text (without the answer-format sentence) and ground-truth region."""

    family: str
    text: str
    region: np.ndarray
    highlight: tuple[int, int, int, int] | None = None


@dataclass
class SynthSummary:
    """What [`generate_dataset`] wrote."""

    out_dir: str
    scenes: int
    records: int
    eval_questions: int
    families: dict[str, int] = field(default_factory=dict)
    eval_families: dict[str, int] = field(default_factory=dict)


def _shade(colour: Sequence[int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in colour)  # type: ignore[return-value]


def _object_size(kind: str, rng: np.random.Generator, scale: float) -> tuple[int, int]:
    """Width and height of an object's box, in pixels at the configured scale."""
    if kind == "ball":
        width = height = rng.uniform(12, 20)
    elif kind == "box":
        width, height = rng.uniform(14, 24), rng.uniform(12, 22)
    elif kind == "plate":
        width = rng.uniform(22, 32)
        height = width * 0.45
    elif kind == "mug":
        width, height = rng.uniform(15, 21), rng.uniform(12, 18)
    else:  # bottle
        width, height = rng.uniform(7, 10), rng.uniform(22, 32)
    return max(3, round(width * scale)), max(3, round(height * scale))


def _draw_object(image_draw: ImageDraw.ImageDraw, label_draw: ImageDraw.ImageDraw, obj: SceneObject) -> None:
    """Draw one object on the image and, with the same primitives, its label on the instance map."""
    x0, y0, x1, y1 = obj.box
    right, bottom = x1 - 1, y1 - 1  # PIL boxes are inclusive
    colour = COLOURS[obj.colour]
    dark, light = _shade(colour, 0.6), _shade(colour, 1.25)
    width, height = x1 - x0, y1 - y0
    shapes: list[tuple[str, tuple[float, float, float, float], dict[str, Any]]] = []
    if obj.kind == "ball":
        shapes.append(("ellipse", (x0, y0, right, bottom), {"fill": colour, "outline": dark}))
        shapes.append(
            ("ellipse", (x0 + width * 0.2, y0 + height * 0.2, x0 + width * 0.45, y0 + height * 0.45), {"fill": light})
        )
    elif obj.kind == "box":
        shapes.append(("rectangle", (x0, y0, right, bottom), {"fill": colour, "outline": dark}))
        shapes.append(("rectangle", (x0 + 1, y0 + 1, right - 1, y0 + height * 0.28), {"fill": light}))
    elif obj.kind == "plate":
        shapes.append(("ellipse", (x0, y0, right, bottom), {"fill": colour, "outline": dark}))
        inset_x, inset_y = width * 0.18, height * 0.18
        shapes.append(("ellipse", (x0 + inset_x, y0 + inset_y, right - inset_x, bottom - inset_y), {"fill": light}))
    elif obj.kind == "mug":
        body_right = x0 + round(width * 0.72)
        handle_width = max(2, round(height * 0.15))
        shapes.append(
            (
                "ellipse",
                (body_right - handle_width, y0 + height * 0.2, right, y0 + height * 0.75),
                {"outline": dark, "width": handle_width},
            )
        )
        shapes.append(("rectangle", (x0, y0, body_right, bottom), {"fill": colour, "outline": dark}))
        shapes.append(("rectangle", (x0 + 1, y0 + 1, body_right - 1, y0 + max(1, height * 0.12)), {"fill": dark}))
    else:  # bottle
        neck_top = y0 + round(height * 0.35)
        shapes.append(("rectangle", (x0, neck_top, right, bottom), {"fill": colour, "outline": dark}))
        inset = width * 0.3
        shapes.append(("rectangle", (x0 + inset, y0, right - inset, neck_top), {"fill": colour, "outline": dark}))
        shapes.append(("rectangle", (x0 + inset, y0, right - inset, y0 + max(1, height * 0.08)), {"fill": dark}))
    for kind, box, style in shapes:
        getattr(image_draw, kind)(box, **style)
        label_style = {key: obj.label for key in ("fill", "outline") if key in style}
        if "width" in style:
            label_style["width"] = style["width"]
        getattr(label_draw, kind)(box, **label_style)


def _overlaps(box: Sequence[int], others: Sequence[SceneObject], margin: int) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < o.box[2] + margin and o.box[0] < x1 + margin and y0 < o.box[3] + margin and o.box[1] < y1 + margin
        for o in others
    )


def render_scene(rng: np.random.Generator, config: SynthConfig) -> Scene:
    """Draw one tabletop scene with non-overlapping objects and their instance masks.

    Args:
        rng (`np.random.Generator`): the only source of randomness (same state -> same scene).
        config ([`SynthConfig`]): sizes and object counts.

    Returns:
        [`Scene`].
    """
    width, height, scale = config.width, config.height, config.scale
    table_top = int(height * rng.uniform(0.28, 0.42))
    canvas = np.empty((height, width, 3), dtype=np.float32)
    canvas[:table_top] = _WALLS[rng.integers(len(_WALLS))]
    canvas[table_top:] = _TABLES[rng.integers(len(_TABLES))]
    if rng.random() < 0.5:  # wood grain: gentle stripes along the table
        period = rng.uniform(6, 14) * scale
        rows = np.arange(height - table_top, dtype=np.float32)
        canvas[table_top:] *= (1 + 0.06 * np.sin(2 * np.pi * rows / period + rng.uniform(0, 2 * np.pi)))[:, None, None]
    canvas[table_top : table_top + max(1, round(2 * scale))] *= 0.7  # table edge
    image = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    labels = Image.new("L", (width, height), 0)
    image_draw, label_draw = ImageDraw.Draw(image), ImageDraw.Draw(labels)

    margin = max(2, round(5 * scale))
    objects: list[SceneObject] = []
    used: set[tuple[str, str]] = set()
    for _ in range(int(rng.integers(config.min_objects, config.max_objects + 1))):
        kind = KINDS[rng.integers(len(KINDS))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        if (colour, kind) in used:
            continue  # keep every object nameable by colour + kind
        box_width, box_height = _object_size(kind, rng, scale)
        for _attempt in range(30):
            x0 = int(rng.integers(1, max(2, width - box_width - 1)))
            y0 = int(rng.integers(table_top + 1, max(table_top + 2, height - box_height - 1)))
            box = (x0, y0, x0 + box_width, y0 + box_height)
            if box[2] < width and box[3] < height and not _overlaps(box, objects, margin):
                obj = SceneObject(kind=kind, colour=colour, box=box, label=len(objects) + 1)
                objects.append(obj)
                used.add((colour, kind))
                _draw_object(image_draw, label_draw, obj)
                break

    # Lighting: a linear brightness gradient in a random direction plus mild sensor noise.
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * (xs / width - 0.5) + np.sin(angle) * (ys / height - 0.5)).astype(np.float32)
    gain = rng.uniform(0.85, 1.1) + rng.uniform(0.1, 0.3) * ramp
    pixels = np.asarray(image, dtype=np.float32) * gain[:, :, None]
    pixels += rng.normal(0, 3, size=pixels.shape).astype(np.float32)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    return Scene(image=image, objects=objects, labels=np.asarray(labels).copy(), table_top=table_top)


def _vacant(scene: Scene, margin: int) -> np.ndarray:
    """Table pixels at least ``margin`` away (box-wise) from every object and from the image border."""
    height, width = scene.labels.shape
    free = np.zeros((height, width), dtype=bool)
    free[scene.table_top + margin : height - 1, 1 : width - 1] = True
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        free[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin] = False
    return free


def _rect_mask(shape: tuple[int, int], x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    height, width = shape
    x0, x1 = max(0, int(round(x0))), min(width, int(round(x1)))
    y0, y1 = max(0, int(round(y0))), min(height, int(round(y1)))
    if x0 < x1 and y0 < y1:
        mask[y0:y1, x0:x1] = True
    return mask


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _on_side(candidate: SceneObject, anchor: SceneObject, direction: str) -> bool:
    """Whether ``candidate`` lies entirely on one side of ``anchor``.

    "Just left of" also means "roughly level with": the candidate's span on the other axis must overlap the
    anchor's span grown by one anchor size.
    """
    ax0, ay0, ax1, ay1 = anchor.box
    cx0, cy0, cx1, cy1 = candidate.box
    width, height = ax1 - ax0, ay1 - ay0
    level = cy0 < ay1 + height and cy1 > ay0 - height
    aligned = cx0 < ax1 + width and cx1 > ax0 - width
    return {
        "left": cx1 <= ax0 and level,
        "right": cx0 >= ax1 and level,
        "front": cy0 >= ay1 and aligned,
        "behind": cy1 <= ay0 and aligned,
        "nearest": True,
    }[direction]


def _directional_neighbour(scene: Scene, anchor: SceneObject, direction: str) -> SceneObject | None:
    """The object on one side of ``anchor`` and clearly nearest to it, or None if that is ambiguous."""
    candidates = [o for o in scene.objects if o is not anchor and _on_side(o, anchor, direction)]
    return _clear_nearest(anchor, candidates)


def _clear_nearest(anchor: SceneObject, candidates: list[SceneObject]) -> SceneObject | None:
    if not candidates:
        return None
    distances = sorted((math.dist(anchor.center, o.center), o.label, o) for o in candidates)
    if len(distances) > 1 and distances[1][0] < 1.3 * distances[0][0]:
        return None
    return distances[0][2]


def _between(first: SceneObject, second: SceneObject, margin: int) -> tuple[float, float, float, float] | None:
    """The gap between two objects as a box, if they face each other across a clear gap (horizontal or vertical)."""
    a, b = sorted((first, second), key=lambda o: o.box[0])
    overlap_y = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
    if b.box[0] - a.box[2] > 3 * margin and overlap_y > 0.3 * min(a.box[3] - a.box[1], b.box[3] - b.box[1]):
        return (a.box[2], max(a.box[1], b.box[1]), b.box[0], min(a.box[3], b.box[3]))
    a, b = sorted((first, second), key=lambda o: o.box[1])
    overlap_x = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
    if b.box[1] - a.box[3] > 3 * margin and overlap_x > 0.3 * min(a.box[2] - a.box[0], b.box[2] - b.box[0]):
        return (max(a.box[0], b.box[0]), a.box[3], min(a.box[2], b.box[2]), b.box[1])
    return None


def _related_object(
    scene: Scene, relation: str, anchor: SceneObject, other: SceneObject, margin: int
) -> SceneObject | None:
    """The unique object in ``relation`` to ``anchor`` (and ``other`` for "between"), or None."""
    if relation != "between":
        return _directional_neighbour(scene, anchor, relation)
    gap = _between(anchor, other, margin)
    if gap is None:
        return None
    inside = [
        o
        for o in scene.objects
        if o not in (anchor, other) and gap[0] < o.center[0] < gap[2] and gap[1] < o.center[1] < gap[3]
    ]
    return inside[0] if len(inside) == 1 else None


def make_question(scene: Scene, family: str, rng: np.random.Generator, config: SynthConfig) -> Question | None:
    """Ask one question of a given family about a scene, or return None if the scene cannot support it.

    Args:
        scene ([`Scene`]): the scene.
        family (`str`): one of `FAMILIES`.
        rng (`np.random.Generator`): randomness for the choice of objects and wording.
        config ([`SynthConfig`]): sizes.

    Returns:
        [`Question`] or `None`.
    """
    objects, shape, scale = scene.objects, scene.labels.shape, config.scale
    margin = max(2, round(3 * scale))
    min_area = 30 * scale * scale
    if not objects:
        return None
    order = [objects[i] for i in rng.permutation(len(objects))]
    if family == "object_attribute":
        target = order[0]
        return Question(family, _pick(rng, _OBJECT_TEMPLATES).format(target=target.name), scene.mask(target))
    if family == "object_highlight":
        target = order[0]
        pad = max(2, round(2 * scale))
        x0, y0, x1, y1 = target.box
        frame = (max(0, x0 - pad), max(0, y0 - pad), min(shape[1] - 1, x1 + pad - 1), min(shape[0] - 1, y1 + pad - 1))
        text = _pick(rng, _OBJECT_TEMPLATES).format(target=_pick(rng, _HIGHLIGHT_TARGETS))
        return Question(family, text, scene.mask(target), highlight=frame)
    if family == "object_relation":
        for relation in [str(r) for r in rng.permutation(list(_RELATION_TARGETS))]:
            for anchor in order:
                partners = [o for o in order if o is not anchor] if relation == "between" else [anchor]
                for other in partners:
                    target = _related_object(scene, relation, anchor, other, margin)
                    if target is not None:
                        phrase = _pick(rng, _RELATION_TARGETS[relation]).format(a=anchor.name, b=other.name)
                        text = _pick(rng, _OBJECT_TEMPLATES).format(target=phrase)
                        return Question(family, text, scene.mask(target))
        return None

    vacant = _vacant(scene, margin)
    if family == "free_space_relation":
        for relation in [str(r) for r in rng.permutation(list(_FREE_RELATIONS))]:
            for anchor in order:
                x0, y0, x1, y1 = anchor.box
                reach_x, reach_y = max(x1 - x0, 14 * scale), max(0.8 * (y1 - y0), 10 * scale)
                box = {
                    "left": (x0 - margin - reach_x, y0, x0 - margin, y1),
                    "right": (x1 + margin, y0, x1 + margin + reach_x, y1),
                    "front": (x0, y1 + margin, x1, y1 + margin + reach_y),
                    "behind": (x0, y0 - margin - reach_y, x1, y0 - margin),
                }[relation]
                region = _rect_mask(shape, *box) & vacant
                if region.sum() >= min_area:
                    where = _pick(rng, _FREE_RELATIONS[relation]).format(a=anchor.name)
                    return Question(family, _pick(rng, _FREE_TEMPLATES).format(where=where), region)
        return None
    if family == "free_space_between":
        for index, first in enumerate(order):
            for second in order[index + 1 :]:
                gap = _between(first, second, margin)
                if gap is None or _overlaps(
                    tuple(round(v) for v in gap), [o for o in objects if o not in (first, second)], 0
                ):
                    continue  # another object sits in the gap: "the space between" would be ambiguous
                region = _rect_mask(shape, *gap) & vacant
                if region.sum() >= min_area:
                    where = f"between {first.name} and {second.name}"
                    return Question(family, _pick(rng, _FREE_TEMPLATES).format(where=where), region)
        return None
    if family == "free_space_surface":
        height, width = shape
        top = scene.table_top
        middle_y = (top + height) / 2
        parts = {
            "left": (0, top, width / 3, height),
            "right": (2 * width / 3, top, width, height),
            "front": (0, middle_y, width, height),
            "back": (0, top, width, middle_y),
            "middle": (width / 3, top + (height - top) / 4, 2 * width / 3, height - (height - top) / 4),
        }
        for part in [str(p) for p in rng.permutation(list(parts))]:
            region = _rect_mask(shape, *parts[part]) & vacant
            if region.sum() >= min_area:
                where = _pick(rng, _SURFACE_PARTS[part])
                return Question(family, _pick(rng, _FREE_TEMPLATES).format(where=where), region)
        return None
    raise ValueError(f"unknown question family {family!r}; expected one of {FAMILIES}")


def sample_points(region: np.ndarray, rng: np.random.Generator, count: int) -> list[tuple[float, float]]:
    """Sample up to ``count`` distinct pixel centres inside ``region``, normalized to the image size.

    The region is first eroded by one pixel (4-neighbourhood) when that leaves anything, so answers sit away
    from the mask border and survive JPEG-compressed masks.

    Args:
        region (`np.ndarray` of shape `(H, W)`, bool): the ground-truth region (must not be empty).
        rng (`np.random.Generator`): randomness.
        count (`int`): number of points wanted.

    Returns:
        `list[tuple[float, float]]`: ``(x, y)`` in 0-1, ``x = (column + 0.5) / W``.
    """
    height, width = region.shape
    eroded = region.copy()
    eroded[1:] &= region[:-1]
    eroded[:-1] &= region[1:]
    eroded[:, 1:] &= region[:, :-1]
    eroded[:, :-1] &= region[:, 1:]
    eroded[[0, -1], :] = False
    eroded[:, [0, -1]] = False
    rows, columns = np.nonzero(eroded if eroded.any() else region)
    if len(rows) == 0:
        raise ValueError("cannot sample answer points from an empty region")
    chosen = rng.choice(len(rows), size=min(count, len(rows)), replace=False)
    return [((columns[i] + 0.5) / width, (rows[i] + 0.5) / height) for i in chosen]


def centre_point(region: np.ndarray) -> tuple[float, float]:
    """The pixel of ``region`` nearest its centroid, normalized like [`sample_points`].

    The centroid itself can fall outside a non-convex region (a mug's handle, free space around an object), so the
    answer snaps to the nearest region pixel and always lies inside the ground truth.

    Args:
        region (`np.ndarray` of shape `(H, W)`, bool): the ground-truth region (must not be empty).

    Returns:
        `tuple[float, float]`: ``(x, y)`` in 0-1.
    """
    rows, columns = np.nonzero(region)
    if len(rows) == 0:
        raise ValueError("cannot take the centre of an empty region")
    nearest = int(np.argmin((rows - rows.mean()) ** 2 + (columns - columns.mean()) ** 2))
    height, width = region.shape
    return ((columns[nearest] + 0.5) / width, (rows[nearest] + 0.5) / height)


def generate_sample(
    seed: int, index: int, config: SynthConfig, *, split: str = "train", questions: int | None = None
) -> tuple[Scene, list[tuple[Question, list[tuple[float, float]], Image.Image]]]:
    """Render scene ``index`` of a split and ask its questions, reproducibly.

    Args:
        seed (`int`): dataset seed.
        index (`int`): scene index within the split.
        config ([`SynthConfig`]): generator parameters.
        split (`str`, *optional*, defaults to `"train"`): ``"train"`` or ``"eval"`` (independent random streams).
        questions (`int`, *optional*): number of distinct questions; defaults to ``config.questions_per_scene``.

    Returns:
        `tuple`: the [`Scene`] and, per question, ``(question, answer points, image shown with it)`` (the image
        differs from ``scene.image`` only for ``object_highlight`` questions, which draw a red rectangle).
    """
    split_code = {"train": 0, "eval": 1}[split]
    rng = np.random.default_rng((seed, split_code, index))
    weights = np.asarray(config.family_weights, dtype=np.float64)
    wanted = questions or config.questions_per_scene
    for _scene_attempt in range(20):
        scene = render_scene(rng, config)
        asked: list[tuple[Question, list[tuple[float, float]], Image.Image]] = []
        texts: set[str] = set()
        for _question_attempt in range(10 * wanted):
            if len(asked) == wanted:
                break
            family = FAMILIES[int(rng.choice(len(FAMILIES), p=weights / weights.sum()))]
            question = make_question(scene, family, rng, config)
            if question is None or question.text in texts or not question.region.any():
                continue
            image = scene.image
            if question.highlight is not None:
                image = scene.image.copy()
                ImageDraw.Draw(image).rectangle(
                    question.highlight, outline=_HIGHLIGHT, width=max(1, round(config.scale))
                )
            if config.answer == "centre":
                points = [centre_point(question.region)]
            else:
                points = sample_points(
                    question.region, rng, int(rng.integers(config.min_points, config.max_points + 1))
                )
            asked.append((question, points, image))
            texts.add(question.text)
        if len(asked) == wanted:
            return scene, asked
    raise RuntimeError(
        f"could not ask {wanted} distinct questions about scene {index} (seed {seed}); check family_weights"
    )


def _save_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    image.save(path, format="JPEG", quality=quality)


def _train_chunk(job: tuple[int, int, int, SynthConfig, str]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Worker: render scenes ``[start, stop)``, save their images, return their records."""
    seed, start, stop, config, out_dir = job
    records: list[dict[str, Any]] = []
    families: Counter[str] = Counter()
    for index in range(start, stop):
        scene, asked = generate_sample(seed, index, config)
        names: dict[int, str] = {}
        for number, (question, points, image) in enumerate(asked):
            key = id(image)
            if key not in names:
                suffix = "" if image is scene.image else f"_{number}"
                names[key] = f"images/{index:06d}{suffix}.jpg"
                _save_jpeg(image, Path(out_dir) / names[key], config.jpeg_quality)
            record_id = f"synth/{question.family}/{index:06d}_{number}"
            records.append(make_pointing_record(record_id, names[key], question.text, points))
            families[question.family] += 1
    return records, families


def _eval_item(job: tuple[int, int, SynthConfig, str]) -> dict[str, Any]:
    """Worker: one evaluation question in the Where2Place layout."""
    seed, index, config, out_dir = job
    _scene, [(question, _points, image)] = generate_sample(seed, index, config, split="eval", questions=1)
    name = f"{index:02d}.jpg"
    _save_jpeg(image, Path(out_dir) / "images" / name, config.jpeg_quality)
    mask = Image.fromarray(question.region.astype(np.uint8) * 255, mode="L")
    mask.save(Path(out_dir) / "masks" / name, format="JPEG", quality=95)
    return {"question_id": index, "image": name, "text": add_answer_format(question.text), "category": question.family}


def _chunks(count: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, count, size):
        yield start, min(count, start + size)


def generate_dataset(
    out_dir: str | os.PathLike[str],
    num_scenes: int,
    *,
    seed: int = 0,
    eval_questions: int = 0,
    config: SynthConfig | None = None,
    workers: int = 1,
) -> SynthSummary:
    """Write a synthetic RoboPoint training set (and optionally a Where2Place-style evaluation split).

    Args:
        out_dir (`str` or `os.PathLike`): output folder (created; existing files with the same names are
            overwritten).
        num_scenes (`int`): training scenes (``config.questions_per_scene`` records each).
        seed (`int`, *optional*, defaults to `0`): the output is byte-identical for the same seed and config.
        eval_questions (`int`, *optional*, defaults to `0`): evaluation questions (one fresh scene each, drawn
            from a random stream disjoint from training).
        config ([`SynthConfig`], *optional*): generator parameters; defaults to `SynthConfig()`.
        workers (`int`, *optional*, defaults to `1`): processes; does not change the output.

    Returns:
        [`SynthSummary`]: counts per family.
    """
    if num_scenes < 0 or eval_questions < 0:
        raise ValueError(f"num_scenes and eval_questions must be >= 0, got {num_scenes} and {eval_questions}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    config = config or SynthConfig()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    chunk = 64
    train_jobs = [(seed, start, stop, config, str(out)) for start, stop in _chunks(num_scenes, chunk)]
    eval_jobs = [(seed, index, config, str(out / "eval")) for index in range(eval_questions)]
    if eval_questions:
        (out / "eval" / "images").mkdir(parents=True, exist_ok=True)
        (out / "eval" / "masks").mkdir(parents=True, exist_ok=True)

    families: Counter[str] = Counter()
    eval_families: Counter[str] = Counter()
    # Fork where available: `import robopoint_hf` loads torch + transformers (seconds), which spawned workers would
    # pay again; the parent has run no torch code, so forking it is safe.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(workers) if workers > 1 else None
    try:

        def mapper(function: Any, jobs: list[Any]) -> Iterator[Any]:
            # imap keeps the job order, so the output does not depend on the number of workers.
            return pool.imap(function, jobs, chunksize=4) if pool is not None else map(function, jobs)

        def records() -> Iterator[dict[str, Any]]:
            for chunk_records, chunk_families in mapper(_train_chunk, train_jobs):
                families.update(chunk_families)
                yield from chunk_records

        record_count = write_robopoint_records(records(), out / "train.json")
        if eval_questions:
            with open(out / "eval" / "point_questions.jsonl", "w", encoding="utf-8") as handle:
                for item in mapper(_eval_item, eval_jobs):
                    handle.write(json.dumps(item) + "\n")
                    eval_families[item["category"]] += 1
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    summary = SynthSummary(
        out_dir=str(out),
        scenes=num_scenes,
        records=record_count,
        eval_questions=eval_questions,
        families=dict(sorted(families.items())),
        eval_families=dict(sorted(eval_families.items())),
    )
    counts = {key: value for key, value in asdict(summary).items() if key != "out_dir"}  # keep the file path-free
    info = {"seed": seed, "config": asdict(config), "summary": counts}
    (out / "synth_info.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return summary
