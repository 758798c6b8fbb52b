"""Hostile inputs and the peak memory each costs: decoding it, preparing it, serving it.

Every input is built here (no files shipped) at the size the config allows: a flat RGBA
PNG, 16-bit grey, CMYK, Adobe RGB and Display P3 JPEGs (their ICC profiles written
here), strips 1 to 4 px thin, outputs wider than WebP or JPEG hold, animations and
multi-page files. Each is handled in a fresh process and measured by the kernel's peak
resident set (VmHWM, reset just before the call), so Pillow's and OpenCV's C
allocations count. ``tests/unit/image/test_hostile_inputs.py`` runs the same probes on a
smaller config and asserts the bounds; this prints them at the config's own size.

Usage:
    python -m benchmarks.inputs [--max-pixels 40000000] [--only NAME ...]
"""

import argparse
import json
import math
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cartoon.image.compose import DEFAULT_MAX_OUTPUT_PIXELS
from cartoon.errors import CartoonError
from cartoon.image.codec import MAX_OUTPUT_SIDE, encode

# --- ICC profiles ----------------------------------------------------------------------

D50 = np.array([0.9642, 1.0, 0.8249])  # the ICC profile connection space's white
BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])


def _xyz(chromaticity: tuple[float, float]) -> np.ndarray:
    x, y = chromaticity
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


@dataclass(frozen=True)
class RgbSpace:
    """An RGB colour space from its published primaries, white and transfer curve.

    Attributes:
        name: the ICC profile's description.
        primaries: (x, y) chromaticities of red, green and blue.
        white: (x, y) of the white point (D65).
        gamma: a pure power law, or None for the sRGB curve.
    """

    name: str
    primaries: tuple[tuple[float, float], ...]
    white: tuple[float, float] = (0.3127, 0.3290)
    gamma: float | None = None

    def to_xyz(self) -> np.ndarray:
        """(3, 3) linear RGB -> XYZ under the space's own white (white's Y = 1)."""
        columns = np.stack([_xyz(primary) for primary in self.primaries], axis=1)
        return columns * np.linalg.solve(columns, _xyz(self.white))

    def linear(self, encoded: np.ndarray) -> np.ndarray:
        """Encoded values in 0..1 to linear light."""
        if self.gamma:
            return encoded**self.gamma
        return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


SRGB = RgbSpace("sRGB IEC61966-2.1", ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06)))
ADOBE_RGB = RgbSpace("Adobe RGB (1998)", ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06)), gamma=563 / 256)
DISPLAY_P3 = RgbSpace("Display P3", ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)))


def _s15fixed16(values) -> bytes:
    return b"".join(struct.pack(">i", round(value * 65536)) for value in values)


def _xyz_tag(xyz) -> bytes:
    return b"XYZ \0\0\0\0" + _s15fixed16(xyz)


def _curve_tag(gamma: float | None) -> bytes:
    if gamma:
        return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))
    # The sRGB curve as ICC parametric function 3: g, a, b, c, d.
    return b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + _s15fixed16([2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045])


