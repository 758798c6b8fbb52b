import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from cartoon.image import codec
from cartoon.errors import CorruptImageError, NotAnImageError, TooManyPixelsError, UnsupportedFormatError
from tests import photos


def chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_header(width: int, height: int, pixel_data: bool = True) -> bytes:
    """A PNG claiming a size, with a few bytes of pixel data (or none) after its header."""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    rest = chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"") if pixel_data else b""
    return b"\x89PNG\r\n\x1a\n" + ihdr + rest


def save(image: Image.Image, format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


def test_probe_reads_size_from_header_without_pixel_data():
    info = codec.probe(png_header(300, 200))
    assert (info.format, info.width, info.height) == ("PNG", 300, 200)


@pytest.mark.parametrize("pixel_data", [True, False])
def test_header_claiming_70000_squared_is_refused_before_decoding(pixel_data):
    with pytest.raises(TooManyPixelsError, match="pixels"):
        codec.decode(png_header(70000, 70000, pixel_data))


def test_header_within_limit_but_short_of_pixels_is_corrupt():
    with pytest.raises(CorruptImageError):
        codec.decode(png_header(300, 200))


def test_pixel_limit_is_configurable():
    data = photos.encode(np.zeros((100, 100, 3), np.uint8))
    assert codec.decode(data, max_pixels=10_000).rgb.shape == (100, 100, 3)
    with pytest.raises(TooManyPixelsError, match="9999"):
        codec.decode(data, max_pixels=9_999)


@pytest.mark.parametrize("data", [b"", b"hello, this is not a picture", bytes(range(256)) * 4])
def test_garbage_is_not_an_image(data):
    with pytest.raises(NotAnImageError):
        codec.decode(data)


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP"])
def test_truncated_file_is_corrupt(astronaut, format):
    data = photos.encode(astronaut, format)
    with pytest.raises(CorruptImageError):
        codec.decode(data[: len(data) // 2])


# Told apart by leading bytes only (no foreign parser runs): TGA has no signature and
# its first bytes pass CUR's test, so it is named as one; either way it is refused.
@pytest.mark.parametrize("format, named", [("ICO", "ICO"), ("PPM", "PPM"), ("TGA", "CUR")])
def test_recognised_but_unaccepted_format_is_unsupported(format, named):
    data = save(Image.new("RGB", (32, 32), "red"), format)
    with pytest.raises(UnsupportedFormatError, match=named):
        codec.decode(data)


@pytest.mark.parametrize("body", [b"\x00", b"GIF87a\x01", b"\x00\x00\x01\x00", b"P6", b"\xff"])
def test_a_few_bytes_are_not_an_image_whatever_they_start_like(body):
    with pytest.raises((NotAnImageError, CorruptImageError, UnsupportedFormatError)):
        codec.probe(body)


def test_only_accepted_plugins_parse_the_bytes(monkeypatch):
    """A plugin outside INPUT_FORMATS never gets to parse a body, whatever its bytes."""
    opened = []
    real_open = Image.open

    def spying_open(fp, mode="r", formats=None):
        opened.append(formats)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(Image, "open", spying_open)
    with pytest.raises(UnsupportedFormatError):
        codec.decode(save(Image.new("RGB", (32, 32), "red"), "ICO"))
    codec.probe(photos.encode(np.zeros((8, 8, 3), np.uint8)))
    assert opened and all(formats and set(formats) <= codec.INPUT_FORMATS for formats in opened)


def test_decoding_leaves_the_process_warning_state_alone():
    """Replicas decode in thread pools, where catch_warnings races other threads' filters."""

    def forbidden(*args, **kwargs):
        raise AssertionError("process-wide warning state changed")

    inputs = photos.encode(photos.astronaut()), png_header(70000, 70000), png_header(10000, 10000)
    # Patched by hand, not with monkeypatch: pytest's own teardown uses catch_warnings.
    saved = warnings.catch_warnings, warnings.simplefilter, warnings.filterwarnings
    warnings.catch_warnings = warnings.simplefilter = warnings.filterwarnings = forbidden
    try:
        codec.decode(inputs[0])
        for header in inputs[1:]:
            with pytest.raises(TooManyPixelsError):
                codec.decode(header)
    finally:
        warnings.catch_warnings, warnings.simplefilter, warnings.filterwarnings = saved


def test_gray_becomes_rgb():
    decoded = codec.decode(save(Image.new("L", (5, 4), 77), "PNG"))
    assert decoded.rgb.shape == (4, 5, 3) and (decoded.rgb == 77).all() and decoded.alpha is None


def test_palette_becomes_rgb():
    image = Image.new("RGB", (6, 6), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    decoded = codec.decode(save(image, "GIF"))
    assert decoded.rgb.shape == (6, 6, 3)
    assert np.abs(decoded.rgb.astype(int) - (10, 200, 30)).max() <= 8


def test_rgba_is_flattened_on_white_and_alpha_kept():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = [[255, 0], [128, 255]]
    decoded = codec.decode(save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert decoded.rgb[0, 0].tolist() == [200, 0, 0]
    assert decoded.rgb[0, 1].tolist() == [255, 255, 255]
    # Half transparent red over white: (200 * 128 + 255 * 127) / 255 = 227.4 ; 127 * 255 / 255 = 127
    assert decoded.rgb[1, 0].tolist() == [227, 127, 127]
    assert decoded.alpha.tolist() == [[255, 0], [128, 255]]


def test_sixteen_bit_gray_is_scaled_to_eight_bits():
    samples = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    decoded = codec.decode(save(Image.fromarray(samples), "PNG"))
    assert decoded.rgb[0, :, 0].tolist() == [0, 100, 255]


def test_cmyk_jpeg_becomes_rgb():
    decoded = codec.decode(save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95))
    red, green, blue = decoded.rgb[4, 4].astype(int)
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = codec.decode(save(image, "JPEG", exif=exif))
    assert decoded.rgb.shape == (40, 20, 3)


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_encode_round_trip(astronaut, format):
    data = codec.encode(astronaut, format, quality=95)
    decoded = codec.decode(data)
    assert decoded.rgb.shape == astronaut.shape
    error = np.abs(decoded.rgb.astype(int) - astronaut).mean()
    assert error == 0 if format == "png" else error < 4


@pytest.mark.parametrize("format", ["png", "webp"])
def test_alpha_survives_png_and_webp(format):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 40  # distinct channels: a swapped order shows
    alpha = np.tile(np.arange(0, 256, 32, dtype=np.uint8), (8, 1))
    data = codec.encode(rgb, format, quality=100, alpha=alpha)
    decoded = codec.decode(data)
    assert np.abs(decoded.alpha.astype(int) - alpha).max() <= 2
    if format == "png":
        with Image.open(io.BytesIO(data)) as stored:
            assert stored.mode == "RGBA"
            assert np.array_equal(np.asarray(stored)[..., :3], rgb)


def test_unknown_output_format_is_refused():
    with pytest.raises(ValueError, match="gif"):
        codec.encode(np.zeros((2, 2, 3), np.uint8), "gif")
