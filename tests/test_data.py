"""RoboPoint-format data: streaming reader, validation policies, chat rows, parity with the original prompts."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from robopoint_hf.model.points import ANSWER_FORMAT_SUFFIX
from robopoint_hf.training.data import (
    iter_json_array,
    load_robopoint_dataset,
    make_pointing_record,
    mix_robopoint_data,
    record_to_row,
    write_robopoint_records,
)

DATA = Path(__file__).parent / "fixtures" / "data"
RECORDS = DATA / "records.json"


def _human(value: str) -> dict:
    return {"from": "human", "value": value}


def _gpt(value: str) -> dict:
    return {"from": "gpt", "value": value}


def _image_record(record_id: str, question: str = "<image>\nWhere?", image: str = "images/synthetic_500x300.png"):
    return {"id": record_id, "image": image, "conversations": [_human(question), _gpt("[(0.100, 0.200)]")]}


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_iter_json_array_matches_json_load_across_tiny_read_buffers(tmp_path, monkeypatch):
    # Force records to straddle buffer boundaries everywhere, including inside strings and numbers.
    monkeypatch.setattr("robopoint_hf.training.data._READ_CHARS", 7)
    records = [{"id": i, "value": "x" * i + 'é\\"', "numbers": [1.5e-3, -2, 12345678901234]} for i in range(30)]
    path = tmp_path / "list.json"
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    assert list(iter_json_array(path)) == records
    path.write_text("  [ 1 , 23 ,456]  ", encoding="utf-8")
    assert list(iter_json_array(path)) == [1, 23, 456]
    path.write_text("[]", encoding="utf-8")
    assert list(iter_json_array(path)) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": 1}', "expected a JSON list"),
        ('[{"id": 1}, {"id": 2]', "malformed JSON in element 1"),
        ('[{"id": 1} {"id": 2}]', "expected ',' or ']' after element 0"),
        ('[{"id": 1},', "malformed JSON in element 1"),
    ],
)
def test_iter_json_array_names_the_broken_element(tmp_path, text, message):
    path = tmp_path / "broken.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        list(iter_json_array(path))
    assert str(path) in str(error.value)


def test_rows_render_exactly_the_original_vicuna_v1_prompts(cache):
    """Our chat rows + the vicuna_v1 chat template == the strings the ORIGINAL Conversation rendered."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from robopoint_hf.model.templates import get_chat_template

    expected = json.loads((DATA / "v1_prompts.json").read_text(encoding="utf-8"))["prompts"]
    dataset = load_robopoint_dataset(RECORDS, DATA, cache_dir=cache)
    assert dataset.column_names == ["id", "images", "messages"]
    assert dataset["id"] == list(expected)
    for row in dataset:
        rendered, _ = render_jinja_template(
            conversations=[row["messages"]], chat_template=get_chat_template("vicuna_v1")
        )
        assert rendered[0] == expected[row["id"]]


def test_image_tag_moves_to_the_start_and_images_decode_lazily(cache):
    dataset = load_robopoint_dataset(RECORDS, DATA, cache_dir=cache)
    # Record 1 has "<image>" at the END of its first question: the image part comes first, text is stripped.
    first_turn = dataset[1]["messages"][0]
    assert first_turn == {
        "role": "user",
        "content": [
            {"type": "image", "text": None},
            {"type": "text", "text": "What objects can you see on the counter?"},
        ],
    }
    assert dataset[1]["messages"][2]["content"] == [
        {"type": "text", "text": "Point to the cup. " + ANSWER_FORMAT_SUFFIX}
    ]
    # Images are stored as paths and decoded on access.
    raw = dataset.data.column("images")[0].as_py()[0]
    assert raw == {"bytes": None, "path": os.path.abspath(DATA / "images" / "synthetic_500x300.png")}
    image = dataset[0]["images"][0]
    assert isinstance(image, Image.Image) and image.size == (500, 300)
    assert dataset[2]["images"] == [] and dataset[3]["images"] == []


INVALID = [
    ("missing_image_file", _image_record("missing", image="images/nope.png")),
    ("unknown_role", {"id": "role", "conversations": [_human("hi"), {"from": "system", "value": "x"}]}),
    ("starts_with_gpt", {"id": "lead", "conversations": [_gpt("hello"), _human("hi"), _gpt("yes")]}),
    ("not_alternating", {"id": "alt", "conversations": [_human("a"), _human("b"), _gpt("c")]}),
    ("ends_with_human", {"id": "end", "conversations": [_human("a"), _gpt("b"), _human("c")]}),
    ("image_token_mismatch", _image_record("two-tags", question="<image>\nA <image> B")),
    ("image_token_mismatch", _image_record("no-tag", question="Where?")),
    ("image_token_mismatch", {"id": "tag-no-image", "conversations": [_human("<image>\nhi"), _gpt("b")]}),
    ("empty_conversation", {"id": "empty", "conversations": []}),
    ("malformed_record", {"id": "value", "conversations": [{"from": "human", "value": 3}, _gpt("b")]}),
]


@pytest.mark.parametrize(("reason", "record"), INVALID, ids=[record["id"] for _, record in INVALID])
def test_error_policy_names_file_record_and_reason(tmp_path, cache, reason, record):
    path = tmp_path / "bad.json"
    write_robopoint_records([_image_record("good"), record], path)
    with pytest.raises(ValueError) as error:
        load_robopoint_dataset(path, DATA, cache_dir=cache)
    message = str(error.value)
    assert str(path) in message and f"record {record['id']!r} (index 1)" in message and reason in message


