"""Point drawing: visible on dark and light images, never mutates the input, explicit coordinates."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from robopoint_hf.inference.visualize import draw_points
from robopoint_hf.model.points import parse_points


def _changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    return np.any(np.asarray(before.convert("RGB")) != np.asarray(after), axis=2)


@pytest.mark.parametrize("background", [(0, 0, 0), (255, 255, 255), (230, 25, 75)])
def test_marker_is_visible_on_dark_light_and_same_colour_images(background):
    image = Image.new("RGB", (200, 150), background)
    annotated = draw_points(image, [(0.5, 0.5)], normalized=True)
    changed = _changed(image, annotated)
    assert changed[75, 100] or background == (230, 25, 75)  # the fill itself (unless it equals the background)
    assert changed[70:81, 95:106].sum() >= 20  # the outline rings change pixels even on a same-colour background
    pixels = np.asarray(annotated)[60:91, 85:116].reshape(-1, 3).tolist()
    assert [255, 255, 255] in pixels and [0, 0, 0] in pixels  # two-tone outline: contrast on any background
    assert not changed[:50].any() and not changed[:, :70].any()  # nothing drawn far from the point


def test_input_is_not_modified_and_modes_are_handled():
    for mode in ("RGB", "RGBA", "L"):
        image = Image.new(mode, (64, 48))
        before = image.tobytes()
        annotated = draw_points(image, [(10, 10)], normalized=False)
        assert image.tobytes() == before and image.mode == mode
        assert annotated.mode == "RGB" and annotated.size == (64, 48) and annotated is not image


def test_pixel_and_normalized_coordinates_draw_the_same_marker():
    image = Image.new("RGB", (200, 100), (40, 40, 40))
    by_pixel = draw_points(image, [(50, 25), (150, 80)], normalized=False)
    by_fraction = draw_points(image, [(0.25, 0.25), (0.75, 0.8)], normalized=True)
    assert by_pixel.tobytes() == by_fraction.tobytes()
    parsed = parse_points("[(0.25, 0.25), (0.75, 0.8)]")
    assert draw_points(image, parsed.points).tobytes() == by_fraction.tobytes()  # parsed points state normalization


def test_numbered_markers_add_labels_and_radius_scales_with_the_image():
    image = Image.new("RGB", (300, 200), (255, 255, 255))
    plain = draw_points(image, [(0.3, 0.5), (0.7, 0.5)], normalized=True)
    numbered = draw_points(image, [(0.3, 0.5), (0.7, 0.5)], normalized=True, numbered=True)
    assert plain.tobytes() != numbered.tobytes()
    assert _changed(image, numbered).sum() > _changed(image, plain).sum()
    small, large = Image.new("RGB", (100, 100)), Image.new("RGB", (1000, 1000))
    small_area = _changed(small, draw_points(small, [(0.5, 0.5)], normalized=True)).sum()
    large_area = _changed(large, draw_points(large, [(0.5, 0.5)], normalized=True)).sum()
    assert large_area > 10 * small_area
    explicit = _changed(small, draw_points(small, [(0.5, 0.5)], normalized=True, radius=10)).sum()
    assert explicit > 3 * small_area


def test_boxes_are_outlined_in_the_points_coordinate_system():
    image = Image.new("RGB", (100, 80), (255, 255, 255))
    parsed = parse_points("[(0.2, 0.25, 0.6, 0.75)]")
    annotated = draw_points(image, [], boxes=parsed.boxes)
    changed = _changed(image, annotated)
    assert changed[20, 40] and changed[60, 40] and changed[40, 20] and changed[40, 60 - 1]  # the four edges
    assert not changed[40, 40]  # outline only
    assert annotated.tobytes() == draw_points(image, [], boxes=[(20, 20, 60, 60)], normalized=False).tobytes()


def test_plain_points_require_explicit_normalization():
    with pytest.raises(ValueError, match="normalized=True"):
        draw_points(Image.new("RGB", (10, 10)), [(0.5, 0.5)])
