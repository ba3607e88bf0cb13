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

The pinhole maths here (:func:`pixel_rays`, :func:`to_pixel_coordinates`, :func:`read_depth`) is shared with
:mod:`.placement`, which lifts points onto the supporting surface.

Only numpy is needed (PIL images are read through ``np.asarray``), so this module runs on a robot computer without
torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Deprojection",
    "as_point_array",
    "depth_array",
    "depth_cells",
    "deproject",
    "intrinsics_to_tuple",
    "pixel_rays",
    "read_depth",
    "to_pixel_coordinates",
]


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
        intrinsics (`np.ndarray` of shape `(3, 3)`, a sequence of 9 or of 4 floats):
            A camera matrix ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``, the same matrix row-major as 9 numbers
            (ROS ``sensor_msgs/CameraInfo.k``) or ``(fx, fy, cx, cy)``.

    Returns:
        `tuple[float, float, float, float, float]`: ``(fx, fy, cx, cy, skew)``.

    Raises:
        ValueError: if the shape is neither ``(3, 3)``, ``(9,)`` nor ``(4,)``, the last row of the matrix is not
            ``[0, 0, 1]``, a focal length is not a positive finite number (a zero focal length makes the matrix
            singular) or the principal point is not finite.
    """
    array = np.asarray(intrinsics, dtype=np.float64)
    if array.shape == (9,):
        array = array.reshape(3, 3)
    if array.shape == (3, 3):
        if not np.allclose(array[2], [0.0, 0.0, 1.0]) or array[1, 0] != 0.0:
            raise ValueError(
                f"intrinsics matrix must look like [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {array.tolist()}"
            )
        fx, skew, cx, fy, cy = array[0, 0], array[0, 1], array[0, 2], array[1, 1], array[1, 2]
    elif array.shape == (4,):
        (fx, fy, cx, cy), skew = array, 0.0
    else:
        raise ValueError(
            f"intrinsics must be a 3x3 matrix, its 9 numbers or (fx, fy, cx, cy), got an array of shape {array.shape}"
        )
    for name, value in (("fx", fx), ("fy", fy)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"intrinsics {name} must be a positive finite focal length in pixels, got {value} "
                "(the camera matrix is singular or invalid)"
            )
    if not (math.isfinite(cx) and math.isfinite(cy) and math.isfinite(skew)):
        raise ValueError(f"intrinsics principal point and skew must be finite, got cx={cx}, cy={cy}, s={skew}")
    return float(fx), float(fy), float(cx), float(cy), float(skew)


def depth_array(depth: Any) -> np.ndarray:
    """Depth as a 2-D float64 array; PIL images (e.g. 16-bit PNG, mode ``I;16``) are converted without rescaling."""
    array = np.asarray(depth)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ValueError(f"depth must be a single-channel 2-D image, got an array of shape {array.shape}")
    return array.astype(np.float64, copy=False)


def pixel_rays(pixels: np.ndarray, intrinsics: tuple[float, float, float, float, float]) -> np.ndarray:
    """Viewing rays ``[x / z, y / z, 1]`` through continuous pixel coordinates (OpenCV optical frame).

    The z component is 1, so ``ray * z_depth`` is the 3D point a z-depth camera measured (not ``unit_ray * z``).

    Args:
        pixels (`np.ndarray` of shape `(N, 2)`): ``(u, v)`` in the pinhole (undistorted) image.
        intrinsics (`tuple`): ``(fx, fy, cx, cy, skew)`` from :func:`intrinsics_to_tuple`.

    Returns:
        `np.ndarray` of shape `(N, 3)`: one ray per pixel.
    """
    fx, fy, cx, cy, skew = intrinsics
    y_ray = (pixels[:, 1] - cy) / fy
    x_ray = (pixels[:, 0] - cx - skew * y_ray) / fx
    return np.stack([x_ray, y_ray, np.ones_like(x_ray)], axis=1)


def to_pixel_coordinates(coords: np.ndarray, normalized: bool, size: tuple[int, int]) -> np.ndarray:
    """Continuous OpenCV pixel coordinates (pixel ``i`` centred at ``i``) of points in an image of ``size``.

    A normalized ``x`` measures from the left edge of the image, so it maps to ``x * W - 0.5``.
    """
    if not normalized:
        return np.array(coords, dtype=np.float64)
    return coords * np.asarray(size, dtype=np.float64) - 0.5


def depth_cells(pixels: np.ndarray, image_size: tuple[int, int], depth_shape: tuple[int, int]) -> np.ndarray:
    """``(column, row)`` of the depth pixel containing each image point (may lie outside the depth map).

    The depth map covers the image's field of view at its own resolution, so positions scale by the size ratio.
    """
    scale = np.array([depth_shape[1] / image_size[0], depth_shape[0] / image_size[1]])
    with np.errstate(invalid="ignore"):
        return np.floor((pixels + 0.5) * scale)


def read_depth(
    depth_map: np.ndarray, pixels: np.ndarray, image_size: tuple[int, int]
) -> tuple[np.ndarray, list[str | None]]:
    """Raw depth at the depth pixel containing each image point, and why unusable readings are unusable.

    The depth map may have another resolution than the image the pixels refer to, as long as it covers the same
    field of view (depth aligned to colour, then resized): a point's position is scaled from ``image_size`` to the
    depth map's size.

    Args:
        depth_map (`np.ndarray` of shape `(H_d, W_d)`): depth, any unit.
        pixels (`np.ndarray` of shape `(N, 2)`): continuous OpenCV pixel coordinates in the image.
        image_size (`tuple[int, int]`): ``(width, height)`` of the image ``pixels`` refer to.

    Returns:
        `tuple[np.ndarray, list[str | None]]`: the raw readings (NaN where unusable) and, per point, ``None`` or
        one of ``"outside image"``, ``"non-finite depth"``, ``"zero depth"``, ``"negative depth"``.
    """
    height, width = depth_map.shape
    cells = depth_cells(pixels, image_size, depth_map.shape)
    raw = np.full(len(pixels), np.nan)
    reasons: list[str | None] = []
    for index, (column, row) in enumerate(cells):
        if not (np.isfinite(column) and np.isfinite(row)) or not (0 <= column < width and 0 <= row < height):
            reasons.append("outside image")
            continue
        value = depth_map[int(row), int(column)]
        if not np.isfinite(value):
            reasons.append("non-finite depth")
        elif value == 0:
            reasons.append("zero depth")
        elif value < 0:
            reasons.append("negative depth")
        else:
            raw[index] = value
            reasons.append(None)
    return raw, reasons


def as_point_array(points: Any, normalized: bool | None) -> tuple[np.ndarray, bool]:
    """Points as an ``(N, 2)`` float array and the resolved ``normalized`` flag.

    Callers must say whether plain numbers are 0-1 fractions or pixels: guessing from the values (the original
    demo's rule "a float <= 1 is normalized") silently misreads pixel coordinates such as ``(1.0, 0.5)``.

    Accepts ``(x, y)`` pairs, an ``(N, 2)`` array, parsed point objects with ``.x``/``.y`` (and optionally
    ``.normalized``, used only when the caller did not say), or the pipeline's point records
    (``{"x": 0.461, "y": 0.527, "x_px": 295, ...}``, whose ``x``/``y`` are normalized).
    """
    if isinstance(points, (str, bytes)):  # an answer's text: parse it first (`parse_points`)
        raise TypeError(f"points must be point records, (x, y) pairs or an (N, 2) array, got {type(points).__name__}")
    items = points if isinstance(points, np.ndarray) else list(points)
    if len(items) == 0:  # an answer without points: nothing to misread, whatever the coordinates would have been
        return np.zeros((0, 2), dtype=np.float64), True if normalized is None else normalized
    if isinstance(items[0], Mapping):
        if normalized is False:
            raise ValueError("pipeline point records hold normalized x, y; leave normalized out or pass True")
        rows = []
        for index, record in enumerate(items):
            if not isinstance(record, Mapping) or "x" not in record or "y" not in record:
                raise ValueError(f"point record {index} has no 'x' and 'y' (got {record!r})")
            rows.append((float(record["x"]), float(record["y"])))
        return np.array(rows, dtype=np.float64).reshape(-1, 2), True
    if not hasattr(items[0], "x"):
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
        points (sequence of `(x, y)`, `np.ndarray` of shape `(N, 2)`, parsed points with `.x`/`.y`, or the pipeline's point records):
            The points, in the coordinates of the ORIGINAL image the intrinsics belong to.
        depth (`np.ndarray` of shape `(H, W)` or `PIL.Image.Image`):
            z-depth image aligned with the colour image (16-bit PNG depth in millimetres is common).
        intrinsics (`np.ndarray` of shape `(3, 3)`, its 9 numbers row-major, or `(fx, fy, cx, cy)`):
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
    depth_map = depth_array(depth)
    height, width = depth_map.shape
    if image_size is not None and tuple(image_size) != (width, height):
        raise ValueError(
            f"depth map is {width}x{height} (width x height) but the image is {image_size[0]}x{image_size[1]}; "
            "align/resize the depth to the colour image (and its intrinsics) first"
        )
    camera = intrinsics_to_tuple(intrinsics)
    coords, normalized = as_point_array(points, normalized)
    pixels = to_pixel_coordinates(coords, normalized, (width, height))
    raw, reasons = read_depth(depth_map, pixels, (width, height))
    valid = np.array([reason is None for reason in reasons], dtype=bool)
    xyz = np.full((len(coords), 3), np.nan)
    xyz[valid] = pixel_rays(pixels[valid], camera) * (raw[valid] * depth_scale)[:, None]
    return Deprojection(xyz=xyz, valid=valid, pixels=pixels, reasons=tuple(reasons))
