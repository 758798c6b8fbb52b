"""Tone from the photo: exposure and contrast normalised from the picture itself.

The students and their finishes were taught on well-exposed photos, and a finish's
palette is a fixed CIELAB lattice: a photo 2-3 stops too dark lands in its lowest bands,
where a suit, the hair and the curtain behind them become one colour. So a style that
asks for it (``registry.json``'s ``"tone": "photo"``) sees its photo re-exposed first:

* globally, by the gain that brings the faces (or, without faces, the picture's
  log-average luminance) to a well-exposed level: a backlit face is exposed for the face;
* locally, by pulling each region's large-scale level back from the deep shadows and
  the blown highlights with soft ``tanh`` knees (Durand and Dorsey's base/detail split,
  in log2 luminance): a dark coat or a dark curtain comes up, a bright sky behind a
  face comes down, and the detail within each region (folds, hair strands) is kept as
  it is.

Everything is in log2 luminance, where an exposure change is a shift: a copy of the
photo darkened by any factor gets the same map shifted by that factor, so it draws the
same cartoon (up to the 8-bit rounding of its darks). One gain per pixel multiplies the
three linear channels, so hues stay. The map is measured on a small copy and applied to
the full picture once, before the heads are cut and the background shrunk, so heads and
background see the same tones and no seam is made.

A video measures its exposure per frame but holds it steady within a shot
(``ExposureSmoother``): a face turning to the light or a bright car crossing would
otherwise pump the whole picture's brightness.
"""

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from cartoon.model.unet import guided_filter_banded

# A style's ``tone`` in ``registry.json``: None gives the generators the photo as it is.
TONES = (None, "photo")

# Linear-light luminance weights of sRGB's primaries (ITU-R BT.709).
_LUMINANCE = np.array([0.2126, 0.7152, 0.0722], np.float32)
# log2 luminance floor: below the darkest non-zero 8-bit sRGB level (2^-11.7), so only
# true black is floored and any darker copy's levels shift as the photo's do.
_FLOOR = 2.0**-12


@dataclass(frozen=True)
class ToneParams:
    """How a photo's tone is normalised (levels in log2 of linear luminance).

    The levels were read off the packaged well-exposed photos (``tools.photos``): their
    log-average luminance spans -2.4 to -4.7, their 98th percentile -0.1 to -1.7, the
    inner half of their faces -1.0 to -1.6.
    """

    side: int = 160  # long side (px) of the copy the map is measured on
    key: float = -3.4  # log-average level of a well-exposed picture
    highlight: float = -0.4  # 98th-percentile level of a well-exposed picture
    face_level: float = -1.3  # median level of a well-exposed face's inner half (skin at L* ~65)
    face_weight: float = 0.8  # share of the faces (against the whole picture) in the exposure
    min_gain: float = -1.0  # stops: a bright photo is darkened by at most this
    max_gain: float = 4.0  # stops: a dark photo is brightened by at most this
    shadow: float = -3.6  # regions darker than this (L* ~34) are lifted towards it ...
    shadow_knee: float = 1.6  # ... by a tanh toe this many stops deep
    shoulder: float = -1.0  # regions brighter than this (L* ~74) are brought down towards it ...
    shoulder_knee: float = 0.9  # ... by a tanh shoulder this many stops high
    base_space: float = 1.0 / 40.0  # spatial sigma of the base layer, as a share of ``side``
    base_range: float = 1.0  # stops: range sigma of the base layer; edges above it keep their step
    smoothing: float = 0.15  # a video's per-frame step towards the frame's own exposure


