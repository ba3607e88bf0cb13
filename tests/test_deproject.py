"""Pinhole back-projection: hand-computed values, pixel conventions, invalid depth, shape checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from robopoint_hf.inference.deproject import deproject, intrinsics_to_tuple
from robopoint_hf.model.points import parse_points

FX, FY, CX, CY = 500.0, 400.0, 320.0, 240.0
K = np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])


def _depth() -> np.ndarray:
    depth = np.zeros((480, 640), dtype=np.uint16)
    depth[50, 100] = 2000  # mm, far from the principal point
    depth[240, 320] = 1500  # on the optical axis
    return depth


def test_off_centre_point_uses_z_depth_not_range():
    result = deproject([(100, 50)], _depth(), (FX, FY, CX, CY), depth_scale=0.001, normalized=False)
    # X = (100 - 320) * 2 / 500, Y = (50 - 240) * 2 / 400, Z = 2000 mm * 0.001.
    np.testing.assert_allclose(result.xyz, [[-0.88, -0.95, 2.0]], rtol=0, atol=1e-12)
    assert result.valid.tolist() == [True] and result.reasons == (None,)
    # The unit-ray bug (normalize(ray) * depth) would shorten the point to |p| = 2, i.e. z = 2 / 1.19136...
    assert math.dist((0, 0, 0), result.xyz[0]) == pytest.approx(math.sqrt(0.88**2 + 0.95**2 + 4.0))


def test_matrix_and_tuple_intrinsics_agree_and_skew_is_applied():
    points = [(100, 50), (320, 240)]
    from_tuple = deproject(points, _depth(), (FX, FY, CX, CY), 0.001, normalized=False)
    from_matrix = deproject(points, _depth(), K, 0.001, normalized=False)
    np.testing.assert_array_equal(from_tuple.xyz, from_matrix.xyz)
    np.testing.assert_allclose(from_matrix.xyz[1], [0.0, 0.0, 1.5], atol=1e-12)
    skewed = K.copy()
    skewed[0, 1] = 10.0
    # y_n = (50 - 240) / 400 = -0.475; x_n = (100 - 320 - 10 * -0.475) / 500 = -0.4305; times Z = 2.
    np.testing.assert_allclose(
        deproject([(100, 50)], _depth(), skewed, 0.001, normalized=False).xyz, [[-0.861, -0.95, 2.0]], atol=1e-12
    )
    assert intrinsics_to_tuple(skewed) == (FX, FY, CX, CY, 10.0)


def test_normalized_points_map_to_pixel_centres_of_the_original_image():
    # The centre of pixel (100, 50) is at ((100 + 0.5) / 640, (50 + 0.5) / 480) in RoboPoint's 0-1 coordinates.
    result = deproject([(100.5 / 640, 50.5 / 480)], _depth(), K, 0.001, normalized=True)
    np.testing.assert_allclose(result.pixels, [[100.0, 50.0]], atol=1e-9)
    np.testing.assert_allclose(result.xyz, [[-0.88, -0.95, 2.0]], atol=1e-9)
    # Anywhere inside that pixel reads the same depth value (the pixel that contains the point).
    inside = deproject([(100.02 / 640, 50.98 / 480)], _depth(), K, 0.001, normalized=True)
    assert inside.valid.tolist() == [True] and inside.xyz[0, 2] == 2.0


def test_parsed_answer_points_carry_their_normalization():
    answer = parse_points("[(0.157, 0.105), (0.5, 0.5)]")
    result = deproject(answer.points, _depth(), K, 0.001)  # no normalized=: the parsed points say it
    # (0.5, 0.5) is the image centre u = 319.5, v = 239.5, read from pixel (320, 240) = 1.5 m.
    np.testing.assert_allclose(result.pixels, [[0.157 * 640 - 0.5, 0.105 * 480 - 0.5], [319.5, 239.5]], atol=1e-9)
    np.testing.assert_allclose(result.xyz[1], [-0.5 * 1.5 / FX, -0.5 * 1.5 / FY, 1.5], atol=1e-12)
    assert result.xyz[0, 2] == 2.0 and result.valid.tolist() == [True, True]


def test_invalid_points_are_reported_per_point():
    depth = _depth().astype(np.float32)
    depth[10, 10] = np.nan
    depth[20, 20] = -1.0
    points = [(100, 50), (0, 0), (10, 10), (20, 20), (640, 10), (-1, 5), (639, 479)]
    result = deproject(points, depth, K, 0.001, normalized=False)
    assert result.valid.tolist() == [True, False, False, False, False, False, False]
    assert result.reasons == (
        None,
        "zero depth",
        "non-finite depth",
        "negative depth",
        "outside image",
        "outside image",
        "zero depth",
    )
    assert np.isnan(result.xyz[1:]).all() and not np.isnan(result.xyz[0]).any()
    assert deproject([(1.0, 0.5)], depth, K, normalized=True).reasons == ("outside image",)


def test_sixteen_bit_png_depth_in_millimetres(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(_depth()).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")
        result = deproject([(100, 50)], image, K, depth_scale=0.001, normalized=False)
    np.testing.assert_allclose(result.xyz, [[-0.88, -0.95, 2.0]], atol=1e-12)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"depth map is 320x240 .* image is 640x480"):
        deproject([(1, 1)], np.ones((240, 320)), K, normalized=False, image_size=(640, 480))
    with pytest.raises(ValueError, match="normalized=True"):
        deproject([(0.5, 0.5)], _depth(), K)
    with pytest.raises(ValueError, match="3x3 matrix, its 9 numbers or"):
        deproject([(1, 1)], _depth(), (FX, FY, CX), normalized=False)
    with pytest.raises(ValueError, match="fy must be a positive"):
        deproject([(1, 1)], _depth(), (FX, 0.0, CX, CY), normalized=False)
    with pytest.raises(ValueError, match="depth_scale"):
        deproject([(1, 1)], _depth(), K, depth_scale=0.0, normalized=False)
    with pytest.raises(ValueError, match="single-channel"):
        deproject([(1, 1)], np.ones((4, 4, 3)), K, normalized=False)
