"""Where each column of the demo runs: a local model placed on a device, or a model served by an engine.

A ``--model`` value of the demo is ``[LABEL=]SOURCE`` where ``SOURCE`` is one of

* ``PATH[@PLACEMENT]``: a RoboPoint folder or Hub id loaded in the demo's process, on ``cpu``, ``cuda``,
  ``cuda:N``, ``mps``, or ``auto`` (``device_map="auto"``: spread over every visible GPU, for a model too large for
  one). Without a placement, the demo's ``--device``.
* ``http(s)://HOST:PORT/v1[#SERVED_NAME[,answer-format=FMT]]``: a model served by any OpenAI-compatible engine
  (vLLM, SGLang, TGI, ``transformers serve``), asked and read through the evaluation's endpoint backend
  (:mod:`robopoint_hf.evaluation.endpoint`); by default the server's only model, in RoboPoint's answer format.

Both kinds become a callable with the pipeline's signature (``column(image, instruction, **options) -> result``)
so the page treats them alike.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image

__all__ = ["EndpointColumn", "EndpointPointer", "LocalColumn", "parse_column", "parse_placement"]

PLACEMENT_HELP = "cpu, cuda, cuda:N, mps or auto"
_PLACEMENT = re.compile(r"cpu|mps|auto|cuda(:\d+)?")


@dataclass(frozen=True)
class LocalColumn:
    """A model loaded in the demo's process.

    Args:
        source (`str`): folder or Hub id.
        placement (`str`, *optional*): ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``; None = the demo's device.
    """

    source: str
    placement: str | None = None

    def describe(self) -> str:
        return self.source + (f" @ {self.placement}" if self.placement else "")


@dataclass(frozen=True)
class EndpointColumn:
    """A model behind an OpenAI-compatible endpoint.

    Args:
        url (`str`): API base, e.g. ``http://gpu-box:8000/v1``.
        model (`str`, *optional*): served model name; None = the server's only one.
        answer_format (`str`, *optional*, defaults to `"robopoint"`): an `~eval_endpoint.ANSWER_FORMATS` name.
    """

    url: str
    model: str | None = None
    answer_format: str = "robopoint"

    def describe(self) -> str:
        return self.url + (f" ({self.model})" if self.model else "")


def parse_placement(placement: str, *, check_devices: bool = True) -> str:
    """Validates ``placement`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``auto``) and, by default, that this
    machine has the device.

    Raises:
        ValueError: an unknown placement, or a device this machine does not have (says what it has).
    """
    if not _PLACEMENT.fullmatch(placement):
        raise ValueError(f"unknown placement {placement!r}; use {PLACEMENT_HELP}")
    if not check_devices or placement in ("cpu", "auto"):
        return placement
    import torch

    if placement == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("placement 'mps' but this machine has no Apple GPU (MPS)")
        return placement
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(placement.partition(":")[2] or 0)
    if index >= count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        seen = f"{count} CUDA device(s) visible" + (
            f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        )
        raise ValueError(f"placement {placement!r} but {seen}")
    return placement


def parse_column(source: str, *, check_devices: bool = True) -> LocalColumn | EndpointColumn:
    """``SOURCE`` of a ``--model [LABEL=]SOURCE`` value -> `LocalColumn` or `EndpointColumn` (see the module doc).

    A source that exists as a path is a folder even if it holds ``@``; otherwise the text after the last ``@`` is
    the placement.

    Raises:
        ValueError: a bad placement or endpoint fragment (names the source).
    """
    if source.startswith(("http://", "https://")):
        url, _, fragment = source.partition("#")
        name, *options = fragment.split(",") if fragment else [""]
        answer_format = "robopoint"
        for option in options:
            key, sep, value = option.partition("=")
            if key != "answer-format" or not sep or not value:
                raise ValueError(f"{source}: unknown endpoint option {option!r}; use #SERVED_NAME,answer-format=FMT")
            answer_format = value
        from robopoint_hf.evaluation.endpoint import get_answer_format

        try:
            get_answer_format(answer_format)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        return EndpointColumn(url=url.rstrip("/"), model=name or None, answer_format=answer_format)
    path, sep, placement = source.rpartition("@")
    if not sep or os.path.exists(source):
        return LocalColumn(source)
    try:
        return LocalColumn(path, parse_placement(placement, check_devices=check_devices))
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


class EndpointPointer:
    """An `EndpointColumn` behind the pipeline's call signature, so the demo asks it like a local model.

    Scores come from the engine's token log-probabilities (requested; vLLM and SGLang send them), else they are
    None. Errors raise `~eval_endpoint.EndpointError` with the URL and the server's message.
    """

    def __init__(self, column: EndpointColumn, *, request_timeout: float = 120.0, max_retries: int = 1):
        from robopoint_hf.evaluation.endpoint import EndpointClient, get_answer_format

        self.column = column
        self.format = get_answer_format(column.answer_format)
        self.client = EndpointClient(
            column.url, column.model, request_timeout=request_timeout, max_retries=max_retries, retry_backoff=0.5
        )

    def __call__(
        self,
        image: Image.Image,
        instruction: str,
        *,
        answer_format: bool = True,
        max_new_tokens: int = 256,
        max_points: int | None = None,
        do_sample: bool = False,
        temperature: float = 0.0,
    ) -> dict[str, Any]:
        from robopoint_hf.evaluation.endpoint import request_params

        messages = self.format.build_messages(image, instruction, answer_format=answer_format)
        params = request_params(temperature=temperature if do_sample else 0.0, max_new_tokens=max_new_tokens)
        response = self.client.chat(messages, logprobs=True, **params)
        return self.format.parse_response(response, image.size, max_points=max_points)

    def close(self) -> None:
        self.client.close()
