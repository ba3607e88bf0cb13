"""Back-project RoboPoint's 2D points to 3D camera-frame targets with a depth image.

RoboPoint answers in image space; a robot needs metres. The usual glue is a pinhole back-projection
with the depth camera's intrinsics:

    X = (u - cx) * Z / fx,    Y = (v - cy) * Z / fy,    Z = depth[v, u] * depth_scale

A common mistake is to scale the *unit* ray direction by the depth value (``normalize(ray) * Z``): that treats
the depth image as a range (Euclidean distance) image and shortens every point away from the optical axis.
Depth cameras (RealSense, Azure Kinect, ZED, ...) store the z coordinate, so this module multiplies the ray
``[(u - cx) / fx, (v - cy) / fy, 1]`` (whose z component is 1) by ``Z``.

Pixel convention (OpenCV): pixel ``(i, j)`` covers ``[i - 0.5, i + 0.5)`` horizontally and its centre has
coordinate ``u = i``. A normalized RoboPoint point ``x`` measures from the left *edge* of the image, so it maps to
``u = x * W - 0.5``; the depth is read at the pixel containing the point (``floor(x * W)``, the same pixel the
Where2Place scorer uses).

Only numpy and PIL are needed, so this module runs on a robot computer without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Deprojection", "as_point_array", "deproject", "intrinsics_to_tuple"]


@dataclass(frozen=True)
class Deprojection:
    """3D targets for a list of image points.

    Attributes:
        xyz (`np.ndarray` of shape `(N, 3)`, float64):
            Camera-frame coordinates in the unit of ``depth * depth_scale`` (metres with the usual scale).
            Rows of invalid points are NaN.
        valid (`np.ndarray` of shape `(N,)`, bool):
            Whether the point had a usable depth reading inside the image.
        pixels (`np.ndarray` of shape `(N, 2)`, float64):
            The continuous pixel coordinates ``(u, v)`` used for the ray (OpenCV convention).
        reasons (`tuple[str | None, ...]`):
            Why each invalid point was rejected (``"outside image"``, ``"zero depth"``, ``"non-finite depth"``,
            ``"negative depth"``); ``None`` for valid points.
    """

    xyz: np.ndarray
    valid: np.ndarray
    pixels: np.ndarray
    reasons: tuple[str | None, ...]


def intrinsics_to_tuple(intrinsics: Any) -> tuple[float, float, float, float, float]:
    """Normalise camera intrinsics to ``(fx, fy, cx, cy, skew)``.

    Args:
        intrinsics (`np.ndarray` of shape `(3, 3)` or a sequence of 4 floats):
            A camera matrix ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` or ``(fx, fy, cx, cy)``.

    Returns:
        `tuple[float, float, float, float, float]`: ``(fx, fy, cx, cy, skew)``.

    Raises:
        ValueError: if the shape is neither ``(3, 3)`` nor ``(4,)``, the last row of the matrix is not
            ``[0, 0, 1]``, or a focal length is not a positive finite number.
    """
    array = np.asarray(intrinsics, dtype=np.float64)
    if array.shape == (3, 3):
        if not np.allclose(array[2], [0.0, 0.0, 1.0]) or array[1, 0] != 0.0:
            raise ValueError(
                f"intrinsics matrix must look like [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {array.tolist()}"
            )
        fx, skew, cx, fy, cy = array[0, 0], array[0, 1], array[0, 2], array[1, 1], array[1, 2]
    elif array.shape == (4,):
        (fx, fy, cx, cy), skew = array, 0.0
    else:
        raise ValueError(f"intrinsics must be a 3x3 matrix or (fx, fy, cx, cy), got an array of shape {array.shape}")
    for name, value in (("fx", fx), ("fy", fy)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"intrinsics {name} must be a positive finite focal length in pixels, got {value}")
    return float(fx), float(fy), float(cx), float(cy), float(skew)


def _depth_array(depth: Any) -> np.ndarray:
    """Depth as a 2-D float64 array; PIL images (e.g. 16-bit PNG, mode ``I;16``) are converted without rescaling."""
    array = np.asarray(depth)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ValueError(f"depth must be a single-channel 2-D image, got an array of shape {array.shape}")
    return array.astype(np.float64, copy=False)


def as_point_array(points: Any, normalized: bool | None) -> tuple[np.ndarray, bool]:
    """Points as an ``(N, 2)`` float array and the resolved ``normalized`` flag.

    Callers must say whether plain numbers are 0-1 fractions or pixels: guessing from the values (the original
    demo's rule "a float <= 1 is normalized") silently misreads pixel coordinates such as ``(1.0, 0.5)``.

    Accepts ``(x, y)`` pairs, an ``(N, 2)`` array, or parsed point objects with ``.x``/``.y`` (and optionally
    ``.normalized``, used only when the caller did not say).
    """
    items = points if isinstance(points, np.ndarray) else list(points)
    if len(items) == 0 or not hasattr(items[0], "x"):
        if normalized is None:
            raise ValueError("pass normalized=True (0-1 coordinates) or normalized=False (pixels) for plain points")
        return np.asarray(items, dtype=np.float64).reshape(-1, 2), normalized
    coords = np.array([(float(p.x), float(p.y)) for p in items], dtype=np.float64).reshape(-1, 2)
    flags = {getattr(p, "normalized", None) for p in items}
    if normalized is None:
        if len(flags) != 1 or None in flags:
            raise ValueError(f"points disagree on (or do not state) normalization ({flags}); pass normalized=")
        normalized = bool(flags.pop())
    return coords, normalized


def deproject(
    points: Sequence[Any] | np.ndarray,
    depth: Any,
    intrinsics: Any,
    depth_scale: float = 1.0,
    *,
    normalized: bool | None = None,
    image_size: tuple[int, int] | None = None,
) -> Deprojection:
    """Back-project image points to camera-frame XYZ with a z-depth image and pinhole intrinsics.

    Args:
        points (sequence of `(x, y)`, `np.ndarray` of shape `(N, 2)`, or parsed points with `.x`/`.y`):
            The points, in the coordinates of the ORIGINAL image the intrinsics belong to.
        depth (`np.ndarray` of shape `(H, W)` or `PIL.Image.Image`):
            z-depth image aligned with the colour image (16-bit PNG depth in millimetres is common).
        intrinsics (`np.ndarray` of shape `(3, 3)` or `(fx, fy, cx, cy)`):
            Pinhole intrinsics in pixels of the ORIGINAL image.
        depth_scale (`float`, *optional*, defaults to `1.0`):
            Multiplier from stored depth units to output units (``0.001`` for millimetre PNGs → metres).
        normalized (`bool`, *optional*):
            ``True`` if points are 0-1 fractions of the image (RoboPoint's answers), ``False`` for pixel
            coordinates (OpenCV convention). Required for plain tuples/arrays; parsed points that carry a
            ``.normalized`` flag may leave it out.
        image_size (`tuple[int, int]`, *optional*):
            ``(width, height)`` of the original image. When given, the depth map must have this size (a
            mismatch raises instead of silently reading the wrong pixels); defaults to the depth map's size.

    Returns:
        [`Deprojection`]: XYZ per point (NaN where invalid), a ``valid`` mask, the pixel coordinates used and a
        reason per invalid point.

    Raises:
        ValueError: on a depth map whose shape differs from ``image_size`` (both shapes are named), bad
            intrinsics, a non-positive ``depth_scale`` or an unknown normalization.

    Example:

    ```python
    >>> import numpy as np
    >>> depth = np.full((480, 640), 1000, dtype=np.uint16)  # a wall 1 m away, in mm
    >>> result = deproject([(0.5, 0.5)], depth, (600.0, 600.0, 319.5, 239.5), 0.001, normalized=True)
    >>> result.xyz.round(6).tolist()
    [[0.0, 0.0, 1.0]]

    ```
    """
    if not (math.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(f"depth_scale must be a positive finite number, got {depth_scale}")
    depth_map = _depth_array(depth)
    height, width = depth_map.shape
    if image_size is not None and tuple(image_size) != (width, height):
        raise ValueError(
            f"depth map is {width}x{height} (width x height) but the image is {image_size[0]}x{image_size[1]}; "
            "align/resize the depth to the colour image (and its intrinsics) first"
        )
    fx, fy, cx, cy, skew = intrinsics_to_tuple(intrinsics)
    coords, normalized = as_point_array(points, normalized)

    if normalized:
        # x * W measures from the image's left edge; pixel 0's centre sits at 0.5 of that scale.
        pixels = coords * np.array([width, height], dtype=np.float64) - 0.5
    else:
        pixels = coords.copy()
    columns = np.floor(pixels[:, 0] + 0.5)
    rows = np.floor(pixels[:, 1] + 0.5)

    count = len(coords)
    xyz = np.full((count, 3), np.nan)
    valid = np.zeros(count, dtype=bool)
    reasons: list[str | None] = []
    for index in range(count):
        u, v = pixels[index]
        column, row = columns[index], rows[index]
        if not (np.isfinite(u) and np.isfinite(v)) or not (0 <= column < width and 0 <= row < height):
            reasons.append("outside image")
            continue
        raw = depth_map[int(row), int(column)]
        if not np.isfinite(raw):
            reasons.append("non-finite depth")
            continue
        if raw == 0:
            reasons.append("zero depth")
            continue
        if raw < 0:
            reasons.append("negative depth")
            continue
        z = raw * depth_scale
        y_ray = (v - cy) / fy
        x_ray = (u - cx - skew * y_ray) / fx
        xyz[index] = (x_ray * z, y_ray * z, z)
        valid[index] = True
        reasons.append(None)
    return Deprojection(xyz=xyz, valid=valid, pixels=pixels, reasons=tuple(reasons))
