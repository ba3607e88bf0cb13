"""From a RoboPoint answer to 3D pick-and-place targets, the way a robot stack uses RoboPoint.

RoboPoint answers in normalized image coordinates. A robot turns them into camera-frame points with the depth
image and the camera intrinsics, then picks a robust target (here: the median of the valid points) and moves
it to the robot base frame with the camera extrinsics.

Runs offline in about a second: the "answer" is a string like the model returns, and the depth image is a
synthetic 640x480 scene (a table 0.8 m below a camera pitched 30 degrees down, with a 6 cm box on it), stored as a
16-bit PNG in millimetres like a RealSense depth frame.

    python examples/pick_and_place_3d.py
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from robopoint_hf.inference.deproject import deproject
from robopoint_hf.model.points import parse_points

WIDTH, HEIGHT = 640, 480
FX = FY = 600.0
CX, CY = 319.5, 239.5
# Camera 0.8 m above the table, looking down-forward; base frame: x forward, y left, z up.
CAMERA_TO_BASE = np.array(
    [
        [0.0, -0.5, 0.866, 0.10],
        [-1.0, 0.0, 0.0, 0.00],
        [0.0, -0.866, -0.5, 0.80],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def synthetic_depth_png() -> bytes:
    """A tilted table plane with a box on it, rendered by ray casting, encoded as a 16-bit millimetre PNG."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    rays = np.stack([(u - CX) / FX, (v - CY) / FY, np.ones_like(u)], axis=-1)  # z-component 1: z-depth rays
    rotation, origin = CAMERA_TO_BASE[:3, :3], CAMERA_TO_BASE[:3, 3]
    directions = rays @ rotation.T  # in the base frame
    with np.errstate(divide="ignore"):
        z_table = -origin[2] / directions[..., 2]  # intersection with the table plane z = 0
        z_box_top = (0.06 - origin[2]) / directions[..., 2]  # box top face at 6 cm
    top = origin + directions * z_box_top[..., None]
    on_box = (np.abs(top[..., 0] - 1.2) < 0.05) & (np.abs(top[..., 1] - 0.1) < 0.05) & (z_box_top > 0)
    depth = np.where(on_box, z_box_top, z_table)
    depth = np.where(np.isfinite(depth) & (depth > 0) & (depth < 3.0), depth, 0.0)  # 0 = no reading (3 m range)
    millimetres = np.round(depth * 1000).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(millimetres).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    depth_image = Image.open(io.BytesIO(synthetic_depth_png()))
    # What RoboPoint might answer to "Point to the box." and "Find free space to the right of the box."
    pick_answer = "[(0.428, 0.585), (0.441, 0.592), (0.416, 0.578), (0.432, 0.571)]"
    # The last place point is on the far end of the table, beyond the sensor's range: reported and left out.
    place_answer = "[(0.603, 0.631), (0.625, 0.640), (0.640, 0.618), (0.500, 0.020)]"

    intrinsics = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1]])
    for name, answer in (("pick", pick_answer), ("place", place_answer)):
        points = parse_points(answer).points
        result = deproject(points, depth_image, intrinsics, depth_scale=0.001, image_size=(WIDTH, HEIGHT))
        for point, xyz, reason in zip(points, result.xyz, result.reasons, strict=True):
            status = "ok" if reason is None else f"skipped ({reason})"
            print(f"{name}: ({point.x:.3f}, {point.y:.3f}) -> camera {np.round(xyz, 3)} {status}")
        if not result.valid.any():
            print(f"{name}: no valid depth under any point; ask again or move the camera")
            continue
        target_camera = np.median(result.xyz[result.valid], axis=0)
        target_base = CAMERA_TO_BASE @ np.append(target_camera, 1.0)
        print(f"{name} target: camera {np.round(target_camera, 3)} m -> base {np.round(target_base[:3], 3)} m\n")


if __name__ == "__main__":
    main()
