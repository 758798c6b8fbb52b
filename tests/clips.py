"""Small test videos made from the packaged photos: a slow camera move, sine tones muxed by PyAV;
and hostile ones: no declared duration, frames larger than the header says, stamps repeated."""

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
    tones_hz: tuple[float, ...] = (TONE_HZ,),
    subtitles: tuple[str, ...] = (),
    options: dict | None = None,
) -> Path:
    """Encodes upright frames (stored turned by ``rotation``, with a display matrix saying so)
    and, with ``audio``, one audio stream per tone of ``tones_hz`` lasting as long as the video,
    and one SubRip stream per text of ``subtitles`` (shown for the first second). ``options``
    go to the muxer (Matroska's ``live`` writes no duration, as MediaRecorder does)."""
    stored = [np.ascontiguousarray(np.rot90(frame, -(rotation // 90) % 4)) for frame in frames]
    with av.open(str(path), "w", format=container, options=options or {}) as output:
        stream = output.add_stream(codec, rate=fps)
        stream.height, stream.width = stored[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        sounds = [output.add_stream(audio_codec, rate=AUDIO_RATE, layout="mono") for _ in tones_hz] if audio else []
        texts = []
        for text in subtitles:
            track = output.add_stream("subrip")
            track.codec_context.time_base = track.time_base = Fraction(1, 1000)
            track.codec_context.subtitle_header = b"[Script Info]\n"  # FFmpeg's text encoders need one
            texts.append((track, text))
        for index, rgb in enumerate(stored):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
        for sound, tone_hz in zip(sounds, tones_hz):
            samples = round(len(frames) / fps * AUDIO_RATE)
            tone = 0.3 * np.sin(2 * np.pi * tone_hz * np.arange(samples) / AUDIO_RATE)
            chunk = 1024
            for start in range(0, samples, chunk):
                frame = av.AudioFrame.from_ndarray(tone[None, start:start + chunk].astype(np.float32),
                                                   format="fltp", layout="mono")
                frame.sample_rate, frame.pts = AUDIO_RATE, start
                output.mux(sound.encode(frame))
            output.mux(sound.encode())
        for track, text in texts:
            packet = av.Packet(text.encode())
            packet.stream, packet.time_base = track, Fraction(1, 1000)
            packet.pts = packet.dts = 0
            packet.duration = 1000
            output.mux(packet)
    return path


def mjpeg_clip(path: Path, frames: list[np.ndarray], stamps: list[int] | None = None, fps: int = 12) -> Path:
    """A Matroska of Motion JPEG frames whose header declares the first frame's size.

    Every frame is a JPEG of its own size, so a later frame may be larger than the header
    says; ``stamps`` (in 1/fps, one per frame, default 0, 1, 2...) are written as they
    are, repeated ones included (Matroska takes those).
    """
    stamps = list(range(len(frames))) if stamps is None else stamps
    with av.open(str(path), "w", format="matroska") as output:
        stream = output.add_stream("mjpeg", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuvj420p"
        for index, (rgb, stamp) in enumerate(zip(frames, stamps)):
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.height, encoder.width = rgb.shape[:2]
            encoder.pix_fmt, encoder.time_base = "yuvj420p", Fraction(1, fps)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in encoder.encode(frame):
                packet.stream, packet.time_base = stream, Fraction(1, fps)
                packet.pts = packet.dts = stamp
                output.mux(packet)
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
