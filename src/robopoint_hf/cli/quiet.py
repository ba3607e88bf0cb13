"""Known-benign messages of our dependencies that the command line does not print.

Each filter matches one upstream message exactly (by its logger and the start of its text) and names its cause;
everything else is printed as usual. What could be fixed where it arises is fixed there instead. Installed before
any verb runs, so that it also covers imports; it imports neither torch nor transformers.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["silence_known_benign_output"]

KNOWN_BENIGN_LOG_RECORDS = {
    # bitsandbytes' CPU backend tries to fetch an optional faster 4-bit CPU kernel from the Hub at import and falls
    # back to its built-in one when it cannot (offline, or the `kernels` package missing): nothing to act on.
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
    # The same optional kernel fetch, offline: the `kernels` package says it skips a check it cannot do.
    "kernels._internals.hf_hub": "Skipping publisher trust check for ",
    # The tokenizer compares the prompt with its `model_max_length` and warns; the pipeline checks the full
    # prompt (image positions included) against the model's context itself and raises a clear error.
    "transformers.tokenization_utils_base": "Token indices sequence length is longer than the specified maximum",
}
"""Logger name -> start of the one message of that logger that is not printed."""

KNOWN_BENIGN_WARNINGS = (
    # TRL 1.x's `disable_gradient_checkpointing` reads `model.is_gradient_checkpointing`, which transformers 5 renamed
    # `is_activation_checkpointing`; the property still works, only the name is deprecated, in code we do not own.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated and will be removed in v6"),
)
"""(category, start of the message) of Python warnings that are not printed."""


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def silence_known_benign_output() -> None:
    """Installs the filters of `KNOWN_BENIGN_LOG_RECORDS` (idempotent)."""
    for category, message in KNOWN_BENIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefix in KNOWN_BENIGN_LOG_RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropMessage(prefix))


def silence_progress_bars() -> None:
    """No per-step progress bars of transformers ("Loading weights", "Writing model shards"): a verb prints its own
    progress. Hub downloads keep theirs (huggingface_hub's bars are separate). Imports transformers: call it in a
    verb's ``run``, never at parse time."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
