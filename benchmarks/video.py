"""Video: frames per second end to end and per stage, and flicker, beside the per-frame baseline.

    python -m benchmarks.video                      # a 720p clip made from Grace Hopper's portrait
    python -m benchmarks.video --clip my.mp4        # any clip
    python -m benchmarks.video --device cuda        # on a GPU machine, in process
    serve run configs/gpu.yaml &  python -m benchmarks.video --device cuda --url http://127.0.0.1:8000
    python -m benchmarks.video --size 640x360 --frames 240 --deploy serve_config.yaml --served-only
                                                    # the jobs API alone, on a graph deployed here

Rows, all in this process on the same clip, one after the other:
- ``per-frame``: each frame through the still-image pipeline independently (detect every
  frame, the still finish), one frame at a time, then encoded: what a user would write.
- ``video``: ``cartoon.video.clip`` as the ``cartoonize`` command runs it: tracked faces, the
  temporal finish, decoding, stages and encoding overlapping.
- ``video, no hysteresis`` and ``video, no tracking``: each half of the stabilisation alone.
- ``served job`` (with ``--url``, or ``--deploy CONFIG`` to deploy one here first): the clip
  as a job of a service (``POST /v1/jobs``), its frames batched by the served Cartoonizer;
  end to end, upload to download. ``--served-only`` leaves the in-process rows out (its
  speed ratio and PSNR are then against the served row itself).

Flicker is the warping error of Lai et al. 2018 (``cartoon.video.flicker``), flow from the input
frames; ``input`` is the clip's own score (what flow errors alone cost). PSNR is each
row's frames against the per-frame baseline's: how far stabilising moved the picture
from the still-image look. Times on a shared machine vary; compare the rows as ratios.
"""

import argparse
import asyncio
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

from benchmarks import common
from benchmarks.common import fmt, markdown_table
from cartoon.video import flicker
from cartoon.video import media
from cartoon.video.clip import ClipSettings, LocalStages, cartoonize_clip, frame_size
from cartoon.image.compose import resize_to
from cartoon.image.finish import Hysteresis
from cartoon.image.pipeline import Composer, Options, Pipeline, PipelineSettings, stylize_job
from cartoon.image.styles import StyleRegistry
from cartoon.video.tracking import TrackerSettings
from tests import clips, photos

PER_FRAME_STAGES = ("decode", "detect", "align", "background", "unet", "compose", "encode")


def make_clip(directory: Path, frames: int, fps: int, width: int, height: int) -> Path:
    return clips.write_clip(directory / "clip.mp4", clips.camera_move(photos.grace_hopper(), frames, width, height), fps)


def per_frame(source: Path, destination: Path, info: media.VideoInfo, pipeline: Pipeline, options: Options) -> dict:
    """The baseline: the still pipeline on every frame, one after another; ms per stage."""
    stylizer = pipeline.stylizer(options.style)
    composer = Composer()
    height, width = frame_size(info, None, pipeline.settings.max_output_pixels)
    writer = media.VideoWriter(destination, source, info, "mp4", width, height)
    totals = dict.fromkeys(PER_FRAME_STAGES, 0.0)
    count, start = 0, time.perf_counter()
    decoded = media.frames(source, info.rotation)
    while True:
        began = time.perf_counter()
        frame = next(decoded, None)
        totals["decode"] += (time.perf_counter() - began) * 1000.0
        if frame is None:
            break
        job = stylize_job(pipeline.preparer.prepare_array(resize_to(frame.rgb, height, width), options), stylizer)
        began = time.perf_counter()
        picture = composer.picture(job)
        totals["compose"] += (time.perf_counter() - began) * 1000.0
        began = time.perf_counter()
        writer.write(media.stored(picture, info.rotation), frame.pts)
        totals["encode"] += (time.perf_counter() - began) * 1000.0
        for stage in ("detect", "align", "background", "unet"):
            totals[stage] += job.timings.get(stage, 0.0)
        count += 1
    writer.close()
    seconds = time.perf_counter() - start
    return {"frames": count, "fps": count / seconds, "ms_per_frame": {k: v / count for k, v in totals.items()}}


def stabilised(source: Path, destination: Path, info: media.VideoInfo, pipeline: Pipeline, options: Options,
               settings: ClipSettings) -> dict:
    stylizer = pipeline.stylizer(options.style)
    report = asyncio.run(cartoonize_clip(
        source, destination, info, "mp4", options, LocalStages(pipeline, options.style),
        pipeline.preparer.detector, stylizer.finish, settings,
    ))
    return {"frames": report.frames, "fps": report.frames / report.seconds,
            "ms_per_frame": {k: 1000.0 * v / report.frames for k, v in report.stage_seconds.items()}}


def served_job(source: Path, destination: Path, url: str, style: str) -> dict:
    """The clip as a job of the service at ``url``: frames per second from upload to download."""
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as client:
        response = client.post("/v1/jobs", params={"style": style}, content=source.read_bytes())
        response.raise_for_status()
        location = response.headers["location"]
        while (state := client.get(location).json())["state"] in ("queued", "running"):
            time.sleep(0.2)
        if state["state"] != "done":
            raise SystemExit(f"the served job ended {state['state']}: {state['error']}")
        destination.write_bytes(client.get(f"{location}/result").content)
    frames = state["progress"]["frames_done"]
    return {"frames": frames, "fps": frames / (time.perf_counter() - start), "ms_per_frame": {}}


