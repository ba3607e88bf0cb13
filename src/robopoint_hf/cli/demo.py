"""``robopoint demo`` -- a local web page where one or several RoboPoint models point at things side by side.

Examples::

    robopoint demo --model ./robopoint-13b
    robopoint demo --model 13B=./robopoint-13b --model 7B=./robopoint-7b --device cuda --load-in-4bit
    robopoint demo --model 13B=./robopoint-13b@cuda:0 --model 7B=./robopoint-7b@cuda:1
    robopoint demo --model 13B=./robopoint-13b@auto          # spread over every visible GPU
    robopoint demo --model 13B=http://gpu-box:8000/v1 --model 7B=./robopoint-7b@cuda:0
    robopoint demo --model ./robopoint-13b --host 0.0.0.0 --port 8080 --max-file-size 5mb

Each ``--model`` adds a column, optionally labelled ``LABEL=SOURCE`` (default label: the folder name or served
model name). ``SOURCE`` is a folder or Hub id with an optional placement ``@cpu``, ``@cuda``, ``@cuda:N``, ``@mps``
or ``@auto`` (``device_map="auto"``; without one, ``--device``), or the ``/v1`` URL of an OpenAI-compatible server
(vLLM, SGLang, TGI, ``transformers serve``) serving a plain-LLaVA export (``robopoint export``), with
``#SERVED_NAME`` when it serves several models. Columns answer concurrently. The page listens on 127.0.0.1 only unless ``--host`` says otherwise (it has no login). ``--share`` opens a
public gradio.live link (needs internet). Uploads and result images live in a temporary folder that is deleted
when the demo stops. Needs the ``demo`` extra: ``pip install "robopoint_hf[demo]"``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from robopoint_hf.demo import DEFAULT_HOST, DEFAULT_MAX_FILE_SIZE, DEFAULT_PORT

from .errors import UsageError
from .listening import check_can_listen, is_loopback, stop_on_sigterm
from .options import add_dataclass_arguments
from .predict import DEFAULT_MODEL, add_loading_arguments, quantization_bits
from .quiet import silence_progress_bars

__all__ = ["DemoArguments", "add_parser", "parse_model_specs", "run"]


@dataclass
class DemoArguments:
    """The options of ``demo``; ``--model`` is repeatable here (one column each), so it replaces the shared one."""

    model: list[str] | None = field(
        default=None,
        metadata={
            "help": "PATH[@cpu|cuda|cuda:N|mps|auto] or http://HOST:PORT/v1[#SERVED_NAME]; repeat for side-by-side "
            "models" + (f" (default: {DEFAULT_MODEL})" if DEFAULT_MODEL else " (at least one required)"),
            "action": "append",
            "metavar": "[LABEL=]SOURCE",
        },
    )
    host: str = field(default=DEFAULT_HOST, metadata={"help": f"interface to listen on (default: {DEFAULT_HOST})"})
    port: int = field(default=DEFAULT_PORT, metadata={"help": f"port (default: {DEFAULT_PORT})"})
    share: bool = field(
        default=False,
        metadata={"help": "also open a public gradio.live link (needs internet)", "action": "store_true"},
    )
    max_file_size: str = field(
        default=DEFAULT_MAX_FILE_SIZE,
        metadata={"help": f"largest upload, e.g. 5mb (default: {DEFAULT_MAX_FILE_SIZE})", "metavar": "SIZE"},
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``demo`` on the ``robopoint`` command line."""
    parser = subparsers.add_parser(
        "demo",
        help="start a local web demo (Gradio) comparing one or several models side by side",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser, DemoArguments)
    add_loading_arguments(parser, exclude=("model",))  # --model is repeatable here: one column each
    parser.set_defaults(func=run)
    return parser


def parse_model_specs(specs: list[str]) -> dict[str, str]:
    """``["13B=./a", "./b@cpu", "http://h:8000/v1#m"]`` -> ``{"13B": "./a", "b": "./b@cpu", "m": "http://..."}``, in
    order; repeated labels get ``" (2)"``, ...

    ``LABEL=SOURCE`` is split on the first ``=`` unless the whole spec is an existing path (a folder whose name holds
    ``=`` stays a folder) or a URL. The default label is the folder name without its placement, or the served
    model's name (else the server's host and port).
    """
    from urllib.parse import urlsplit

    models: dict[str, str] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if spec.startswith(("http://", "https://")):
            name = spec.partition("#")[2].split(",")[0]
            label, path = os.path.basename(name.rstrip("/")) or urlsplit(spec).netloc, spec
        elif not sep or not label or not path or os.path.exists(spec):
            folder = spec if os.path.exists(spec) else spec.rpartition("@")[0] or spec
            label, path = os.path.basename(os.path.normpath(folder)) or spec, spec
        unique, count = label, 1
        while unique in models:
            count += 1
            unique = f"{label} ({count})"
        models[unique] = os.path.expanduser(path)
    return models


def run(args: argparse.Namespace) -> int:
    """Loads the models, starts the page and serves until interrupted."""

    specs = args.model or ([DEFAULT_MODEL] if DEFAULT_MODEL else [])
    if not specs:
        raise UsageError("--model is required (this build ships no default model)")
    from robopoint_hf.demo.columns import LocalColumn, parse_column

    models = parse_model_specs(specs)
    for label, source in models.items():
        try:
            column = parse_column(source)
        except ValueError as error:
            raise UsageError(f"--model {label}: {error}") from error
        if isinstance(column, LocalColumn):
            path = column.source
            if path.startswith(("/", ".", "~")) and not os.path.isdir(path):
                raise FileNotFoundError(f"model folder not found for {label!r}: {path}")
    import gradio  # noqa: F401  (a missing extra fails with the install hint before any model loads)

    check_can_listen(args.host, args.port)

    from robopoint_hf.demo.app import build_demo, gradio_temp_dir, launch_demo

    if not is_loopback(args.host):
        print(f"robopoint demo: warning: listening on {args.host}; anyone who can reach it can use the models.")
    bits = quantization_bits(args)
    silence_progress_bars()
    with gradio_temp_dir(), stop_on_sigterm():
        demo = build_demo(models, device=args.device, dtype=args.dtype, bits=bits)
        try:
            launch_demo(demo, host=args.host, port=args.port, share=args.share, max_file_size=args.max_file_size)
        finally:
            demo.close(verbose=False)
    return 0
