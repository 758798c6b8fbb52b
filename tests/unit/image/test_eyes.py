"""Eyes keep their white and iris: the ink of the toon and comic finishes no longer fills them."""

import cv2
import numpy as np
import pytest

from cartoon.constants import CROP_SIZE
from cartoon.image.eyes import EYE_CENTRES, eye_mask, keep_eyes
from cartoon.image.pipeline import Options, Pipeline
from cartoon.image.styles import StyleRegistry
from tests import photos

INK = 20.0  # L* under which a pixel is ink
# Half-axes (px) of each eye's core in the aligned crop: the opening between the lids.
CORE = (14.0, 7.0)


@pytest.fixture(scope="module")
def shipped():
    return Pipeline(StyleRegistry.from_directory())


def ink_shares(crop: np.ndarray) -> list[float]:
    """Per eye, the share of its core that is ink."""
    lightness = cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[..., 0]
    ys, xs = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE]
    return [float((lightness[((xs - cx) / CORE[0]) ** 2 + ((ys - cy) / CORE[1]) ** 2 <= 1] < INK).mean())
            for cx, cy in EYE_CENTRES]


@pytest.mark.parametrize("style", ["toon", "comic"])
@pytest.mark.parametrize("photo", [photos.astronaut, photos.grace_hopper])
def test_eyes_are_not_black_blobs(shipped, style, photo):
    """At most 15 points more of each eye's core is ink than in the photo.

    Measured: the astronaut's eyes were 63-83 % ink in toon and comic (the photo's
    10-11 %: pupils and lashes), 6-10 % with the eyes kept; Grace Hopper's, behind
    dark glasses frames, 65-84 % (the photo's 38-39 %), 28-45 %.
    """
    heads = shipped.preparer.prepare_array(photo(), Options(style=style)).heads
    drawn = shipped.stylizer(style).run(heads, "head")
    for photo_share, drawn_share in zip(ink_shares(heads[0]), ink_shares(drawn[0])):
        assert drawn_share <= photo_share + 0.15


def test_keep_eyes_changes_nothing_outside_the_eyes_and_nothing_where_the_drawing_is_not_darker():
    photo = cv2.resize(photos.astronaut()[60:200, 150:290], (CROP_SIZE, CROP_SIZE))
    inked = photo.copy()
    inked[100:180, 60:230] = 0
    kept = keep_eyes(photo, inked)
    outside = eye_mask() == 0
    np.testing.assert_array_equal(kept[outside], inked[outside])
    assert kept[eye_mask() == 1].mean() > inked[eye_mask() == 1].mean() + 50
    lighter = np.clip(photo.astype(int) + 40, 0, 255).astype(np.uint8)
    assert np.abs(keep_eyes(photo, lighter).astype(int) - lighter).max() <= 1