def _description_tag(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    # textDescriptionType: ASCII, then empty Unicode and ScriptCode parts.
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + struct.pack(">IIHB", 0, 0, 0, 0) + bytes(67)


def _profile(colour_space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v2.1 display profile: header, tag table, tag data (each at a 4-byte boundary)."""
    offset = 128 + 4 + 12 * len(tags)
    table, body = [], b""
    for signature, data in tags:
        table.append(struct.pack(">4sII", signature, offset + len(body), len(data)))
        body += data + bytes(-len(data) % 4)
    size = offset + len(body)
    header = (
        struct.pack(">I4sI4s4s4s", size, b"", 0x02100000, b"mntr", colour_space, b"XYZ ")
        + bytes(12) + b"acsp" + bytes(28) + _s15fixed16(D50) + bytes(48)
    )
    return header + struct.pack(">I", len(tags)) + b"".join(table) + body


def icc_profile(space: RgbSpace) -> bytes:
    """A matrix/TRC profile of ``space``: colorants adapted to D50 (Bradford), as the ICC asks."""
    cone_source, cone_target = BRADFORD @ _xyz(space.white), BRADFORD @ D50
    adaptation = np.linalg.inv(BRADFORD) @ np.diag(cone_target / cone_source) @ BRADFORD
    colorants = adaptation @ space.to_xyz()
    curve = _curve_tag(space.gamma)
    return _profile(b"RGB ", [
        (b"desc", _description_tag(space.name)), (b"wtpt", _xyz_tag(D50)),
        (b"rXYZ", _xyz_tag(colorants[:, 0])), (b"gXYZ", _xyz_tag(colorants[:, 1])),
        (b"bXYZ", _xyz_tag(colorants[:, 2])), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
    ])


def gray_profile(name: str, gamma: float) -> bytes:
    """A grey profile with a power-law curve."""
    return _profile(b"GRAY", [(b"desc", _description_tag(name)), (b"wtpt", _xyz_tag(D50)),
                              (b"kTRC", _curve_tag(gamma))])


# --- the inputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """One input: its bytes, the pixels its header declares, the options it is sent with."""

    name: str
    data: bytes
    pixels: int
    options: dict = field(default_factory=dict)


def _save(image: Image.Image, format: str, **params) -> bytes:
    path = tempfile.SpooledTemporaryFile()
    image.save(path, format=format, **params)
    path.seek(0)
    return path.read()


def sides(pixels: int, aspect: float = 1.6) -> tuple[int, int]:
    """(width, height) of at most ``pixels`` at about ``aspect`` (width / height)."""
    height = max(1, math.isqrt(int(pixels / aspect)))
    return max(1, min(pixels // height, round(height * aspect))), height


def _flat(mode: str, max_pixels: int, colour, format: str, **params) -> tuple[bytes, int]:
    width, height = sides(max_pixels)
    return _save(Image.new(mode, (width, height), colour), format, **params), width * height


def _icc_jpeg(space: RgbSpace, max_pixels: int) -> tuple[bytes, int]:
    return _flat("RGB", max_pixels, (30, 160, 90), "JPEG", icc_profile=icc_profile(space))


def _strip(height: int, max_pixels: int) -> tuple[bytes, int]:
    """Noise ``height`` px tall, as long as ``max_pixels`` and a PNG output allow."""
    width = min(max_pixels // height, MAX_OUTPUT_SIDE["png"])
    rng = np.random.default_rng(0)
    return encode(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "png"), height * width


def _too_wide(format: str, max_pixels: int) -> tuple[bytes, int]:
    """A PNG one notch wider than ``format`` holds, as tall as ``max_pixels`` allows and not shrunk."""
    width = MAX_OUTPUT_SIDE[format] + 100
    height = max(1, min(max_pixels, DEFAULT_MAX_OUTPUT_PIXELS) // width)
    return _save(Image.new("RGB", (width, height), (30, 160, 90)), "PNG"), width * height


def _frames(format: str, max_pixels: int, count: int = 3, **params) -> tuple[bytes, int]:
    """``count`` flat frames, each as large as allowed; frame i is grey level 40 * (i + 1)."""
    side = min(math.isqrt(max_pixels), MAX_OUTPUT_SIDE["webp"])
    mode = "L" if format == "GIF" else "RGB"
    frames = [Image.new(mode, (side, side), (40 * (index + 1),) * len(mode)) for index in range(count)]
    return _save(frames[0], format, save_all=True, append_images=frames[1:], **params), side * side


# name -> (build(max_pixels) -> (bytes, declared pixels), options sent with it)
HOSTILE = {
    "flat RGBA PNG": (lambda n: _flat("RGBA", n, (10, 200, 30, 128), "PNG"), {}),
    "16-bit grey PNG": (lambda n: _flat("I;16", n, 40000, "PNG"), {}),
    "CMYK JPEG": (lambda n: _flat("CMYK", n, (10, 80, 200, 5), "JPEG", quality=90), {}),
    "Adobe RGB JPEG": (lambda n: _icc_jpeg(ADOBE_RGB, n), {}),
    "Display P3 JPEG": (lambda n: _icc_jpeg(DISPLAY_P3, n), {}),
    "strip 20000x2": (lambda n: _strip(2, 40000), {}),
    "strip 4 px tall": (lambda n: _strip(4, n), {}),
    "strip 1 px tall": (lambda n: _strip(1, n), {}),
    "too wide for WebP": (lambda n: _too_wide("webp", n), {"format": "webp"}),
    "too wide for JPEG": (lambda n: _too_wide("jpeg", n), {"format": "jpeg"}),
    "GIF, 3 frames": (lambda n: _frames("GIF", n), {}),
    "TIFF, 3 pages": (lambda n: _frames("TIFF", n, compression="tiff_deflate"), {}),
    "WebP, 3 frames": (lambda n: _frames("WEBP", n, lossless=True), {}),
}


def hostile(name: str, max_pixels: int) -> Hostile:
    """The input ``name`` of ``HOSTILE`` at the size ``max_pixels`` allows."""
    build, options = HOSTILE[name]
    data, pixels = build(max_pixels)
    return Hostile(name, data, pixels, options)


# --- the probe: one call in a fresh process, its peak RSS ------------------------------


def _status_bytes(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field_name}")


def _peak_growth(call) -> tuple[int, dict]:
    """Bytes the resident set grew to above where it stood while ``call`` ran, and its outcome."""
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current RSS
    before = _status_bytes("VmRSS")
    try:
        outcome = call()
    except CartoonError as exc:
        outcome = {"error": exc.code, "message": str(exc)}
    return _status_bytes("VmHWM") - before, outcome


def _run_probe(stage: str, data: bytes, settings: dict, options: dict) -> tuple[int, dict]:
    if stage == "decode":  # without the pipeline's imports (torch, dlib): a faster probe
        from cartoon.image import codec

        def call():
            decoded = codec.decode(data, settings.get("max_pixels", codec.DEFAULT_MAX_PIXELS))
            return {"shape": decoded.rgb.shape, "alpha": decoded.alpha is not None, "notices": decoded.notices,
                    "corner": decoded.rgb[0, 0].tolist()}
        return _peak_growth(call)
    from cartoon.image.pipeline import Options, Pipeline, PipelineSettings, Preparer
    from cartoon.image.styles import StyleRegistry

    pipeline_settings = PipelineSettings(**settings)
    request_options = Options(**options)
    if stage == "prepare":
        preparer = Preparer(pipeline_settings, StyleRegistry.from_directory())

        def call():
            job = preparer.prepare(data, request_options)
            return {"output": (job.height, job.width), "pieces": job.background.shape, "notices": job.notices}
    else:
        pipeline = Pipeline(StyleRegistry.from_directory(), pipeline_settings)
        pipeline(np.full((64, 64, 3), 128, np.uint8), Options(style=request_options.style))  # loads the style

        def call():
            result = pipeline(data, request_options)
            return {"output": (result.height, result.width), "bytes": len(result.data), "notices": result.notices}
    return _peak_growth(call)


def measure(stage: str, data: bytes, settings: dict | None = None, options: dict | None = None) -> tuple[int, dict]:
    """Peak RSS growth (bytes) of one call in a fresh process, and what it returned or raised.

    Args:
        stage: "decode" (``codec.decode``), "prepare" (``Preparer.prepare``: decode,
            detect, align, background) or "request" (``Pipeline``: the whole request
            with the shipped default style, loaded before the measurement).
        data: the encoded input.
        settings: ``PipelineSettings`` fields (scalars only).
        options: ``Options`` fields.
    """
    with tempfile.NamedTemporaryFile(suffix=".input") as file:
        file.write(data)
        file.flush()
        command = [sys.executable, "-m", "benchmarks.inputs", "--probe", stage, "--input", file.name,
                   "--settings", json.dumps(settings or {}), "--options", json.dumps(options or {})]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"the {stage} probe failed:\n{completed.stderr[-3000:]}")
    answer = json.loads(completed.stdout.strip().splitlines()[-1])
    return answer["peak_bytes"], answer["outcome"]


def _outcome_text(outcome: dict) -> str:
    if "error" in outcome:
        return outcome["error"]
    shape = outcome.get("output") or outcome["shape"][:2]
    notices = ", ".join(outcome["notices"])
    return f"{shape[1]}x{shape[0]}" + (f" ({notices})" if notices else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-pixels", type=int, default=40_000_000, help="the config's max_pixels")
    parser.add_argument("--only", action="append", choices=list(HOSTILE), help="these inputs only (repeatable)")
    parser.add_argument("--probe", choices=["decode", "prepare", "request"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        peak, outcome = _run_probe(args.probe, Path(args.input).read_bytes(), json.loads(args.settings),
                                   json.loads(args.options))
        print(json.dumps({"peak_bytes": peak, "outcome": outcome}, default=list))
        return
    from benchmarks.common import machine_description, markdown_table

    print(machine_description())
    settings = {"max_pixels": args.max_pixels, "device": "cpu"}
    rows = []
    for name in args.only or HOSTILE:
        hostile_input = hostile(name, args.max_pixels)
        decode_peak, decoded = measure("decode", hostile_input.data, settings)
        request_peak, served = measure("request", hostile_input.data, settings, hostile_input.options)
        rows.append([
            name, f"{len(hostile_input.data) / 1e6:.2f}", f"{hostile_input.pixels / 1e6:.2f}",
            _outcome_text(decoded), f"{decode_peak / 1e6:.0f}", f"{decode_peak / hostile_input.pixels:.1f}",
            _outcome_text(served), f"{request_peak / 1e6:.0f}",
        ])
        print(rows[-1], file=sys.stderr, flush=True)
    print(markdown_table(["input", "MB sent", "MP declared", "decoded", "decode peak MB", "B per px",
                          "request (default config)", "request peak MB"], rows))


if __name__ == "__main__":
    main()
