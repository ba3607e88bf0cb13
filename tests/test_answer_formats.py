"""Answer-format adapters on answers written the way each model's documentation or code writes them (sources:
tests/fixtures/benchmarks/README.md)."""

import pytest

from robopoint_hf.evaluation.answer_formats import ANSWER_FORMATS, parse_answer, parse_answers, smart_resize
from robopoint_hf.model.points import Point


def _xy(parsed):
    return [(round(p.x, 9), round(p.y, 9)) for p in parsed.points]


def test_robopoint_and_roborefer_tuples():
    text = "[(0.461, 0.527), (0.498, 0.521)]"  # RoboPoint README / ANSWER_FORMAT_SUFFIX
    assert _xy(parse_answer(text, "robopoint")) == [(0.461, 0.527), (0.498, 0.521)]
    assert _xy(parse_answer(text, "roborefer")) == _xy(parse_answer(text))
    # an all-integer tuple is pixels of the original image
    assert _xy(parse_answer("[(320, 240)]", "robopoint", image_size=(640, 480))) == [(0.5, 0.5)]
    with pytest.raises(ValueError, match="image_size"):
        parse_answer("[(320, 240)]", "robopoint")


def test_molmo_point_and_points_tags():
    # allenai/molmo olmo/data/data_formatter.py `points_to_text`: one point -> <point x y alt>, several -> <points x1..>
    one = '<point x="61.5" y="40.4" alt="mug">mug</point>'
    many = '<points x1="10.0" y1="20.0" x2="30.5" y2="40.0" alt="spots">spots</points>'
    assert _xy(parse_answer(one, "molmo")) == [(0.615, 0.404)]
    assert _xy(parse_answer(many, "molmo")) == [(0.1, 0.2), (0.305, 0.4)]
    assert _xy(parse_answer(many + " and " + one, "molmo"))[-1] == (0.615, 0.404)


def test_qwen25_vl_points_are_in_the_resized_frame():
    # 640x480 -> Qwen2.5-VL input 644x476 (multiples of 28): the centre of the input is the centre of the image
    assert smart_resize(480, 640) == (476, 644)
    text = '```json\n[\n\t{"point_2d": [322, 238], "label": "free space"}\n]\n```'
    assert _xy(parse_answer(text, "qwen2.5-vl", image_size=(640, 480))) == [(0.5, 0.5)]
    # a large photo is shrunk under max_pixels first
    height, width = smart_resize(3000, 4000)
    assert height * width <= 12845056 and height % 28 == width % 28 == 0


@pytest.mark.parametrize("size", [(480, 640), (3000, 4000), (20, 30), (1080, 1920), (28, 5000), (99, 3)])
def test_smart_resize_matches_transformers(size):
    reference = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    for min_pixels, max_pixels in ((3136, 12845056), (256 * 28 * 28, 1280 * 28 * 28), (256 * 28 * 28, 3200000)):
        ours = smart_resize(*size, min_pixels=min_pixels, max_pixels=max_pixels)
        theirs = reference.smart_resize(*size, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
        assert ours == tuple(theirs)


def test_qwen3_vl_and_gemini_er_thousandths():
    qwen3 = '[{"point_2d": [250, 750], "label": "cup"}]'
    gemini = '```json\n[{"point": [750, 250], "label": "cup"}]\n```'  # Gemini Robotics-ER: [y, x]
    assert _xy(parse_answer(qwen3, "qwen3-vl")) == [(0.25, 0.75)]
    assert _xy(parse_answer(gemini, "gemini-er")) == [(0.25, 0.75)]
    assert parse_answer("```json\n[]\n```", "gemini-er").parse_failed is False
    assert parse_answer("There are none.", "qwen3-vl").parse_failed is True


def test_robobrain2_pixel_tuples():
    # FlagOpen/RoboBrain2.0 README, "Usage for Pointing Prediction": answer in pixels of the original image
    text = "[(376, 309), (332, 357), (384, 335)]"
    assert _xy(parse_answer(text, "robobrain2", image_size=(640, 480))) == [
        (0.5875, 0.64375),
        (0.51875, 0.74375),
        (0.6, 0.697916667),
    ]


def test_embodied_r1_answer_block():
    # pickxiguapi/Embodied-R1 eval prompts: <think>..</think><answer><point>[[x1, y1], ...]</point></answer>
    text = "<think>the table is free on the left</think><answer><point>[[320, 240], [0.25, 0.5]]</point></answer>"
    assert _xy(parse_answer(text, "embodied-r1", image_size=(640, 480))) == [(0.5, 0.5), (0.25, 0.5)]


def test_every_adapter_returns_normalized_points():
    texts = {
        "robopoint": "[(0.5, 0.5)]",
        "roborefer": "[(0.5, 0.5)]",
        "molmo": '<point x="50.0" y="50.0" alt="a">a</point>',
        "qwen2.5-vl": '[{"point_2d": [322, 238]}]',
        "qwen3-vl": '[{"point_2d": [500, 500]}]',
        "gemini-er": '[{"point": [500, 500]}]',
        "robobrain2": "[(320, 240)]",
        "embodied-r1": "<point>[[320, 240]]</point>",
    }
    assert set(texts) == set(ANSWER_FORMATS)
    for answer_format, text in texts.items():
        assert parse_answer(text, answer_format, image_size=(640, 480)).points == [Point(0.5, 0.5, True)]
    assert parse_answers([None, "[(0.5, 0.5)]"])[0] is None
    with pytest.raises(ValueError, match="answer_format must be one of"):
        parse_answer("x", "llava")
