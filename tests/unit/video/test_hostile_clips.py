"""Clips that lie about themselves, and what a clip holds besides its video: limits measured
while decoding, timestamps repaired, every audio and subtitle stream kept, no path in a message."""

import av
import numpy as np
import pytest

from cartoon.errors import CorruptVideoError, TooManyPixelsError, VideoTooLongError
from cartoon.video import media
from tests import clips, photos


def flat(height: int, width: int, value: int = 120) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def copy_through_writer(source, destination, output_format: str) -> None:
    """Decodes every frame and writes it back at its timestamp, as a job's encoder does."""
    info = media.probe(source)
    writer = media.VideoWriter(destination, source, info, output_format, info.width, info.height)
    for frame in media.frames(source, 0, info.limits):
        writer.write(frame.rgb, frame.pts)
    writer.close()


def packets(path, kind: str) -> list[list[bytes]]:
    """The packets' bytes of each stream of ``kind`` (audio, subtitle), stream by stream."""
    with av.open(str(path)) as container:
        streams = [stream for stream in container.streams if stream.type == kind]
        if not streams:  # demux() of no stream would read them all
            return []
        found = {stream.index: [] for stream in streams}
        for packet in container.demux(*streams):
            if packet.dts is not None:
                found[packet.stream.index].append(bytes(packet))
        return list(found.values())


def test_a_matroska_without_a_declared_duration_is_measured_by_its_timestamps(tmp_path):
    """What browsers' MediaRecorder writes: a WebM whose header holds no duration."""
    source = clips.write_clip(tmp_path / "recorded.webm", clips.camera_move(photos.grace_hopper(), 24, 64, 48),
                              container="webm", codec="libvpx-vp9", audio=False, options={"live": "1"})
    with av.open(str(source)) as container:
        assert container.duration is None
    info = media.probe(source)
    assert info.frames == 24 and info.duration_s == pytest.approx(2.0, abs=0.1)
    with pytest.raises(VideoTooLongError, match="2.0 s"):
        media.probe(source, media.VideoLimits(max_seconds=1.5))
    # Decoding checks it again, whatever the probe said.
    decoded = media.frames(source, 0, media.VideoLimits(max_seconds=1.5))
    with pytest.raises(VideoTooLongError):
        list(decoded)


def test_a_frame_larger_than_the_header_says_fails_while_decoding(tmp_path):
    source = clips.mjpeg_clip(tmp_path / "grows.mkv", [flat(48, 64), flat(48, 64), flat(3000, 4000)])
    limits = media.VideoLimits(max_pixels=120_000)
    info = media.probe(source, limits)  # the header and the first frame say 64x48
    assert (info.width, info.height) == (64, 48)
    decoded = media.frames(source, 0, info.limits)
    assert next(decoded).rgb.shape == (48, 64, 3)
    with pytest.raises(TooManyPixelsError, match="4000x3000"):
        list(decoded)


def test_more_frames_than_the_duration_allows_at_any_real_rate_are_refused(tmp_path):
    limits = media.VideoLimits(max_seconds=0.1)  # 24 frames at most, at MAX_FPS
    source = clips.mjpeg_clip(tmp_path / "dense.mkv", [flat(48, 64)] * 40, fps=1000)  # 0.04 s
    with pytest.raises(VideoTooLongError, match="frames"):
        media.probe(source, limits)
    with pytest.raises(VideoTooLongError, match="frames"):
        list(media.frames(source, 0, limits))


def test_repeated_timestamps_are_restamped_strictly_increasing_and_the_clip_encodes(tmp_path):
    frames = [flat(48, 64, 30 * index) for index in range(7)]
    source = clips.mjpeg_clip(tmp_path / "repeats.mkv", frames, stamps=[0, 1, 1, 2, 3, 3, 4])
    decoded = list(media.frames(source, 0))
    stamps = [frame.pts for frame in decoded]
    assert len(decoded) == 7 and all(later > earlier for earlier, later in zip(stamps, stamps[1:])), stamps
    assert stamps[:2] == [0, 83]  # Matroska's milliseconds at 12 fps; the first repeat moved one frame on
    output = tmp_path / "out.mp4"
    copy_through_writer(source, output, "mp4")
    again = list(media.frames(output, 0))
    assert len(again) == 7
    assert [round(float(frame.rgb.mean())) for frame in again] == pytest.approx([30 * i for i in range(7)], abs=6)  # in order, none lost


@pytest.mark.parametrize("output_format, subtitles_kept", [("mkv", True), ("mp4", False)])
def test_every_audio_stream_and_the_subtitles_the_container_holds_are_copied(tmp_path, output_format,
                                                                             subtitles_kept):
    source = clips.portrait_clip(tmp_path / "two_languages.mkv", frames=6, container="matroska",
                                 tones_hz=(440.0, 660.0), subtitles=("hello",))
    media.check_output(source, output_format)
    output = tmp_path / f"out.{output_format}"
    copy_through_writer(source, output, output_format)
    audio = packets(output, "audio")
    assert len(audio) == 2 and audio == packets(source, "audio")
    assert packets(output, "subtitle") == (packets(source, "subtitle") if subtitles_kept else [])


def test_a_broken_video_says_why_without_the_servers_path(tmp_path):
    clip = clips.portrait_clip(tmp_path / "hopper.mp4", frames=6)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[:4000])
    with pytest.raises(CorruptVideoError) as raised:
        media.probe(truncated)
    message = str(raised.value)
    assert "truncated" in message and str(tmp_path) not in message and "/" not in message
