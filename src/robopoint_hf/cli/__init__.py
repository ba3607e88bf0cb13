"""The ``robopoint`` command line.

Every verb lives in its own module under ``robopoint_hf.cli`` and exposes
``add_parser(subparsers)``, which registers an ``argparse`` sub-parser whose ``func``
default is the verb's ``run(args) -> int``. Verb modules import their heavy
dependencies (torch, trl, gradio) inside ``run`` so that ``robopoint --help`` stays fast.

Verbs raise on failure; :func:`main` is the one place that turns an exception (argparse's included) into one line
on stderr and an exit code (:mod:`robopoint_hf.cli.errors`), with the traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import EXIT_BROKEN_PIPE, UsageError, describe_error

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
    "serve",
)

DEBUG_FLAG = "--debug"


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are exceptions, so that :func:`main` prints them as one line."""

    def error(self, message: str):
        raise UsageError(message)


def make_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="robopoint", description="RoboPoint spatial-affordance points on Hugging Face transformers."
    )
    parser.add_argument(
        DEBUG_FLAG, action="store_true", help="show the traceback of an error (accepted anywhere on the line)"
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


def _verb_name(argv: list[str]) -> str:
    """``robopoint eval score`` for the error prefix: the verb (and eval's sub-command) the line names."""
    verbs = {name.replace("_", "-") for name in _VERB_MODULES}
    words = ["robopoint"]
    if argv and argv[0] in verbs:
        words.append(argv[0])
        if argv[0] == "eval" and len(argv) > 1 and not argv[1].startswith("-"):
            words.append(argv[1])
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    """Runs one ``robopoint`` command; returns its exit code (0, 1 runtime failure, 2 user error, 130 Ctrl-C, 141
    when the reader of stdout went away)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [word for word in argv if word != DEBUG_FLAG]
    try:
        from . import quiet

        quiet.silence_known_benign_output()
        parser = make_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except Exception as error:  # one line naming the culprit; the traceback only when asked for
        if debug:
            raise
        code, message = describe_error(error)
    except KeyboardInterrupt as error:
        if debug:
            raise
        code, message = describe_error(error)
    print(f"{_verb_name(argv)}: error: {message}", file=sys.stderr)
    return code


def _reader_gone() -> int:
    """``robopoint ... | head`` once head has read enough: end quietly, as Unix tools do. stdout now points at
    /dev/null, so the interpreter's final flush of what is still buffered cannot fail again."""
    try:
        stdout = sys.stdout.fileno()
    except (OSError, ValueError):  # not a file (main() called in-process with a captured stdout): nothing to flush
        return EXIT_BROKEN_PIPE
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stdout)
    os.close(devnull)
    return EXIT_BROKEN_PIPE
