"""Training labels, collation and batching: exact against the ORIGINAL's label references (fixtures §5)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ORIGINAL, tiny_model, tiny_processor
from PIL import Image
from transformers import AutoTokenizer

from robopoint_hf import RoboPointImageProcessor, RoboPointProcessor
from robopoint_hf.training.collator import (
    IGNORE_INDEX,
    ModalityLengthGroupedSampler,
    RoboPointDataCollator,
    conversation_lengths,
    modality_length_grouped_indices,
    render_with_answer_spans,
    tokenize_conversation,
)
from robopoint_hf.training.data import record_to_row

LABELS = ORIGINAL / "labels"
RECORDS = {record["id"]: record for record in json.loads((LABELS / "records.json").read_text())}
# (reference file, tokenizer legacy flag, file whose labels are the CORRECT ones for multi-turn samples).
# The original masked multi-turn v1 samples entirely when its legacy adjustment disagreed with the tokenizer; the
# same tokenization with the adjustment in agreement (the "correct" file, identical input_ids) is what we must give.
CASES = [
    ("v1.json", None, "variants/v1__legacy_attr_false.json"),
    ("variants/v1__legacy_attr_false.json", None, "variants/v1__legacy_attr_false.json"),
    ("variants/v1__nonlegacy_tokenizer.json", False, "variants/v1__nonlegacy_tokenizer_legacy_attr_true.json"),
    ("variants/v1__nonlegacy_tokenizer_legacy_attr_true.json", False, None),
    ("llava_llama_2.json", None, None),
    ("variants/llava_llama_2__legacy_attr_false.json", None, None),
    ("variants/llava_llama_2__nonlegacy_tokenizer.json", False, None),
]


def original_style_processor(version: str, legacy: bool | None) -> RoboPointProcessor:
    """One image position with id -200: our ids are then directly comparable with the original's."""
    kwargs = {} if legacy is None else {"legacy": legacy}
    tokenizer = AutoTokenizer.from_pretrained(ORIGINAL / "vicuna-mlp2x-full", **kwargs)
    template = {"v1": "vicuna_v1", "llava_llama_2": "llava_llama_2"}[version]
    return RoboPointProcessor(
        RoboPointImageProcessor(size=28), tokenizer, prompt_template=template, image_seq_length=1, image_token_id=-200
    )


def messages_of(sample_id: str) -> list[dict]:
    return record_to_row(RECORDS[sample_id], LABELS, check_images=False)["messages"]


@pytest.mark.parametrize("labels_file, legacy, correct_file", CASES)
def test_labels_equal_the_original(labels_file, legacy, correct_file):
    data = json.loads((LABELS / labels_file).read_text())
    correct = json.loads((LABELS / (correct_file or labels_file)).read_text())
    processor = original_style_processor(data["version"], legacy)
    for sample, reference in zip(data["samples"], correct["samples"], strict=True):
        input_ids, labels = tokenize_conversation(processor, messages_of(sample["id"]))
        assert input_ids == sample["input_ids"] == reference["input_ids"], sample["id"]
        assert labels == reference["labels"], sample["id"]
        if len(RECORDS[sample["id"]]["conversations"]) == 2:
            assert labels == sample["labels"], sample["id"]  # single turn: the original itself is the oracle
        assert sum(label != IGNORE_INDEX for label in labels) > 0


def test_v1_multi_turn_fixes_the_original_bug():
    """The shipped v1 references mask multi-turn samples entirely; we train every answer."""
    data = json.loads((LABELS / "v1.json").read_text())
    processor = original_style_processor("v1", None)
    for sample in data["samples"]:
        if len(RECORDS[sample["id"]]["conversations"]) > 2:
            assert "tokenization mismatch" in sample["stdout"] and set(sample["labels"]) == {IGNORE_INDEX}
            _, labels = tokenize_conversation(processor, messages_of(sample["id"]))
            assert sum(label != IGNORE_INDEX for label in labels) > 0


