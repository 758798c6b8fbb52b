"""Figures for "reads as a cartoon", per evaluation photo: photo, filter, teacher, student.

For every evaluation photo (``tools.photos.EVALUATION``) and style, four pictures of
the output's size are scored:

* ``photo``: the photo itself, the baseline a cartoon must depart from;
* ``opencv``: a plain OpenCV cartoon filter (``opencv_cartoon``: repeated bilateral
  filtering, k-means to 10 colours, adaptive-threshold outlines), the reference for
  what reads as a cartoon at a glance;
* ``teacher``: the style's teacher put together the way the service puts the student
  together: the teacher draws the shrunk picture and every aligned head crop, and
  ``cartoon.image.compose.compose`` pastes the heads back;
* ``network``: the same, with the style's finish (``cartoon.image.finish``) left out: what the
  UNet student alone draws;
* ``student``: the served output of the in-process ``cartoon.image.pipeline.Pipeline`` (the
  network, then the finish).

Columns:

* ``palette``: colours, at 4 bits per channel, needed to cover 90% of the pixels;
* ``flat``: share of pixels whose 3x3 neighbourhood spans at most ``FLAT_RANGE``
  levels in every channel (flat colour regions);
* ``lines``: share of the photo's main edges (Canny of the blurred photo, pieces of at
  least ``MIN_EDGE_PIXELS``) that have an ink-line pixel within 2 px; ink lines are
  dark, thin structures (``ink_lines``);
* ``dG``: mean green shift against the photo in levels (a colour cast shows here first:
  warming skin and wood lowers green against red);
* for the network and the student: ``PSNR`` against the teacher and ``line F1``, the F1 of the two
  pictures' ink-line pixels matched within 1 px.

Usage (from the repository root; needs the photo packages of ``tools.photos``):
    python -m tools.cartoon_metrics --styles-dir cartoon/styles [--gallery /tmp/gallery]

Photos can be scored by separate processes (``--photos ... --json part.json``) and the
parts printed as one table with ``--tables part1.json part2.json ...``.
"""

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from cartoon.image import codec
from cartoon.image.background import shrink
from cartoon.image.compose import compose
from cartoon.image.pipeline import Options, Pipeline, PipelineSettings
from cartoon.image.styles import StyleRegistry
from tools import photos as packaged
from tools.render_gallery import gallery_order, write_photo_strips
from tools.teachers import teacher

COVERAGE = 0.90  # share of pixels the palette must cover
FLAT_RANGE = 6  # max levels a 3x3 neighbourhood may span to count as flat
LINE_DEPTH = 40  # levels a line pixel is darker than the closing of its 7x7 surroundings
LINE_MAX_GREY = 110  # ink is dark: brighter pixels are not line pixels
MIN_EDGE_PIXELS = 20  # Canny pieces shorter than this are texture, not main edges


def palette_size(rgb: np.ndarray, coverage: float = COVERAGE) -> int:
    """Colours at 4 bits per channel that cover ``coverage`` of the pixels."""
    codes = (rgb >> 4).astype(np.int32)
    keys = (codes[..., 0] << 8) | (codes[..., 1] << 4) | codes[..., 2]
    counts = np.sort(np.bincount(keys.ravel(), minlength=4096))[::-1]
    return int(np.searchsorted(np.cumsum(counts), coverage * keys.size) + 1)


def flat_share(rgb: np.ndarray, max_range: int = FLAT_RANGE) -> float:
    """Share of pixels whose 3x3 neighbourhood spans at most ``max_range`` per channel."""
    kernel = np.ones((3, 3), np.uint8)
    spread = cv2.dilate(rgb, kernel).astype(np.int16) - cv2.erode(rgb, kernel)
    return float((spread.max(axis=2) <= max_range).mean())


