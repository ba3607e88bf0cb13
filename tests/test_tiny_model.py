"""The tiny model shipped in the package (``src/robopoint_hf/default_model/``) and the recipe that builds it.

The shipped folder is produced by ``scripts/train_tiny_model.sh``; its ``examples.json`` lists evaluation scenes the
model answered inside the ground-truth region when it was shipped, which is what the regression test checks again.
After retraining, rerun the script (it rewrites the folder and the examples) and this file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_model import IMAGE_SEQ_LENGTH

from robopoint_hf import RoboPointForConditionalGeneration, RoboPointProcessor
from robopoint_hf.checkpoints import DEFAULT_MODEL_DIR
from robopoint_hf.model.points import ANSWER_FORMAT_SUFFIX, parse_points
from robopoint_hf.original.model_card import EVAL_RESULTS_FILE, EXAMPLES_FILE, render_trained_model_card

TINY_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tiny_model.py"

MAX_FOLDER_BYTES = 15_000_000


@pytest.fixture(scope="module")
def shipped():
    model = RoboPointForConditionalGeneration.from_pretrained(DEFAULT_MODEL_DIR, dtype=torch.float32).eval()
    return model, RoboPointProcessor.from_pretrained(DEFAULT_MODEL_DIR)


def test_shipped_folder_is_small_and_its_card_is_generated():
    files = {path.name: path.stat().st_size for path in DEFAULT_MODEL_DIR.iterdir() if path.is_file()}
    assert sum(files.values()) <= MAX_FOLDER_BYTES
    assert not any(name.endswith(".bin") for name in files)  # safetensors only
    # The card is a function of the folder's files (training record, evaluation results, examples): a card edited by
    # hand, or results changed without regenerating it, fails here.
    assert (DEFAULT_MODEL_DIR / "README.md").read_text() == render_trained_model_card(DEFAULT_MODEL_DIR)


def test_shipped_model_points_inside_the_region(shipped):
    model, processor = shipped
    examples = json.loads((DEFAULT_MODEL_DIR / EXAMPLES_FILE).read_text())
    assert examples
    example = examples[0]
    image = Image.open(DEFAULT_MODEL_DIR / example["image"]).convert("RGB")
    mask = np.asarray(Image.open(DEFAULT_MODEL_DIR / example["mask"]).convert("L")) >= 128
    inputs = processor(images=image, text=example["question"], return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == IMAGE_SEQ_LENGTH
    torch.manual_seed(0)
    with torch.inference_mode():
        output = model.generate(**inputs, do_sample=False)
    answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    parsed = parse_points(answer)
    assert not parsed.parse_failed and parsed.points, answer
    height, width = mask.shape
    inside = [mask[int(p.y * height), int(p.x * width)] for p in parsed.points]
    assert all(inside), (answer, example["answer"])


def test_tokenizer_round_trip_and_llama_layout(shipped):
    _, processor = shipped
    tokenizer = processor.tokenizer
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.pad_token_id == 0 and tokenizer.convert_ids_to_tokens(3) == "<0x00>"
    answer = "[(0.461, 0.527), (0.498, 0.521)]"
    ids = tokenizer(" " + answer, add_special_tokens=False).input_ids
    pieces = tokenizer.convert_ids_to_tokens(ids)
    # Fixed answer pieces: the first decimal of every coordinate is one ten-way token.
    assert pieces[:2] == ["▁[(", "0.4"] and pieces[-1] == ")]" and pieces.count("0.5") == 2
    assert tokenizer.decode(ids).strip() == answer
    text = "Point to the blue mug. " + ANSWER_FORMAT_SUFFIX
    encoded = tokenizer(text).input_ids
    assert encoded[0] == 1 and encoded.count(1) == 1 and len(encoded) < 20  # the format sentence is a few tokens
    assert tokenizer.decode(encoded, skip_special_tokens=True) == text
    unseen = "Plaçez la tasse ☕ à 0.5 m"  # unseen characters fall back to bytes, losslessly
    assert tokenizer.decode(tokenizer(unseen, add_special_tokens=False).input_ids) == unseen


def test_piecewise_tokenization_around_the_image(shipped):
    _, processor = shipped
    tokenizer = processor.tokenizer
    prompt = processor.build_prompt("Point to the red ball.")
    ids = processor.tokenize_prompt(prompt)
    image_positions = [i for i, token in enumerate(ids) if token == processor.image_token_id]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert len(image_positions) == IMAGE_SEQ_LENGTH == image_positions[-1] - image_positions[0] + 1
    # As with Llama: the piece after the image starts afresh, with the dummy prefix "▁" before its "\n".
    after = tokenizer.convert_ids_to_tokens(ids[image_positions[-1] + 1 : image_positions[-1] + 3])
    assert after == ["▁", "\n"]
    assert tokenizer.convert_ids_to_tokens(ids[-1]) == "▁ASSISTANT:"


def _small_config():
    """The shipped recipe with a shrunken network (56-px images, width 32, one layer each): the path, not the size."""
    from tiny_model import TEXT_CONFIG, VISION_CONFIG

    return {
        "vision_config": {
            **VISION_CONFIG,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "image_size": 56,
        },
        "text_config": {
            **TEXT_CONFIG,
            "vocab_size": 400,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
        "image_seq_length": 4,
    }


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Generator output (24 scenes) and an untrained small model built from it: ``(data_dir, init_dir)``."""
    from tiny_model import build

    from robopoint_hf.synthetic.scenes import generate_dataset

    root = tmp_path_factory.mktemp("small_run")
    generate_dataset(root / "data", 24, seed=3)
    build(root / "data", root / "init", seed=0, vocab_size=400, config_overrides=_small_config())
    return root / "data", root / "init"


