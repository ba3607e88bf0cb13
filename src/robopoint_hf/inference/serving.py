"""RoboPoint behind an OpenAI-compatible server (vLLM, SGLang, TGI): build the request, read the points back.

At scale, RoboPoint is served as the plain LLaVA export (``robopoint export ...``) by an engine's
OpenAI-compatible ``/v1/chat/completions`` endpoint. Two things then have to match what the model was trained with
and what ``pipeline("robopoint")`` does locally, and both are easy to get subtly wrong:

* the request: the image first (the chat template turns it into ``<image>\\n`` before the question, as in
  training), then the instruction with RoboPoint's answer-format sentence -- :func:`build_messages`;
* the answer: parsed with the project's one grammar (:func:`~robopoint_hf.model.points.parse_points`) into the same
  records the pipeline returns, scored from token log-probabilities when the server sent them --
  :func:`parse_response`.

Example (any OpenAI client; nothing here needs one)::

    from openai import OpenAI
    from robopoint_hf.inference.serving import build_messages, parse_response

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    image = "sink.jpg"
    response = client.chat.completions.create(
        model="robopoint-13b-llava",
        messages=build_messages(image, "Find a few spots within the vacant area on the rightmost white plate."),
        temperature=0,
        max_tokens=256,
        logprobs=True,
    )
    result = parse_response(response, image_size=(640, 480))
    result["points"]  # [{"x": 0.461, "y": 0.527, "x_px": 295, "y_px": 252, "score": 0.93}, ...]
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from robopoint_hf.model.point_records import answer_records, item_scores, keep_top_points
from robopoint_hf.model.points import add_answer_format, answer_regex, parse_points

logger = logging.getLogger(__name__)

__all__ = ["ENGINES", "build_messages", "build_request", "image_data_url", "parse_response", "response_text"]

ENGINES = ("vllm", "sglang")
"""Engines whose OpenAI-compatible server `build_request` can ask for the answer grammar."""

_MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_EXIF_ORIENTATION = 0x0112


# ---------------------------------------------------------------------------------------------------- request
def _sendable_as_is(data: bytes) -> str | None:
    """The MIME type of encoded image bytes that every server decodes to the pixels ``pipeline("robopoint")`` reads
    from the same bytes, else None: a PNG, JPEG or WEBP file, RGB, one frame, without an EXIF rotation (which some
    servers apply, e.g. ``transformers.image_utils.load_image``, and the pipeline does not)."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            plain = (
                opened.format in _MIME_TYPES
                and opened.mode == "RGB"
                and getattr(opened, "n_frames", 1) == 1
                and opened.getexif().get(_EXIF_ORIENTATION, 1) == 1
            )
            return _MIME_TYPES[opened.format] if plain else None
    except OSError:
        return None


