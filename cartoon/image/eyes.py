"""Eyes that keep their white and iris on a stylized head crop.

At the head crop's scale an eye is some 30 px wide, and its dark parts (lashes, iris,
pupil, the lid's shadow) sit within a few px of each other: the styles' outlines and
spotted blacks (``cartoon.image.finish``), and the head model that learnt from them,
merge them into one black blob. Every head crop is aligned onto the reference frame,
so its eyes lie at the reference eye centres; there, wherever the drawing is darker
than the photo, the photo's own eye (lightly smoothed, its colour brought to the
drawing's tone and saturation) is blended back, so the white and the iris come back while the
lashes and the pupil, dark in the photo too, stay ink.
"""

from functools import lru_cache

import cv2
import numpy as np

from cartoon.constants import CROP_SIZE, REFERENCE_POINTS_68

# The eyes' centres in the aligned crop, and the half-axes (px) of the ellipse around
# each that is protected: the eye, its lids and lashes, with room for the few px by
# which a three-quarter face's far eye lands off the reference point.
EYE_CENTRES = REFERENCE_POINTS_68[:2]
EYE_AXES = (20.0, 12.0)
EYE_FEATHER = 5.0  # px over which the protection fades out at the ellipse's edge
# Levels of L* (0..100) by which the drawing must be darker than the photo before
# the photo is blended back, and the span over which the blend reaches full weight.
DARKER_BY, FULL_AFTER = 6.0, 14.0
SMOOTHING = 0.8  # sigma (px) of the Gaussian that takes the photo's skin texture off
# The face's middle in the aligned crop (cheeks, nose, eyes), where the drawing's tone is
# compared with the photo's, and the range of the lightness gain that follows from it.
FACE_ROWS, FACE_COLUMNS = slice(110, 230), slice(95, 195)
TONE_GAIN = (0.8, 2.0)


@lru_cache(maxsize=4)
def eye_mask(size: int = CROP_SIZE) -> np.ndarray:
    """(size, size) float32: 1 inside both eye ellipses, a ramp of ``EYE_FEATHER`` px at their edge."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    scale = size / CROP_SIZE
    mask = np.zeros((size, size), np.float32)
    for cx, cy in EYE_CENTRES * scale:
        semi_x, semi_y = EYE_AXES[0] * scale, EYE_AXES[1] * scale
        radius = np.sqrt(((xs - cx) / semi_x) ** 2 + ((ys - cy) / semi_y) ** 2)
        ramp = EYE_FEATHER * scale / min(semi_x, semi_y)
        mask = np.maximum(mask, np.clip((1.0 + ramp - radius) / ramp, 0.0, 1.0))
    mask.flags.writeable = False
    return mask


def _box(size: int) -> tuple[slice, slice]:
    """The rows and columns that hold both eye ellipses and their ramps."""
    scale = size / CROP_SIZE
    reach_x, reach_y = (EYE_AXES[0] + EYE_FEATHER + 2) * scale, (EYE_AXES[1] + EYE_FEATHER + 2) * scale
    x0 = int(np.floor(EYE_CENTRES[:, 0].min() * scale - reach_x))
    x1 = int(np.ceil(EYE_CENTRES[:, 0].max() * scale + reach_x))
    y0 = int(np.floor(EYE_CENTRES[:, 1].min() * scale - reach_y))
    y1 = int(np.ceil(EYE_CENTRES[:, 1].max() * scale + reach_y))
    return slice(max(y0, 0), min(y1, size)), slice(max(x0, 0), min(x1, size))


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def keep_eyes(photo: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """The drawn head crop with the photo's eyes blended back where the drawing inked them over.

    Args:
        photo: (S, S, 3) uint8, the aligned photo crop the head model was given.
        drawn: (S, S, 3) uint8, its stylized (and finished) crop.

    Returns:
        (S, S, 3) uint8, a new array; equal to ``drawn`` outside the eye ellipses.
    """
    size = drawn.shape[0]
    rows, cols = _box(size)
    photo_lab = _lab(cv2.GaussianBlur(photo, (0, 0), SMOOTHING * size / CROP_SIZE))
    drawn_lab = _lab(drawn)
    # The drawing's lightness and saturation against the photo's over the face: the eyes
    # of a dark photo drawn brighter are brightened alike, a grey style (sketch) gets
    # grey eyes, a colour style the photo's iris colour.
    face = photo_lab[FACE_ROWS, FACE_COLUMNS], drawn_lab[FACE_ROWS, FACE_COLUMNS]
    chroma = lambda lab: np.median(np.hypot(lab[..., 1], lab[..., 2]))  # noqa: E731
    saturation = np.clip(chroma(face[1]) / max(chroma(face[0]), 1e-3), 0.0, 1.0)
    gain = np.clip(np.median(face[1][..., 0]) / max(np.median(face[0][..., 0]), 1.0), *TONE_GAIN)
    patch_photo, patch_drawn = photo_lab[rows, cols].copy(), drawn_lab[rows, cols]
    patch_photo[..., 0] = np.minimum(patch_photo[..., 0] * np.float32(gain), 100.0)
    patch_photo[..., 1:] *= np.float32(saturation)
    weight = eye_mask(size)[rows, cols] * np.clip(
        (patch_photo[..., 0] - patch_drawn[..., 0] - DARKER_BY) / FULL_AFTER, 0.0, 1.0)
    blended = patch_drawn + weight[..., None] * (patch_photo - patch_drawn)
    out = drawn.copy()
    rgb = cv2.cvtColor(blended.astype(np.float32), cv2.COLOR_LAB2RGB)
    out[rows, cols] = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def keep_eyes_batch(photos: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """``keep_eyes`` over a (B, S, S, 3) batch of aligned head crops."""
    return np.stack([keep_eyes(p, d) for p, d in zip(photos, drawn)]) if len(drawn) else drawn
