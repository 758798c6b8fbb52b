"""Video in and out, the clip pipeline and the local command, on clips made from real photos."""

import asyncio

import av
import numpy as np
import pytest

from cartoon import cli
from cartoon.video import media
from cartoon.video.clip import LocalStages, cartoonize_clip
from cartoon.errors import AudioNotMuxableError, CorruptVideoError, NotAVideoError, TooManyPixelsError, VideoTooLongError
from cartoon.image.pipeline import Options
from tests import clips, photos


@pytest.fixture(scope="module")
def portrait(tmp_path_factory):
    return clips.portrait_clip(tmp_path_factory.mktemp("clips") / "hopper.mp4", frames=12)


def audio_packets(path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as container:
        return [(packet.pts, bytes(packet)) for packet in container.demux(container.streams.audio[0])
                if packet.dts is not None]


def run_clip(pipeline, source, destination, output_format="mp4", options=Options()):
    info = media.probe(source)
    return asyncio.run(cartoonize_clip(
        source, destination, info, output_format, options, LocalStages(pipeline, None),
        pipeline.preparer.detector, pipeline.stylizer(None).finish,
    ))


@pytest.mark.parametrize("output_format", ["mp4", "mkv"])
def test_a_clip_keeps_its_frames_timestamps_duration_and_audio_packets(pipeline, portrait, tmp_path, output_format):
    output = tmp_path / f"out.{output_format}"
    report = run_clip(pipeline, portrait, output, output_format)
    source, made = media.probe(portrait), media.probe(output)
    assert report.frames == 12
    assert (made.width, made.height, made.fps) == (source.width, source.height, source.fps)
    inputs, outputs = list(media.frames(portrait, 0)), list(media.frames(output, 0))
    times = [f.time_s for f in outputs]
    assert len(outputs) == 12 and np.allclose(np.diff(times), 1 / 12, atol=1e-3)
    assert [data for _, data in audio_packets(output)] == [data for _, data in audio_packets(portrait)]
    if output_format == "mp4":  # Matroska stores milliseconds and shifts all by the AAC priming
        assert [f.pts for f in outputs] == [f.pts for f in inputs] and made.duration_s == source.duration_s
        assert audio_packets(output) == audio_packets(portrait)
    assert all(np.abs(o.rgb.astype(int) - i.rgb).mean() > 8 for o, i in zip(outputs, inputs))


def test_a_rotated_clip_is_processed_upright_and_keeps_its_display_matrix(pipeline, tmp_path, detector5):
    frames = clips.camera_move(photos.astronaut(), 6, 400, 320)
    source = clips.write_clip(tmp_path / "rotated.mp4", frames, rotation=90, audio=False)
    info = media.probe(source)
    assert info.rotation == 90 and (info.width, info.height) == (320, 400)
    upright = [frame.rgb for frame in media.frames(source, info.rotation)]
    assert upright[0].shape == (320, 400, 3)
    assert all(len(detector5.detect(rgb)) == 1 for rgb in upright)  # sideways, HOG finds no face
    assert detector5.detect(np.rot90(upright[0], -1).copy()) == []
    output = tmp_path / "out.mp4"
    assert run_clip(pipeline, source, output).frames == 6
    made = media.probe(output)
    assert made.rotation == 90 and (made.width, made.height) == (320, 400)


def test_max_side_shrinks_frames_to_even_sides(pipeline, portrait, tmp_path):
    output = tmp_path / "small.mp4"
    run_clip(pipeline, portrait, output, options=Options(max_side=101))
    made = media.probe(output)
    assert (made.width, made.height) == (82, 100)


def test_bad_videos_are_refused_with_their_reason(portrait, tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(photos.encode(photos.coffee()))
    with pytest.raises(NotAVideoError):
        media.probe(image)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(portrait.read_bytes()[:4000])
    with pytest.raises(CorruptVideoError):
        media.probe(truncated)
    with pytest.raises(VideoTooLongError):
        media.probe(portrait, media.VideoLimits(max_seconds=0.9))
    with pytest.raises(TooManyPixelsError):
        media.probe(portrait, media.VideoLimits(max_pixels=288 * 352 - 1))
    with pytest.raises(AudioNotMuxableError):
        media.check_output(portrait, "webm")
    media.check_output(portrait, "mkv")


def test_the_command_cartoonizes_a_clip(portrait, tmp_path, capsys):
    output = tmp_path / "out.webm"
    silent = clips.portrait_clip(tmp_path / "silent.mp4", frames=6, audio=False)
    assert cli.main([str(silent), "-o", str(output)]) == 0
    assert "6 frames at 12.000 fps" in capsys.readouterr().out
    assert media.probe(output).fps == 12 and len(list(media.frames(output, 0))) == 6
    assert cli.main([str(portrait), "-o", str(tmp_path / "out.webm")]) == 1  # AAC cannot go into WebM
    assert "audio" in capsys.readouterr().err
