"""The Gradio demo without a browser: prediction function, model loading, the served API, files, the CLI verb.

The models are `pointing_model`s (tiny RoboPoint models whose greedy answer is a fixed point string), so the page's
answers are real points whose values are known. One answers in pixels, one in normalized coordinates, so both
paths of the pipeline's records show up side by side. The browser test (`test_demo_browser.py`) reuses the helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path

import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the demo needs the 'demo' extra (gradio)")

from test_pipeline_robopoint import make_pipe, pointing_model  # noqa: E402

from robopoint_hf.cli import demo as demo_command  # noqa: E402
from robopoint_hf.cli import main  # noqa: E402
from robopoint_hf.demo.app import (  # noqa: E402
    EXAMPLES_DIR,
    MODEL_COLORS,
    answer_all,
    build_demo,
    gradio_temp_dir,
    launch_demo,
    load_examples,
    load_models,
)
from robopoint_hf.demo.columns import EndpointColumn, EndpointPointer, LocalColumn, parse_column  # noqa: E402

ANSWER_PIXELS = "[(12, 34), (56 ,78)]"  # every token distinct, as a bigram model needs
ANSWER_NORMALIZED = "[(0.4, .9)]"
EXAMPLE_IMAGE = EXAMPLES_DIR / "sink.jpg"
INSTRUCTION = "Find a few spots within the vacant area on the rightmost white plate."


def save_pointing_model(answer: str, folder: Path) -> Path:
    """Writes a `pointing_model` and its processor to ``folder``, for the demo to load by path like a checkpoint."""
    model, processor = pointing_model(answer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def free_port() -> int:
    """A port nothing listens on now (the OS picks it), so parallel runs and other engineers' servers never clash."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def without_scores(points: list[dict]) -> list[dict]:
    return [{key: value for key, value in point.items() if key != "score"} for point in points]


@pytest.fixture(scope="module")
def pipes():
    return {
        "pixels": make_pipe(*pointing_model(ANSWER_PIXELS)),
        "normalized": make_pipe(*pointing_model(ANSWER_NORMALIZED)),
    }


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return save_pointing_model(ANSWER_PIXELS, tmp_path_factory.mktemp("pointing-model"))


# ---------------------------------------------------------------------------------------------------- answer_all
def test_answer_all_returns_each_models_pipeline_output(pipes):
    image = Image.open(EXAMPLE_IMAGE)
    answers = sorted(answer_all(pipes, image, INSTRUCTION), key=lambda answer: answer.index)  # in finishing order

    assert [(answer.index, answer.name) for answer in answers] == [(0, "pixels"), (1, "normalized")]
    for index, (answer, pipe) in enumerate(zip(answers, pipes.values(), strict=True)):
        assert answer.result == pipe(image.convert("RGB"), INSTRUCTION)
        assert answer.color == MODEL_COLORS[index]
        assert answer.annotated.size == image.size and answer.annotated.mode == "RGB"
        assert json.loads(answer.json()) == answer.result
    assert [point[3:5] for point in answers[0].table()] == [[12, 34], [56, 78]]
    assert answers[1].table() == [[1, 0.4, 0.9, 256, 432, 1.0]]
    # The marker is drawn in the model's colour where the point is.
    assert answers[1].annotated.getpixel((256, 432)) == MODEL_COLORS[1]


@pytest.mark.parametrize("size", [(1600, 90), (90, 1600), (1, 1)])
def test_answer_all_takes_any_aspect_ratio(pipes, size):
    """The original demo's crop mode crashed on images wider than 4:3; points land in the original image here."""
    image = Image.new("RGB", size, (200, 180, 160))
    (answer,) = answer_all({"normalized": pipes["normalized"]}, image, "Point to the free space.")
    assert answer.annotated.size == size
    (point,) = answer.result["points"]
    assert (point["x_px"], point["y_px"]) == (int(0.4 * size[0]), int(0.9 * size[1]))


def test_answer_all_rejects_missing_inputs(pipes):
    with pytest.raises(ValueError, match="Upload an image"):
        next(answer_all(pipes, None, INSTRUCTION))
    with pytest.raises(ValueError, match="Type an instruction"):
        next(answer_all(pipes, Image.new("RGB", (8, 8)), "   "))


