"""Live: ``GET /v1/live``, a WebSocket carrying camera frames in and cartoon frames out.

``router`` is included in the Ingress's FastAPI app. Each connection is one camera
(``cartoon.video.live.LiveSession``: tracked faces, temporal finish); its frames go
through the served graph, FaceAligner -> Cartoonizer -> Postprocessor, so the
Cartoonizer batches every session's pieces with everyone else's.

Protocol. Binary from the client: one camera frame, JPEG or WebP. Text from the client:
a JSON object of settings (``style``, ``strength``, ``size``, ``format``, ``quality``),
any time; the first may also carry ``api_key``, as browsers cannot set headers on a
WebSocket (other clients may send ``Authorization: Bearer``). The key never goes in the
URL, which proxies log. From the service: ``{"type": "ready"}`` once admitted, then for
each cartoon a ``{"type": "frame"}`` text (its camera frame's ``seq``, timings, drops)
followed by the binary cartoon; ``{"type": "settings"}`` after each change, ``{"type":
"error"}`` for a setting refused (the stream goes on). A client may acknowledge each
cartoon with ``{"ack": seq}``; one that does is held to a few unacknowledged cartoons
(``AckWindow``). Every other problem closes the socket with a code of ``CLOSE_CODES``
and a reason saying what to do.

Bounds: one frame in flight and one waiting per session (the newest wins); sessions per
replica and in total (``LiveSeats``, one small Ray actor per app); an acknowledging
client that acknowledges nothing for ``live_send_timeout_s``, or any client that sends
nothing for ``live_idle_timeout_s``, is closed, so nothing a client does holds memory or
a seat. A client that neither reads nor acknowledges is closed by the proxy's keepalive
pings (uvicorn: unanswered after 20 + 20 s).
"""

import asyncio
import json
import logging
import time
import uuid
from dataclasses import asdict

import numpy as np
import ray
from fastapi import APIRouter, WebSocket
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.websockets import WebSocketDisconnect, WebSocketState

from cartoon.image.faces import Face
from cartoon.image.pipeline import Job, Options
from cartoon.image.styles import StyleRegistry
from cartoon.video.live import (
    AckWindow, LiveError, LiveLimits, LiveSession, NewestFrame, SettingError, check_frame,
)
from cartoon.video.tracking import TrackerSettings
from deployments.settings import AppArgs
from serve_app.access import authorized, resolve_api_key
from serve_app.errors import replica_lost

_logger = logging.getLogger("ray.serve")

# Application close codes (4000-4999), after the HTTP status of the same meaning.
CLOSE_CODES = {
    "session_time": 4000,
    "bad_message": 4400,
    "corrupt_frame": 4400,
    "unauthorized": 4401,
    "slow_client": 4408,
    "idle": 4408,
    "frame_too_large": 4413,
    "unsupported_frame": 4415,
    "service_full": 4503,
    "internal": 1011,
}
MAX_TEXT_CHARS = 4096
UNACKED_CARTOONS = 4  # for a client that acknowledges (cartoon.video.live.AckWindow)  # a settings message; anything longer is not one
# Leases of the total bound are renewed this often and lapse after LEASE_TTL_S, so the
# seats of a replica that died free themselves.
LEASE_RENEW_S = 5.0
LEASE_TTL_S = 20.0


