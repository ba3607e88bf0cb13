"""``robopoint synth``: write a synthetic tabletop pointing dataset (no download, no extra needed).

Examples:

```bash
# 20k training scenes + a 200-question Where2Place-style evaluation split, on both cores
robopoint synth --n 20000 --output-dir data/synth --seed 0 --split-eval 200 --workers 2

# larger images, three questions per scene
robopoint synth --n 1000 --output-dir data/synth-320 --image-size 320x240 --questions-per-scene 3

# the tiny model's first training stage: one object per scene, questions about it, one centre point as answer
robopoint synth --n 20000 --output-dir data/synth-1 --seed 1 --objects 1-1 --families object_attribute,object_highlight \
    --answer centre
```

Train on ``OUT/train.json`` with image folder ``OUT``; evaluate on ``OUT/eval`` like Where2Place.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from .errors import UsageError
from .options import add_dataclass_arguments, add_output_dir_arguments, non_negative_int, output_dir, positive_int

__all__ = ["SynthArguments", "add_parser", "run"]


def _checked(**fields) -> None:
    """Raises ``SynthConfig``'s own complaint about these fields as the complaint about the flag being parsed."""
    from robopoint_hf.synthetic.scenes import SynthConfig

    try:
        SynthConfig(**fields)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _image_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must look like 160x120, got {text!r}") from None
    _checked(width=width, height=height)
    return width, height


def _object_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"object counts must look like 2-5, got {text!r}") from None
    _checked(min_objects=low, max_objects=high)
    return low, high


def _families(text: str) -> tuple[str, ...]:
    from robopoint_hf.synthetic.scenes import FAMILIES

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown families {unknown or text!r}; choose from {', '.join(FAMILIES)}")
    return names


def _answer_kind(text: str) -> str:
    from robopoint_hf.synthetic.scenes import ANSWER_KINDS

    if text not in ANSWER_KINDS:
        raise argparse.ArgumentTypeError(f"unknown answer kind {text!r}; choose from {', '.join(ANSWER_KINDS)}")
    return text


@dataclass(kw_only=True)
class SynthArguments:
    """The options of ``synth`` (the dataset folder is the shared ``--output-dir``)."""

    n: int = field(metadata={"help": "number of training scenes", "type": non_negative_int})
    seed: int = field(default=0, metadata={"help": "random seed; same seed -> byte-identical output"})
    split_eval: int = field(
        default=0, metadata={"help": "evaluation questions (default 0)", "metavar": "M", "type": non_negative_int}
    )
    workers: int = field(
        default=1, metadata={"help": "processes (the output does not depend on it)", "type": positive_int}
    )
    image_size: tuple[int, int] = field(
        default=(160, 120), metadata={"help": "default 160x120", "type": _image_size, "metavar": "WxH"}
    )
    questions_per_scene: int = field(default=1, metadata={"help": "training records per scene", "type": positive_int})
    objects: tuple[int, int] = field(
        default=(2, 5), metadata={"help": "default 2-5", "type": _object_range, "metavar": "MIN-MAX"}
    )
    families: tuple[str, ...] | None = field(
        default=None,
        metadata={"help": "comma-separated families to ask (default: all, weighted)", "type": _families},
    )
    answer: str = field(
        default="points",
        metadata={
            "help": "points: 3-8 sampled points, RoboPoint's format (default); centre: one point at the region's "
            "centre",
            "type": _answer_kind,
        },
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``synth`` on the ``robopoint`` command line."""
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic tabletop pointing dataset (RoboPoint training format + Where2Place-style eval)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser, SynthArguments)
    add_output_dir_arguments(parser, what="dataset folder", deprecated={"output_dir": ("--out",)})
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate the dataset and print a per-family summary."""
    from robopoint_hf.synthetic.scenes import FAMILIES, SynthConfig, generate_dataset

    folder = output_dir(args)
    if os.path.isdir(folder) and os.listdir(folder) and not args.overwrite:
        raise UsageError(f"--output-dir {folder} exists and is not empty; pass --overwrite to write into it")
    weights = SynthConfig.family_weights
    if args.families is not None:  # the chosen families keep their default weights relative to each other
        weights = tuple(
            weight if family in args.families else 0.0 for family, weight in zip(FAMILIES, weights, strict=True)
        )
    config = SynthConfig(
        width=args.image_size[0],
        height=args.image_size[1],
        questions_per_scene=args.questions_per_scene,
        min_objects=args.objects[0],
        max_objects=args.objects[1],
        answer=args.answer,
        family_weights=weights,
    )
    summary = generate_dataset(
        folder, args.n, seed=args.seed, eval_questions=args.split_eval, config=config, workers=args.workers
    )
    print(f"wrote {summary.records} training records ({summary.scenes} scenes) to {summary.out_dir}/train.json")
    for family, count in summary.families.items():
        print(f"  {family:<22} {count}")
    if summary.eval_questions:
        print(f"wrote {summary.eval_questions} evaluation questions to {summary.out_dir}/eval/point_questions.jsonl")
        for family, count in summary.eval_families.items():
            print(f"  {family:<22} {count}")
    return 0
