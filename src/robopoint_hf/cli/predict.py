"""``robopoint predict`` -- ask a RoboPoint model to point at something in one image; print and draw the points.

Examples::

    robopoint predict --model ./robopoint-13b --image sink.jpg \\
        --instruction "Find a few spots within the vacant area on the rightmost white plate." --output sink-points.png
    robopoint predict --model ./robopoint-13b --image https://example.com/stair.jpg --instruction "..." --json
    robopoint predict --model ./robopoint-13b --image sink.jpg --instruction "..." --device cuda --load-in-4bit

Points are printed in pixels of the original image and normalized to its width and height, with the confidence
score of each (see :class:`~robopoint_hf.model.pipeline_robopoint.RoboPointPipeline`). ``--json`` prints the pipeline's
output dict instead. An answer that holds no point is not an error: it prints the raw answer and exits 0 (the JSON
says ``"parse_failed": true``).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field

from robopoint_hf.checkpoints import default_model
from robopoint_hf.dtypes import DEFAULT_DTYPES
from robopoint_hf.inference.loading import load_pipeline

from .errors import UsageError
from .options import GenerationOptions, ModelLoadingOptions, add_dataclass_arguments, positive_int
from .quiet import silence_progress_bars

__all__ = ["DEFAULT_MODEL", "PredictArguments", "add_parser", "resolve_device", "run"]

DEFAULT_MODEL: str | None = default_model()
"""Model used without ``--model``: the tiny demonstration model shipped in the package (synthetic scenes only)."""


@dataclass(kw_only=True)
class PredictArguments:
    """The options of ``predict`` alone (model loading and generation are the shared groups)."""

    image: str = field(metadata={"help": "image file or http(s) URL"})
    instruction: str = field(metadata={"help": 'what to point at, e.g. "the free space left of the mug"'})
    output: str | None = field(
        default=None,
        metadata={
            "help": "write the image with the points drawn on it to this file",
            "metavar": "PNG",
            "deprecated": ("--save",),
        },
    )
    json: bool = field(default=False, metadata={"help": "print the result as one JSON object", "action": "store_true"})
    max_points: int | None = field(
        default=None,
        metadata={
            "help": "at most K points (constrained: the answer closes after K; free: the K highest-scoring)",
            "metavar": "K",
            "type": positive_int,
        },
    )
    distinct_points: bool = field(
        default=False,
        metadata={
            "help": "no point twice (constrained: a repeated point is not allowed; free: repeats are dropped)",
            "action": "store_true",
        },
    )


def add_loading_arguments(parser, helps: dict | None = None, model_default: str | None = DEFAULT_MODEL, **kw) -> None:
    """``--model --device --dtype --load-in-4bit --load-in-8bit``: the options of every verb that loads a model."""
    default_help = "RoboPoint model folder or Hub id" + (
        f" (default: {DEFAULT_MODEL})" if DEFAULT_MODEL else " (required)"
    )
    add_dataclass_arguments(
        parser,
        ModelLoadingOptions,
        defaults={"model": model_default},
        helps={"model": default_help, **(helps or {})},
        **kw,
    )


def quantization_bits(args: argparse.Namespace) -> int | None:
    if args.load_in_4bit and args.load_in_8bit:
        raise UsageError("--load-in-4bit and --load-in-8bit exclude each other; give one")
    return 4 if args.load_in_4bit else 8 if args.load_in_8bit else None


def resolve_device(requested: str | None) -> str:
    """``--device``, or cuda when there is one, else cpu; a device this machine lacks is a usage error."""
    import torch

    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[device]:
        raise UsageError(f"--device {device} is not available on this machine")
    return device


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``predict`` on the ``robopoint`` command line."""
    parser = subparsers.add_parser(
        "predict",
        help="point at things in an image: print the points and optionally save an annotated copy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser, PredictArguments)
    add_loading_arguments(parser)
    add_dataclass_arguments(parser, GenerationOptions)
    parser.set_defaults(func=run)
    return parser


def format_result(result: dict) -> str:
    """Human-readable table of the points (and boxes) of one pipeline result."""
    lines = [f"answer: {result['text']}"]
    if result["parse_failed"]:
        lines.append("no points could be read from the answer")
    if result["points"]:
        lines.append(f"{'#':>3} {'x_px':>6} {'y_px':>6} {'x':>7} {'y':>7} {'score':>6}")
        for index, point in enumerate(result["points"], start=1):
            lines.append(
                f"{index:>3} {point['x_px']:>6} {point['y_px']:>6} {point['x']:>7.3f} {point['y']:>7.3f} "
                f"{point['score']:>6.3f}"
            )
    for index, box in enumerate(result["boxes"], start=1):
        lines.append(
            f"box {index}: ({box['x0_px']}, {box['y0_px']}) - ({box['x1_px']}, {box['y1_px']}) px, "
            f"({box['x0']:.3f}, {box['y0']:.3f}) - ({box['x1']:.3f}, {box['y1']:.3f}), score {box['score']:.3f}"
        )
    return "\n".join(lines)


def save_annotated(image, result: dict, path: str) -> None:
    """Draws the points and boxes of ``result`` on ``image`` and writes it to ``path``."""
    from robopoint_hf.inference.visualize import draw_points

    points = [(point["x"], point["y"]) for point in result["points"]]
    boxes = [(box["x0"], box["y0"], box["x1"], box["y1"]) for box in result["boxes"]]
    draw_points(image, points, normalized=True, boxes=boxes, numbered=True).save(path)


def check_image_output(path: str) -> None:
    """Refuses, before the model runs, an ``--output`` that PIL could not write as an image."""
    from PIL import Image

    if os.path.isdir(path):
        raise UsageError(f"--output {path} is a folder; give the image file to write, e.g. annotated.png")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise UsageError(f"cannot write {path}: its folder does not exist")
    extension = os.path.splitext(path)[1].lower()
    writable = {ext for ext, image_format in Image.registered_extensions().items() if image_format in Image.SAVE}
    if extension not in writable:
        raise UsageError(f"--output {path}: {extension or 'no extension'} is not an image format; use .png or .jpg")


def run(args: argparse.Namespace) -> int:
    """Loads the model, predicts, prints; bad input is checked before the model loads, so a typo fails fast."""
    if args.model is None:
        raise UsageError("--model is required (this build ships no default model)")
    if not args.instruction.strip():
        raise UsageError("--instruction is empty: say what to point at, e.g. 'the free space left of the mug'")
    bits = quantization_bits(args)
    from robopoint_hf.model.image_processing_robopoint import load_image

    image = load_image(args.image)
    device = resolve_device(args.device)
    if args.output:
        check_image_output(args.output)
    silence_progress_bars()
    pipe = load_pipeline(os.path.expanduser(args.model), device, args.dtype or DEFAULT_DTYPES[device], bits)
    result = pipe(
        image,
        args.instruction,
        max_new_tokens=args.max_new_tokens,
        max_points=args.max_points,
        distinct_points=args.distinct_points,
        answer_format=args.format_instruction,
        constrained=args.constrained,
    )
    if args.output:
        save_annotated(image, result, args.output)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_result(result))
        if args.output:
            print(f"saved: {args.output}")
    return 0