def image_data_url(image: Image.Image | str | os.PathLike | bytes, image_format: str = "PNG") -> str:
    """An image as a ``data:`` URL (base64), the form every OpenAI-compatible server accepts without fetching.

    A file (or bytes) that is already a plain RGB PNG, JPEG or WEBP is sent as it is: the server decodes the very
    bytes the local pipeline decodes, and the client spends no time re-encoding (a 640x480 photo takes ~50 ms to
    encode as PNG, longer than a small model takes to answer it). Anything else is encoded as ``image_format``.

    Args:
        image (`PIL.Image.Image`, `str`, `os.PathLike` or `bytes`): the image, a file path, or encoded bytes.
        image_format (`str`, *optional*, defaults to `"PNG"`): the encoding of an image that has to be encoded:
            ``"PNG"`` (lossless: the server sees exactly the pixels ``pipeline("robopoint")`` would), ``"JPEG"`` or
            ``"WEBP"`` (smaller requests).

    Returns:
        `str`: ``data:image/png;base64,...``.
    """
    image_format = image_format.upper()
    if image_format not in _MIME_TYPES:
        raise ValueError(f"image_format must be one of {', '.join(_MIME_TYPES)}, got {image_format!r}")
    if isinstance(image, (bytes, str, os.PathLike)):
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        mime = _sendable_as_is(data)
        if mime is not None:
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        image = Image.open(io.BytesIO(data))
    elif not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image, a file path or bytes, got {type(image).__name__}")
    buffer = io.BytesIO()
    # RGB like the local pipeline: an alpha channel or palette would be converted differently by each server.
    image.convert("RGB").save(buffer, format=image_format)
    return f"data:{_MIME_TYPES[image_format]};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def build_messages(
    image: Image.Image | str | os.PathLike | bytes,
    instruction: str,
    *,
    answer_format: bool = True,
    image_format: str = "PNG",
    system: str | None = None,
) -> list[dict[str, Any]]:
    """OpenAI chat ``messages`` asking a served RoboPoint export to point at ``instruction`` in ``image``.

    Args:
        image (`PIL.Image.Image`, `str`, `os.PathLike` or `bytes`): the image; an ``http(s)://`` or ``data:``
            URL string is passed through for the server to fetch, anything else is sent inline (`image_data_url`).
        instruction (`str`): what to point at.
        answer_format (`bool`, *optional*, defaults to `True`): append `~points.ANSWER_FORMAT_SUFFIX`, as
            ``pipeline("robopoint")`` does; without it RoboPoint often answers in prose.
        image_format (`str`, *optional*, defaults to `"PNG"`): encoding of an inline image.
        system (`str`, *optional*): a system message; by default the export's chat template uses the checkpoint's.

    Returns:
        `list[dict]`: ``[{"role": "user", "content": [{"type": "image_url", ...}, {"type": "text", ...}]}]``,
        preceded by the system message if given.
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("instruction must be a non-empty string, e.g. 'Point to the free space left of the mug.'")
    if isinstance(image, str) and image.startswith(("http://", "https://", "data:")):
        url = image
    else:
        url = image_data_url(image, image_format)
    text = add_answer_format(instruction.strip()) if answer_format else instruction
    messages: list[dict[str, Any]] = [] if system is None else [{"role": "system", "content": system}]
    messages.append(
        {
            "role": "user",
            # Image before text: the export's template renders it as "<image>\n" ahead of the question, the
            # layout RoboPoint was trained on.
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
        }
    )
    return messages


def build_request(
    image: Image.Image | str | os.PathLike | bytes,
    instruction: str,
    *,
    model: str,
    engine: str = "vllm",
    constrained: bool = True,
    max_points: int | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    logprobs: bool = True,
    **message_kwargs: Any,
) -> dict[str, Any]:
    """The JSON body of a ``/v1/chat/completions`` request, with the engine's option for the answer grammar.

    The constraint is the same regular expression the local pipeline decodes with
    (:func:`~robopoint_hf.model.points.answer_regex`), in each engine's spelling of a regex-constrained output:

    * vLLM (>= 0.10.2): ``"structured_outputs": {"regex": ...}`` (older servers: ``"guided_regex"``);
    * SGLang: ``"regex": ...`` (a sampling parameter accepted at the top level of the body).

    With the ``openai`` client, put the engine's keys in ``extra_body``::

        body = build_request(image, "Point to the mug.", model="robopoint-13b-llava", engine="sglang")
        extra = {key: body.pop(key) for key in ("structured_outputs", "regex") if key in body}
        response = client.chat.completions.create(**body, extra_body=extra)

    Args:
        image, instruction: as `build_messages` (``**message_kwargs`` go there too).
        model (`str`): the served model's name.
        engine (`str`, *optional*, defaults to `"vllm"`): ``"vllm"`` or ``"sglang"``.
        constrained (`bool`, *optional*, defaults to `True`): ask for the answer grammar.
        max_points (`int`, *optional*): with ``constrained``, the answer closes after this many points.
        max_tokens (`int`, *optional*, defaults to 256), temperature (`float`, *optional*, defaults to 0),
            logprobs (`bool`, *optional*, defaults to `True`: `parse_response` scores points from them).

    Returns:
        `dict`: the request body.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    body: dict[str, Any] = {
        "model": model,
        "messages": build_messages(image, instruction, **message_kwargs),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "logprobs": logprobs,
    }
    if constrained:
        regex = answer_regex(max_points)
        if engine == "vllm":
            body["structured_outputs"] = {"regex": regex}
        else:
            body["regex"] = regex
    return body


# ---------------------------------------------------------------------------------------------------- response
def _as_dict(response: Any) -> Mapping[str, Any]:
    """A response as a mapping: dicts as they are, pydantic objects (the ``openai`` client's) via ``model_dump``."""
    if isinstance(response, Mapping):
        return response
    if callable(getattr(response, "model_dump", None)):
        return response.model_dump()
    raise TypeError(
        f"response must be the answer text, a chat-completion dict or an OpenAI response object; got "
        f"{type(response).__name__}"
    )


