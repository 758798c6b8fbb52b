"""GET /v1/live: real WebSocket clients against the served graph (tests/live/conftest.py: an
API key, two sessions in all, short timeouts, a batch wait)."""

import io
import json
import time
from contextlib import contextmanager

import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import clips, photos
from tests.integration.conftest import API_KEY
from tests.live.conftest import LIVE_LIMITS, PREFIX

FRAMES = [photos.encode(rgb, "JPEG", quality=85) for rgb in clips.camera_move(photos.grace_hopper(), 6, 352, 288)]
ANSWER_S = 120  # a frame's cartoon on a loaded 2-core machine


def live_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + PREFIX + "/v1/live"


@contextmanager
def session(base_url: str, hello: dict | None = None, headers: dict | None = None):
    """A connected socket; ``hello`` (the first message) carries the key unless it says otherwise."""
    with connect(live_url(base_url), additional_headers=headers, max_size=None, open_timeout=60) as socket:
        if hello is not None:
            socket.send(json.dumps(hello))
        yield socket


def next_of(socket, kind: str) -> dict:
    while True:
        message = socket.recv(timeout=ANSWER_S)
        if isinstance(message, str) and json.loads(message)["type"] == kind:
            return json.loads(message)


def cartoon(socket) -> tuple[dict, Image.Image]:
    """The next frame message and the binary cartoon after it."""
    frame = next_of(socket, "frame")
    data = socket.recv(timeout=ANSWER_S)
    assert isinstance(data, bytes)
    return frame, Image.open(io.BytesIO(data))


def closed(socket, timeout_s: float = ANSWER_S) -> tuple[int, str]:
    """Reads until the service closes the socket; its close code and reason."""
    deadline = time.monotonic() + timeout_s
    with pytest.raises(ConnectionClosed) as ended:
        while time.monotonic() < deadline:
            socket.recv(timeout=timeout_s)
    return ended.value.rcvd.code, ended.value.rcvd.reason


def test_camera_frames_come_back_as_cartoons_with_timings(live_base_url):
    with session(live_base_url, {"api_key": API_KEY, "format": "webp", "size": 320}) as socket:
        next_of(socket, "ready")
        assert next_of(socket, "settings")["settings"]["format"] == "webp"
        socket.send(FRAMES[0])
        frame, picture = cartoon(socket)
    assert frame["seq"] == 0 and frame["faces"] == 1
    assert (picture.format, picture.size) == ("WEBP", (320, 262))
    assert {"decode", "track", "stylize", "finish", "compose", "encode", "total"} <= set(frame["timings"])


def test_the_key_may_come_as_a_header_and_a_binary_only_client_gets_the_defaults(live_base_url):
    with session(live_base_url, headers={"Authorization": f"Bearer {API_KEY}"}) as socket:
        socket.send(FRAMES[0])
        ready = next_of(socket, "ready")
        frame, picture = cartoon(socket)
    assert ready["settings"]["size"] == 480 and ready["settings"]["style"] == "toon"
    assert picture.format == "JPEG" and picture.size == (352, 288)  # never enlarged to 480


@pytest.mark.parametrize("hello", [{"api_key": "wrong-key"}, {"size": 320}, None])
def test_a_wrong_or_missing_key_closes_with_unauthorized(live_base_url, hello):
    with session(live_base_url, hello) as socket:
        if hello is None:
            socket.send(FRAMES[0])  # a frame first: no key was shown
        code, reason = closed(socket)
    assert code == 4401 and reason.startswith("unauthorized:") and "api_key" in reason
    assert "wrong-key" not in reason


