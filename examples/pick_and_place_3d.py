"""From an image, a depth image and the camera intrinsics to a 3D place target: pipeline -> place_target.

The pipeline points at free space ("the empty space on the near part of the table"), and
`robopoint_hf.inference.placement.place_target` lifts the points onto the table plane fitted to the depth around them:
points whose depth is missing or belongs to something else (the wall, a box) are moved onto the plane along
their rays, and the target is the centroid of the points that agree with the plane, with the plane normal as the
approach axis. The script draws the plane's inlier pixels, the points and the target over the image.

Runs offline with the shipped tiny model and, when no --depth is given, a SYNTHETIC depth image: a table plane
0.6 m below a camera pitched down 35 degrees with a wall behind it where the example image shows one, rendered at
twice the image's resolution (depth aligned to colour at another resolution) in millimetres, with a few holes.
The synthetic geometry only roughly matches the picture; pass a real registered depth for real numbers.

    python examples/pick_and_place_3d.py --output place.png
    python examples/pick_and_place_3d.py --image rgb.png --depth depth.png --depth-scale 0.001 \\
        --intrinsics 615.0 615.0 320.0 240.0 --instruction "Point to the free space left of the mug."
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from PIL import Image, ImageDraw
from transformers import pipeline

import robopoint_hf  # noqa: F401  (registers pipeline("robopoint") with transformers)
from robopoint_hf.checkpoints import DEFAULT_MODEL_DIR
from robopoint_hf.inference.placement import place_target
from robopoint_hf.inference.visualize import draw_points
from robopoint_hf.model.image_processing_robopoint import load_image

DEFAULT_IMAGE = DEFAULT_MODEL_DIR / "example_2_free_space_surface.jpg"
DEFAULT_INSTRUCTION = "Point to the empty space on the near part of the table."


def synthetic_depth(width: int, height: int, fx: float, wall_row: float) -> np.ndarray:
    """Millimetre z-depth of a table 0.6 m below a camera pitched 35 degrees down, a wall where ``wall_row`` is."""
    pitch, camera_height = math.radians(35.0), 0.6
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    rays = np.stack([(u - cx) / fx, (v - cy) / fx, np.ones_like(u)], axis=-1)
    # World: x forward, y left, z up; camera columns: right, down, forward.
    forward = np.array([math.cos(pitch), 0.0, -math.sin(pitch)])
    down = np.array([-math.sin(pitch), 0.0, -math.cos(pitch)])
    directions = rays @ np.stack([[0.0, -1.0, 0.0], down, forward], axis=1).T
    table = camera_height / -directions[..., 2].clip(max=-1e-9)
    edge_ray = np.array([0.0, (wall_row - cy) / fx, 1.0]) @ np.stack([[0.0, -1.0, 0.0], down, forward], axis=1).T
    wall_x = edge_ray[0] * camera_height / -edge_ray[2]  # the table's back edge shows at wall_row
    wall = wall_x / directions[..., 0].clip(min=1e-9)
    depth = np.where(table < wall, table, wall)
    rng = np.random.default_rng(0)
    depth = depth + rng.normal(0.0, 0.002, depth.shape)
    for cu, cv in rng.uniform([0, 0], [width, height], (6, 2)):  # holes: no reading
        depth[(u - cu) ** 2 + (v - cv) ** 2 < (0.03 * width) ** 2] = 0.0
    return np.round(depth * 1000).astype(np.uint16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="RoboPoint model folder or Hub id (default: the tiny model)")
    parser.add_argument("--image", default=str(DEFAULT_IMAGE), help="colour image")
    parser.add_argument("--depth", help="depth image registered to the colour image (default: synthetic)")
    parser.add_argument("--depth-scale", type=float, default=0.001, help="depth unit in metres (default: mm)")
    parser.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"), help="colour K")
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    parser.add_argument("--kind", choices=("free_space", "object"), default="free_space")
    parser.add_argument("--output", default="place_target.png", help="annotated image (default: place_target.png)")
    args = parser.parse_args()

    image = load_image(args.image)
    width, height = image.size
    intrinsics = args.intrinsics or (1.2 * width, 1.2 * width, (width - 1) / 2, (height - 1) / 2)
    if args.depth:
        depth = Image.open(args.depth)
    else:  # synthetic depth at twice the colour resolution (same field of view)
        depth = synthetic_depth(2 * width, 2 * height, 2 * intrinsics[0], wall_row=2 * 0.27 * height)

    pipe = pipeline("robopoint", model=args.model or str(DEFAULT_MODEL_DIR), device="cpu")
    answer = pipe(image, args.instruction)
    print(f"{args.instruction}\n  answer: {answer['text']}")
    result = place_target(
        answer["points"], depth, intrinsics, depth_scale=args.depth_scale, kind=args.kind, image_size=(width, height)
    )
    for record, xyz, reason in zip(answer["points"], result.points_camera, result.reasons, strict=True):
        print(f"  ({record['x']:.3f}, {record['y']:.3f}) -> {np.round(xyz, 3)} m  {reason or 'own depth'}")
    print(f"target (camera frame): {np.round(result.target_camera, 3)} m, spread {result.spread:.3f} m")
    if result.approach_camera is not None:
        print(f"approach axis: {np.round(result.approach_camera, 3)}")

    canvas = image.convert("RGB")
    if result.plane is not None:  # plane inliers, tinted green
        mask = Image.fromarray(result.plane.inlier_mask.astype(np.uint8) * 110).resize(canvas.size, Image.NEAREST)
        canvas = Image.composite(Image.new("RGB", canvas.size, (40, 220, 90)), canvas, mask)
    canvas = draw_points(canvas, result.pixels + 0.5, normalized=False, numbered=True)
    fx, fy, cx, cy = intrinsics
    x, y, z = result.target_camera
    target = (fx * x / z + cx + 0.5, fy * y / z + cy + 0.5)
    draw = ImageDraw.Draw(canvas)
    arm = max(4, width // 25)
    for offset in ((arm, 0), (0, arm)):
        draw.line(
            (target[0] - offset[0], target[1] - offset[1], target[0] + offset[0], target[1] + offset[1]),
            fill=(255, 215, 0),
            width=max(1, width // 100),
        )
    canvas.save(args.output)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
