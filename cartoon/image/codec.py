"""Image bytes in and out: header probe, decode to RGB uint8, encode."""

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from cartoon.errors import (
    CartoonError,
    CorruptImageError,
    NotAnImageError,
    OutputTooLargeError,
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
# The longest side each output format holds: WebP's own limit, libjpeg's, and libpng's
# default user limit (OpenCV's PNG encoder refuses wider pictures).
MAX_OUTPUT_SIDE = {"png": 1_000_000, "jpeg": 65_500, "webp": 16_383}

# What decoding changed about the input, as the short codes clients are told
# (``DecodedImage.notices``, then ``Result.notices``).
ICC_CONVERTED = "icc_converted_to_srgb"  # an embedded ICC profile other than sRGB was applied
ICC_IGNORED = "icc_profile_ignored"  # a profile that is unreadable or not of the pixels' colour space
FIRST_FRAME = "first_frame_only"  # an animation or multi-page file: its first frame was used

# Pixels converted at a time. Pillow's copy of the stored picture and the RGB + alpha
# output are then the only full-size allocations: at most 4 + 4 bytes per pixel
# (Pillow stores RGB as RGBX; RGBA, CMYK and 32-bit grey take 4 too), where converting
# the whole picture at once took 10-20 (docs/RELIABILITY.md).
TILE_PIXELS = 1 << 18
EXIF_ORIENTATION = 0x0112


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
        rgb: (H, W, 3) uint8 sRGB, EXIF orientation applied, transparency flattened on white.
        alpha: (H, W) uint8 when the input had transparency, else None.
        format: the input's format name as Pillow reports it.
        notices: what decoding changed (``ICC_CONVERTED``, ``ICC_IGNORED``, ``FIRST_FRAME``).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    format: str
    notices: tuple[str, ...] = ()


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
        with _broken_on_any_error("the image header is broken"):
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


@contextmanager
def _broken_on_any_error(what: str):
    """Any exception a parser raises means broken bytes: ``CorruptImageError`` (400).

    Pillow's plugins and OpenCV raise whatever their parsing hits (struct.error,
    IndexError, KeyError, ...) on hostile bytes; none of them is our bug. Pillow's own
    refusals pass through for ``_open`` to tell apart, and so do running out of memory
    (the service's state, not the input's) and our typed errors.
    """
    try:
        yield
    except (CartoonError, MemoryError, Image.DecompressionBombError, UnidentifiedImageError):
        raise
    except Exception as exc:
        raise CorruptImageError(f"{what}: {exc}") from exc


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


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )


@cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _srgb_transform(image: Image.Image, has_alpha: bool) -> tuple[ImageCms.ImageCmsTransform | None, str | None]:
    """The transform from the embedded ICC profile to sRGB, and the notice to give.

    None and no notice without a profile or with an sRGB one (by its description, as
    cameras and browsers write it: the transform would change nothing but rounding).
    Each tile is converted to the transform's input mode first.
    """
    icc = image.info.get("icc_profile")
    if not icc:
        return None, None
    output_mode = "RGBA" if has_alpha else "RGB"
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "sRGB" in ImageCms.getProfileDescription(profile):
            return None, None
        space = profile.profile.xcolor_space.strip()
        if space == "RGB" and image.mode in ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA"):
            input_mode = output_mode
        elif space == "CMYK" and image.mode == "CMYK" or space == "GRAY" and image.mode == "L":
            input_mode = image.mode
        else:
            return None, ICC_IGNORED
        intent = ImageCms.getDefaultIntent(profile)
        return ImageCms.buildTransform(profile, _srgb_profile(), input_mode, output_mode, intent), ICC_CONVERTED
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None, ICC_IGNORED


