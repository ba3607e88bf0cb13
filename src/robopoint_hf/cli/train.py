"""``robopoint train`` -- fine-tune RoboPoint with TRL (needs the ``train`` extra: ``pip install "robopoint_hf[train]"``).

Every option of :mod:`robopoint_hf.training.trainer` is accepted (``robopoint train --help`` lists them), plus
``--config recipe.yaml``. Examples::

    robopoint train --data robopoint_1432k.json --image-folder images --model ROBOPOINT_OR_BASE --lora \\
        --output-dir runs/lora
    robopoint train --config examples/recipes/lora_vicuna_7b.yaml --output-dir runs/lora
    robopoint train --data my.json --image-folder images --model ROBOPOINT --lora --bits 4 --output-dir runs/qlora

This runs in one process; for several GPUs use ``accelerate launch examples/sft_robopoint.py`` with a config from
``examples/accelerate_configs/``.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    # The options belong to the training dataclasses (parsed by TRL's parser in `run`); '+' as prefix makes this
    # sub-parser hand every '--option' through untouched, '--help' included.
    parser = subparsers.add_parser(
        "train",
        help="Fine-tune RoboPoint (full, LoRA or QLoRA) with TRL.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        prefix_chars="+",
        add_help=False,
    )
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="Options of robopoint_hf.training.trainer.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from robopoint_hf.training.trainer import main, make_parser

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = make_parser(prog="robopoint train")
    main(*parser.parse_args_and_config(args.train_args))
    return 0
