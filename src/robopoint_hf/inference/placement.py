"""From RoboPoint's 2D points to a 3D place (or pick) target a robot can use, aware of the supporting surface.

Lifting each point with the depth under it (:func:`.deproject.deproject`) fails exactly where RoboPoint's
free-space answers are used most: a point "on the table, in front of the wall" that lands one pixel past the table
edge reads the wall (or the floor) behind it; specular or dark table patches read 0 or NaN; a point next to a box
reads the box. :func:`place_target` instead

1. fits the supporting plane with RANSAC (seeded, so deterministic) to the valid depth in a window around the points,
   extracting up to three planes and keeping the one on which most points' own depth lies;
2. keeps a free-space point's own depth when it lies on that plane, and otherwise moves the point onto the plane
   where its viewing ray meets it (ray-plane intersection), saying why;
3. returns a robust target: the centroid of the points that agree with the plane (after dropping spatial
   outliers), on the plane, with the spread of those points and the plane normal as the approach axis.

Points whose own depth lies in front of the plane (a wall, a box, an object occluding the surface) or behind it
(the sensor sees past the plane's edge) are moved onto the plane but do not decide the target: their pixels show
something other than the surface. Object points (``kind="object"``) keep their own depth; holes are filled with
the median depth of the valid pixels around them.

Conventions a robotics user meets: the OpenCV optical frame (x right, y down, z forward), ``K`` as a 3x3 matrix or
the 9 numbers of ROS ``sensor_msgs/CameraInfo.k``, ``D`` as in ``CameraInfo.d`` (``plumb_bob`` /
``rational_polynomial``, undone with OpenCV's ``undistortPoints``: ``pip install 'robopoint_hf[robot]'``), depth
in any unit with ``depth_scale`` to metres, depth aligned to the colour image at another resolution, and points as
the pipeline's records, normalized tuples or pixels. Lengths (tolerances, results) are in metres, i.e. the unit of
``depth * depth_scale``.

The core path imports numpy only (OpenCV is imported only when lens distortion must be undone), so it runs on a
robot computer without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .deproject import (
    as_point_array,
    depth_array,
    depth_cells,
    intrinsics_to_tuple,
    pixel_rays,
    read_depth,
    to_pixel_coordinates,
)

__all__ = ["Placement", "SupportPlane", "place_target"]

ROBOT_EXTRA = "pip install 'robopoint_hf[robot]'"
# A plane needs this many inlying depth samples; fewer is reported as a degenerate plane.
MIN_PLANE_INLIERS = 30
# Candidate planes extracted one after the other from the neighbourhood (table, wall, a box top, ...).
MAX_CANDIDATE_PLANES = 4
# Each point votes for a candidate plane with the valid depth pixels at most this far (in depth pixels) around it.
VOTE_RADIUS = 2
# Weight of depth seen behind a candidate plane against it (evidence weaker than depth on it: points near a
# surface's edge legitimately see past it).
BEHIND_WEIGHT = 0.5
# Hole filling and votes look further out until they have this many valid depth pixels (one pixel is noise).
MIN_PATCH_PIXELS = 5
# Depth samples used for the plane fit (a random, seeded subset of the valid pixels around the points).
MAX_PLANE_SAMPLES = 20_000
# Hypotheses are scored on a random subset of this many samples; the winner is refined on all of them.
SCORING_SAMPLES = 500
# Rays closer than this to parallel with the plane (|cos| of the angle to the normal) do not meet it usefully.
MIN_RAY_INCIDENCE = 0.02
# A used point farther than max(OUTLIER_FACTOR * median distance, OUTLIER_FLOOR) from the median point is dropped.
OUTLIER_FACTOR = 3.0
OUTLIER_FLOOR = 0.02


@dataclass(frozen=True)
class SupportPlane:
    """A plane ``normal . x + offset = 0`` in the camera frame, fitted to depth samples.

    Attributes:
        normal (`np.ndarray` of shape `(3,)`):
            Unit normal, oriented towards the camera (so ``offset > 0`` is the camera's distance to the plane).
        offset (`float`):
            Plane offset in metres.
        inlier_mask (`np.ndarray` of shape `(H_d, W_d)`, bool):
            Depth pixels of the fitting window that lie on the plane (for overlays; depth-image resolution).
        inlier_count (`int`):
            Depth samples within the tolerance of the plane (out of ``sample_count``).
        sample_count (`int`):
            Valid depth samples used for the fit.
        rms (`float`):
            Root-mean-square distance of the inlying samples to the plane, in metres.
    """

    normal: np.ndarray
    offset: float
    inlier_mask: np.ndarray
    inlier_count: int
    sample_count: int
    rms: float

    def signed_distance(self, xyz: np.ndarray) -> np.ndarray:
        """Signed distance of points ``(N, 3)`` to the plane; positive on the camera's side."""
        return np.asarray(xyz) @ self.normal + self.offset


@dataclass(frozen=True)
class Placement:
    """3D points and a robust target for one answer.

    Attributes:
        kind (`str`): ``"free_space"`` or ``"object"``.
        points_camera (`np.ndarray` of shape `(N, 3)`):
            One row per input point, camera frame (metres). Rows of dropped points are NaN; their ``reasons``
            say why.
        points_base (`np.ndarray` of shape `(N, 3)` or `None`): the same in the base frame when
            ``camera_to_base`` was given.
        pixels (`np.ndarray` of shape `(N, 2)`): continuous OpenCV pixel coordinates of the points in the image.
        used (`np.ndarray` of shape `(N,)`, bool): points that make up the target.
        reasons (`tuple[str | None, ...]`): for every point that was moved, filled, left out of the target or
            dropped, what happened and why; ``None`` for points used with their own depth.
        plane (`SupportPlane` or `None`): the supporting plane. Always set for free space; for objects, the plane
            under the points when one could be fitted.
        target_camera (`np.ndarray` of shape `(3,)`): the centroid of the used points (on the plane for free
            space).
        target_base (`np.ndarray` of shape `(3,)` or `None`): the target in the base frame.
        spread (`float`): root-mean-square distance of the used points to their centroid, in metres.
        approach_camera (`np.ndarray` of shape `(3,)` or `None`): unit direction to move along when placing,
            into the plane (minus its normal); `None` without a plane.
        approach_base (`np.ndarray` of shape `(3,)` or `None`): the same in the base frame.
    """

    kind: str
    points_camera: np.ndarray
    points_base: np.ndarray | None
    pixels: np.ndarray
    used: np.ndarray
    reasons: tuple[str | None, ...]
    plane: SupportPlane | None
    target_camera: np.ndarray
    target_base: np.ndarray | None
    spread: float
    approach_camera: np.ndarray | None
    approach_base: np.ndarray | None


# ---------------------------------------------------------------------------------------------------- inputs
def _camera_to_base(matrix: Any) -> np.ndarray | None:
    """A validated rigid 4x4 transform from the camera frame to the base frame."""
    if matrix is None:
        return None
    array = np.asarray(matrix, dtype=np.float64)
    if array.shape != (4, 4) or not np.isfinite(array).all():
        raise ValueError(f"camera_to_base must be a finite 4x4 matrix, got shape {array.shape}")
    rotation = array[:3, :3]
    if not np.allclose(array[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"camera_to_base's last row must be [0, 0, 0, 1], got {array[3].tolist()}")
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-4) or np.linalg.det(rotation) <= 0:
        raise ValueError("camera_to_base's upper-left 3x3 block must be a rotation (orthonormal, determinant +1)")
    return array


def _undistorter(intrinsics: tuple[float, ...], distortion: Any):
    """A function from distorted to pinhole pixel coordinates (identity without distortion)."""
    coefficients = None if distortion is None else np.asarray(distortion, dtype=np.float64).ravel()
    if coefficients is None or not coefficients.any():
        return lambda pixels: pixels
    if len(coefficients) not in (4, 5, 8, 12, 14) or not np.isfinite(coefficients).all():
        raise ValueError(
            f"distortion must hold 4, 5, 8, 12 or 14 finite OpenCV coefficients (k1, k2, p1, p2[, k3, ...]), "
            f"got {coefficients.tolist()}"
        )
    try:
        import cv2
    except ImportError as error:
        raise ImportError(f"undoing lens distortion needs OpenCV: {ROBOT_EXTRA}") from error
    fx, fy, cx, cy, skew = intrinsics
    matrix = np.array([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def undistort(pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return pixels
        points = np.ascontiguousarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
        return cv2.undistortPoints(points, matrix, coefficients, P=matrix).reshape(-1, 2)

    return undistort


def _image_size(image_size: tuple[int, int] | None, depth_shape: tuple[int, int]) -> tuple[int, int]:
    """The colour image's ``(width, height)``; the depth map must cover the same field of view."""
    depth_height, depth_width = depth_shape
    if image_size is None:
        return depth_width, depth_height
    width, height = (int(value) for value in image_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be a positive (width, height), got {image_size}")
    if abs(width / height - depth_width / depth_height) > 0.01 * width / height:
        raise ValueError(
            f"depth map is {depth_width}x{depth_height} but the image is {width}x{height}: different aspect ratios, "
            "so the depth is not aligned to the image; register the depth to the colour camera first"
        )
    return width, height


# ---------------------------------------------------------------------------------------------------- plane fit
def _fit_plane(xyz: np.ndarray, tolerance: float, iterations: int, rng: np.random.Generator):
    """RANSAC plane (normal, offset, inlier mask) refined by least squares, or a string saying why none exists."""
    if len(xyz) < 3:
        return f"only {len(xyz)} depth samples"
    triples = xyz[rng.integers(0, len(xyz), size=(iterations, 3))]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    keep = lengths > 1e-12
    if not keep.any():
        return "the depth samples are collinear"
    normals = normals[keep] / lengths[keep, None]
    offsets = -np.einsum("ij,ij->i", normals, triples[keep, 0])
    scored = xyz if len(xyz) <= SCORING_SAMPLES else xyz[rng.choice(len(xyz), SCORING_SAMPLES, replace=False)]
    # Broadcasting rather than a matrix product: this thin product is slower through BLAS threads.
    scored, hypotheses = scored.astype(np.float32), normals.astype(np.float32)
    distances = sum(scored[:, axis, None] * hypotheses[:, axis] for axis in range(3)) + offsets.astype(np.float32)
    counts = (np.abs(distances) <= tolerance).sum(axis=0)
    best = int(np.argmax(counts))
    normal, offset = normals[best], offsets[best]
    inliers = np.abs(xyz @ normal + offset) <= tolerance
    for _ in range(2):  # least-squares refinement on the consensus set
        if inliers.sum() < 3:
            break
        centroid = xyz[inliers].mean(axis=0)
        _, singular, vt = np.linalg.svd(xyz[inliers] - centroid, full_matrices=False)
        if singular[1] <= 1e-6 * max(singular[0], 1e-12):
            return "the depth samples on the best plane are collinear"
        normal, offset = vt[2], -float(vt[2] @ centroid)
        inliers = np.abs(xyz @ normal + offset) <= tolerance
    if inliers.sum() < MIN_PLANE_INLIERS:
        return f"the best plane has {int(inliers.sum())} inlying samples (< {MIN_PLANE_INLIERS})"
    if offset < 0:  # orient the normal towards the camera
        normal, offset = -normal, -offset
    return normal, float(offset), inliers


def _window(pixels: np.ndarray, ok: np.ndarray, radius: float, image_size, depth_shape) -> tuple[slice, slice]:
    """Depth-map rows and columns around the in-image points, ``radius`` image pixels beyond their bounding box."""
    depth_height, depth_width = depth_shape
    scale = np.array([depth_width / image_size[0], depth_height / image_size[1]])
    inside = pixels[ok] if ok.any() else np.array([[image_size[0] / 2 - 0.5, image_size[1] / 2 - 0.5]])
    low = np.floor((inside.min(axis=0) - radius + 0.5) * scale).astype(int)
    high = np.ceil((inside.max(axis=0) + radius + 0.5) * scale).astype(int)
    return (
        slice(max(low[1], 0), min(high[1], depth_height)),
        slice(max(low[0], 0), min(high[0], depth_width)),
    )


def _support_plane(
    depth: np.ndarray,
    window: tuple[slice, slice],
    rays_of,
    evidence: list[np.ndarray],
    *,
    tolerance: float,
    iterations: int,
    rng: np.random.Generator,
    up: np.ndarray | None,
    max_tilt_deg: float,
) -> SupportPlane | str:
    """The plane under the points, or a string saying why it is degenerate.

    Up to ``MAX_CANDIDATE_PLANES`` planes are extracted from the depth in ``window``, largest first; each point then
    votes with the depth pixels around it (``evidence``): for a plane by the share of them on it, against it by the
    share seen *behind* it. A surface the points rest on hides what lies behind it, so an occluder (a box top, the
    wall at the table's back edge) cannot outvote the table by covering some of the points.
    """
    rows, columns = np.mgrid[window[0], window[1]]
    values = depth[window]
    valid = np.isfinite(values) & (values > 0)
    if valid.sum() < 3:
        return f"only {int(valid.sum())} valid depth pixels around the points"
    cells = np.stack([columns[valid], rows[valid]], axis=1).astype(np.float64)
    xyz_all = rays_of(cells) * values[valid][:, None]
    chosen = rng.choice(len(xyz_all), size=min(len(xyz_all), MAX_PLANE_SAMPLES), replace=False)
    remaining = xyz_all[np.sort(chosen)]

    candidates, why = [], "no plane found"
    for _ in range(MAX_CANDIDATE_PLANES):
        fitted = _fit_plane(remaining, tolerance, iterations, rng)
        if isinstance(fitted, str):
            why = fitted
            break
        normal, offset, inliers = fitted
        candidates.append((normal, offset, int(inliers.sum())))
        remaining = remaining[~inliers]
    if up is not None:
        cos_tilt = math.cos(math.radians(max_tilt_deg))
        level = [c for c in candidates if abs(float(c[0] @ up)) >= cos_tilt]
        if candidates and not level:
            return f"no candidate plane is within {max_tilt_deg} degrees of level in the base frame"
        candidates = level
    if not candidates:
        return why
    votes = [_plane_votes(normal, offset, evidence, tolerance) for normal, offset, _ in candidates]
    normal, offset, _ = candidates[int(np.argmax(votes))]  # ties: the plane with more inliers (found first)

    distance = np.abs(xyz_all @ normal + offset)
    on_plane = distance <= tolerance
    mask = np.zeros(depth.shape, dtype=bool)
    mask[rows[valid][on_plane], columns[valid][on_plane]] = True
    return SupportPlane(
        normal=normal,
        offset=offset,
        inlier_mask=mask,
        inlier_count=int(on_plane.sum()),
        sample_count=len(xyz_all),
        rms=float(np.sqrt(np.mean(distance[on_plane] ** 2))),
    )


# ---------------------------------------------------------------------------------------------------- per point
def _patch(depth: np.ndarray, cell: np.ndarray, min_radius: int, max_radius: int) -> tuple[np.ndarray, int] | None:
    """Valid depth pixels ``(column, row)`` of the smallest square window (radius ``min_radius`` up to
    ``max_radius``) around ``cell`` that holds ``MIN_PATCH_PIXELS`` of them (or any, at ``max_radius``), and
    that radius."""
    column, row = int(cell[0]), int(cell[1])
    for radius in range(min_radius, max_radius + 1):
        top, left = max(row - radius, 0), max(column - radius, 0)
        patch = depth[top : row + radius + 1, left : column + radius + 1]
        rows, columns = np.nonzero(np.isfinite(patch) & (patch > 0))
        if len(rows) >= MIN_PATCH_PIXELS or (radius == max_radius and len(rows)):
            return np.stack([columns + left, rows + top], axis=1).astype(np.float64), radius
    return None


def _plane_votes(normal: np.ndarray, offset: float, evidence: list[np.ndarray], tolerance: float) -> float:
    """Sum over points of (share of the point's depth pixels on the plane) - (share seen behind it)."""
    votes = 0.0
    for xyz in evidence:
        distance = xyz @ normal + offset
        votes += float(np.mean(np.abs(distance) <= tolerance) - BEHIND_WEIGHT * np.mean(distance < -tolerance))
    return votes


def _drop_outliers(points: np.ndarray, used: np.ndarray, reasons: list[str | None]) -> None:
    """Leaves out of the target the used points far from the others (robust to a minority of strays)."""
    indices = np.flatnonzero(used)
    if len(indices) < 3:
        return
    centre = np.median(points[indices], axis=0)
    distances = np.linalg.norm(points[indices] - centre, axis=1)
    limit = max(OUTLIER_FACTOR * float(np.median(distances)), OUTLIER_FLOOR)
    for index, distance in zip(indices, distances, strict=True):
        if distance > limit:
            used[index] = False
            note = f"{distance:.3f} m from the median of the points (limit {limit:.3f} m): not used for the target"
            reasons[index] = note if reasons[index] is None else f"{reasons[index]}; {note}"


def place_target(
    points: Sequence[Any] | np.ndarray,
    depth: Any,
    intrinsics: Any,
    *,
    depth_scale: float = 1.0,
    kind: Literal["free_space", "object"] = "free_space",
    normalized: bool | None = None,
    image_size: tuple[int, int] | None = None,
    distortion: Sequence[float] | None = None,
    camera_to_base: Any = None,
    plane_tolerance: float = 0.01,
    window_px: float | None = None,
    max_tilt_deg: float = 45.0,
    fill_radius_px: int = 5,
    ransac_iterations: int = 200,
    seed: int = 0,
) -> Placement:
    """Lift RoboPoint's points to 3D with the supporting surface and return a robust place (or pick) target.

    Args:
        points (pipeline point records, sequence of `(x, y)`, `np.ndarray` of shape `(N, 2)`, or parsed points):
            One answer's points, in the coordinates of the colour image the intrinsics belong to.
        depth (`np.ndarray` of shape `(H_d, W_d)` or `PIL.Image.Image`):
            z-depth registered to the colour camera (0, negative or NaN = no reading), possibly at another
            resolution with the same field of view.
        intrinsics (`np.ndarray` of shape `(3, 3)`, its 9 numbers row-major, or `(fx, fy, cx, cy)`):
            The colour camera's ``K`` in pixels of the colour image (ROS ``CameraInfo.k``).
        depth_scale (`float`, *optional*, defaults to `1.0`):
            Multiplier from stored depth units to metres (``0.001`` for millimetre PNGs).
        kind (`str`, *optional*, defaults to `"free_space"`):
            ``"free_space"``: the points mark a place on a surface; they are lifted onto the support plane.
            ``"object"``: the points lie on an object; they keep their own depth (holes filled from around them).
        normalized (`bool`, *optional*):
            ``True`` for 0-1 coordinates, ``False`` for pixels; not needed for pipeline records or parsed points.
        image_size (`tuple[int, int]`, *optional*):
            ``(width, height)`` of the colour image; defaults to the depth map's size.
        distortion (sequence of floats, *optional*):
            OpenCV / ROS ``CameraInfo.d`` coefficients of the colour camera (needs the ``robot`` extra).
        camera_to_base (`np.ndarray` of shape `(4, 4)`, *optional*):
            Rigid transform taking camera-frame points to the robot base frame (``T_base_camera``). With it, the
            results are also given in the base frame and only planes within ``max_tilt_deg`` of level (base z up,
            as in ROS REP 103) can be the support.
        plane_tolerance (`float`, *optional*, defaults to `0.01`):
            Metres from the plane within which a depth reading counts as on the plane.
        window_px (`float`, *optional*):
            The plane is fitted to the depth within this many image pixels of the points' bounding box; defaults
            to 15 % of the shorter image side.
        max_tilt_deg (`float`, *optional*, defaults to `45.0`):
            With ``camera_to_base``, the largest angle between a support plane's normal and the base z axis.
        fill_radius_px (`int`, *optional*, defaults to `5`):
            Object points on a hole take the median depth of the valid pixels at most this many depth pixels away.
        ransac_iterations (`int`, *optional*, defaults to `200`):
            Plane hypotheses per RANSAC round.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the sampling, so the same input always gives the same result.

    Returns:
        [`Placement`]: the 3D points, the plane, the target with its spread and approach axis, and a reason for
        every point that was moved, filled, left out of the target or dropped.

    Raises:
        ValueError: on a bad argument, a depth map without any valid reading, depth and image of different aspect
            ratios, a degenerate support plane for free space (too few or collinear depth samples), or when no
            point is left for the target (the message lists every point's reason).
        ImportError: when ``distortion`` is non-zero and OpenCV is not installed.

    Example:

    ```python
    >>> import numpy as np
    >>> v = np.arange(480, dtype=float)[:, None].repeat(640, axis=1)
    >>> depth = np.where(v > 240, 0.8 * 600 / (v - 239.5).clip(1e-9), 0.0)  # a floor 0.8 m below the camera
    >>> depth[300:310, 300:340] = 0  # a hole under the point
    >>> result = place_target([(319.5, 305)], depth, (600, 600, 319.5, 239.5), normalized=False)
    >>> result.target_camera.round(3).tolist(), result.reasons
    ([0.0, 0.8, 7.328], ('zero depth: moved onto the plane along its ray',))

    ```
    """
    if kind not in ("free_space", "object"):
        raise ValueError(f"kind must be 'free_space' or 'object', got {kind!r}")
    for name, value in (("depth_scale", depth_scale), ("plane_tolerance", plane_tolerance)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if ransac_iterations < 1 or fill_radius_px < 0:
        raise ValueError(
            f"ransac_iterations must be >= 1 and fill_radius_px >= 0, got {ransac_iterations}, {fill_radius_px}"
        )
    depth_map = depth_array(depth) * depth_scale
    if not (np.isfinite(depth_map) & (depth_map > 0)).any():
        raise ValueError("depth has no valid reading: every pixel is 0, negative or NaN")
    size = _image_size(image_size, depth_map.shape)
    camera = intrinsics_to_tuple(intrinsics)
    undistort = _undistorter(camera, distortion)
    to_base = _camera_to_base(camera_to_base)
    coords, normalized = as_point_array(points, normalized)
    if len(coords) == 0:
        raise ValueError("no points: the answer is empty")
    pixels = to_pixel_coordinates(coords, normalized, size)
    depth_to_image = np.array([size[0] / depth_map.shape[1], size[1] / depth_map.shape[0]])

    def rays_of(depth_cells: np.ndarray) -> np.ndarray:
        return pixel_rays(undistort((depth_cells + 0.5) * depth_to_image - 0.5), camera)

    raw, read_reasons = read_depth(depth_map, pixels, size)
    inside = np.array([reason != "outside image" for reason in read_reasons])
    rays = np.full((len(coords), 3), np.nan)
    rays[inside] = pixel_rays(undistort(pixels[inside]), camera)
    own = rays * raw[:, None]  # NaN where the reading is unusable
    cells = depth_cells(pixels, size, depth_map.shape)
    patches = [
        _patch(depth_map, cells[index], VOTE_RADIUS, max(VOTE_RADIUS, fill_radius_px)) if inside[index] else None
        for index in range(len(coords))
    ]
    evidence = [
        rays_of(patch[0]) * depth_map[patch[0][:, 1].astype(int), patch[0][:, 0].astype(int), None]
        for patch in patches
        if patch is not None
    ]

    radius = 0.15 * min(size) if window_px is None else float(window_px)
    rng = np.random.default_rng(seed)
    up = None if to_base is None else to_base[2, :3]  # base z axis in camera coordinates
    plane = _support_plane(
        depth_map,
        _window(pixels, inside, radius, size, depth_map.shape),
        rays_of,
        evidence,
        tolerance=plane_tolerance,
        iterations=ransac_iterations,
        rng=rng,
        up=up,
        max_tilt_deg=max_tilt_deg,
    )
    if isinstance(plane, str):
        if kind == "free_space":
            raise ValueError(f"degenerate support plane: {plane}")
        plane = None

    result = np.full((len(coords), 3), np.nan)
    used = np.zeros(len(coords), dtype=bool)
    reasons: list[str | None] = []
    for index in range(len(coords)):
        read_reason = read_reasons[index]
        if read_reason == "outside image":
            reasons.append("outside image: dropped")
        elif kind == "object":
            reasons.append(
                _lift_object_point(
                    index, read_reason, own, rays, cells[index], depth_map, fill_radius_px, result, used
                )
            )
        else:
            reasons.append(_lift_free_space_point(index, read_reason, own, rays, plane, plane_tolerance, result, used))
    if kind == "free_space" and not used.any() and np.isfinite(result).all(axis=1).any():
        fallback = "used for the target: no point had depth on the plane"
        for index in np.flatnonzero(np.isfinite(result).all(axis=1)):
            used[index] = True
            reasons[index] = f"{reasons[index]}; {fallback}"
    _drop_outliers(result, used, reasons)
    if not used.any():
        listed = "; ".join(f"point {index}: {reason}" for index, reason in enumerate(reasons))
        raise ValueError(f"no point is usable for a target ({listed})")

    centroid = result[used].mean(axis=0)
    spread = float(np.sqrt(np.mean(np.sum((result[used] - centroid) ** 2, axis=1))))
    target = centroid
    if kind == "free_space":
        target = centroid - plane.signed_distance(centroid) * plane.normal
    approach = None if plane is None else -plane.normal

    def in_base(xyz: np.ndarray | None, direction: bool = False) -> np.ndarray | None:
        if to_base is None or xyz is None:
            return None
        return xyz @ to_base[:3, :3].T + (0.0 if direction else to_base[:3, 3])

    return Placement(
        kind=kind,
        points_camera=result,
        points_base=in_base(result),
        pixels=pixels,
        used=used,
        reasons=tuple(reasons),
        plane=plane,
        target_camera=target,
        target_base=in_base(target),
        spread=spread,
        approach_camera=approach,
        approach_base=in_base(approach, direction=True),
    )


def _lift_free_space_point(index, read_reason, own, rays, plane, tolerance, result, used) -> str | None:
    """Keeps an on-plane reading, moves any other point onto the plane along its ray; returns its reason."""
    incidence = float(rays[index] @ plane.normal) / float(np.linalg.norm(rays[index]))
    depth_on_plane = -plane.offset / float(rays[index] @ plane.normal) if incidence else math.inf
    if abs(incidence) < MIN_RAY_INCIDENCE or not (0 < depth_on_plane < math.inf):
        return "its ray does not meet the plane in front of the camera: dropped"
    if read_reason is None:
        distance = float(plane.signed_distance(own[index]))
        if abs(distance) <= tolerance:
            result[index], used[index] = own[index], True
            return None
        side = (
            "in front of the plane (something stands on or occludes the surface here)"
            if distance > 0
            else "behind the plane (the sensor sees past the surface's edge here)"
        )
        result[index] = rays[index] * depth_on_plane
        return (
            f"depth {abs(distance) * 1000:.0f} mm {side}: moved onto the plane along its ray; not used for the target"
        )
    result[index], used[index] = rays[index] * depth_on_plane, True
    return f"{read_reason}: moved onto the plane along its ray"


def _lift_object_point(index, read_reason, own, rays, cell, depth_map, radius, result, used) -> str | None:
    """Keeps the point's own depth, filling a hole from the valid pixels around it; returns its reason."""
    if read_reason is None:
        result[index], used[index] = own[index], True
        return None
    found = _patch(depth_map, cell, 1, radius)
    if found is None:
        return f"{read_reason} and no valid depth within {radius} depth pixels: dropped"
    neighbours, reach = found
    value = float(np.median(depth_map[neighbours[:, 1].astype(int), neighbours[:, 0].astype(int)]))
    result[index], used[index] = rays[index] * value, True
    return f"{read_reason}: filled with the median depth of {len(neighbours)} valid pixels within {reach} depth pixels"
