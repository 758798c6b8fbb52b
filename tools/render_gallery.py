"""Renders the gallery: evaluation photos beside every style, whole and head crop.

For each photo (by default ``tools.photos.GALLERY``: the evaluation photos, never
trained on, whose own licence lets us publish stylised copies; any evaluation photo
with ``--photos``, for looking at locally) it writes two JPEG strips to the gallery
directory, each "photo | style 1 | style 2 | ...":

* ``<photo>_whole.jpg``: the complete served output of ``cartoon.image.pipeline.Pipeline``
  (background plus pasted-back heads), so seams and colour casts show;
* ``<photo>_head.jpg``: the aligned 288x288 crop of the largest face, cut from the
  photo and from each served output with the same transform, so the pasted head is
  seen as a user sees it, zoomed.

It also writes ``strip.jpg``, the README's strip: the head crops of the first four
photos with a face, one row each. The figures (palette, flat regions, line coverage,
student against teacher) come from ``python -m tools.cartoon_metrics``, which can write
the same strips while it scores (``--gallery``), so the pipeline runs once per picture;
point that at a scratch directory, as it writes strips of every photo it scores.

Usage (from the repository root; needs the photo packages of ``tools.photos``):
    python -m tools.render_gallery --styles-dir cartoon/styles --out docs/gallery
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from cartoon.image import codec
from cartoon.image.align import warp_crop
from cartoon.constants import CROP_SIZE
from cartoon.image.pipeline import Options, Pipeline, PipelineSettings
from cartoon.image.styles import StyleRegistry
from cartoon.model.unet import load_generator
from tools import photos as packaged

GALLERY_HEIGHT = 432  # px of each whole-picture panel: outlines must stay visible
STRIP_ROWS = 4  # head-crop rows in the README strip
JPEG_QUALITY = 85


def strip(panels: list[np.ndarray], height: int) -> np.ndarray:
    """Panels side by side, each resized to ``height`` px tall."""
    resized = [
        cv2.resize(
            panel,
            (round(panel.shape[1] * height / panel.shape[0]), height),
            interpolation=cv2.INTER_AREA if panel.shape[0] > height else cv2.INTER_LINEAR,
        )
        for panel in panels
    ]
    return np.concatenate(resized, axis=1)


def save_jpeg(rgb: np.ndarray, path: Path) -> None:
    """Writes a small JPEG: the gallery is committed, so it must stay light."""
    Image.fromarray(rgb).save(path, format="JPEG", quality=JPEG_QUALITY, optimize=True)


def gallery_order(registry: StyleRegistry) -> list[str]:
    """The registry's styles, the default first: the order of every strip's panels."""
    return [registry.default] + [name for name in registry.names() if name != registry.default]


def write_photo_strips(
    out: Path, name: str, photo: np.ndarray, served: list[np.ndarray], matrix: np.ndarray | None
) -> list[Path]:
    """Writes ``<name>_whole.jpg`` and, when a face was found, ``<name>_head.jpg``.

    Args:
        out: the gallery directory.
        name: the photo's short name.
        photo: (H, W, 3) uint8.
        served: one (H, W, 3) uint8 served output per style, in registry order.
        matrix: the (2, 3) transform that cuts the largest face's aligned crop, or None.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}_whole.jpg"
    save_jpeg(strip([photo] + served, GALLERY_HEIGHT), path)
    written = [path]
    if matrix is not None:
        path = out / f"{name}_head.jpg"
        save_jpeg(strip([warp_crop(p, matrix) for p in [photo] + served], CROP_SIZE), path)
        written.append(path)
    return written


def write_readme_strip(out: Path, names: list[str]) -> Path:
    """Stacks the head strips of the first ``STRIP_ROWS`` photos that have one into strip.jpg."""
    rows = [out / f"{name}_head.jpg" for name in names]
    rows = [np.asarray(Image.open(path).convert("RGB")) for path in rows if path.is_file()]
    path = out / "strip.jpg"
    save_jpeg(np.concatenate(rows[:STRIP_ROWS], axis=0), path)
    return path


def render(styles_dir: Path, out: Path, photo_ids: list[str], device: str = "cpu") -> list[Path]:
    """Writes the gallery strips for the photos and the README strip; returns the files.

    Args:
        styles_dir: a weights directory with ``registry.json``.
        out: the gallery directory.
        photo_ids: ``tools.photos`` ids.
        device: where the students run.
    """
    registry = StyleRegistry.from_directory(styles_dir)
    pipeline = Pipeline(registry, PipelineSettings(device=device))
    written = []
    for photo_id in photo_ids:
        photo = packaged.load(photo_id)
        served = [
            codec.decode(pipeline(photo, Options(style=style)).data).rgb
            for style in gallery_order(registry)
        ]
        matrices = pipeline.preparer.prepare_array(photo, Options()).matrices
        matrix = matrices[0] if len(matrices) else None
        written += write_photo_strips(out, short_name(photo_id), photo, served, matrix)
    written.append(write_readme_strip(out, [short_name(p) for p in photo_ids]))
    return written


def short_name(photo_id: str) -> str:
    """The file-name stem of a photo id ("insightface:t1.jpg" -> "t1")."""
    return Path(photo_id.split(":", 1)[1]).stem


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--styles-dir", type=Path, default=Path("cartoon/styles"))
    parser.add_argument("--out", type=Path, default=Path("docs/gallery"), help="gallery directory")
    parser.add_argument("--photos", nargs="*", default=[p.id for p in packaged.GALLERY])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--readme-strip-only", action="store_true",
        help="only stack the existing head strips of --photos into strip.jpg",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.readme_strip_only:
        print(write_readme_strip(args.out, [short_name(p) for p in args.photos]))
        return
    for path in render(args.styles_dir, args.out, args.photos):
        print(path)
    registry = StyleRegistry.from_directory(args.styles_dir)
    for name in registry.names():
        style = registry.get(name)
        for kind, path in (("head", style.head), ("background", style.background)):
            model = load_generator(path)
            parameters = sum(p.numel() for p in model.parameters())
            gmac = multiply_accumulates(model, CROP_SIZE, CROP_SIZE) / 1e9
            print(
                f"{name} {kind}: width {model.config.width}, {parameters:,} parameters, "
                f"{gmac:.2f} GMAC per {CROP_SIZE}x{CROP_SIZE} crop"
            )


if __name__ == "__main__":
    main()
