"""Live: a camera's frames cartoonized as they arrive, the newest frame first.

Transport-free: ``serve_app.live`` carries the frames over a WebSocket and gives a
session ``FrameStages`` that send each frame through the served graph (where the
Cartoonizer batches every session's pieces together); the unit tests run the stages in
this process. What one camera needs in order (its face tracks, its temporal finish,
its previous frame) lives in its ``LiveSession``, so its frames are finished as a
video's are (``cartoon.video.clip``).

A session holds at most two frames: the one in flight and the newest one waiting
(``NewestFrame``). A frame that arrives while another waits replaces it, so a camera
faster than the service costs dropped frames, never latency or memory.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from cartoon.errors import CartoonError, TooManyPixelsError
from cartoon.image import codec
from cartoon.image.compose import resize_to
from cartoon.image.faces import DetectorConfig, FaceDetector
from cartoon.image.finish import FINISHES, Hysteresis, TemporalFinish
from cartoon.image.pipeline import Options
from cartoon.image.styles import StyleRegistry
from cartoon.video.clip import FrameStages, finish_tracked_frame
from cartoon.video.tracking import FaceTracker, TrackerSettings

OUTPUT_FORMATS = ("jpeg", "webp")
MIN_SIZE = 64


class LiveError(Exception):
    """A client's mistake that ends its session; ``code`` names it for the transport."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class SettingError(Exception):
    """A setting the client asked for that cannot be had; the session goes on as it was."""


@dataclass(frozen=True)
class LiveLimits:
    """What the service takes from a live client (the operator's ``AppArgs``)."""

    max_frame_bytes: int = 1_000_000  # an encoded camera frame
    max_frame_pixels: int = 1920 * 1080  # a camera frame's width x height, read from its header
    max_size: int = 1280  # the longest cartoon side a client may ask for


@dataclass(frozen=True)
class LiveSettings:
    """A session's choices; a JSON text message changes any of them mid-stream."""

    style: str | None = None  # None: the registry's default
    strength: float = 1.0  # 1 = all cartoon, 0 = the camera's picture
    size: int = 480  # the cartoon's long side, px (a smaller camera frame keeps its size)
    format: str = "jpeg"  # jpeg | webp
    quality: int = 80  # 1..100

    def updated(self, changes: dict, limits: LiveLimits) -> "LiveSettings":
        """These settings with ``changes`` applied, each checked.

        Raises:
            SettingError: an unknown name or a value out of its range.
        """
        unknown = sorted(set(changes) - set(asdict(self)))
        if unknown:
            raise SettingError(f"unknown settings {unknown}; the settings are {sorted(asdict(self))}")
        style = changes.get("style", self.style)
        strength = changes.get("strength", self.strength)
        size = changes.get("size", self.size)
        format = changes.get("format", self.format)
        quality = changes.get("quality", self.quality)
        if style is not None and not isinstance(style, str):
            raise SettingError("style must be a style name from GET /v1/styles")
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.0 <= strength <= 1.0:
            raise SettingError("strength must be a number from 0 to 1")
        if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= limits.max_size:
            raise SettingError(f"size must be a whole number of pixels from {MIN_SIZE} to {limits.max_size}")
        if format not in OUTPUT_FORMATS:
            raise SettingError(f"format must be one of {list(OUTPUT_FORMATS)}")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise SettingError("quality must be a whole number from 1 to 100")
        return LiveSettings(style, float(strength), size, format, quality)


def check_frame(data: bytes, limits: LiveLimits) -> None:
    """Refuses, on arrival, a frame that is too large or plainly not a JPEG or WebP picture.

    Raises:
        LiveError: ``frame_too_large`` or ``unsupported_frame``.
    """
    if len(data) > limits.max_frame_bytes:
        raise LiveError("frame_too_large", f"a frame of {len(data)} bytes is over the limit of "
                                           f"{limits.max_frame_bytes}")
    is_jpeg = data[:3] == b"\xff\xd8\xff"
    is_webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    if not (is_jpeg or is_webp):
        raise LiveError("unsupported_frame", "a binary message must be one camera frame, JPEG or WebP")


def decode_frame(data: bytes, limits: LiveLimits, size: int) -> np.ndarray:
    """The frame as (H, W, 3) uint8, its long side shrunk to ``size`` (never enlarged).

    Raises:
        LiveError: ``frame_too_large`` (pixels, from the header) or ``corrupt_frame``.
    """
    try:
        rgb = codec.decode(data, limits.max_frame_pixels).rgb
    except TooManyPixelsError as exc:
        raise LiveError("frame_too_large", str(exc)) from exc
    except CartoonError as exc:
        raise LiveError("corrupt_frame", f"a frame could not be read: {exc}") from exc
    height, width = rgb.shape[:2]
    scale = min(1.0, size / max(height, width))
    if scale < 1.0:
        rgb = resize_to(rgb, max(1, round(height * scale)), max(1, round(width * scale)))
    return rgb


class NewestFrame:
    """A one-frame mailbox: a frame put while another waits replaces it (counted in ``dropped``)."""

    def __init__(self):
        self._waiting: tuple | None = None
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, *frame) -> None:
        if self._waiting is not None:
            self.dropped += 1
        self._waiting = frame
        self._ready.set()

    async def take(self) -> tuple:
        """The newest frame, once there is one; the mailbox is then empty."""
        await self._ready.wait()
        self._ready.clear()
        frame, self._waiting = self._waiting, None
        return frame


