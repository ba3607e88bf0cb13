"""``robopoint serve``: a RoboPoint model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint that answers
concurrent requests together, in one batched ``pipeline("robopoint")`` call.

For one CPU or edge box, and for evaluation and the demo's served columns, where a GPU engine (vLLM, SGLang, TGI) is
not there; on GPUs and at scale, serve the plain-LLaVA export with an engine instead (README, Serving). The design
and its measurements are in ``docs/design/serving.md``.

Requests are handled by a thread each (the standard library's ``ThreadingHTTPServer``): the thread reads and decodes
the request (:mod:`.completions`), so a malformed one is refused on its own, then queues it and waits. One batcher
thread owns the model: it blocks until a request is queued, then takes every request waiting, waits at most
``batch_timeout`` seconds for more while fewer than ``max_batch_size`` are there, and answers them in one pipeline
call per group of requests with equal decoding settings (the pipeline left-pads the rows and shares the prefix of
rows that show the same image). A seeded sampling request is answered alone. If a batched call fails, its rows are
asked again one by one, so that one bad row fails alone. Each response carries an ``X-Batch-Size`` header (the
requests answered together with it), and each batch is logged at INFO.

Shutdown (``server_close``, which ``robopoint serve`` runs on Ctrl-C or SIGTERM) stops listening, answers every
request already queued, and waits up to `DRAIN_TIMEOUT` seconds for their responses to be written, so that work the
model has done reaches its client before the process exits; a request arriving on an open connection meanwhile
gets 503.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``.

Example::

    from robopoint_hf.inference.loading import load_pipeline
    from robopoint_hf.inference.server import CompletionServer

    server = CompletionServer(load_pipeline("./robopoint-13b", "cpu", "float32"), "robopoint-13b", port=8000)
    server.serve_forever()  # http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .completions import ChatRequest, RequestError, chat_completion, completion_pipeline, parse_chat_request

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BATCH_TIMEOUT",
    "DEFAULT_HOST",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_PORT",
    "DRAIN_TIMEOUT",
    "Batcher",
    "BatcherClosed",
    "CompletionServer",
]

DEFAULT_HOST = "127.0.0.1"
"""Loopback only: the server has no authentication, so reaching it from the network is an explicit choice."""

DEFAULT_PORT = 8000
"""vLLM's and SGLang's usual port, so that a client set up for an engine finds this server too."""

DEFAULT_MAX_BATCH_SIZE = 8

DEFAULT_BATCH_TIMEOUT = 0.02
"""Seconds the batcher waits for more requests once one has arrived and the batch is not full: long enough for a
client's burst of concurrent requests to arrive together, short against one answer (docs/design/serving.md)."""

MAX_BODY_BYTES = 64 * 2**20
"""Largest request body: a 4K camera frame as a PNG data URL is about 30 MB."""

DRAIN_TIMEOUT = 10.0
"""Seconds `CompletionServer.server_close` waits, once the queued requests are answered, for their responses to be
written: ample for a local write, and bounded, so that a client that stopped reading cannot hold up the exit."""


class BatcherClosed(RuntimeError):
    """`Batcher.submit` after `Batcher.close`: the server is shutting down."""


@dataclass
class _Pending:
    request: ChatRequest
    future: Future = field(default_factory=Future)


