"""The ``robopoint`` command line.

Every verb lives in its own module under ``robopoint_hf.cli`` and exposes
``add_parser(subparsers)``, which registers an ``argparse`` sub-parser whose ``func``
default is the verb's ``run(args) -> int``. Verb modules import their heavy
dependencies (torch, trl, gradio) inside ``run`` so that ``robopoint --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib

# Order is the order shown by `robopoint --help`.
_VERB_MODULES = (
    "predict",
    "convert",
    "export",
    "train",
    "merge_lora",
    "eval",
    "synth",
    "demo",
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robopoint", description="RoboPoint spatial-affordance points on Hugging Face transformers."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _VERB_MODULES:
        try:
            module = importlib.import_module(f"robopoint_hf.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"robopoint_hf.cli.{name}":
                continue  # verb not part of this build
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)
