"""Classical cartoon renderers: the teachers the embedded UNet styles are distilled from.

Each renderer maps an (H, W, 3) uint8 RGB picture to an (H, W, 3) uint8 RGB picture
of the same size, with numpy and OpenCV only, and is deterministic. They are built to
be learnable by a small convolutional student: every step is local (no global
palette, no image-dependent clustering), and the hard steps of a textbook cartoon
filter (quantization, thresholded outlines) are replaced by soft, continuous ones, so a
student that is slightly off in its input never lands on the wrong side of a cliff.

Styles:

* ``toon``: cel shading. Repeated bilateral filtering flattens texture while keeping
  edges; the lightness (CIELAB L*) is snapped to a few bands by a soft staircase and
  the colour is lifted a little; dark outlines come from a difference of Gaussians
  of the flattened lightness (dark valleys and the dark side of edges: eyelids,
  pupils, the line between the lips, nostrils, hair edges), softly thresholded and
  blurred.
* ``sketch``: pencil drawing. The colour-dodge blend of the lightness with its
  blurred negative (``L / (1 - blur(1 - L))``, with a small floor added to both
  sides so dark areas stay calm) leaves white paper where the picture
  is flat and graphite strokes where it is locally darker than its surroundings; a
  little large-scale shading keeps dark areas grey, and the result is tinted like
  paper and graphite.

Heads (aligned 288x288 crops, the face about 150 px wide) and backgrounds (the whole
picture with its short side at most 720 px) get different parameters. In a head crop
skin pores and wrinkles are large enough to become outlines, so the toon head teacher
flattens harder (five wider bilateral passes, softer bands) and keeps lines only for
strong features: eyes, brows, nostrils, the lips, the face and hair contour. On a
whole picture the same features are a few pixels wide, so the toon background teacher
draws wider, more eager outlines (folds, stripes, silhouettes) and harder, more
saturated bands to read as a cartoon at that scale; whole pictures also hold finer
texture (foliage, fabric), so the sketch background teacher pre-smooths more and draws
with a wider dodge blur.
"""

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

Renderer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ToonParams:
    """Parameters of the ``toon`` renderer (lightness L* in 0..100)."""

    smooth_passes: int = 3  # bilateral passes; each flattens texture further
    smooth_diameter: int = 9  # bilateral window (px)
    smooth_color: float = 24.0  # bilateral range sigma (uint8 levels): edges above it survive
    smooth_space: float = 5.0  # bilateral spatial sigma (px)
    band: float = 12.0  # L* height of one shading band
    band_sharpness: float = 5.0  # slope of the soft staircase; large = hard bands
    chroma_gain: float = 1.2  # a*, b* multiplier: cartoons are more saturated
    line_sigma: float = 1.2  # inner Gaussian of the outline DoG (px)
    line_ratio: float = 2.0  # outer sigma / inner sigma
    line_low: float = 1.0  # DoG depth (L*) where an outline starts
    line_high: float = 5.0  # DoG depth (L*) where an outline is fully dark
    line_darkness: float = 0.85  # how much a full outline darkens (0..1)
    line_blur: float = 0.8  # Gaussian softening of the outline mask (px)


@dataclass(frozen=True)
class SketchParams:
    """Parameters of the ``sketch`` renderer (values in 0..1)."""

    presmooth_diameter: int = 7  # bilateral window that removes sensor noise before dodging
    presmooth_color: float = 20.0  # bilateral range sigma (uint8 levels)
    presmooth_space: float = 3.0  # bilateral spatial sigma (px)
    dodge_sigma: float = 4.0  # blur of the negative: the stroke width scale (px)
    dodge_floor: float = 0.08  # added to both sides of the dodge ratio: calms dark areas
    stroke_gamma: float = 2.6  # >1 darkens the strokes left by the dodge
    shade_sigma: float = 12.0  # blur of the lightness used for broad shading (px)
    shade_amount: float = 0.5  # how much the broad shading darkens dark areas (0..1)
    stroke_blur: float = 0.7  # Gaussian softening of the final drawing (px)
    paper: tuple[float, float, float] = (0.98, 0.96, 0.91)  # RGB of bare paper
    graphite: tuple[float, float, float] = (0.20, 0.20, 0.24)  # RGB of the darkest stroke


