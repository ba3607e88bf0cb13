"""``robopoint predict`` -- ask a RoboPoint model to point at something in one image; print and draw the points.

Examples::

    robopoint predict --model ./robopoint-13b --image sink.jpg \\
        --instruction "Find a few spots within the vacant area on the rightmost white plate." --save sink-points.png
    robopoint predict --model ./robopoint-13b --image https://example.com/stair.jpg --instruction "..." --json
    robopoint predict --model ./robopoint-13b --image sink.jpg --instruction "..." --device cuda --load-4bit

Points are printed in pixels of the original image and normalized to its width and height, with the confidence
score of each (see :class:`~robopoint_hf.model.pipeline_robopoint.RoboPointPipeline`). ``--json`` prints the pipeline's
output dict instead. An answer that holds no point is not an error: it prints the raw answer and exits 0 (the JSON
says ``"parse_failed": true``).
"""

from __future__ import annotations

import argparse
import json
import os

from robopoint_hf.checkpoints import default_model
from robopoint_hf.inference.loading import DEFAULT_DTYPES, load_pipeline

from .errors import UsageError
from .quiet import silence_progress_bars

__all__ = ["DEFAULT_MODEL", "add_parser", "run"]

DEFAULT_MODEL: str | None = default_model()
"""Model used without ``--model``: the tiny demonstration model shipped in the package (synthetic scenes only)."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def add_loading_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype`` and ``--load-4bit``/``--load-8bit``, shared by the verbs that load models."""
    parser.add_argument(
        "--device", choices=("cpu", "cuda", "mps"), help="where to run (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="weight dtype (default: float32 on cpu, bfloat16 on cuda, float16 on mps)",
    )
    bits = parser.add_mutually_exclusive_group()
    bits.add_argument("--load-4bit", action="store_true", help="quantize the language model(s) to 4-bit NF4")
    bits.add_argument("--load-8bit", action="store_true", help="quantize the language model(s) to 8-bit (LLM.int8)")


def quantization_bits(args: argparse.Namespace) -> int | None:
    return 4 if args.load_4bit else 8 if args.load_8bit else None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``predict`` on the ``robopoint`` command line."""
    parser = subparsers.add_parser(
        "predict",
        help="point at things in an image: print the points and optionally save an annotated copy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", required=True, help="image file or http(s) URL")
    parser.add_argument("--instruction", required=True, help='what to point at, e.g. "the free space left of the mug"')
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="RoboPoint model folder or Hub id" + (f" (default: {DEFAULT_MODEL})" if DEFAULT_MODEL else " (required)"),
    )
    add_loading_arguments(parser)
    parser.add_argument("--save", metavar="PNG", help="write the image with the points drawn on it")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument(
        "--max-new-tokens", type=positive_int, metavar="N", help="longest answer (default: the model's)"
    )
    parser.add_argument(
        "--max-points",
        type=positive_int,
        metavar="K",
        help="at most K points (constrained: the answer closes after K; free: the K highest-scoring)",
    )
    parser.add_argument(
        "--no-constrained",
        dest="constrained",
        action="store_false",
        help="decode free text instead of RoboPoint's answer language (constrained needs robopoint_hf[constrained])",
    )
    parser.add_argument(
        "--no-answer-format",
        action="store_true",
        help="do not append RoboPoint's answer-format sentence to the instruction",
    )
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


def looks_like_path(model: str) -> bool:
    """A Hub id is ``name`` or ``owner/name``; anything else (absolute, ``./``, ``~``, deeper) is a local folder."""
    from robopoint_hf.hub_checkpoint import looks_like_hub_id

    return not looks_like_hub_id(model)


def run(args: argparse.Namespace) -> int:
    """Loads the model, predicts, prints; bad input is checked before the model loads, so a typo fails fast."""
    if args.model is None:
        raise UsageError("--model is required (this build ships no default model)")
    if not args.instruction.strip():
        raise UsageError("--instruction is empty: say what to point at, e.g. 'the free space left of the mug'")
    import torch

    from robopoint_hf.model.image_processing_robopoint import load_image

    image = load_image(args.image)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[device]:
        raise UsageError(f"--device {device} is not available on this machine")
    if args.save and not os.path.isdir(os.path.dirname(os.path.abspath(args.save))):
        raise UsageError(f"cannot write {args.save}: its folder does not exist")
    bits = quantization_bits(args)
    silence_progress_bars()
    pipe = load_pipeline(os.path.expanduser(args.model), device, args.dtype or DEFAULT_DTYPES[device], bits)
    result = pipe(
        image,
        args.instruction,
        max_new_tokens=args.max_new_tokens,
        max_points=args.max_points,
        answer_format=not args.no_answer_format,
        constrained=args.constrained,
    )
    if args.save:
        save_annotated(image, result, args.save)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_result(result))
        if args.save:
            print(f"saved: {args.save}")
    return 0
