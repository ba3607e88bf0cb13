"""Point at things in a photo with pipeline("robopoint") and save an annotated copy.

Several instructions about one image are answered in one call, which runs the vision tower once; each
instruction's points get their own colour, numbered in the model's order, and are printed with their scores.

    python examples/predict_points.py --model ./robopoint-13b --image sink.jpg \\
        --instruction "Find a few spots within the vacant area on the rightmost white plate." \\
        --instruction "Point to the free space left of the sink." --max-points 5 --output sink-points.png
"""

from __future__ import annotations

import argparse

from transformers import pipeline

import robopoint_hf  # noqa: F401  (registers pipeline("robopoint") with transformers)
from robopoint_hf.inference.visualize import draw_points
from robopoint_hf.model.image_processing_robopoint import load_image

COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="RoboPoint model folder or Hub id")
    parser.add_argument("--image", required=True, help="image file or http(s) URL")
    parser.add_argument("--instruction", action="append", required=True, help="repeat for several instructions")
    parser.add_argument("--max-points", type=int, help="keep the highest-scoring points only")
    parser.add_argument("--output", default="points.png", help="annotated image (default: points.png)")
    args = parser.parse_args()

    pipe = pipeline("robopoint", model=args.model, device="cpu")
    image = load_image(args.image)
    results = pipe(image, args.instruction, max_points=args.max_points)

    annotated = image
    for index, (instruction, result) in enumerate(zip(args.instruction, results, strict=True)):
        colour = COLOURS[index % len(COLOURS)]
        print(f"{instruction}\n  answer: {result['text']}")
        for point in result["points"]:
            print(
                f"  ({point['x_px']}, {point['y_px']}) px  ({point['x']:.3f}, {point['y']:.3f})  {point['score']:.2f}"
            )
        annotated = draw_points(
            annotated, [(p["x"], p["y"]) for p in result["points"]], normalized=True, color=colour, numbered=True
        )
    annotated.save(args.output)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