class Closing(Exception):
    """Ends a session with a close code and a reason the client (and the page) shows."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


@ray.remote(num_cpus=0)
class LiveSeats:
    """The live sessions of all Ingress replicas of one app, as leases that lapse unless renewed."""

    def __init__(self):
        self._leases: dict[str, float] = {}

    def _expire(self) -> None:
        now = time.monotonic()
        self._leases = {lease: until for lease, until in self._leases.items() if until > now}

    def take(self, lease: str, limit: int) -> bool:
        self._expire()
        if len(self._leases) >= limit:
            return False
        self._leases[lease] = time.monotonic() + LEASE_TTL_S
        return True

    def renew(self, leases: list[str]) -> None:
        for lease in leases:
            if lease in self._leases:
                self._leases[lease] = time.monotonic() + LEASE_TTL_S

    def give_back(self, lease: str) -> None:
        self._leases.pop(lease, None)


class LiveStages:
    """``cartoon.video.clip.FrameStages`` through the served graph for live frames.

    Unlike a video job's frames (``serve_app.jobs.ServedStages``), a live frame the graph
    cannot take is never sent again: a newer one is on its way, so it is dropped.
    """

    def __init__(self, aligner: DeploymentHandle, cartoonizer: DeploymentHandle, postprocessor: DeploymentHandle,
                 style: str):
        self.aligner = aligner
        self.cartoonizer = cartoonizer.options(multiplexed_model_id=style)
        self.postprocessor = postprocessor

    async def stylize(self, rgb: np.ndarray, faces: list[Face], options: Options) -> Job:
        pieces, full_size = (await self.aligner.prepare_frame.remote(rgb, options, faces)).split_full_size()
        return (await self.cartoonizer.stylize.remote(pieces, finish=False)).with_full_size(full_size)

    async def compose(self, job: Job) -> np.ndarray:
        pieces, full_size = job.split_full_size()
        return await self.postprocessor.compose_frame.remote(pieces, full_size)


class LiveHub:
    """The live sessions of one Ingress replica: its seats and its way to the graph."""

    def __init__(self, args: AppArgs, registry: StyleRegistry, handles: tuple, app_name: str):
        self.args = args
        self.registry = registry
        self.handles = handles
        self.api_key = resolve_api_key(args)
        self.limits = LiveLimits(args.live_max_frame_bytes, args.live_max_frame_pixels, args.live_max_size)
        self.tracker = TrackerSettings(detect_every=args.video_detect_every)
        self.detector = args.pipeline_settings().detector
        self.leases: set[str] = set()
        self.seats = None
        if args.live_sessions_total:
            self.seats = LiveSeats.options(
                name=f"live-seats-{app_name}", namespace="cartoon-live", get_if_exists=True, lifetime="detached",
            ).remote()
            self._renewer = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            if self.leases:
                try:
                    await self.seats.renew.remote(list(self.leases))
                except ray.exceptions.RayError:
                    _logger.warning("live seats could not be renewed", exc_info=True)

    async def take_seat(self) -> str:
        """A lease for one more session.

        Raises:
            Closing: ``service_full`` past either bound.
        """
        if len(self.leases) >= self.args.live_sessions_per_replica:
            raise Closing("service_full", f"the service is full: this replica holds its "
                                          f"{self.args.live_sessions_per_replica} live sessions; try again later")
        lease = uuid.uuid4().hex
        if self.seats is not None and not await self.seats.take.remote(lease, self.args.live_sessions_total):
            raise Closing("service_full", f"the service is full: {self.args.live_sessions_total} live sessions "
                                          "are running; try again later")
        self.leases.add(lease)
        return lease

    def give_back(self, lease: str) -> None:
        self.leases.discard(lease)
        if self.seats is not None:
            self.seats.give_back.remote(lease)

    def session(self) -> LiveSession:
        return LiveSession(lambda style: LiveStages(*self.handles, style), self.registry, self.detector,
                           self.limits, self.tracker)


_hub: LiveHub | None = None


def hub() -> LiveHub:
    """This replica's hub, made on first use from the Ingress's own config and handles."""
    global _hub
    if _hub is None:
        context = serve.get_replica_context()
        ingress = context.servable_object
        _hub = LiveHub(ingress.args, ingress.registry, (ingress.aligner, ingress.cartoonizer, ingress.postprocessor),
                       context.app_name)
    return _hub


router = APIRouter()


class Connection:
    """One client's socket: sends one at a time, text messages parsed and bounded."""

    def __init__(self, websocket: WebSocket, idle_timeout_s: float):
        self.websocket = websocket
        self.idle_timeout_s = idle_timeout_s
        self._sending = asyncio.Lock()

    async def send(self, message: dict | bytes) -> None:
        async with self._sending:
            if isinstance(message, bytes):
                await self.websocket.send_bytes(message)
            else:
                await self.websocket.send_text(json.dumps(message))

    async def receive(self) -> bytes | dict | None:
        """The next message: bytes, a JSON object, or None once the client left.

        Raises:
            Closing: ``idle`` when nothing came in time, ``bad_message`` for text that is
                not a JSON object.
        """
        try:
            message = await asyncio.wait_for(self.websocket.receive(), self.idle_timeout_s)
        except asyncio.TimeoutError as exc:
            raise Closing("idle", f"nothing came from the client for {self.idle_timeout_s:g} s") from exc
        if message["type"] == "websocket.disconnect":
            return None
        if message.get("bytes") is not None:
            return message["bytes"]
        text = message.get("text") or ""
        try:
            parsed = json.loads(text) if len(text) <= MAX_TEXT_CHARS else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise Closing("bad_message", f"a text message must be one JSON object (settings or an ack), at most "
                                         f"{MAX_TEXT_CHARS} characters")
        return parsed

    async def close(self, code: str, reason: str) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            try:
                # A close reason holds at most 123 bytes (RFC 6455).
                await self.websocket.close(CLOSE_CODES[code], f"{code}: {reason}"[:120])
            except (RuntimeError, WebSocketDisconnect):
                pass  # the client left first


