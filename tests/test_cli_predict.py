"""`robopoint predict`: JSON and table output, the annotated image, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image
from test_pipeline_robopoint import TWO_POINTS, TWO_POINTS_PROBS, pointing_model

from robopoint_hf.cli import main


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A saved model whose greedy answer is TWO_POINTS, and a 100x80 image."""
    folder = tmp_path_factory.mktemp("cli")
    model, processor = pointing_model(TWO_POINTS, TWO_POINTS_PROBS)
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    Image.new("RGB", (100, 80), (30, 60, 90)).save(folder / "frame.png")
    return folder


@pytest.mark.slow
def test_json_output_and_annotated_png_in_a_subprocess(model_folder, tmp_path):
    saved = tmp_path / "annotated.png"
    command = [sys.executable, "-m", "robopoint_hf.cli", "predict", "--model", str(model_folder / "model")]
    command += ["--image", str(model_folder / "frame.png"), "--instruction", "Point to the mug.", "--json"]
    command += ["--output", str(saved), "--max-points", "1", "--no-constrained"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    score = out["points"][0].pop("score")
    assert out == {
        "points": [{"x": 0.56, "y": 0.975, "x_px": 56, "y_px": 78}],
        "boxes": [],
        "text": TWO_POINTS,
        "parse_failed": False,
    }
    assert 0.9 < score < 1
    with Image.open(saved) as annotated:
        assert annotated.size == (100, 80)
        assert annotated.getpixel((56, 78)) != (30, 60, 90)  # marker drawn at the kept point
        assert annotated.getpixel((12, 34)) == (30, 60, 90)  # the dropped point is not drawn


def test_table_output(model_folder, capsys):
    code = main(
        ["predict", "--model", str(model_folder / "model"), "--image", str(model_folder / "frame.png")]
        + ["--instruction", "Point to the mug.", "--max-new-tokens", "20", "--no-constrained"]
    )
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        f"answer: {TWO_POINTS}",
        "  #   x_px   y_px       x       y  score",
        "  1     12     34   0.120   0.425  0.742",
        "  2     56     78   0.560   0.975  0.951",
    ]


def test_unparseable_answer_is_reported_not_an_error(model_folder, capsys):
    code = main(
        ["predict", "--model", str(model_folder / "model"), "--image", str(model_folder / "frame.png")]
        + ["--instruction", "Point.", "--max-new-tokens", "1", "--json", "--no-constrained"]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"points": [], "boxes": [], "text": "[(", "parse_failed": True}


@pytest.mark.parametrize(
    "arguments, message, code",
    [
        (
            ["--model", "{folder}/model", "--image", "{folder}/missing.png"],
            "Image file not found: {folder}/missing.png",
            2,
        ),
        (
            ["--model", "{folder}/absent", "--image", "{folder}/frame.png"],
            "model folder not found: {folder}/absent",
            2,
        ),
        (
            ["--model", "{folder}/model", "--image", "{folder}/frame.png", "--output", "{folder}/no/dir/out.png"],
            "cannot write {folder}/no/dir/out.png: its folder does not exist",
            2,
        ),
        (  # checked before the model is looked for: a typo costs no model load
            ["--model", "{folder}/absent", "--image", "{folder}/frame.png", "--output", "{folder}/out.txt"],
            "--output {folder}/out.txt: .txt is not an image format; use .png or .jpg",
            2,
        ),
        (
            ["--model", "{folder}/absent", "--image", "{folder}/frame.png", "--output", "{folder}"],
            "--output {folder} is a folder; give the image file to write, e.g. annotated.png",
            2,
        ),
    ],
)
def test_bad_input_is_one_line_naming_it(model_folder, capsys, arguments, message, code):
    arguments = [argument.format(folder=model_folder) for argument in arguments]
    assert main(["predict", *arguments, "--instruction", "Point."]) == code
    assert capsys.readouterr().err == f"robopoint predict: error: {message.format(folder=model_folder)}\n"


def test_counts_must_be_positive(model_folder, capsys):
    assert main(["predict", "--image", "x.png", "--instruction", "Point.", "--max-points", "0"]) == 2
    assert capsys.readouterr().err == (
        "robopoint predict: error: argument --max-points: must be a positive integer, got '0'\n"
    )


def test_predict_loads_original_format_checkpoints():
    """`robopoint predict --model <original LLaVA-format folder>` converts it in memory, like from_pretrained."""
    import json as json_module
    from pathlib import Path

    from robopoint_hf.inference.loading import load_pipeline
    from robopoint_hf.model.templates import get_chat_template

    original = Path(__file__).parent / "fixtures" / "original"
    pipe = load_pipeline(str(original / "llama2-linear-full"), "cpu", "float32")
    reference = json_module.loads((original / "refs/llama2-linear-full/llava_v1/sink.json").read_text())
    pipe.processor.chat_template = get_chat_template("llava_v1")  # the template of this reference
    question = json_module.loads((original / "refs/vicuna-mlp2x-full/llava_v1/batch_mixed_lengths.json").read_text())
    result = pipe(
        str(original / "images/sink.jpg"),
        question["questions"][1],
        answer_format=False,
        max_new_tokens=12,
        constrained=False,  # the reference is the original code's free text
    )
    assert result["text"] == reference["generated_text"]


def test_default_model_is_the_shipped_tiny_model(capsys):
    """Without --model, predict answers with the packaged demonstration model; on a shipped scene its points fall
    inside the target region (the regression the model card reports)."""
    from PIL import Image

    from robopoint_hf.checkpoints import DEFAULT_MODEL_DIR
    from robopoint_hf.cli import main

    example = json.loads((DEFAULT_MODEL_DIR / "examples.json").read_text())[0]
    image = str(DEFAULT_MODEL_DIR / example["image"])
    assert main(["predict", "--image", image, "--instruction", example["question"], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    mask = Image.open(DEFAULT_MODEL_DIR / example["mask"])
    assert result["points"] and all(mask.getpixel((p["x_px"], p["y_px"])) == 255 for p in result["points"])
