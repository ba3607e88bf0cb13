"""``robopoint export`` -- ``robopoint convert --target llava``: any RoboPoint checkpoint -> plain transformers LLaVA
folder (no remote code). Python: ``convert_checkpoint(src, output_dir, target="llava")``.

SRC is an original RoboPoint/LLaVA checkpoint (folder or Hub id) or any RoboPoint folder: converted, merged
(``robopoint merge-lora``) or trained (``robopoint train``). The output loads with ``LlavaForConditionalGeneration`` / ``AutoModelForImageTextToText`` and
``pipeline("image-text-to-text")`` without ``trust_remote_code``, and serves with vLLM, SGLang or TGI (except the
``linear``-projector Llama-2 checkpoints on vLLM, which has no "linear" activation). Its tokenizer pads on the
left, so batched generation with plain transformers gives every row the answer it gets alone.

Examples::

    robopoint export wentao-yuan/robopoint-v1-vicuna-v1.5-13b --output-dir robopoint-13b-llava --dtype bfloat16
    robopoint export wentao-yuan/robopoint-v1-vicuna-v1.5-7b-lora --output-dir out --model-base lmsys/vicuna-7b-v1.5
    robopoint export runs/merged --output-dir runs/merged-llava      # a merge-lora or train output
"""

from __future__ import annotations

import argparse

from .convert import add_conversion_arguments, run_conversion
from .errors import UsageError
from .options import DeprecatedAlias


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a RoboPoint checkpoint (original, converted, merged, trained) as a plain LLaVA folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_conversion_arguments(parser, exclude=("target",))
    parser.add_argument(
        "--format", dest="target", action=DeprecatedAlias, new_flag="(nothing: export always writes llava)",
        takes_value=True, help=argparse.SUPPRESS,
    )  # fmt: skip
    parser.set_defaults(func=run, target="llava")


def run(args: argparse.Namespace) -> int:
    if args.target != "llava":
        raise UsageError(f"export writes plain LLaVA folders; for --format {args.target} use `robopoint convert`")
    return run_conversion(args, "llava")
