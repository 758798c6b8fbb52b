"""No seam where a stylized head is pasted back, and no colour cast from the default style.

The seam check measures, along each edge of every pasted crop's footprint, how much
the picture differs from the average of its two neighbours across that edge (a
1 px line is a spike of this second difference), and compares it with the same
figure on parallel lines 3 to 15 px away on either side. It takes the median along
the edge: a seam runs the edge's whole length, while picture content that happens
to lie along the edge (a collar) covers only part of it; where it covers more, the
same edge in the picture without heads pasted carries it too, and the pasted picture
may exceed that edge's figure by at most ``CONTENT_MARGIN``. Far off, a finished cartoon
is often perfectly flat (a second difference of 0), so the far figure counts as at
least ``VISIBLE`` grey levels: a 1 px line of 8-10 levels, the seam issue 10 reported,
has a second difference of 4-5.
"""

import dataclasses

import cv2
import numpy as np
import pytest

from benchmarks.quality_metrics import SEAM_FAR, crop_edges, seam_step
from cartoon.image import codec
from cartoon.image.align import apply_transform, invert_transform
from cartoon.image.compose import scale_transform
from cartoon.constants import CROP_SIZE
from cartoon.image.pipeline import Options, Pipeline, stylize_job
from cartoon.image.styles import StyleRegistry
from tests import photos

# Largest border ratio allowed per picture, or the ratio of the same edge in the picture
# without heads pasted plus CONTENT_MARGIN, whichever is larger: a contour the background
# pass draws along an edge is picture content, and a seam is what the paste adds.
# Measured with the shipped default style, finished (ratios over the faces' edges): 0.0
# on every edge of the 910x1137 astronaut; on the two-face picture 3.21 and 2.59 on the
# lower edges, the same with and without the heads (the collar's outline runs along
# them, black on black until round 5's toon stopped filling dark areas black; rounds 3-4
# measured 1.10 and 0.0 there; with issue 26's tone normalisation 5.30 and 4.94 with the
# heads, 5.38 and 5.26 without; with the slim background models 4.35 and 1.91, the same
# with the heads left unpasted, and 3.16 on the first with no face found, whose picture
# is exposed without the faces: hence ``without_heads`` keeps the job's tone). A 1 px line of 8 levels drawn along a lower crop edge:
# 5.87 on the two-face picture, 4.67 on the portrait
# (``test_the_border_measure_sees_a_one_pixel_line_of_eight_levels``). Before the
# finish, with the paste-back of issue 10's seam (the crop warped unpremultiplied, the
# mask still 0.45 at the crop's top and bottom edges), the unfinished weights gave 3.45
# and 2.89 against clean values of 1.44 and 2.44.
MAX_BORDER_RATIO = {"portrait": 1.8, "two_faces": 1.8}
CONTENT_MARGIN = 1.0
NEAR, FAR = 1.5, (3.0, 15.0)
VISIBLE = 1.0  # grey levels of second difference below which no line is visible


def second_difference(grey: np.ndarray, points: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """|f(p) - (f(p - n) + f(p + n)) / 2| at each point, bilinearly sampled."""
    def sample(at: np.ndarray) -> np.ndarray:
        xy = at.astype(np.float32).reshape(-1, 1, 2)
        return cv2.remap(grey, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR).ravel()

    return np.abs(sample(points) - 0.5 * (sample(points - normal) + sample(points + normal)))


def border_ratios(picture: np.ndarray, matrix: np.ndarray) -> list[float]:
    """For each crop edge inside the picture: the peak near it over the median farther off."""
    grey = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY).astype(np.float32)
    height, width = grey.shape
    ratios = []
    # Off the picture edge by this much, where the UNet sees zero padding.
    for points, normal in crop_edges(matrix, height, width, margin=FAR[1] + 12):
        offsets = np.arange(-FAR[1], FAR[1] + 0.25, 0.5)
        profile = np.array(
            [np.median(second_difference(grey, points + o * normal, normal)) for o in offsets]
        )
        near = profile[np.abs(offsets) <= NEAR].max()
        far = np.median(profile[(np.abs(offsets) >= FAR[0]) & (np.abs(offsets) <= FAR[1])])
        ratios.append(float(near / max(far, VISIBLE)))
    return ratios


@pytest.fixture(scope="module")
def shipped():
    return Pipeline(StyleRegistry.from_directory())


def without_heads(pipeline: Pipeline, rgb: np.ndarray) -> np.ndarray:
    """The served picture with its heads left unpasted: the background pass alone, with the
    tone the faces set (a picture with no face found is exposed differently, and its
    collar's outline along a crop edge differs by more than any seam)."""
    job = stylize_job(pipeline.preparer.prepare_array(rgb, Options()), pipeline.stylizer(None))
    return pipeline.composer.picture(dataclasses.replace(job, heads=job.heads[:0], matrices=job.matrices[:0]))


