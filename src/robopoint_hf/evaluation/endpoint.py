"""Answering benchmarks with any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, TGI, ``transformers serve``).

A model served by an engine is evaluated through the same resumable runner as a local one
(:func:`~robopoint_hf.evaluation.runner.run_answers`): the same answer-file format, the same resume rules, the same
scoring. Only the function that turns a batch of questions into answer texts differs: here it sends up to
``concurrency`` requests at a time, each built and read by an `AnswerFormat`, and retries transient failures
(connection errors, timeouts, HTTP 408/429/5xx) with exponential backoff. A question that still fails stops the run
with a message naming it; everything answered before it is already on disk, and rerunning the command resumes.

Example::

    from robopoint_hf.evaluation.endpoint import EndpointClient, endpoint_answer_fn
    from robopoint_hf.evaluation.runner import run_answers
    from robopoint_hf.evaluation.where2place import load_questions

    questions = load_questions("where2place")
    client = EndpointClient("http://127.0.0.1:8000/v1", "robopoint-13b-llava")
    run_answers(questions, endpoint_answer_fn(client, concurrency=8), "answers/r13b-vllm.jsonl",
                model_id="r13b-vllm", batch_size=8)
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from robopoint_hf.inference.serving import build_messages, parse_response, response_text
from robopoint_hf.model.points import DEFAULT_MAX_NEW_TOKENS

from .answer_formats import ANSWER_FORMATS as ADAPTED_FORMATS
from .benchmarks import BenchmarkRecord
from .runner import AnswerFn, instruction_of, question_seed

logger = logging.getLogger(__name__)

__all__ = [
    "ANSWER_FORMATS",
    "AnswerFormat",
    "EndpointClient",
    "EndpointError",
    "endpoint_answer_fn",
    "get_answer_format",
    "request_params",
]

DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_RETRIES = 5
DEFAULT_REQUEST_TIMEOUT = 600.0
"""Seconds one request may take: a 13B model answering 1024 tokens behind a busy engine's queue can take minutes."""

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses worth asking again: timeouts, rate limits, an engine restarting or overloaded."""


# ---------------------------------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class AnswerFormat:
    """How to ask a served model to point, and how to read its answer: the one seam between models' conventions.

    Args:
        name (`str`): the ``--answer-format`` value.
        build_messages (`Callable`): ``(image, instruction, *, answer_format: bool) -> messages``; ``answer_format``
            says whether to add the model's own answer-format instruction to the question.
        parse_response (`Callable`): ``(response, image_size, *, max_points) -> {"points", "boxes", "text",
            "parse_failed"}`` with points in normalized coordinates of the original image (``pipeline`` records).
    """

    name: str
    build_messages: Callable[..., list[dict[str, Any]]]
    parse_response: Callable[..., dict[str, Any]]


def _answer_format(name: str) -> AnswerFormat:
    """RoboPoint models are asked with RoboPoint's answer-format sentence when wanted; other models are asked the
    question as written (their own prompt conventions differ) and read with their adapter."""
    if name == "robopoint":
        return AnswerFormat(name, build_messages, parse_response)

    def ask(image, instruction, *, answer_format: bool = False):
        return build_messages(image, instruction, answer_format=False)

    return AnswerFormat(name, ask, functools.partial(parse_response, answer_format=name))


ANSWER_FORMATS: dict[str, AnswerFormat] = {name: _answer_format(name) for name in ADAPTED_FORMATS}
"""``--answer-format`` name -> `AnswerFormat`, for every adapter of `robopoint_hf.evaluation.answer_formats`; every
entry point (evaluation, demo) looks formats up here."""


def get_answer_format(name: str) -> AnswerFormat:
    """The `AnswerFormat` called ``name``; a ValueError listing the known ones otherwise."""
    if name not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {name!r}; known: {', '.join(sorted(ANSWER_FORMATS))}")
    return ANSWER_FORMATS[name]


# ---------------------------------------------------------------------------------------------------- client
class EndpointError(RuntimeError):
    """A request that failed for good: a non-transient HTTP error, or a transient one after every retry."""


class EndpointClient:
    """A thread-safe client of one model on an OpenAI-compatible server, with retries and backoff.

    Args:
        url (`str`): the API base, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended).
        model (`str`, *optional*): the served model name; by default the server's only model (``GET /models``).
        api_key (`str`, *optional*): sent as a Bearer token (vLLM's ``--api-key``, hosted endpoints).
        request_timeout (`float`, *optional*, defaults to 600): seconds one request may take.
        max_retries (`int`, *optional*, defaults to 5): retries of a transient failure; the waits double from
            ``retry_backoff`` up to ``max_backoff`` (with jitter), or follow the server's ``Retry-After``.
        retry_backoff (`float`, *optional*, defaults to 1.0): the first wait, in seconds.
        max_backoff (`float`, *optional*, defaults to 30.0): the longest wait, in seconds.
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff: float = 1.0,
        max_backoff: float = 30.0,
    ):
        import httpx

        if not url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint URL must start with http:// or https://, got {url!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.url = url.rstrip("/")
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One pooled client for every thread: httpx.Client is thread-safe and keeps connections alive.
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=request_timeout)
        self._model = model

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EndpointClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def model(self) -> str:
        """The served model name: as given, else the server's only model."""
        if self._model is None:
            listed = self._request("GET", "/models")
            names = [entry.get("id") for entry in listed.get("data", [])]
            if len(names) != 1:
                raise EndpointError(
                    f"{self.url} serves {len(names)} models ({', '.join(map(str, names)) or 'none'}); "
                    "name one with --endpoint-model"
                )
            self._model = names[0]
        return self._model

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        """``POST /chat/completions`` with ``messages`` and OpenAI ``params``; the response body as a dict.

        Raises:
            EndpointError: the request failed for good (names the URL, model and the server's message).
        """
        return self._request("POST", "/chat/completions", {"model": self.model, "messages": messages, **params})

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as error:  # refused, reset, timed out: the server may be (re)starting
                problem = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError as error:
                        raise EndpointError(f"{self.url}{path} answered with something that is not JSON") from error
                problem = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code not in TRANSIENT_STATUS:
                    raise EndpointError(f"{self.url}{path} (model {self._model!r}): {problem}")
                retry_after = _seconds(response.headers.get("retry-after"))
            if attempt == self.max_retries:
                break
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            logger.warning(
                "%s%s: %s; retry %d/%d in %.1f s", self.url, path, problem, attempt + 1, self.max_retries, delay
            )
            time.sleep(delay)
        raise EndpointError(f"{self.url}{path}: {problem} (gave up after {self.max_retries} retries)")

    def _backoff(self, attempt: int) -> float:
        # Jitter keeps concurrent requests that failed together from all retrying at the same instant.
        return min(self.max_backoff, self.retry_backoff * 2**attempt) * random.uniform(0.5, 1.0)


