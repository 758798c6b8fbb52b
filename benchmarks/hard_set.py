"""The hard set of ``benchmarks.quality``: packaged photos and synthetic variants of them.

Every photo is a file shipped by an installed package (``tools.photos``); nothing is
downloaded. The photos that need ``pip install --no-deps insightface==2.1
ultralytics==8.4.190`` are left out, with a note, when those are not installed.
The variants make the cases ordinary photos bring and the packaged portraits lack:
a dark room (linear light x0.2), backlight (a dark subject before a bright ground),
sensor noise, blur, a tilted head, a face cut by the frame, small faces in a large
picture, and group-like composites of several faces of different sizes.
"""

import importlib.metadata
from dataclasses import dataclass

import cv2
import numpy as np

from tools import photos as packaged

DARK_GAIN = 0.2  # linear-light gain of the darker copies: 2.3 stops
SEED = 26


@dataclass(frozen=True)
class Sample:
    """One picture of the set.

    Attributes:
        name: short, file-name-safe.
        rgb: (H, W, 3) uint8.
        kind: "photo" (as shipped) or the variant's name.
    """

    name: str
    rgb: np.ndarray
    kind: str


def to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 -> linear light float32 in [0, 1]."""
    c = rgb.astype(np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB uint8."""
    c = np.clip(linear, 0.0, 1.0)
    c = np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.clip(c * 255.0 + 0.5, 0, 255).astype(np.uint8)


def darker(rgb: np.ndarray, gain: float = DARK_GAIN) -> np.ndarray:
    """The photo as if exposed ``gain`` times the light (linear), as a dark room gives."""
    return to_srgb(to_linear(rgb) * gain)


def backlit(rgb: np.ndarray) -> np.ndarray:
    """A dark subject before a bright ground: the middle underexposed, the rim blown out.

    The subject (an ellipse over the picture's middle, softly edged) gets x0.12 of the
    light, the ground around it a bright sky-like ramp; glare lifts every pixel a little,
    as a lens facing the light does.
    """
    height, width = rgb.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = np.sqrt(((xs - width / 2) / (0.36 * width)) ** 2 + ((ys - height * 0.55) / (0.55 * height)) ** 2)
    ground = np.clip((radius - 0.85) / 0.3, 0.0, 1.0)[..., None]
    linear = to_linear(rgb)
    sky = np.stack([0.75 + 0.2 * (1 - ys / height), 0.85 + 0.1 * (1 - ys / height), np.full_like(ys, 0.98)], axis=2)
    lit = linear * 0.12 * (1 - ground) + (0.5 * linear + sky) * ground
    return to_srgb(lit + 0.03)


def noisy(rgb: np.ndarray, sigma: float = 14.0) -> np.ndarray:
    """Sensor noise: Gaussian, per channel, ``sigma`` levels, on a dim copy (x0.5)."""
    generator = np.random.default_rng(SEED)
    dim = darker(rgb, 0.5).astype(np.float32)
    return np.clip(dim + generator.normal(0.0, sigma, rgb.shape), 0, 255).astype(np.uint8)


def blurred(rgb: np.ndarray, sigma: float = 2.5) -> np.ndarray:
    """Out of focus (a Gaussian of ``sigma`` px)."""
    return cv2.GaussianBlur(rgb, (0, 0), sigma)