def _choice(response: Any, choice: int) -> Mapping[str, Any]:
    body = _as_dict(response)
    # OpenAI and SGLang nest the error ({"error": {"message": ...}}); vLLM sends {"object": "error", "message": ...}.
    error = body.get("error") or (body if body.get("object") == "error" else None)
    if error:
        message = error.get("message", error) if isinstance(error, Mapping) else error
        raise ValueError(f"the server returned an error: {message}")
    choices = body.get("choices") or []
    if not choices:
        raise ValueError("the response has no choices; is it a chat-completion response?")
    if not 0 <= choice < len(choices):
        raise ValueError(f"choice {choice} does not exist; the response has {len(choices)} choices")
    return choices[choice]


def response_text(response: Any, choice: int = 0) -> str:
    """The answer text of a chat-completion (or plain completion) response, or the text itself if given a string."""
    if isinstance(response, str):
        return response
    selected = _choice(response, choice)
    message = selected.get("message")
    content = message.get("content") if message is not None else selected.get("text")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
    if content is None:
        raise ValueError("the response's choice has no text content (a refusal or a tool call?)")
    if selected.get("finish_reason") == "length":
        logger.warning("The answer was cut at max_tokens; its last point may be missing. Raise max_tokens.")
    return content


def _token_logprobs(selected: Mapping[str, Any], text: str) -> tuple[list[int], list[float]] | None:
    """(character end of each token, its log-probability) from a choice's ``logprobs``, if they spell ``text``.

    The same inputs as the local pipeline's scoring (:func:`~robopoint_hf.model.point_records.item_scores`), so a
    served answer is scored exactly as a local one.

    Servers differ in what they put in ``token`` (vLLM can return ``token_id:N`` strings); scores are computed
    only when the tokens concatenate to exactly the answer text, so a mismatch means no scores, never wrong ones.
    """
    entries = (selected.get("logprobs") or {}).get("content") or []
    if not entries:
        return None
    ends, logprobs, position = [], [], 0
    for entry in entries:
        position += len(entry.get("token", ""))
        ends.append(position)
        logprobs.append(float(entry["logprob"]))
    if "".join(entry.get("token", "") for entry in entries) != text:
        return None
    return ends, logprobs


def parse_response(
    response: Any,
    image_size: tuple[int, int] | None = None,
    *,
    choice: int = 0,
    max_points: int | None = None,
    answer_format: str = "robopoint",
) -> dict[str, Any]:
    """Points (and boxes) of a served RoboPoint answer, in the records ``pipeline("robopoint")`` returns.

    Args:
        response (`str`, `dict` or OpenAI response object): the answer text, a chat-completion (or completion)
            response as a dict (e.g. ``requests.post(...).json()``), or the ``openai`` client's response object.
        image_size (`tuple[int, int]`, *optional*): ``(width, height)`` of the ORIGINAL image, to give every point
            both normalized and pixel coordinates. Without it, the coordinates the answer did not give are None.
        choice (`int`, *optional*, defaults to 0): which choice to read when ``n > 1`` was requested.
        max_points (`int`, *optional*): keep only the highest-scoring points (needs scores; in the model's order).
        answer_format (`str`, *optional*, defaults to `"robopoint"`): how the served model writes points, one of
            `robopoint_hf.evaluation.answer_formats.ANSWER_FORMATS` (Molmo tags, Qwen JSON, ...); scores are read
            from ``logprobs`` for RoboPoint answers only.

    Returns:
        `dict`: ``{"points", "boxes", "text", "parse_failed"}`` like the pipeline. Each record has a ``score``
        (geometric mean of its tokens' probabilities) when the response carries ``logprobs`` (request
        ``logprobs=True``), else ``score`` is None.

    Raises:
        ValueError: an error response, no choices, or a choice without text.
    """
    text = response_text(response, choice)
    if answer_format == "robopoint":
        parsed = parse_points(text)
        tokens = None if isinstance(response, str) else _token_logprobs(_choice(response, choice), text)
    else:
        from robopoint_hf.evaluation.answer_formats import parse_answer

        parsed, tokens = parse_answer(text, answer_format, image_size=image_size), None
    scores: list[float | None] = [None] * len(parsed.items)
    if tokens is not None and parsed.items:
        scores = item_scores(text, parsed, *tokens)
    points, boxes = answer_records(parsed, image_size, scores)
    if max_points is not None and len(points) > max_points:
        if any(point["score"] is None for point in points):
            raise ValueError("max_points needs scores: request logprobs=True from the server.")
        points = keep_top_points(points, max_points)
    return {"points": points, "boxes": boxes, "text": text.strip(), "parse_failed": parsed.parse_failed}
