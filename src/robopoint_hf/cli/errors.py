"""How the ``robopoint`` command ends when something goes wrong: one line on stderr and an exit code.

Exit codes: 2 for a user error (a bad flag or flag combination, a missing or malformed file or record, an
unreadable checkpoint, a Hub id that is not cached offline, a missing extra), 1 for a runtime failure (anything
else, e.g. out of memory), 130 for Ctrl-C (128 + SIGINT, what shells report for an interrupted command), 141 and no
line when the reader of the output went away (128 + SIGPIPE, as ``yes | head`` ends). The
verbs raise; :func:`robopoint_hf.cli.main` turns the exception into the line with :func:`describe_error`.
"""

from __future__ import annotations

import errno

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_INTERRUPTED", "EXIT_RUNTIME", "EXIT_USAGE", "UsageError", "describe_error"]

EXIT_USAGE = 2
EXIT_RUNTIME = 1
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away (``robopoint ... | head``)."""

EXTRAS = {
    "trl": "train",
    "peft": "train",
    "datasets": "train",
    "yaml": "train",
    "bitsandbytes": "train",
    "matplotlib": "eval",
    "evaluate": "eval",
    "httpx": "eval",
    "gradio": "demo",
    "cv2": "robot",
    "flash_attn": "gpu",
}
"""Top-level module -> the ``robopoint_hf`` extra that installs it (pyproject's optional dependencies)."""

RUNTIME_ERRNOS = {errno.ENOSPC, errno.EIO, errno.ENOMEM}
"""OSErrors that are the machine's failure, not the user's input."""


class UsageError(Exception):
    """A mistake in how the command was called (flags, their combination, their values): exit code 2."""


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe_error(error: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for an exception that ended a verb."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(error, ModuleNotFoundError) and error.name:
        top = error.name.split(".")[0]
        extra = EXTRAS.get(top)
        hint = f'pip install "robopoint_hf[{extra}]"' if extra else f"pip install {top}"
        return EXIT_USAGE, f"{top} is not installed: {hint}"
    if isinstance(error, OSError) and error.errno is not None and error.filename is not None:
        # "[Errno 2] No such file or directory: 'x'" -> "No such file or directory: x"
        code = EXIT_RUNTIME if error.errno in RUNTIME_ERRNOS else EXIT_USAGE
        return code, f"{error.strerror}: {error.filename}"
    if isinstance(error, OSError):
        code = EXIT_RUNTIME if error.errno in RUNTIME_ERRNOS else EXIT_USAGE
        return code, _one_line(error) or type(error).__name__
    if isinstance(error, (UsageError, ValueError, TypeError, LookupError, ImportError, NotImplementedError)):
        return EXIT_USAGE, _one_line(error) or type(error).__name__
    if type(error).__module__.startswith("robopoint_hf."):  # our messages name their culprit themselves
        return EXIT_RUNTIME, _one_line(error) or type(error).__name__
    return EXIT_RUNTIME, f"{type(error).__name__}: {_one_line(error)}"