def ink_lines(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: dark, thin structures, darker than their surroundings' closing."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    black_hat = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel)
    return (black_hat > LINE_DEPTH) & (grey < LINE_MAX_GREY)


def main_edges(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: the photo's main edges, Canny of the blurred photo without short bits."""
    grey = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (0, 0), 2.0)
    edges = cv2.Canny(grey, 40, 100)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(edges, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= MIN_EDGE_PIXELS
    keep[0] = False
    return keep[labels]


def _near(mask: np.ndarray, radius: int) -> np.ndarray:
    side = 2 * radius + 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((side, side), np.uint8)).astype(bool)


def line_coverage(drawing: np.ndarray, edges: np.ndarray, radius: int = 2) -> float:
    """Share of ``edges`` pixels with an ink-line pixel of ``drawing`` within ``radius``."""
    if not edges.any():
        return 0.0
    return float(_near(ink_lines(drawing), radius)[edges].mean())


def line_f1(student: np.ndarray, reference: np.ndarray, radius: int = 1) -> float:
    """F1 of the ink-line pixels of two pictures, a pixel matching within ``radius``."""
    ours, theirs = ink_lines(student), ink_lines(reference)
    if not ours.any() or not theirs.any():
        return 0.0
    precision = _near(theirs, radius)[ours].mean()
    recall = _near(ours, radius)[theirs].mean()
    return float(2 * precision * recall / max(precision + recall, 1e-9))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 pictures."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def opencv_cartoon(rgb: np.ndarray) -> np.ndarray:
    """A plain OpenCV cartoon filter: the reference for what reads as a cartoon.

    Bilateral filtering at half size (7 passes), k-means to 10 colours, and outlines
    from an adaptive threshold of the median-blurred grey picture.
    """
    height, width = rgb.shape[:2]
    small = cv2.pyrDown(rgb)
    for _ in range(7):
        small = cv2.bilateralFilter(small, 9, 9, 7)
    smooth = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    cv2.setRNGSeed(0)
    samples = smooth.reshape(-1, 3).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, labels, centres = cv2.kmeans(samples, 10, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    quantised = centres.astype(np.uint8)[labels.ravel()].reshape(rgb.shape)
    grey = cv2.medianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 7)
    edges = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 2)
    return cv2.bitwise_and(quantised, quantised, mask=edges)


def teacher_composite(pipeline: Pipeline, photo: np.ndarray, style: str) -> np.ndarray:
    """The teacher put together like the served output: shrunk picture plus pasted heads."""
    job = pipeline.preparer.prepare_array(photo, Options(style=style))
    draw = teacher(style)
    background = draw(shrink(photo, pipeline.settings.process_side))
    heads = np.array([draw(head) for head in job.heads]).reshape(job.heads.shape)
    return compose(background, heads, job.matrices, job.height, job.width)


@dataclass(frozen=True)
class Row:
    """The figures of one picture."""

    photo: str
    style: str
    picture: str  # photo | opencv | teacher | network | student
    palette: int
    flat: float
    lines: float
    green_shift: float
    psnr: float | None = None
    line_f1: float | None = None


def score(photo_name: str, style: str, kind: str, picture: np.ndarray, photo: np.ndarray,
          edges: np.ndarray, reference: np.ndarray | None = None) -> Row:
    """Scores one picture against its photo (and, for a student, its teacher)."""
    shift = float(picture[..., 1].mean() - photo[..., 1].mean())
    extra = {}
    if reference is not None:
        extra = {"psnr": psnr(picture, reference), "line_f1": line_f1(picture, reference)}
    return Row(photo_name, style, kind, palette_size(picture), flat_share(picture),
               line_coverage(picture, edges), shift, **extra)


