"""``robopoint train`` -- fine-tune RoboPoint with TRL (needs the ``train`` extra: ``pip install "robopoint_hf[train]"``).

Every option of :mod:`robopoint_hf.training.trainer` is accepted (``--help`` shows the common ones, ``--help-all`` all), plus
``--config recipe.yaml``. Examples::

    robopoint train --data robopoint_1432k.json --image-folder images --model ROBOPOINT_OR_BASE --lora \\
        --output-dir runs/lora
    robopoint train --config examples/recipes/lora_vicuna_7b.yaml --output-dir runs/lora
    robopoint train --data my.json --image-folder images --model ROBOPOINT --lora --load-in-4bit --output-dir runs/qlora

This runs in one process; for several GPUs use ``accelerate launch examples/sft_robopoint.py`` with a config from
``examples/accelerate_configs/``.
"""

from __future__ import annotations

import argparse

from .errors import UsageError
from .quiet import silence_progress_bars


def add_parser(subparsers) -> None:
    # The options belong to the training dataclasses (parsed by TRL's parser in `run`); '+' as prefix makes this
    # sub-parser hand every '--option' through untouched, '--help' included.
    parser = subparsers.add_parser(
        "train",
        help="fine-tune RoboPoint (full, LoRA or QLoRA) with TRL",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        prefix_chars="+",
        add_help=False,
    )
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="Options of robopoint_hf.training.trainer.")
    parser.set_defaults(func=run)


TRAINING_OPTIONS = (
    ("output_dir", "where checkpoints and the final model go; rerunning with it resumes"),
    ("learning_rate", "peak learning rate (default 2e-5; the LoRA recipes use 2e-4)"),
    ("num_train_epochs", "epochs (default 1)"),
    ("per_device_train_batch_size", "rows per device and step"),
    ("gradient_accumulation_steps", "steps per optimizer update"),
    ("max_length", "longest row, image positions included (default 2048)"),
    ("bf16", "bfloat16 mixed precision (default: where available)"),
    ("gradient_checkpointing", "recompute activations to save memory"),
    ("save_steps", "checkpoint every N steps"),
    ("report_to", "none, tensorboard, wandb, ..."),
)
"""The `RoboPointSFTConfig` (TRL ``SFTConfig``) options most runs set; ``--help-all`` lists every one."""


def short_help() -> str:
    """``robopoint train --help``: the command's own options, the common training ones, recipes -- read from the
    argument dataclasses without importing torch, transformers or TRL."""
    from dataclasses import MISSING, fields

    from robopoint_hf.training.arguments import ModelArguments, ScriptArguments

    lines = [__doc__.rstrip(), "", "options (any of them can also be set in --config YAML):"]
    lines.append(f"  {'--config FILE':<34} a recipe: YAML whose keys are these options (examples/recipes/*.yaml)")
    for group in (ScriptArguments, ModelArguments):
        for spec in fields(group):
            if spec.metadata.get("help", "").startswith("Deprecated"):
                continue
            default = "" if spec.default is MISSING or spec.default is None else f" (default: {spec.default})"
            flag = "--" + spec.name.replace("_", "-")
            lines.append(f"  {flag:<34} {spec.metadata.get('help', '')}{default}")
    lines.append("")
    lines.append("training options (TRL SFTConfig / transformers TrainingArguments):")
    for name, text in TRAINING_OPTIONS:
        lines.append(f"  {'--' + name.replace('_', '-'):<34} {text}")
    lines.append(f"  {'--help-all':<34} every option, including all of TrainingArguments")
    return "\n".join(lines)


def _raise_usage_error(message: str):
    raise UsageError(message)


def run(args: argparse.Namespace) -> int:
    import logging

    if any(flag in args.train_args for flag in ("-h", "--help")) and "--help-all" not in args.train_args:
        print(short_help())
        return 0
    args.train_args = ["--help" if flag == "--help-all" else flag for flag in args.train_args]

    from robopoint_hf.training.trainer import main, make_parser

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    silence_progress_bars()
    parser = make_parser(prog="robopoint train")
    parser.error = _raise_usage_error  # one line from main(), not TRL's usage block
    main(*parser.parse_args_and_config(args.train_args))
    return 0
