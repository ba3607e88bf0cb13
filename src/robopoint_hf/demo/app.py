"""The RoboPoint Gradio demo: one image and instruction, answered side by side by one or several models.

Start it with ``robopoint demo --model FOLDER [--model NAME=FOLDER ...]`` (see :mod:`.commands.demo`), or in
Python::

    from robopoint_hf.demo.app import build_demo, gradio_temp_dir, launch_demo

    with gradio_temp_dir():
        demo = build_demo({"13B": "./robopoint-13b@cuda:0", "7B": pipe_7b, "vLLM": "http://gpu-box:8000/v1"})
        launch_demo(demo)  # http://127.0.0.1:7860, blocks until Ctrl-C

A column is a model in this process (placed on a device of its own, or spread over the GPUs) or a model served by
an OpenAI-compatible engine on this or another machine (:mod:`.demo_columns`). Columns answer concurrently; each
says whether it is still working, and an error (an endpoint down, a timeout) shows in its own column only.

How it differs from the original web demo (``robopoint/serve/``: controller, model worker and Gradio server):

* no controller or worker processes of its own: local models are answered through ``pipeline("robopoint")`` in
  this process, so the page shows exactly what the library returns (points, pixels, scores); models on other GPUs
  or machines are served by the engines built for it (vLLM, SGLang, TGI, ``transformers serve``);
* any image size and aspect ratio (the pipeline pads like RoboPoint; the original's crop mode crashed on wide
  images) and points mapped to the ORIGINAL image, without the original's off-by-one pixel on odd padding;
* the answer-format sentence is appended visibly (a checkbox showing the sentence), never cut off by a length limit;
* several models answer the same question side by side, each with numbered markers in its own colour, a table of
  the points and the raw answer, and the whole result as copyable JSON;
* bound to 127.0.0.1 unless told otherwise, uploads capped (``max_file_size``), and nothing written outside a
  temporary folder: the original logged every uploaded image, annotated result and conversation into the working
  directory.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from robopoint_hf.inference.visualize import draw_points
from robopoint_hf.model.pipeline_robopoint import RoboPointPipeline
from robopoint_hf.model.points import ANSWER_FORMAT_SUFFIX

from . import DEFAULT_HOST, DEFAULT_MAX_FILE_SIZE, DEFAULT_PORT
from .columns import EndpointColumn, EndpointPointer, LocalColumn, parse_column

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_FILE_SIZE",
    "DEFAULT_PORT",
    "EXAMPLES_DIR",
    "MODEL_COLORS",
    "ModelAnswer",
    "answer_all",
    "build_demo",
    "gradio_temp_dir",
    "launch_demo",
    "load_examples",
    "load_models",
]

logger = logging.getLogger(__name__)

Column = Callable[..., dict[str, Any]]
"""What answers a column: ``column(image, instruction, **options) -> pipeline result`` -- a `RoboPointPipeline` or
an `~demo_columns.EndpointPointer`."""

DEFAULT_MAX_NEW_TOKENS = 256
QUEUE_SIZE = 64
"""Requests waiting beyond this are refused with "queue full" instead of waiting minutes behind a 13B model."""

CACHE_CLEANUP = (3600, 3600)
"""Gradio ``delete_cache``: every hour, delete uploads and rendered images older than an hour, so that a demo that
runs for weeks does not keep every visitor's photo."""

EXAMPLES_DIR = Path(__file__).parent / "examples"

MODEL_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),  # red
    (0, 130, 200),  # blue
    (60, 180, 75),  # green
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (70, 200, 200),  # cyan
)
"""Marker colour of the i-th model (cycled): distinct hues, so side-by-side answers are told apart at a glance."""

TABLE_HEADERS = ["#", "x", "y", "x_px", "y_px", "score"]
WORKING = "&#8987; working&#8230;"
"""Status line of a column that has not answered the current question yet."""

# Fonts the browser already has: Gradio's default theme fetches Google Fonts, which fails (slowly) on the offline
# robot-lab machines this demo is meant for and leaks every page view to a third party.
_SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
_SYSTEM_MONO_FONTS = ["ui-monospace", "Consolas", "monospace"]


