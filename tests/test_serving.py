"""OpenAI-compatible serving helpers: the request messages and reading points back from hand-made responses.

The responses are shaped like those of vLLM / SGLang / TGI's ``/v1/chat/completions`` (no engine runs here): a
served answer must give the same records as ``pipeline("robopoint")`` on the same text, and the same scores when
the server sends per-token log-probabilities.
"""

from __future__ import annotations

import base64
import io
import logging
import math

import numpy as np
import pytest
from PIL import Image

from robopoint_hf.inference.serving import build_messages, image_data_url, parse_response, response_text
from robopoint_hf.model.points import ANSWER_FORMAT_SUFFIX

ANSWER = "[(0.461, 0.527), (0.498, 0.521)]"
SIZE = (640, 480)


def chat_response(content, *, finish_reason: str = "stop", logprobs: list[tuple[str, float]] | None = None) -> dict:
    """A chat-completion body as the OpenAI-compatible servers send it."""
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = {
            "content": [{"token": token, "logprob": lp, "top_logprobs": []} for token, lp in logprobs]
        }
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "robopoint-13b-llava", "choices": [choice]}


def decode_data_url(url: str) -> Image.Image:
    header, payload = url.split(",", 1)
    assert header == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


# ---------------------------------------------------------------------------------------------------- request
def test_build_messages_sends_the_image_first_then_the_formatted_instruction():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 4), dtype=np.uint8), "RGBA")
    (message,) = build_messages(image, "  Point to the mug. ")
    assert message["role"] == "user"
    image_part, text_part = message["content"]
    assert image_part["type"] == "image_url" and text_part["type"] == "text"
    assert text_part["text"] == f"Point to the mug. {ANSWER_FORMAT_SUFFIX}"
    sent = decode_data_url(image_part["image_url"]["url"])
    assert sent.mode == "RGB" and np.array_equal(np.asarray(sent), np.asarray(image.convert("RGB")))  # lossless


def test_build_messages_options(tmp_path):
    path = tmp_path / "frame.png"
    Image.new("RGB", (8, 6), (1, 2, 3)).save(path)
    messages = build_messages(path, "Point to the mug.", answer_format=False, system="Be brief.")
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1]["content"][1]["text"] == "Point to the mug."
    assert decode_data_url(messages[1]["content"][0]["image_url"]["url"]).getpixel((0, 0)) == (1, 2, 3)
    assert build_messages(path.read_bytes(), "x")[0]["content"][0] == messages[1]["content"][0]
    # The suffix is added once, even to an instruction that carries it already.
    formatted = build_messages(path, f"Point to the mug. {ANSWER_FORMAT_SUFFIX}")[0]["content"][1]["text"]
    assert formatted.count(ANSWER_FORMAT_SUFFIX) == 1
    url = "https://example.com/sink.jpg"
    assert build_messages(url, "x")[0]["content"][0]["image_url"]["url"] == url
    assert image_data_url(Image.open(path), "jpeg").startswith("data:image/jpeg;base64,")