def rotated(rgb: np.ndarray, degrees: float = 28.0) -> np.ndarray:
    """A tilted head: the picture rotated about its centre, corners filled by reflection."""
    height, width = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(rgb, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def cut_by_frame(rgb: np.ndarray) -> np.ndarray:
    """The right 62 % of the upper 70 %: a face near the picture's edge."""
    height, width = rgb.shape[:2]
    return np.ascontiguousarray(rgb[: int(height * 0.7), int(width * 0.38):])


def small_in_canvas(rgb: np.ndarray, canvas_size: tuple[int, int] = (1600, 1200), scale: float = 0.45) -> np.ndarray:
    """The portrait shrunk by ``scale`` into a larger soft ground: a small face in a big photo.

    The ground is the portrait itself, enlarged and strongly blurred (a bokeh-like wash).
    """
    width, height = canvas_size
    ground = cv2.GaussianBlur(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR), (0, 0), 25)
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    y0, x0 = int(height * 0.35), int(width * 0.55)
    ground[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small[: height - y0, : width - x0]
    return ground


def group(portraits: list[np.ndarray], width: int = 1800, height: int = 1000) -> np.ndarray:
    """Several portraits side by side at different sizes, over a soft grey-blue wash.

    Head-and-shoulder tiles shrink from the left to the right (heights 1 down to 0.45 of
    the first's), as the rows of a group photo do, all scaled to fit the width.
    """
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    canvas = ((1 - ys) * np.array([150, 160, 175], np.float32) + ys * np.array([90, 95, 105], np.float32))
    canvas = np.broadcast_to(canvas, (height, width, 3)).astype(np.uint8).copy()
    gap = 15
    heights = np.linspace(1.0, 0.45, len(portraits))
    widths = np.array([p.shape[1] / p.shape[0] for p in portraits]) * heights
    unit = min(0.7 * height, (width - gap * (len(portraits) + 1)) / widths.sum())
    x = gap
    for portrait, tile_height in zip(portraits, heights * unit):
        tile_width = round(portrait.shape[1] * tile_height / portrait.shape[0])
        tile = cv2.resize(portrait, (tile_width, round(tile_height)), interpolation=cv2.INTER_AREA)
        y = height - tile.shape[0] - 10
        canvas[y:y + tile.shape[0], x:x + tile_width] = tile
        x += tile_width + gap
    return canvas


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def packaged_photos() -> dict[str, np.ndarray]:
    """The evaluation photos (``tools.photos.EVALUATION``) that are installed, by name."""
    found = {}
    for photo in packaged.EVALUATION:
        if _installed(photo.package.split("==")[0]):
            found[photo.name] = packaged.load(photo.id)
    return found


def missing_packages() -> list[str]:
    """The photo packages of ``tools.photos.EVALUATION`` that are not installed."""
    return sorted({p.package for p in packaged.EVALUATION if not _installed(p.package.split("==")[0])})


def hard_set(quick: bool = False) -> list[Sample]:
    """The photos as shipped, then the variants.

    Args:
        quick: a smaller set (two portraits, their dark copies, a backlit one, the small
            face and a group) for a run of about a minute per style.
    """
    photos = packaged_photos()
    astronaut, hopper = photos["astronaut"], photos["grace_hopper"]
    portraits = [astronaut, hopper[:, ::-1]]
    if "Tom_Hanks_54745" in photos:
        portraits.append(photos["Tom_Hanks_54745"])
    if "zidane" in photos:
        zidane = photos["zidane"]
        portraits.append(zidane[60:720, 620:1180])
    portraits += [hopper, astronaut[:, ::-1]]
    originals = ["astronaut", "grace_hopper"] if quick else list(photos)
    samples = [Sample(name, photos[name], "photo") for name in originals]
    samples += [
        Sample("astronaut_backlit", backlit(astronaut), "backlight"),
        Sample("hopper_small", small_in_canvas(hopper), "small faces"),
        Sample("group", group(portraits), "group"),
    ]
    if not quick:
        samples += [
            Sample("hopper_backlit", backlit(hopper), "backlight"),
            Sample("astronaut_noisy", noisy(astronaut), "noise"),
            Sample("hopper_blurred", blurred(hopper), "blur"),
            Sample("astronaut_rotated", rotated(astronaut), "rotation"),
            Sample("hopper_rotated", rotated(hopper, -22.0), "rotation"),
            Sample("astronaut_cut", cut_by_frame(astronaut), "crop"),
            Sample("astronaut_small", small_in_canvas(astronaut, (1800, 1200), 0.3), "small faces"),
            Sample("group_dark", darker(group(portraits[::-1])), "group, dark"),
        ]
    return samples
