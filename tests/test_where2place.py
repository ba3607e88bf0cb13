"""Where2Place scoring: exact parity with the original scorer, and each protocol on hand-computed masks.

The parity references (`tests/fixtures/where2place_results.json`) are the printed accuracy of the ORIGINAL
summarize_vqa.py and its per-question values; see /work/shared/fixtures/original/README.md §6 for how they were made.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robopoint_hf.evaluation.where2place import (
    _numpy1_sum,
    _pairwise_sum,
    load_mask,
    load_questions,
    score_answer_file,
    score_where2place,
)
from robopoint_hf.model.points import parse_points

FIXTURES = Path(__file__).parent / "fixtures"
RESULTS = json.loads((FIXTURES / "where2place_results.json").read_text())["datasets"]
CASES = [(ds, name) for ds, files in RESULTS.items() for name in files]


@pytest.mark.parametrize(("dataset", "answer_file"), CASES)
def test_original_protocol_matches_original_scorer_exactly(dataset, answer_file):
    reference = RESULTS[dataset][answer_file]
    result = score_answer_file(FIXTURES / dataset / "answers" / answer_file, FIXTURES / dataset, protocol="original")
    assert result.accuracy == reference["printed_accuracy"]
    assert result.per_question == [q["accuracy"] for q in reference["per_question"]]
    assert result.num_skipped == sum(q["parse_failed"] for q in reference["per_question"])


def test_original_counts_on_fixture_files():
    boxes = score_answer_file(
        FIXTURES / "where2place/answers/answers_boxes.jsonl", FIXTURES / "where2place", protocol="original"
    )
    # the inverted box of question 2 expands to no pixel (score 0) but the answer is not empty
    assert (boxes.num_failed, boxes.num_skipped, boxes.num_missing, boxes.num_empty) == (1, 1, 0, 0)
    short = score_answer_file(
        FIXTURES / "where2place/answers/answers_short.jsonl", FIXTURES / "where2place", protocol="original"
    )
    assert (short.num_missing, short.num_skipped, short.num_questions) == (2, 2, 6)


def test_numpy1_summation_order():
    # The original ran on numpy 1.x: 8192-element buffers summed pairwise, buffers added sequentially. These three
    # sums of 0.1 differ in the last bits depending on the order; expected values printed by numpy 1.26.4's
    # np.add.reduce (numpy 2.x gives 1999.9999999999998 for the first).
    values = np.full(20000, 0.1)
    assert _numpy1_sum(values) == 2000.0000000000005
    assert _pairwise_sum(values[:8192]) == 819.2000000000002
    assert _numpy1_sum(values[:5]) == 0.1 + 0.1 + 0.1 + 0.1 + 0.1


def _mask(rows):
    return np.array(rows, dtype=np.uint8)


# 4x4 mask: left column free (255), second column grey 200 (0.784 soft, >= 0.5 binary), third 100 (0.392), last 0.
MASK = _mask([[255, 200, 100, 0]] * 4)


def test_strict_protocol_hand_computed():
    predictions = [
        "[(0.1, 0.5), (0.3, 0.5), (0.6, 0.5), (0.9, 0.5)]",  # columns 0,1,2,3 -> 1,1,0,0 -> 0.5
        "nothing here",  # parse failure -> 0, counted in num_failed
        "[]",  # empty -> 0, counted in num_empty
        "[(-0.01, 0.5), (1.0, 0.5)]",  # floor(-0.04) = -1 and 4: both outside -> 0
        "[(0.0, 0.0, 0.5, 1.0)]",  # box columns 0..1, rows 0..3 -> 8 pixels all >= 0.5 -> 1
        "[(1, 1)]",  # pixel (1, 1): value 200 -> 1
    ]
    result = score_where2place(predictions, [MASK] * 6, protocol="strict")
    assert result.per_question == [0.5, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert result.accuracy == 2.5 / 6
    assert (result.num_parsed, result.num_failed, result.num_empty, result.num_skipped) == (5, 1, 1, 0)


def test_original_protocol_hand_computed_soft_and_640x480():
    # On a 4x4 mask the original still scales by 640x480: (0.001, 0.001) -> (0, 0) is the only point inside.
    result = score_where2place(
        ["[(0.001, 0.001), (0.5, 0.5)]", "[(1, 0), (2, 0)]", "junk (1, 0.5, 2, 3)"], [MASK] * 3, protocol="original"
    )
    # q0: (255/255 + 0) / 2 = 0.5 ; q1: pixels (1,0) and (2,0): (200/255 + 100/255) / 2 ; q2: skipped
    assert result.per_question == [0.5, (200 / 255 + 100 / 255) / 2, None]
    assert result.accuracy == (0.5 + (200 / 255 + 100 / 255) / 2) / 2
    assert result.num_skipped == 1


def test_original_box_wraps_negative_bounds_like_numpy_slices():
    mask = np.zeros((480, 640), dtype=np.uint8)
    mask[:, 600:] = 255
    # x0 = int(-0.1 * 640) = -64 -> slice(-64, 640) on a 640-wide grid = columns 576..639 (24 of 64 free)
    result = score_where2place(["[(-0.1, 0.0, 1.0, 0.1)]"], [mask], protocol="original")
    assert result.per_question == [40 / 64]
    # strict clips instead: columns 0..639 -> 40 of 640 free
    assert score_where2place(["[(-0.1, 0.0, 1.0, 0.1)]"], [mask]).per_question == [40 / 640]


def test_micro_strict_round_category_mean_hand_computed():
    preds = ["[(0.1, 0.5), (0.6, 0.5), (0.9, 0.5)]", "[(0.3, 0.5)]", "bad"]
    masks = [MASK] * 3
    # micro: mask > 0 -> columns 0,1,2 count; hits 2 of 3 + 1 of 1; failures add no points -> 3 / 4
    assert score_where2place(preds, masks, protocol="micro").accuracy == 3 / 4
    # strict_round: round(0.6 * 4) = round(2.4) = 2 (grey 100 < 0.5), round(0.9*4)=4 outside, round(0.1*4)=0
    # -> 1/3 ; round(0.3 * 4) = round(1.2) = 1 -> 1 ; bad -> 0
    assert score_where2place(preds, masks, protocol="strict_round").per_question == [1 / 3, 1.0, 0.0]
    # category_mean: strict per question [1/3, 1, 0]; a = mean(1/3, 0) = 1/6, b = 1 -> (1/6 + 1) / 2
    result = score_where2place(preds, masks, protocol="category_mean", categories=["a", "b", "a"])
    assert result.per_category == {"a": 1 / 6, "b": 1.0}
    assert result.accuracy == (1 / 6 + 1.0) / 2


def test_parsed_points_and_image_size_checks():
    assert score_where2place([[[0.1, 0.5], [0.9, 0.5]]], [MASK]).per_question == [0.5]
    with pytest.raises(ValueError, match=r"image size \(8, 8\) differs from mask size \(4, 4\)"):
        score_where2place(["(0.1, 0.1)"], [MASK], image_sizes=[(8, 8)])
    with pytest.raises(ValueError, match="item 0: expected"):
        score_where2place([[[0.1, 0.2, 0.3]]], [MASK])
    with pytest.raises(ValueError, match="protocol must be one of"):
        score_where2place(["(0.1, 0.1)"], [MASK], protocol="soft")
    with pytest.raises(ValueError, match="needs a category"):
        score_where2place(["(0.1, 0.1)"], [MASK], protocol="category_mean")
    assert math.isnan(score_where2place(["(10, 0.5, 0.6, 200)"], [MASK], protocol="original").accuracy)


def test_masks_from_files_images_and_bad_masks(tmp_path):
    Image.fromarray(MASK).save(tmp_path / "m.png")
    assert score_where2place(["[(0.1, 0.5)]"], [tmp_path / "m.png"]).accuracy == 1.0
    assert score_where2place(["[(0.1, 0.5)]"], [Image.fromarray(MASK)]).accuracy == 1.0
    Image.fromarray(np.stack([MASK] * 3, -1)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="mode 'RGB'"):
        load_mask(tmp_path / "rgb.png", name="question 3")
    with pytest.raises(FileNotFoundError, match="question 3: mask file"):
        load_mask(tmp_path / "nope.jpg", name="question 3")


def test_answer_file_alignment_errors(tmp_path):
    data = FIXTURES / "where2place"
    answers = [json.loads(line) for line in (data / "answers/answers_short.jsonl").read_text().splitlines()]
    short = tmp_path / "short.jsonl"
    short.write_text("".join(json.dumps(a) + "\n" for a in answers))
    with pytest.raises(ValueError, match=r"4 answers for 6 questions; missing question_ids \[4, 5\]"):
        score_answer_file(short, data, protocol="strict")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question_id": 0, "text": "(1, 2)"}\n{oops\n')
    with pytest.raises(ValueError, match="broken.jsonl, line 2: invalid JSON"):
        score_answer_file(broken, data)
    # strict aligns by question_id, so a shuffled file scores the same as the ordered one
    full = [json.loads(line) for line in (data / "answers/answers_normalized.jsonl").read_text().splitlines()]
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("".join(json.dumps(a) + "\n" for a in reversed(full)))
    ordered = score_answer_file(data / "answers/answers_normalized.jsonl", data)
    assert score_answer_file(shuffled, data).per_question == ordered.per_question == [1.0, 0.6, 0.0, 1.0, 0.4, 0.0]


def test_load_questions_names_missing_files(tmp_path):
    questions = load_questions(FIXTURES / "where2place")
    assert [q.category for q in questions] == ["seen", "seen", "unseen", "seen", "seen", "unseen"]
    assert questions[3].mask.name == "03.jpg"
    (tmp_path / "images").mkdir()
    (tmp_path / "point_questions.jsonl").write_text('{"question_id": 7, "image": "a.jpg", "text": "q"}\n')
    with pytest.raises(FileNotFoundError, match="question 7 .*image .*a.jpg is missing"):
        load_questions(tmp_path)


def test_parse_mode_matters_for_original():
    # robust reads ".5"; original does not -> the question has no points and scores 0 instead of the mask value
    answer = parse_points("(.5, .5)")
    mask = np.full((480, 640), 255, dtype=np.uint8)
    assert score_where2place([answer], [mask], protocol="original").per_question == [1.0]
    assert score_where2place(["(.5, .5)"], [mask], protocol="original").per_question == [0.0]
