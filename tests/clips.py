"""Short real video clips for the tests, made with PyAV from the photos of tests/photos.py."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from tests import photos

SAMPLE_RATE = 48_000
TONE_HZ = 440.0


def panning_frames(rgb: np.ndarray, count: int, side: int) -> list[np.ndarray]:
    """``count`` square frames, ``side`` px, of a window sliding slowly across the photo:
    every frame differs, as in a real clip, and the face stays in view."""
    height, width = rgb.shape[:2]
    window = min(height, width) * 7 // 8
    frames = []
    for index in range(count):
        offset = (min(height, width) - window) * index // max(count - 1, 1)
        crop = rgb[offset:offset + window, offset:offset + window]
        frames.append(np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.LANCZOS)))
    return frames


def write_clip(path: Path, seconds: float = 1.5, fps: int = 10, side: int = 256, audio: bool = True) -> Path:
    """An H.264 clip of the astronaut (MP4, or whatever container the suffix names), with
    a 440 Hz tone as its sound (AAC; Opus in WebM)."""
    frames = panning_frames(photos.astronaut(), round(seconds * fps), side)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libvpx-vp9" if path.suffix == ".webm" else "libx264", rate=fps)
        video.width = video.height = side
        video.pix_fmt = "yuv420p"
        sound = None
        if audio:
            sound = container.add_stream("libopus" if path.suffix == ".webm" else "aac", rate=SAMPLE_RATE)
            sound.layout = "mono"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            samples = round(seconds * SAMPLE_RATE)
            tone = 0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(samples) / SAMPLE_RATE)
            chunk = 960
            for start in range(0, samples, chunk):
                piece = tone[start:start + chunk].astype(np.float32)[None, :]
                frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
                frame.sample_rate, frame.pts = SAMPLE_RATE, start
                container.mux(sound.encode(frame))
            container.mux(sound.encode())
    return path