class RecordingPipeline:
    """Stands in for a pipeline to see exactly which options the page's controls turn into."""

    def __init__(self):
        self.calls = []

    def __call__(self, image, text, **options):
        self.calls.append((text, options))
        return {"points": [], "boxes": [], "text": "", "parse_failed": False}


@pytest.mark.parametrize(
    ("controls", "expected"),
    [
        (dict(), dict(answer_format=True, do_sample=False, max_new_tokens=256, max_points=None)),
        (
            dict(answer_format=False, temperature=0.7, max_new_tokens=32, max_points=3),
            dict(answer_format=False, do_sample=True, temperature=0.7, max_new_tokens=32, max_points=3),
        ),
        (dict(max_points=0), dict(answer_format=True, do_sample=False, max_new_tokens=256, max_points=None)),
    ],
)
def test_answer_all_passes_the_controls_to_the_pipeline(controls, expected):
    recorder = RecordingPipeline()
    list(answer_all({"m": recorder}, Image.new("RGB", (8, 8)), "  Point to the mug. ", **controls))
    assert recorder.calls == [("Point to the mug.", expected)]


def test_shipped_examples_exist():
    examples = load_examples()
    assert [Path(image).name for image, _ in examples] == ["sink.jpg", "stair.jpg"]
    for image, instruction in examples:
        assert Image.open(image).size == (640, 480) and instruction.endswith(".")


# ---------------------------------------------------------------------------------------------------- served app
def test_served_demo_answers_over_the_api_and_writes_nothing_outside_its_temp_dir(
    pipes, model_folder, tmp_path, monkeypatch
):
    """Launch in-process, predict through the queue API, check the upload cap, close: CWD stays empty throughout."""
    from gradio_client import Client, handle_file

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    with gradio_temp_dir() as temp_dir:
        demo = build_demo({"from folder": str(model_folder), "in memory": pipes["normalized"]}, examples=[])
        url = launch_demo(demo, port=free_port(), max_file_size="100kb", prevent_thread_lock=True, quiet=True)
        try:
            assert url.startswith("http://127.0.0.1:")
            client = Client(url, verbose=False, download_files=False)
            # Two visitors at once: the queue runs them one after the other and both get their answers.
            jobs = [
                client.submit(handle_file(str(EXAMPLE_IMAGE)), INSTRUCTION, True, 0.0, 64, 0, api_name="/point")
                for _ in range(2)
            ]
            image = Image.open(EXAMPLE_IMAGE)
            # The folder-loaded model decodes constrained (the demo's default); the in-memory pipe was built free.
            expected = [
                pipes["pixels"](image, INSTRUCTION, max_new_tokens=64, constrained=True),
                pipes["normalized"](image, INSTRUCTION, max_new_tokens=64),
            ]
            for job in jobs:
                outputs = job.result(timeout=60)
                assert [json.loads(outputs[index]) for index in (4, 9)] == expected  # status, image, table, text, json

            import httpx

            too_big = os.urandom(200_000)
            response = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.jpg", too_big, "image/jpeg")})
            assert response.status_code == 413
        finally:
            demo.close()
        assert any(Path(temp_dir).iterdir()), "uploads and results should have gone to the demo's temp dir"
    assert list(cwd.iterdir()) == []
    assert not Path(temp_dir).exists()
    assert "GRADIO_TEMP_DIR" not in os.environ


def test_gradio_temp_dir_respects_the_users_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    with gradio_temp_dir() as folder:
        assert folder == str(tmp_path)
    assert tmp_path.exists() and os.environ["GRADIO_TEMP_DIR"] == str(tmp_path)


def test_build_demo_needs_a_model():
    with pytest.raises(ValueError, match="at least one model"):
        build_demo({})


# ---------------------------------------------------------------------------------------------------- CLI
def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo_command.add_parser(parser.add_subparsers())
    return parser.parse_args(["demo", *argv])


