"""RoboPointProcessor and the prompt templates: exact ids and prompts of the original implementation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ORIGINAL, QUESTION, expand_image_ids, fixture_tokenizer, tiny_processor
from PIL import Image
from transformers import AutoTokenizer

from robopoint_hf import RoboPointImageProcessor, RoboPointProcessor
from robopoint_hf.model.templates import CHAT_TEMPLATES, TEMPLATE_NAMES, get_chat_template

INFERENCE_REFS = [
    ("vicuna-mlp2x-full", "llava_v1", "sink"),
    ("vicuna-mlp2x-full", "llava_v1", "synthetic_500x300"),
    ("llama2-linear-full", "llava_v1", "sink"),
    ("llama2-linear-full", "llava_llama_2", "sink"),
    ("llama2-linear-full", "llava_llama_2", "synthetic_500x300"),
    ("vicuna-mlp2x-lora", "llava_v1", "sink"),
]


def processor_for(template: str, **tokenizer_kwargs) -> RoboPointProcessor:
    tokenizer = AutoTokenizer.from_pretrained(ORIGINAL / "vicuna-mlp2x-full", **tokenizer_kwargs)
    return RoboPointProcessor(RoboPointImageProcessor(), tokenizer, prompt_template=template)


@pytest.mark.parametrize("checkpoint, mode, stem", INFERENCE_REFS)
def test_inference_prompt_and_ids_match_original(checkpoint, mode, stem):
    meta = json.loads((ORIGINAL / "refs" / checkpoint / mode / f"{stem}.json").read_text())
    processor = processor_for(mode)
    # The chat template renders the original Conversation.get_prompt() string exactly.
    assert processor.build_prompt(QUESTION) == meta["prompt"]
    inputs = processor(images=str(ORIGINAL / meta["image"]), text=QUESTION)
    assert inputs["input_ids"][0].tolist() == expand_image_ids(meta["input_ids"])
    # Around the image: "USER: " ends in a lone '▁' (vicuna/llava_v1; llava_llama_2 has "\n\n" there), and the
    # piece after the image starts with its own dummy-prefix '▁' before '<0x0A>'.
    position = meta["input_ids"].index(-200)
    before = 13 if mode == "llava_llama_2" else 29871
    assert meta["input_ids"][position - 1 : position + 3] == [before, -200, 29871, 13]


@pytest.mark.parametrize(
    "labels_file, legacy",
    [
        ("v1.json", True),
        ("llava_llama_2.json", True),
        ("variants/v1__legacy_attr_false.json", True),
        ("variants/v1__nonlegacy_tokenizer.json", False),
        ("variants/llava_llama_2__nonlegacy_tokenizer.json", False),
    ],
)
def test_training_prompt_ids_match_original_with_legacy_and_nonlegacy_tokenizers(labels_file, legacy):
    """Training prompts (single- and multi-turn, with and without image) tokenize to the original's ids."""
    data = json.loads((ORIGINAL / "labels" / labels_file).read_text())
    template = {"v1": "vicuna_v1", "llava_llama_2": "llava_llama_2"}[data["version"]]
    processor = processor_for(template, legacy=legacy)
    for sample in data["samples"]:
        assert processor.tokenize_prompt(sample["prompt"]) == expand_image_ids(sample["input_ids"]), sample["id"]


def test_training_conversations_render_like_the_original():
    data = json.loads((ORIGINAL / "labels" / "v1.json").read_text())
    records = {record["id"]: record for record in json.loads((ORIGINAL / "labels" / "records.json").read_text())}
    tokenizer = fixture_tokenizer()
    for sample in data["samples"]:
        record = records[sample["id"]]
        messages = []
        for turn in record["conversations"]:
            text = turn["value"]
            if "<image>" in text:  # the original moves the image tag to the front of its message
                text = "<image>\n" + text.replace("<image>", "").strip()
            messages.append({"role": "user" if turn["from"] == "human" else "assistant", "content": text})
        rendered = tokenizer.apply_chat_template(messages, chat_template=CHAT_TEMPLATES["vicuna_v1"], tokenize=False)
        assert rendered == sample["prompt"], sample["id"]


def test_template_names_and_unknown_template():
    assert TEMPLATE_NAMES == ("vicuna_v1", "llava_v1", "llava_llama_2")
    with pytest.raises(ValueError, match="Unknown prompt template 'vicuna'"):
        get_chat_template("vicuna")