# ---------------------------------------------------------------------------------------------------- prediction
@dataclass
class ModelAnswer:
    """One model's answer to one question, ready to show.

    Args:
        name (`str`): the model's label on the page.
        result (`dict`): the pipeline's output (``points``, ``boxes``, ``text``, ``parse_failed``), unchanged; empty
            when the column failed.
        annotated (`PIL.Image.Image`): the input image with the points (numbered) and boxes drawn in ``color``.
        color (`tuple[int, int, int]`): the model's marker colour.
        index (`int`, *optional*, defaults to 0): the column's position on the page.
        seconds (`float`, *optional*): how long the column took.
        error (`str`, *optional*): why the column has no answer (one line: an endpoint down, a timeout, ...).
    """

    name: str
    result: dict[str, Any]
    annotated: Image.Image | None
    color: tuple[int, int, int]
    index: int = 0
    seconds: float | None = None
    error: str | None = None

    def table(self) -> list[list[float | int | None]]:
        """Rows of the points table: number, normalized x/y, pixel x/y, score (rounded for reading; JSON is exact).

        The score is None when the model gave none (an endpoint that returns no log-probabilities).
        """
        return [
            [
                index,
                round(point["x"], 4),
                round(point["y"], 4),
                point["x_px"],
                point["y_px"],
                None if point["score"] is None else round(point["score"], 4),
            ]
            for index, point in enumerate(self.result["points"], start=1)
        ]

    def status(self) -> str:
        """The column's status line: how long it took, or its error."""
        if self.error is not None:
            return f"&#9888; {html.escape(self.error)}"
        return f"answered in {self.seconds:.1f} s" if self.seconds is not None else "answered"

    def json(self) -> str:
        """The pipeline's output as indented JSON: what the copy button copies."""
        return json.dumps(self.result, indent=2)


def _generation_options(temperature: float, max_new_tokens: int, max_points: int | None) -> dict[str, Any]:
    """Pipeline call options from the page's controls; temperature 0 means greedy (reproducible) decoding."""
    options: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "max_points": max_points or None}
    if temperature > 0:
        options.update(do_sample=True, temperature=float(temperature))
    else:
        # Explicit, so a checkpoint whose generation_config samples is still greedy at temperature 0.
        options["do_sample"] = False
    return options


def _check_inputs(image: Image.Image | None, instruction: str | None) -> tuple[Image.Image, str]:
    """The RGB image and stripped instruction; a ValueError the page shows when either is missing."""
    if image is None:
        raise ValueError("Upload an image or pick an example first.")
    instruction = (instruction or "").strip()
    if not instruction:
        raise ValueError("Type an instruction, e.g. 'Point to the free space left of the mug.'")
    return image.convert("RGB"), instruction


def _answer_one(
    index: int, name: str, column: Column, image: Image.Image, instruction: str, options: dict[str, Any]
) -> ModelAnswer:
    """One column's answer, or its error as one line: a failing column must not take the others down."""
    color = MODEL_COLORS[index % len(MODEL_COLORS)]
    start = time.perf_counter()
    try:
        result = column(image, instruction, **options)
    except Exception as error:  # shown in the column; the traceback goes to the log
        logger.exception("Column %r failed", name)
        empty = {"points": [], "boxes": [], "text": "", "parse_failed": False}
        message = " ".join(str(error).split()) or type(error).__name__
        return ModelAnswer(name, empty, None, color, index, time.perf_counter() - start, message)
    boxes = [(box["x0"], box["y0"], box["x1"], box["y1"]) for box in result["boxes"]]
    annotated = draw_points(
        image,
        [(point["x"], point["y"]) for point in result["points"]],
        normalized=True,
        boxes=boxes,
        color=color,
        numbered=True,
    )
    return ModelAnswer(name, result, annotated, color, index, time.perf_counter() - start)


def answer_all(
    pipelines: Mapping[str, Column],
    image: Image.Image,
    instruction: str,
    *,
    answer_format: bool = True,
    temperature: float = 0.0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    max_points: int | None = None,
) -> Iterator[ModelAnswer]:
    """Asks every column the same question at once, yielding each answer as soon as it is ready.

    Columns run concurrently (one thread each: the models run on their own devices or servers, and a slow one does
    not hold the others); answers come in the order they finish, each with its column ``index``. A column that
    fails yields a `ModelAnswer` with its ``error`` and no points.

    Args:
        pipelines (`Mapping[str, Column]`): label -> pipeline or endpoint column, in page order.
        image (`PIL.Image.Image`): the image, any size and aspect ratio.
        instruction (`str`): what to point at.
        answer_format (`bool`, *optional*, defaults to `True`): append `~points.ANSWER_FORMAT_SUFFIX`.
        temperature (`float`, *optional*, defaults to 0): 0 = greedy; above 0 samples at that temperature.
        max_new_tokens (`int`, *optional*, defaults to 256): longest answer.
        max_points (`int`, *optional*): keep only the highest-scoring points (None or 0 = all).

    Raises:
        ValueError: no image or an empty instruction (the page shows the message).
    """
    image, instruction = _check_inputs(image, instruction)
    options = {"answer_format": answer_format, **_generation_options(temperature, max_new_tokens, max_points)}
    with ThreadPoolExecutor(max_workers=len(pipelines)) as pool:
        futures = [
            pool.submit(_answer_one, index, name, column, image, instruction, options)
            for index, (name, column) in enumerate(pipelines.items())
        ]
        for future in as_completed(futures):
            yield future.result()


