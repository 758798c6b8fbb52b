"""PNG encoders side by side: time and size for a photo and for the served cartoon.

The service answers with PNG by default, and on a 1024 px cartoon encoding is about a
tenth of the CPU time of a request. This prints, for each picture, every encoder's
median time over ``--repeats`` runs, on one thread, and its output size. All encoders
are lossless, so size is their only difference besides time.

Usage:
    python -m benchmarks.encode [--side 1024] [--repeats 20]
"""

import argparse
import io
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmarks.common import machine_description, markdown_table, median
from cartoon.image import codec
from cartoon.image.pipeline import Options, Pipeline, PipelineSettings
from cartoon.image.styles import StyleRegistry
from tests import photos


def _pillow(rgb: np.ndarray) -> bytes:
    """Pillow at level 1 with run-length matching and libpng's per-row filter choice."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buffer.getvalue()


def _opencv(filter_flag: int):
    def encode(rgb: np.ndarray) -> bytes:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
                  cv2.IMWRITE_PNG_FILTER, filter_flag]
        return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)[1].tobytes()
    return encode


ENCODERS = {
    "Pillow, adaptive filter (before)": _pillow,
    "served: cartoon.image.codec.encode (OpenCV, Paeth)": lambda rgb: codec.encode(rgb, "png"),
    "OpenCV, no filter": _opencv(cv2.IMWRITE_PNG_FILTER_NONE),
    "OpenCV, Sub": _opencv(cv2.IMWRITE_PNG_FILTER_SUB),
    "OpenCV, Up": _opencv(cv2.IMWRITE_PNG_FILTER_UP),
}


def pictures(side: int) -> dict[str, np.ndarray]:
    """The astronaut photo at ``side`` px and the default style's served cartoon of it."""
    photo = photos.astronaut()
    photo = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)
    pipeline = Pipeline(StyleRegistry.from_directory(Path("cartoon/styles")), PipelineSettings(device="cpu"))
    cartoon = codec.decode(pipeline(photo, Options()).data).rgb
    return {f"photo {side} px": photo, f"cartoon {side} px": cartoon}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(machine_description())
    rows = []
    for label, rgb in pictures(args.side).items():
        reference = None
        for name, encode in ENCODERS.items():
            encode(rgb)
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                data = encode(rgb)
                seconds.append(time.perf_counter() - start)
            assert np.array_equal(codec.decode(data).rgb, rgb), f"{name} is not lossless"
            reference = reference or median(seconds)
            rows.append([label, name, f"{median(seconds) * 1000:.1f}", f"{reference / median(seconds):.2f}x",
                         f"{len(data) / 1024:.0f}"])
    print(markdown_table(["picture", "encoder", "ms (median)", "speed vs before", "KiB"], rows))


if __name__ == "__main__":
    main()
