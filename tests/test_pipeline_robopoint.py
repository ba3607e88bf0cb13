"""pipeline("robopoint"): inputs, batching, feature reuse, parsed points, confidence scores, remote-code loading.

A random model answers garbage, so point parsing and scoring are tested end to end with `pointing_model`: a tiny
RoboPoint model whose weights ARE a bigram table, so its greedy answer is a known point string and the probability
of every generated token is set by construction (see its docstring).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import pytest
import torch
from conftest import run_without_robopoint_hf, tiny_model, tiny_processor
from PIL import Image
from transformers import pipeline

from robopoint_hf.model.pipeline_robopoint import (
    RECENT_IMAGES,
    RoboPointPipeline,
    left_align,
    register_pipeline,
    token_char_ends,
)
from robopoint_hf.model.point_records import item_scores, item_spans, keep_top_points
from robopoint_hf.model.points import ANSWER_FORMAT_SUFFIX, parse_points

SCORE_TOLERANCE = 1e-4  # float32 softmax over 32000 logits
TWO_POINTS = "[(12, 34), (56 ,78)]"  # every token distinct, so a bigram table can spell it
# Probability of each generated token of TWO_POINTS (15 tokens) and of the final EOS.
TWO_POINTS_PROBS = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.85, 0.75] + [0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 0.97] + [0.99]


def logit_for(probability: float, vocab_size: int = 32000) -> float:
    """The logit that gives `probability` to one token when the other vocab_size - 1 logits are 0."""
    return math.log(probability / (1 - probability)) + math.log(vocab_size - 1)


def pointing_model(answer: str, probabilities: Sequence[float] | float = 0.999999):
    """A tiny RoboPoint model whose greedy answer to any prompt ending in ``:`` (every RoboPoint template) is `answer`.

    Attention and MLP outputs are zeroed, so the last hidden state is the embedding of the current token: the model
    is a bigram table. The chain ``":" -> tokens of answer -> EOS`` gets one-hot embeddings and an lm_head entry per
    transition; all other logits are 0, so token ``k`` of the answer (EOS last) is generated with exactly
    ``probabilities[k]``. Each token of the chain must be distinct (one successor per token).
    """
    processor = tiny_processor()
    tokenizer = processor.tokenizer
    prompt_end = processor.tokenize_prompt(processor.build_prompt("Point."))[-1]  # ":" of "ASSISTANT:"
    chain = [prompt_end, *tokenizer(answer, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError(f"{answer!r} repeats a token; a bigram table cannot spell it.")
    if isinstance(probabilities, float):
        probabilities = [probabilities] * (len(chain) - 1)
    if len(probabilities) != len(chain) - 1:
        raise ValueError(f"{answer!r} needs {len(chain) - 1} probabilities (its tokens and EOS).")
    model = tiny_model()
    config = model.config.text_config
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.get_input_embeddings().weight
        rms_scale = 1 / math.sqrt(1 / config.hidden_size + config.rms_norm_eps)  # final RMSNorm of a one-hot row
        model.lm_head.weight.zero_()
        for slot, (token, successor) in enumerate(zip(chain[:-1], chain[1:], strict=True)):
            embeddings[token] = torch.nn.functional.one_hot(torch.tensor(slot), config.hidden_size).float()
            model.lm_head.weight[successor, slot] = logit_for(probabilities[slot]) / rms_scale
    return model, processor


def make_pipe(model=None, processor=None) -> RoboPointPipeline:
    """Free decoding: these models answer outside the answer grammar on purpose (tests/test_decoding.py covers it)."""
    register_pipeline()
    return pipeline(
        "robopoint",
        model=model or tiny_model(),
        processor=processor or tiny_processor(),
        device="cpu",
        constrained=False,
    )


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(value) for value in values) / len(values))


@pytest.fixture(scope="module")
def random_pipe() -> RoboPointPipeline:
    return make_pipe()


@pytest.fixture(scope="module")
def two_point_pipe() -> RoboPointPipeline:
    return make_pipe(*pointing_model(TWO_POINTS, TWO_POINTS_PROBS))


def images() -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (0, 100, 200)), Image.new("RGB", (50, 20), (200, 30, 0))]


# ------------------------------------------------------------------------------------------- end to end
def test_known_answer_gives_exact_points_pixels_and_scores():
    # Tokens: "▁[(" "0" "." "2" "5" "," "▁." "7" ")]" and EOS.
    probabilities = [0.9, 0.8, 0.7, 0.95, 0.6, 0.85, 0.75, 0.65, 0.8, 0.99]
    pipe = make_pipe(*pointing_model("[(0.25, .7)]", probabilities))
    out = pipe(Image.new("RGB", (100, 50)), "Point to the mug.")
    score = out["points"][0].pop("score")
    assert out == {
        "points": [{"x": 0.25, "y": 0.7, "x_px": 25, "y_px": 35}],
        "boxes": [],
        "text": "[(0.25, .7)]",
        "parse_failed": False,
    }
    # Every token of the answer spells part of the one tuple ("▁[(" overlaps its "(", ")]" its ")"); EOS does not.
    assert score == pytest.approx(geometric_mean(probabilities[:-1]), rel=SCORE_TOLERANCE)
    assert 0 < score <= 1


def test_pixel_tuples_and_per_tuple_scores(two_point_pipe):
    out = two_point_pipe(Image.new("RGB", (100, 80)), "Point to the mug.")
    assert [(p["x"], p["y"], p["x_px"], p["y_px"]) for p in out["points"]] == [
        (0.12, 34 / 80, 12, 34),
        (0.56, 78 / 80, 56, 78),
    ]
    scores = [p["score"] for p in out["points"]]
    # Tuple 1 = tokens 0..7 ("▁[(" ... "),"), tuple 2 = tokens 8..14 ("▁(" ... ")]").
    assert scores == pytest.approx(
        [geometric_mean(TWO_POINTS_PROBS[:8]), geometric_mean(TWO_POINTS_PROBS[8:15])], rel=SCORE_TOLERANCE
    )
    assert all(0 < s <= 1 for s in scores)


def test_max_points_keeps_the_highest_scoring(two_point_pipe):
    image = Image.new("RGB", (100, 80))
    assert [p["x_px"] for p in two_point_pipe(image, "Point.", max_points=1)["points"]] == [56]
    assert [p["x_px"] for p in two_point_pipe(image, "Point.", max_points=2)["points"]] == [12, 56]
    with pytest.raises(ValueError, match="max_points must be a positive integer, got 0"):
        two_point_pipe(image, "Point.", max_points=0)


def test_generation_parameters_pass_through(two_point_pipe):
    image = Image.new("RGB", (100, 80))
    # Sampling restricted to the top token: same answer, and every token has probability 1 under that distribution.
    sampled = two_point_pipe(image, "Point.", do_sample=True, top_k=1)
    assert sampled["text"] == TWO_POINTS
    assert [p["score"] for p in sampled["points"]] == [1.0, 1.0]
    # Beam search: scores come from the chosen beam at each step.
    assert two_point_pipe(image, "Point.", num_beams=2) == two_point_pipe(image, "Point.")
    assert two_point_pipe(image, "Point.", max_new_tokens=3)["text"] == "[(12"
    assert two_point_pipe(image, "Point.", generate_kwargs={"max_new_tokens": 3})["text"] == "[(12"
    with pytest.raises(ValueError, match="num_return_sequences must be 1"):
        two_point_pipe(image, "Point.", num_return_sequences=2, num_beams=2)
    with pytest.raises(TypeError, match="Unexpected arguments for RoboPointPipeline: colour"):
        two_point_pipe(image, "Point.", colour="red")


def test_unparseable_answer_keeps_text_and_flags_failure(random_pipe):
    image = images()[0]
    out = random_pipe(image, "Point to the mug.", max_new_tokens=6)
    inputs = random_pipe.processor(images=image, text=f"Point to the mug. {ANSWER_FORMAT_SUFFIX}", return_tensors="pt")
    ids = random_pipe.model.generate(**inputs, max_new_tokens=6, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert out == {
        "points": [],
        "boxes": [],
        "text": random_pipe.processor.tokenizer.decode(ids, skip_special_tokens=True).strip(),
        "parse_failed": True,
    }
    assert out["text"]


# ------------------------------------------------------------------------------------------- inputs and batching
def test_batched_equals_unbatched(random_pipe):
    inputs = [images()[0], images()[1], images()[0]]
    texts = ["Point to the mug.", "Find free space left of the bowl, please.", "Where is the cup?"]
    one_by_one = [random_pipe(image, text, max_new_tokens=6) for image, text in zip(inputs, texts, strict=True)]
    assert random_pipe(inputs, texts, max_new_tokens=6) == one_by_one
    assert random_pipe(inputs, texts, max_new_tokens=6, batch_size=2) == one_by_one
    assert len({out["text"] for out in one_by_one}) > 1  # rows differ, so a row mix-up would show


def test_batched_rows_keep_their_own_image_size(two_point_pipe):
    sizes = [(100, 80), (200, 160), (50, 40)]
    outs = two_point_pipe([Image.new("RGB", size) for size in sizes], "Point.", batch_size=2)
    assert [out["points"][0]["x"] for out in outs] == [0.12, 0.06, 0.24]
    assert [out["points"][0]["x_px"] for out in outs] == [12, 12, 12]


def test_list_inputs_broadcast_and_dicts(random_pipe):
    image, other = images()
    texts = ["Point to the mug.", "Where is the cup?"]
    expected = [random_pipe(image, text, max_new_tokens=4) for text in texts]
    assert random_pipe(image, texts, max_new_tokens=4) == expected
    assert random_pipe([{"image": image, "text": text} for text in texts], max_new_tokens=4) == expected
    assert random_pipe({"image": image, "text": texts[0]}, max_new_tokens=4) == expected[0]
    assert random_pipe([image, other], texts[0], max_new_tokens=4)[0] == expected[0]
    with pytest.raises(ValueError, match="Got 2 images and 3 instructions"):
        random_pipe([image, other], texts + ["x"])
    with pytest.raises(ValueError, match="needs an instruction"):
        random_pipe(image)
    assert random_pipe(image, []) == [] and random_pipe([], []) == []


def test_image_kinds_give_the_same_answer(random_pipe, tmp_path):
    import numpy as np

    image = images()[1]
    path = tmp_path / "frame.png"
    image.save(path)
    expected = random_pipe(image, "Point to the mug.", max_new_tokens=4)
    assert random_pipe(str(path), "Point to the mug.", max_new_tokens=4) == expected
    assert random_pipe(np.asarray(image), "Point to the mug.", max_new_tokens=4) == expected


def test_answer_format_is_appended_unless_disabled(random_pipe):
    image = images()[0]
    tokenizer = random_pipe.processor.tokenizer

    def prompt(**params) -> str:
        inputs = random_pipe.preprocess({"image": image, "text": "Point to the mug."}, **params)
        ids = [i for i in inputs["input_ids"][0].tolist() if i < tokenizer.vocab_size]
        return tokenizer.decode(ids, skip_special_tokens=True)

    assert prompt().endswith(f"Point to the mug. {ANSWER_FORMAT_SUFFIX} ASSISTANT:")
    assert prompt(answer_format=False).endswith("\nPoint to the mug. ASSISTANT:")


def test_vision_tower_runs_once_per_image_and_call(random_pipe):
    calls = []
    hook = random_pipe.model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    image, other = images()
    texts = ["Point to the mug.", "Where is the cup?", "Find free space."]
    try:
        together = random_pipe(image, texts, max_new_tokens=4)
        assert len(calls) == 1
        calls.clear()
        assert random_pipe(image, texts, max_new_tokens=4, batch_size=2) == together
        assert len(calls) == 1
        calls.clear()
        random_pipe([image, other, image], texts, max_new_tokens=4)
        assert len(calls) == 2
        calls.clear()
        separately = [random_pipe(image, text, max_new_tokens=4) for text in texts]
        assert len(calls) == 3  # features are not kept across calls
    finally:
        hook.remove()
    assert together == separately


def test_a_long_list_of_images_keeps_only_the_recent_ones(random_pipe):
    """Pixel values and features are reused for the `RECENT_IMAGES` most recent images of a call (repeats come in
    runs): a call over many images holds no more than those and its current batch, and an image seen again after
    more than that many others is encoded again."""
    encoded = []
    hook = random_pipe.model.model.vision_tower.register_forward_hook(
        lambda module, args, output: encoded.append(args[0].shape[0])
    )
    many = [Image.new("RGB", (30, 20), (20 * index, 0, 0)) for index in range(RECENT_IMAGES + 3)]
    try:
        results = random_pipe([*many, many[0]], "Point to the mug.", max_new_tokens=2, batch_size=2)
    finally:
        hook.remove()
    assert sum(encoded) == len(many) + 1
    assert len(random_pipe._encoded_images) <= RECENT_IMAGES + 2
    assert len(random_pipe._preprocessed_images) <= RECENT_IMAGES
    assert results[-1] == results[0]


def test_bad_images_are_named(random_pipe, tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match=f"Image file not found: {missing}"):
        random_pipe(str(missing), "Point.")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=f"Cannot read image {broken}"):
        random_pipe(str(broken), "Point.")
    url = "http://127.0.0.1:9/frame.png"  # discard port: refused at once, no network needed
    with pytest.raises(ValueError, match=f"Cannot read image from URL {url}"):
        random_pipe(url, "Point.")


def test_plain_llava_with_a_robopoint_processor_is_rejected():
    """Plain LLaVA exports run with their own LlavaProcessor (tests/test_hub_contract.py); a mixed pair is refused."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2),
        text_config=dict(
            vocab_size=64, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2
        ),
    )
    with pytest.raises(ValueError, match="plain LLaVA model needs its own LlavaProcessor"):
        RoboPointPipeline(model=LlavaForConditionalGeneration(config), processor=tiny_processor(), device="cpu")