def evaluate(
    styles_dir: Path, photo_ids: list[str], out: Path | None = None, gallery: Path | None = None
) -> list[Row]:
    """Scores every style of ``styles_dir`` on the photos; optionally saves the pictures.

    Args:
        styles_dir: a weights directory with ``registry.json``.
        photo_ids: ``tools.photos`` ids.
        out: a directory for PNGs of every scored picture, or None.
        gallery: a directory for the gallery strips of ``tools.render_gallery``, or None.

    Returns:
        Rows: per photo, the photo and the filter once, then teacher, network and student
        per style.
    """
    registry = StyleRegistry.from_directory(styles_dir)
    pipeline = Pipeline(registry, PipelineSettings(device="cpu"))
    unfinished = StyleRegistry([replace(style, finish=None) for style in registry.styles.values()], registry.default)
    network_only = Pipeline(unfinished, PipelineSettings(device="cpu"))
    rows = []
    for photo_id in photo_ids:
        photo = packaged.load(photo_id)
        name = Path(photo_id.split(":", 1)[1]).stem
        edges = main_edges(photo)
        filtered = opencv_cartoon(photo)
        rows.append(score(name, "-", "photo", photo, photo, edges))
        rows.append(score(name, "-", "opencv", filtered, photo, edges))
        pictures = {"photo": photo, "opencv": filtered}
        for style in gallery_order(registry):
            drawn = teacher_composite(pipeline, photo, style)
            served = codec.decode(pipeline(photo, Options(style=style)).data).rgb
            network = codec.decode(network_only(photo, Options(style=style)).data).rgb
            rows.append(score(name, style, "teacher", drawn, photo, edges))
            rows.append(score(name, style, "network", network, photo, edges, drawn))
            rows.append(score(name, style, "student", served, photo, edges, drawn))
            pictures |= {f"{style}_teacher": drawn, f"{style}_network": network, f"{style}_student": served}
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for label, picture in pictures.items():
                cv2.imwrite(str(out / f"{name}_{label}.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        if gallery is not None:
            matrices = pipeline.preparer.prepare_array(photo, Options()).matrices
            served = [pictures[f"{style}_student"] for style in gallery_order(registry)]
            matrix = matrices[0] if len(matrices) else None
            write_photo_strips(gallery, name, photo, served, matrix)
    return rows


def table(rows: list[Row]) -> str:
    """A markdown table of the rows, then per-style means over the photos."""
    def cell(value: float | None, form: str) -> str:
        return "" if value is None else format(value, form)

    lines = [
        "| photo | style | picture | palette | flat | lines | dG | PSNR | line F1 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.photo} | {r.style} | {r.picture} | {r.palette} | {r.flat:.2f} | "
            f"{r.lines:.2f} | {r.green_shift:+.1f} | {cell(r.psnr, '.2f')} | {cell(r.line_f1, '.2f')} |"
        )
    lines.append("")
    lines.append("| style | picture | palette / photo's | flat | lines | lines / opencv's | dG | PSNR | line F1 |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    photo_rows = {r.photo: r for r in rows if r.picture == "photo"}
    opencv_rows = {r.photo: r for r in rows if r.picture == "opencv"}
    groups = [("-", "opencv")] + [
        (style, kind) for style in dict.fromkeys(r.style for r in rows if r.style != "-")
        for kind in ("teacher", "network", "student")
    ]
    for style, kind in groups:
        chosen = [r for r in rows if r.style == style and r.picture == kind]
        ratio = np.mean([r.palette / photo_rows[r.photo].palette for r in chosen])
        lines_ratio = np.mean([r.lines / max(opencv_rows[r.photo].lines, 1e-9) for r in chosen])
        mean = lambda key: np.mean([getattr(r, key) for r in chosen])  # noqa: E731
        student = kind in ("network", "student")
        lines.append(
            f"| {style} | {kind} | {ratio:.2f} | {mean('flat'):.2f} | {mean('lines'):.2f} | "
            f"{lines_ratio:.2f} | {mean('green_shift'):+.1f} | "
            f"{format(mean('psnr'), '.2f') if student else ''} | "
            f"{format(mean('line_f1'), '.2f') if student else ''} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--styles-dir", type=Path, default=Path("cartoon/styles"))
    parser.add_argument("--photos", nargs="*", default=[p.id for p in packaged.EVALUATION])
    parser.add_argument("--save", type=Path, help="directory for PNGs of the scored pictures")
    parser.add_argument("--gallery", type=Path, help="also write the gallery strips here")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--tables", type=Path, nargs="+",
        help="print the tables of rows saved by earlier --json runs instead of scoring",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.tables:
        rows = [Row(**row) for path in args.tables for row in json.loads(path.read_text())]
        print(table(rows))
        return
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    rows = evaluate(args.styles_dir, args.photos, args.save, args.gallery)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
