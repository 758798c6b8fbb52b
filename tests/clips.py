"""Small test videos made from the packaged photos: a slow camera move, a sine tone muxed by PyAV."""

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from tests import photos

AUDIO_RATE = 16000
TONE_HZ = 440.0


def camera_move(photo: np.ndarray, frames: int, width: int, height: int) -> list[np.ndarray]:
    """Frames of a slow zoom-in (8 % over the clip) with a drift to the right, as a handheld camera."""
    photo_height, photo_width = photo.shape[:2]
    out = []
    for index in range(frames):
        progress = index / max(1, frames - 1)
        scale = min(photo_width / width, photo_height / height) * (1.0 - 0.08 * progress)
        centre_x = photo_width / 2 + 0.04 * photo_width * progress
        centre_y = photo_height / 2
        matrix = np.array([[1 / scale, 0, width / 2 - centre_x / scale],
                           [0, 1 / scale, height / 2 - centre_y / scale]])
        out.append(cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_AREA,
                                  borderMode=cv2.BORDER_REFLECT))
    return out


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    fps: int = 12,
    audio: bool = True,
    rotation: int = 0,
    container: str = "mp4",
    codec: str = "libx264",
    audio_codec: str = "aac",
) -> Path:
    """Encodes upright frames (stored turned by ``rotation``, with a display matrix saying so)
    and, with ``audio``, a sine tone lasting as long as the video."""
    stored = [np.ascontiguousarray(np.rot90(frame, -(rotation // 90) % 4)) for frame in frames]
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=fps)
        stream.height, stream.width = stored[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        sound = output.add_stream(audio_codec, rate=AUDIO_RATE, layout="mono") if audio else None
        for index, rgb in enumerate(stored):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
        if sound is not None:
            samples = round(len(frames) / fps * AUDIO_RATE)
            tone = 0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(samples) / AUDIO_RATE)
            chunk = 1024
            for start in range(0, samples, chunk):
                frame = av.AudioFrame.from_ndarray(tone[None, start:start + chunk].astype(np.float32),
                                                   format="fltp", layout="mono")
                frame.sample_rate, frame.pts = AUDIO_RATE, start
                output.mux(sound.encode(frame))
            output.mux(sound.encode())
    return path


def portrait_clip(path: Path, frames: int = 24, fps: int = 12, **kwargs) -> Path:
    """Grace Hopper, 288x352, a slow zoom: 2 s at 12 fps by default, with a tone."""
    return write_clip(path, camera_move(photos.grace_hopper(), frames, 288, 352), fps, **kwargs)


def astronaut_clip(path: Path, frames: int = 24, fps: int = 12, **kwargs) -> Path:
    """The astronaut, 320x320, a slow zoom and drift."""
    return write_clip(path, camera_move(photos.astronaut(), frames, 320, 320), fps, **kwargs)


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    """Raw 4:2:0 frames in a YUV4MPEG2 file: what Chromium plays as a fake camera
    (``--use-file-for-fake-video-capture``). Sides must be even."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as output:
        output.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            output.write(b"FRAME\n" + cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path