def _tile_pixels(
    tile: Image.Image, has_alpha: bool, transform: ImageCms.ImageCmsTransform | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """One tile as (rgb uint8, alpha uint8 or None); grey comes back (h, w, 1)."""
    if transform is not None:
        if tile.mode != transform.input_mode:
            tile = tile.convert(transform.input_mode)
        tile = ImageCms.applyTransform(tile, transform)
    if has_alpha:
        rgba = np.asarray(tile.convert("RGBA"))
        weight = rgba[..., 3:].astype(np.uint16)
        # Over white, rounded: (c * a + 255 * (255 - a)) / 255, at most 65025 + 127 in uint16.
        flattened = (rgba[..., :3] * weight + 255 * (255 - weight) + 127) // 255
        return flattened.astype(np.uint8), rgba[..., 3]
    if tile.mode.startswith("I") or tile.mode == "F":
        return _to_uint8(np.asarray(tile))[..., None], None
    return np.asarray(tile if tile.mode == "RGB" else tile.convert("RGB")), None


def _tiles(width: int, height: int) -> Iterator[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) of at most ``TILE_PIXELS`` each, covering the picture."""
    tile_width = min(width, TILE_PIXELS)
    tile_height = max(1, TILE_PIXELS // tile_width)
    for y in range(0, height, tile_height):
        for x in range(0, width, tile_width):
            yield x, y, min(x + tile_width, width), min(y + tile_height, height)


# EXIF orientation -> the shown picture as a view in the stored picture's coordinates, so
# tiles written in stored order land where they are shown (ImageOps.exif_transpose's
# result, without its full-size copy). 5 to 8 swap width and height.
_STORED_VIEWS = {
    2: lambda shown: shown[:, ::-1],
    3: lambda shown: shown[::-1, ::-1],
    4: lambda shown: shown[::-1],
    5: lambda shown: shown.swapaxes(0, 1),
    6: lambda shown: np.rot90(shown, 1),
    7: lambda shown: shown[::-1, ::-1].swapaxes(0, 1),
    8: lambda shown: np.rot90(shown, -1),
}


def _pixels(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Decodes the first frame tile by tile into (rgb, alpha or None) and the notices."""
    # An MPO's further pictures are previews or depth maps of the same shot, not frames.
    notices = [FIRST_FRAME] if image.format != "MPO" and getattr(image, "is_animated", False) else []
    image.load()
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    view = _STORED_VIEWS.get(orientation, lambda shown: shown)
    has_alpha = _has_alpha(image)
    transform, icc_notice = _srgb_transform(image, has_alpha)
    notices += [icc_notice] if icc_notice else []
    width, height = image.size
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    rgb = np.empty((height, width, 3), np.uint8)
    alpha = np.empty((height, width), np.uint8) if has_alpha else None
    stored_rgb = view(rgb)
    stored_alpha = None if alpha is None else view(alpha)
    for x0, y0, x1, y1 in _tiles(*image.size):
        tile_rgb, tile_alpha = _tile_pixels(image.crop((x0, y0, x1, y1)), has_alpha, transform)
        stored_rgb[y0:y1, x0:x1] = tile_rgb
        if stored_alpha is not None:
            stored_alpha[y0:y1, x0:x1] = tile_alpha
    return rgb, alpha, notices


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decodes image bytes to sRGB uint8 with EXIF orientation applied.

    Gray, palette, 16-bit and CMYK inputs are converted; an embedded ICC profile is
    applied (to sRGB); transparent inputs are flattened onto white and their alpha
    channel is returned separately; of an animation or multi-page file, the first
    frame. The pixels are converted in tiles of ``TILE_PIXELS``, so the peak is
    Pillow's stored picture and the output, plus a few tiles.

    Args:
        data: the encoded image.
        max_pixels: width * height above which the image is refused, checked from
            the header before decoding.

    Returns:
        The decoded image, with notices of what decoding changed.

    Raises:
        NotAnImageError, CorruptImageError, UnsupportedFormatError, TooManyPixelsError.
    """
    image = _open(data, max_pixels)
    info = _check(image, max_pixels)
    with image, _broken_on_any_error(f"the {info.format} data is truncated or broken"):
        rgb, alpha, notices = _pixels(image)
    return DecodedImage(rgb=rgb, alpha=alpha, format=info.format, notices=tuple(notices))


def check_encodable(format: str, height: int, width: int) -> None:
    """Refuses an output size ``format`` cannot hold, so no work is spent on it.

    Raises:
        OutputTooLargeError: a side over ``MAX_OUTPUT_SIDE[format]``.
    """
    limit = MAX_OUTPUT_SIDE[format]
    if max(height, width) > limit:
        remedy = f"max_side={limit} or less" + ("" if format == "png" else " or format=png")
        raise OutputTooLargeError(
            f"the output would be {width}x{height} px and {format.upper()} holds at most {limit} px a side; "
            f"ask for {remedy}"
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

    Raises:
        OutputTooLargeError: a side longer than the format holds.
    """
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {OUTPUT_FORMATS}, not {format!r}")
    check_encodable(format, *rgb.shape[:2])
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
# cartoon for the same size (docs/BENCHMARKS.md, measured in commit f850745).
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
