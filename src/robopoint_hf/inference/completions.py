"""The OpenAI chat-completions protocol for a RoboPoint pipeline: a request in, the pipeline's arguments out; the
pipeline's answer in, a ``chat.completion`` response out. ``robopoint serve`` (:mod:`.server`) speaks it over HTTP.

A request is what every OpenAI-compatible client sends and what :func:`~.serving.build_messages` builds: one user
message holding one image (a ``data:`` URL) and the instruction. The image goes before the text whatever the order
of the parts, as RoboPoint was trained, and the text is used as written (the client adds the answer-format sentence
or not, as it would for an engine). Decoding follows the request: ``temperature`` 0 (or absent, with a greedy
generation config) is greedy, ``max_tokens`` caps the answer, ``seed`` makes sampling reproducible, and the regex of
a structured-output request, in vLLM's (``structured_outputs``, ``guided_regex``) or SGLang's (``regex``) spelling,
turns on the pipeline's constrained decoding when it is RoboPoint's answer grammar
(:func:`~robopoint_hf.model.points.answer_regex`, as :func:`~.serving.build_request` sends it): the same answers as
``pipeline("robopoint", constrained=True)``. What the pipeline cannot do (streaming, ``n > 1``, ``stop``, other
grammars, tools) is refused with a 400 naming the field, never ignored.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from robopoint_hf.model.points import answer_regex

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["ChatRequest", "RequestError", "chat_completion", "completion_pipeline", "parse_chat_request"]

MAX_GRAMMAR_POINTS = 64
"""Largest ``max_points`` a structured-output regex is recognised for (``answer_regex(1)`` ... ``answer_regex(64)``)."""

UNSUPPORTED_FIELDS = {
    "stream": "streaming is not supported; send stream=false",
    "stop": "stop sequences are not supported; answers end at the closing ']' or EOS",
    "tools": "tools are not supported",
    "functions": "functions are not supported",
    "response_format": "response_format is not supported; send RoboPoint's answer grammar as a regex",
    "guided_json": "only a regex (RoboPoint's answer grammar) is supported as structured output",
    "guided_grammar": "only a regex (RoboPoint's answer grammar) is supported as structured output",
    "guided_choice": "only a regex (RoboPoint's answer grammar) is supported as structured output",
    "json_schema": "only a regex (RoboPoint's answer grammar) is supported as structured output",
    "ebnf": "only a regex (RoboPoint's answer grammar) is supported as structured output",
}
"""Request fields that would change the answer in a way this server cannot honour, and why (a falsy value is
accepted: ``"stream": false``)."""


class RequestError(ValueError):
    """A request the server refuses: ``status`` (400 malformed or unsupported, 404 unknown model) and one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ChatRequest:
    """One parsed chat-completions request.

    Args:
        image (`PIL.Image.Image`): the decoded image.
        text (`str`): the instruction, as sent.
        settings (`tuple`): the pipeline arguments as sorted ``(name, value)`` pairs; requests with equal settings
            can share a ``generate`` call.
        seed (`int`, *optional*): the sampling seed; a seeded request is answered alone, so that its answer does not
            depend on what else was asked at the same time.
        logprobs (`bool`): return each answer token's log-probability.
    """

    image: Image.Image
    text: str
    settings: tuple[tuple[str, Any], ...]
    seed: int | None = None
    logprobs: bool = False

    @property
    def pipeline_kwargs(self) -> dict[str, Any]:
        return dict(self.settings)


@functools.cache
def _known_grammars() -> dict[str, int | None]:
    """RoboPoint's answer regex -> the ``max_points`` it encodes (None: unlimited)."""
    return {answer_regex(count): count for count in (None, *range(1, MAX_GRAMMAR_POINTS + 1))}


def _requested_regex(body: Mapping[str, Any]) -> str | None:
    spellings = []
    structured = body.get("structured_outputs")
    if structured is not None:
        if not isinstance(structured, Mapping) or set(structured) - {"regex"}:
            raise RequestError(
                400, "structured_outputs: only {'regex': ...} (RoboPoint's answer grammar) is supported"
            )
        spellings.append(structured.get("regex"))
    spellings += [body.get("guided_regex"), body.get("regex")]
    given = {regex for regex in spellings if regex is not None}
    if len(given) > 1:
        raise RequestError(400, "two different regexes in one request (structured_outputs, guided_regex, regex)")
    regex = next(iter(given), None)
    if regex is not None and not isinstance(regex, str):
        raise RequestError(400, f"the regex must be a string, got {type(regex).__name__}")
    return regex


