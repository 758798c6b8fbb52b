"""Renders input | teacher | student for each style on the held-out photos, and scores them.

For each style of a weights directory and each held-out photo (scikit-image's
astronaut, matplotlib's Grace Hopper), the student and the teacher are applied the way
the service applies them:

* head: the aligned 288x288 crop from ``cartoon.pipeline.Preparer``, through the head
  model and through the head teacher;
* whole picture: the picture shrunk so its short side is at most 720 px
  (``cartoon.background.shrink``), through the background model and through the
  background teacher.

It writes JPEG strips to the gallery directory (the whole-picture strip ends with a
fourth panel, the complete served output of ``cartoon.pipeline.Pipeline``: background
plus pasted-back head) and prints a markdown table of student-vs-teacher PSNR and SSIM.

Usage (from the repository root):
    python -m tools.render_gallery --styles-dir cartoon/styles --out docs/gallery
"""

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cartoon.background import shrink, split, stitch
from cartoon.constants import CROP_SIZE
from cartoon.pipeline import Options, Pipeline, PipelineSettings
from cartoon.styles import StyleRegistry, Stylizer
from cartoon.unet import load_generator
from tools.teachers import teacher
from tools.train_style import HELD_OUT, load_photo

GALLERY_HEIGHT = 432  # px of each whole-picture panel: outlines must stay visible
JPEG_QUALITY = 85


@dataclass(frozen=True)
class Score:
    """Student-vs-teacher agreement for one style, held-out photo and part."""

    style: str
    photo: str
    part: str  # "head" or "whole"
    psnr: float
    ssim: float


def score(student: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of a student picture against its teacher, both uint8 RGB."""
    psnr = peak_signal_noise_ratio(reference, student, data_range=255)
    ssim = structural_similarity(reference, student, channel_axis=2, data_range=255)
    return float(psnr), float(ssim)


def stylize_whole(stylizer: Stylizer, picture: np.ndarray) -> np.ndarray:
    """Runs the background model on a whole picture (padded to the UNet's stride, cut back)."""
    pieces, plan = split(picture)
    return stitch(stylizer.run(pieces, "background"), plan)


def strip(panels: list[np.ndarray], height: int) -> np.ndarray:
    """Panels side by side, each resized to ``height`` px tall."""
    resized = [
        cv2.resize(
            panel,
            (round(panel.shape[1] * height / panel.shape[0]), height),
            interpolation=cv2.INTER_AREA,
        )
        for panel in panels
    ]
    return np.concatenate(resized, axis=1)


def save_jpeg(rgb: np.ndarray, path: Path) -> None:
    """Writes a small JPEG: the gallery is committed, so it must stay light."""
    Image.fromarray(rgb).save(path, format="JPEG", quality=JPEG_QUALITY, optimize=True)


def render(styles_dir: Path, out: Path | None, device: str = "cpu") -> list[Score]:
    """Scores every style of ``styles_dir`` on the held-out photos; writes strips to ``out``.

    Args:
        styles_dir: a weights directory with ``registry.json``.
        out: the gallery directory, or None to only score.
        device: where the students run.

    Returns:
        One score per style, photo and part.
    """
    registry = StyleRegistry.from_directory(styles_dir)
    settings = PipelineSettings(device=device)
    pipeline = Pipeline(registry, settings)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    scores = []
    for photo_id in HELD_OUT:
        photo = load_photo(photo_id)
        name = Path(photo_id.split(":", 1)[1]).stem
        heads = pipeline.preparer.prepare_array(photo, Options()).heads
        if len(heads) != 1:
            raise RuntimeError(f"expected one face in {photo_id}, found {len(heads)}")
        head = heads[0]
        whole = shrink(photo, settings.process_side)
        for style in registry.names():
            stylizer = pipeline.stylizer(style)
            head_teacher = teacher(style, "head")(head)
            head_student = stylizer.run(head[None], "head")[0]
            whole_teacher = teacher(style, "background")(whole)
            whole_student = stylize_whole(stylizer, whole)
            scores.append(Score(style, name, "head", *score(head_student, head_teacher)))
            scores.append(Score(style, name, "whole", *score(whole_student, whole_teacher)))
            if out is not None:
                served = pipeline(photo, Options(style=style))
                served_rgb = np.asarray(Image.open(io.BytesIO(served.data)).convert("RGB"))
                head_strip = strip([head, head_teacher, head_student], CROP_SIZE)
                save_jpeg(head_strip, out / f"{style}_{name}_head.jpg")
                save_jpeg(
                    strip([whole, whole_teacher, whole_student, served_rgb], GALLERY_HEIGHT),
                    out / f"{style}_{name}_whole.jpg",
                )
    return scores


def multiply_accumulates(model: torch.nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of the model's convolutions for one (1, 3, height, width) input.

    The guided filter and the activations add a few elementwise operations per pixel,
    negligible next to the convolutions, and are not counted.
    """
    total = 0

    def count(module: torch.nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output[0].numel() * module.in_channels // module.groups * kernel

    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [conv.register_forward_hook(count) for conv in convolutions]
    with torch.inference_mode():
        model(torch.zeros(1, 3, height, width))
    for hook in hooks:
        hook.remove()
    return total


def table(scores: list[Score]) -> str:
    """A markdown table, one row per style, photo and part, plus per-style means."""
    lines = ["| style | photo | part | PSNR (dB) | SSIM |", "|---|---|---|---:|---:|"]
    for s in scores:
        lines.append(f"| {s.style} | {s.photo} | {s.part} | {s.psnr:.2f} | {s.ssim:.3f} |")
    for style in sorted({s.style for s in scores}):
        for part in ("head", "whole"):
            chosen = [s for s in scores if s.style == style and s.part == part]
            psnr = np.mean([s.psnr for s in chosen])
            ssim = np.mean([s.ssim for s in chosen])
            lines.append(f"| {style} | mean | {part} | {psnr:.2f} | {ssim:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--styles-dir", type=Path, default=Path("cartoon/styles"))
    parser.add_argument("--out", type=Path, default=Path("docs/gallery"), help="gallery directory")
    parser.add_argument("--no-images", action="store_true", help="only print the scores")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(table(render(args.styles_dir, None if args.no_images else args.out)))
    registry = StyleRegistry.from_directory(args.styles_dir)
    for name in registry.names():
        model = load_generator(registry.get(name).head)
        parameters = sum(p.numel() for p in model.parameters())
        gmac = multiply_accumulates(model, CROP_SIZE, CROP_SIZE) / 1e9
        print(
            f"{name}: width {model.config.width}, {parameters:,} parameters, "
            f"{gmac:.2f} GMAC per {CROP_SIZE}x{CROP_SIZE} crop"
        )


if __name__ == "__main__":
    main()
