"""Live sessions without a transport: settings, frame checks, the newest-frame mailbox, and
camera frames through the real stages in this process (``LocalStages``)."""

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

from cartoon.image.faces import DetectorConfig
from cartoon.image.pipeline import Options, Pipeline
from cartoon.image.styles import StyleRegistry
from cartoon.video.clip import LocalStages
from cartoon.video.live import (
    AckWindow, LiveError, LiveLimits, LiveSession, LiveSettings, NewestFrame, SettingError, check_frame, decode_frame,
)
from tests import clips, photos

LIMITS = LiveLimits(max_frame_bytes=200_000, max_frame_pixels=640 * 480, max_size=640)


def jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    return photos.encode(rgb, "JPEG", quality=quality)


@pytest.mark.parametrize("changes, complaint", [
    ({"colour": "red"}, "unknown settings ['colour']"),
    ({"strength": 1.5}, "strength"),
    ({"strength": True}, "strength"),
    ({"size": 32}, "size"),
    ({"size": 641}, "size"),
    ({"size": 320.5}, "size"),
    ({"format": "png"}, "format"),
    ({"quality": 0}, "quality"),
    ({"style": 3}, "style"),
])
def test_a_bad_setting_is_refused_by_name(changes, complaint):
    with pytest.raises(SettingError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        LiveSettings().updated(changes, LIMITS)


def test_settings_change_only_what_is_named():
    changed = LiveSettings(style="toon").updated({"strength": 0.5, "size": 320, "format": "webp"}, LIMITS)
    assert changed == LiveSettings("toon", 0.5, 320, "webp", 80)


def test_a_frame_over_the_byte_limit_or_not_jpeg_or_webp_is_refused_on_arrival():
    small = photos.astronaut()[:64, :64]
    check_frame(jpeg(small), LIMITS)
    check_frame(photos.encode(small, "WEBP"), LIMITS)
    with pytest.raises(LiveError) as refused:
        check_frame(b"\xff\xd8\xff" + bytes(LIMITS.max_frame_bytes), LIMITS)
    assert refused.value.code == "frame_too_large"
    for garbage in (photos.encode(small, "PNG"), b"hello", b"", b"RIFF\0\0\0\0WAVE"):
        with pytest.raises(LiveError) as refused:
            check_frame(garbage, LIMITS)
        assert refused.value.code == "unsupported_frame"


def test_a_frame_is_shrunk_to_the_size_asked_and_never_enlarged():
    frame = jpeg(photos.astronaut()[:480, :320])  # 320x480
    assert decode_frame(frame, LIMITS, 240).shape == (240, 160, 3)
    assert decode_frame(frame, LIMITS, 640).shape == (480, 320, 3)


def test_a_broken_or_oversized_frame_ends_the_session_with_its_reason():
    with pytest.raises(LiveError) as refused:
        decode_frame(jpeg(photos.astronaut())[:3000], LIMITS, 480)
    assert refused.value.code == "corrupt_frame"
    with pytest.raises(LiveError) as refused:
        decode_frame(jpeg(np.zeros((481, 640, 3), np.uint8)), LIMITS, 480)
    assert refused.value.code == "frame_too_large"


def test_the_newest_frame_replaces_the_one_waiting_and_counts_the_drop():
    async def scenario():
        mailbox = NewestFrame()
        mailbox.put(b"first", 0)
        mailbox.put(b"second", 1)
        mailbox.put(b"third", 2)
        newest = await mailbox.take()
        waiting = asyncio.ensure_future(mailbox.take())
        await asyncio.sleep(0.01)
        assert not waiting.done()  # empty: taking waits for the next frame
        mailbox.put(b"fourth", 3)
        return newest, await waiting, mailbox.dropped

    assert asyncio.run(scenario()) == ((b"third", 2), (b"fourth", 3), 2)


def test_a_client_that_acknowledges_is_held_to_the_window_and_one_that_never_does_is_not():
    async def scenario():
        window = AckWindow(2)
        for seq in range(5):  # no ack yet: a client that never acknowledges is not held
            window.sent(seq)
        free_before_acks = await window.room(0.01)
        window.ack(4)
        window.sent(5)
        window.sent(6)
        full = not await window.room(0.05)
        window.ack(5)
        return free_before_acks, full, await window.room(0.01)

    assert asyncio.run(scenario()) == (True, True, True)


@pytest.fixture(scope="module")
def served_styles():
    return StyleRegistry.from_directory()


@pytest.fixture(scope="module")
def session_factory(served_styles):
    pipeline = Pipeline(served_styles)

    def make(default: str | None = None) -> LiveSession:
        registry = served_styles
        if default is not None:
            registry = StyleRegistry(list(served_styles.styles.values()), default)
        return LiveSession(lambda style: LocalStages(pipeline, style), registry, DetectorConfig(), LIMITS)

    return make


def run_frames(session: LiveSession, frames: list[bytes]):
    async def all_frames():
        return [await session.cartoonize(data, seq, time.perf_counter()) for seq, data in enumerate(frames)]

    return asyncio.run(all_frames())


def test_camera_frames_come_back_as_cartoons_of_the_size_and_format_asked(session_factory):
    session = session_factory()
    frames = [jpeg(rgb) for rgb in clips.camera_move(photos.grace_hopper(), 3, 352, 288)]
    session.configure({"size": 320, "format": "webp", "quality": 70})
    out = run_frames(session, frames)
    assert [frame.seq for frame in out] == [0, 1, 2]
    assert all(frame.faces == 1 for frame in out)
    pictures = [Image.open(io.BytesIO(frame.data)) for frame in out]
    assert {(picture.format, picture.size) for picture in pictures} == {("WEBP", (320, 262))}
    assert {"wait", "decode", "track", "stylize", "finish", "compose", "encode", "total"} <= set(out[0].timings)


def test_a_still_camera_draws_a_steady_cartoon_finished_as_the_style_finishes_stills(session_factory,
                                                                                     served_styles):
    """Sensor noise on a still scene: the temporal finish holds its bands and lines, where the
    still finish of each frame on its own flips them; the first frame is the still's."""
    rng = np.random.default_rng(0)
    scene = clips.camera_move(photos.grace_hopper(), 1, 352, 288)[0]
    noisy = [np.clip(scene.astype(int) + rng.integers(-4, 5, scene.shape), 0, 255).astype(np.uint8)
             for _ in range(4)]
    frames = [jpeg(rgb, 95) for rgb in noisy]
    session = session_factory()
    session.configure({"quality": 95})
    live = [np.asarray(Image.open(io.BytesIO(frame.data))) for frame in run_frames(session, frames)]
    pipeline = Pipeline(served_styles)
    stills = [np.asarray(Image.open(io.BytesIO(pipeline(frame, Options(format="jpeg", quality=95)).data)))
              for frame in frames]
    assert np.abs(live[0].astype(int) - stills[0]).mean() < 0.5

    def flips(pictures):
        return np.mean([np.mean(np.any(np.abs(b.astype(int) - a) > 24, axis=-1))
                        for a, b in zip(pictures[1:], pictures[2:])])

    assert flips(live) < 0.7 * flips(stills)


def test_a_style_or_size_change_mid_stream_takes_effect_on_the_next_frame(session_factory):
    session = session_factory()
    frames = [jpeg(rgb) for rgb in clips.camera_move(photos.grace_hopper(), 3, 352, 288)]
    first = run_frames(session, frames[:1])[0]
    settings = session.configure({"style": "comic", "size": 176})
    second = run_frames(session, frames[1:2])[0]
    assert settings.style == "comic" and Image.open(io.BytesIO(second.data)).size == (176, 144)
    assert Image.open(io.BytesIO(first.data)).size == (352, 288)
    # As a session that started so: the comic network, a fresh finish and fresh face tracks.
    fresh = session_factory(default="comic")
    fresh.configure({"size": 176})
    expected = run_frames(fresh, frames[1:2])[0]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(second.data))),
                                  np.asarray(Image.open(io.BytesIO(expected.data))))
    with pytest.raises(SettingError, match="no-such-style"):
        session.configure({"style": "no-such-style"})
    assert session.settings.style == "comic"
