import numpy as np
import pytest

from cartoon.background import shrink, split, stitch


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
        assert pieces.shape[1:] == (tile, tile, 3)
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
