"""Table tests of the answer grammar (`robopoint_hf.model.points`).

Original-mode cases are the behaviours listed in the reference notes (§6.3) and the parity fixtures' README (§6);
their expected values are what the original `text2pts` typing produces.
"""

import pytest

from robopoint_hf.model.points import (
    ANSWER_FORMAT_SUFFIX,
    Box,
    Point,
    add_answer_format,
    clamp_points,
    format_points,
    in_range,
    parse_points,
    to_normalized,
    to_pixels,
)

P = Point
B = Box

# (text, expected points, expected boxes, parse_failed)
ORIGINAL_CASES = [
    ("(0.5,0.3)", [P(0.5, 0.3, True)], [], False),
    ("(0.5, -0.3)", [P(0.5, -0.3, True)], [], False),
    ("(+0.5, 0.3)", [P(0.5, 0.3, True)], [], False),
    ("((0.1, 0.2))", [P(0.1, 0.2, True)], [], False),
    ("(5.)", [], [], False),  # one number: arity 1 ignored
    ("(5., 0.5)", [P(5.0, 0.5, True)], [], False),
    ("(0.1,\n 0.2)", [P(0.1, 0.2, True)], [], False),  # newline after the comma
    ("(.5, .3)", [], [], False),  # leading-dot floats not matched
    ("(1e-3, 0.2)", [], [], False),  # exponent not matched
    ("( 0.5, 0.3)", [], [], False),  # space after "("
    ("(0.5 ,0.3)", [], [], False),  # space before ","
    ("[0.5, 0.3]", [], [], False),  # square brackets
    ("[(124, 289), (175, 51)]", [P(124, 289, False), P(175, 51, False)], [], False),
    ("(10, 0.5)", [P(10, 0.5, True)], [], False),  # either float -> both scaled
    ("(0.4, 0.4, 0.6, 0.6)", [], [B(0.4, 0.4, 0.6, 0.6, True)], False),
    ("(100, 120, 180, 200)", [], [B(100, 120, 180, 200, False)], False),
    ("(0.1, 10, 0.2, 20)", [], [B(0.1, 10, 0.2, 20, True)], False),  # x0 float -> all scaled
    ("(10, 0.5, 0.6, 200)", [], [], True),  # int x0 + float -> original raises -> skipped
    ("(0.1, 0.2, 0.3)", [], [], False),  # 3-tuple ignored
    ("[(0.1, 0.1, 0.2, 0.2), (0.5, 0.5)]", [P(0.5, 0.5, True)], [B(0.1, 0.1, 0.2, 0.2, True)], False),
    ("", [], [], False),
    ("[]", [], [], False),
    ("[()]", [], [], False),
    ("No points.", [], [], False),
    ("[(a, b), (x1, y1)]", [], [], False),
    ("The answer is (0.3; 0.4) or [0.5, 0.6].", [], [], False),
    (
        "((0.2, 0.3)) and {(0.4, 0.5)} plus (+0.6, +0.7)",
        [P(0.2, 0.3, True), P(0.4, 0.5, True), P(0.6, 0.7, True)],
        [],
        False,
    ),
    ("[(-0.0001, 0.5)]", [P(-0.0001, 0.5, True)], [], False),
    ("[(100,200),(300,400)]", [P(100, 200, False), P(300, 400, False)], [], False),
]

ROBUST_CASES = [
    ("[(0.461, 0.527), (0.498, 0.521)]", [P(0.461, 0.527, True), P(0.498, 0.521, True)], [], False),
    ("( 0.5 , 0.3 )", [P(0.5, 0.3, True)], [], False),
    ("(.5, .25)", [P(0.5, 0.25, True)], [], False),
    ("(1e-3, 2.5E-1)", [P(0.001, 0.25, True)], [], False),
    ("[[0.5, 0.3], [0.2, 0.1]]", [P(0.5, 0.3, True), P(0.2, 0.1, True)], [], False),
    ("(10, 20) and some trailing text", [P(10, 20, False)], [], False),
    ("(10, 0.5, 0.6, 200)", [], [B(10, 0.5, 0.6, 200, True)], False),  # robust: any float -> normalized
    ("(0.1, 0.2, 0.3)", [], [], True),
    ("I cannot find any free space.", [], [], True),
    ("", [], [], True),
    ("[ ]", [], [], False),  # explicit empty list: readable, no points
    ("(1e999, 0.5)", [], [], True),  # non-finite ignored
    ("(-0.1, 1.2)", [P(-0.1, 1.2, True)], [], False),  # kept; range checks are the caller's
]