@pytest.mark.slow
def test_training_smoke_run_from_generator_output(small_run, tmp_path):
    from tiny_model import train

    from robopoint_hf.training.collator import IGNORE_INDEX, tokenize_conversation

    data, init = small_run
    trained = train(data, init, tmp_path / "model", max_steps=20, per_device_train_batch_size=2, logging_steps=5)
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["steps"] == 20 and np.isfinite(summary["final_loss"])
    model = RoboPointForConditionalGeneration.from_pretrained(trained).eval()
    initial = RoboPointForConditionalGeneration.from_pretrained(init)
    # Trained from scratch, so the vision tower learns too (freeze_vision_tower=False); RoboPoint recipes freeze it.
    tower = model.model.vision_tower.embeddings.patch_embedding.weight
    assert not torch.equal(tower, initial.model.vision_tower.embeddings.patch_embedding.weight)
    processor = RoboPointProcessor.from_pretrained(trained)
    # Labels cover exactly the answer and its </s>, with this tokenizer too.
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Point to the red mug."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "[(0.461, 0.527)]"}]},
    ]
    _, labels = tokenize_conversation(processor, messages)
    answer = [token for token in labels if token != IGNORE_INDEX]
    assert processor.tokenizer.decode(answer[:-1]) == "[(0.461, 0.527)]"
    assert answer[-1] == processor.tokenizer.eos_token_id
    image = Image.open(next((data / "images").iterdir())).convert("RGB")
    inputs = processor(images=image, text="Point to the red mug.", return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] <= inputs["input_ids"].shape[1] + 4


def test_tokenizer_keeps_question_words_apart(small_run):
    """A colour or object name must be the same tokens in every question: with merges across words, a BPE fused
    whole questions ("Locate several points on the yellow bottle") into single tokens and the model could not tell
    which colour a question asked for."""
    from tiny_model import train_tokenizer, training_texts

    data, init = small_run
    tokenizer = RoboPointProcessor.from_pretrained(init).tokenizer
    for word in (" blue", " mug", " left"):
        piece = tokenizer(word, add_special_tokens=False).input_ids
        for question in ("Point to the blue mug left of the plate.", "Find spots left of the blue mug, please."):
            ids = tokenizer(question, add_special_tokens=False).input_ids
            assert any(ids[i : i + len(piece)] == piece for i in range(len(ids))), (word, question)
    # The fixed sentences are single pre-tokens: a tokenizer with room for merges makes each one token.
    roomy = train_tokenizer(training_texts(data / "train.json"), vocab_size=1024)
    assert len(roomy(ANSWER_FORMAT_SUFFIX, add_special_tokens=False).input_ids) == 1
    assert roomy.convert_ids_to_tokens(roomy(" ASSISTANT:", add_special_tokens=False).input_ids) == ["▁ASSISTANT:"]


def test_build_starts_image_tokens_with_positions_and_unit_scale(small_run):
    """The two init choices that let the tiny model learn to read its image: a sin-cos position table and image
    tokens at unit RMS on the training images."""
    from tiny_model import sincos_position_table

    data, init = small_run
    model = RoboPointForConditionalGeneration.from_pretrained(init).eval()
    processor = RoboPointProcessor.from_pretrained(init)
    table = model.model.vision_tower.embeddings.position_embedding.weight[1:]
    assert torch.equal(table, sincos_position_table(2, table.shape[1]))
    records = json.loads((data / "train.json").read_text())
    images = [Image.open(data / record["image"]).convert("RGB") for record in records]
    tokens = model.encode_images(processor.image_processor(images, return_tensors="pt")["pixel_values"])
    assert tokens.pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.slow