def _error_message(response: Any) -> str:
    """The server's own words: OpenAI/SGLang ``{"error": {"message"}}``, vLLM ``{"message"}``, FastAPI ``{"detail"}``."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and "message" in error:
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    return str(body)[:300]


def _seconds(value: str | None) -> float | None:
    try:
        return min(120.0, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------- evaluation
def request_params(
    *,
    temperature: float = 0.0,
    top_p: float | None = None,
    max_new_tokens: int | None = DEFAULT_MAX_NEW_TOKENS,
) -> dict[str, Any]:
    """OpenAI request parameters for the command line's decoding options (``temperature=0`` is greedy everywhere)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_p is not None and temperature == 0:
        raise ValueError("top_p only applies to sampling; give --temperature > 0 as well")
    params: dict[str, Any] = {"temperature": float(temperature)}
    if top_p is not None:
        params["top_p"] = top_p
    if max_new_tokens is not None:
        params["max_tokens"] = max_new_tokens
    return params


def endpoint_answer_fn(
    client: EndpointClient,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    answer_format: str = "robopoint",
    add_answer_format: bool = False,
    seed: int | None = None,
    **params: Any,
) -> AnswerFn:
    """An `~eval_runner.AnswerFn` that asks ``client``, up to ``concurrency`` questions at a time.

    Questions are sent as written, like the local runner's (`~eval_runner.pipeline_answer_fn`): the image, then the
    question without a leading ``<image>\\n``; ``add_answer_format`` appends the format's answer-format instruction.

    Args:
        client (`EndpointClient`): the served model.
        concurrency (`int`, *optional*, defaults to 8): requests in flight at once (of one batch of the runner).
        answer_format (`str`, *optional*, defaults to `"robopoint"`): an `ANSWER_FORMATS` name.
        add_answer_format (`bool`, *optional*, defaults to `False`): append the answer-format instruction.
        seed (`int`, *optional*): each question is sent with ```~eval_runner.question_seed` (sampling reproducible
            whatever the order, concurrency or resumes; engines that honour ``seed``).
        **params: OpenAI request parameters (see `request_params`).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, got {concurrency}")
    builder = get_answer_format(answer_format).build_messages

    def ask(question: BenchmarkRecord) -> str:
        image = question.image if isinstance(question.image, Image.Image) else str(question.image)
        messages = builder(image, instruction_of(question.text), answer_format=add_answer_format)
        extra = {} if seed is None else {"seed": question_seed(seed, question.question_id)}
        try:
            return response_text(client.chat(messages, **params, **extra))
        except (EndpointError, ValueError) as error:
            raise EndpointError(f"question {question.question_id!r}: {error}") from error

    def answer(questions: Sequence[BenchmarkRecord]) -> list[str]:
        with ThreadPoolExecutor(max_workers=min(concurrency, len(questions))) as pool:
            return list(pool.map(ask, questions))

    return answer