def test_cli_defaults_to_the_shipped_tiny_model(monkeypatch):
    """Without --model the page serves the package's demonstration model."""
    import robopoint_hf.demo.app as demo_module
    from robopoint_hf.checkpoints import DEFAULT_MODEL_DIR

    seen = {}
    page = gr.Blocks()
    monkeypatch.setattr(demo_module, "build_demo", lambda models, **options: seen.update(models=models) or page)
    monkeypatch.setattr(demo_module, "launch_demo", lambda demo, **options: seen.update(page=demo))
    assert demo_command.run(parse([])) == 0
    assert list(seen["models"].values()) == [str(DEFAULT_MODEL_DIR)] and seen["page"] is page


def test_cli_model_specs():
    specs = ["13B=./a", "./runs/b/", "b", "weird=name=c"]
    assert demo_command.parse_model_specs(specs) == {"13B": "./a", "b": "./runs/b/", "b (2)": "b", "weird": "name=c"}


def test_cli_a_port_in_use_fails_before_the_models_load(monkeypatch, capsys, port_in_use):
    import robopoint_hf.demo.app as demo_module

    monkeypatch.setattr(demo_module, "build_demo", lambda *a, **k: pytest.fail("the models were loaded"))
    assert main(["demo", "--port", str(port_in_use)]) == 2
    assert capsys.readouterr().err == (
        f"robopoint demo: error: cannot listen on 127.0.0.1:{port_in_use}: Address already in use\n"
    )


def test_cli_reports_a_missing_folder(capsys, tmp_path):
    assert main(["demo", "--model", str(tmp_path / "nope")]) == 2
    assert "model folder not found" in capsys.readouterr().err


def test_cli_launches_on_loopback_with_the_upload_cap(model_folder, monkeypatch, capsys):
    """`run` wires the flags through; the real launch is stubbed, because it blocks until Ctrl-C."""
    import robopoint_hf.demo.app as demo_module

    seen = {}

    def fake_launch(demo, **options):
        seen.update(options, temp_dir=os.environ["GRADIO_TEMP_DIR"], blocks=demo)

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    monkeypatch.setattr(demo_module, "launch_demo", fake_launch)
    assert demo_command.run(parse(["--model", f"tiny={model_folder}", "--port", "7999"])) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7999 and seen["share"] is False
    assert seen["max_file_size"] == demo_command.DEFAULT_MAX_FILE_SIZE
    assert isinstance(seen["blocks"], gr.Blocks)
    assert not Path(seen["temp_dir"]).exists()  # removed when the demo stops

    assert demo_command.run(parse(["--model", str(model_folder), "--host", "0.0.0.0"])) == 0
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().out


def test_cli_cleans_up_on_sigterm_and_exits_130(model_folder, monkeypatch, capsys):
    """`kill` (systemd, container stop) takes the Ctrl-C path: the temp dir with visitors' images is removed, and the
    command ends as every interrupted ``robopoint`` command does (130, one line)."""
    import signal

    import robopoint_hf.demo.app as demo_module

    seen = {}

    def launch_then_terminate(demo, **options):
        seen["temp_dir"] = os.environ["GRADIO_TEMP_DIR"]
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    monkeypatch.setattr(demo_module, "launch_demo", launch_then_terminate)
    handler = signal.getsignal(signal.SIGTERM)
    assert main(["demo", "--model", str(model_folder)]) == 130
    assert capsys.readouterr().err.strip() == "robopoint demo: error: interrupted"
    assert not Path(seen["temp_dir"]).exists()
    assert signal.getsignal(signal.SIGTERM) is handler


# ---------------------------------------------------------------------------------------------------- columns
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("./ckpt", LocalColumn("./ckpt")),
        ("./ckpt@cpu", LocalColumn("./ckpt", "cpu")),
        ("org/model@auto", LocalColumn("org/model", "auto")),
        ("./ckpt@cuda:1", LocalColumn("./ckpt", "cuda:1")),
        ("http://gpu-box:8000/v1", EndpointColumn("http://gpu-box:8000/v1")),
        ("https://h/v1/#org/m-13b", EndpointColumn("https://h/v1", "org/m-13b")),
        ("http://h:1/v1#m,answer-format=robopoint", EndpointColumn("http://h:1/v1", "m", "robopoint")),
    ],
)
def test_column_sources_parse(source, expected):
    assert parse_column(source, check_devices=False) == expected