class AckWindow:
    """Cartoons sent but not acknowledged, for a client that acknowledges them.

    A WebSocket send never waits (Serve's replica queues every message for its proxy),
    so whether a client reads can only be seen from what it says: a client that sent
    one ``{"ack": seq}`` is held to at most ``size`` cartoons unacknowledged; a client
    that never acknowledges is held by the proxy's keepalive pings instead.
    """

    def __init__(self, size: int):
        self.size = size
        self._unacked: deque[int] = deque()
        self._acking = False
        self._room = asyncio.Event()
        self._room.set()

    def sent(self, seq: int) -> None:
        if self._acking:
            self._unacked.append(seq)
            if len(self._unacked) >= self.size:
                self._room.clear()

    def ack(self, seq: int) -> None:
        """Every cartoon up to camera frame ``seq`` was taken."""
        self._acking = True
        while self._unacked and self._unacked[0] <= seq:
            self._unacked.popleft()
        if len(self._unacked) < self.size:
            self._room.set()

    async def room(self, timeout_s: float) -> bool:
        """Whether another cartoon may be sent within ``timeout_s``."""
        try:
            await asyncio.wait_for(self._room.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False


@dataclass
class LiveFrame:
    """One cartoon frame and what the client is told about it."""

    data: bytes
    seq: int  # the index of the camera frame it was made from, counted from 0 on arrival
    faces: int
    timings: dict[str, float] = field(default_factory=dict)  # stage -> ms; "total" from arrival
    batch_sizes: list[int] = field(default_factory=list)  # of the UNet batches its pieces rode in


class LiveSession:
    """One camera's state: settings, face tracks and temporal finish, frame after frame.

    ``cartoonize`` must not be called again before the previous call returned: frames
    of one session are finished in order (``serve_app.live`` runs one at a time).
    """

    def __init__(self, stages_for: Callable[[str], FrameStages], registry: StyleRegistry,
                 detector: DetectorConfig, limits: LiveLimits = LiveLimits(),
                 tracker: TrackerSettings = TrackerSettings(), hysteresis: Hysteresis = Hysteresis()):
        self._stages_for = stages_for
        self._registry = registry
        self.limits = limits
        self._tracker_settings = tracker
        self._hysteresis = hysteresis
        self._detector = FaceDetector(detector)
        self.settings = LiveSettings(style=registry.default)
        self._stages = stages_for(registry.default)
        self._temporal = self._temporal_finish(registry.default)
        self._restart()

    def _temporal_finish(self, style: str) -> TemporalFinish | None:
        finish = self._registry.get(style).finish
        return TemporalFinish(FINISHES[finish], self._hysteresis) if finish else None

    def _restart(self) -> None:
        """Forgets faces and the previous frame: the next frame is finished as a still."""
        self._tracker = FaceTracker(self._detector, self._tracker_settings)
        self._previous: np.ndarray | None = None

    def configure(self, changes: dict) -> LiveSettings:
        """Applies a settings message; the next frame uses it.

        Raises:
            SettingError: the settings stay as they were.
        """
        settings = self.settings.updated(changes, self.limits)
        try:
            style = self._registry.get(settings.style).name
        except KeyError as exc:
            raise SettingError(exc.args[0]) from exc
        settings = replace(settings, style=style)
        if style != self.settings.style:
            self._stages = self._stages_for(style)
            self._temporal = self._temporal_finish(style)
        self.settings = settings
        return settings

    async def cartoonize(self, data: bytes, seq: int, received_at: float) -> LiveFrame:
        """One camera frame (checked by ``check_frame``) to its encoded cartoon.

        Args:
            received_at: ``time.perf_counter()`` when the frame arrived (the tracker's
                clock, and the start of ``total``).

        Raises:
            LiveError: the frame cannot be read; stage errors pass through as they are.
        """
        settings, stages, temporal = self.settings, self._stages, self._temporal
        timings = {"wait": (time.perf_counter() - received_at) * 1000.0}

        async def timed(name: str, step, *args):
            start = time.perf_counter()
            try:
                return await step(*args)
            finally:
                timings[name] = timings.get(name, 0.0) + (time.perf_counter() - start) * 1000.0

        rgb = await timed("decode", asyncio.to_thread, decode_frame, data, self.limits, settings.size)
        if self._previous is not None and self._previous.shape != rgb.shape:
            self._restart()  # a new size: the tracks' coordinates and the flow no longer hold
        tracked, cut = await timed("track", asyncio.to_thread, self._tracker.update, rgb, received_at)
        options = Options(style=settings.style, strength=settings.strength)
        job = await timed("stylize", stages.stylize, rgb, [t.face for t in tracked], options)
        if temporal is not None:
            job = await timed("finish", asyncio.to_thread, finish_tracked_frame, temporal, job,
                              [t.track_id for t in tracked], None if cut else self._previous, rgb)
        self._previous = rgb
        picture = await timed("compose", stages.compose, job)
        encoded = await timed("encode", asyncio.to_thread, codec.encode, picture, settings.format, settings.quality)
        for stage in ("align", "background", "unet"):
            if stage in job.timings:
                timings[stage] = job.timings[stage]
        timings["total"] = (time.perf_counter() - received_at) * 1000.0
        return LiveFrame(encoded, seq, len(tracked), timings, list(job.batch_sizes))
