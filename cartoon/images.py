"""Image bytes in and out: header probe, decode to RGB uint8, encode."""

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cartoon.errors import (
    CorruptImageError,
    NotAnImageError,
    TooManyPixelsError,
    UnsupportedFormatError,
)

# Input formats we decode; anything else Pillow recognises is "unsupported".
INPUT_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO"})
# The Pillow plugins ``Image.open`` may try, in a fixed order (JPEG opens MPO files).
ACCEPTED_PLUGINS = tuple(sorted(INPUT_FORMATS - {"MPO"}))
# File suffixes of the input formats, for clients walking folders (cartoonize-batch).
INPUT_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
# Output formats: their media types and file suffixes.
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
SUFFIX_BY_FORMAT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
OUTPUT_FORMATS = tuple(MEDIA_TYPES)
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class ImageInfo:
    """What the header says, before any pixel is decoded."""

    format: str
    width: int
    height: int


@dataclass
class DecodedImage:
    """An image as the pipeline uses it.

    Attributes:
        rgb: (H, W, 3) uint8, EXIF orientation applied, transparency flattened on white.
        alpha: (H, W) uint8 when the input had transparency, else None.
        format: the input's format name as Pillow reports it.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    format: str


# Leading bytes of the accepted formats, to tell a broken image from a non-image
# when Pillow cannot identify a truncated file.
SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _signature_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in SIGNATURES.items() if data.startswith(magic)), None)


def _png_declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, which must come first."""
    if len(data) >= 24 and data.startswith(b"\x89PNG") and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _unidentified(data: bytes, max_pixels: int) -> Exception:
    """The error for bytes Pillow cannot open: oversized, broken, or not an image."""
    size = _png_declared_size(data)
    if size and size[0] * size[1] > max_pixels:
        return TooManyPixelsError(
            f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels is over the limit of {max_pixels}"
        )
    format = _signature_format(data)
    if format:
        return CorruptImageError(f"the {format} data is truncated or broken")
    return NotAnImageError("the body is not a recognised image")


