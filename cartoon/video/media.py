"""Video files in and out with PyAV: probe, decode frames, encode frames, copy the audio.

PyAV's wheel bundles FFmpeg, so nothing runs outside the process. The video is decoded
frame by frame and re-encoded with the source's timestamps (so its frame rate, variable
or not, and its duration stay), its display matrix (rotation) and its audio stream,
whose packets are copied untouched.
"""

import io
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cartoon.errors import (
    AudioNotMuxableError,
    CorruptVideoError,
    NotAVideoError,
    TooManyPixelsError,
    VideoTooLongError,
)

# Output container -> (FFmpeg muxer, video encoder, encoder options, media type).
# H.264 (libx264) where the container takes it; WebM takes VP8/VP9/AV1 only.
OUTPUT_FORMATS = {
    "mp4": ("mp4", "libx264", {"crf": "18", "preset": "veryfast"}, "video/mp4"),
    "mov": ("mov", "libx264", {"crf": "18", "preset": "veryfast"}, "video/quicktime"),
    "mkv": ("matroska", "libx264", {"crf": "18", "preset": "veryfast"}, "video/x-matroska"),
    "webm": ("webm", "libvpx-vp9", {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"}, "video/webm"),
}
# FFmpeg demuxers of the containers we take: MP4 and MOV share one, MKV and WebM another.
INPUT_DEMUXERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})


@dataclass(frozen=True)
class VideoLimits:
    max_seconds: float = 600.0  # longer videos are refused
    max_pixels: int = 3840 * 2160  # frame width x height; larger frames are refused


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its video, checked by decoding the first frame.

    Attributes:
        width, height: the stored frame size (before rotation).
        rotation: counter-clockwise degrees the display matrix turns a stored frame by
            to show it (0, 90, 180 or -90 for phone videos).
        fps: the average frame rate.
        frames: the frame count the container declares, else duration x fps rounded.
        duration_s: the container's duration.
        time_base: the video stream's time base, kept for the output's timestamps.
        audio_codec: the audio stream's codec, or None without audio.
    """

    width: int
    height: int
    rotation: int
    fps: Fraction
    frames: int
    duration_s: float
    time_base: Fraction
    audio_codec: str | None


def probe(source: str | Path, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Opens a video file, checks it against ``limits`` and decodes its first frame.

    Raises:
        NotAVideoError: not MP4, MOV, Matroska or WebM, or no video stream.
        CorruptVideoError: the first frame does not decode.
        VideoTooLongError, TooManyPixelsError: over ``limits``.
    """
    try:
        container = av.open(str(source))
    except av.FFmpegError as exc:
        if _has_video_signature(source):
            raise CorruptVideoError(f"the video is broken or truncated: {exc}") from exc
        raise NotAVideoError("the file is not a video (MP4, MOV, MKV or WebM)") from exc
    with container:
        if container.format.name not in INPUT_DEMUXERS or not container.streams.video:
            raise NotAVideoError(
                f"expected MP4, MOV, MKV or WebM with a video stream, got {container.format.long_name}"
            )
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_pixels:
            raise TooManyPixelsError(
                f"{width}x{height} = {width * height} pixels per frame is over the limit of {limits.max_pixels}"
            )
        duration_s = _duration_s(container, stream)
        if duration_s > limits.max_seconds:
            raise VideoTooLongError(f"the video lasts {duration_s:.1f} s, over the limit of {limits.max_seconds} s")
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise CorruptVideoError(f"the video does not decode: {exc}") from exc
        if first is None:
            raise CorruptVideoError("the video stream holds no frame")
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        return VideoInfo(
            width=width,
            height=height,
            rotation=int(round(first.rotation or 0)),
            fps=Fraction(fps),
            frames=stream.frames or max(1, round(duration_s * float(fps))),
            duration_s=duration_s,
            time_base=Fraction(stream.time_base),
            audio_codec=audio,
        )


def _has_video_signature(source: str | Path) -> bool:
    """Whether the file starts as MP4/MOV (an ``ftyp`` box) or Matroska/WebM (EBML) do."""
    with open(source, "rb") as handle:
        head = handle.read(12)
    return head[4:8] == b"ftyp" or head.startswith(b"\x1a\x45\xdf\xa3")


def _duration_s(container, stream) -> float:
    if container.duration:
        return container.duration / av.time_base
    if stream.duration:
        return float(stream.duration * stream.time_base)
    return 0.0