def test_skip_policy_counts_reports_and_warns(tmp_path, cache, caplog):
    path = tmp_path / "mixed.json"
    records = [_image_record("good-0")] + [record for _, record in INVALID] + [_image_record("good-1")]
    write_robopoint_records(records, path)
    with caplog.at_level(logging.WARNING, logger="robopoint_hf.training.data"):
        dataset, report = load_robopoint_dataset(path, DATA, on_invalid="skip", cache_dir=cache, return_report=True)
    assert dataset["id"] == ["good-0", "good-1"]
    assert (report.total, report.kept, report.num_skipped) == (12, 2, 10)
    assert report.skipped == {
        "empty_conversation": 1,
        "ends_with_human": 1,
        "image_token_mismatch": 3,
        "malformed_record": 1,
        "missing_image_file": 1,
        "not_alternating": 1,
        "starts_with_gpt": 1,
        "unknown_role": 1,
    }
    assert report.examples["starts_with_gpt"] == [
        "record 'lead' (index 3): message 0 is from 'gpt'; conversations must start with 'human'"
    ]
    assert "kept 2 of 12 records, skipped 10" in caplog.text and "image_token_mismatch: 3" in caplog.text

    # A second load reuses the Arrow cache and still reports (and warns about) the same skips.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="robopoint_hf.training.data"):
        again, cached_report = load_robopoint_dataset(
            path, DATA, on_invalid="skip", cache_dir=cache, return_report=True
        )
    assert cached_report == report and again["id"] == ["good-0", "good-1"] and "skipped 10" in caplog.text


def test_cache_is_invalidated_when_the_file_changes(tmp_path, cache):
    path = tmp_path / "data.json"
    write_robopoint_records([_image_record("a")], path)
    assert load_robopoint_dataset(path, DATA, cache_dir=cache)["id"] == ["a"]
    write_robopoint_records([_image_record("a"), _image_record("bb")], path)
    assert load_robopoint_dataset(path, DATA, cache_dir=cache)["id"] == ["a", "bb"]


def test_write_then_read_round_trips_and_output_is_plain_json(tmp_path):
    records = json.loads(RECORDS.read_text(encoding="utf-8"))
    path = tmp_path / "out" / "records.json"
    assert write_robopoint_records(iter(records), path) == 4
    assert json.loads(path.read_text(encoding="utf-8")) == records
    assert list(iter_json_array(path)) == records
    assert write_robopoint_records([], tmp_path / "empty.json") == 0
    assert json.loads((tmp_path / "empty.json").read_text()) == []


def test_mixture_keeps_records_and_order_and_finds_every_image_from_its_own_folder(tmp_path, cache):
    # Two synth-like folders whose records share an id and a relative image path, but not the image file.
    text_only = {"id": "text", "conversations": [_human("Where?"), _gpt("[(0.100, 0.200)]")]}
    sources = []
    for name, colour, records in (("one", "red", []), ("few", "blue", [text_only])):
        folder = tmp_path / name
        (folder / "images").mkdir(parents=True)
        Image.new("RGB", (8, 6), colour).save(folder / "images" / "0.png")
        write_robopoint_records([_image_record("r/0", image="images/0.png"), *records], folder / "t.json")
        sources.append((folder / "t.json", folder))

    mixed = tmp_path / "mix" / "train.json"
    assert mix_robopoint_data(sources, mixed) == [1, 2]
    records = json.loads(mixed.read_text())
    assert [r["id"] for r in records] == ["r/0", "r/0", "text"]
    assert [r.get("image") for r in records] == ["../one/images/0.png", "../few/images/0.png", None]
    assert [r["conversations"] for r in records] == [_image_record("r/0")["conversations"]] * 2 + [
        text_only["conversations"]
    ]
    dataset = load_robopoint_dataset(mixed, mixed.parent, cache_dir=cache)
    assert [row["images"][0].getpixel((0, 0)) if row["images"] else None for row in dataset] == [
        (255, 0, 0),
        (0, 0, 255),
        None,
    ]


def test_make_pointing_record_matches_the_released_format():
    record = make_pointing_record("r/1", "images/a.jpg", "Point to the mug.", [(0.4612, 0.527), (0.1, 0.25)])
    assert record == {
        "id": "r/1",
        "image": "images/a.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nPoint to the mug. " + ANSWER_FORMAT_SUFFIX},
            {"from": "gpt", "value": "[(0.461, 0.527), (0.100, 0.250)]"},
        ],
    }
    text_only = make_pointing_record("r/2", None, "Point.", [(0.5, 0.5)])
    assert "image" not in text_only and not text_only["conversations"][0]["value"].startswith("<image>")
    row = record_to_row(record, DATA, check_images=False)
    assert row["messages"][0]["content"][0] == {"type": "image", "text": None}


def test_missing_json_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_robopoint_dataset(tmp_path / "nope.json", DATA, cache_dir=tmp_path)


def test_missing_image_folder_is_one_error_not_one_per_record(tmp_path, cache):
    """Named once, before any record is read: with ``on_invalid="skip"`` it would otherwise skip every record."""
    with pytest.raises(FileNotFoundError, match="image folder '.*no-images' does not exist"):
        load_robopoint_dataset(RECORDS, tmp_path / "no-images", on_invalid="skip", cache_dir=cache)
