"""``robopoint convert`` -- original RoboPoint/LLaVA checkpoint -> transformers-native RoboPoint folder.

Examples::

    robopoint convert wentao-yuan/robopoint-v1-vicuna-v1.5-13b --output-dir robopoint-13b --dtype bfloat16 --verify
    robopoint convert wentao-yuan/robopoint-v1-llama-2-7b-lora --output-dir robopoint-7b --model-base meta-llama/Llama-2-7b-chat-hf
    robopoint convert ./checkpoints/my-run --output-dir ./my-run-hf --vision-tower ./clip-vit-large-patch14-336
"""

from __future__ import annotations

import argparse

from robopoint_hf.dtypes import DTYPE_CHOICES
from robopoint_hf.model.templates import TEMPLATE_NAMES

from .options import add_output_dir_arguments, output_dir
from .quiet import silence_progress_bars

CONVERSION_TARGETS = ("robopoint", "llava")
"""``--target`` of ``convert`` (Python: ``convert_checkpoint(target=...)``); ``export`` is ``--target llava``."""


def add_conversion_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by `convert` and `export`."""
    parser.add_argument(
        "src",
        help="Original-format checkpoint: local folder or Hub id (full, LoRA or projector); export also reads any "
        "RoboPoint folder (converted, merged, trained).",
    )
    parser.add_argument("--model-base", help="Base language model of LoRA / projector-only checkpoints.")
    parser.add_argument(
        "--vision-tower",
        help="CLIP folder or Hub id; default: the checkpoint's mm_vision_tower, from the local Hub cache or a "
        "folder relative to the CWD or to SRC's parent.",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        help="One dtype for every saved weight (default: vision tower and projector in float32, the language model "
        "in SRC's dtype, as the original's default inference).",
    )
    parser.add_argument(
        "--prompt-template",
        choices=TEMPLATE_NAMES,
        help="Template to record (default: the one the checkpoint was trained with, vicuna_v1).",
    )
    parser.add_argument(
        "--max-shard-size",
        default="5GB",
        type=lambda size: int(size) if size.isdigit() else size,
        help="Largest output shard: bytes, or a size in KB, MB, GB, TB (default: 5GB).",
    )
    parser.add_argument("--verify", action="store_true", help="Reload OUT and compare logits with SRC on a probe.")
    add_output_dir_arguments(parser)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="Convert an original RoboPoint/LLaVA checkpoint to a transformers RoboPoint folder.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_conversion_arguments(parser)
    parser.add_argument(
        "--target",
        choices=CONVERSION_TARGETS,
        default="robopoint",
        help="robopoint: a RoboPoint folder (remote code); llava: a plain transformers LLaVA folder, the same as "
        "`robopoint export` (default: %(default)s)",
    )
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
