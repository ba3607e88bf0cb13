"""Support-surface-aware lifting on synthetic RGB-D scenes with known geometry, and every invalid input."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from robopoint_hf.inference.deproject import deproject
from robopoint_hf.inference.placement import place_target

WIDTH, HEIGHT = 160, 120
FOCAL = 150.0
K = np.array([[FOCAL, 0.0, (WIDTH - 1) / 2], [0.0, FOCAL, (HEIGHT - 1) / 2], [0.0, 0.0, 1.0]])
FLOOR_Z = -0.75
TABLE = (-0.7, 0.0, -0.6, 0.6)  # x0, x1 (back edge), y0, y1 of the table top z = 0 (world: x forward, y left, z up)


@dataclass
class Scene:
    depth: np.ndarray  # z-depth, metres, 0 = no reading
    camera_to_world: np.ndarray  # 4x4
    wall_x: float  # the wall is the vertical plane x = wall_x behind the table
    region: tuple[float, float, float, float]  # free region on the table: x0, x1, y0, y1
    points: np.ndarray  # the "answer", pixels (u, v)


def _camera(rng: np.random.Generator, look_at: np.ndarray) -> np.ndarray:
    """A camera pitched 30-60 degrees down at ``look_at``, yawed and rolled (so the table is tilted in view)."""
    pitch, yaw, roll = np.radians([rng.uniform(30, 60), rng.uniform(-15, 15), rng.uniform(-15, 15)])
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), -math.sin(pitch)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    right, down = math.cos(roll) * right + math.sin(roll) * down, -math.sin(roll) * right + math.cos(roll) * down
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = look_at - forward * rng.uniform(0.6, 1.1)
    return pose


def _render(pose: np.ndarray, wall_x: float, boxes: list[np.ndarray], size=(WIDTH, HEIGHT), k=K) -> np.ndarray:
    """Ray-cast z-depth: table top, wall, floor and boxes (axis-aligned, standing on the table)."""
    v, u = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float64)
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)
    direction, origin = rays @ pose[:3, :3].T, pose[:3, 3]  # |direction| scaled so that t is the z-depth
    hits = []
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -origin[2] / direction[..., 2]
        x, y = origin[0] + t * direction[..., 0], origin[1] + t * direction[..., 1]
        hits.append(np.where((x >= TABLE[0]) & (x <= TABLE[1]) & (y >= TABLE[2]) & (y <= TABLE[3]), t, np.inf))
        t = (wall_x - origin[0]) / direction[..., 0]
        hits.append(np.where(origin[2] + t * direction[..., 2] > FLOOR_Z, t, np.inf))
        t = (FLOOR_Z - origin[2]) / direction[..., 2]
        hits.append(np.where(origin[0] + t * direction[..., 0] < wall_x, t, np.inf))
        for low, high in boxes:
            near = np.minimum((low - origin) / direction, (high - origin) / direction).max(axis=-1)
            far = np.maximum((low - origin) / direction, (high - origin) / direction).min(axis=-1)
            hits.append(np.where(near <= far, near, np.inf))
    depth = np.min([np.where(hit > 0, hit, np.inf) for hit in hits], axis=0)
    return np.where(np.isfinite(depth), depth, 0.0)


def _project(pose: np.ndarray, world: np.ndarray) -> np.ndarray:
    camera = (world - pose[:3, 3]) @ pose[:3, :3]
    return np.stack(
        [K[0, 0] * camera[:, 0] / camera[:, 2] + K[0, 2], K[1, 1] * camera[:, 1] / camera[:, 2] + K[1, 2]], 1
    )


def make_scene(seed: int) -> Scene:
    """A table with boxes and a wall behind it, a free region at the back edge, and an answer with strays."""
    rng = np.random.default_rng(seed)
    while True:
        depth_r, width_r = rng.uniform(0.08, 0.2), rng.uniform(0.1, 0.25)
        x1 = TABLE[1] - rng.uniform(0.0, 0.02)
        y0 = rng.uniform(-0.35, 0.35 - width_r)
        region = (x1 - depth_r, x1, y0, y0 + width_r)
        centre = np.array([(region[0] + region[1]) / 2, (region[2] + region[3]) / 2, 0.0])
        pose = _camera(rng, centre + [rng.uniform(-0.1, 0.05), rng.uniform(-0.05, 0.05), 0.0])
        wall_x = TABLE[1] + rng.choice([0.0, rng.uniform(0.0, 0.08)])
        boxes = []
        for side in rng.permutation(3)[: rng.integers(1, 3)]:  # next to the region: left, right or in front
            size, height = rng.uniform(0.04, 0.1, size=2), rng.uniform(0.04, 0.15)
            gap = rng.uniform(0.01, 0.05)
            if side == 0:
                corner = (region[0] + rng.uniform(0, depth_r / 2), region[3] + gap)
            elif side == 1:
                corner = (region[0] + rng.uniform(0, depth_r / 2), region[2] - gap - size[1])
            else:
                corner = (region[0] - gap - size[0], centre[1] - size[1] / 2)
            boxes.append(np.array([[corner[0], corner[1], 0.0], [corner[0] + size[0], corner[1] + size[1], height]]))
        count = rng.integers(4, 9)
        inside = np.stack([rng.uniform(region[0], region[1], count), rng.uniform(region[2], region[3], count)], 1)
        pixels = _project(pose, np.column_stack([inside, np.zeros(count)])) + rng.normal(0, 0.7, (count, 2))
        strays = rng.integers(0, 3)  # answer points just past the back edge, as pointing models produce
        edge = np.column_stack([np.full(strays, x1), rng.uniform(region[2], region[3], strays), np.zeros(strays)])
        up_image = _project(pose, edge + [0.0, 0.0, 0.05]) - _project(pose, edge)
        up_image /= np.linalg.norm(up_image, axis=1, keepdims=True).clip(1e-9)
        pixels = np.vstack([pixels, _project(pose, edge) + up_image * rng.uniform(1.5, 5, (strays, 1))])
        corners = _project(pose, np.array([[x, y, 0.0] for x in region[:2] for y in region[2:]]))
        visible = (pixels >= 0).all() and (pixels[:, 0] < WIDTH - 1).all() and (pixels[:, 1] < HEIGHT - 1).all()
        if visible and (corners >= 0).all() and (corners[:, 0] < WIDTH).all() and (corners[:, 1] < HEIGHT).all():
            break
    depth = _render(pose, wall_x, boxes)
    z = depth + rng.normal(0, 1, depth.shape) * (0.001 + 0.0015 * depth**2)  # depth-camera noise grows with z
    for _ in range(rng.integers(0, 4)):  # holes: specular / dark patches, sometimes right under a point
        cu, cv = pixels[rng.integers(len(pixels))] if rng.random() < 0.5 else rng.uniform(0, [WIDTH, HEIGHT])
        radius = rng.uniform(2, 8)
        v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
        z[(u - cu) ** 2 + (v - cv) ** 2 <= radius**2] = np.nan if rng.random() < 0.5 else 0.0
    return Scene(np.where(depth > 0, z, 0.0), pose, wall_x, region, pixels)


def _world(scene: Scene, camera_xyz: np.ndarray) -> np.ndarray:
    return camera_xyz @ scene.camera_to_world[:3, :3].T + scene.camera_to_world[:3, 3]


def _judge(scene: Scene, camera_xyz: np.ndarray) -> tuple[bool, bool]:
    """(target within 5 mm of the table plane and inside the free region, target on the wall)."""
    x, y, z = _world(scene, camera_xyz)
    x0, x1, y0, y1 = scene.region
    good = abs(z) <= 0.005 and x0 <= x <= x1 and y0 <= y <= y1
    return good, abs(x - scene.wall_x) <= 0.01 and z > 0.005


CASES = 200


def test_target_lies_on_the_table_inside_the_free_region():
    placed, own_depth, naive, wall_points, points_total = 0, 0, 0, 0, 0
    own_on_wall = naive_on_wall = 0
    for seed in range(CASES):
        scene = make_scene(seed)
        result = place_target(scene.points, scene.depth, K, normalized=False, seed=seed)
        placed += _judge(scene, result.target_camera)[0]
        assert np.isfinite(result.target_camera).all() and np.isfinite(result.plane.normal).all()
        for row, reason in zip(result.points_camera, result.reasons, strict=True):
            assert np.isfinite(row).all() or (reason is not None and reason.endswith("dropped"))
        # Without the plane step: each point keeps the depth under it (holes filled), robust centroid.
        kept = place_target(scene.points, scene.depth, K, normalized=False, kind="object", seed=seed)
        good, on_wall = _judge(scene, kept.target_camera)
        own_depth += good
        own_on_wall += on_wall
        lifted = deproject(scene.points, scene.depth, K, normalized=False)
        world = _world(scene, lifted.xyz[lifted.valid])
        wall_points += int(((np.abs(world[:, 0] - scene.wall_x) <= 0.01) & (world[:, 2] > 0.005)).sum())
        points_total += len(scene.points)
        if lifted.valid.any():  # the existing example's rule: median of the points with depth
            good, on_wall = _judge(scene, np.median(lifted.xyz[lifted.valid], axis=0))
            naive += good
            naive_on_wall += on_wall
    print(
        f"\n{CASES} scenes: plane step {placed} on target; own depth + robust centroid {own_depth} "
        f"({own_on_wall} targets on the wall); deproject + median {naive} ({naive_on_wall} on the wall); "
        f"{wall_points}/{points_total} points read the wall"
    )
    assert placed >= 0.99 * CASES
    assert own_depth <= 0.8 * CASES and wall_points >= 0.05 * points_total  # the scenes exercise the gap


def test_with_extrinsics_only_level_planes_support_and_results_come_in_the_base_frame():
    placed = 0
    for seed in range(0, CASES, 4):
        scene = make_scene(seed)
        result = place_target(scene.points, scene.depth, K, normalized=False, camera_to_base=scene.camera_to_world)
        placed += _judge(scene, result.target_camera)[0]
        np.testing.assert_allclose(result.target_base, _world(scene, result.target_camera), atol=1e-12)
        np.testing.assert_allclose(result.approach_base, [0.0, 0.0, -1.0], atol=0.02)  # straight down onto it
        np.testing.assert_allclose(result.points_base[result.used], _world(scene, result.points_camera[result.used]))
    assert placed == len(range(0, CASES, 4))


def test_every_changed_point_says_why():
    scene = make_scene(3)
    depth = scene.depth.copy()
    u, v = np.floor(scene.points[0] + 0.5).astype(int)
    depth[v - 1 : v + 2, u - 1 : u + 2] = 0.0  # a hole under the first point
    stray = scene.points[0] + [0.0, -200.0]  # above the image
    result = place_target(np.vstack([scene.points, stray]), depth, K, normalized=False)
    assert result.reasons[0] == "zero depth: moved onto the plane along its ray" and result.used[0]
    assert result.reasons[-1] == "outside image: dropped" and np.isnan(result.points_camera[-1]).all()
    assert np.isfinite(result.points_camera[:-1]).all()
    assert abs(result.plane.signed_distance(result.points_camera[0])) < 1e-9
    for reason, used in zip(result.reasons, result.used, strict=True):
        assert (reason is None) <= used  # an unchanged point is used
    again = place_target(np.vstack([scene.points, stray]), depth, K, normalized=False)
    np.testing.assert_array_equal(again.target_camera, result.target_camera)  # seeded: deterministic


def test_object_points_keep_their_depth_and_fill_holes():
    depth = np.full((HEIGHT, WIDTH), 1.0)
    depth[40:80, 60:100] = 0.7  # a box face 0.3 m in front of the background
    depth[58:62, 78:82] = np.nan
    result = place_target([(80, 60), (70, 50)], depth, K, normalized=False, kind="object")
    np.testing.assert_allclose(result.points_camera[:, 2], [0.7, 0.7])
    assert (
        result.reasons[0] == "non-finite depth: filled with the median depth of 9 valid pixels within 2 depth pixels"
    )
    assert result.reasons[1] is None and result.target_camera[2] == pytest.approx(0.7)


def test_camera_conventions_agree():
    scene = make_scene(7)
    reference = place_target(scene.points, scene.depth, K, normalized=False)
    millimetres = np.round(scene.depth * 1000).astype(np.uint16)
    ros = place_target(scene.points, millimetres, K.ravel().tolist(), normalized=False, depth_scale=0.001)
    np.testing.assert_allclose(ros.target_camera, reference.target_camera, atol=0.002)
    normalized = (scene.points + 0.5) / [WIDTH, HEIGHT]
    records = [{"x": x, "y": y, "x_px": int(x * WIDTH), "y_px": int(y * HEIGHT), "score": 0.9} for x, y in normalized]
    from_records = place_target(records, scene.depth, K)
    np.testing.assert_allclose(from_records.pixels, scene.points, atol=1e-9)
    np.testing.assert_allclose(from_records.target_camera, reference.target_camera, atol=1e-9)
    # Colour at 320x240 (points and K in its pixels), depth aligned to it at 160x120.
    big = K * [[2.0], [2.0], [1.0]]
    big[:2, 2] = [(2 * WIDTH - 1) / 2, (2 * HEIGHT - 1) / 2]
    half = place_target(normalized, scene.depth, big, normalized=True, image_size=(2 * WIDTH, 2 * HEIGHT))
    np.testing.assert_allclose(half.target_camera, reference.target_camera, atol=0.003)


def test_lens_distortion_is_undone():
    cv2 = pytest.importorskip("cv2")
    distortion = np.array([-0.28, 0.07, 0.001, -0.002, 0.0])
    on_wall = np.array([[-0.3, -0.2, 1.0], [0.25, 0.18, 1.0], [0.0, 0.0, 1.0]])  # a wall 1 m ahead: z unchanged
    distorted, _ = cv2.projectPoints(on_wall, np.zeros(3), np.zeros(3), K, distortion)
    depth = np.ones((HEIGHT, WIDTH))
    result = place_target(distorted.reshape(-1, 2), depth, K, normalized=False, distortion=distortion, kind="object")
    np.testing.assert_allclose(result.points_camera, on_wall, atol=1e-6)
    ignored = place_target(distorted.reshape(-1, 2), depth, K, normalized=False, kind="object")
    assert np.abs(ignored.points_camera - on_wall).max() > 0.01  # what the distortion would have cost


def test_distortion_without_opencv_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"robopoint_hf\[robot\]"):
        place_target([(80, 60)], np.ones((HEIGHT, WIDTH)), K, normalized=False, distortion=[0.1, 0, 0, 0, 0])
    result = place_target([(80, 60)], np.ones((HEIGHT, WIDTH)), K, normalized=False, distortion=[0.0] * 5)
    assert result.reasons == (None,)  # zero distortion needs no OpenCV


def test_invalid_inputs_raise_one_clear_error():
    depth, point = np.ones((HEIGHT, WIDTH)), [(80, 60)]
    cases = [
        (dict(depth=np.ones((HEIGHT, WIDTH, 3))), "single-channel"),
        (dict(image_size=(WIDTH, WIDTH)), r"depth map is 160x120 but the image is 160x160"),
        (dict(depth=np.zeros((HEIGHT, WIDTH))), "no valid reading"),
        (dict(depth=np.full((HEIGHT, WIDTH), np.nan)), "no valid reading"),
        (dict(intrinsics=np.array([[0.0, 0, 80], [0, 150, 60], [0, 0, 1]])), "fx must be a positive.*singular"),
        (dict(intrinsics=[150.0, 150.0]), "3x3 matrix"),
        (dict(points=[(-5, 60), (80, 500)]), r"no point is usable.*outside image"),
        (dict(points=[]), "no points"),
        (dict(points=[], normalized=None), "no points"),  # an empty answer needs no normalized= to say so
        (dict(kind="shelf"), "kind must be"),
        (dict(depth_scale=-1.0), "depth_scale"),
        (dict(camera_to_base=np.eye(3)), "4x4"),
        (dict(camera_to_base=np.diag([1.0, 1.0, -1.0, 1.0])), "rotation"),
        (dict(distortion=[0.1, 0.2]), "4, 5, 8, 12 or 14"),
        (dict(points=[{"x": 0.5}], normalized=None), "point record 0 has no 'x' and 'y'"),
    ]
    for overrides, message in cases:
        arguments = dict(points=point, depth=depth, intrinsics=K, normalized=False) | overrides
        with pytest.raises(ValueError, match=message):
            place_target(**arguments)
    with pytest.raises(TypeError, match="got str"):  # the answer's text, not its points
        place_target("[(0.5, 0.5)]", depth, K, normalized=True)


def test_degenerate_planes_are_reported():
    line = np.zeros((HEIGHT, WIDTH))
    line[:, 80] = 1.0  # valid depth on one image column only: collinear samples
    with pytest.raises(ValueError, match="degenerate support plane: .*collinear"):
        place_target([(80, 60)], line, K, normalized=False)
    speck = np.zeros((HEIGHT, WIDTH))
    speck[0:3, 0:3] = 1.0  # far from the point: nothing to fit around it
    with pytest.raises(ValueError, match="degenerate support plane: only 0 valid depth pixels"):
        place_target([(80, 60)], speck, K, normalized=False)
    # An object answer needs no plane: it is reported as missing instead.
    result = place_target([(81, 60)], line, K, normalized=False, kind="object")
    assert result.plane is None and result.approach_camera is None
    assert result.reasons == ("zero depth: filled with the median depth of 5 valid pixels within 2 depth pixels",)


def test_a_ray_parallel_to_the_plane_is_dropped():
    v = np.arange(HEIGHT, dtype=float)[:, None].repeat(WIDTH, axis=1)
    floor = np.where(v > 70, 0.8 * FOCAL / (v - K[1, 2]).clip(1e-9), 0.0)  # floor 0.8 m below a level camera
    result = place_target([(80, 80), (80, 59.5)], floor, K, normalized=False)
    assert result.reasons[1] == "its ray does not meet the plane in front of the camera: dropped"
    assert result.used.tolist() == [True, False] and np.isnan(result.points_camera[1]).all()
