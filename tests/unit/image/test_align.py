import cv2
import numpy as np
import pytest

from cartoon.image.align import (
    apply_transform,
    elliptical_mask,
    invert_transform,
    paste_back,
    similarity_transform,
    warp_crop,
)
from cartoon.constants import CROP_SIZE, REFERENCE_POINTS_5
from tests import photos


def test_similarity_recovers_a_hand_made_transform():
    # Rotate 90 degrees, scale 2, shift (10, -5): (x, y) -> (-2y + 10, 2x - 5).
    src = np.array([[0, 0], [1, 0], [0, 1], [3, 4]], float)
    dst = np.array([[10, -5], [10, -3], [8, -5], [2, 1]], float)
    expected = np.array([[0, -2, 10], [2, 0, -5]], float)
    np.testing.assert_allclose(similarity_transform(src, dst), expected, atol=1e-9)


def test_similarity_never_reflects():
    src = np.array([[0, 0], [1, 0], [0, 1]], float)
    mirrored = src * [-1, 1]
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_inverse_undoes_the_transform():
    matrix = similarity_transform(np.array([[0, 0], [5, 1], [2, 7]]), np.array([[3, 3], [9, 2], [1, 12]]))
    points = np.array([[1.5, 2.5], [100, -40]])
    np.testing.assert_allclose(apply_transform(invert_transform(matrix), apply_transform(matrix, points)), points)


def eye_centres_of_5_point_layout(points: np.ndarray) -> np.ndarray:
    """Image-left and image-right eye centres from dlib's 5-point order."""
    return np.array([points[2:4].mean(0), points[0:2].mean(0)])


@pytest.mark.parametrize("photo", [photos.astronaut, photos.grace_hopper])
def test_aligned_crop_puts_eye_centres_within_3px_of_reference(photo, detector5):
    (face,) = detector5.detect(photo())
    matrix = similarity_transform(face.points, REFERENCE_POINTS_5)
    crop = warp_crop(photo(), matrix)
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    # Landmarks found again on the crop itself, so the warp is checked, not only the fit.
    (found,) = detector5.detect(crop)
    eyes = eye_centres_of_5_point_layout(found.landmarks)
    assert np.abs(eyes - eye_centres_of_5_point_layout(REFERENCE_POINTS_5)).max() < 3.0


def test_warp_then_inverse_warp_round_trip(astronaut, detector5):
    """Two bilinear resamplings of the astronaut's face (enlarged about 2x in the crop).

    Measured: mean 1.8 levels of 255 inside the face box; bound 2.5.
    """
    (face,) = detector5.detect(astronaut)
    matrix = similarity_transform(face.points, REFERENCE_POINTS_5)
    crop = warp_crop(astronaut, matrix)
    canvas = np.zeros(astronaut.shape, np.float32)
    paste_back(canvas, crop, matrix, np.ones((CROP_SIZE, CROP_SIZE), np.float32))
    x0, y0, x1, y1 = (int(v) for v in face.box)
    error = np.abs(canvas[y0:y1, x0:x1] - astronaut[y0:y1, x0:x1]).mean()
    assert error < 2.5


def test_mask_hand_computed_values():
    size = 101
    mask = elliptical_mask(size, axes=(0.4, 0.4), feather=0.2)
    centre = 50
    assert mask[centre, centre] == 1.0 and mask[0, 0] == 0.0
    # On the ellipse (radius 0.4 * 101 = 40.4 px from the centre) the ramp is half way.
    assert mask[centre, centre + 40] == pytest.approx(0.5, abs=0.05)
    # The ramp is 0.2 * 101 = 20.2 px wide, from 30.3 to 50.5 px: 1 at 30 px,
    # (50.5 - 50) / 20.2 = 0.025 at 50 px.
    assert mask[centre, centre + 30] == 1.0
    assert mask[centre, 0] == pytest.approx(0.5 / 20.2, abs=1e-4)
    assert (np.diff(mask[centre, centre:]) <= 0).all()


def test_mask_is_taller_than_wide():
    mask = elliptical_mask()
    half = CROP_SIZE // 2
    assert mask[:, half].sum() > mask[half, :].sum()


def test_paste_back_with_identity_and_full_mask_copies_the_crop():
    canvas = np.zeros((40, 40, 3), np.float32)
    crop = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    shift = np.array([[1, 0, -10], [0, 1, -20]], float)  # canvas (10, 20) -> crop (0, 0)
    paste_back(canvas, crop, shift, np.ones((16, 16), np.float32))
    np.testing.assert_allclose(canvas[20:35, 10:25], crop[:15, :15], atol=1e-3)
    assert canvas[:20].sum() == 0 and canvas[:, :10].sum() == 0


def test_paste_back_outside_the_canvas_is_a_no_op():
    canvas = np.full((10, 10, 3), 7, np.float32)
    far_away = np.array([[1, 0, 500], [0, 1, 500]], float)
    paste_back(canvas, np.zeros((8, 8, 3), np.uint8), far_away, np.ones((8, 8), np.float32))
    assert (canvas == 7).all()


def test_paste_back_blends_by_mask():
    canvas = np.full((8, 8, 3), 100, np.float32)
    identity = np.array([[1, 0, 0], [0, 1, 0]], float)
    paste_back(canvas, np.full((8, 8, 3), 200, np.uint8), identity, np.full((8, 8), 0.25, np.float32))
    np.testing.assert_allclose(canvas[2:6, 2:6], 125.0, atol=1e-3)


def bilinear_reference(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Crop pixel (x, y) is the photo bilinearly sampled at matrix^-1 (x, y), edges replicated."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    px = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    py = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    height, width = rgb.shape[:2]
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = (px - x0)[..., None], (py - y0)[..., None]

    def at(y, x):
        return rgb[np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)].astype(np.float64)

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


@pytest.mark.parametrize("centre, angle, scale", [
    ((200, 150), 30, 0.5),   # inside the photo, rotated, shrunk 2x into the crop
    ((20, 490), -75, 0.25),  # the bottom-left corner: the crop reaches outside the photo
])
def test_warp_samples_the_photo_where_the_matrix_says(astronaut, centre, angle, scale):
    """Against an independent float64 bilinear sampler: the crop is that, rounded.

    Measured: mean 0.24 and 0.18 levels, max 0.5 (the uint8 rounding).
    """
    size = 96
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += np.array([size / 2, size / 2]) - centre  # centre of the crop
    crop = warp_crop(astronaut, matrix, size)
    difference = np.abs(crop - bilinear_reference(astronaut, matrix, size))
    assert crop.shape == (size, size, 3)
    assert difference.mean() < 0.3 and difference.max() <= 1
