"""The demo page end to end in headless Chromium: upload, submit, read the page, compare with the pipeline.

Drives Debian's ``chromium`` through Playwright's Python API (``executable_path``; Playwright's own browser download
is never used). Skipped, with the reason, only when Chromium or Playwright is missing. A screenshot of the page
after the prediction is written to ``artifacts/demo_browser.png`` (gitignored) for a human to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the demo needs the 'demo' extra (gradio)")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the browser is Debian's)")

from conftest import POINTING_ANSWER  # noqa: E402
from test_demo import (  # noqa: E402
    ANSWER_NORMALIZED,
    ANSWER_PIXELS,
    EXAMPLE_IMAGE,
    INSTRUCTION,
    free_port,
    save_pointing_model,
)
from test_pipeline_robopoint import make_pipe, pointing_model  # noqa: E402

from robopoint_hf.demo.app import build_demo, gradio_temp_dir, launch_demo, load_examples  # noqa: E402
from robopoint_hf.evaluation.endpoint import EndpointClient, request_params  # noqa: E402
from robopoint_hf.inference.loading import load_pipeline  # noqa: E402
from robopoint_hf.inference.serving import build_messages, parse_response  # noqa: E402
from robopoint_hf.model.pipeline_robopoint import RoboPointPipeline  # noqa: E402

CHROMIUM = os.environ.get("ROBOPOINT_CHROMIUM", "/usr/bin/chromium")
# No network beyond loopback here: without the background-networking flags Chromium keeps dialling Google's hosts.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
MAX_POINTS = 2
PAGE_TIMEOUT_MS = 60_000  # bounded waits on page conditions; the 2-core machine is shared

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)),
        reason=f"Chromium not found at {CHROMIUM} (apt-get install -y chromium, or set ROBOPOINT_CHROMIUM)",
    ),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo with two models (one loaded from a folder, one in memory) on a free loopback port."""
    folder = save_pointing_model(ANSWER_PIXELS, tmp_path_factory.mktemp("pointing-model"))
    pipes = {"pixels": str(folder), "normalized": make_pipe(*pointing_model(ANSWER_NORMALIZED))}
    with gradio_temp_dir():
        demo = build_demo(pipes)
        url = launch_demo(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
        try:
            yield url, {"pixels": load_pipeline(str(folder), "cpu", "float32"), "normalized": pipes["normalized"]}
        finally:
            demo.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def read_cells(page, index: int) -> list[list[str]]:
    """The body cells of model ``index``'s points table, as shown, read through the grid's ARIA roles."""
    rows = page.locator(f"#points-{index} [role=row][data-index]")
    return [rows.nth(row).locator("[role=gridcell]").all_inner_texts() for row in range(rows.count())]


def read_table(page, index: int) -> list[list[float]]:
    """The body cells of model ``index``'s points table, as numbers."""
    return [[float(cell) for cell in row] for row in read_cells(page, index)]


def set_slider(page, element: str, value: int, attempts: int = 6) -> None:
    """Types ``value`` into a Gradio slider's number box until the slider itself shows it (the request reads the
    slider). Typed while the accordion around it is still opening, the value is sometimes dropped; it is typed
    again (Enter, then leaving the box: either commits it)."""
    box = page.locator(f"{element} input[type=number]")
    for attempt in range(attempts):
        box.fill(str(value))
        box.press("Enter")
        box.press("Tab")
        try:
            page.wait_for_function(
                "([selector, n]) => document.querySelector(selector)?.value === String(n)",
                arg=[f"{element} input[type=range]", value],
                timeout=PAGE_TIMEOUT_MS // attempts,
            )
            return
        except sync_api.TimeoutError:
            if attempt == attempts - 1:
                raise


def test_page_shows_the_pipelines_points(served, page, tmp_path, monkeypatch):
    url, pipelines = served
    monkeypatch.chdir(tmp_path)  # the browser's uploads must not land in the working directory either
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(url)
    page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLE_IMAGE))
    page.locator("#input-image img").wait_for()  # the upload finished and the preview is shown
    page.locator("#instruction textarea").fill(INSTRUCTION)
    # The folder-loaded model decodes constrained (the demo's default), where max points closes its answer: two
    # points keep the JSON short enough to be rendered whole by the page's code viewer.
    page.get_by_text("Generation").click()  # the accordion holding the generation options
    set_slider(page, "#max-points", MAX_POINTS)
    page.locator("#submit").click()
    for index in range(len(pipelines)):
        try:
            page.wait_for_function(
                "index => (document.querySelector(`#json-${index} .cm-content`)?.innerText ?? '').includes('parse_failed')",
                arg=index,
                timeout=PAGE_TIMEOUT_MS,
            )
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "demo_browser_fail.png"), full_page=True)
            raise
        page.locator(f"#annotated-{index} img").wait_for()
        page.locator(f"#points-{index} [role=gridcell]").first.wait_for()

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo_browser.png"), full_page=True)

    image = Image.open(EXAMPLE_IMAGE)
    for index, pipe in enumerate(pipelines.values()):
        expected = pipe(image, INSTRUCTION, max_points=MAX_POINTS)
        assert expected["points"], "the pointing model should answer with points"
        assert json.loads(page.locator(f"#json-{index} .cm-content").inner_text()) == expected
        assert page.locator(f"#text-{index} textarea").input_value() == expected["text"]
        table = read_table(page, index)
        assert [row[0] for row in table] == list(range(1, len(expected["points"]) + 1))
        for row, point in zip(table, expected["points"], strict=True):
            assert row[1:3] == pytest.approx([point["x"], point["y"]], abs=1e-4)
            assert row[3:5] == [point["x_px"], point["y_px"]]
            assert row[5] == pytest.approx(point["score"], abs=1e-4)
        annotated = page.locator(f"#annotated-{index} img")
        assert "/gradio_api/file=" in annotated.get_attribute("src")
        assert annotated.evaluate("img => img.complete && img.naturalWidth") == image.width
    assert list(tmp_path.iterdir()) == []