def _check(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 picture, got {rgb.shape} {rgb.dtype}")


def _soft_staircase(values: np.ndarray, step: float, sharpness: float) -> np.ndarray:
    """Snaps values towards multiples of ``step`` with a continuous, monotonic curve.

    Within each band the curve is a scaled tanh centred on the band's middle, which
    meets the next band exactly at the boundary, so the map has no jumps: a student
    that misjudges a value slightly is only slightly wrong.
    """
    scaled = values / step
    base = np.floor(scaled)
    ramp = np.tanh(sharpness * (scaled - base - 0.5)) / np.tanh(sharpness * 0.5)
    return (base + 0.5 + 0.5 * ramp) * step


def _smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def toon(rgb: np.ndarray, params: ToonParams = ToonParams()) -> np.ndarray:
    """Renders a cel-shaded cartoon.

    Args:
        rgb: (H, W, 3) uint8 picture.
        params: the renderer's parameters.

    Returns:
        (H, W, 3) uint8 cartoon of the same size.

    Raises:
        ValueError: if ``rgb`` is not an (H, W, 3) uint8 array.
    """
    _check(rgb)
    flat = rgb
    for _ in range(params.smooth_passes):
        flat = cv2.bilateralFilter(
            flat, params.smooth_diameter, params.smooth_color, params.smooth_space
        )
    lab = cv2.cvtColor(flat.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # L* 0..100, a*, b*
    lightness = lab[..., 0]
    lab[..., 0] = _soft_staircase(lightness, params.band, params.band_sharpness)
    lab[..., 1:] *= params.chroma_gain
    shaded = np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0.0, 1.0)

    inner = cv2.GaussianBlur(lightness, (0, 0), params.line_sigma)
    outer = cv2.GaussianBlur(lightness, (0, 0), params.line_sigma * params.line_ratio)
    # Positive where a pixel is darker than its surroundings: a drawn line goes there.
    depth = outer - inner
    lines = _smoothstep(depth, params.line_low, params.line_high)
    lines = cv2.GaussianBlur(lines, (0, 0), params.line_blur)
    out = shaded * (1.0 - params.line_darkness * lines)[..., None]
    return np.round(out * 255.0).astype(np.uint8)


def sketch(rgb: np.ndarray, params: SketchParams = SketchParams()) -> np.ndarray:
    """Renders a pencil drawing on tinted paper.

    Args:
        rgb: (H, W, 3) uint8 picture.
        params: the renderer's parameters.

    Returns:
        (H, W, 3) uint8 drawing of the same size.

    Raises:
        ValueError: if ``rgb`` is not an (H, W, 3) uint8 array.
    """
    _check(rgb)
    smooth = cv2.bilateralFilter(
        rgb, params.presmooth_diameter, params.presmooth_color, params.presmooth_space
    )
    gray = cv2.cvtColor(smooth, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    negative_blur = cv2.GaussianBlur(1.0 - gray, (0, 0), params.dodge_sigma)
    # Colour dodge: a pixel over the complement of its blurred negative, i.e. over its
    # blurred surroundings. The floor on both sides keeps the ratio from blowing up
    # sensor and JPEG noise in dark areas into speckle no student could reproduce.
    floor = params.dodge_floor
    dodge = np.clip((gray + floor) / (1.0 - negative_blur + floor), 0.0, 1.0)
    strokes = dodge**params.stroke_gamma
    broad = cv2.GaussianBlur(gray, (0, 0), params.shade_sigma)
    tone = strokes * (1.0 - params.shade_amount * (1.0 - broad))
    tone = cv2.GaussianBlur(tone, (0, 0), params.stroke_blur)[..., None]
    paper = np.array(params.paper, dtype=np.float32)
    graphite = np.array(params.graphite, dtype=np.float32)
    out = graphite + (paper - graphite) * tone
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


TOON_HEAD = ToonParams(
    smooth_passes=5,
    smooth_color=32.0,
    smooth_space=6.0,
    band_sharpness=4.0,
    line_sigma=1.4,
    line_low=1.5,
    line_high=6.0,
    line_blur=1.0,
)
TOON_BACKGROUND = ToonParams(
    smooth_passes=4,
    smooth_color=30.0,
    band_sharpness=6.0,
    chroma_gain=1.3,
    line_sigma=1.6,
    line_low=1.0,
    line_high=5.0,
    line_blur=1.0,
)
SKETCH_HEAD = SketchParams()
SKETCH_BACKGROUND = SketchParams(dodge_sigma=5.0, presmooth_color=28.0, presmooth_space=4.0)

DESCRIPTIONS = {
    "toon": "Cel-shaded cartoon: flat colour bands and soft dark outlines",
    "sketch": "Pencil sketch: graphite strokes and light shading on warm paper",
}

# style -> kind ("head" or "background") -> renderer, the table the trainer and the
# gallery read.
TEACHERS: dict[str, dict[str, Renderer]] = {
    "toon": {
        "head": lambda rgb: toon(rgb, TOON_HEAD),
        "background": lambda rgb: toon(rgb, TOON_BACKGROUND),
    },
    "sketch": {
        "head": lambda rgb: sketch(rgb, SKETCH_HEAD),
        "background": lambda rgb: sketch(rgb, SKETCH_BACKGROUND),
    },
}


def teacher(style: str, kind: str) -> Renderer:
    """The renderer for a style and a model kind.

    Args:
        style: "toon" or "sketch".
        kind: "head" (aligned 288x288 crops) or "background" (the shrunk picture).

    Returns:
        A function from (H, W, 3) uint8 to (H, W, 3) uint8.

    Raises:
        KeyError: naming the valid choices.
    """
    if style not in TEACHERS:
        raise KeyError(f"unknown style {style!r}; valid: {', '.join(sorted(TEACHERS))}")
    if kind not in TEACHERS[style]:
        raise KeyError(f"unknown kind {kind!r}; valid: head, background")
    return TEACHERS[style][kind]
