"""Video files in and out with PyAV: probe, decode frames, encode frames, copy the audio.

PyAV's wheel bundles FFmpeg, so nothing runs outside the process. The video is decoded
frame by frame and re-encoded with the source's timestamps (so its frame rate, variable
or not, and its duration stay), its display matrix (rotation), every audio stream and
the subtitle streams the output container can hold, whose packets are copied untouched.

Limits are not taken from the container's word: ``probe`` measures the duration and
frame count from every video packet's timestamp, and ``frames`` checks each decoded
frame's size and time again, since a header may say 64x48 and the stream decode
4000x3000. Messages never carry the file's path (FFmpeg's own do).
"""

import io
import logging
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

_logger = logging.getLogger(__name__)

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


# A frame rate above any camera's: with ``max_seconds`` it bounds the frame count,
# which the duration alone does not (a stream may stamp thousands of frames a second).
MAX_FPS = 240


@dataclass(frozen=True)
class VideoLimits:
    max_seconds: float = 600.0  # longer videos are refused
    max_pixels: int = 3840 * 2160  # frame width x height; larger frames are refused

    @property
    def max_frames(self) -> float:
        return self.max_seconds * MAX_FPS


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its video, checked by decoding the first frame.

    Attributes:
        width, height: the stored frame size (before rotation).
        rotation: counter-clockwise degrees the display matrix turns a stored frame by
            to show it (0, 90, 180 or -90 for phone videos).
        fps: the average frame rate.
        frames: the video packets counted.
        duration_s: from the first video packet's timestamp to the last one's end, or
            the container's duration if that is longer.
        time_base: the video stream's time base, kept for the output's timestamps.
        audio_codec: the first audio stream's codec, or None without audio.
        limits: what the video was checked against, checked again while it decodes.
    """

    width: int
    height: int
    rotation: int
    fps: Fraction
    frames: int
    duration_s: float
    time_base: Fraction
    audio_codec: str | None
    limits: VideoLimits = VideoLimits()


def _reason(exc: av.FFmpegError) -> str:
    """FFmpeg's reason without the file name it appends (a server path)."""
    return exc.strerror or type(exc).__name__