# ---------------------------------------------------------------------------------------------------- models
ModelSpec = Column | LocalColumn | EndpointColumn | str | os.PathLike
"""A column as `build_demo` takes it: a ready pipeline (or other `Column`), a parsed column, or a ``--model``
source string."""


def load_models(
    models: Mapping[str, ModelSpec],
    device: str | None = None,
    dtype: str | None = None,
    bits: int | None = None,
) -> dict[str, Column]:
    """Label -> column, loading local models where placed and connecting endpoint columns.

    Sources given as text are parsed by `~demo_columns.parse_column` (``PATH[@PLACEMENT]`` or ``URL[#NAME]``).
    Loading happens here, before the page starts, so that a wrong path or placement fails at start-up and not for
    the first visitor. Paths load like ``robopoint predict`` does (:func:`robopoint_hf.inference.loading.load_pipeline`);
    ``device`` is where the models without a placement go. Endpoints are not contacted until the first question:
    a server that is down (or still starting) only shows as an error in its column.
    """
    if not models:
        raise ValueError("build_demo needs at least one model: {'label': pipeline, folder or endpoint URL}.")
    loaded: dict[str, Column] = {}
    for name, model in models.items():
        if isinstance(model, RoboPointPipeline) or callable(model):  # a ready pipeline or any other `Column`
            loaded[name] = model
            continue
        if isinstance(model, os.PathLike):
            model = LocalColumn(os.fspath(model))
        elif isinstance(model, str):
            model = parse_column(model)
        if isinstance(model, EndpointColumn):
            loaded[name] = EndpointPointer(model)
        elif isinstance(model, LocalColumn):
            loaded[name] = _load_local(model, device, dtype, bits)
        else:
            raise TypeError(
                f"Model {name!r} must be a RoboPointPipeline, a folder, a Hub id or a URL; got {type(model)}."
            )
    return loaded


def _load_local(column: LocalColumn, device: str | None, dtype: str | None, bits: int | None) -> RoboPointPipeline:
    import torch

    from robopoint_hf.inference.loading import DEFAULT_DTYPES, load_pipeline

    cuda = torch.cuda.is_available()
    target = column.placement or device or ("cuda" if cuda else "cpu")
    kind = ("cuda" if cuda else "cpu") if target == "auto" else target.split(":")[0]
    return load_pipeline(column.source, target, dtype or DEFAULT_DTYPES[kind], bits)


def load_examples(folder: str | os.PathLike = EXAMPLES_DIR) -> list[list[str]]:
    """``[[image path, instruction], ...]`` from ``examples.json`` in ``folder`` (the original demo's two examples)."""
    folder = Path(folder)
    entries = json.loads((folder / "examples.json").read_text())
    return [[str(folder / entry["image"]), entry["instruction"]] for entry in entries]


# ---------------------------------------------------------------------------------------------------- page
def _model_header(name: str, color: tuple[int, int, int], source: str) -> str:
    swatch = f'<span style="color: rgb{color}; font-size: 1.4em">&#9679;</span>'
    return f"<h3 style='margin: 0'>{swatch} {html.escape(name)}</h3><small>{html.escape(source)}</small>"


def _describe(model: Any) -> str:
    if isinstance(model, RoboPointPipeline):
        return model.model.name_or_path or "in-memory pipeline"
    if isinstance(model, (LocalColumn, EndpointColumn)):
        return model.describe()
    if isinstance(model, str):
        return parse_column(model, check_devices=False).describe()
    if isinstance(model, os.PathLike):
        return os.fspath(model)
    return type(model).__name__


