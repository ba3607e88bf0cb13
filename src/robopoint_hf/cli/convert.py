"""``robopoint convert`` -- original RoboPoint/LLaVA checkpoint -> transformers-native RoboPoint folder.

Examples::

    robopoint convert wentao-yuan/robopoint-v1-vicuna-v1.5-13b --output-dir robopoint-13b --dtype bfloat16 --verify
    robopoint convert wentao-yuan/robopoint-v1-llama-2-7b-lora --output-dir robopoint-7b --model-base meta-llama/Llama-2-7b-chat-hf
    robopoint convert ./checkpoints/my-run --output-dir ./my-run-hf --vision-tower ./clip-vit-large-patch14-336
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from robopoint_hf.dtypes import DTYPE_CHOICES
from robopoint_hf.model.templates import TEMPLATE_NAMES

from .options import add_dataclass_arguments, add_output_dir_arguments, output_dir
from .quiet import silence_progress_bars

CONVERSION_TARGETS = ("robopoint", "llava")
"""``--target`` of ``convert`` (Python: ``convert_checkpoint(target=...)``); ``export`` is ``--target llava``."""


def _shard_size(size: str) -> int | str:
    return int(size) if size.isdigit() else size


@dataclass
class ConvertArguments:
    """The options of ``convert`` (``export`` takes all but ``target``); SRC stays a positional argument."""

    model_base: str | None = field(
        default=None, metadata={"help": "Base language model of LoRA / projector-only checkpoints."}
    )
    vision_tower: str | None = field(
        default=None,
        metadata={
            "help": "CLIP folder or Hub id; default: the checkpoint's mm_vision_tower, from the local Hub cache or a "
            "folder relative to the CWD or to SRC's parent."
        },
    )
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "One dtype for every saved weight (default: vision tower and projector in float32, the language "
            "model in SRC's dtype, as the original's default inference).",
            "choices": DTYPE_CHOICES,
        },
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "Template to record (default: the one the checkpoint was trained with, vicuna_v1).",
            "choices": TEMPLATE_NAMES,
        },
    )
    max_shard_size: int | str = field(
        default="5GB",
        metadata={
            "help": "Largest output shard: bytes, or a size in KB, MB, GB, TB (default: 5GB).",
            "type": _shard_size,
        },
    )
    verify: bool = field(
        default=False,
        metadata={"help": "Reload OUT and compare logits with SRC on a probe.", "action": "store_true"},
    )
    target: str = field(
        default="robopoint",
        metadata={
            "help": "robopoint: a RoboPoint folder (remote code); llava: a plain transformers LLaVA folder, the same "
            "as `robopoint export` (default: %(default)s)",
            "choices": CONVERSION_TARGETS,
        },
    )


def add_conversion_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Arguments shared by `convert` and `export` (``exclude``: the fields a verb does not take)."""
    parser.add_argument(
        "src",
        help="Original-format checkpoint: local folder or Hub id (full, LoRA or projector); export also reads any "
        "RoboPoint folder (converted, merged, trained).",
    )
    add_dataclass_arguments(parser, ConvertArguments, exclude=exclude)
    add_output_dir_arguments(parser)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an original RoboPoint/LLaVA checkpoint to a transformers RoboPoint folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_conversion_arguments(parser)
    parser.set_defaults(func=run)


def run_conversion(args: argparse.Namespace, target: str) -> int:
    """Runs the conversion for `convert` and `export`."""
    import logging

    from robopoint_hf.original.convert import convert_checkpoint

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    silence_progress_bars()
    out = convert_checkpoint(
        args.src,
        output_dir(args),
        model_base=args.model_base,
        vision_tower=args.vision_tower,
        dtype=args.dtype,
        target=target,
        prompt_template=args.prompt_template,
        max_shard_size=args.max_shard_size,
        verify=args.verify,
        overwrite=args.overwrite,
    )
    print(out)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_conversion(args, args.target)