# ------------------------------------------------------------------------------------------- saving and loading
def test_saved_folder_loads_by_task_and_with_remote_code_only(tmp_path):
    model, processor = pointing_model(TWO_POINTS, TWO_POINTS_PROBS)
    image_path = tmp_path / "frame.png"
    Image.new("RGB", (100, 80), (10, 20, 30)).save(image_path)
    # A model folder (as `robopoint convert` writes) loads by task name once robopoint_hf is imported.
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    register_pipeline()
    expected = pipeline("robopoint", model=str(tmp_path / "model"), device="cpu")(
        str(image_path), "Point.", max_points=1, constrained=False
    )
    assert [(p["x_px"], p["y_px"]) for p in expected["points"]] == [(56, 78)]

    # A pipeline folder also carries the pipeline code, for users without the package.
    folder = tmp_path / "pipeline"
    make_pipe(model, processor).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    # Its own task name: "robopoint" stays the package's task (see robopoint_hf.hub_checkpoint).
    assert config["custom_pipelines"] == {
        "robopoint-points": {
            "impl": "pipeline_robopoint.RoboPointPipeline",
            "pt": ["AutoModelForImageTextToText"],
            "tf": [],
            "type": "multimodal",
        }
    }
    copied = {"pipeline_robopoint.py", "points.py", "decoding.py", "image_processing_robopoint.py"}
    assert copied | {"processor_config.json"} <= set(os.listdir(folder))
    script = f"""
import json
from transformers import pipeline
pipe = pipeline(model={str(folder)!r}, trust_remote_code=True, device="cpu")
assert type(pipe).__name__ == "RoboPointPipeline" and type(pipe).__module__.startswith("transformers_modules")
print(json.dumps(pipe({str(image_path)!r}, "Point.", max_points=1, constrained=False)))
"""
    assert json.loads(run_without_robopoint_hf(script, cwd=tmp_path)) == expected