def check_output(source: str | Path, output_format: str) -> None:
    """Refuses an output container that cannot hold the source's audio packets as they are.

    Raises:
        AudioNotMuxableError: e.g. AAC audio asked into WebM.
    """
    muxer = OUTPUT_FORMATS[output_format][0]
    with av.open(str(source)) as container:
        if not container.streams.audio:
            return
        audio = container.streams.audio[0]
        with av.open(io.BytesIO(), "w", format=muxer) as trial:
            try:
                trial.add_stream_from_template(audio)
                trial.start_encoding()
            except (ValueError, av.FFmpegError) as exc:
                raise AudioNotMuxableError(
                    f"the {audio.codec_context.name} audio cannot go into {output_format} as it is; "
                    f"ask for format=mkv or mp4"
                ) from exc


@dataclass
class Frame:
    """One decoded frame, upright.

    Attributes:
        index: position in decoding order, from 0.
        pts: the presentation timestamp in the video stream's time base.
        time_s: pts in seconds (the tracker's clock).
        rgb: (H, W, 3) uint8, turned upright by the display matrix.
    """

    index: int
    pts: int
    time_s: float
    rgb: np.ndarray


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """A stored frame turned as the display matrix shows it (multiples of 90 degrees)."""
    return np.ascontiguousarray(np.rot90(rgb, (rotation // 90) % 4))


def stored(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """The inverse of ``upright``: an upright frame turned back to the stored orientation."""
    return np.ascontiguousarray(np.rot90(rgb, -(rotation // 90) % 4))


def frames(source: str | Path, rotation: int) -> Iterator[Frame]:
    """Decodes every frame of the first video stream, in presentation order, upright.

    Raises:
        CorruptVideoError: a packet does not decode.
    """
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        try:
            for frame in container.decode(stream):
                pts = frame.pts if frame.pts is not None else index
                yield Frame(index, pts, float(pts * stream.time_base), upright(frame.to_ndarray(format="rgb24"), rotation))
                index += 1
        except av.FFmpegError as exc:
            raise CorruptVideoError(f"frame {index} does not decode: {exc}") from exc


class VideoWriter:
    """Encodes frames with their source timestamps and copies the source's audio packets.

    Audio packets are muxed as the video reaches their time, so the file stays
    interleaved and nothing but one packet of audio is held at a time.
    """

    def __init__(self, destination: str | Path, source: str | Path, info: VideoInfo, output_format: str,
                 width: int, height: int):
        muxer, encoder, options, _ = OUTPUT_FORMATS[output_format]
        self.container = av.open(str(destination), "w", format=muxer)
        self.video = self.container.add_stream(encoder, rate=info.fps, options=options)
        self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
        self.video.time_base = info.time_base
        self.video.codec_context.time_base = info.time_base
        if info.rotation:
            self.video.set_display_rotation(info.rotation)
        self.time_base = info.time_base
        self._source = None
        self._audio_in = self._audio_out = None
        self._pending = None
        if info.audio_codec:
            self._source = av.open(str(source))
            self._audio_in = self._source.streams.audio[0]
            self._audio_out = self.container.add_stream_from_template(self._audio_in)
            self._packets = self._source.demux(self._audio_in)

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encodes one (height, width, 3) uint8 frame in the stored orientation at ``pts``."""
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        self._mux_audio_until(float(pts * self.time_base))
        self.container.mux(self.video.encode(frame))

    def _mux_audio_until(self, time_s: float | None) -> None:
        """Copies audio packets up to ``time_s`` (None: all that are left)."""
        if self._audio_out is None:
            return
        while True:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    return
            packet = self._pending
            if packet.dts is None:  # the demuxer's end-of-stream marker
                self._pending = None
                continue
            if time_s is not None and packet.pts is not None and float(packet.pts * packet.time_base) > time_s:
                return
            packet.stream = self._audio_out
            self.container.mux(packet)
            self._pending = None

    def close(self) -> None:
        """Flushes the encoder, copies the rest of the audio and finishes the file."""
        self.container.mux(self.video.encode())
        self._mux_audio_until(None)
        self.abort()

    def abort(self) -> None:
        """Closes the files without flushing (a cancelled or failed job)."""
        if self._source is not None:
            self._source.close()
            self._source = None
        self.container.close()


def even_size(height: int, width: int) -> tuple[int, int]:
    """The size rounded down to even sides: YUV 4:2:0 encoders need them."""
    return max(2, height - height % 2), max(2, width - width % 2)