def _log_luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 log2 linear luminance of (H, W, 3) uint8 sRGB."""
    return np.log2(_linear_table()[rgb] @ _LUMINANCE + _FLOOR)


@lru_cache(maxsize=1)
def _linear_table() -> np.ndarray:
    """8-bit sRGB level -> linear light, float32 (IEC 61966-2-1)."""
    level = np.arange(256, dtype=np.float64) / 255.0
    return np.where(level <= 0.04045, level / 12.92, ((level + 0.055) / 1.055) ** 2.4).astype(np.float32)


# Linear light is encoded back through a table of 16-bit steps: finer than one 8-bit
# level everywhere.
_ENCODE_STEPS = 65535


@lru_cache(maxsize=1)
def _encode_table() -> np.ndarray:
    """Linear light in steps of 1 / ``_ENCODE_STEPS`` -> 8-bit sRGB level."""
    linear = np.arange(_ENCODE_STEPS + 1, dtype=np.float64) / _ENCODE_STEPS
    level = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1.0 / 2.4) - 0.055)
    return np.round(level * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class ToneMap:
    """A photo's tone normalisation, measured on a small copy.

    Attributes:
        exposure: the global gain, log2 (the level the exposure is anchored on moved to
            the well-exposed one).
        gain: (h, w) float32 log2 gain per pixel of the small copy, the global one included.
        height, width: the photo's size, that ``gain`` spans.
    """

    exposure: float
    gain: np.ndarray
    height: int
    width: int


def measure_exposure(rgb: np.ndarray, boxes: list[tuple[float, float, float, float]],
                     params: ToneParams = ToneParams()) -> float:
    """The global gain (log2) that exposes the photo well, for the faces when it has some.

    Args:
        rgb: (H, W, 3) uint8.
        boxes: face boxes (x0, y0, x1, y1) in ``rgb``'s coordinates.
    """
    small, scale = _small(rgb, params)
    return _exposure(_log_luminance(small), [_scaled(box, scale) for box in boxes], params)


def _small(rgb: np.ndarray, params: ToneParams) -> tuple[np.ndarray, float]:
    scale = min(1.0, params.side / max(rgb.shape[:2]))
    if scale == 1.0:
        return rgb, 1.0
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def _scaled(box: tuple[float, float, float, float], scale: float) -> tuple[int, int, int, int]:
    return tuple(int(round(v * scale)) for v in box)


def _exposure(level: np.ndarray, boxes: list[tuple[int, int, int, int]], params: ToneParams) -> float:
    # Half the log-average (mid-tones), half the 98th percentile (highlights): either alone
    # would call a dark-clothed portrait or a picture of one bright lamp badly exposed.
    picture = 0.5 * (params.key - float(level.mean())) + 0.5 * (params.highlight - float(np.percentile(level, 98)))
    faces = []
    height, width = level.shape
    for x0, y0, x1, y1 in boxes:
        # The box's inner half: the skin, not the hair or the background at its corners.
        inset_x, inset_y = (x1 - x0) // 4, (y1 - y0) // 4
        inner = level[max(0, y0 + inset_y):min(height, y1 - inset_y), max(0, x0 + inset_x):min(width, x1 - inset_x)]
        if inner.size:
            faces.append(float(np.median(inner)))
    gain = picture
    if faces:
        gain = params.face_weight * (params.face_level - float(np.mean(faces))) + (1.0 - params.face_weight) * picture
    return float(np.clip(gain, params.min_gain, params.max_gain))


def tone_map(rgb: np.ndarray, boxes: list[tuple[float, float, float, float]], params: ToneParams = ToneParams(),
             exposure: float | None = None) -> ToneMap:
    """Measures a photo's tone normalisation.

    Args:
        rgb: (H, W, 3) uint8.
        boxes: face boxes (x0, y0, x1, y1) in ``rgb``'s coordinates.
        exposure: a global gain (log2) fixed by the caller (a video's, held per shot),
            or None to measure it (``measure_exposure``).
    """
    small, scale = _small(rgb, params)
    level = _log_luminance(small)
    if exposure is None:
        exposure = _exposure(level, [_scaled(box, scale) for box in boxes], params)
    sigma = max(1.0, params.base_space * max(small.shape[:2]))
    base = cv2.bilateralFilter(level, d=int(2 * round(1.5 * sigma) + 1), sigmaColor=params.base_range,
                               sigmaSpace=sigma)
    gain = (_knees(base + exposure, params) - base).astype(np.float32)
    return ToneMap(exposure, gain, *rgb.shape[:2])


def _knees(level: np.ndarray, params: ToneParams) -> np.ndarray:
    """Levels past the shadow or the shoulder pulled back towards them (tanh: slope 1 at the knee)."""
    toe = params.shadow + params.shadow_knee * np.tanh((level - params.shadow) / params.shadow_knee)
    top = params.shoulder + params.shoulder_knee * np.tanh((level - params.shoulder) / params.shoulder_knee)
    return np.where(level < params.shadow, toe, np.where(level > params.shoulder, top, level))


def apply_tone(rgb: np.ndarray, tone: ToneMap) -> np.ndarray:
    """The photo, or a resized copy of it, with the map's gain applied in linear light.

    Args:
        rgb: (H, W, 3) uint8: the photo the map was measured on, at any size.
    """
    height, width = rgb.shape[:2]
    return _gained(rgb, cv2.resize(tone.gain, (width, height), interpolation=cv2.INTER_LINEAR), tone.exposure)


def apply_tone_to_crop(crop: np.ndarray, tone: ToneMap, matrix: np.ndarray) -> np.ndarray:
    """A crop cut from the photo (``cartoon.image.align.warp_crop``) with the map's gain.

    Args:
        crop: (S, S, 3) uint8.
        matrix: (2, 3) the photo -> crop transform it was cut with.
    """
    small_height, small_width = tone.gain.shape
    # A pixel centre of the small copy, in the photo's pixel coordinates (cv2.resize's convention).
    scale_x, scale_y = tone.width / small_width, tone.height / small_height
    from_small = np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0, 0, 1]])
    gain = cv2.warpAffine(tone.gain, (matrix @ from_small).astype(np.float64), crop.shape[1::-1],
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _gained(crop, gain, tone.exposure)


def _gained(rgb: np.ndarray, gain: np.ndarray, exposure: float) -> np.ndarray:
    """(H, W, 3) uint8 with each pixel's linear light multiplied by 2 ** ``gain`` (H, W),
    and its noise smoothed where the gain lifts it past the global ``exposure`` (``_quieted``)."""
    factor = cv2.exp(gain * np.float32(np.log(2.0)))
    linear = cv2.multiply(cv2.LUT(rgb, _linear_table()), cv2.merge([factor, factor, factor]))
    # Saturating conversion: light past white is white.
    steps = cv2.multiply(linear, (float(_ENCODE_STEPS),) * 3 + (0.0,), dtype=cv2.CV_16U)
    return _quieted(_encode_table()[steps], gain - np.float32(exposure))


# Lifting a region by g stops lifts its sensor and JPEG noise (the 8x8 blocks of a black
# suit) with it: the students then draw that noise as speckle and ink. Where the local
# lift (the gain past the global exposure, so a darker copy of a photo is quieted as the
# photo is) passes QUIET_FROM stops, the picture is blended, fully at QUIET_FULL stops,
# with its own guided filter (He et al.: self-guided, an edge-preserving smoothing):
# fluctuations under about QUIET_LEVEL 8-bit levels within QUIET_RADIUS px go, steps
# above it stay.
QUIET_FROM, QUIET_FULL = 0.5, 2.0
QUIET_RADIUS, QUIET_LEVEL = 4, 24.0


def _quieted(rgb: np.ndarray, lift: np.ndarray) -> np.ndarray:
    weight = np.clip((lift - QUIET_FROM) * (1.0 / (QUIET_FULL - QUIET_FROM)), 0.0, 1.0)
    rows, columns = np.flatnonzero(weight.any(axis=1)), np.flatnonzero(weight.any(axis=0))
    if not len(rows):
        return rgb
    # Filtered only over the lifted region's bounding box, with the filter's reach around
    # it (two box means of QUIET_RADIUS): most photos lift a part of the picture.
    reach = 2 * QUIET_RADIUS
    top, bottom = max(0, rows[0] - reach), min(rgb.shape[0], rows[-1] + 1 + reach)
    left, right = max(0, columns[0] - reach), min(rgb.shape[1], columns[-1] + 1 + reach)
    # Luma only: a dark region's noise and JPEG blocks are in its lightness (JPEG keeps
    # chroma coarse anyway), and one channel costs a third of three.
    ycrcb = cv2.cvtColor(rgb[top:bottom, left:right], cv2.COLOR_RGB2YCrCb)
    luma = ycrcb[..., :1].astype(np.float32) * (1.0 / 255.0)
    smooth = guided_filter_banded(luma, luma, QUIET_RADIUS, (QUIET_LEVEL / 255.0) ** 2)[..., 0]
    blend = weight[top:bottom, left:right]
    ycrcb[..., 0] = np.clip((luma[..., 0] + blend * (smooth - luma[..., 0])) * 255.0 + 0.5, 0, 255)
    quieted = rgb.copy()
    quieted[top:bottom, left:right] = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
    return quieted


def normalise_tone(rgb: np.ndarray, boxes: list[tuple[float, float, float, float]],
                   params: ToneParams = ToneParams(), exposure: float | None = None) -> np.ndarray:
    """``apply_tone`` of ``tone_map``: the photo re-exposed from itself."""
    return apply_tone(rgb, tone_map(rgb, boxes, params, exposure))


class ExposureSmoother:
    """A video's global exposure, moved a step per frame towards each frame's own and
    started afresh at each shot cut, so a shot's tones never pump."""

    def __init__(self, params: ToneParams = ToneParams()):
        self.params = params
        self._exposure: float | None = None

    def update(self, rgb: np.ndarray, boxes: list[tuple[float, float, float, float]], cut: bool) -> float:
        """The exposure (log2 gain) to draw this frame with; ``cut``: it starts a shot."""
        measured = measure_exposure(rgb, boxes, self.params)
        if cut or self._exposure is None:
            self._exposure = measured
        else:
            self._exposure += self.params.smoothing * (measured - self._exposure)
        return self._exposure
