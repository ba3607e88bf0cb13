"""``robopoint serve``: the real server on 127.0.0.1, asked by ``robopoint eval`` and by raw requests.

The server runs the shipped default model with ``--max-batch-size 3 --batch-timeout 30``: a batch closes as soon as
three requests are there, so every test that sends three at once gets them answered in ONE batch (the server's log
and each response's ``X-Batch-Size`` header say so), and a test that sent fewer would wait 30 s instead of passing
by luck. Answers must be those of the local pipeline, byte for byte.
"""

from __future__ import annotations

import json
import signal
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai_server import robopoint_server

from robopoint_hf.checkpoints import default_model
from robopoint_hf.cli import main
from robopoint_hf.evaluation.runner import read_answer_lines
from robopoint_hf.inference import server as server_module
from robopoint_hf.inference.completions import RequestError, parse_chat_request
from robopoint_hf.inference.server import Batcher, BatcherClosed, CompletionServer
from robopoint_hf.inference.serving import build_messages, build_request, parse_response
from robopoint_hf.model.points import answer_regex

REAL = Path(__file__).parent / "fixtures" / "where2place_real"  # three real Where2Place items
IMAGE = REAL / "images" / "42.jpg"
MODEL = default_model()
SERVED_NAME = "default_model"  # what the shipped model is served as
BATCH = "3"


@pytest.fixture(scope="module")
def server():
    with robopoint_server(MODEL, "--max-batch-size", BATCH, "--batch-timeout", "30") as running:
        yield running


@pytest.fixture(scope="module")
def pipe():
    from robopoint_hf.inference.loading import load_pipeline

    return load_pipeline(MODEL, "cpu", "float32")


def post_together(url: str, bodies: list[dict]) -> list[httpx.Response]:
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: client.post(f"{url}/chat/completions", json=body), bodies))


# ---------------------------------------------------------------------------------------------------- served
@pytest.mark.slow
def test_eval_against_robopoint_serve_batches_and_equals_the_local_run(server, tmp_path, capsys):
    local, served = tmp_path / "local.jsonl", tmp_path / "served.jsonl"
    common = ["eval", "where2place", "--data-dir", str(REAL), "--max-new-tokens", "16", "--model-id", "m"]
    assert main([*common, "--output", str(local), "--model", MODEL]) == 0
    assert main([*common, "--output", str(served), "--endpoint", server.url, "--concurrency", BATCH]) == 0
    assert "answers: " in capsys.readouterr().out
    texts = [record["text"] for record in read_answer_lines(local)]
    assert len(texts) == 3 and all(texts)
    assert served.read_bytes() == local.read_bytes()
    assert f"answered {BATCH} request(s) in one batch" in server.log_text()


@pytest.mark.slow
def test_seeded_sampling_gives_the_local_runners_answers(server, tmp_path):
    """Each request carries its question's seed and is answered alone, as the local runner answers with batch 1."""
    local, served = tmp_path / "local.jsonl", tmp_path / "served.jsonl"
    common = ["eval", "where2place", "--data-dir", str(REAL), "--max-new-tokens", "16", "--model-id", "m"]
    common += ["--temperature", "0.7", "--seed", "5"]
    assert main([*common, "--output", str(local), "--model", MODEL]) == 0
    assert main([*common, "--output", str(served), "--endpoint", server.url, "--concurrency", BATCH]) == 0
    assert served.read_bytes() == local.read_bytes()
    greedy = main([*common[:-4], "--output", str(tmp_path / "greedy.jsonl"), "--model", MODEL])
    assert greedy == 0 and (tmp_path / "greedy.jsonl").read_bytes() != local.read_bytes()  # it did sample


@pytest.mark.slow
def test_constrained_requests_are_decoded_in_the_grammar_and_scored_like_the_pipeline(server, pipe):
    instruction = "Point to the free space left of the mug."
    body = build_request(IMAGE, instruction, model=SERVED_NAME, max_points=2, max_tokens=64)
    sglang = build_request(IMAGE, instruction, model=SERVED_NAME, engine="sglang", max_points=2, max_tokens=64)
    responses = post_together(server.url, [body, sglang, body])
    assert [response.headers["X-Batch-Size"] for response in responses] == [BATCH] * 3
    expected = pipe(str(IMAGE), instruction, max_points=2, max_new_tokens=64, constrained=True)
    for response in responses:
        assert response.status_code == 200, response.text
        result = parse_response(response.json(), image_size=(640, 480))
        assert result["text"] == expected["text"]
        # Scores from the served token log-probabilities: a batched row's float32 logits differ in the 8th digit.
        assert result["points"] == [
            {**point, "score": pytest.approx(point["score"], rel=1e-5)} for point in expected["points"]
        ]
        assert response.json()["choices"][0]["finish_reason"] == "stop"
    assert len(expected["points"]) == 2


@pytest.mark.slow
def test_a_row_the_model_cannot_answer_fails_alone(server):
    good = {"messages": build_messages(IMAGE, "Point to the mug."), "max_tokens": 8, "temperature": 0}
    too_long = {"messages": build_messages(IMAGE, "mug " * 2000), "max_tokens": 8, "temperature": 0}
    responses = post_together(server.url, [good, too_long, good])
    assert [response.status_code for response in responses] == [200, 400, 200]
    assert "context" in responses[1].json()["error"]["message"]
    assert responses[0].json()["choices"][0]["finish_reason"] == "length"
    assert responses[0].json()["usage"]["completion_tokens"] == 8