def probe(source: str | Path, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Opens a video file, checks it against ``limits`` and decodes its first frame.

    The duration and frame count come from the video packets (demuxed, not decoded),
    so a container that declares no duration (as browsers' MediaRecorder writes) or a
    wrong one is measured all the same.

    Raises:
        NotAVideoError: not MP4, MOV, Matroska or WebM, or no video stream.
        CorruptVideoError: the first frame does not decode.
        VideoTooLongError, TooManyPixelsError: over ``limits``.
    """
    try:
        container = av.open(str(source))
    except av.FFmpegError as exc:
        if _has_video_signature(source):
            raise CorruptVideoError(f"the video is broken or truncated: {_reason(exc)}") from exc
        raise NotAVideoError("the file is not a video (MP4, MOV, MKV or WebM)") from exc
    with container:
        if container.format.name not in INPUT_DEMUXERS or not container.streams.video:
            raise NotAVideoError(
                f"expected MP4, MOV, MKV or WebM with a video stream, got {container.format.long_name}"
            )
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_pixels(width, height, limits)
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        time_base = Fraction(stream.time_base)
        declared_s = container.duration / av.time_base if container.duration else 0.0
    packets, timed_s = _count_packets(source, limits)
    duration_s = max(declared_s, timed_s)
    _check_time(duration_s, limits)
    with av.open(str(source)) as container:
        try:
            first = next(container.decode(container.streams.video[0]), None)
        except av.FFmpegError as exc:
            raise CorruptVideoError(f"the video does not decode: {_reason(exc)}") from exc
    if first is None:
        raise CorruptVideoError("the video stream holds no frame")
    _check_pixels(first.width, first.height, limits)
    return VideoInfo(
        width=width,
        height=height,
        rotation=int(round(first.rotation or 0)),
        fps=Fraction(fps),
        frames=packets,
        duration_s=duration_s,
        time_base=time_base,
        audio_codec=audio,
        limits=limits,
    )


def _check_pixels(width: int, height: int, limits: VideoLimits) -> None:
    if width * height > limits.max_pixels:
        raise TooManyPixelsError(
            f"{width}x{height} = {width * height} pixels per frame is over the limit of {limits.max_pixels}"
        )


def _check_time(seconds: float, limits: VideoLimits) -> None:
    if seconds > limits.max_seconds:
        raise VideoTooLongError(f"the video lasts {seconds:.1f} s, over the limit of {limits.max_seconds} s")


def _check_count(frames: int, limits: VideoLimits) -> None:
    if frames > limits.max_frames:
        raise VideoTooLongError(
            f"the video holds over {limits.max_frames:.0f} frames, more than {limits.max_seconds} s at {MAX_FPS} fps"
        )


def _count_packets(source: str | Path, limits: VideoLimits) -> tuple[int, float]:
    """The video packets' count and the seconds their timestamps span, over the limits stopped early.

    Raises:
        CorruptVideoError: the container breaks before its end.
    """
    count, first, end = 0, None, None
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:  # the demuxer's end-of-stream marker
                    continue
                count += 1
                first = stamp if first is None else min(first, stamp)
                stop = stamp + (packet.duration or 0)
                end = stop if end is None else max(end, stop)
                if count % 64 == 0:
                    _check_count(count, limits)
                    _check_time(float((end - first) * stream.time_base), limits)
        except av.FFmpegError as exc:
            raise CorruptVideoError(f"the video is broken: {_reason(exc)}") from exc
        _check_count(count, limits)
        return count, 0.0 if first is None else float((end - first) * stream.time_base)


def _has_video_signature(source: str | Path) -> bool:
    """Whether the file starts as MP4/MOV (an ``ftyp`` box) or Matroska/WebM (EBML) do."""
    with open(source, "rb") as handle:
        head = handle.read(12)
    return head[4:8] == b"ftyp" or head.startswith(b"\x1a\x45\xdf\xa3")


def check_output(source: str | Path, output_format: str) -> None:
    """Refuses an output container that cannot hold every audio stream of the source as it is.

    Raises:
        AudioNotMuxableError: e.g. AAC audio asked into WebM.
    """
    with av.open(str(source)) as container:
        for audio in container.streams.audio:
            if not _muxable(audio, output_format):
                raise AudioNotMuxableError(
                    f"the {audio.codec_context.name} audio cannot go into {output_format} as it is; "
                    f"ask for format=mkv or mp4"
                )


def _muxable(stream, output_format: str) -> bool:
    """Whether the output container takes ``stream``'s packets as they are."""
    with av.open(io.BytesIO(), "w", format=OUTPUT_FORMATS[output_format][0]) as trial:
        try:
            trial.add_stream_from_template(stream)
            trial.start_encoding()
        except (ValueError, av.FFmpegError):
            return False
    return True


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


def frames(source: str | Path, rotation: int, limits: VideoLimits | None = None) -> Iterator[Frame]:
    """Decodes every frame of the first video stream, in presentation order, upright.

    Timestamps are made strictly increasing: a frame stamped at or before the one
    before it (a duplicate, a step back; encoders refuse them), or not stamped, is
    stamped one frame duration after it (its own duration, else the stream's average
    frame interval), and the frames after it keep theirs while they stay ahead.

    Raises:
        CorruptVideoError: a packet does not decode.
        TooManyPixelsError, VideoTooLongError: a decoded frame over ``limits`` (its
            size, its time from the first frame, or the frame count).
    """
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        interval = max(1, round(1 / (rate * stream.time_base)))
        index, first, previous = 0, None, None
        try:
            for frame in container.decode(stream):
                if limits is not None:
                    _check_pixels(frame.width, frame.height, limits)
                    _check_count(index + 1, limits)
                pts = frame.pts
                if pts is None or (previous is not None and pts <= previous):
                    pts = 0 if previous is None else previous + (frame.duration or interval)
                first = pts if first is None else first
                if limits is not None:
                    _check_time(float((pts - first) * stream.time_base), limits)
                previous = pts
                yield Frame(index, pts, float(pts * stream.time_base), upright(frame.to_ndarray(format="rgb24"), rotation))
                index += 1
        except av.FFmpegError as exc:
            raise CorruptVideoError(f"frame {index} does not decode: {_reason(exc)}") from exc


class VideoWriter:
    """Encodes frames with their source timestamps and copies the source's other streams.

    Every audio stream is copied (``check_output`` refused a container that cannot hold
    one), and every subtitle stream the container can hold (MP4 takes mov_text only, so
    an SRT track of a Matroska goes into mkv, not mp4; one left out is logged). Their
    packets are muxed as the video reaches their time, so the file stays interleaved
    and nothing but one packet is held at a time.
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
        self._source = av.open(str(source))
        self._copies = {}
        for stream in [*self._source.streams.audio, *self._source.streams.subtitles]:
            if stream.type == "subtitle" and not _muxable(stream, output_format):
                _logger.warning("a %s subtitle stream cannot go into %s; it is left out",
                                stream.codec_context.name, output_format)
                continue
            self._copies[stream.index] = self.container.add_stream_from_template(stream)
        copied = [self._source.streams[index] for index in self._copies]
        self._packets = self._source.demux(*copied) if copied else iter(())
        self._pending = None

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encodes one (height, width, 3) uint8 frame in the stored orientation at ``pts``."""
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        self._mux_copies_until(float(pts * self.time_base))
        self.container.mux(self.video.encode(frame))

    def _mux_copies_until(self, time_s: float | None) -> None:
        """Copies the other streams' packets up to ``time_s`` (None: all that are left)."""
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
            packet.stream = self._copies[packet.stream.index]
            self.container.mux(packet)
            self._pending = None

    def close(self) -> None:
        """Flushes the encoder, copies the rest of the other streams and finishes the file."""
        self.container.mux(self.video.encode())
        self._mux_copies_until(None)
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