def test_register_pipeline_is_idempotent():
    from transformers.pipelines import PIPELINE_REGISTRY

    register_pipeline()
    register_pipeline()
    assert PIPELINE_REGISTRY.supported_tasks["robopoint"]["impl"] is RoboPointPipeline
    assert RoboPointPipeline._registered_impl["robopoint"]["pt"][0].__name__ == "AutoModelForImageTextToText"


# ------------------------------------------------------------------------------------------- building blocks
def test_token_char_ends_follow_incremental_decoding():
    tokenizer = tiny_processor().tokenizer
    ids = tokenizer("[(0.461, 0.527)]", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    # "▁[(" decodes to "[(" at the start; "▁" to a space; EOS to nothing.
    assert tokenizer.convert_ids_to_tokens(ids[:3]) == ["▁[(", "0", "."]
    assert token_char_ends(tokenizer, ids) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 16]
    assert token_char_ends(tokenizer, []) == []


def test_item_spans_cover_each_tuple_from_bracket_to_bracket():
    text = "Sure: [(0.1, 0.2), [3, 4]] and (1, 2, 3, 4) but not (5) nor (.5 , 1e-1)"
    parsed = parse_points(text)
    spans = item_spans(text, parsed)
    assert [text[start:end] for start, end in spans] == ["(0.1, 0.2)", "[3, 4]", "(1, 2, 3, 4)", "(.5 , 1e-1)"]
    assert item_spans("no points", parse_points("no points")) == []


