"""``robopoint serve`` -- a RoboPoint model behind an OpenAI-compatible endpoint that batches concurrent requests.

Examples::

    robopoint serve                                          # the shipped default model, http://127.0.0.1:8000/v1
    robopoint serve --model ./robopoint-13b --port 8001 --max-batch-size 16
    robopoint eval where2place --endpoint http://127.0.0.1:8000/v1 --data-dir where2place --output answers.jsonl
    robopoint demo --model local=./robopoint-13b --model served=http://127.0.0.1:8000/v1

For one CPU or edge box without a GPU engine, and for evaluation and the demo's served columns: the requests that
arrive together are answered in one batched ``pipeline("robopoint")`` call (up to ``--max-batch-size``; the
batcher waits at most ``--batch-timeout`` seconds for a batch to fill). It answers ``POST /v1/chat/completions``
(one image and the instruction; ``temperature``, ``top_p``, ``seed``, ``max_tokens``, ``logprobs``, and RoboPoint's
answer grammar as a vLLM/SGLang structured-output regex, which turns on constrained decoding), ``GET /v1/models``
and ``GET /health``. On GPUs and at scale, serve the plain-LLaVA export (``robopoint export``) with vLLM, SGLang
or TGI instead. It listens on 127.0.0.1 only unless ``--host`` says otherwise (it has no authentication). Ctrl-C
or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from robopoint_hf.dtypes import DEFAULT_DTYPES
from robopoint_hf.inference.server import DEFAULT_BATCH_TIMEOUT, DEFAULT_HOST, DEFAULT_MAX_BATCH_SIZE, DEFAULT_PORT

from .errors import UsageError
from .listening import check_can_listen, is_loopback, stop_on_sigterm
from .options import add_dataclass_arguments, positive_int
from .predict import DEFAULT_MODEL, add_loading_arguments, quantization_bits, resolve_device
from .quiet import silence_progress_bars

__all__ = ["ServeArguments", "add_parser", "check_can_listen", "run"]


def served_name(model: str) -> str:
    """The name a model is served under by default: as given, except the shipped model's folder name for it."""
    return os.path.basename(DEFAULT_MODEL) if DEFAULT_MODEL and model == DEFAULT_MODEL else model


@dataclass
class ServeArguments:
    """The options of ``serve`` alone (model loading is the shared group)."""

    host: str = field(default=DEFAULT_HOST, metadata={"help": f"interface to listen on (default: {DEFAULT_HOST})"})
    port: int = field(default=DEFAULT_PORT, metadata={"help": f"port (default: {DEFAULT_PORT}; 0: any free port)"})
    served_model_name: str | None = field(
        default=None,
        metadata={
            "help": "the name /v1/models lists and requests give (default: --model as given, as vLLM; the shipped "
            "model: default_model)"
        },
    )
    max_batch_size: int = field(
        default=DEFAULT_MAX_BATCH_SIZE,
        metadata={"help": "most requests answered together (default: %(default)s)", "type": positive_int},
    )
    batch_timeout: float = field(
        default=DEFAULT_BATCH_TIMEOUT,
        metadata={
            "help": "seconds to wait for more requests once one arrived, while the batch is not full (default: "
            "%(default)s)",
            "metavar": "SECONDS",
        },
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``serve`` on the ``robopoint`` command line."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a model on an OpenAI-compatible endpoint, batching concurrent requests (CPU and edge boxes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser, ServeArguments)
    add_loading_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Loads the model, then serves until Ctrl-C or SIGTERM (exit code 130, after closing the socket)."""
    if args.model is None:
        raise UsageError("--model is required (this build ships no default model)")
    if args.batch_timeout < 0:
        raise UsageError(f"--batch-timeout must be >= 0 seconds, got {args.batch_timeout}")
    bits = quantization_bits(args)
    check_can_listen(args.host, args.port)
    device = resolve_device(args.device)
    model = os.path.expanduser(args.model)
    if model.startswith(("/", ".", "~")) and not os.path.isdir(model):
        raise FileNotFoundError(f"model folder not found: {args.model}")
    import logging

    from robopoint_hf.inference.loading import load_pipeline
    from robopoint_hf.inference.server import CompletionServer

    silence_progress_bars()
    with stop_on_sigterm():
        pipe = load_pipeline(model, device, args.dtype or DEFAULT_DTYPES[device], bits)
        server = CompletionServer(
            pipe,
            args.served_model_name or served_name(args.model),
            host=args.host,
            port=args.port,
            max_batch_size=args.max_batch_size,
            batch_timeout=args.batch_timeout,
        )
        logging.basicConfig(format="robopoint serve: %(message)s")
        logging.getLogger("robopoint_hf.inference.server").setLevel(logging.INFO)
        if not is_loopback(args.host):
            print(f"robopoint serve: warning: listening on {args.host}; anyone who can reach it can use the model.")
        print(
            f"robopoint serve: {server.url} (model {server.model_name!r}, batches of up to {args.max_batch_size})",
            flush=True,
        )
        try:
            server.serve_forever()
        finally:
            server.server_close()
    return 0