async def _first_message(connection: Connection, hub: LiveHub, websocket: WebSocket) -> bytes | dict | None:
    """The client's first message, once it has shown the key (when the service has one)."""
    key = hub.api_key
    if key and authorized(websocket.headers.get("authorization", ""), key):
        key = None
    first = await connection.receive()
    if key is None:
        if isinstance(first, dict):
            first.pop("api_key", None)
        return first
    if first is None:
        return None
    given = first.pop("api_key", "") if isinstance(first, dict) else ""
    if not isinstance(given, str) or not authorized(f"Bearer {given}", key):
        raise Closing("unauthorized", "send the API key as api_key in the first message "
                                      "(or Authorization: Bearer <key>)")
    return first


async def _stream(connection: Connection, session: LiveSession, first: bytes | dict, args: AppArgs) -> None:
    """Reads messages and cartoonizes the newest frame, until the client leaves or a problem closes it."""
    mailbox = NewestFrame()
    window = AckWindow(UNACKED_CARTOONS)
    failed = 0  # frames the graph could not take (full or a replica lost): dropped as well

    async def apply(settings: dict) -> None:
        try:
            await connection.send({"type": "settings", "settings": asdict(session.configure(settings))})
        except SettingError as exc:
            await connection.send({"type": "error", "code": "invalid_setting", "message": str(exc)})

    async def read() -> None:
        seq = 0
        message = first
        while message is not None:
            if isinstance(message, bytes):
                check_frame(message, session.limits)
                mailbox.put(message, seq, time.perf_counter())
                seq += 1
            elif "ack" in message:
                acked = message["ack"]
                if len(message) != 1 or isinstance(acked, bool) or not isinstance(acked, int):
                    raise Closing("bad_message", 'an ack is {"ack": seq}, seq the frame message\'s')
                window.ack(acked)
            else:
                await apply(message)
            message = await connection.receive()

    async def cartoonize() -> None:
        nonlocal failed
        while True:
            data, seq, received_at = await mailbox.take()
            try:
                frame = await session.cartoonize(data, seq, received_at)
            except Exception as exc:
                if isinstance(exc, BackPressureError) or replica_lost(exc):
                    failed += 1
                    continue
                raise
            if not await window.room(args.live_send_timeout_s):
                raise Closing("slow_client", f"{window.size} cartoons were not acknowledged for "
                                             f"{args.live_send_timeout_s:g} s; read them as they come")
            window.sent(frame.seq)
            await connection.send({"type": "frame", "seq": frame.seq, "faces": frame.faces,
                                   "dropped": mailbox.dropped + failed, "batch_sizes": frame.batch_sizes,
                                   "timings": {name: round(ms, 1) for name, ms in frame.timings.items()}})
            await connection.send(frame.data)

    reader, worker = asyncio.ensure_future(read()), asyncio.ensure_future(cartoonize())
    try:
        done, _ = await asyncio.wait({reader, worker}, timeout=args.live_max_session_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if not done:
            # Serve's proxy cuts any request at http_options.request_timeout_s, with no reason
            # given; the service ends the session first, saying so.
            raise Closing("session_time", f"a live session lasts at most {args.live_max_session_s:g} s; "
                                          "reconnect to go on")
        for task in done:
            task.result()  # the reader ended (the client left), or either raised
    finally:
        for task in (reader, worker):
            task.cancel()
        await asyncio.gather(reader, worker, return_exceptions=True)


@router.websocket("/v1/live")
async def live(websocket: WebSocket) -> None:
    """A live camera session; the protocol is in this module's docstring and docs/API.md."""
    live_hub = hub()
    connection = Connection(websocket, live_hub.args.live_idle_timeout_s)
    await websocket.accept()
    lease = None
    try:
        first = await _first_message(connection, live_hub, websocket)
        if first is None:
            return
        lease = await live_hub.take_seat()
        session = await asyncio.to_thread(live_hub.session)
        await connection.send({"type": "ready", "settings": asdict(session.settings),
                               "styles": live_hub.registry.names(),
                               "limits": {"max_frame_bytes": live_hub.limits.max_frame_bytes,
                                          "max_frame_pixels": live_hub.limits.max_frame_pixels,
                                          "max_size": live_hub.limits.max_size}})
        await _stream(connection, session, first, live_hub.args)
    except Closing as closing:
        await connection.close(closing.code, closing.reason)
    except LiveError as error:
        await connection.close(error.code, error.message)
    except WebSocketDisconnect:
        pass
    except Exception:
        _logger.exception("a live session failed")
        await connection.close("internal", "the session failed; this is our bug")
    finally:
        if lease is not None:
            live_hub.give_back(lease)
