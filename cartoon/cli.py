"""``python -m cartoon input.jpg -o out.png`` (or ``clip.mp4 -o out.mp4``): the whole pipeline locally, no Ray."""

import argparse
import asyncio
import sys
import time
from pathlib import Path

from cartoon.video import media
from cartoon.video.clip import ClipSettings, LocalStages, Progress, cartoonize_clip
from cartoon.errors import CartoonError, WeightsError
from cartoon.image.faces import DetectorConfig
from cartoon.image.pipeline import Options, Pipeline, PipelineSettings
from cartoon.video.tracking import TrackerSettings
from cartoon.image.styles import DEFAULT_STYLES_DIR, StyleRegistry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cartoon", description=__doc__)
    parser.add_argument("input", type=Path, help="a photo (JPEG, PNG, WebP, BMP, TIFF, GIF) or a video (MP4, MOV, MKV, WebM)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the cartoon")
    parser.add_argument("--weights", type=Path, help="one .safetensors file for head and background")
    parser.add_argument("--styles-dir", type=Path, default=DEFAULT_STYLES_DIR, help="a style registry directory")
    parser.add_argument("--style", help="style name from the registry (default: its default)")
    parser.add_argument("--strength", type=float, default=1.0, help="0 = original, 1 = full cartoon")
    parser.add_argument("--max-side", type=int, help="cap on the output's long side")
    parser.add_argument("--quality", type=int, default=90, help="JPEG/WebP quality")
    parser.add_argument("--landmarks", type=int, choices=(5, 68), default=5,
                        help="landmark model; 68 is for non-commercial use only")
    parser.add_argument("--process-side", type=int, default=720, help="background short side")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--detect-every", type=int, default=TrackerSettings().detect_every,
                        help="video: frames between face detections (faces are tracked in between)")
    return parser


def _cartoonize_video(args: argparse.Namespace, pipeline: Pipeline, options: Options) -> int:
    """The video path: every frame cartoonized, timestamps, rotation and audio kept."""
    output_format = args.output.suffix.lower().lstrip(".")
    if output_format not in media.OUTPUT_FORMATS:
        print(f"a video's output must end in {', '.join('.' + name for name in media.OUTPUT_FORMATS)}", file=sys.stderr)
        return 2
    info = media.probe(args.input, media.VideoLimits(max_seconds=float("inf"), max_pixels=pipeline.settings.max_pixels))
    media.check_output(args.input, output_format)
    style = pipeline.registry.get(options.style)
    stylizer = pipeline.stylizer(options.style)

    def report(progress: Progress) -> None:
        print(f"\r  frame {progress.frames_done}/{progress.frames_total}, {progress.fps:.2f} fps", end="",
              file=sys.stderr, flush=True)

    settings = ClipSettings(tracker=TrackerSettings(detect_every=args.detect_every),
                            max_output_pixels=pipeline.settings.max_output_pixels)
    clip = asyncio.run(cartoonize_clip(
        args.input, args.output, info, output_format, options, LocalStages(pipeline, style.name),
        pipeline.preparer.detector, stylizer.finish, settings, report,
    ))
    print(file=sys.stderr)
    print(f"{args.input} -> {args.output} ({clip.frames} frames at {float(info.fps):.3f} fps, "
          f"audio {info.audio_codec or 'none'}, {clip.frames / clip.seconds:.2f} frames/s)")
    for stage, seconds in clip.stage_seconds.items():
        print(f"  {stage:<16} {1000.0 * seconds / max(1, clip.frames):8.1f} ms per frame")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output_format = {".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}.get(args.output.suffix.lower(), "png")
    if not 0.0 <= args.strength <= 1.0:
        print("--strength must be within 0..1", file=sys.stderr)
        return 2
    try:
        registry = (
            StyleRegistry.single_file(args.weights) if args.weights
            else StyleRegistry.from_directory(args.styles_dir)
        )
        settings = PipelineSettings(
            detector=DetectorConfig(landmark_points=args.landmarks),
            process_side=args.process_side,
            device=args.device,
        )
        pipeline = Pipeline(registry, settings)
        options = Options(
            style=None if args.weights else args.style,
            strength=args.strength,
            format=output_format,
            quality=args.quality,
            max_side=args.max_side,
        )
        if args.input.suffix.lower().lstrip(".") in media.OUTPUT_FORMATS:
            return _cartoonize_video(args, pipeline, options)
        start = time.perf_counter()
        result = pipeline(args.input.read_bytes(), options)
        total = (time.perf_counter() - start) * 1000.0
    except (CartoonError, WeightsError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.output.write_bytes(result.data)
    print(f"{args.input} -> {args.output} ({result.width}x{result.height}, {output_format})")
    print(f"faces found: {len(result.faces)}")
    for index, face in enumerate(result.faces):
        x0, y0, x1, y1 = face.box
        print(f"  face {index}: box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}), score {face.score:.2f}")
    for stage, milliseconds in result.timings.items():
        print(f"  {stage:<16} {milliseconds:8.1f} ms")
    print(f"  {'total':<16} {total:8.1f} ms")
    return 0
