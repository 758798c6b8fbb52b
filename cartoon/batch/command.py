"""``cartoonize-batch INPUT_DIR -o OUTPUT_DIR``: cartoonize every photo (and clip) of a folder tree.

Two engines: ``--engine http`` (``cartoon.batch.http_engine``: through the service at
``--url``, or in this process without it) and ``--engine ray`` (``cartoon.batch.ray_engine``:
Ray Data on a Ray cluster). In both, the folders are local paths or pyarrow filesystem
URIs (s3://, gs://, file://). What is done and where it goes is ``cartoon.batch.files``.

Exit codes: 0 all done, 1 some failed, 2 usage error, 130 interrupted (Ctrl-C).
"""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from cartoon.batch import http_engine
from cartoon.batch.files import Tally, UsageError
from cartoon.constants import UNET_STRIDE
from cartoon.image.codec import SUFFIX_BY_FORMAT
from cartoon.image.pipeline import Options, PipelineSettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# How --engine ray lays the stages out on the cluster (cartoon.batch.ray_engine).
RAY_LAYOUTS = ("auto", "staged", "whole")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cartoonize-batch",
        description="Cartoonize every photo under INPUT_DIR into OUTPUT_DIR, mirroring the folder tree.",
        epilog=f"Exit codes: 0 all done, 1 some failed, 2 usage error, 130 interrupted. "
               f"A service that requires an API key gets it from ${http_engine.API_KEY_VARIABLE}.",
    )
    parser.add_argument("input_dir", metavar="INPUT_DIR",
                        help="folder of photos (searched recursively, links followed, each folder once), "
                             "or a URI pyarrow knows (s3://, gs://, file://)")
    parser.add_argument("-o", "--output", metavar="OUTPUT_DIR", required=True,
                        help="where the cartoons go, same tree and stems; a folder or a URI, as INPUT_DIR")
    parser.add_argument("--engine", choices=("http", "ray"), default="http",
                        help="http (default): through the service at --url, or in this process without it; "
                             "ray: Ray Data on a Ray cluster")
    parser.add_argument("--url", help="the service, e.g. http://127.0.0.1:8000; without it: in this process")
    parser.add_argument("--style", help="style name (default: the service's default)")
    parser.add_argument("--strength", type=float, default=1.0, help="0 = the photo, 1 = full cartoon (default 1)")
    parser.add_argument("--format", choices=sorted(SUFFIX_BY_FORMAT), default="png", help="output format")
    parser.add_argument("--max-side", type=int, help="cap on the output's long side (only shrinks)")
    parser.add_argument("--concurrency", type=int, default=4, help="photos in flight at once (default 4)")
    parser.add_argument("--overwrite", action="store_true", help="redo photos whose output exists")
    parser.add_argument("--report", type=Path,
                        help="write each failure to this file as a JSON line as it happens, and the summary last")
    ray = parser.add_argument_group("--engine ray")
    ray.add_argument("--address", help="the Ray cluster (auto: the one this machine belongs to); "
                                       "without it: a Ray of this machine's own, started and stopped here")
    ray.add_argument("--layout", choices=RAY_LAYOUTS, default="auto",
                     help="staged: decode/align tasks, UNet actors, compose tasks; whole: each actor takes "
                          "photos from file to file (default auto: staged with --gpus-per-actor, else whole)")
    ray.add_argument("--unet-actors", type=int,
                     help="actors in the pool (default, from the cluster when the run starts: one per "
                          "--gpus-per-actor of its GPUs; whole photos on CPUs: one per --cpus-per-actor of its "
                          "CPUs and per 2 GiB of its memory; staged on CPUs: 1)")
    ray.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per UNet actor (default 0: CPU)")
    ray.add_argument("--cpus-per-actor", type=float, default=1.0,
                     help="logical CPUs per UNet actor, its torch threads on a CPU (default 1)")
    ray.add_argument("--cpus-per-task", type=float, default=1.0,
                     help="logical CPUs per decode/align or compose/encode task of the staged layout (default 1)")
    ray.add_argument("--batch-size", type=int, default=4,
                     help="photos per UNet actor call; their pieces form its batches (default 4)")
    ray.add_argument("--tile", type=int, default=0,
                     help="background tile side, as the served tile knob (0: whole background; 384 on a GPU)")
    return parser


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    if args.engine == "ray" and args.url:
        parser.error("--url is for --engine http; --engine ray runs on the Ray cluster of --address")
    too_few_actors = args.unet_actors is not None and args.unet_actors < 1
    if too_few_actors or args.batch_size < 1 or args.cpus_per_task <= 0 or min(args.cpus_per_actor, args.gpus_per_actor) < 0:
        parser.error("--unet-actors and --batch-size must be at least 1, --cpus-per-task above 0, "
                     "--cpus-per-actor and --gpus-per-actor at least 0")
    if args.tile and (args.tile % UNET_STRIDE or args.tile <= 2 * PipelineSettings.halo):
        parser.error(f"--tile must be 0 or a multiple of {UNET_STRIDE} above {2 * PipelineSettings.halo}")
    if not 0.0 <= args.strength <= 1.0:
        parser.error("--strength must be within 0..1")
    if args.max_side is not None and args.max_side < 16:
        parser.error("--max-side must be at least 16")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.url and not args.url.startswith(("http://", "https://")):
        parser.error("--url must start with http:// or https://")
    return Options(style=args.style, strength=args.strength, format=args.format, max_side=args.max_side)


def _summarize(args: argparse.Namespace, tally: Tally, started: list[float], interrupted: bool) -> None:
    elapsed = time.perf_counter() - started[0] if started else 0.0
    rate = tally.done / elapsed if elapsed > 0 else 0.0
    print(
        f"{'interrupted: ' if interrupted else ''}done {tally.done}, skipped {tally.skipped}, "
        f"failed {len(tally.failures)}; {rate:.2f} images/s over {elapsed:.1f} s; retries {tally.retries}"
    )
    for failure in tally.failures:
        print(f"  failed: {failure['input']}: {failure['error']}")
    if tally.report is not None:
        summary = {"done": tally.done, "skipped": tally.skipped, "failed": len(tally.failures),
                   "retries": tally.retries, "ignored": tally.ignored, "interrupted": interrupted}
        tally.report.write(json.dumps({"summary": summary}) + "\n")


def main(argv: list[str] | None = None) -> int:
    """The ``cartoonize-batch`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    options = _options(parser, args)
    tally, started = Tally(), []
    if not args.report:
        return _run_engine(args, options, tally, started)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    with args.report.open("w", encoding="utf-8") as tally.report:
        return _run_engine(args, options, tally, started)


def _run_engine(args: argparse.Namespace, options: Options, tally: Tally, started: list[float]) -> int:
    """Runs the chosen engine and summarizes; returns the exit code."""
    try:
        if args.engine == "ray":
            from cartoon.batch import ray_engine  # Ray only for this engine: the HTTP mode starts without it

            ray_engine.main(args, options, tally, started)
        else:
            asyncio.run(http_engine.run(args, options, tally, started))
    except UsageError as exc:
        print(f"cartoonize-batch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _summarize(args, tally, started, interrupted=True)
        return EXIT_INTERRUPTED
    _summarize(args, tally, started, interrupted=False)
    return EXIT_FAILED if tally.failures else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