@pytest.mark.slow
def test_models_health_and_refusals(server):
    listed = httpx.get(f"{server.url}/models").json()
    assert [entry["id"] for entry in listed["data"]] == [SERVED_NAME]
    assert httpx.get(server.url.removesuffix("/v1") + "/health").status_code == 200
    messages = build_messages(IMAGE, "Point to the mug.")
    for body, status, words in [
        ({"model": "other", "messages": messages}, 404, "not served here"),
        ({"messages": messages, "stream": True}, 400, "stream"),
        ({"messages": messages, "regex": "[a-z]+"}, 400, "answer grammar"),
    ]:
        response = httpx.post(f"{server.url}/chat/completions", json=body)
        assert response.status_code == status and words in response.json()["error"]["message"]
    response = httpx.post(f"{server.url}/chat/completions", content=b"{not json")
    assert response.status_code == 400 and "not JSON" in response.json()["error"]["message"]


@pytest.mark.slow
def test_ctrl_c_stops_the_server_with_130():
    with robopoint_server(MODEL) as running:
        running.process.send_signal(signal.SIGINT)
        assert running.process.wait(timeout=30) == 130
        assert running.log_text().rstrip().endswith("robopoint serve: error: interrupted")


def test_a_closed_batcher_lets_go_of_the_model():
    """Handler threads outlive the main thread's hold on the server; the model must not be theirs to free."""

    class Model:
        def __call__(self, *args, **kwargs):
            raise AssertionError("nothing was submitted")

    model = Model()
    alive = weakref.ref(model)
    batcher = Batcher(model)  # stands for the server that a keep-alive handler thread still holds
    batcher.close()
    del model
    assert alive() is None and not batcher._thread.is_alive()
    with pytest.raises(BatcherClosed, match="shutting down"):  # a late request on an open connection: 503
        batcher.submit(parse_chat_request(chat_body(), "m", default_max_new_tokens=8))


def test_shutdown_writes_the_answers_of_requests_in_flight(pipe, monkeypatch):
    """Ctrl-C while a request waits in the batcher: the batcher answers it, and ``server_close`` returns only once
    that answer is written. The handler threads are daemons, which the interpreter's exit stops mid-write."""
    written = []
    send = server_module._Handler._send

    def send_and_record(handler, status, body, headers=None):
        send(handler, status, body, headers)
        written.append(status)

    monkeypatch.setattr(server_module._Handler, "_send", send_and_record)
    # A batch of 2 that waits 30 s for its second request: the one request sent stays queued until the shutdown.
    server = CompletionServer(pipe, "m", port=0, max_batch_size=2, batch_timeout=30)
    queued, submit = threading.Event(), server.batcher.submit
    server.batcher.submit = lambda request: (submit(request), queued.set())[0]
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    with ThreadPoolExecutor(1) as client:
        response = client.submit(
            httpx.post, f"{server.url}/chat/completions", json=chat_body(max_tokens=8), timeout=60
        )
        assert queued.wait(timeout=60)
        server.shutdown()
        serving.join()
        server.server_close()
        assert written == [200]
        assert response.result().json()["usage"]["completion_tokens"] == 8


def test_a_port_in_use_fails_before_the_model_loads(capsys, port_in_use):
    assert main(["serve", "--port", str(port_in_use)]) == 2
    assert (
        f"robopoint serve: error: cannot listen on 127.0.0.1:{port_in_use}: Address already in use"
        in capsys.readouterr().err
    )


# ---------------------------------------------------------------------------------------------------- parsing
def chat_body(**fields) -> dict:
    return {"messages": build_messages(IMAGE, "Point to the mug."), **fields}


def test_requests_become_pipeline_settings():
    request = parse_chat_request(chat_body(max_tokens=12, temperature=0), "m", default_max_new_tokens=256)
    assert request.pipeline_kwargs == {"max_new_tokens": 12, "do_sample": False, "constrained": False}
    assert request.image.size == (640, 480) and request.text.startswith("Point to the mug.")
    sampled = parse_chat_request(chat_body(temperature=0.2, top_p=0.9, seed=3), "m", default_max_new_tokens=256)
    assert sampled.pipeline_kwargs == {
        "max_new_tokens": 256, "do_sample": True, "temperature": 0.2, "top_p": 0.9, "constrained": False,
    }  # fmt: skip
    assert sampled.seed == 3
    for field in ({"structured_outputs": {"regex": answer_regex(4)}}, {"guided_regex": answer_regex(4)}):
        constrained = parse_chat_request(chat_body(**field), "m", default_max_new_tokens=256)
        assert constrained.pipeline_kwargs["constrained"] and constrained.pipeline_kwargs["max_points"] == 4
    unlimited = parse_chat_request(chat_body(regex=answer_regex()), "m", default_max_new_tokens=256)
    assert unlimited.pipeline_kwargs["max_points"] is None


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ([], 400, "JSON object"),
        ({"messages": []}, 400, "non-empty list"),
        (chat_body(n=2), 400, "n: one answer"),
        (chat_body(stop=["]"]), 400, "stop sequences"),
        (chat_body(max_tokens=0), 400, "max_tokens must be >= 1"),
        (chat_body(temperature="hot"), 400, "temperature must be a number"),
        (chat_body(regex="a", guided_regex="b"), 400, "two different regexes"),
        (chat_body(structured_outputs={"json": {}}), 400, "structured_outputs"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "content parts"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, 400, "exactly one image"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
                                                       {"type": "text", "text": "hi"}]}]},
            400,
            "base64 data: URL",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                                       {"type": "text", "text": "hi"}]}]},
            400,
            r"not a readable image \(3 bytes in no format PIL reads\)",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,A%"}},
                                                       {"type": "text", "text": "hi"}]}]},
            400,
            "not valid base64",
        ),
        (chat_body(model="other"), 404, "not served here"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_naming_the_field(body, status, words):
    with pytest.raises(RequestError, match=words) as caught:
        parse_chat_request(json.loads(json.dumps(body)), "m", default_max_new_tokens=256)
    assert caught.value.status == status
