"""Answer-format adapters on answers copied verbatim from each model's own documentation or code
(`tests/fixtures/benchmarks/adapter_examples.json`; sources in tests/fixtures/benchmarks/README.md)."""

import json
from pathlib import Path

import pytest

from robopoint_hf.evaluation.answer_formats import ANSWER_FORMATS, parse_answer, parse_answers, smart_resize
from robopoint_hf.model.points import Point

EXAMPLES = json.loads((Path(__file__).parent / "fixtures/benchmarks/adapter_examples.json").read_text())["examples"]


def _xy(parsed):
    return [(round(p.x, 9), round(p.y, 9)) for p in parsed.points]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["model"] for e in EXAMPLES])
def test_published_answer_parses_to_the_documented_points(example):
    size = tuple(example["image_size"]) if example["image_size"] else None
    parsed = parse_answer(example["text"], example["format"], image_size=size)
    assert not parsed.parse_failed
    assert all(p.normalized for p in parsed.points)
    assert _xy(parsed) == [tuple(xy) for xy in example["expected"]]


def test_molmo_points_match_ai2s_own_extraction():
    # allenai/molmo2 test_legacy_extract_points: the same answer read by Ai2's parser at width 360, height 640
    example = next(e for e in EXAMPLES if e["model"] == "Molmo")
    width, height = example["image_size"]
    pixels = [v for p in parse_answer(example["text"], "molmo").points for v in (p.x * width, p.y * height)]
    assert pixels == pytest.approx([v for xy in example["source_pixels"] for v in xy], abs=0.1)


def test_roborefer_is_an_alias():
    robopoint = next(e for e in EXAMPLES if e["model"] == "RoboPoint")["text"]
    assert parse_answer(robopoint, "roborefer").points == parse_answer(robopoint, "robopoint").points


def test_robopoint_integer_tuples_are_pixels():
    # an all-integer tuple is pixels of the original image
    assert _xy(parse_answer("[(320, 240)]", "robopoint", image_size=(640, 480))) == [(0.5, 0.5)]
    with pytest.raises(ValueError, match="image_size"):
        parse_answer("[(320, 240)]", "robopoint")


def test_molmo2_drops_points_off_the_image():
    # Molmo2's extract_multi_image_points keeps only 0 <= x <= width, 0 <= y <= height
    assert _xy(parse_answer('<points coords="1 1 1200 400 2 911 800">x</points>', "molmo")) == [(0.911, 0.8)]


def test_qwen25_vl_frame_is_qwens_documented_resize():
    # QwenLM/Qwen3-VL qwen-vl-finetune/tools/process_bbox.ipynb: on a 640x428 image (max_pixels 14*14*4*1280) the
    # original [146, 137, 615, 415] is [147, 134, 619, 407] in Qwen2.5-VL's frame. Mapped back, each corner (read as a
    # point; the answer text is ours) lands on the original pixel within the notebook's rounding.
    assert smart_resize(428, 640, max_pixels=14 * 14 * 4 * 1280) == (420, 644)
    for (x, y), (ox, oy) in zip(((147, 134), (619, 407)), ((146, 137), (615, 415)), strict=True):
        text = f'[{{"point_2d": [{x}, {y}]}}]'
        (point,) = parse_answer(text, "qwen2.5-vl", image_size=(640, 428), max_pixels=14 * 14 * 4 * 1280).points
        assert abs(point.x * 640 - ox) < 1 and abs(point.y * 428 - oy) < 1


def test_qwen_xml_point_form():
    # Qwen2.5-VL cookbook spatial_understanding.ipynb section 8 documents "point-format: XML <points x y>..</points>"
    # besides JSON point_2d; the numbers are in the same frame as point_2d.
    text = '<points x1="322" y1="238" alt="free space">free space</points>'
    assert _xy(parse_answer(text, "qwen2.5-vl", image_size=(640, 480))) == [(0.5, 0.5)]
    assert _xy(parse_answer(text.replace("322", "250").replace("238", "750"), "qwen3-vl")) == [(0.25, 0.75)]


@pytest.mark.parametrize("size", [(480, 640), (3000, 4000), (20, 30), (1080, 1920), (28, 5000), (99, 3)])
def test_smart_resize_matches_transformers(size):
    reference = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    for min_pixels, max_pixels in ((3136, 12845056), (256 * 28 * 28, 1280 * 28 * 28), (256 * 28 * 28, 3200000)):
        ours = smart_resize(*size, min_pixels=min_pixels, max_pixels=max_pixels)
        theirs = reference.smart_resize(*size, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
        assert ours == tuple(theirs)


def test_gemini_er_is_y_first_thousandths():
    # The published answer (ai.google.dev robotics-overview, in EXAMPLES) is bare JSON. The texts below are ours: the
    # same grammar in a ```json fence, and an empty list.
    gemini = '```json\n[{"point": [750, 250], "label": "cup"}]\n```'
    assert _xy(parse_answer(gemini, "gemini-er")) == [(0.25, 0.75)]
    assert parse_answer("```json\n[]\n```", "gemini-er").parse_failed is False
    assert parse_answer("There are none.", "qwen3-vl").parse_failed is True


def test_embodied_r1_answer_block():
    # No Embodied-R1 answer text is published (its README shows pictures only); the grammar is its eval prompt
    # "<think> reasoning process here </think><answer><point>[[x1, y1], [x2, y2], ...]</point></answer>".
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
    for answer_format, text in [*texts.items(), ("molmo", '<points coords="1 1 500 500">a</points>')]:
        assert parse_answer(text, answer_format, image_size=(640, 480)).points == [Point(0.5, 0.5, True)]
    assert parse_answers([None, "[(0.5, 0.5)]"])[0] is None
    with pytest.raises(ValueError, match="answer_format must be one of"):
        parse_answer("x", "llava")
