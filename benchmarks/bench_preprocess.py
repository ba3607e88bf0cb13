"""Images/s of RoboPoint's image processor vs the original path, on 64 photos of mixed sizes.

The original path is what `mm_utils.process_images` does for `image_aspect_ratio="pad"`: paste on a square canvas
of the CLIP mean colour, then transformers' generic CLIP image processor. Both run here side by side, on the same
images, with identical outputs checked first.

    python benchmarks/bench_preprocess.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    ROOT / "tests/fixtures/original/images/sink.jpg",
    ROOT / "tests/fixtures/original/images/synthetic_500x300.png",
]
SIZES = [(640, 480), (480, 640), (1280, 720), (336, 336), (500, 300), (1024, 1024), (800, 600), (300, 900)]


def photos(count: int = 64) -> list[Image.Image]:
    base = [Image.open(path).convert("RGB") for path in SOURCES]
    return [base[i % len(base)].resize(SIZES[i % len(SIZES)], Image.Resampling.BILINEAR) for i in range(count)]


def original_path(images: list[Image.Image]) -> np.ndarray:
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_convert_rgb=True
    )
    background = tuple(int(x * 255) for x in processor.image_mean)
    padded = []
    for image in images:
        width, height = image.size
        side = max(width, height)
        canvas = Image.new(image.mode, (side, side), background)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        padded.append(canvas)
    return np.stack([processor(image, return_tensors="np")["pixel_values"][0] for image in padded])


def ours(images: list[Image.Image]) -> np.ndarray:
    from robopoint_hf import RoboPointImageProcessor

    return RoboPointImageProcessor()(images)["pixel_values"]


def best_time(function, images, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(images)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images = photos()
    difference = np.abs(ours(images) - original_path(images)).max()
    baseline = best_time(original_path, images, args.repeats)
    mine = best_time(ours, images, args.repeats)
    print(f"64 photos of {len(SIZES)} sizes, best of {args.repeats}; max |ours - original| = {difference:.2e}")
    print("| path | seconds | images/s |\n|---|---|---|")
    print(f"| original (expand2square + CLIPImageProcessor) | {baseline:.3f} | {len(images) / baseline:.1f} |")
    print(f"| RoboPointImageProcessor | {mine:.3f} | {len(images) / mine:.1f} |")
    print(f"speed-up: {baseline / mine:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