@pytest.mark.parametrize("template", ["vicuna_v1", "llava_llama_2"])
def test_multi_turn_labels_cover_each_answer_and_nothing_else(template):
    processor = tiny_processor(template)
    messages = messages_of("llava_mix/fixture_1")
    input_ids, labels = tokenize_conversation(processor, messages)
    runs, current = [], []
    for token, label in zip(input_ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    answers = [message["content"][0]["text"] for message in messages if message["role"] == "assistant"]
    assert len(runs) == len(answers) == 2
    closing = "</s>" if template == "vicuna_v1" else " </s>"
    for run, answer in zip(runs, answers, strict=True):
        assert processor.tokenizer.decode(run) == answer + closing
    assert all(
        label == IGNORE_INDEX
        for token, label in zip(input_ids, labels, strict=True)
        if token == processor.image_token_id
    )


def test_ids_follow_the_processor_tokenization_rule():
    processor = tiny_processor()
    for sample_id in RECORDS:
        rendered, spans = render_with_answer_spans(processor, messages_of(sample_id))
        assert tokenize_conversation(processor, messages_of(sample_id))[0] == processor.tokenize_prompt(rendered)
        assert all(rendered[end - 4 : end] == "</s>" for _, end in spans)


def test_conversation_without_answer_is_an_error():
    with pytest.raises(ValueError, match="no assistant answer"):
        tokenize_conversation(tiny_processor(), [{"role": "user", "content": "hi"}])


def test_mixed_batch_pads_right_and_trains():
    processor = tiny_processor()
    image_row = {
        "id": "a",
        "images": [Image.new("RGB", (40, 30), "red")],
        "messages": messages_of("llava_mix/fixture_1"),
    }
    text_row = {"id": "b", "images": [], "messages": messages_of("sharegpt/fixture_3")}
    batch = RoboPointDataCollator(processor)([text_row, image_row])
    assert batch["pixel_values"].shape == (1, 3, 28, 28)
    for row, example in enumerate([text_row, image_row]):
        ids, labels = tokenize_conversation(processor, example["messages"])
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
        assert batch["labels"][row].tolist() == labels + [IGNORE_INDEX] * (batch["labels"].shape[1] - len(ids))
        assert batch["attention_mask"][row].tolist() == [1] * len(ids) + [0] * (batch["labels"].shape[1] - len(ids))
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == processor.image_seq_length
    loss = tiny_model().train()(**batch).loss
    assert torch.isfinite(loss)
    text_only = RoboPointDataCollator(processor)([text_row])
    assert "pixel_values" not in text_only and torch.isfinite(tiny_model()(**text_only).loss)


def test_too_long_rows_are_never_cut():
    processor = tiny_processor()
    row = {"id": "long/1", "images": [], "messages": messages_of("sharegpt/fixture_3")}
    with pytest.raises(ValueError, match=r"Row 'long/1' is \d+ tokens long .* max_length=10"):
        RoboPointDataCollator(processor, max_length=10)([row])
    with pytest.raises(ValueError, match="1 image part\\(s\\) in 'messages' but 0 image"):
        RoboPointDataCollator(processor)([{"id": "x", "images": [], "messages": messages_of("region_ref/fixture_0")}])


def test_lengths_are_exact_and_signed():
    processor = tiny_processor()
    conversations = [messages_of("region_ref/fixture_0"), messages_of("sharegpt/fixture_2")]
    out = conversation_lengths(processor, conversations)
    expected = [len(tokenize_conversation(processor, messages)[0]) for messages in conversations]
    assert out == {"num_tokens": expected, "modality_length": [expected[0], -expected[1]]}


def test_sampler_gives_single_modality_balanced_micro_batches():
    generator = torch.Generator().manual_seed(0)
    lengths = [int(x) for x in torch.randint(5, 300, (103,), generator=generator)]
    signed = [length if index % 3 else -length for index, length in enumerate(lengths)]
    micro, chunks = 4, 2
    order = modality_length_grouped_indices(signed, micro, chunks, torch.Generator().manual_seed(1))
    assert sorted(order) == list(range(len(signed)))
    batches = [order[start : start + micro] for start in range(0, len(order), micro)]
    mixed = [batch for batch in batches if len({signed[i] > 0 for i in batch}) > 1]
    assert len(mixed) <= 1
    sampler = ModalityLengthGroupedSampler(signed, micro, chunks, seed=3)
    first = list(sampler)
    assert first == list(sampler)  # reproducible (resume)
    sampler.set_epoch(1)
    assert first != list(sampler) and len(sampler) == len(signed)
    with pytest.raises(ValueError, match="non-zero"):
        modality_length_grouped_indices([3, 0], 1, 1, torch.Generator())


def _padding(order: list[int], lengths: list[int], micro: int) -> int:
    batches = [order[start : start + micro] for start in range(0, len(order), micro)]
    return sum(max(lengths[i] for i in batch) * len(batch) - sum(lengths[i] for i in batch) for batch in batches)


def test_length_grouping_pads_less_and_keeps_the_batching_rules():
    generator = torch.Generator().manual_seed(0)
    lengths = [int(x) for x in torch.randint(40, 100, (1003,), generator=generator)]
    signed = [length if index % 3 else -length for index, length in enumerate(lengths)]
    micro, chunks = 4, 2

    def order(group: int | None) -> list[int]:
        extra = () if group is None else (group,)
        return modality_length_grouped_indices(signed, micro, chunks, torch.Generator().manual_seed(1), *extra)

    assert order(1) == order(None)  # 1 is the original batching, draw for draw
    grouped = order(25)
    assert sorted(grouped) == list(range(len(signed)))
    batches = [grouped[start : start + micro] for start in range(0, len(grouped), micro)]
    assert len([batch for batch in batches if len({signed[i] > 0 for i in batch}) > 1]) <= 1
    assert _padding(grouped, lengths, micro) * 5 < _padding(order(1), lengths, micro)
    # Megabatches are still shuffled: the longest row of each does not decrease through the epoch as in one sort.
    tops = [
        max(lengths[i] for i in grouped[start : start + micro * chunks]) for start in range(0, 800, micro * chunks)
    ]
    assert tops != sorted(tops, reverse=True)
    # Data-parallel chunks of a megabatch still get similar work.
    megabatch = grouped[: micro * chunks]
    totals = [sum(lengths[i] for i in megabatch[k * micro : (k + 1) * micro]) for k in range(chunks)]
    assert max(totals) - min(totals) <= max(lengths[i] for i in megabatch) - min(lengths[i] for i in megabatch)
    with pytest.raises(ValueError, match="length_group_size must be >= 1, got 0"):
        list(ModalityLengthGroupedSampler(signed, micro, chunks, length_group_size=0))
