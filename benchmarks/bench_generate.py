"""Greedy generation speed of RoboPoint vs transformers' LlavaForConditionalGeneration with the same weights.

Mid-size random config (CLIP 336/14 with 4 layers, hidden 256; Llama with 4 layers, hidden 512, vocab 32000), fp32
on CPU. Three comparisons, each measured side by side in one run:

1. latency of one greedy answer: ours vs native LLaVA (target ratio <= 1.05);
2. batch of 8 questions in one call vs a loop of 8 single calls (target throughput >= 1.5x);
3. five questions about one image, the image encoded once (``encode_images`` + ``image_features=``) and the
   questions decoded together, vs five full calls (target >= 1.5x).

    python benchmarks/bench_generate.py [--new-tokens 24] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image
from random_models import QUESTIONS, native_twin, random_robopoint
from transformers import AutoTokenizer, LlavaForConditionalGeneration

from robopoint_hf import RoboPointForConditionalGeneration, RoboPointImageProcessor, RoboPointProcessor

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests/fixtures/original/vicuna-mlp2x-full"
VISION = dict(
    model_type="clip_vision_model",
    hidden_size=256,
    intermediate_size=1024,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=336,
    patch_size=14,
)
TEXT = dict(
    model_type="llama",
    vocab_size=32000,
    hidden_size=512,
    intermediate_size=1376,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=8,
    max_position_embeddings=2048,
    pad_token_id=0,
)


def build_models() -> tuple[RoboPointForConditionalGeneration, LlavaForConditionalGeneration]:
    ours = random_robopoint(VISION, TEXT, projector_type="mlp2x_gelu")
    return ours, native_twin(ours)


def timed(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=48, help="a 6-point answer is about 48 tokens")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    ours, native = build_models()
    processor = RoboPointProcessor(RoboPointImageProcessor(), AutoTokenizer.from_pretrained(TOKENIZER))
    image = Image.open(ROOT / "tests/fixtures/original/images/sink.jpg")
    generate = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    one = processor(images=image, text=QUESTIONS[0], return_tensors="pt")

    with torch.inference_mode():
        t_native, ids_native = timed(lambda: native.generate(**one, **generate, suppress_tokens=[32000]), args.repeats)
        t_ours, ids_ours = timed(lambda: ours.generate(**one, **generate), args.repeats)
        assert torch.equal(ids_native, ids_ours), "ours and native LLaVA must produce the same tokens"

        batch = processor(images=[image] * 8, text=QUESTIONS, return_tensors="pt")
        singles = [processor(images=image, text=question, return_tensors="pt") for question in QUESTIONS]
        t_loop, _ = timed(lambda: [ours.generate(**inputs, **generate) for inputs in singles], args.repeats)
        t_batch, _ = timed(lambda: ours.generate(**batch, **generate), args.repeats)

        five = singles[:5]
        questions = processor(text=QUESTIONS[:5], images=[image] * 5, return_tensors="pt")

        def reuse():
            # The frame is encoded once; the five questions share it and are decoded together.
            features = ours.encode_images(five[0]["pixel_values"])
            return ours.generate(
                input_ids=questions["input_ids"],
                attention_mask=questions["attention_mask"],
                image_features=features.expand(5, -1, -1),
                **generate,
            )

        t_five, full = timed(lambda: [ours.generate(**inputs, **generate) for inputs in five], args.repeats)
        t_reuse, reused = timed(reuse, args.repeats)
        width = questions["input_ids"].shape[1]
        for row, answer in enumerate(full):
            assert reused[row, width:].tolist() == answer[0, answer.shape[1] - args.new_tokens :].tolist()

    print(f"mid-size random model, fp32 CPU, {args.new_tokens} new tokens, best of {args.repeats}")
    print("| comparison | baseline (s) | ours (s) | ratio | target |\n|---|---|---|---|---|")
    print(
        f"| 1 answer: ours / native LLaVA latency | {t_native:.3f} | {t_ours:.3f} | {t_ours / t_native:.3f} | <= 1.05 |"
    )
    print(
        f"| 8 questions: batch-1 loop / batch-8 | {t_loop:.3f} | {t_batch:.3f} | {t_loop / t_batch:.2f}x | >= 1.5x |"
    )
    print(
        f"| 5 questions, 1 image: full calls / reused features | {t_five:.3f} | {t_reuse:.3f} | {t_five / t_reuse:.2f}x | >= 1.5x |"
    )


if __name__ == "__main__":
    main()