def build_demo(
    models: Mapping[str, ModelSpec],
    *,
    device: str | None = None,
    dtype: str | None = None,
    bits: int | None = None,
    examples: list[list[str]] | None = None,
    title: str = "RoboPoint",
) -> gr.Blocks:
    """Builds the page: image + instruction in, one column of answers per model.

    Component ``elem_id``s are stable so that tests and users' scripts can find them: ``input-image``,
    ``instruction``, ``answer-format``, ``temperature``, ``max-new-tokens``, ``max-points``, ``submit``, and per
    model ``i`` (0-based, in ``models`` order) ``status-i``, ``annotated-i``, ``points-i``, ``text-i``, ``json-i``.

    Args:
        models (`Mapping[str, ModelSpec]`): label -> pipeline, folder / Hub id (``@PLACEMENT`` optional) or
            endpoint URL (see `load_models`). Shown side by side in this order.
        device, dtype (`str`, *optional*): where and in which dtype to load the models given by path without a
            placement (default: cuda if available, else cpu; float32 on cpu, bfloat16 on cuda).
        bits (`int`, *optional*): 4 or 8 to quantize the language models given by path.
        examples (`list[list[str]]`, *optional*): ``[image path, instruction]`` rows; defaults to the shipped
            `load_examples`. Pass ``[]`` for none.
        title (`str`, *optional*, defaults to `"RoboPoint"`): page title.

    Returns:
        `gr.Blocks`: queued, one question at a time (its columns answer concurrently; a pipeline is not re-entrant,
        so visitors wait their turn, up to `QUEUE_SIZE` of them); start it with `launch_demo`.
    """
    pipelines = load_models(models, device=device, dtype=dtype, bits=bits)
    sources = {name: _describe(models[name]) for name in pipelines}
    examples = load_examples() if examples is None else examples

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(
            f"# {html.escape(title)}\n"
            "Upload an image (any size) or pick an example, say what to point at, and press **Point**. "
            "Each model answers with numbered points in its own colour; coordinates are fractions of the image "
            "width and height (`x`, `y`) and pixels of the original image (`x_px`, `y_px`)."
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    type="pil", image_mode="RGB", sources=["upload", "clipboard"], label="Image", elem_id="input-image"
                )
                instruction = gr.Textbox(
                    label="Instruction",
                    placeholder="Point to the free space left of the mug.",
                    lines=2,
                    elem_id="instruction",
                )
                answer_format = gr.Checkbox(
                    value=True,
                    label="Append RoboPoint's answer-format sentence (as in training)",
                    info=ANSWER_FORMAT_SUFFIX,
                    elem_id="answer-format",
                )
                with gr.Accordion("Generation", open=False):
                    temperature = gr.Slider(
                        0.0,
                        1.0,
                        value=0.0,
                        step=0.05,
                        label="Temperature",
                        info="0 = greedy (reproducible)",
                        elem_id="temperature",
                    )
                    max_new_tokens = gr.Slider(
                        16,
                        1024,
                        value=DEFAULT_MAX_NEW_TOKENS,
                        step=16,
                        label="Max new tokens",
                        elem_id="max-new-tokens",
                    )
                    max_points = gr.Slider(
                        0,
                        50,
                        value=0,
                        step=1,
                        label="Max points",
                        info="0 = all; else the highest-scoring ones",
                        elem_id="max-points",
                    )
                submit = gr.Button("Point", variant="primary", elem_id="submit")
                if examples:
                    gr.Examples(examples=examples, inputs=[image, instruction], cache_examples=False)
            with gr.Column(scale=max(2, len(pipelines))), gr.Row(equal_height=False):
                outputs: list[gr.components.Component] = []
                for index, name in enumerate(pipelines):
                    with gr.Column(min_width=280):
                        gr.HTML(_model_header(name, MODEL_COLORS[index % len(MODEL_COLORS)], sources[name]))
                        outputs += [
                            gr.HTML("", elem_id=f"status-{index}"),
                            gr.Image(
                                type="pil",
                                format="png",
                                interactive=False,
                                label=f"{name}: points",
                                elem_id=f"annotated-{index}",
                            ),
                            gr.Dataframe(
                                headers=TABLE_HEADERS,
                                datatype="number",
                                interactive=False,
                                label="Points",
                                elem_id=f"points-{index}",
                            ),
                            gr.Textbox(
                                label="Raw answer",
                                interactive=False,
                                lines=2,
                                buttons=["copy"],
                                elem_id=f"text-{index}",
                            ),
                            gr.Code(
                                language="json",
                                interactive=False,
                                label="Result (JSON)",
                                buttons=["copy"],
                                lines=4,
                                max_lines=20,
                                elem_id=f"json-{index}",
                            ),
                        ]

        def on_submit(image, instruction, answer_format, temperature, max_new_tokens, max_points):
            """Marks every column as working, then streams each answer into its column as it comes.

            Every update carries all answers so far, so the last one (what API clients get) holds every model's.
            """
            update = [gr.skip()] * len(outputs)
            width = len(outputs) // len(pipelines)
            try:
                answers = answer_all(
                    pipelines,
                    image,
                    instruction,
                    answer_format=answer_format,
                    temperature=temperature,
                    max_new_tokens=max_new_tokens,
                    max_points=int(max_points),
                )
                _check_inputs(image, instruction)  # before any column says it is working
                for index in range(len(pipelines)):
                    update[width * index] = WORKING
                yield list(update)
                for answer in answers:
                    update[width * answer.index : width * (answer.index + 1)] = [
                        answer.status(),
                        answer.annotated,
                        answer.table(),
                        answer.result["text"],
                        answer.json(),
                    ]
                    yield list(update)
            except ValueError as error:
                raise gr.Error(str(error)) from error

        # One event for the button and Enter, limited to one run at a time: a pipeline is not re-entrant (it keeps
        # the current call's encoded images) and the models share one device, so visitors queue for their turn.
        gr.on(
            triggers=[submit.click, instruction.submit],
            fn=on_submit,
            inputs=[image, instruction, answer_format, temperature, max_new_tokens, max_points],
            outputs=outputs,
            api_name="point",
            concurrency_limit=1,
        )
    demo.queue(max_size=QUEUE_SIZE)
    return demo


