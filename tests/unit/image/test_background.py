import numpy as np
import pytest
import torch

from cartoon.image.background import shrink, split, stitch
from cartoon.image.styles import Stylizer
from cartoon.model.unet import UNetConfig, random_generator, receptive_radius
from tests import photos

# Backgrounds smaller than a tile, 300 px tall under 384 px tiles, odd sides, one side
# under a tile, and one cut by several tiles each way.
SHAPES = [(1, 1), (16, 16), (300, 512), (333, 517), (50, 900), (383, 385), (389, 771)]
# The GPU config's 384/64, and smaller tiles that cut every shape above.
TILINGS = [(384, 64), (192, 64)]
MODEL = UNetConfig(width=8)
# Float64 convolutions are slow on the CPU: a narrower UNet (same receptive radius)
# on small backgrounds, one under a tile, both cut each way.
FLOAT64_MODEL = UNetConfig(width=4)
FLOAT64_CASES = [((100, 262), 160, 64), ((203, 230), 160, 64)]
# In float64, tiled and whole differ by rounding only (measured: 1.4e-13 uint8 levels),
# while a halo 4 px short of the receptive radius moves pixels by 3.9e-6 levels: far
# under the 1/255 a uint8 result can show, so only a float64 comparison catches it.
FLOAT64_TOLERANCE_LEVELS = 1e-9


def photo(shape: tuple[int, int]) -> np.ndarray:
    """The astronaut cut or mirrored out to ``shape``: real detail up to every edge."""
    image = photos.astronaut()
    image = np.pad(image, ((0, max(0, shape[0] - 512)), (0, max(0, shape[1] - 512)), (0, 0)), mode="reflect")
    return np.ascontiguousarray(image[: shape[0], : shape[1]])


@pytest.fixture(scope="module")
def stylizer():
    return Stylizer(random_generator(MODEL, 2), random_generator(MODEL, 2), "cpu")


@pytest.fixture(scope="module")
def float64_model():
    return random_generator(FLOAT64_MODEL, 2).double()


def float64_background(model, image: np.ndarray, tile: int, halo: int) -> np.ndarray:
    """The generator's output in float64 uint8 levels, whole (tile 0) or tiled and stitched."""
    pieces, plan = split(image, tile, halo)
    x = torch.from_numpy(pieces).permute(0, 3, 1, 2).double() / 127.5 - 1.0
    with torch.no_grad():
        out = (model(x) + 1.0) * 127.5
    return stitch(out.permute(0, 2, 3, 1).numpy(), plan)


@pytest.mark.parametrize("shape, process_side, expected", [
    ((1000, 2000, 3), 720, (720, 1440, 3)),
    ((500, 300, 3), 720, (500, 300, 3)),  # never upscaled
    ((50, 4000, 3), 720, (50, 4000, 3)),
])
def test_shrink_caps_the_short_side(shape, process_side, expected):
    assert shrink(np.zeros(shape, np.uint8), process_side).shape == expected


@pytest.mark.parametrize("shape", [(1, 1, 3), (16, 16, 3), (333, 517, 3), (50, 4000, 3), (720, 960, 3)])
@pytest.mark.parametrize("tile", [0, 192, 384])
def test_split_then_stitch_gives_the_image_back(shape, tile):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    pieces, plan = split(image, tile=tile, halo=64)
    if tile:
        canvas = (-(-shape[0] // 4) * 4, -(-shape[1] // 4) * 4)
        assert pieces.shape[1:] == (min(tile, canvas[0]), min(tile, canvas[1]), 3)
    assert pieces.shape[1] % 4 == 0 and pieces.shape[2] % 4 == 0
    np.testing.assert_array_equal(stitch(pieces, plan), image)


def test_every_pixel_comes_from_a_piece_at_least_halo_from_a_cut():
    """Marks each piece with its index: the stitched map shows who supplied each pixel."""
    image = np.zeros((700, 900, 3), np.uint8)
    pieces, plan = split(image, tile=256, halo=64)
    labels = stitch(np.stack([np.full((256, 256, 1), i, np.int32) for i in range(len(pieces))]), plan)[..., 0]
    for index, (y, x) in enumerate(plan.origins):
        ys, xs = np.nonzero(labels == index)
        if len(ys) == 0:
            continue
        assert y == 0 or ys.min() >= y + 64
        assert x == 0 or xs.min() >= x + 64
        assert y + 256 >= plan.canvas_height or ys.max() < y + 256 - 64
        assert x + 256 >= plan.canvas_width or xs.max() < x + 256 - 64


def test_pixel_overhead_of_720_by_960():
    _, whole = split(np.zeros((720, 960, 3), np.uint8), tile=0)
    _, tiled = split(np.zeros((720, 960, 3), np.uint8), tile=512, halo=64)
    assert whole.pixel_overhead == 1.0
    # Rows at 0 and 208, columns at 0, 384 and 448: six 512 px tiles.
    assert len(tiled.origins) == 6
    assert tiled.pixel_overhead == pytest.approx(6 * 512**2 / (720 * 960))


def test_bad_tile_sizes_are_refused():
    with pytest.raises(ValueError):
        split(np.zeros((10, 10, 3), np.uint8), tile=100, halo=64)
    with pytest.raises(ValueError):
        split(np.zeros((10, 10, 3), np.uint8), tile=250, halo=64)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tile, halo", TILINGS)
def test_stitched_background_equals_the_whole_within_one_level(stylizer, shape, tile, halo):
    """The served path (uint8 in, fp32 UNet, uint8 out): tiled and whole agree to 1/255."""
    image = photo(shape)
    whole_pieces, whole_plan = split(image)
    tiled_pieces, tiled_plan = split(image, tile, halo)
    whole = stitch(stylizer.run(whole_pieces, "background"), whole_plan).astype(int)
    tiled = stitch(stylizer.run(tiled_pieces, "background"), tiled_plan).astype(int)
    assert whole.shape == tiled.shape == image.shape
    assert np.abs(whole - tiled).max() <= 1


@pytest.mark.parametrize("shape, tile, halo", FLOAT64_CASES)
def test_stitched_background_equals_the_whole_to_float64_rounding(float64_model, shape, tile, halo):
    """In float64 the stitched result is the whole one to rounding, so a short halo shows."""
    image = photo(shape)
    whole = float64_background(float64_model, image, 0, halo)
    tiled = float64_background(float64_model, image, tile, halo)
    assert np.abs(whole - tiled).max() <= FLOAT64_TOLERANCE_LEVELS


def test_a_halo_short_of_the_receptive_radius_fails_the_float64_check(float64_model):
    """The check above is able to fail: 4 px less halo than the UNet sees breaks it."""
    short = receptive_radius(FLOAT64_MODEL) - 4
    image = photo((203, 230))
    whole = float64_background(float64_model, image, 0, short)
    tiled = float64_background(float64_model, image, 160, short)
    assert np.abs(whole - tiled).max() > 10 * FLOAT64_TOLERANCE_LEVELS


def test_a_background_shorter_than_a_tile_is_not_padded_out_to_one():
    """Padding a 300 px side out to a 384 px tile made the UNet see mirrored rows
    where the whole canvas has its edge: up to 55 levels off in the last 22 rows."""
    pieces, plan = split(photo((300, 900)), 384, 64)
    assert pieces.shape[1:3] == (300, 384)
    assert plan.canvas_height == 300