def test_a_folder_with_an_at_sign_stays_a_folder(tmp_path):
    folder = tmp_path / "run@cuda:3"
    folder.mkdir()
    assert parse_column(str(folder)) == LocalColumn(str(folder))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("./ckpt@gpu0", r"./ckpt@gpu0: unknown placement 'gpu0'; use cpu, cuda, cuda:N, mps or auto"),
        ("./ckpt@cuda:99", r"./ckpt@cuda:99: placement 'cuda:99' but \d+ CUDA device\(s\) visible"),
        ("http://h/v1#m,format=x", "unknown endpoint option 'format=x'"),
        (
            "http://h/v1#m,answer-format=nope",
            "unknown answer format 'nope'; known: embodied-r1, gemini-er, molmo, qwen2.5-vl, qwen3-vl, robobrain2, robopoint, roborefer",
        ),
    ],
)
def test_bad_column_sources_are_named(source, message):
    with pytest.raises(ValueError, match=message):
        parse_column(source)


def test_cpu_placement_loads_there(model_folder):
    (pipe,) = load_models({"m": f"{model_folder}@cpu"}).values()
    assert pipe.device.type == "cpu" and pipe.model.device.type == "cpu"
    assert pipe(Image.open(EXAMPLE_IMAGE), INSTRUCTION, constrained=False)["text"] == ANSWER_PIXELS


def test_cli_placement_and_endpoint_specs(model_folder, monkeypatch, capsys):
    import robopoint_hf.demo.app as demo_module

    seen = {}
    monkeypatch.setattr(demo_module, "launch_demo", lambda demo, **options: seen.update(blocks=demo))
    specs = ["--model", f"{model_folder}@cpu", "--model", "http://127.0.0.1:9/v1#org/served-13b"]
    assert demo_command.parse_model_specs(specs[1::2]) == {
        "pointing-model0": f"{model_folder}@cpu",
        "served-13b": "http://127.0.0.1:9/v1#org/served-13b",
    }
    assert demo_command.run(parse(specs)) == 0  # nothing contacts the endpoint before the first question
    assert main(["demo", "--model", f"{model_folder}@cuda:99"]) == 2
    assert "placement 'cuda:99' but" in capsys.readouterr().err


def test_a_down_endpoint_fails_in_its_column_only(pipes):
    """The endpoint's one-line error is its column's status; the local column answers as usual."""
    down = f"http://127.0.0.1:{free_port()}/v1"
    columns = {"local": pipes["pixels"], "down": EndpointPointer(EndpointColumn(down, "m"))}
    answers = sorted(answer_all(columns, Image.open(EXAMPLE_IMAGE), INSTRUCTION), key=lambda a: a.index)
    assert answers[0].error is None and answers[0].result["text"] == ANSWER_PIXELS
    assert answers[1].error.startswith(f"{down}/chat/completions: ConnectError")
    assert answers[1].error.endswith("(gave up after 1 retries)") and "\n" not in answers[1].error
    assert answers[1].result["points"] == [] and answers[1].annotated is None
    assert answers[1].status().startswith("&#9888; http://127.0.0.1:")


def test_columns_answer_concurrently():
    """The first column can only answer once the second has started: run one after the other, it would wait."""
    import threading

    started = threading.Event()

    def waits_for_the_other(image, text, **options):
        assert started.wait(timeout=30), "the second column did not run while the first was working"
        return {"points": [], "boxes": [], "text": "first", "parse_failed": False}

    def starts(image, text, **options):
        started.set()
        return {"points": [], "boxes": [], "text": "second", "parse_failed": False}

    answers = list(answer_all({"a": waits_for_the_other, "b": starts}, Image.new("RGB", (8, 8)), "Point."))
    assert sorted((answer.name, answer.result["text"], answer.error) for answer in answers) == [
        ("a", "first", None),
        ("b", "second", None),
    ]
