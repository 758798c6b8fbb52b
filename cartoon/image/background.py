"""The background pass: shrink to the processing size, cut uniform tiles, stitch back.

Batches need same-shaped inputs while photos come in every shape, so the
background is cut into square tiles of one size. Neighbouring tiles overlap by a
halo of at least the UNet's receptive radius (``unet.receptive_radius``: 64 px at
the default 4 residual blocks) and each output pixel is taken from a tile where it
lies at least ``halo`` px from every cut edge, so the stitched result equals the
whole-canvas result. The canvas is the image padded out (see ``PADDINGS``), and
every tile is a window of it: tiles at the canvas edge end at that edge, so they
see the same zero padding as the whole canvas. A canvas side shorter than a tile
is never padded out to one (the UNet would see invented pixels where the whole
canvas has its edge); the tiles are cut to that side instead, so such a
background's tiles are not square.
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

from cartoon.constants import UNET_STRIDE

# How the canvas is padded below and right of the image. "mirror4": mirrored to a
# multiple of the UNet's stride (our own styles). "white16": DCT-Net's padTo16x, white
# (255) to a multiple of 16; when either side is not already a multiple of 16, both
# sides grow to the next multiple strictly above (a side that was one gains 16 px).
PADDINGS = ("mirror4", "white16")


def shrink(
    rgb: np.ndarray, process_side: int, max_area: int | None = None, padding: str = "mirror4"
) -> np.ndarray:
    """Resizes so the short side is at most ``process_side`` and the padded canvas at most ``max_area``.

    The short side alone leaves a long thin strip (55000x727, say) almost whole; the
    area cap bounds the UNet's work and memory whatever the aspect ratio. It holds for
    the canvas the UNet sees, padding (``padding``, see ``PADDINGS``) included: a strip
    1 px thin is padded to 4 or 16 rows, so its length is cut to fit instead (and
    photos near the cap lose the padding's share, at most 2 % of their long side).
    Never upscales.
    """
    height, width = rgb.shape[:2]
    scale = process_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if max_area and min(scale, 1.0) ** 2 * height * width > max_area:
        scale = math.sqrt(max_area / (height * width))
        size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    if scale >= 1.0:
        size = (width, height)
    if max_area:
        size = _fit_canvas(*size, max_area, padding)
    if size == (width, height):
        return rgb
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _fit_canvas(width: int, height: int, max_area: int, padding: str) -> tuple[int, int]:
    """(width, height) with the long side cut until the padded canvas holds at most ``max_area``."""
    canvas_height, canvas_width = canvas_size(height, width, padding)
    if canvas_height * canvas_width <= max_area:
        return width, height
    if width >= height:
        width = max(1, min(width, max_area // canvas_height))
    else:
        height = max(1, min(height, max_area // canvas_width))
    # Padding adds at most 16 px to the long side: a few steps at most.
    while math.prod(canvas_size(height, width, padding)) > max_area and max(width, height) > 1:
        width, height = (width - 1, height) if width >= height else (width, height - 1)
    return width, height


@dataclass(frozen=True)
class TilePlan:
    """Where each piece came from, enough to put the pieces back.

    Attributes:
        height, width: the image before padding.
        canvas_height, canvas_width: the padded canvas the pieces cover.
        piece_height, piece_width: the shape of every piece; the canvas's when it is
            one whole piece.
        halo: px each cut edge is distrusted by.
        origins: (y, x) of each piece in the canvas, row-major.
    """

    height: int
    width: int
    canvas_height: int
    canvas_width: int
    piece_height: int
    piece_width: int
    halo: int
    origins: tuple[tuple[int, int], ...]

    @property
    def pixel_overhead(self) -> float:
        """Pixels the UNet computes per pixel of the image (1.0 = no waste)."""
        return len(self.origins) * self.piece_height * self.piece_width / (self.height * self.width)


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


def _starts(length: int, tile: int, halo: int) -> list[int]:
    """Tile origins along one axis: first at 0, last flush with the end."""
    step = tile - 2 * halo
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(min(starts[-1] + step, length - tile))
    return starts


def canvas_size(height: int, width: int, padding: str) -> tuple[int, int]:
    """(height, width) of the canvas an image of this size is padded to."""
    if padding == "white16":
        if height % 16 == 0 and width % 16 == 0:
            return height, width
        return (height // 16 + 1) * 16, (width // 16 + 1) * 16
    if padding == "mirror4":
        return _round_up(height, UNET_STRIDE), _round_up(width, UNET_STRIDE)
    raise ValueError(f"unknown padding {padding!r}; known: {', '.join(PADDINGS)}")


def _pad(image: np.ndarray, padding: str) -> np.ndarray:
    height, width = image.shape[:2]
    padded_height, padded_width = canvas_size(height, width, padding)
    mode, extra = ("constant", {"constant_values": 255}) if padding == "white16" else ("symmetric", {})
    return np.pad(image, ((0, padded_height - height), (0, padded_width - width), (0, 0)), mode=mode, **extra)


def split(
    image: np.ndarray, tile: int = 0, halo: int = 64, padding: str = "mirror4"
) -> tuple[np.ndarray, TilePlan]:
    """Cuts an image into uniform pieces.

    Args:
        image: (H, W, 3) uint8.
        tile: side of the square pieces, a multiple of 4 above ``2 * halo``; 0 makes
            the whole canvas (padded to a multiple of 4) a single piece.
        halo: overlap each side of a cut, a multiple of 4, at least the UNet's
            receptive radius for the stitched result to equal the whole.
        padding: one of ``PADDINGS``.

    Returns:
        (N, T, T, 3) pieces, where a canvas side shorter than T replaces T, or
        (1, H', W', 3) when ``tile`` is 0; and the plan.
    """
    height, width = image.shape[:2]
    if tile and (tile % UNET_STRIDE or halo % UNET_STRIDE or tile <= 2 * halo):
        raise ValueError(f"tile ({tile}) and halo ({halo}) must be multiples of 4, tile > 2 * halo")
    canvas = _pad(image, padding)
    canvas_height, canvas_width = canvas.shape[:2]
    piece_height = min(tile, canvas_height) if tile else canvas_height
    piece_width = min(tile, canvas_width) if tile else canvas_width
    origins = tuple(
        (y, x)
        for y in _starts(canvas_height, piece_height, halo)
        for x in _starts(canvas_width, piece_width, halo)
    )
    pieces = np.stack([canvas[y : y + piece_height, x : x + piece_width] for y, x in origins])
    plan = TilePlan(height, width, canvas_height, canvas_width, piece_height, piece_width, halo, origins)
    return pieces, plan


def stitch(pieces: np.ndarray, plan: TilePlan) -> np.ndarray:
    """Puts pieces from ``split`` back together; returns (H, W, C) of the original size."""
    canvas = np.empty((plan.canvas_height, plan.canvas_width) + pieces.shape[3:], pieces.dtype)
    piece_height, piece_width, halo = plan.piece_height, plan.piece_width, plan.halo
    for piece, (y, x) in zip(pieces, plan.origins):
        # Trust a piece up to `halo` px from each cut; at the canvas edge, up to the edge.
        top = 0 if y == 0 else halo
        left = 0 if x == 0 else halo
        bottom = piece_height if y + piece_height == plan.canvas_height else piece_height - halo
        right = piece_width if x + piece_width == plan.canvas_width else piece_width - halo
        canvas[y + top : y + bottom, x + left : x + right] = piece[top:bottom, left:right]
    return np.ascontiguousarray(canvas[: plan.height, : plan.width])