@pytest.mark.parametrize(("text", "points", "boxes", "failed"), ORIGINAL_CASES)
def test_original_mode(text, points, boxes, failed):
    answer = parse_points(text, mode="original")
    assert (answer.points, answer.boxes, answer.parse_failed, answer.text) == (points, boxes, failed, text)
    # Types matter in original mode: ints stay ints (pixels), "5." is a float.
    assert [type(v) for p in answer.points for v in (p.x, p.y)] == [type(v) for p in points for v in (p.x, p.y)]


@pytest.mark.parametrize(("text", "points", "boxes", "failed"), ROBUST_CASES)
def test_robust_mode(text, points, boxes, failed):
    answer = parse_points(text)
    assert (answer.points, answer.boxes, answer.parse_failed, answer.text) == (points, boxes, failed, text)


def test_items_keep_text_order():
    answer = parse_points("[(0.5, 0.5), (0.1, 0.1, 0.2, 0.2), (3, 4)]")
    assert answer.items == (P(0.5, 0.5, True), B(0.1, 0.1, 0.2, 0.2, True), P(3.0, 4.0, False))


def test_cxcywh_boxes_become_corners():
    answer = parse_points("(0.5, 0.5, 0.2, 0.4)", box_format="cxcywh")
    assert answer.boxes == [B(0.4, 0.3, 0.6, 0.7, True)]
    with pytest.raises(ValueError, match="xyxy"):
        parse_points("(1, 2)", mode="original", box_format="cxcywh")
    with pytest.raises(ValueError, match="mode must be one of"):
        parse_points("(1, 2)", mode="lenient")


def test_to_pixels_rounding_rules():
    pts = [P(-0.0001, 0.5, True), P(0.4999, 0.9999, True), P(7, 9, False)]
    # floor keeps a slightly negative point outside; int() (the original) truncates it onto pixel 0.
    assert to_pixels(pts, 640, 480) == [P(-1, 240, False), P(319, 479, False), P(7, 9, False)]
    assert to_pixels(pts, 640, 480, rounding="truncate") == [P(0, 240, False), P(319, 479, False), P(7, 9, False)]
    # round(): 0.4999 * 640 = 319.936 -> 320; 0.9999 * 480 = 479.952 -> 480
    assert to_pixels(pts[1:2], 640, 480, rounding="round") == [P(320, 480, False)]
    assert to_normalized([P(320, 120, False), P(0.5, 0.5, True)], 640, 480) == [P(0.5, 0.25, True), P(0.5, 0.5, True)]


def test_range_checks_and_clamping():
    assert in_range(P(1.0, 0.0, True)) and not in_range(P(1.01, 0.5, True))
    assert in_range(P(639, 479, False), 640, 480) and not in_range(P(640, 0, False), 640, 480)
    assert clamp_points([P(-0.2, 1.5, True), P(700, -3, False)], 640, 480) == [P(0.0, 1.0, True), P(639, 0, False)]


def test_format_points_exact_text():
    assert format_points([(0.461, 0.527), (0.498, 0.521)]) == "[(0.461, 0.527), (0.498, 0.521)]"
    assert format_points([P(0.5, 0.25, True)], decimals=2) == "[(0.50, 0.25)]"
    assert format_points([]) == "[]"
    text = format_points([(0.1234, 0.5)])
    assert parse_points(text).points == [P(0.123, 0.5, True)]


def test_answer_format_suffix_and_idempotence():
    assert ANSWER_FORMAT_SUFFIX.startswith("Your answer should be formatted as a list of tuples, i.e. [(x1, y1),")
    assert ANSWER_FORMAT_SUFFIX.endswith("indicating the normalized pixel locations of the points in the image.")
    once = add_answer_format("Point to the mug.")
    assert once == "Point to the mug. " + ANSWER_FORMAT_SUFFIX
    assert add_answer_format(once) == once
    assert add_answer_format("Q", sep="\n") == "Q\n" + ANSWER_FORMAT_SUFFIX