def test_a_second_stage_keeps_the_record_of_the_first(small_run, tmp_path):
    """The shipped model is trained in stages (``train --init`` of a trained model); its card lists every one."""
    from tiny_model import main, train

    from robopoint_hf.original.model_card import stages_text
    from robopoint_hf.synthetic.scenes import SynthConfig, generate_dataset

    data, init = small_run
    single = tmp_path / "single"  # the shipped curriculum's first stage: one object, answered at its centre
    generate_dataset(single, 8, seed=4, config=SynthConfig(min_objects=1, max_objects=1, answer="centre"))
    # The first stage keeps the random tower (`--freeze-vision-tower`): only the projector and the LM learn.
    first = tmp_path / "stage1"
    command = ["train", "--data", str(single), "--init", str(init), "--output-dir", str(first)]
    assert main([*command, "--max-steps", "2", "--batch-size", "2", "--freeze-vision-tower"]) == 0
    # (the original batching here, the recipe's length-grouped batches in the first stage: the card says which)
    second = train(data, first, tmp_path / "stage2", max_steps=3, per_device_train_batch_size=2, length_group_size=1)
    weights = [
        RoboPointForConditionalGeneration.from_pretrained(folder).state_dict() for folder in (init, first, second)
    ]
    tower = [name for name in weights[0] if ".vision_tower." in name]
    assert tower and all(torch.equal(weights[0][name], weights[1][name]) for name in tower)
    assert not all(torch.equal(weights[1][name], weights[2][name]) for name in tower)  # stage 2 trains it
    assert not torch.equal(weights[0]["lm_head.weight"], weights[1]["lm_head.weight"])
    summary = json.loads((second / "train_summary.json").read_text())
    (earlier,) = summary["earlier_stages"]
    assert (earlier["steps"], summary["steps"]) == (2, 3) and (earlier["data"], summary["data"]) == (
        str(single),
        str(data),
    )
    lines = stages_text(summary).splitlines()
    assert len(lines) == 2 and lines[0].startswith("* Stage 1 of 2: 8 synthetic scenes (`robopoint synth`, seed 4")
    assert "one object per scene" in lines[0] and "answers: one point at the region's centre)" in lines[0]
    assert lines[1].startswith("* Stage 2 of 2: 24 synthetic scenes (`robopoint synth`, seed 3, 2-5 objects")
    assert "answers: 3-8 points sampled in the region)" in lines[1]
    assert "2 steps" in lines[0] and "3 steps" in lines[1]
    assert lines[0].endswith("; vision tower frozen; batches of rows of similar length (`length_group_size=50`).")
    assert "frozen" not in lines[1]
    # shorter than one logging interval: no logged loss
    assert lines[1].endswith("final training loss not logged; batches of random lengths.")

    # The shipped recipe's last stage trains on a mixture (stage 2's questions replayed): `mix` writes one list
    # and says where its records came from, and the card says it too.
    assert main(["mix", "--data", str(data), str(single), "--out", str(tmp_path / "mix")]) == 0
    third = train(tmp_path / "mix", second, tmp_path / "stage3", max_steps=1, per_device_train_batch_size=2)
    summary = json.loads((third / "train_summary.json").read_text())
    assert summary["rows"] == 24 + 8
    line = stages_text(summary).splitlines()[2]
    assert line.startswith("* Stage 3 of 3: a mixture of 24 synthetic scenes (`robopoint synth`, seed 3, 2-5 objects")
    assert "and 8 synthetic scenes (`robopoint synth`, seed 4, one object per scene" in line


@pytest.mark.slow
def test_time_budgeted_training_runs_data_parallel_on_cpu(small_run, tmp_path):
    """Two torchrun processes (gloo) share the time budget: rank 0's clock sets every rank's learning rate and stop
    step, so the run ends cleanly (a rank stopping alone would hang the next all-reduce) and only rank 0 writes."""
    data, init = small_run
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(TINY_SCRIPT), "train", "--data", str(data), "--init", str(init),
        "--output-dir", str(tmp_path / "model"), "--threads", "1", "--batch-size", "2", "--max-minutes", "0.05",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "model" / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] >= 1
    assert summary["samples_seen"] == summary["steps"] * 2 * 2
    RoboPointForConditionalGeneration.from_pretrained(tmp_path / "model")