def test_text_with_placeholder_is_used_verbatim_and_counts_must_match():
    processor = tiny_processor()
    image = Image.new("RGB", (30, 20))
    verbatim = processor(images=image, text="USER: <image>\nhi ASSISTANT:")
    assert verbatim["input_ids"][0].tolist() == processor.tokenize_prompt("USER: <image>\nhi ASSISTANT:")
    with pytest.raises(ValueError, match=r"1 <image> placeholder\(s\) \(per text: \[1\]\) but 2 image\(s\)"):
        processor(images=[image, image], text="USER: <image>\nhi ASSISTANT:")
    with pytest.raises(ValueError, match=r"2 <image> placeholder\(s\) \(per text: \[2\]\) but 1 image\(s\)"):
        processor(images=image, text="<image> and <image>")
    with pytest.raises(ValueError, match="3 images for 2 texts"):
        processor(images=[image] * 3, text=["a", "b"])


def test_image_count_tokenizes_as_with_images_without_preprocessing_them():
    """Pixel values computed once for several questions about one frame: each question's ids come from text alone."""
    processor = tiny_processor()
    image = Image.new("RGB", (30, 20), "red")
    texts = ["Point to the mug.", "Find a few spots in the vacant area left of the red box."]
    with_images = processor(images=[image, image], text=texts, return_tensors="pt")
    counted = processor(text=texts, image_count=1, return_tensors="pt")
    assert set(counted) == {"input_ids", "attention_mask"}
    assert torch.equal(counted["input_ids"], with_images["input_ids"])
    assert torch.equal(counted["attention_mask"], with_images["attention_mask"])
    verbatim = "USER: <image>\nhi ASSISTANT:"
    assert processor(text=verbatim, image_count=1)["input_ids"][0].tolist() == processor.tokenize_prompt(verbatim)
    with pytest.raises(ValueError, match=r"1 <image> placeholder\(s\) \(per text: \[1\]\) but 2 image\(s\)"):
        processor(text=verbatim, image_count=2)
    with pytest.raises(ValueError, match="images or image_count, not both"):
        processor(images=image, text=texts[0], image_count=1)
    with pytest.raises(ValueError, match="image_count must be a non-negative integer, got -1"):
        processor(text=texts[0], image_count=-1)


def test_too_long_prompt_is_an_error_not_a_cut():
    processor = tiny_processor()
    long_text = "spot " * 600
    with pytest.raises(ValueError, match=r"Prompt 0 is \d+ tokens long .* longer than the context of 512"):
        processor(images=Image.new("RGB", (30, 20)), text=long_text, max_length=512)


def test_batch_padding_sides_and_tensors():
    processor = tiny_processor()
    images = [Image.new("RGB", (30, 20), "red"), Image.new("L", (20, 50), 128)]
    texts = ["Point to the mug.", "Find a few spots in the vacant area left of the red box."]
    left = processor(images=images, text=texts, return_tensors="pt")
    right = processor(images=images, text=texts, padding_side="right", return_tensors="pt")
    assert left["pixel_values"].shape == (2, 3, 28, 28) and left["pixel_values"].dtype == torch.float32
    for row in range(2):
        alone = processor(images=images[row], text=texts[row])["input_ids"][0].tolist()
        assert left["input_ids"][row][left["attention_mask"][row].bool()].tolist() == alone
        assert right["input_ids"][row][right["attention_mask"][row].bool()].tolist() == alone
    assert left["attention_mask"][0, 0] == 0 and right["attention_mask"][0, -1] == 0
    assert left["input_ids"][0, 0] == processor.tokenizer.pad_token_id


def test_save_and_load_keeps_template_and_image_settings(tmp_path):
    processor = processor_for("llava_llama_2")
    processor.save_pretrained(tmp_path)
    loaded = RoboPointProcessor.from_pretrained(tmp_path)
    assert loaded.prompt_template == "llava_llama_2"
    assert loaded.chat_template == CHAT_TEMPLATES["llava_llama_2"]
    assert loaded.image_seq_length == 576 and loaded.image_token_id == 32000
    assert isinstance(loaded.image_processor, RoboPointImageProcessor)
    image = str(ORIGINAL / "images/sink.jpg")
    assert (
        loaded(images=image, text=QUESTION)["input_ids"].tolist()
        == processor(images=image, text=QUESTION)["input_ids"].tolist()
    )


def test_apply_chat_template_tokenizes_through_the_processor():
    processor = processor_for("vicuna_v1")
    image = Image.open(ORIGINAL / "images/sink.jpg")
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi."}]}]
    out = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    direct = processor(images=image, text="Hi.")
    assert list(out["input_ids"][0]) == direct["input_ids"][0].tolist()
    assert out["pixel_values"].shape == (1, 3, 336, 336)