def test_encoded_files_are_sent_as_they_are_unless_a_server_could_read_them_otherwise(tmp_path):
    """A plain RGB JPEG/PNG/WEBP goes unchanged (the server decodes the bytes the pipeline decodes, no re-encoding);
    an EXIF rotation, an alpha channel or a palette is resolved here, as lossless PNG, so every server agrees."""
    pixels = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    plain, rotated, rgba = tmp_path / "plain.jpg", tmp_path / "rotated.jpg", tmp_path / "rgba.png"
    Image.fromarray(pixels).save(plain)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees": transformers' load_image applies it, the pipeline does not
    Image.fromarray(pixels).save(rotated, exif=exif)
    Image.fromarray(pixels).convert("RGBA").save(rgba)
    header, payload = image_data_url(plain, "png").split(",", 1)
    assert header == "data:image/jpeg;base64" and base64.b64decode(payload) == plain.read_bytes()
    assert image_data_url(plain.read_bytes()) == image_data_url(plain)
    for path in (rotated, rgba):
        sent = decode_data_url(image_data_url(path))  # asserts PNG
        assert np.array_equal(np.asarray(sent), np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize(
    ("image", "instruction", "error"),
    [
        (Image.new("RGB", (4, 4)), "   ", ValueError),
        (Image.new("RGB", (4, 4)), None, ValueError),
        (np.zeros((4, 4, 3)), "x", TypeError),
    ],
)
def test_build_messages_rejects_bad_input(image, instruction, error):
    with pytest.raises(error):
        build_messages(image, instruction)


def test_image_format_is_checked():
    with pytest.raises(ValueError, match="image_format must be one of PNG, JPEG, WEBP"):
        image_data_url(Image.new("RGB", (4, 4)), "gif")


# ---------------------------------------------------------------------------------------------------- response
def test_parse_response_gives_the_pipelines_records():
    result = parse_response(chat_response(ANSWER), image_size=SIZE)
    assert result == {
        "points": [
            {"x": 0.461, "y": 0.527, "x_px": 295, "y_px": 252, "score": None},
            {"x": 0.498, "y": 0.521, "x_px": 318, "y_px": 250, "score": None},
        ],
        "boxes": [],
        "text": ANSWER,
        "parse_failed": False,
    }
    assert parse_response(ANSWER, SIZE) == result  # the bare text gives the same


def test_parse_response_matches_the_local_pipeline():
    """Same answer text, same records (and same keys) as pipeline("robopoint") gives for it."""
    from test_pipeline_robopoint import TWO_POINTS, make_pipe, pointing_model

    local = make_pipe(*pointing_model(TWO_POINTS))(Image.new("RGB", SIZE), "Point.")
    served = parse_response(chat_response(local["text"]), image_size=SIZE)
    assert served["text"] == local["text"] == TWO_POINTS
    strip = [{key: value for key, value in point.items() if key != "score"} for point in local["points"]]
    assert [{key: value for key, value in point.items() if key != "score"} for point in served["points"]] == strip


def test_parse_response_without_image_size_keeps_only_what_the_answer_says():
    result = parse_response("[(0.5, 0.25), (10, 20)]")
    assert result["points"] == [
        {"x": 0.5, "y": 0.25, "x_px": None, "y_px": None, "score": None},
        {"x": None, "y": None, "x_px": 10, "y_px": 20, "score": None},
    ]


def test_parse_response_reads_boxes_like_the_pipeline():
    (box,) = parse_response("[(0.1, 0.2, 0.5, 0.75)]", image_size=SIZE)["boxes"]
    assert list(box) == ["x0", "y0", "x1", "y1", "x0_px", "y0_px", "x1_px", "y1_px", "score"]
    assert [box[key] for key in ("x0_px", "y0_px", "x1_px", "y1_px")] == [64, 96, 320, 360]


def test_scores_from_logprobs_are_the_geometric_mean_of_each_tuples_tokens():
    tokens = [("[(", -0.1), ("0.461", -0.2), (", ", -0.3), ("0.527", -0.4), ("), (", -0.5)]
    tokens += [("0.498", -0.6), (", ", -0.7), ("0.521", -0.8), (")]", -0.9)]
    result = parse_response(chat_response(ANSWER, logprobs=tokens), image_size=SIZE)
    # First tuple "(0.461, 0.527)" spans tokens 0-4 ("[(" holds its "(", "), (" its ")"); second spans 4-8.
    first, second = (point["score"] for point in result["points"])
    assert first == pytest.approx(math.exp((-0.1 - 0.2 - 0.3 - 0.4 - 0.5) / 5))
    assert second == pytest.approx(math.exp((-0.5 - 0.6 - 0.7 - 0.8 - 0.9) / 5))
    top = parse_response(chat_response(ANSWER, logprobs=tokens), image_size=SIZE, max_points=1)
    assert top["points"] == result["points"][:1]


def test_logprobs_that_do_not_spell_the_answer_give_no_scores():
    tokens = [("token_id:29961", -0.1), ("token_id:29900", -0.2)]  # vLLM's return_tokens_as_token_ids
    result = parse_response(chat_response(ANSWER, logprobs=tokens), image_size=SIZE)
    assert [point["score"] for point in result["points"]] == [None, None]
    with pytest.raises(ValueError, match="request logprobs=True"):
        parse_response(chat_response(ANSWER), image_size=SIZE, max_points=1)


class FakeOpenAIResponse:
    """What the openai client returns: a pydantic object with model_dump()."""

    def __init__(self, body: dict):
        self.body = body

    def model_dump(self) -> dict:
        return self.body


def test_response_text_accepts_every_shape():
    assert response_text(chat_response(ANSWER)) == ANSWER
    assert response_text(FakeOpenAIResponse(chat_response(ANSWER))) == ANSWER
    parts = [{"type": "text", "text": "[(0.1, 0.2)"}, {"type": "text", "text": "]"}]
    assert response_text(chat_response(parts)) == "[(0.1, 0.2)]"
    completion = {"choices": [{"index": 0, "text": ANSWER, "finish_reason": "stop"}]}  # /v1/completions
    assert response_text(completion) == ANSWER
    two = chat_response(ANSWER)
    two["choices"].append({"index": 1, "message": {"role": "assistant", "content": "[]"}})
    assert response_text(two, choice=1) == "[]"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ({"error": {"message": "model not found", "code": 404}}, "server returned an error: model not found"),
        ({"object": "error", "message": "prompt too long", "code": 400}, "server returned an error: prompt too long"),
        ({"id": "x", "choices": []}, "has no choices"),
        (chat_response(None), "no text content"),
        (42, "must be the answer text"),
    ],
)
def test_response_text_errors_name_the_problem(response, message):
    with pytest.raises((ValueError, TypeError), match=message):
        response_text(response)
    with pytest.raises(ValueError, match="choice 3 does not exist"):
        response_text(chat_response(ANSWER), choice=3)


def test_a_cut_answer_is_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="robopoint_hf.inference.serving"):
        result = parse_response(chat_response("[(0.461, 0.527), (0.49", finish_reason="length"), SIZE)
    assert len(result["points"]) == 1
    assert "cut at max_tokens" in caplog.text


def test_an_answer_without_points_is_flagged_not_raised():
    result = parse_response(chat_response("I cannot see a mug."), SIZE)
    assert result["points"] == [] and result["parse_failed"] is True