def test_evaluation_also_scores_the_model_on_shuffled_images(small_run, tmp_path):
    """The image-ablation row pairs question i with the image of question i + 1 (a rotation by one): an oracle that
    always points inside the mask of the image it is shown scores 1.0 on the real pairs and exactly what the next
    question's region gives on the shuffled ones. Every system goes through the eval runner's answer files."""
    import tiny_model as tiny

    from robopoint_hf.evaluation.where2place import load_answers, load_mask, load_questions, score_where2place
    from robopoint_hf.model.points import format_points
    from robopoint_hf.synthetic.scenes import generate_dataset

    _, init = small_run
    generate_dataset(tmp_path / "data", 2, seed=5, eval_questions=6)
    questions = load_questions(tmp_path / "data" / "eval")
    assert len(questions) == 6
    inside = []  # per question, a point deep inside its mask (the pixel with the most mask neighbours)
    for question in questions:
        mask = load_mask(question.mask).astype(float)
        padded = np.pad(mask, 2)
        neighbours = sum(np.roll(np.roll(padded, dy, 0), dx, 1) for dy in range(-2, 3) for dx in range(-2, 3))
        row, column = np.unravel_index(np.argmax(neighbours[2:-2, 2:-2] * mask), mask.shape)
        inside.append(format_points([((column + 0.5) / mask.shape[1], (row + 0.5) / mask.shape[0])]))
    owner = {str(q.image): index for index, q in enumerate(questions)}
    calls = []

    def oracle(images, texts, **kwargs):  # a RoboPointPipeline's call, as the runner's answer function makes it
        calls.append(list(texts))
        return [{"text": inside[owner[image]]} for image in images]

    answers = tmp_path / "answers.jsonl"
    results = tiny.evaluate(init, tmp_path / "data" / "eval", answers, batch_size=4, pipe=oracle)
    texts = [q.text for q in questions]
    assert calls == [texts[:4], texts[4:], texts[:4], texts[4:]]  # the questions keep their order; only images move
    assert results["model"]["accuracy"] == 1.0
    rotated = inside[1:] + inside[:1]
    masks = [q.mask for q in questions]
    expected = score_where2place(rotated, masks, protocol="strict")
    assert results["model_shuffled_images"]["accuracy"] == expected.accuracy < 1.0
    centre = score_where2place(["[(0.5, 0.5)]"] * 6, masks, protocol="strict")
    assert results["centre"]["accuracy"] == centre.accuracy
    files = tiny.answer_files(answers)
    assert [r["text"] for r in load_answers(files["model"])] == inside
    assert [r["text"] for r in load_answers(files["model_shuffled_images"])] == rotated
    assert [r["question_id"] for r in load_answers(files["uniform_random"])] == [q.question_id for q in questions]
    assert sum(results["categories"].values()) == 6


def test_ship_writes_the_folder_and_its_card(small_run, tmp_path):
    """``evaluate`` with the real pipeline, then ``ship``: the folder loads, carries the evaluation results, and its
    card is what the library's card writer makes of it."""
    import tiny_model as tiny

    from robopoint_hf.synthetic.scenes import generate_dataset

    data, init = small_run
    trained = tiny.train(data, init, tmp_path / "model", max_steps=1, per_device_train_batch_size=2)
    generate_dataset(tmp_path / "data", 2, seed=6, eval_questions=3)
    answers = tmp_path / "answers.jsonl"
    results = tiny.evaluate(trained, tmp_path / "data" / "eval", answers)
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tiny.ship(trained, tmp_path / "results.json", tmp_path / "data" / "eval", answers, tmp_path / "shipped")
    assert json.loads((out / EVAL_RESULTS_FILE).read_text()) == {"synthetic": results, "where2place": None}
    assert (out / "README.md").read_text() == render_trained_model_card(out)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["data_info"]["scenes"] == 24 and summary["data_info"]["seed"] == 3
    RoboPointForConditionalGeneration.from_pretrained(out)


def test_card_says_where_the_image_matters():
    """The card's ablation sentence follows the per-family differences (right minus shuffled images, from +0.02)."""
    from robopoint_hf.original.model_card import image_ablation_text

    def results(right, shuffled):
        families = ["a", "b"]
        return {
            "categories": families,
            "model": {"accuracy": sum(right) / 2, "per_category": dict(zip(families, right, strict=True))},
            "model_shuffled_images": {
                "accuracy": sum(shuffled) / 2,
                "per_category": dict(zip(families, shuffled, strict=True)),
            },
        }

    assert "question alone" in image_ablation_text(results([0.5, 0.3], [0.49, 0.3]))
    assert "adds +0.200 overall and matters in every family: a +0.300, b +0.100" in image_ablation_text(
        results([0.5, 0.3], [0.2, 0.2])
    )
    some = image_ablation_text(results([0.5, 0.3], [0.2, 0.29]))
    assert "it matters in a +0.300, and elsewhere the answers come from the question alone" in some
    assert image_ablation_text({"categories": []}) == ""