def allowed_ratios(name: str, bare: np.ndarray, matrix: np.ndarray) -> list[float]:
    return [max(MAX_BORDER_RATIO[name], ratio + CONTENT_MARGIN) for ratio in border_ratios(bare, matrix)]


def portrait_910x1137() -> np.ndarray:
    """The astronaut enlarged to the 910x1137 portrait size the seam was reported on."""
    return cv2.resize(photos.astronaut(), (910, 1137), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("name", ["portrait", "two_faces"])
def test_no_line_along_the_pasted_heads_borders(shipped, name):
    rgb = portrait_910x1137() if name == "portrait" else photos.two_faces()
    job = shipped.preparer.prepare_array(rgb, Options())
    assert len(job.matrices) >= 1
    out, bare = codec.decode(shipped(rgb).data).rgb, without_heads(shipped, rgb)
    for index, matrix in enumerate(job.matrices):
        ratios, allowed = border_ratios(out, matrix), allowed_ratios(name, bare, matrix)
        assert ratios and len(ratios) == len(allowed), "no crop edge lies inside the picture"
        assert all(r < limit for r, limit in zip(ratios, allowed)), f"face {index}: {ratios} against {allowed}"


def test_the_border_measure_sees_a_one_pixel_line_of_eight_levels(shipped):
    rgb = photos.two_faces()
    matrix = shipped.preparer.prepare_array(rgb, Options()).matrices[0]
    out = codec.decode(shipped(rgb).data).rgb
    # Along the left edge, where the picture is quiet: since the photo's tone is normalised
    # (cartoon/image/tone.py) the collar's outline along the bottom edge is as strong as
    # an 8-level line (ratio 5.4 with and without the heads).
    (x0, y0), (x1, y1) = np.round(apply_transform(invert_transform(matrix), np.array([[0, 0], [0, CROP_SIZE]], float)))
    line = np.zeros(out.shape[:2], np.uint8)
    cv2.line(line, (int(x0), int(y0)), (int(x1), int(y1)), 1, 1)
    on_line = line.astype(bool)
    # 8 levels darker, or lighter where the cartoon is black (a darker line cannot show there).
    seamed = out.copy()
    seamed[on_line] = np.where(out[on_line] >= 8, out[on_line] - 8, out[on_line] + 8)
    allowed = allowed_ratios("two_faces", without_heads(shipped, rgb), matrix)
    assert all(r < limit for r, limit in zip(border_ratios(out, matrix), allowed))
    assert any(r > limit for r, limit in zip(border_ratios(seamed, matrix), allowed))



def test_the_seam_figure_reads_a_faint_line_along_a_crop_edge_and_nothing_without_one(shipped):
    """benchmarks.quality's seam figure, whose quiet band was widened to 6 px so that the
    outline of a photo edge near a crop edge is not read as a seam, still reads a 1 px line
    of 8 levels over the issue's bound of 2, and next to nothing on the served picture."""
    rgb = portrait_910x1137()
    matrix = shipped.preparer.prepare_array(rgb, Options()).matrices[0]
    out = codec.decode(shipped(rgb).data).rgb
    seamed = out.astype(np.int16)
    for points, _ in crop_edges(matrix, *out.shape[:2], margin=SEAM_FAR[1] + 12):
        xs, ys = np.round(points).astype(int).T
        seamed[ys, xs] = np.where(out[ys, xs] >= 8, seamed[ys, xs] - 8, seamed[ys, xs] + 8)
    assert seam_step(rgb, out, matrix) < 1.0
    assert seam_step(rgb, seamed.astype(np.uint8), matrix) > 2.0


def test_default_style_keeps_the_colour_balance(shipped):
    """Mean channel levels stay within a few levels of the photo's: no warm cast.

    Measured on the 910x1137 astronaut: the default style shifts the channel means by
    (-0.2, -2.0, -3.3), green against red -1.8; issue 10's old toon shifted them by
    (-1.9, -8.9, -10.4), green against red -7.
    """
    rgb = portrait_910x1137()
    out = codec.decode(shipped(rgb).data).rgb
    shift = out.reshape(-1, 3).mean(axis=0) - rgb.reshape(-1, 3).mean(axis=0)
    green_against_red = shift[1] - shift[0]
    assert abs(green_against_red) < 5.0, f"channel mean shifts {shift}"


def test_scale_transform_scales_each_axis_by_its_own_ratio():
    """An output resized by different x and y ratios maps each point to the same crop point."""
    matrix = np.array([[0.5, -0.2, 10.0], [0.2, 0.5, 5.0]])
    original = np.array([[100.0, 200.0], [37.0, 11.0]])
    resized = original * (0.5, 0.25)
    np.testing.assert_allclose(
        apply_transform(scale_transform(matrix, 0.5, 0.25), resized),
        apply_transform(matrix, original),
    )
