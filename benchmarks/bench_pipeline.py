"""Cost of pipeline("robopoint") over a hand-written ``processor -> model.generate -> decode`` loop (target < 5 %).

Both paths get the same images, instructions (answer-format sentence included) and generation settings, and every
answer is forced to the same realistic 6-point string (~90 tokens) by a logits processor, so both generate exactly
the same tokens. The pipeline additionally keeps each step's scores, turns them into per-token log-probabilities,
maps tokens to characters (incremental decoding), parses and scores the points. Random weights, real 32000-token
vocabulary; the "small" model has CLIP-L/14-336's 576 image positions with narrow layers.

"answer work" is the pipeline's own post-processing of the answers alone (offsets, parsing, scoring).
The last row asks three questions about one image: the pipeline runs the vision tower once, the loop three times.

    python benchmarks/bench_pipeline.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList

from robopoint_hf import (
    RoboPointConfig,
    RoboPointForConditionalGeneration,
    RoboPointImageProcessor,
    RoboPointProcessor,
)
from robopoint_hf.model.pipeline_robopoint import RoboPointPipeline
from robopoint_hf.model.points import add_answer_format

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests/fixtures/original/vicuna-mlp2x-full"
ANSWER = "[(0.461, 0.527), (0.498, 0.521), (0.532, 0.540), (0.475, 0.561), (0.512, 0.575), (0.446, 0.549)]"
QUESTIONS = [
    "Find a few spots within the vacant area on the rightmost white plate.",
    "Point to the free space left of the mug.",
    "Identify several places in the unoccupied space on the stair in the middle.",
]
MODELS = {
    # name: (image size, vision hidden, vision layers, text hidden, text layers)
    "tiny": (28, 32, 2, 32, 2),
    "small": (336, 128, 2, 256, 2),
}


class ForceAnswer(LogitsProcessor):
    """Adds a large bias to the next token of `answer_ids` (then EOS), so every generation spells the same answer."""

    def __init__(self, answer_ids: list[int], eos_token_id: int):
        self.answer_ids = [*answer_ids, eos_token_id]
        self.start = None
        self.last_length = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] <= self.last_length or self.start is None:  # a new generate call
            self.start = input_ids.shape[1]
        self.last_length = input_ids.shape[1]
        step = min(input_ids.shape[1] - self.start, len(self.answer_ids) - 1)
        scores = scores.clone()
        scores[:, self.answer_ids[step]] += 50.0
        return scores


def build(name: str) -> tuple[RoboPointForConditionalGeneration, RoboPointProcessor]:
    image, vision_hidden, vision_layers, text_hidden, text_layers = MODELS[name]
    config = RoboPointConfig(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=vision_hidden,
            intermediate_size=4 * vision_hidden,
            num_hidden_layers=vision_layers,
            num_attention_heads=4,
            image_size=image,
            patch_size=14,
        ),
        text_config=dict(
            model_type="llama",
            vocab_size=32000,
            hidden_size=text_hidden,
            intermediate_size=4 * text_hidden,
            num_hidden_layers=text_layers,
            num_attention_heads=8,
            num_key_value_heads=8,
            max_position_embeddings=2048,
            pad_token_id=0,
        ),
        image_seq_length=(image // 14) ** 2,
    )
    torch.manual_seed(0)
    model = RoboPointForConditionalGeneration(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    processor = RoboPointProcessor(
        RoboPointImageProcessor(size=image), tokenizer, image_seq_length=config.image_seq_length
    )
    return model, processor


def bare_loop(model, processor, image, questions, generate_kwargs) -> list[str]:
    """What a user writes without the pipeline: one processor + generate + decode per question."""
    answers = []
    for question in questions:
        inputs = processor(images=image, text=add_answer_format(question), return_tensors="pt")
        ids = model.generate(**inputs, **generate_kwargs)
        answers.append(processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    return answers


def interleaved_medians(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of two functions timed alternately (after one warm-up each), so load drift hits both alike."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            function()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def postprocess_seconds(
    pipe: RoboPointPipeline, image: Image.Image, generate_kwargs: dict, repeats: int = 20
) -> float:
    """Median time of the pipeline's own answer work: per-token offsets, parsing, scoring (no model involved)."""
    outputs = pipe.forward(pipe.preprocess({"image": image, "text": QUESTIONS[0]}), generate_kwargs=generate_kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipe.postprocess(outputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, image: Image.Image, repeats: int) -> list[tuple[str, float, float, float]]:
    """(case, loop seconds, pipeline seconds, postprocess seconds) rows for one model size."""
    model, processor = build(name)
    tokenizer = processor.tokenizer
    force = ForceAnswer(tokenizer(ANSWER, add_special_tokens=False).input_ids, tokenizer.eos_token_id)
    generate_kwargs = {"max_new_tokens": 128, "do_sample": False, "logits_processor": LogitsProcessorList([force])}
    # Free decoding on both sides: this measures the pipeline's own work (the grammar's per-step cost is
    # bench_decoding.py's subject).
    pipe = RoboPointPipeline(
        model=model, processor=processor, device="cpu", constrained=False, stop_at_answer_end=False
    )
    assert bare_loop(model, processor, image, QUESTIONS[:1], generate_kwargs) == [ANSWER]
    assert pipe(image, QUESTIONS[0], generate_kwargs=generate_kwargs)["text"] == ANSWER
    cases = [(f"{name}, 1 question", QUESTIONS[0])]
    if name == "small":
        cases.append((f"{name}, 3 questions / 1 image", QUESTIONS))
    rows = []
    for label, questions in cases:
        listed = [questions] if isinstance(questions, str) else questions
        bare, ours = interleaved_medians(
            lambda: bare_loop(model, processor, image, listed, generate_kwargs),  # noqa: B023
            lambda: pipe(image, questions, generate_kwargs=generate_kwargs),  # noqa: B023
            repeats,
        )
        rows.append((label, bare, ours, postprocess_seconds(pipe, image, generate_kwargs) * len(listed)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # steadier timings on a shared machine; both paths run alike
    image = Image.new("RGB", (640, 480), (120, 110, 100))
    rows = [row for name in MODELS for row in measure(name, image, args.repeats)]
    header = f"{'case':<30} {'generate loop (ms)':>19} {'pipeline (ms)':>14} {'pipeline/loop':>14}"
    print(header + f" {'answer work (ms)':>17}")
    for label, bare, ours, answer_work in rows:
        print(f"{label:<30} {bare * 1e3:>19.1f} {ours * 1e3:>14.1f} {ours / bare:>14.3f} {answer_work * 1e3:>17.1f}")


if __name__ == "__main__":
    main()
