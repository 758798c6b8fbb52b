"""Putting the picture back together: background, heads, strength, output size."""

import math

import cv2
import numpy as np

from cartoon.image.align import elliptical_mask, paste_back

DEFAULT_MAX_OUTPUT_PIXELS = 24_000_000


def output_size(
    height: int, width: int, max_side: int | None, max_pixels: int | None = None
) -> tuple[int, int]:
    """(height, width) of the output: the input's, capped on the long side and on the area.

    Never upscaled. The area cap bounds the memory of compose and encode: a flat 40 MP
    PNG is a few KB on the wire but 120 MB per full-size copy. A strip too thin to keep
    its aspect ratio within the cap (40000000x1) is shortened along its length.
    """
    if max_side and max(height, width) > max_side:
        scale = max_side / max(height, width)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
    if max_pixels and height * width > max_pixels:
        scale = math.sqrt(max_pixels / (height * width))
        height, width = max(1, math.floor(height * scale)), max(1, math.floor(width * scale))
        # A strip's short side stops at 1 px, so only its long side can give up the rest.
        if height * width > max_pixels:
            height, width = (height, max_pixels // height) if width >= height else (max_pixels // width, width)
    return height, width


def scale_transform(matrix: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """A crop transform for an image resized by ``scale_x`` and ``scale_y``.

    The crop stays the same: a point (x, y) of the resized image is the point
    (x / scale_x, y / scale_y) of the original, so each column of the matrix's linear
    part is divided by its axis' scale. Sizes round separately per axis, so the two
    scales differ slightly even when the aspect ratio is kept.
    """
    scaled = matrix.astype(np.float64).copy()
    scaled[:, 0] /= scale_x
    scaled[:, 1] /= scale_y
    return scaled


def resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes with area averaging when shrinking, bilinear when enlarging."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def compose(
    background: np.ndarray,
    heads: np.ndarray,
    matrices: np.ndarray,
    height: int,
    width: int,
    strength: float = 1.0,
    original: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Builds the output picture.

    Args:
        background: (h, w, 3) uint8 stylized background at any size.
        heads: (F, S, S, 3) uint8 stylized head crops, largest face first.
        matrices: (F, 2, 3) transforms that cut each crop from the output-size picture.
        height, width: output size.
        strength: 1 = all cartoon, 0 = the original.
        original: (height, width, 3) uint8, needed when strength < 1.
        mask: (S, S) float32 paste-back mask; the default feathered ellipse if None.

    Returns:
        (height, width, 3) uint8.
    """
    # One full-size uint8 picture, changed in place: heads are blended in their own
    # small float regions and the strength blend saturates in uint8, so no full-size
    # float copy is ever made (a 24 MP float32 copy is 288 MB).
    canvas = resize_to(background, height, width)
    if canvas is background:
        canvas = background.copy()
    if len(heads):
        mask = elliptical_mask(heads.shape[1]) if mask is None else mask
        # Smallest first, so where faces overlap the largest ends on top.
        for crop, matrix in reversed(list(zip(heads, matrices))):
            paste_back(canvas, crop, matrix, mask)
    if strength < 1.0:
        if original is None:
            raise ValueError("strength < 1 needs the original picture")
        cv2.addWeighted(canvas, strength, original, 1.0 - strength, 0.0, dst=canvas)
    return canvas
