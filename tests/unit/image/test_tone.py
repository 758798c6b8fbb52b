"""Tone from the photo: a darker copy draws the same cartoon, dark detail stays apart, a
backlit face is exposed for the face, and a video's exposure holds within a shot."""

import cv2
import numpy as np
import pytest

from cartoon.image import codec, tone
from cartoon.image.background import shrink
from cartoon.image.pipeline import Options, Pipeline, PipelineSettings
from cartoon.image.styles import StyleRegistry
from tests import photos

DARK_GAIN = 0.2  # linear light: 2.3 stops, the dark room


def to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 to linear light, by the sRGB standard's formula (IEC 61966-2-1)."""
    level = rgb.astype(np.float64) / 255.0
    return np.where(level <= 0.04045, level / 12.92, ((level + 0.055) / 1.055) ** 2.4)


def darker(rgb: np.ndarray, gain: float = DARK_GAIN) -> np.ndarray:
    """The photo as a camera would have taken it with ``gain`` times the light."""
    linear = np.clip(to_linear(rgb) * gain, 0.0, 1.0)
    level = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.round(level * 255.0).astype(np.uint8)


def lightness(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[..., 0]


def edges(rgb: np.ndarray) -> np.ndarray:
    """Canny of L* after a light smoothing, as issue 26's exposure F1 reads a cartoon."""
    l8 = np.clip(lightness(rgb) * 2.55 + 0.5, 0, 255).astype(np.uint8)
    return cv2.Canny(cv2.GaussianBlur(l8, (0, 0), 1.0), 40, 100) > 0


def edge_f1(a: np.ndarray, b: np.ndarray, radius: int = 2) -> float:
    side = 2 * radius + 1
    near_a, near_b = (cv2.dilate(m.astype(np.uint8), np.ones((side, side), np.uint8)) > 0 for m in (a, b))
    precision, recall = near_b[a].mean(), near_a[b].mean()
    return float(2 * precision * recall / (precision + recall))


@pytest.fixture(scope="module")
def shipped():
    return Pipeline(StyleRegistry.from_directory(), PipelineSettings(device="cpu"))


def cartoon(pipeline: Pipeline, rgb: np.ndarray, style: str) -> np.ndarray:
    return codec.decode(pipeline(rgb, Options(style=style)).data).rgb


@pytest.mark.parametrize("style", ["toon", "comic"])
def test_a_portrait_two_stops_darker_draws_nearly_the_same_cartoon(shipped, style):
    """Issue 26's exposure F1 (Canny of L* matched within 2 px) on the astronaut.

    Measured: toon 0.99 and comic 0.96 with the photo's tone normalised; 0.73 and 0.68
    without (the darker copy's suit, hair and face sink into the lowest bands).
    """
    rgb = photos.astronaut()
    f1 = edge_f1(edges(cartoon(shipped, rgb, style)), edges(cartoon(shipped, darker(rgb), style)))
    assert f1 >= 0.9, f1


def test_a_darker_copy_is_re_exposed_to_the_photos_own_tones():
    """Exposure is a shift in log luminance, so the darker copy's map is the photo's shifted."""
    rgb = shrink(photos.astronaut(), 320)
    box = [(130.0, 50.0, 210.0, 130.0)]
    photo, dark = tone.normalise_tone(rgb, box), tone.normalise_tone(darker(rgb), box)
    difference = np.abs(lightness(photo) - lightness(dark))
    # The darker copy lost its darkest levels to 8-bit rounding: only those may differ.
    assert np.median(difference) < 1.0 and np.percentile(difference, 95) < 4.0, np.percentile(difference, [50, 95])
    assert np.median(np.abs(lightness(dark) - lightness(darker(rgb)))) > 15.0  # it was re-exposed


def test_a_backlit_face_is_exposed_for_the_face():
    """A face 3 stops under a bright ground comes up to a face's lightness; the ground stays below white."""
    rgb = photos.grace_hopper()
    box = (161.0, 137.0, 376.0, 352.0)  # the detector's box on the photo
    linear = to_linear(rgb)
    ground = np.ones(rgb.shape[:2], bool)
    ground[60:, 40:472] = False  # all but the top rows and the sides: the sky-lit ground
    lit = np.where(ground[..., None], np.clip(linear * 1.5 + 0.45, 0, 1), linear / 8.0)
    backlit = np.round(np.where(lit <= 0.0031308, lit * 12.92, 1.055 * lit ** (1 / 2.4) - 0.055) * 255).astype(np.uint8)
    face = (slice(190, 300), slice(215, 320))
    normalised = tone.normalise_tone(backlit, [box])
    assert np.median(lightness(backlit)[face]) < 35.0
    assert np.median(lightness(normalised)[face]) > 55.0
    assert np.median(lightness(normalised)[ground]) < 97.0


# Measured on the darker astronaut: toon 0.86 and comic 0.54 with the tone normalised,
# 0.46 and 0.17 without.
DARK_STRUCTURE = {"toon": 0.7, "comic": 0.45}


@pytest.mark.parametrize("style", DARK_STRUCTURE)
def test_dark_detail_stays_apart_in_a_dark_photo(shipped, style):
    """Issue 26's dark structure on the darker astronaut: the share of the photo's edges in
    its darkest 30 % (Canny of CLAHE-equalised L*) that the cartoon keeps within 2 px."""
    rgb = darker(photos.astronaut())
    clahe = cv2.createCLAHE(2.0, (8, 8))

    def equalised_edges(picture: np.ndarray) -> np.ndarray:
        l8 = np.clip(lightness(picture) * 2.55 + 0.5, 0, 255).astype(np.uint8)
        return cv2.Canny(cv2.GaussianBlur(clahe.apply(l8), (0, 0), 1.0), 40, 100) > 0

    l_photo = lightness(rgb)
    wanted = equalised_edges(rgb) & (l_photo <= np.quantile(l_photo, 0.3))
    drawn = cv2.dilate(equalised_edges(cartoon(shipped, rgb, style)).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert drawn[wanted].mean() >= DARK_STRUCTURE[style], drawn[wanted].mean()


def test_a_style_without_tone_gets_the_photo_as_it_is(shipped):
    """An imported style (DCT-Net's tf1 path) must stay exact: its pieces are the photo's own."""
    rgb = darker(photos.astronaut())
    toned = shipped.preparer.prepare_array(rgb, Options(style="toon"))
    plain = shipped.preparer.prepare_array(rgb, Options(style="sketch"))
    assert StyleRegistry.from_directory().get("sketch").tone is None
    assert toned.timings["tone"] > 0 and "tone" not in plain.timings
    assert plain.heads.mean() < toned.heads.mean() - 20


def test_a_videos_exposure_holds_within_a_shot_and_starts_afresh_at_a_cut():
    rgb = shrink(photos.astronaut(), 256)
    smoother = tone.ExposureSmoother()
    first = smoother.update(rgb, [], cut=True)
    # A flash of three frames 2 stops darker moves the exposure by well under a stop.
    flashes = [smoother.update(darker(rgb, 0.25), [], cut=False) for _ in range(3)]
    assert 0 < flashes[-1] - first < 1.0
    measured = tone.measure_exposure(darker(rgb, 0.25), [])
    assert abs(measured - first - 2.0) < 0.3
    assert smoother.update(darker(rgb, 0.25), [], cut=True) == pytest.approx(measured)


def test_lifted_shadows_lose_their_noise_and_keep_their_edges():
    """A dark noisy patch lifted by the tone step comes out smoother than a plain gain would
    make it, and the step between two dark cloths stays a step."""
    rng = np.random.default_rng(0)
    dark = np.full((64, 128, 3), 12.0)
    dark[:, 64:] = 28.0
    # Noise in lightness, as a sensor's and JPEG's is (the same on the three channels).
    noisy = np.clip(dark + rng.normal(0, 2.0, dark.shape[:2])[..., None], 0, 255).astype(np.uint8)
    gain = np.full(noisy.shape[:2], 2.5, np.float32)  # stops
    lifted = tone._gained(noisy, gain, exposure=0.0)
    factor = 2.0 ** 2.5
    plain = np.clip(np.round(255 * (np.clip(to_linear(noisy) * factor, 0, 1) ** (1 / 2.4) * 1.055 - 0.055)), 0, 255)
    assert lifted[:, 8:56].std() < 0.5 * plain[:, 8:56].std()
    step = lifted[:, 72:120].mean() - lifted[:, 8:56].mean()
    assert step > 0.9 * (plain[:, 72:120].mean() - plain[:, 8:56].mean())