def _other_format(data: bytes) -> str | None:
    """The name of a format Pillow knows but we do not accept, from the leading bytes only.

    Uses each plugin's signature test (``accept``), never its parser, so hostile bytes
    are never handed to a decoder we do not need.
    """
    Image.init()
    prefix = data[:16]
    for name, (_, accept) in Image.OPEN.items():
        if name in INPUT_FORMATS or accept is None:
            continue
        try:
            if accept(prefix):
                return name
        except Exception:  # some tests unpack fixed-size fields from short prefixes
            continue
    return None


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Opens the header with the plugins of ``INPUT_FORMATS`` only.

    No process-wide warning state is touched (this runs in replicas' thread pools):
    Pillow's own decompression-bomb warning only fires far above any sane
    ``max_pixels``, and ``_check`` refuses by the header before any pixel is decoded.
    """
    if not data:
        raise NotAnImageError("the body is empty")
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_PLUGINS)
    except Image.DecompressionBombError as exc:
        # Pillow refuses before we can read the size; PNG headers we read ourselves.
        size = _png_declared_size(data)
        declared = f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels" if size else "more pixels"
        raise TooManyPixelsError(f"the header declares {declared}, over the limit of {max_pixels}") from exc
    except UnidentifiedImageError as exc:
        other = _other_format(data)
        if other:
            raise _unsupported(other) from exc
        raise _unidentified(data, max_pixels) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"the image header is broken: {exc}") from exc


def _unsupported(format: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"format {format or 'unknown'} is not accepted; "
        f"use one of {', '.join(sorted(INPUT_FORMATS - {'MPO'}))}"
    )


def _check(image: Image.Image, max_pixels: int) -> ImageInfo:
    info = ImageInfo(format=image.format or "", width=image.width, height=image.height)
    if info.format not in INPUT_FORMATS:
        raise _unsupported(info.format)
    if info.width < 1 or info.height < 1:
        raise CorruptImageError(f"the header declares a {info.width}x{info.height} image")
    if info.width * info.height > max_pixels:
        raise TooManyPixelsError(
            f"{info.width}x{info.height} = {info.width * info.height} pixels "
            f"is over the limit of {max_pixels}"
        )
    return info


def probe(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Reads format and size from the header without decoding pixels.

    Args:
        data: the encoded image.
        max_pixels: width * height above which the image is refused.

    Returns:
        The format and size the header declares.

    Raises:
        NotAnImageError, CorruptImageError, UnsupportedFormatError, TooManyPixelsError.
    """
    return _check(_open(data, max_pixels), max_pixels)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        return np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # 16-bit integer samples (Pillow's "I;16" and "I" modes); wider values saturate.
    return (np.clip(array.astype(np.int64), 0, 65535) // 257).astype(np.uint8)


def _split_modes(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Converts any Pillow mode to (rgb uint8, alpha uint8 or None)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"))
        alpha = rgba[..., 3].copy()
        rgb = rgba[..., :3].astype(np.float32)
        weight = alpha[..., None].astype(np.float32) / 255.0
        flattened = rgb * weight + 255.0 * (1.0 - weight)
        return np.clip(flattened + 0.5, 0, 255).astype(np.uint8), alpha
    if image.mode.startswith("I") or image.mode == "F":
        gray = _to_uint8(np.asarray(image))
        return np.repeat(gray[..., None], 3, axis=2), None
    return np.asarray(image.convert("RGB")), None


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decodes image bytes to RGB uint8 with EXIF orientation applied.

    Gray, palette, 16-bit and CMYK inputs are converted; transparent inputs are
    flattened onto white and their alpha channel is returned separately.

    Args:
        data: the encoded image.
        max_pixels: width * height above which the image is refused, checked from
            the header before decoding.

    Returns:
        The decoded image.

    Raises:
        NotAnImageError, CorruptImageError, UnsupportedFormatError, TooManyPixelsError.
    """
    image = _open(data, max_pixels)
    info = _check(image, max_pixels)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb, alpha = _split_modes(image)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImageError(f"the {info.format} data is truncated or broken: {exc}") from exc
    return DecodedImage(
        rgb=np.ascontiguousarray(rgb),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        format=info.format,
    )


def encode(
    rgb: np.ndarray,
    format: str = "png",
    quality: int = 90,
    alpha: np.ndarray | None = None,
) -> bytes:
    """Encodes an RGB uint8 image.

    Args:
        rgb: (H, W, 3) uint8.
        format: "png", "jpeg" or "webp".
        quality: 1..100 for JPEG and WebP; ignored by PNG.
        alpha: optional (H, W) uint8 kept in PNG and WebP output; JPEG drops it.

    Returns:
        The encoded bytes.
    """
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {OUTPUT_FORMATS}, not {format!r}")
    if format == "png":
        return _encode_png(rgb, alpha)
    image = Image.fromarray(rgb, "RGB")
    if alpha is not None and format != "jpeg":
        image.putalpha(Image.fromarray(alpha, "L"))
    buffer = io.BytesIO()
    if format == "jpeg":
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="WEBP", quality=quality)
    return buffer.getvalue()


# Level 1 is several times faster than the default 6 for photos, about 10% larger;
# run-length matching then costs no more time and makes a cartoon 13% smaller. One fixed
# Paeth filter instead of libpng's per-row choice of all five: 1.6x faster on a 1024 px
# cartoon for the same size (benchmarks/encode.py).
_PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION, 1,
    cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
    cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH,
]


def _encode_png(rgb: np.ndarray, alpha: np.ndarray | None) -> bytes:
    """PNG bytes of an RGB (or RGB + alpha) picture."""
    if alpha is None:
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    else:
        pixels = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), alpha])
    ok, data = cv2.imencode(".png", pixels, _PNG_PARAMS)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} picture as PNG")
    return data.tobytes()