def test_item_scores_average_the_log_probabilities_of_overlapping_tokens():
    text = "[(1, 2), (3, 4)]"
    # Tokens: "[(" "1, " "2)" ", " "(3, 4)" "]" -> ends 2, 5, 7, 9, 15, 16
    ends = [2, 5, 7, 9, 15, 16]
    logprobs = [math.log(p) for p in (0.5, 0.8, 0.9, 0.1, 0.7, 0.2)]
    scores = item_scores(text, parse_points(text), ends, logprobs)
    assert scores == pytest.approx([geometric_mean([0.5, 0.8, 0.9]), 0.7])


def test_keep_top_points_keeps_order_and_breaks_ties_by_position():
    points = [{"score": s, "i": i} for i, s in enumerate([0.5, 0.9, 0.5, 0.7])]
    assert [p["i"] for p in keep_top_points(points, 2)] == [1, 3]
    assert [p["i"] for p in keep_top_points(points, 3)] == [0, 1, 3]
    assert keep_top_points(points, None) is points


def test_left_align_moves_right_padding_left():
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    aligned_ids, aligned_mask = left_align(ids, mask)
    assert aligned_ids.tolist() == [[5, 6, 7], [0, 8, 9]]
    assert aligned_mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    left = (torch.tensor([[0, 8, 9]]), torch.tensor([[0, 1, 1]]))
    assert left_align(*left)[0] is left[0]


def test_task_defaults_to_the_shipped_tiny_model():
    from transformers import pipeline

    from robopoint_hf.checkpoints import DEFAULT_MODEL_DIR

    pipe = pipeline("robopoint")
    assert isinstance(pipe, RoboPointPipeline)
    assert pipe.model.name_or_path == str(DEFAULT_MODEL_DIR)
