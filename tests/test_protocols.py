"""Published scorers: ours against the values their own code gave on the fixtures (bit-exact)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from robopoint_hf.evaluation.benchmarks import load_benchmark
from robopoint_hf.evaluation.protocols import PUBLISHED_PROTOCOLS, score_published, score_roborefer

HERE = Path(__file__).parent / "fixtures" / "benchmarks"
REFERENCES = json.loads((HERE / "protocol_references.json").read_text())
ANSWERS = json.loads((HERE / "answers.json").read_text())
FOLDERS = {"where2place": HERE.parent / "where2place", **{n: HERE / n for n in REFERENCES if n != "where2place"}}
CASES = [(f, s, p) for f in REFERENCES for s in REFERENCES[f] for p in REFERENCES[f][s]]


@pytest.fixture(scope="module")
def records():
    return {name: load_benchmark(folder) for name, folder in FOLDERS.items()}


@pytest.mark.parametrize(("fixture", "answer_set", "protocol"), CASES)
def test_matches_source_code_bit_exactly(records, fixture, answer_set, protocol):
    recs = records[fixture]
    answers = ANSWERS[fixture][answer_set]
    result = score_published(
        protocol,
        answers["texts"],
        [r.mask for r in recs],
        benchmark=recs[0].benchmark,
        answer_format=answers["answer_format"],
        categories=[r.category for r in recs],
        counts=[r.extra.get("count") for r in recs],
    )
    reference = REFERENCES[fixture][answer_set][protocol]
    assert result.accuracy == reference["accuracy"]
    assert result.per_question == reference["per_question"]
    if "binary_accuracy" in reference:
        assert result.extra["binary_accuracy"] == reference["binary_accuracy"]
        assert result.extra_per_question["binary_accuracy"] == reference["binary_per_question"]
    if "weights" in reference:
        assert result.weights == reference["weights"]


def test_every_published_protocol_has_references():
    assert {p for _, _, p in CASES} == set(PUBLISHED_PROTOCOLS)
    assert len({f for f, _, _ in CASES}) == 5


def test_references_are_not_trivial():
    values = {REFERENCES[f][s][p]["accuracy"] for f, s, p in CASES}
    assert len(values) > 10  # the fixtures separate the protocols, not all zeros


def test_roboafford_counts_a_point_twice_and_skips_missing():
    mask = np.zeros((10, 10), np.uint8)
    mask[:, :5] = 255
    # "(0.2,0.5)" matches the (x, y) pattern AND the x,y pattern: two hits; "(0.9, 0.5)" once: a miss
    result = score_published("roboafford_eval", ["[(0.2,0.5), (0.9, 0.5)]", None], [mask, mask])
    assert result.per_question == [2 / 3, None] and result.accuracy == 2 / 3 and result.num_skipped == 1


def test_roborefer_refuses_formats_its_script_cannot_read():
    with pytest.raises(ValueError, match="no parser for answer format 'qwen3-vl'"):
        score_roborefer(["x"], [np.zeros((2, 2), np.uint8)], answer_format="qwen3-vl")


def test_unknown_protocol_and_length_mismatch():
    with pytest.raises(ValueError, match="protocol must be one of"):
        score_published("nope", [], [])
    with pytest.raises(ValueError, match="got 1 predictions but 2 masks"):
        score_published("lmms_eval", ["x"], [np.zeros((2, 2)), np.zeros((2, 2))])
    assert math.isnan(score_published("roborefer", [None], [np.zeros((2, 2), np.uint8)]).accuracy)