# ---------------------------------------------------------------------------------------------------- serving
def launch_demo(
    demo: gr.Blocks,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    share: bool = False,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> str:
    """Starts the page with this project's serving policy; returns its local URL.

    The policy, in one place for the command line and the tests: loopback unless ``host`` says otherwise; uploads
    capped at ``max_file_size``; no server-side rendering (it needs Node.js and a second port); no run history (it
    offers to store visitors' runs in a Hub bucket); system fonts instead of Google Fonts.

    ``share=True`` opens a public gradio.live tunnel: it needs internet access, and Gradio then writes
    ``.gradio/certificate.pem`` into the working directory -- the one file this demo cannot keep out of it.

    Args:
        demo (`gr.Blocks`): from `build_demo`.
        host (`str`, *optional*, defaults to `"127.0.0.1"`): interface to bind; ``"0.0.0.0"`` for all.
        port (`int`, *optional*, defaults to 7860): port; None lets Gradio pick a free one from 7860 up.
        share (`bool`, *optional*, defaults to `False`): public tunnel (see above).
        max_file_size (`str` or `int`, *optional*, defaults to `"20mb"`): largest upload, e.g. ``"5mb"`` or bytes.
        prevent_thread_lock (`bool`, *optional*, defaults to `False`): return at once (tests, notebooks); stop the
            server with ``demo.close()``.
        quiet (`bool`, *optional*, defaults to `False`): do not print the URL.
    """
    theme = gr.themes.Default(font=_SYSTEM_FONTS, font_mono=_SYSTEM_MONO_FONTS)
    # Gradio's own launch text advises `share=True` in `launch()` whenever it is off, which a command-line user
    # turns on with --share; the URLs are printed here instead.
    _, local_url, share_url = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_file_size,
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
        ssr_mode=False,
        run_history=False,
        mcp_server=False,
        theme=theme,
    )
    if not quiet:
        print(f"RoboPoint demo: {local_url}" + (f" (public: {share_url})" if share_url else ""), flush=True)
    if not prevent_thread_lock:  # until Ctrl-C (a KeyboardInterrupt for the caller, which closes the demo)
        threading.Event().wait()
    return local_url


@contextlib.contextmanager
def gradio_temp_dir() -> Iterator[str]:
    """Points Gradio's file cache (uploads, rendered images) at a new temporary folder, deleted on exit.

    Gradio keeps every uploaded and every returned image as a file in ``GRADIO_TEMP_DIR`` (default: a shared
    ``<tmp>/gradio`` that is never cleaned). A folder per demo run keeps visitors' images away from other apps and
    removes them when the demo stops. The folder must be set before `build_demo`: components read it when created.
    A ``GRADIO_TEMP_DIR`` the user set already is respected and left in place.
    """
    if os.environ.get("GRADIO_TEMP_DIR"):
        yield os.environ["GRADIO_TEMP_DIR"]
        return
    folder = tempfile.mkdtemp(prefix="robopoint-demo-")
    os.environ["GRADIO_TEMP_DIR"] = folder
    try:
        yield folder
    finally:
        os.environ.pop("GRADIO_TEMP_DIR", None)
        shutil.rmtree(folder, ignore_errors=True)
