"""The Gradio demo (``robopoint demo``); needs the ``demo`` extra."""

DEFAULT_HOST = "127.0.0.1"
"""Loopback only: the demo has no login, so reaching it from the network is an explicit choice."""

DEFAULT_PORT = 7860

DEFAULT_MAX_FILE_SIZE = "20mb"
"""Largest upload: a 4K phone photo is well under it; a multi-hundred-megabyte upload is a mistake or an attack.

These defaults live in the package's light ``__init__`` rather than in :mod:`robopoint_hf.demo.app` so that
``robopoint --help`` does not import Gradio."""

__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_FILE_SIZE", "DEFAULT_PORT"]
