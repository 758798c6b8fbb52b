"""Memory per request is bounded whatever the input: output, background, pieces, compose."""

import subprocess
import sys

import numpy as np
import pytest

from cartoon.image.background import shrink
from cartoon.image.compose import output_size
from cartoon.errors import TooManyPiecesError
from cartoon.image.pipeline import Options, PipelineSettings, Preparer

# The thin strip from the bug report: passes a 40 MP max_pixels, and its short side
# (727) is already near process_side, so shrinking by the short side alone kept 39 MP.
STRIP = (727, 55000)


@pytest.fixture(scope="module")
def strip() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.repeat(rng.integers(0, 256, (STRIP[0], 1, 3), dtype=np.uint8), STRIP[1], axis=1)


def test_the_background_area_is_capped_whatever_the_aspect_ratio(strip):
    shrunk = shrink(strip, process_side=720, max_area=2_000_000)
    assert shrunk.shape[0] * shrunk.shape[1] <= 2_000_000
    assert shrunk.shape[1] / shrunk.shape[0] == pytest.approx(STRIP[1] / STRIP[0], rel=0.01)
    # Ordinary photos are still shrunk by the short side alone.
    assert shrink(np.zeros((1080, 1920, 3), np.uint8), 720, 2_000_000).shape == (720, 1280, 3)


@pytest.mark.parametrize("shape, max_side, max_pixels, expected", [
    ((4000, 6000), None, 24_000_000, (4000, 6000)),
    ((727, 55000), None, 24_000_000, (563, 42610)),
    ((727, 55000), 2000, 24_000_000, (26, 2000)),
    ((8000, 8000), None, 16_000_000, (4000, 4000)),
    ((512, 512), 256, None, (256, 256)),
])
def test_output_size_is_capped_on_the_long_side_and_the_area(shape, max_side, max_pixels, expected):
    height, width = output_size(*shape, max_side, max_pixels)
    assert (height, width) == expected
    assert max_pixels is None or height * width <= max_pixels


def test_the_strip_is_prepared_within_the_limits(strip):
    settings = PipelineSettings(background_pixels=2_000_000, max_output_pixels=24_000_000)
    job = Preparer(settings).prepare_array(strip, Options())
    assert job.plan.height * job.plan.width <= 2_000_000
    assert job.height * job.width <= 24_000_000


def test_too_many_pieces_is_refused_naming_the_limit(astronaut):
    settings = PipelineSettings(tile=136, halo=64, max_pieces=16)
    with pytest.raises(TooManyPiecesError, match="limit of 16"):
        Preparer(settings).prepare_array(astronaut, Options())


# Runs in a fresh process, so its peak RSS is compose's and nothing else's.
COMPOSE_PEAK = """
import resource, sys
import numpy as np
from cartoon.image.compose import compose
height, width = 4000, 6000
original = np.full((height, width, 3), 90, np.uint8)
background = np.full((720, 1080, 3), 200, np.uint8)
heads = np.full((1, 288, 288, 3), 30, np.uint8)
matrices = np.array([[[0.1, 0.0, -100.0], [0.0, 0.1, -50.0]]])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
picture = compose(background, heads, matrices, height, width, 0.5, original)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert picture.shape == (height, width, 3) and picture.dtype == np.uint8
print((after - before) * 1024)
"""


def test_compose_holds_no_full_size_float_copy():
    """24 MP at strength 0.5: one float32 copy alone would be 288 MB, the old code made four."""
    grown = int(subprocess.run([sys.executable, "-c", COMPOSE_PEAK], check=True, capture_output=True,
                               text=True).stdout)
    full_size_uint8 = 4000 * 6000 * 3
    assert grown < 2 * full_size_uint8, f"compose grew the peak by {grown / 1e6:.0f} MB"
