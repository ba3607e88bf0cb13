"""Every user error of the real ``robopoint`` command ends with one line on stderr naming the culprit.

Each case runs ``python -m robopoint_hf.cli`` in a subprocess (what a user runs) and checks: the exit code (2 for
a user error, 130 for Ctrl-C), exactly one non-empty line on stderr, that the line names the culprit, and no
traceback. ``--debug`` brings the traceback back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from openai_server import answer_ctrl_c

from robopoint_hf.checkpoints import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.slow  # about a dozen interpreter starts, several of them loading torch

IMAGE = str(DEFAULT_MODEL_DIR / "example_0_free_space_between.jpg")
WHERE2PLACE = str(Path(__file__).parent / "fixtures" / "where2place_real")


def robopoint(*argv: str, env: dict | None = None, **popen) -> subprocess.Popen:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    command = [sys.executable, "-m", "robopoint_hf.cli", *argv]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, **popen
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("errors")
    truncated = root / "truncated"
    shutil.copytree(DEFAULT_MODEL_DIR, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    (root / "bad_answers.jsonl").write_text('{"question_id": 42, "text": "[(0.1, 0.2)]"}\nnot json\n')
    no_gradio = root / "no_gradio" / "gradio"
    no_gradio.mkdir(parents=True)
    (no_gradio / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'gradio'\", name='gradio')\n")
    (root / "bad_record.json").write_text(json.dumps([{"id": "r1", "conversations": "not a list"}]))
    (root / "bad_scores.json").write_text('{"model": {"strict": 0.5}}')
    return {
        "root": str(root),
        "truncated": str(truncated),
        "bad_answers": str(root / "bad_answers.jsonl"),
        "no_gradio": str(root / "no_gradio"),
        "bad_record": str(root / "bad_record.json"),
        "bad_scores": str(root / "bad_scores.json"),
    }


CASES = {
    "unknown flag": (["predict", "--image", IMAGE, "--instruction", "x", "--bogus"], 2, "--bogus"),
    "missing required flag": (["eval", "score", "--data-dir", WHERE2PLACE], 2, "--answers"),
    "bad flag combination": (
        ["eval", "run", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--data-dir", WHERE2PLACE]
        + ["--output", "{root}/a.jsonl"],
        2,
        "--model",
    ),
    "empty instruction": (["predict", "--image", IMAGE, "--instruction", "  "], 2, "--instruction"),
    "missing image": (["predict", "--image", "{root}/missing.png", "--instruction", "x"], 2, "{root}/missing.png"),
    "truncated weights": (
        ["predict", "--model", "{truncated}", "--image", IMAGE, "--instruction", "x"],
        2,
        "{truncated}/model.safetensors",
    ),
    "hub id not cached offline": (
        ["predict", "--model", "nobody/no-such-model", "--image", IMAGE, "--instruction", "x"],
        2,
        "nobody/no-such-model",
    ),
    "too-long instruction": (["predict", "--image", IMAGE, "--instruction", "left of the mug " * 400], 2, "tokens"),
    "bad answer record": (
        ["eval", "score", "--answers", "{bad_answers}", "--data-dir", WHERE2PLACE],
        2,
        "{bad_answers}",
    ),
    "bad score file": (["eval", "leaderboard", "{bad_scores}", "--output-dir", "{root}/board"], 2, "{bad_scores}"),
    "bad training record": (
        ["train", "--data", "{bad_record}", "--model", str(DEFAULT_MODEL_DIR), "--output-dir", "{root}/run"],
        2,
        "r1",
    ),
    "missing extra": (["demo", "--model", str(DEFAULT_MODEL_DIR)], 2, 'pip install "robopoint_hf[demo]"'),
    "serve: missing model folder": (["serve", "--model", "{root}/no-model"], 2, "{root}/no-model"),
    "serve: negative batch timeout": (["serve", "--batch-timeout", "-1"], 2, "--batch-timeout"),
}


def check_one_line(process: subprocess.Popen, code: int, culprit: str) -> None:
    out, err = process.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == code, err
    assert len(lines) == 1, err
    assert culprit in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_naming_the_culprit(case, files):
    argv, code, culprit = CASES[case]
    env = {"PYTHONPATH": os.pathsep.join([files["no_gradio"], os.environ.get("PYTHONPATH", "")])}
    process = robopoint(*(a.format(**files) for a in argv), env=env if case == "missing extra" else None)
    check_one_line(process, code, culprit.format(**files))


def test_debug_shows_the_traceback(files):
    process = robopoint("--debug", "predict", "--image", f"{files['root']}/missing.png", "--instruction", "x")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1
    assert "Traceback" in err and "missing.png" in err


def test_ctrl_c_is_one_line_and_exit_130(files):
    """The command blocks reading an image from a named pipe; Ctrl-C (SIGINT) arrives while it waits."""
    fifo = Path(files["root"]) / "image.fifo"
    os.mkfifo(fifo)
    process = robopoint("predict", "--image", str(fifo), "--instruction", "x", preexec_fn=answer_ctrl_c)
    opened = threading.Event()
    writer: list[int] = []

    def open_writer() -> None:  # returns once the command has opened the pipe for reading
        writer.append(os.open(fifo, os.O_WRONLY))
        opened.set()

    threading.Thread(target=open_writer, daemon=True).start()
    assert opened.wait(timeout=120), process.communicate()[1]
    process.send_signal(signal.SIGINT)
    try:
        check_one_line(process, 130, "interrupted")
    finally:
        os.close(writer[0])


def test_a_reader_that_went_away_ends_the_command_quietly_with_141():
    """``robopoint predict ... | head``: once the reader of stdout is gone, the command ends as a Unix tool whose
    reader went away (128 + SIGPIPE), with nothing on stderr."""
    process = robopoint("predict", "--image", IMAGE, "--instruction", "Point at the free space.", "--json")
    process.stdout.close()  # before the command writes: its first write finds no reader
    err = process.stderr.read()
    process.wait(timeout=300)
    assert (process.returncode, err) == (141, "")