def decoded(path: Path) -> list[np.ndarray]:
    return [frame.rgb for frame in media.frames(path, media.probe(path).rotation)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, help="a video to use instead of the generated one")
    parser.add_argument("--frames", type=int, default=48, help="frames of the generated clip")
    parser.add_argument("--fps", type=int, default=24, help="frame rate of the generated clip")
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of the generated clip")
    parser.add_argument("--styles-dir", help="styles directory (default: the shipped styles)")
    parser.add_argument("--style", help="style name (default: the registry's default)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-ablations", action="store_true", help="skip the two half-stabilised rows")
    parser.add_argument("--url", help="also run the clip as a job of the service at this URL")
    parser.add_argument("--deploy", metavar="CONFIG", help="deploy this Serve config here and run the clip as its job")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="--deploy: a config override (see benchmarks.common.apply_overrides)")
    parser.add_argument("--ray-gpus", type=int, help="--deploy: logical GPUs Ray declares")
    parser.add_argument("--served-only", action="store_true", help="only the served job (needs --url or --deploy)")
    parser.add_argument("--json", help="results file (default benchmarks/results/video.json)")
    args = parser.parse_args(argv)

    registry = StyleRegistry.from_directory(common.resolve_styles_dir(args.styles_dir))
    pipeline = Pipeline(registry, PipelineSettings(device=args.device))
    options = Options(style=registry.get(args.style).name)
    full = ClipSettings()
    runs = {"video": full}
    if not args.no_ablations:
        runs["video, no hysteresis"] = ClipSettings(hysteresis=Hysteresis(cell=0.0, line=0.0, black=0.0))
        # Detection every frame, no smoothing (a One Euro cutoff far above any frame rate).
        runs["video, no tracking"] = ClipSettings(tracker=TrackerSettings(detect_every=1, min_cutoff=1e9))
    if args.served_only and not (args.url or args.deploy):
        parser.error("--served-only needs --url or --deploy")
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        directory = Path(scratch)
        width, height = map(int, args.size.split("x"))
        source = args.clip or make_clip(directory, args.frames, args.fps, width, height)
        info = media.probe(source, media.VideoLimits(max_seconds=float("inf")))
        results = {}
        if not args.served_only:
            results["per-frame"] = per_frame(source, directory / "per-frame.mp4", info, pipeline, options)
            for name, settings in runs.items():
                results[name] = stabilised(source, directory / f"{name}.mp4", info, pipeline, options, settings)
        url = args.url
        if args.deploy:
            config = common.apply_overrides(common.load_serve_config(Path(args.deploy)), args.overrides)
            url = stack.enter_context(common.served_graph(config, ray_gpus=args.ray_gpus))
        if url:
            results["served job"] = served_job(source, directory / "served job.mp4", url, options.style)
        outputs = {name: decoded(directory / f"{name}.mp4") for name in results}
        reference = next(iter(results))  # per-frame, unless served only
        inputs = [resize_to(rgb, *outputs[reference][0].shape[:2]) for rgb in decoded(source)]
        errors = flicker.warping_error(inputs, {"input": inputs, **outputs})
    for name, result in results.items():
        result["warping_error"] = errors[name]
        result["psnr_vs_per_frame_db"] = float(np.mean(
            [flicker.psnr(a, b) for a, b in zip(outputs[name], outputs[reference])]
        )) if name != reference else None
    baseline_fps = results[reference]["fps"]
    stages = ["decode", "detect", "track", "align", "background", "unet", "finish", "compose", "encode"]
    rows = []
    for name, result in results.items():
        ms = result["ms_per_frame"]
        rows.append([name, result["frames"], fmt(result["fps"], 2), fmt(result["fps"] / baseline_fps, 2),
                     fmt(1000 * result["warping_error"], 3),
                     fmt(result["psnr_vs_per_frame_db"]) if result["psnr_vs_per_frame_db"] else "-",
                     *(fmt(ms[stage]) if stage in ms else "-" for stage in stages)])
    rows.append(["input (flow floor)", len(inputs), "-", "-", fmt(1000 * errors["input"], 3), "-", *("-" for _ in stages)])
    print(f"{info.width}x{info.height}, {len(inputs)} frames at {float(info.fps):.2f} fps; {common.machine_description()}")
    print("warping error x 1000 (lower = steadier); stage columns: ms of busy time per frame (video rows' stages overlap)")
    print(markdown_table(["run", "frames", "fps", "x per-frame", "warp err", "PSNR vs per-frame (dB)",
                          *(f"{stage} ms" for stage in stages)], rows))
    common.write_json(common.output_path(args.json, "video.json"),
                      {"machine": common.machine_description(), "clip": str(args.clip or args.size),
                       "device": args.device, "results": results, "input_warping_error": errors["input"]})


if __name__ == "__main__":
    main()
