"""``robopoint export`` -- any RoboPoint checkpoint -> plain transformers LLaVA folder (no remote code).

SRC is an original RoboPoint/LLaVA checkpoint (folder or Hub id) or any RoboPoint folder: converted, merged
(``robopoint merge-lora``) or trained (``robopoint train``). The output loads with ``LlavaForConditionalGeneration`` / ``AutoModelForImageTextToText`` and
``pipeline("image-text-to-text")`` without ``trust_remote_code``, and serves with vLLM, SGLang or TGI (except the
``linear``-projector Llama-2 checkpoints on vLLM, which has no "linear" activation). Its tokenizer pads on the
left, so batched generation with plain transformers gives every row the answer it gets alone.

Examples::

    robopoint export wentao-yuan/robopoint-v1-vicuna-v1.5-13b robopoint-13b-llava --format llava --dtype bfloat16
    robopoint export wentao-yuan/robopoint-v1-vicuna-v1.5-7b-lora out --format llava --model-base lmsys/vicuna-7b-v1.5
    robopoint export runs/merged runs/merged-llava --format llava      # a merge-lora or train output
"""

from __future__ import annotations

import argparse

from .convert import add_conversion_arguments, run_conversion


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="Export a RoboPoint checkpoint (original, converted, merged, trained) as a plain LLaVA folder.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_conversion_arguments(parser)
    parser.add_argument("--format", choices=("llava",), default="llava", help="Output format (default: llava).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_conversion(args, args.format)