class Batcher:
    """The one thread that runs the model, on batches of the requests waiting for it.

    Args:
        pipe: a `~.completion_pipeline.CompletionPipeline` (see `~.completions.completion_pipeline`).
        max_batch_size (`int`): the most requests answered together.
        batch_timeout (`float`): seconds to wait for more requests once one arrived, while the batch is not full.
    """

    def __init__(
        self, pipe, *, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, batch_timeout: float = DEFAULT_BATCH_TIMEOUT
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive integer, got {max_batch_size}")
        if batch_timeout < 0:
            raise ValueError(f"batch_timeout must be >= 0 seconds, got {batch_timeout}")
        self.pipe = pipe
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._closed = False
        self._closing = threading.Lock()  # a request is queued before the end marker, or refused
        self._thread = threading.Thread(target=self._run, name="robopoint-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: ChatRequest) -> Future:
        """Queues ``request``; the future's result is ``(pipeline result, batch size)``. Raises `BatcherClosed`
        after `close`."""
        pending = _Pending(request)
        with self._closing:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            self._queue.put(pending)
        return pending.future

    def close(self) -> None:
        """Answers what is queued, stops the thread and lets go of the model.

        Handler threads keep the server, and so this batcher, alive after the main thread is done with it. Were the
        model still held here, the last of them to finish (e.g. a keep-alive connection closing while the
        interpreter exits) would free its tensors, and a thread that frees torch tensors during interpreter shutdown
        aborts the process (``terminate called without an active exception``) instead of exiting with its code.
        """
        with self._closing:
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        self.pipe = None

    def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        batch, deadline = [first], time.monotonic() + self.batch_timeout
        while len(batch) < self.max_batch_size:
            try:
                pending = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if pending is None:
                return batch, True
            batch.append(pending)
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch, stopping = self._collect(first)
            groups: dict[Any, list[_Pending]] = {}
            for position, pending in enumerate(batch):
                key = position if pending.request.seed is not None else pending.request.settings
                groups.setdefault(key, []).append(pending)
            for group in groups.values():
                self._answer(group)

    def _answer(self, group: Sequence[_Pending]) -> None:
        start = time.perf_counter()
        try:
            results = self._generate([pending.request for pending in group])
        except Exception as error:
            if len(group) == 1:
                group[0].future.set_exception(error)
                return
            logger.warning("a batch of %d failed (%s); answering its requests one by one", len(group), error)
            for pending in group:
                self._answer([pending])
            return
        logger.info("answered %d request(s) in one batch in %.2f s", len(group), time.perf_counter() - start)
        for pending, result in zip(group, results, strict=True):
            pending.future.set_result((result, len(group)))

    def _generate(self, requests: Sequence[ChatRequest]) -> list[dict[str, Any]]:
        kwargs = requests[0].pipeline_kwargs
        if requests[0].seed is not None:
            from transformers import set_seed

            set_seed(requests[0].seed)
        return self.pipe(
            [request.image for request in requests],
            [request.text for request in requests],
            batch_size=len(requests),
            answer_format=False,  # the text is the client's, as an engine would use it
            stop_at_answer_end=kwargs["constrained"],
            **kwargs,
        )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a pooled client reuses its connections
    disable_nagle_algorithm = True  # headers and body are two writes: without it each response waits ~40 ms for an ACK
    server: CompletionServer

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/models":
            model = {"id": self.server.model_name, "object": "model", "created": 0, "owned_by": "robopoint_hf"}
            self._send(200, {"object": "list", "data": [model]})
        else:
            self._error(404, f"no such endpoint: GET {self.path}")

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._error(404, f"no such endpoint: POST {self.path}")
            return
        try:
            request = parse_chat_request(
                self._body(), self.server.model_name, default_max_new_tokens=self.server.default_max_new_tokens
            )
        except RequestError as error:
            self._error(error.status, str(error))
            return
        with self.server.answering():
            try:
                result, batch_size = self.server.batcher.submit(request).result()
            except BatcherClosed as error:
                self.close_connection = True
                self._error(503, str(error))
                return
            except ValueError as error:  # the pipeline's own checks (e.g. a prompt longer than the model's context)
                self._error(400, str(error))
                return
            except Exception as error:
                logger.exception("generation failed")
                self._error(500, f"{type(error).__name__}: {error}")
                return
            body = chat_completion(result, self.server.model_name, logprobs=request.logprobs)
            self._send(200, body, {"X-Batch-Size": str(batch_size)})

    def _body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError(411, "a Content-Length header is required") from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise RequestError(413, f"request body of {length} bytes is over the limit of {MAX_BODY_BYTES}")
        try:
            return json.loads(self.rfile.read(length))
        except ValueError as error:
            raise RequestError(400, f"the request body is not JSON: {error}") from error

    def _error(self, status: int, message: str) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._send(status, {"error": {"message": message, "type": kind, "code": status}})

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class CompletionServer(ThreadingHTTPServer):
    """The HTTP server of ``robopoint serve`` (see the module documentation).

    Args:
        pipe (`RoboPointPipeline`): the model, e.g. from `~robopoint_hf.inference.loading.load_pipeline`.
        model_name (`str`): the name ``/v1/models`` lists and requests give as ``model``.
        host (`str`, *optional*, defaults to ``"127.0.0.1"``), port (`int`, *optional*, defaults to 8000; 0: any
            free port, see ``server_address``).
        max_batch_size (`int`, *optional*, defaults to 8), batch_timeout (`float`, *optional*, defaults to 0.02):
            see `Batcher`.
    """

    daemon_threads = True  # a client that keeps its connection open never holds up shutdown
    allow_reuse_address = True

    def __init__(
        self,
        pipe,
        model_name: str,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_timeout: float = DEFAULT_BATCH_TIMEOUT,
    ):
        from robopoint_hf.model.points import DEFAULT_MAX_NEW_TOKENS

        pipe = completion_pipeline(pipe)
        self.model_name = model_name
        self.default_max_new_tokens = pipe.model.generation_config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        super().__init__((host, port), _Handler)  # binds first: a port in use fails before any thread starts
        self.batcher = Batcher(pipe, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self._in_flight = 0
        self._idle = threading.Condition()

    @property
    def url(self) -> str:
        """The API base clients are given: ``http://HOST:PORT/v1``."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Counts a request as in flight, from its queueing to its response's last byte (see `server_close`)."""
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def server_close(self) -> None:
        """Stops listening, answers the queued requests and waits (at most `DRAIN_TIMEOUT` s) until their responses
        are written. The handler threads are daemons, which the interpreter stops mid-write at exit."""
        super().server_close()
        self.batcher.close()
        with self._idle:
            if not self._idle.wait_for(lambda: self._in_flight == 0, timeout=DRAIN_TIMEOUT):
                logger.warning("%d response(s) not written within %.0f s of shutdown", self._in_flight, DRAIN_TIMEOUT)
