import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from benchmarks.inputs import ADOBE_RGB, icc_profile
from cartoon.image import codec
from cartoon.image.pipeline import Options, stylize_job
from tests import photos


def decode(result):
    return codec.decode(result.data).rgb


def test_astronaut_comes_back_same_size_with_one_face(pipeline, astronaut):
    result = pipeline(photos.encode(astronaut), Options())
    assert (result.width, result.height) == (512, 512) and len(result.faces) == 1
    assert decode(result).shape == astronaut.shape
    assert set(result.timings) >= {"decode", "detect", "align", "background", "unet", "compose", "encode"}
    assert result.batch_sizes == [1, 1]


def test_head_is_pasted_over_the_background_inside_the_mask_only(pipeline, astronaut):
    job = stylize_job(pipeline.preparer.prepare_array(astronaut, Options()), pipeline.stylizer(None))
    with_head = decode(pipeline.composer.compose(job)).astype(int)
    without = decode(pipeline.composer.compose(replace(job, heads=job.heads[:0], matrices=job.matrices[:0])))
    diff = np.abs(with_head - without.astype(int)).max(axis=2)
    x0, y0, x1, y1 = (int(v) for v in job.faces[0].box)
    assert diff[y0:y1, x0:x1].mean() > 5  # the face comes from the head model
    assert diff[350:, :].max() == 0 and diff[:, 400:].max() == 0  # far away: untouched


def test_no_face_returns_background_at_original_size(pipeline):
    coffee = photos.coffee()
    result = pipeline(coffee)
    assert result.faces == [] and decode(result).shape == coffee.shape


@pytest.mark.parametrize("shape", [(333, 517), (1, 1), (16, 16), (4000, 50), (50, 4000), (1000, 1600)])
def test_odd_tiny_and_extreme_sizes_come_back_at_input_size(pipeline, shape):
    image = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    assert decode(pipeline(photos.encode(image))).shape == shape + (3,)


def test_strength_zero_gives_the_original(pipeline, astronaut):
    out = decode(pipeline(astronaut, Options(strength=0.0)))
    assert np.abs(out.astype(int) - astronaut).max() <= 1


def test_strength_blends_linearly(pipeline, astronaut):
    full = decode(pipeline(astronaut, Options(strength=1.0))).astype(float)
    half = decode(pipeline(astronaut, Options(strength=0.5))).astype(float)
    assert np.abs(half - (full + astronaut) / 2).max() <= 1.5


def test_max_side_caps_the_output(pipeline, astronaut):
    result = pipeline(astronaut, Options(max_side=200))
    assert (result.width, result.height) == (200, 200) and decode(result).shape == (200, 200, 3)
    assert len(result.faces) == 1


def test_transparency_survives(pipeline, astronaut):
    alpha = np.full(astronaut.shape[:2], 255, np.uint8)
    alpha[:, :100] = 0
    rgba = np.dstack([astronaut, alpha])
    result = pipeline(photos.encode(rgba), Options(format="webp", quality=100))
    decoded = codec.decode(result.data)
    assert decoded.alpha is not None and decoded.alpha[:, :90].max() <= 2 and decoded.alpha[:, 110:].min() >= 253


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_output_formats(pipeline, astronaut, format):
    result = pipeline(astronaut, Options(format=format))
    assert result.media_type == f"image/{format}" and codec.probe(result.data).format == format.upper()


def test_two_faces_both_stylized(pipeline):
    """Each face comes from its own head crop: dropping either head changes only its face."""
    job = stylize_job(pipeline.preparer.prepare_array(photos.two_faces(), Options()), pipeline.stylizer(None))
    assert len(job.faces) == 2 and len(job.heads) == 2
    both = decode(pipeline.composer.compose(job)).astype(int)
    for dropped, face in enumerate(job.faces):
        kept = [i for i in range(2) if i != dropped]
        one_head = decode(pipeline.composer.compose(replace(job, heads=job.heads[kept], matrices=job.matrices[kept])))
        diff = np.abs(both - one_head.astype(int)).max(axis=2)
        x0, y0, x1, y1 = (int(v) for v in face.box)
        other = job.faces[kept[0]].box
        assert diff[y0:y1, x0:x1].mean() > 5, f"face {dropped} is not pasted from its head"
        assert diff[int(other[1]):int(other[3]), int(other[0]):int(other[2])].max() == 0


def test_full_size_arrays_travel_apart_from_the_pieces(pipeline, astronaut):
    job = pipeline.preparer.prepare_array(astronaut, Options(strength=0.5), alpha=astronaut[..., 0].copy())
    pieces, full_size = job.split_full_size()
    assert pieces.original is None and pieces.alpha is None
    assert pieces.heads is job.heads and pieces.background is job.background
    assert full_size.original.shape == astronaut.shape and full_size.alpha.shape == astronaut.shape[:2]
    stylized = stylize_job(pieces, pipeline.stylizer(None))
    served = pipeline.composer.compose(stylized.with_full_size(full_size))
    in_one_piece = pipeline.composer.compose(stylize_job(job, pipeline.stylizer(None)))
    assert served.data == in_one_piece.data


def test_decoding_notices_ride_the_job_to_the_result(pipeline, astronaut):
    """What the served graph does with a job: split, stylize, put back, compose."""
    frames = [Image.fromarray(astronaut[::4, ::4]), Image.new("RGB", (128, 128))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:],
                   icc_profile=icc_profile(ADOBE_RGB))
    job = pipeline.preparer.prepare(buffer.getvalue(), Options())
    assert job.notices == (codec.FIRST_FRAME, codec.ICC_CONVERTED)
    pieces, full_size = job.split_full_size()
    served = pipeline.composer.compose(stylize_job(pieces, pipeline.stylizer(None)).with_full_size(full_size))
    assert served.notices == job.notices
    assert pipeline(astronaut).notices == ()
