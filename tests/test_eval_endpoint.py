"""The OpenAI-compatible endpoint backend of ``robopoint eval``, against a real ``transformers serve`` on 127.0.0.1.

The served model is the plain-LLaVA export of the original fixture checkpoint; the local side is the same checkpoint
converted to our format (see ``openai_server.py``). Greedy answers of the two must be the same bytes, so the answer
files of an endpoint run and of a local run are identical. Tests without a server (unreachable endpoint, option
checks) run on every machine.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from openai_server import free_port, openai_server

from robopoint_hf.cli import main
from robopoint_hf.evaluation.endpoint import (
    ANSWER_FORMATS,
    EndpointClient,
    EndpointError,
    endpoint_answer_fn,
    get_answer_format,
    request_params,
)
from robopoint_hf.evaluation.runner import read_answer_lines
from robopoint_hf.evaluation.where2place import load_questions
from robopoint_hf.inference.serving import build_messages, parse_response
from robopoint_hf.model.points import DEFAULT_MAX_NEW_TOKENS

REAL = Path(__file__).parent / "fixtures" / "where2place_real"  # three real Where2Place items, ids 42, 99, 44
TOKENS = "16"  # the random fixture model never stops early: every answer is exactly this many tokens


def eval_argv(data: Path, output: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "where2place",
        "--data-dir",
        str(data),
        "--output",
        str(output),
        "--max-new-tokens",
        TOKENS,
        *extra,
    ]


# ---------------------------------------------------------------------------------------------------- served
@pytest.mark.slow
def test_endpoint_run_and_local_run_write_identical_files(fixture_server, tmp_path, capsys):
    """Same checkpoint, greedy: `transformers serve` + our request == our pipeline, to the byte, 3 requests at once."""
    local, served = tmp_path / "local.jsonl", tmp_path / "served.jsonl"
    assert main(eval_argv(REAL, local, "--model", str(fixture_server.local), "--model-id", "m")) == 0
    endpoint = ["--endpoint", fixture_server.url, "--concurrency", "3", "--model-id", "m"]
    assert main(eval_argv(REAL, served, *endpoint)) == 0
    printed = capsys.readouterr().out
    assert f"answers: {served} (3 questions, model_id 'm')" in printed and "strict" in printed
    texts = [record["text"] for record in read_answer_lines(local)]
    assert len(set(texts)) == 3 and all(texts)  # three different answers, one per image and question
    assert served.read_bytes() == local.read_bytes()


@pytest.mark.slow
def test_endpoint_run_resumes_like_the_local_runner(fixture_server, tmp_path, capsys):
    """A run killed mid-write (one whole line and a torn second) resumes: only the rest is asked, the file is the
    same as an uninterrupted run's."""
    full, resumed = tmp_path / "full.jsonl", tmp_path / "resumed.jsonl"
    endpoint = ["--endpoint", fixture_server.url, "--endpoint-model", fixture_server.name, "--concurrency", "2"]
    assert main(eval_argv(REAL, full, *endpoint)) == 0
    lines = full.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    resumed.write_bytes(lines[0] + lines[1][:40])
    capsys.readouterr()
    assert main(eval_argv(REAL, resumed, *endpoint)) == 0
    assert "2/2 answered" in capsys.readouterr().err
    assert resumed.read_bytes() == full.read_bytes()


@pytest.mark.slow
def test_client_error_is_reported_at_once_with_the_servers_words(fixture_server, caplog):
    """A 4xx is not transient: no retry, and the message is the server's own."""
    question = load_questions(REAL)[0]
    with EndpointClient(fixture_server.url, "no-such-model", retry_backoff=0.001) as client:
        answer = endpoint_answer_fn(client, **request_params(max_new_tokens=4))
        with caplog.at_level(logging.WARNING), pytest.raises(EndpointError) as error:
            answer([question])
    assert "question 42" in str(error.value) and "HTTP 4" in str(error.value)
    assert "no-such-model" in str(error.value)
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


