"""Similarity alignment onto the reference frame, its inverse, and paste-back."""

from functools import lru_cache

import cv2
import numpy as np

from cartoon.constants import CROP_SIZE, MASK_AXES, MASK_FEATHER, REFERENCE_POINTS_68


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst.

    Umeyama's closed form without reflection.

    Args:
        src: (N, 2) points.
        dst: (N, 2) points, N >= 2.

    Returns:
        (2, 3) float64 matrix M with dst ~= M @ [x, y, 1].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / src_c.var(axis=0).sum()
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Maps (N, 2) points through a (2, 3) affine matrix."""
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    """The (2, 3) inverse of a (2, 3) affine matrix."""
    return cv2.invertAffineTransform(matrix.astype(np.float64))


def warp_crop(rgb: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Cuts the aligned (size, size, 3) crop; outside the image the border is replicated."""
    return cv2.warpAffine(
        rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


@lru_cache(maxsize=8)
def elliptical_mask(
    size: int = CROP_SIZE, axes: tuple[float, float] = MASK_AXES, feather: float = MASK_FEATHER
) -> np.ndarray:
    """A (size, size) float32 mask: 1 inside the ellipse, a linear ramp across its edge.

    The ramp is ``feather * size`` px wide, centred on the ellipse, in the ellipse's
    normalised radius so the edge is equally soft all round. Every image pastes with
    the same mask, so it is built once and returned read-only.
    """
    centre = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    semi_x, semi_y = axes[0] * size, axes[1] * size
    radius = np.sqrt(((xs - centre) / semi_x) ** 2 + ((ys - centre) / semi_y) ** 2)
    half_ramp = feather * size / 2.0 / min(semi_x, semi_y)
    mask = np.clip((1.0 + half_ramp - radius) / (2.0 * half_ramp), 0.0, 1.0).astype(np.float32)
    mask.flags.writeable = False
    return mask


@lru_cache(maxsize=8)
def face_interior_mask(size: int = CROP_SIZE) -> np.ndarray:
    """A (size, size) float32 mask of the aligned crop's face: 1 over brows, eyes, nose,
    mouth and cheeks, ramping to 0 a tenth of the crop outside them.

    An ellipse around the reference points (eye centres, nose tip, mouth corners of
    ``REFERENCE_POINTS_68``): centred between the eyes and the mouth, 1.1 eye distances
    wide and 1.35 high on each side, so it reaches the brows and the chin. Read-only.
    """
    reference = REFERENCE_POINTS_68 * (size / CROP_SIZE)
    eyes, mouth = reference[:2].mean(axis=0), reference[3:].mean(axis=0)
    eye_distance = np.linalg.norm(reference[1] - reference[0])
    centre = (eyes + mouth) / 2.0
    semi_x, semi_y = 1.1 * eye_distance, 1.35 * eye_distance
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    radius = np.sqrt(((xs - centre[0]) / semi_x) ** 2 + ((ys - centre[1]) / semi_y) ** 2)
    ramp = 0.1 * size / min(semi_x, semi_y)
    mask = np.clip((1.0 + ramp - radius) / ramp, 0.0, 1.0).astype(np.float32)
    mask.flags.writeable = False
    return mask


def paste_back(
    canvas: np.ndarray, crop: np.ndarray, matrix: np.ndarray, mask: np.ndarray
) -> None:
    """Blends a crop back into the canvas in place through the inverse of ``matrix``.

    Only the bounding box of the crop's footprint is warped, so the cost does not
    grow with the canvas.

    Args:
        canvas: (H, W, 3) float32 or uint8, modified in place (uint8 rounds the blend).
        crop: (S, S, 3) the stylized aligned crop (any numeric dtype).
        matrix: (2, 3) the transform that cut the crop from canvas coordinates.
        mask: (S, S) float32 blend weights in [0, 1].
    """
    height, width = canvas.shape[:2]
    size = crop.shape[0]
    inverse = invert_transform(matrix)
    corners = apply_transform(inverse, np.array([[0, 0], [size, 0], [0, size], [size, size]]))
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    roi = (x1 - x0, y1 - y0)
    # Premultiplied: the crop is warped already weighted by its mask. Warping the bare
    # crop would interpolate its edge pixels with the zeros outside it, and wherever
    # the mask is not yet 0 there that black shows as a dark line along the crop's edge.
    premultiplied = crop.astype(np.float32) * mask[..., None]
    warped = cv2.warpAffine(premultiplied, shifted, roi, flags=cv2.INTER_LINEAR)
    weight = cv2.warpAffine(mask, shifted, roi, flags=cv2.INTER_LINEAR)[..., None]
    region = canvas[y0:y1, x0:x1]
    blended = region * (1.0 - weight) + warped
    if canvas.dtype == np.uint8:
        region[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    else:
        region[...] = blended