def test_settings_change_mid_stream_and_a_bad_one_is_refused_without_ending_the_stream(live_base_url):
    with session(live_base_url, {"api_key": API_KEY}) as socket:
        socket.send(FRAMES[0])
        _, first = cartoon(socket)
        socket.send(json.dumps({"style": "comic", "size": 176, "strength": 0.5}))
        changed = next_of(socket, "settings")["settings"]
        socket.send(json.dumps({"style": "no-such-style"}))
        refused = next_of(socket, "error")
        socket.send(FRAMES[1])
        _, second = cartoon(socket)
    assert first.size == (352, 288) and second.size == (176, 144)
    assert changed["style"] == "comic" and changed["strength"] == 0.5
    assert refused["code"] == "invalid_setting" and "no-such-style" in refused["message"]


@pytest.mark.parametrize("garbage, code, name", [
    (b"this is not a picture", 4415, "unsupported_frame"),
    ("not json", 4400, "bad_message"),
    (json.dumps([1, 2, 3]), 4400, "bad_message"),
    (json.dumps({"ack": "soon"}), 4400, "bad_message"),
    (b"\xff\xd8\xff" + bytes(LIVE_LIMITS["live_max_frame_bytes"]), 4413, "frame_too_large"),
    (FRAMES[0][:2000], 4400, "corrupt_frame"),
])
def test_garbage_closes_the_session_with_its_reason_and_the_service_goes_on(live_base_url, garbage, code, name):
    with session(live_base_url, {"api_key": API_KEY}) as socket:
        next_of(socket, "ready")
        socket.send(garbage)
        assert closed(socket)[0] == code
    with session(live_base_url, {"api_key": API_KEY}) as socket:
        socket.send(FRAMES[0])
        assert cartoon(socket)[0]["seq"] == 0


def test_past_the_total_bound_a_session_is_refused_as_full_until_one_leaves(live_base_url):
    total = LIVE_LIMITS["live_sessions_total"]
    with (session(live_base_url, {"api_key": API_KEY}) as first,
          session(live_base_url, {"api_key": API_KEY}) as second):
        for socket in (first, second)[:total]:
            next_of(socket, "ready")
        with session(live_base_url, {"api_key": API_KEY}) as third:
            code, reason = closed(third)
        assert code == 4503 and reason.startswith("service_full:") and f"{total} live sessions" in reason
    deadline = time.monotonic() + 30
    while True:  # the seats are given back as the service sees the two leave
        with session(live_base_url, {"api_key": API_KEY}) as again:
            try:
                next_of(again, "ready")
                break
            except ConnectionClosed:
                pass
        assert time.monotonic() < deadline, "the seats were not given back"
        time.sleep(0.5)


def test_a_client_that_stops_taking_cartoons_is_closed_as_slow(live_base_url):
    with session(live_base_url, {"api_key": API_KEY}) as socket:
        socket.send(FRAMES[0])
        frame, _ = cartoon(socket)
        socket.send(json.dumps({"ack": frame["seq"]}))
        # Frames keep coming, nothing is acknowledged any more: after the window of
        # cartoons and the send timeout, the service closes.
        start = time.monotonic()
        for index in range(200):
            try:
                socket.send(FRAMES[index % len(FRAMES)])
            except ConnectionClosed:
                break
            time.sleep(0.1)
        code, reason = closed(socket)
    assert code == 4408 and reason.startswith("slow_client:")
    assert time.monotonic() - start < 200 * 0.1 + ANSWER_S


def test_the_newest_frame_wins_and_two_sessions_ride_in_one_batch(live_base_url):
    with (session(live_base_url, {"api_key": API_KEY}) as first,
          session(live_base_url, {"api_key": API_KEY}) as second):
        for socket in (first, second):
            next_of(socket, "ready")
        for frame in FRAMES:  # a burst: all but the first and the last wait and are replaced
            first.send(frame)
            second.send(frame)
        answers = [[cartoon(socket)[0] for _ in range(2)] for socket in (first, second)]
    for frames in answers:
        assert [frame["seq"] for frame in frames] == [0, len(FRAMES) - 1]
        assert frames[-1]["dropped"] == len(FRAMES) - 2
    assert max(size for frames in answers for frame in frames for size in frame["batch_sizes"]) >= 2