@pytest.mark.slow
def test_the_only_served_model_is_found_and_its_answer_parses(fixture_server):
    """Without a model name the client asks ``/models``; the reply parses with `parse_response` like any other."""
    image = REAL / "images" / "42.jpg"
    with EndpointClient(fixture_server.url) as client:
        assert client.model == fixture_server.name
        response = client.chat(build_messages(image, "Point to the sink."), **request_params(max_new_tokens=8))
    assert response["choices"][0]["message"]["content"]
    assert get_answer_format("robopoint").parse_response(response, (640, 480)) == parse_response(response, (640, 480))


@pytest.mark.slow
def test_requests_are_retried_until_a_late_server_is_up(fixture_server):
    """The client starts before the server: connection refused is retried with backoff until the server answers."""
    port = free_port()
    outcome = {}

    def ask():
        with EndpointClient(
            f"http://127.0.0.1:{port}/v1", max_retries=200, retry_backoff=0.1, max_backoff=0.5
        ) as client:
            try:
                outcome["model"] = client.model  # GET /models
            except EndpointError as error:
                outcome["error"] = error

    thread = threading.Thread(target=ask)
    thread.start()  # its first attempts are refused: nothing listens yet
    with openai_server(fixture_server.name, port=port):  # a second server of the same export
        thread.join(timeout=60)
    assert outcome == {"model": fixture_server.name}


# ---------------------------------------------------------------------------------------------------- no server
def test_unreachable_endpoint_is_retried_then_names_the_question(tmp_path, caplog, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    questions = load_questions(REAL)
    with EndpointClient(url, "m", max_retries=2, retry_backoff=0.001) as client:
        answer = endpoint_answer_fn(client, concurrency=1)
        with caplog.at_level(logging.WARNING), pytest.raises(EndpointError) as error:
            answer(questions[:1])
    assert "question 42" in str(error.value) and "gave up after 2 retries" in str(error.value)
    assert "ConnectError" in str(error.value)
    assert [r.getMessage().split("; ")[1][:9] for r in caplog.records] == ["retry 1/2", "retry 2/2"]

    output = tmp_path / "answers.jsonl"
    argv = eval_argv(REAL, output, "--endpoint", url, "--endpoint-model", "m", "--max-retries", "0")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("robopoint eval where2place: error: question 42") and "gave up after 0 retries" in err
    assert read_answer_lines(output) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--endpoint", "http://127.0.0.1:9/v1", "--model", "x"], "--model cannot be used with --endpoint"),
        (["--endpoint", "http://127.0.0.1:9/v1", "--num-beams", "2"], "--num-beams cannot be used with --endpoint"),
        (["--endpoint-model", "m"], "--endpoint-model needs --endpoint"),
        (["--endpoint", "127.0.0.1:8000"], "must start with http:// or https://"),
        (["--endpoint", "http://127.0.0.1:9/v1", "--top-p", "0.9"], "top_p only applies to sampling"),
    ],
)
def test_cli_refuses_options_that_do_not_apply(tmp_path, capsys, extra, message):
    assert main(eval_argv(REAL, tmp_path / "a.jsonl", *extra)) in (1, 2)
    assert message in capsys.readouterr().err


def test_answer_formats_are_looked_up_in_one_place():
    assert get_answer_format("robopoint") is ANSWER_FORMATS["robopoint"]
    assert get_answer_format("molmo") is ANSWER_FORMATS["molmo"]
    with pytest.raises(ValueError, match="unknown answer format 'nope'; known: embodied-r1, gemini-er, molmo"):
        get_answer_format("nope")
    assert request_params() == {"temperature": 0.0, "max_tokens": DEFAULT_MAX_NEW_TOKENS}
    assert request_params(temperature=0.2, top_p=0.9, max_new_tokens=None) == {"temperature": 0.2, "top_p": 0.9}
