"""Classical cartoon renderers: the teachers the embedded UNet styles are distilled from.

Each renderer maps an (H, W, 3) uint8 RGB picture to an (H, W, 3) uint8 RGB picture
of the same size, with numpy and OpenCV only, and is deterministic. They are meant to
read as cartoons on their own, so they take the hard steps of a textbook cartoon
filter: colours snapped to a fixed palette grid (flat regions, a small palette) and
thresholded outlines (crisp, dark). Every step is still local (no image-dependent
clustering), so a convolutional student can learn the mapping; the trainer weights
its loss towards the line pixels so the thresholds are learnt, not averaged away.

Styles:

* ``toon``: cel shading. Repeated bilateral filtering flattens skin and cloth while
  keeping edges; CIELAB lightness snaps to bands and the colour (a*, b*) to a coarse
  grid, and a median filter removes the speckle where a band boundary crosses a
  gradient. Dark outlines are the thresholded difference of Gaussians of the
  flattened lightness (pixels darker than their surroundings: eyelids, pupils, brows,
  nostrils, the line between the lips, hair and jaw contours, folds), with specks
  smaller than a stroke removed.
* ``comic``: ink drawing. Bold black outlines (a wider difference of Gaussians,
  thickened), the darkest areas filled solid black as an inker spots blacks, and only
  two flat, saturated tones per hue above that (shadow and light).
* ``sketch``: pencil drawing. The colour-dodge blend of the lightness with its blurred
  negative leaves white paper where the picture is flat and graphite strokes where it
  is locally darker; thresholded contour lines are drawn over it in dark graphite and
  the broad shading is strong enough that dark hair and clothes read as hatched.

The same renderer draws head crops (aligned 288x288, the face about 150 px wide) and
whole pictures (short side at most 720 px, faces of a portrait at a similar size), so
one student per style serves both passes and the pasted head agrees with the
background around it in colour and line weight.
"""

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from cartoon.image.finish import (
    COMIC_BLACK,
    COMIC_INK,
    COMIC_LIFT,
    COMIC_LINES,
    COMIC_PALETTE,
    TOON_LIFT,
    TOON_INK,
    TOON_LINES,
    TOON_PALETTE,
    LineParams,
    Palette,
    dark_lines,
    ink,
    snap,
    spotted_blacks,
)

Renderer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class FlatParams:
    """How a picture is flattened into a few colour regions (CIELAB units)."""

    palette: Palette  # the lattice the colours snap to (cartoon.image.finish)
    passes: int = 4  # bilateral passes; each flattens texture further
    diameter: int = 9  # bilateral window (px)
    sigma_color: float = 28.0  # bilateral range sigma (uint8 levels): edges above it survive
    sigma_space: float = 6.0  # bilateral spatial sigma (px)
    chroma_gain: float = 1.15  # a*, b* multiplier before snapping
    lift: float = 4.0  # L* added to every band: cartoons are bright
    median: int = 7  # median window that cleans band-boundary speckle (odd px)


