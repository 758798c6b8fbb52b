"""The styles' finish: the teachers' palette lattice and ink rule, run on a student's picture."""

import dataclasses
import json

import cv2
import numpy as np
import pytest

from cartoon.image import finish
from cartoon.image.background import shrink, split, stitch
from cartoon.errors import WeightsError
from cartoon.image.styles import DEFAULT_STYLES_DIR, StyleRegistry, Stylizer
from tests import photos
from tools.cartoon_metrics import line_coverage, main_edges, opencv_cartoon, palette_size
from tools.teachers import teacher

FINISHED = ("comic", "toon")


def test_snap_reads_the_lattice_colour_each_pixel_converts_to():
    rng = np.random.default_rng(0)
    lab = np.stack([rng.uniform(0, 100, (64, 64)), rng.uniform(-90, 90, (64, 64)),
                    rng.uniform(-90, 90, (64, 64))], axis=-1).astype(np.float32)
    palette = finish.TOON_PALETTE
    snapped = lab.copy()
    snapped[..., 0] = np.clip((np.floor((lab[..., 0] - palette.offset) / palette.band) + 0.5) * palette.band
                              + palette.offset + 4.0, 0, 100)
    snapped[..., 1:] = np.round(lab[..., 1:] * 1.2 / palette.chroma_step) * palette.chroma_step
    expected = np.round(np.clip(cv2.cvtColor(snapped, cv2.COLOR_LAB2RGB), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(finish.snap(lab, palette, lift=4.0, chroma_gain=1.2), expected)


def test_byte_snap_agrees_with_the_float_snap_away_from_lattice_boundaries():
    picture = shrink(photos.astronaut(), 256)
    palette = finish.TOON_PALETTE
    exact = finish.snap(finish.to_lab(picture), palette)
    fast = finish.snap_bytes(cv2.cvtColor(picture, cv2.COLOR_RGB2LAB), palette)
    # 8-bit CIELAB rounds a*, b* to whole units and L* to 100/255: only pixels within
    # that rounding of a boundary (a few percent) may land on the neighbouring point.
    assert (np.abs(exact.astype(np.int16) - fast).max(axis=2) > 0).mean() < 0.1


# Each finish on its teacher's own lattice and with its teacher's ink: toon's finish snaps
# to a coarser chroma grid without the black band, and inks black (cartoon/image/finish.py).
TEACHERS_OWN = {
    "toon": dataclasses.replace(finish.FINISHES["toon"], palette=finish.lifted(finish.TOON_PALETTE, finish.TOON_LIFT),
                                ink=finish.TOON_INK),
    "comic": finish.FINISHES["comic"],
}


@pytest.mark.parametrize("style", FINISHED)
@pytest.mark.parametrize("photo", [photos.astronaut, photos.grace_hopper])
def test_finishing_a_teachers_picture_leaves_it_almost_as_it_is(style, photo):
    """On the teacher's own lattice, the finish snaps a teacher's colours onto themselves.

    Measured (share of pixels moved by more than 2 CIELAB units): toon 0.20 and 0.14,
    comic 0.12 and 0.04 (astronaut, Grace Hopper); what moves are near-blacks snapping
    to black and line pixels the rule inks a pixel wider or narrower. Forgetting the
    teacher's lift in the lattice moves the median pixel by 4-8 units and 0.38-0.78
    of the pixels.
    """
    drawn = teacher(style)(shrink(photo(), 320))
    finished = finish.apply(drawn, TEACHERS_OWN[style])
    moved = np.linalg.norm(finish.to_lab(finished) - finish.to_lab(drawn), axis=2)
    assert np.median(moved) < 1.0
    assert (moved > 2.0).mean() < 0.3, f"{(moved > 2.0).mean():.3f} of the pixels moved"


@pytest.mark.parametrize("style", FINISHED)
def test_finishing_tiles_that_carry_the_halo_equals_finishing_the_whole(style):
    picture = shrink(photos.astronaut(), 320)
    pieces, plan = split(picture, tile=192, halo=32)
    assert len(pieces) > 1
    tiled = stitch(finish.apply_batch(pieces, finish.FINISHES[style]), plan)
    np.testing.assert_array_equal(tiled, finish.apply(picture, finish.FINISHES[style]))


def test_the_finish_flattens_the_default_student_to_a_third_of_the_photos_palette():
    registry = StyleRegistry.from_directory()
    stylizer = Stylizer.from_style(registry.get(None), "cpu")
    assert stylizer.finish is finish.FINISHES[registry.default]
    for rgb in (photos.astronaut(), photos.grace_hopper()):
        picture = shrink(rgb, 384)
        pieces, plan = split(picture)
        network = stitch(stylizer.generate(pieces, "background"), plan)
        served = stitch(stylizer.run(pieces, "background"), plan)
        photo_palette = palette_size(picture)
        # The bar of issue 10; the network alone keeps about the photo's palette.
        assert palette_size(served) <= photo_palette / 3, (palette_size(served), photo_palette)
        assert palette_size(network) > photo_palette / 2


def test_the_default_students_outlines_cover_the_photos_main_edges_as_the_cartoon_filters_do():
    """Issue 10's line bar on the background pass of both test portraits at full size.

    Measured: astronaut 0.77 against the filter's 0.69, Grace Hopper 0.69 against 0.53.
    Ink of grey level 20 instead of black covers 0.55 and 0.47: against mid-dark bands
    a dark grey hardly stands out as a line.
    """
    stylizer = Stylizer.from_style(StyleRegistry.from_directory().get(None), "cpu")
    for rgb in (photos.astronaut(), photos.grace_hopper()):
        pieces, plan = split(rgb)
        served = stitch(stylizer.run(pieces, "background"), plan)
        edges = main_edges(rgb)
        assert line_coverage(served, edges) >= line_coverage(opencv_cartoon(rgb), edges)


def test_toon_fills_nothing_black_so_its_black_outlines_show_on_dark_cloth():
    toon = finish.FINISHES["toon"]
    near_black = np.full((32, 32, 3), 10, np.uint8)  # L* 3
    assert (finish.apply(near_black, TEACHERS_OWN["toon"]) == 0).all()
    assert abs(np.median(finish.to_lab(finish.apply(near_black, toon))[..., 0]) - 18.0) < 1.5
    cloth = np.full((96, 96, 3), 30, np.uint8)  # L* 11
    cloth[:, 46:49] = 5  # a fold, darker still
    finished = finish.apply(cloth, toon)
    assert abs(np.median(finish.to_lab(finished)[:, :30, 0]) - 18.0) < 1.5  # the darkest fill
    assert (finished[:, 46:49] == 0).all()  # the ink


def test_a_style_without_a_finish_serves_its_generators_output_washed():
    stylizer = Stylizer.from_style(StyleRegistry.from_directory().get("sketch"), "cpu")
    assert stylizer.finish is None and stylizer.wash is not None
    pieces, _ = split(shrink(photos.astronaut(), 128))
    np.testing.assert_array_equal(stylizer.run(pieces, "background"),
                                  finish.wash_batch(stylizer.generate(pieces, "background"), pieces, stylizer.wash))


def test_an_unknown_finish_is_refused_naming_the_known_ones(tmp_path):
    document = json.loads((DEFAULT_STYLES_DIR / "registry.json").read_text())
    document["styles"][0]["finish"] = "watercolour"
    (tmp_path / "registry.json").write_text(json.dumps(document))
    with pytest.raises(WeightsError, match="unknown finish 'watercolour'; known: toon, comic"):
        StyleRegistry.from_directory(tmp_path)


def test_finishes_are_frozen_and_listed_by_style():
    assert sorted(finish.FINISHES) == list(FINISHED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        finish.FINISHES["toon"].median = 3


def false_edge_share(photo: np.ndarray, cartoon: np.ndarray) -> float:
    """Issue 26's false edges: Canny of the cartoon's L* inside the photo's smooth area
    (9x9 L* deviation under 2, 3 px or more from any Canny edge of the photo)."""
    def lightness(rgb: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[..., 0]

    def edges(rgb: np.ndarray) -> np.ndarray:
        l8 = np.clip(lightness(rgb) * 2.55 + 0.5, 0, 255).astype(np.uint8)
        return cv2.Canny(cv2.GaussianBlur(l8, (0, 0), 1.0), 40, 100) > 0

    level = lightness(photo)
    mean, square = cv2.blur(level, (9, 9)), cv2.blur(level * level, (9, 9))
    deviation = np.sqrt(np.maximum(square - mean * mean, 0.0))
    near_edge = cv2.dilate(edges(photo).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    smooth = (deviation < 2.0) & ~near_edge
    assert smooth.mean() > 0.4  # the blurred photo is mostly smooth
    return float(edges(cartoon)[smooth].mean())


def test_an_out_of_focus_photo_is_drawn_in_washes_without_false_edges():
    """Toon on a defocused photo (Gaussian of 6 px): edges on at most 0.5 % of its smooth area.

    Measured on the 384 px coffee cup: 0.3 % with soft band boundaries, 1.6 % with hard
    ones (each band boundary crossing the blur is a step of a whole band). With the slim
    background model (width 8, seed 1): 0.28 % (0.23 % without the deep wash; seed 0's
    model 0.56 % without it, 0.25 % with it).
    """
    stylizer = Stylizer.from_style(StyleRegistry.from_directory().get("toon"), "cpu")
    photo = cv2.GaussianBlur(shrink(photos.coffee(), 384), (0, 0), 6.0)
    pieces, plan = split(photo)
    served = stitch(stylizer.run(pieces, "background"), plan)
    assert false_edge_share(photo, served) <= 0.005


def test_an_island_wider_than_the_wash_deep_in_a_calm_area_is_washed_out():
    """A 30 px island 40 levels dark on a calm gradient, as the slim students draw on
    soft backgrounds: the wash's deeper Gaussian leaves 11 levels of it; the 5 px wash
    alone left 36."""
    size = 200
    ramp = np.linspace(110, 150, size, dtype=np.float32)
    photo = np.repeat(np.repeat(ramp[None, :, None], size, axis=0), 3, axis=2)
    photo = np.clip(photo + np.random.default_rng(0).normal(0, 1.5, photo.shape), 0, 255).astype(np.uint8)
    picture = photo.copy()
    picture[85:115, 85:115] = np.clip(picture[85:115, 85:115].astype(int) - 40, 0, 255)

    def island(rgb: np.ndarray) -> float:
        grey = rgb.astype(np.float32).mean(axis=-1)
        return float(np.concatenate([grey[70:80, 70:130], grey[120:130, 70:130]]).mean() - grey[90:110, 90:110].mean())

    assert island(finish.wash(picture, photo, finish.Wash())) < 0.4 * island(picture)


def soft_backdrop_with_a_drawn_line(size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """(photo, student's picture): a slow left-right gradient, and the same gradient with a dark
    line drawn down its middle, as a student draws a band boundary where the photo has none."""
    ramp = np.linspace(90, 150, size, dtype=np.float32)
    photo = np.repeat(np.repeat(ramp[None, :, None], size, axis=0), 3, axis=2)
    photo = np.clip(photo + np.random.default_rng(0).normal(0, 1.5, photo.shape), 0, 255).astype(np.uint8)
    picture = photo.copy()
    picture[:, size // 2 - 1:size // 2 + 2] = 20
    return photo, picture


@pytest.mark.parametrize("style", FINISHED)
def test_a_line_drawn_where_the_photo_is_calm_is_washed_away_before_the_ink(style):
    served = finish.FINISHES[style]
    photo, picture = soft_backdrop_with_a_drawn_line()
    inked = lambda rgb: finish.dark_lines(finish.to_lab(rgb)[..., 0], served.lines)  # noqa: E731
    assert inked(picture).any()
    washed = finish.wash(picture, photo, finish.Wash())
    assert not inked(washed).any()
    assert not (finish.apply(washed, served) == served.ink).all(axis=-1).any()


def test_a_line_along_an_edge_of_the_photo_is_kept():
    served = finish.FINISHES["toon"]
    photo, picture = soft_backdrop_with_a_drawn_line()
    photo[:, 80:] = 230  # the photo's own edge where the student drew its line
    washed = finish.wash(picture, photo, finish.Wash())
    np.testing.assert_array_equal(washed[:, 78:82], picture[:, 78:82])  # the line, within the clearance


def test_what_the_caller_keeps_is_not_washed():
    photo, picture = soft_backdrop_with_a_drawn_line()
    keep = np.zeros(photo.shape[:2], np.float32)
    keep[:, 60:100] = 1.0
    washed = finish.wash(picture, photo, finish.Wash(), keep)
    np.testing.assert_array_equal(washed[:, 60:100], picture[:, 60:100])


def test_the_comic_finish_inks_less_of_a_soft_backdrop_once_the_wide_students_blotches_are_washed():
    """Grace Hopper's blue backdrop: the student's blotches and band lines are washed, the
    finished backdrop carries less ink than without the wash; her face's crop is not washed.

    The wide comic student draws the background here: it blotches this backdrop, and the
    slim background model, unwashed, happens to draw no ink there at all."""
    comic = StyleRegistry.from_directory().get("comic")
    stylizer = Stylizer.from_style(
        dataclasses.replace(comic, background=comic.head, background_width=comic.width), "cpu")
    rgb = photos.grace_hopper()
    backdrop = (slice(40, 300), slice(380, 500))
    pieces, plan = split(rgb)
    served = stitch(stylizer.run(pieces, "background"), plan)
    unwashed = stitch(finish.apply_batch(stylizer.generate(pieces, "background"), stylizer.finish), plan)
    ink = lambda rgb: (rgb == finish.COMIC_INK).all(axis=-1)[backdrop].mean()  # noqa: E731
    assert ink(served) < 0.5 * ink(unwashed)