def _decode_image(url: Any) -> Image.Image:
    from PIL import Image

    if not isinstance(url, str) or not url.startswith("data:"):
        shown = url[:40] if isinstance(url, str) else type(url).__name__
        raise RequestError(400, f"image_url must be a base64 data: URL (data:image/png;base64,...), got {shown!r}")
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise RequestError(400, "image_url: only base64 data: URLs are supported (data:image/...;base64,...)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, f"image_url: the data: URL is not valid base64 ({error})") from error
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return opened.convert("RGB")  # decoded now: a broken image fails this request, not its batch
    except Image.UnidentifiedImageError:
        raise RequestError(
            400, f"image_url: not a readable image ({len(data)} bytes in no format PIL reads)"
        ) from None
    except (ValueError, OSError, Image.DecompressionBombError) as error:
        raise RequestError(400, f"image_url: not a readable image ({error})") from error


def _message_parts(messages: Any) -> tuple[Image.Image, str]:
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list")
    if len(messages) != 1 or not isinstance(messages[0], Mapping) or messages[0].get("role") != "user":
        raise RequestError(
            400,
            "send one user message with one image and the instruction (the checkpoint's own system prompt is used; "
            "RoboPoint answers single questions)",
        )
    content = messages[0].get("content")
    if not isinstance(content, list):
        raise RequestError(400, "the user message needs content parts: an image_url part and a text part")
    images = [
        part.get("image_url") for part in content if isinstance(part, Mapping) and part.get("type") == "image_url"
    ]
    texts = [part.get("text") for part in content if isinstance(part, Mapping) and part.get("type") == "text"]
    if len(images) != 1:
        raise RequestError(400, f"the user message needs exactly one image_url part, got {len(images)}")
    if len(texts) + len(images) != len(content) or not all(isinstance(text, str) for text in texts):
        raise RequestError(400, "content parts must be {'type': 'image_url', ...} or {'type': 'text', 'text': str}")
    text = "\n".join(texts)
    if not text.strip():
        raise RequestError(400, "the user message has no instruction text")
    image_url = images[0].get("url") if isinstance(images[0], Mapping) else images[0]
    return _decode_image(image_url), text


def _number(body: Mapping[str, Any], name: str, kind: type, minimum: float) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and not float(value).is_integer())
    ):
        raise RequestError(400, f"{name} must be a number, got {value!r}")
    if value < minimum:
        raise RequestError(400, f"{name} must be >= {minimum}, got {value!r}")
    return kind(value)


def parse_chat_request(body: Any, model_name: str, *, default_max_new_tokens: int) -> ChatRequest:
    """A ``/v1/chat/completions`` body -> `ChatRequest`; a `RequestError` naming the field otherwise.

    Args:
        body: the decoded JSON body.
        model_name (`str`): the served model's name; a request naming another model gets a 404.
        default_max_new_tokens (`int`): the answer's length limit when the request sets none.
    """
    if not isinstance(body, Mapping):
        raise RequestError(400, "the request body must be a JSON object")
    model = body.get("model")
    if model not in (None, "", model_name):
        raise RequestError(404, f"model {model!r} is not served here; this server serves {model_name!r}")
    for name, reason in UNSUPPORTED_FIELDS.items():
        if body.get(name):
            raise RequestError(400, f"{name}: {reason}")
    if body.get("n") not in (None, 1):
        raise RequestError(400, f"n: one answer per request (n=1), got {body.get('n')!r}")
    image, text = _message_parts(body.get("messages"))
    max_tokens = _number(body, "max_completion_tokens", int, 1) or _number(body, "max_tokens", int, 1)
    temperature = _number(body, "temperature", float, 0.0)
    top_p = _number(body, "top_p", float, 0.0)
    seed = _number(body, "seed", int, 0)
    settings: dict[str, Any] = {"max_new_tokens": max_tokens or default_max_new_tokens}
    if temperature is not None:
        settings["do_sample"] = temperature > 0
        if temperature > 0:
            settings["temperature"] = temperature
            if top_p is not None:
                settings["top_p"] = top_p
    regex = _requested_regex(body)
    if regex is not None:
        if regex not in _known_grammars():
            raise RequestError(
                400,
                "regex: only RoboPoint's answer grammar is supported "
                "(robopoint_hf.model.points.answer_regex(max_points), as build_request sends it)",
            )
        settings["constrained"] = True
        settings["max_points"] = _known_grammars()[regex]
    else:
        settings["constrained"] = False
    return ChatRequest(
        image=image,
        text=text,
        settings=tuple(sorted(settings.items())),
        seed=seed if settings.get("do_sample") else None,
        logprobs=bool(body.get("logprobs")),
    )


def chat_completion(result: Mapping[str, Any], model_name: str, *, logprobs: bool = False) -> dict[str, Any]:
    """The ``chat.completion`` response body of one `completion_pipeline` result."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": result["text"]},
        "finish_reason": result["finish_reason"],
        "logprobs": None,
    }
    if logprobs:
        choice["logprobs"] = {
            "content": [
                {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8")), "top_logprobs": []}
                for token, logprob in result["token_logprobs"]
            ]
        }
    prompt, completion = result["prompt_tokens"], result["completion_tokens"]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def completion_pipeline(pipe):
    """``pipe`` (a `RoboPointPipeline`) as one whose results also carry what a chat completion reports.

    Each result gains ``finish_reason`` (``"length"`` when the answer used every allowed token without ending),
    ``prompt_tokens``, ``completion_tokens`` and ``token_logprobs`` (``(text, log-probability)`` per answer token,
    the pipeline's own scores, whose texts concatenate to the answer when it has no surrounding spaces). Same model,
    processor and device; nothing is reloaded.
    """
    from .completion_pipeline import CompletionPipeline

    return CompletionPipeline(model=pipe.model, processor=pipe.processor, device=pipe.device)