def test_an_example_fills_the_inputs(served, page):
    """Picking a shipped example puts its image and instruction in place, ready to submit."""
    url, _ = served
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(url)
    (stair_image, stair_instruction) = next(example for example in load_examples() if "stair" in example[0])
    page.get_by_text(stair_instruction[:30]).first.click()
    textarea = page.locator("#instruction textarea")
    page.wait_for_function(
        "text => document.querySelector('#instruction textarea').value === text", arg=stair_instruction
    )
    assert textarea.input_value() == stair_instruction
    preview = page.locator("#input-image img")
    preview.wait_for()
    page.wait_for_function("() => document.querySelector('#input-image img').naturalWidth > 0")
    assert preview.evaluate("img => img.naturalWidth") == Image.open(stair_image).width


# ---------------------------------------------------------------------------------------------------- columns
class Gate:
    """A column that answers like ``pipe`` once the test opens the gate: a slow model whose status the page shows."""

    def __init__(self, pipe):
        self.pipe, self.open = pipe, threading.Event()

    def __call__(self, image, instruction, **options):
        if not self.open.wait(timeout=PAGE_TIMEOUT_MS / 1000):
            raise TimeoutError("the test never opened the gate")
        return self.pipe(image, instruction, **options)


def status(page, index: int) -> str:
    return page.locator(f"#status-{index}").inner_text()


def wait_status(page, index: int, text: str) -> None:
    page.wait_for_function(
        "([index, text]) => (document.querySelector(`#status-${index}`)?.innerText ?? '').includes(text)",
        arg=[index, text],
        timeout=PAGE_TIMEOUT_MS,
    )


@pytest.mark.slow
def test_local_endpoint_down_and_slow_columns(pointing_server, page, tmp_path):
    """One page, four columns: a local model on cpu, the same checkpoint served by `transformers serve`, an endpoint
    that is down, and a slow local column. The three answer (or fail, in one line) while the slow one says it is
    still working; the served column shows exactly what `parse_response` reads from the server's reply."""
    # The served column decodes free text (the request asks for no grammar), so the local column does too: the same
    # checkpoint, the same answer. (Placement parsing and loading of `FOLDER@cpu` columns: tests/test_demo.py.)
    loaded = load_pipeline(str(pointing_server.local), "cpu", "float32")
    local = RoboPointPipeline(model=loaded.model, processor=loaded.processor, device="cpu", constrained=False)
    down = f"http://127.0.0.1:{free_port()}/v1#robopoint"
    gate = Gate(local)
    columns = {"local": local, "served": pointing_server.url, "down": down, "slow": gate}
    with gradio_temp_dir():
        demo = build_demo(columns, examples=[])
        url = launch_demo(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
        try:
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(url)
            page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLE_IMAGE))
            page.locator("#input-image img").wait_for()
            page.locator("#instruction textarea").fill(INSTRUCTION)
            page.locator("#submit").click()
            for index in (0, 1):
                wait_status(page, index, "answered in")
            wait_status(page, 2, "gave up")
            assert "working" in status(page, 3)  # the slow column holds nobody and says so
            gate.open.set()
            wait_status(page, 3, "answered in")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "demo_browser_columns.png"), full_page=True)
            shown = [json.loads(page.locator(f"#json-{index} .cm-content").inner_text()) for index in (0, 1, 3)]
            error = status(page, 2)
        finally:
            demo.close()

    image = Image.open(EXAMPLE_IMAGE)
    expected_local = local(image, INSTRUCTION)
    with EndpointClient(pointing_server.url) as client:
        reply = client.chat(build_messages(image, INSTRUCTION), logprobs=True, **request_params(max_new_tokens=256))
    expected_served = parse_response(reply, image.size)
    assert expected_local["text"] == expected_served["text"] == POINTING_ANSWER
    assert shown == [expected_local, expected_served, expected_local]
    assert [point["score"] for point in expected_served["points"]] == [None, None]  # transformers serve: no logprobs
    assert error.count("\n") == 0 and error.startswith(f"⚠ {down.partition('#')[0]}/chat/completions: ConnectError")
    assert read_cells(page, 1) == [  # no score without log-probabilities
        ["1", "0.0187", "0.0708", "12", "34", ""],
        ["2", "0.0875", "0.1625", "56", "78", ""],
    ]