def _check(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 picture, got {rgb.shape} {rgb.dtype}")


def _flatten(rgb: np.ndarray, params: FlatParams) -> tuple[np.ndarray, np.ndarray]:
    """Edge-preserving smoothing; returns the smoothed uint8 RGB and its float CIELAB."""
    flat = rgb
    for _ in range(params.passes):
        flat = cv2.bilateralFilter(flat, params.diameter, params.sigma_color, params.sigma_space)
    lab = cv2.cvtColor(flat.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    return flat, lab


def _posterize(lab: np.ndarray, params: FlatParams) -> np.ndarray:
    """Snaps L* to bands and a*, b* to a grid; returns uint8 RGB with flat regions."""
    rgb = snap(lab, params.palette, params.lift, params.chroma_gain)
    return cv2.medianBlur(rgb, params.median)


TOON_FLAT = FlatParams(TOON_PALETTE, passes=5, sigma_color=32.0, lift=TOON_LIFT)
COMIC_FLAT = FlatParams(COMIC_PALETTE, passes=5, sigma_color=36.0, chroma_gain=1.35, lift=COMIC_LIFT, median=7)
SKETCH_LINES = LineParams(sigma=1.0, threshold=3.0, min_area=12, thicken=0)


def _cel(rgb: np.ndarray, params: FlatParams) -> tuple[np.ndarray, np.ndarray]:
    """The flattened, posterized picture and its flattened lightness (L*)."""
    _check(rgb)
    _, lab = _flatten(rgb, params)
    return _posterize(lab, params), lab[..., 0]


def toon(rgb: np.ndarray) -> np.ndarray:
    """Renders a cel-shaded cartoon: flat colour bands and dark outlines.

    Args:
        rgb: (H, W, 3) uint8 picture.

    Returns:
        (H, W, 3) uint8 cartoon of the same size.

    Raises:
        ValueError: if ``rgb`` is not an (H, W, 3) uint8 array.
    """
    out, lightness = _cel(rgb, TOON_FLAT)
    # Outlines are a very dark shade of the colour under them, as inked cels are.
    return ink(out, dark_lines(lightness, TOON_LINES), TOON_INK)


def comic(rgb: np.ndarray) -> np.ndarray:
    """Renders a comic-book inking: bold black lines, spotted blacks, two flat tones.

    Args:
        rgb: (H, W, 3) uint8 picture.

    Returns:
        (H, W, 3) uint8 drawing of the same size.

    Raises:
        ValueError: if ``rgb`` is not an (H, W, 3) uint8 array.
    """
    out, lightness = _cel(rgb, COMIC_FLAT)
    return ink(out, dark_lines(lightness, COMIC_LINES) | spotted_blacks(lightness, COMIC_BLACK), COMIC_INK)


def sketch(rgb: np.ndarray) -> np.ndarray:
    """Renders a pencil drawing: dodge-blend strokes, graphite contours, strong shading.

    Args:
        rgb: (H, W, 3) uint8 picture.

    Returns:
        (H, W, 3) uint8 drawing of the same size.

    Raises:
        ValueError: if ``rgb`` is not an (H, W, 3) uint8 array.
    """
    _check(rgb)
    smooth = cv2.bilateralFilter(rgb, 7, 24.0, 3.0)
    gray = cv2.cvtColor(smooth, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    negative_blur = cv2.GaussianBlur(1.0 - gray, (0, 0), 4.0)
    # Colour dodge: a pixel over its blurred surroundings. The floor on both sides
    # keeps sensor and JPEG noise in dark areas from turning into speckle.
    floor = 0.06
    dodge = np.clip((gray + floor) / (1.0 - negative_blur + floor), 0.0, 1.0)
    strokes = dodge**3.5
    broad = cv2.GaussianBlur(gray, (0, 0), 10.0)
    tone = strokes * (1.0 - 0.65 * (1.0 - broad))
    lab_l = gray * 100.0
    contours = dark_lines(lab_l, SKETCH_LINES)
    tone[contours] = np.minimum(tone[contours], 0.22)
    tone = cv2.GaussianBlur(tone, (0, 0), 0.6)[..., None]
    paper = np.array((0.98, 0.97, 0.94), dtype=np.float32)
    graphite = np.array((0.13, 0.13, 0.16), dtype=np.float32)
    out = graphite + (paper - graphite) * tone
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


DESCRIPTIONS = {
    "toon": "Cel-shaded cartoon: flat colour bands and crisp dark outlines",
    "comic": "Comic-book ink: bold black outlines, solid blacks and two flat tones",
    "sketch": "Pencil sketch: dark graphite contours and strokes with strong shading on paper",
}

# style -> renderer, the table the trainer, the gallery and the metrics read.
TEACHERS: dict[str, Renderer] = {"toon": toon, "comic": comic, "sketch": sketch}


def teacher(style: str) -> Renderer:
    """The renderer of a style (the same for head crops and whole pictures).

    Args:
        style: "toon", "comic" or "sketch".

    Returns:
        A function from (H, W, 3) uint8 to (H, W, 3) uint8.

    Raises:
        KeyError: naming the valid choices.
    """
    if style not in TEACHERS:
        raise KeyError(f"unknown style {style!r}; valid: {', '.join(sorted(TEACHERS))}")
    return TEACHERS[style]
