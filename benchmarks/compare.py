"""Side by side in one run: the in-process Pipeline, the served graph, and what users write instead.

    python -m benchmarks.compare                      # default run, about 6-10 minutes on 2 cores
    python -m benchmarks.compare --rounds 1 --requests 8 --sizes 1024   # smoke run, ~3 minutes
    python -m benchmarks.compare --set args.cpu_threads=2                # try a knob of serve_config.yaml

Same photos and same weights for every mode:

(a) the in-process ``Pipeline``: no Ray, no HTTP (torch threads = the Cartoonizer's, so the
    ratio (b)/(a) isolates what Serve adds);
(b) the served graph from serve_config.yaml, deployed in this process as ``serve run`` does;
(c) ``benchmarks/naive_server.py``: uvicorn + FastAPI around the same Pipeline, model loaded
    once, no batching;
(d) the same server building the Pipeline (detector, landmarks, UNet weights) per request,
    one request at a time.

All servers are up for the whole run; the measurement interleaves them in rounds (rotating
the order) so drift on a shared machine lands on every mode alike. Per round: every photo
once per mode at c=1, then a closed-loop level at c=8 per HTTP mode.
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
import torch

from benchmarks import common
from benchmarks.common import Photo, fmt
from benchmarks.load import Level, Sample, run_level, sample_of

MODES = {
    "a": "(a) in-process Pipeline",
    "b": "(b) served graph (Ray Serve)",
    "c": "(c) naive server, model loaded once",
    "d": "(d) naive server, model loaded per request",
}
HTTP_MODES = ("b", "c", "d")

# Server-Timing stages in pipeline order; the sum of these is what the stages account for.
STAGES = ("decode", "detect", "align", "background", "wait_cartoonizer", "unet", "wait_postprocessor",
          "compose", "encode")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="abcd", help="which of a, b, c, d to run")
    parser.add_argument("--styles-dir", help="styles directory (default: the shipped styles)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="serve_config.yaml override, e.g. args.cpu_threads=2 (repeatable)")
    parser.add_argument("--sizes", default="1024,2048", help="long sides measured at c=1")
    parser.add_argument("--load-size", type=int, default=1024, help="long side of the photos at c>1")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrency of the throughput levels")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    parser.add_argument("--requests", type=int, default=24, help="requests per throughput level, (b) and (c)")
    parser.add_argument("--d-requests", type=int, default=8, help="requests per throughput level, (d)")
    parser.add_argument("--inproc-threads", type=int, default=0,
                        help="torch threads of (a); 0 = the served Cartoonizer's thread count")
    parser.add_argument("--naive-threads", type=int, default=0,
                        help="torch threads of (c) and (d); 0 = torch's default (all cores)")
    parser.add_argument("--settle-s", type=float, default=3.0,
                        help="pause before each throughput level, so one mode's after-effects "
                             "(replicas starting or stopping) fade before the next is timed")
    parser.add_argument("--format", default="png", choices=("png", "jpeg", "webp"), help="output format")
    parser.add_argument("--out", help="PNG plot path (default benchmarks/results/compare.png)")
    return parser


class Runner:
    """Sends one photo to one mode, at c=1, and returns a Sample."""

    def __init__(self, pipeline, urls: dict[str, str], output_format: str):
        from cartoon.image.pipeline import Options

        self.pipeline = pipeline
        self.urls = urls
        self.options = Options(format=output_format)
        self.params = {"format": output_format}
        self.client = httpx.Client(timeout=300.0)

    def one(self, mode: str, photo: Photo) -> Sample:
        if mode == "a":
            start = time.perf_counter()
            result = self.pipeline(photo.data, self.options)
            latency = time.perf_counter() - start
            timings = {**result.timings, "total": latency * 1000}
            return Sample(photo.name, photo.side, 200, latency, timings, list(result.batch_sizes), len(result.faces))
        start = time.perf_counter()
        try:
            response = self.client.post(
                self.urls[mode], content=photo.data, params=self.params,
                headers={"content-type": photo.content_type},
            )
        except httpx.HTTPError as exc:
            return Sample(photo.name, photo.side, 0, time.perf_counter() - start, error=type(exc).__name__)
        return sample_of(photo, response, time.perf_counter() - start)

    def level(self, mode: str, photos: list[Photo], concurrency: int, requests: int) -> Level:
        return asyncio.run(run_level(self.urls[mode], photos, concurrency, requests, params=self.params))


def rotated(items: list, shift: int) -> list:
    shift %= len(items)
    return items[shift:] + items[:shift]


# --- reporting --------------------------------------------------------------------------------


def latency_rows(c1: dict[str, list[Sample]], sizes: list[int]) -> list[list]:
    rows = []
    for mode, samples in c1.items():
        for side in sizes:
            ms = [s.latency_s * 1000 for s in samples if s.side == side and s.ok]
            errors = sum(1 for s in samples if s.side == side and not s.ok)
            rows.append([MODES[mode], side, len(ms), fmt(common.median(ms), 0), fmt(np.mean(ms) if ms else np.nan, 0),
                         fmt(common.percentile(ms, 95), 0), errors])
    return rows


def throughput_rows(levels: dict[str, list[Level]]) -> list[list]:
    rows = []
    for mode, per_round in levels.items():
        rates = [level.throughput() for level in per_round]
        latencies = [ms for level in per_round for ms in level.latencies_ms()]
        errors = sum(len(level.samples) - len(level.ok) for level in per_round)
        batches = [size for level in per_round for s in level.ok for size in s.batch_sizes]
        rows.append([MODES[mode], fmt(common.median(rates), 2), " / ".join(fmt(r, 2) for r in rates),
                     fmt(common.percentile(latencies, 50), 0), fmt(common.percentile(latencies, 95), 0), errors,
                     fmt(np.mean(batches) if batches else np.nan, 2)])
    return rows


def stage_means(samples: list[Sample]) -> dict[str, float]:
    """Mean ms per stage, plus derived rows: batch wait, per piece, per batch, unaccounted."""
    ok = [s for s in samples if s.ok and s.timings]
    if not ok:
        return {}
    for s in ok:  # without batching (in-process, naive servers) the UNet's wall is all compute
        s.timings.setdefault("unet_compute", s.timings.get("unet", 0.0))
    mean = lambda key: float(np.mean([s.timings.get(key, 0.0) for s in ok]))  # noqa: E731
    row = {stage: mean(stage) for stage in STAGES}
    row["unet_compute"] = mean("unet_compute")
    row["queue + batch wait (unet - unet_compute)"] = row["unet"] - row["unet_compute"]
    row["faces per request"] = float(np.mean([s.faces for s in ok]))
    row["batches per request"] = float(np.mean([len(s.batch_sizes) for s in ok]))
    row["mean batch size"] = float(np.mean([b for s in ok for b in s.batch_sizes]))
    row["unet_compute per piece"] = float(np.mean(
        [s.timings.get("unet_compute", 0.0) / max(1, sum(s.batch_sizes)) for s in ok]))
    row["unet_compute per batch"] = float(np.mean(
        [s.timings.get("unet_compute", 0.0) / max(1, len(s.batch_sizes)) for s in ok]))
    row["total"] = mean("total")
    row["unaccounted (total - stages)"] = row["total"] - sum(row[stage] for stage in STAGES)
    return row


STAGE_ROWS = ("decode", "detect", "align", "background", "wait_cartoonizer", "unet", "unet_compute",
              "queue + batch wait (unet - unet_compute)", "faces per request", "batches per request", "mean batch size",
              "unet_compute per piece", "unet_compute per batch", "wait_postprocessor", "compose", "encode",
              "unaccounted (total - stages)", "total")
COUNT_ROWS = {"faces per request", "batches per request", "mean batch size"}


def stage_table(columns: dict[str, dict[str, float]]) -> str:
    rows = []
    for name in STAGE_ROWS:
        digits = 2 if name in COUNT_ROWS else 1
        rows.append([name] + [fmt(column.get(name, np.nan), digits) for column in columns.values()])
    return common.markdown_table(["stage (mean ms)"] + list(columns), rows)


def plot(c1, levels, stage_columns, sizes, path, title) -> None:
    plt = common.pyplot()

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 4.8))
    width = 0.8 / max(1, len(c1))
    for index, (mode, samples) in enumerate(c1.items()):
        medians = [common.median([s.latency_s for s in samples if s.side == side and s.ok]) for side in sizes]
        left.bar(np.arange(len(sizes)) + index * width, medians, width, label=MODES[mode],
                 color=f"C{'abcd'.index(mode)}")
    left.set_xticks(np.arange(len(sizes)) + width * (len(c1) - 1) / 2, [f"{side} px" for side in sizes])
    left.set_ylabel("median latency at c=1 (s)")
    left.legend(fontsize=7)
    names = list(levels)
    for index, mode in enumerate(names):
        rates = [level.throughput() for level in levels[mode]]
        middle.bar(index, common.median(rates), 0.6, color=f"C{'abcd'.index(mode)}")
        middle.scatter([index] * len(rates), rates, color="black", s=10, zorder=3)
    middle.set_xticks(range(len(names)), [MODES[m].split(" ", 1)[0] for m in names])
    middle.set_ylabel("throughput at c=8 (img/s; dots = rounds)")
    bottom = np.zeros(len(stage_columns))
    stacked = [stage for stage in STAGES if stage != "unet"]
    stacked[stacked.index("wait_cartoonizer") + 1:1 + stacked.index("wait_cartoonizer")] = [
        "unet_compute", "queue + batch wait (unet - unet_compute)"]
    for index, stage in enumerate(stacked + ["unaccounted (total - stages)"]):
        values = np.array([max(0.0, column.get(stage, 0.0)) for column in stage_columns.values()]) / 1000
        right.bar(range(len(stage_columns)), values, 0.6, bottom=bottom, label=stage, color=plt.cm.tab20(index))
        bottom += values
    right.set_xticks(range(len(stage_columns)), list(stage_columns), fontsize=7)
    right.set_ylabel("mean seconds per request (stacked stages)")
    right.legend(fontsize=6, ncol=2, loc="upper left")
    for axis in (left, middle, right):
        axis.grid(True, axis="y", alpha=0.3)
    common.save_figure(figure, path, title)


def verdict(value: float, limit: float, at_most: bool) -> str:
    if np.isnan(value):
        return "not measured"
    met = value <= limit if at_most else value >= limit
    return "**met**" if met else "**not met**"


# --- the run ------------------------------------------------------------------------------------


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure(args, modes: list[str], config: dict, styles_dir: str, inproc_threads: int, photos: list[Photo],
            load_photos: list[Photo]) -> tuple[dict[str, list[Sample]], dict[str, list[Level]]]:
    """Starts every mode's server, warms them up, then runs the interleaved rounds."""
    from cartoon.image.pipeline import Pipeline
    from cartoon.image.styles import StyleRegistry

    settings = common.pipeline_settings(config)
    torch.set_num_threads(inproc_threads)
    pipeline = Pipeline(StyleRegistry.from_directory(styles_dir), settings) if "a" in modes else None
    naive_args = ["--styles-dir", styles_dir, "--process-side", str(settings.process_side),
                  "--tile", str(settings.tile), "--halo", str(settings.halo)]
    if args.naive_threads:
        naive_args += ["--threads", str(args.naive_threads)]
    logs = Path(tempfile.mkdtemp(prefix="compare_logs"))  # the naive servers' output, for post-mortems
    started = time.perf_counter()
    with ExitStack() as stack:
        urls = {}
        if "b" in modes:
            log("deploying serve_config.yaml ...")
            urls["b"] = stack.enter_context(common.served_graph(config)) + common.CARTOONIZE_PATH
        if "c" in modes:
            urls["c"] = stack.enter_context(
                common.child_server(naive_args, log_path=logs / "naive_c.log")) + common.CARTOONIZE_PATH
        if "d" in modes:
            urls["d"] = stack.enter_context(
                common.child_server(naive_args + ["--load-per-request"], log_path=logs / "naive_d.log")
            ) + common.CARTOONIZE_PATH
        log(f"servers up after {time.perf_counter() - started:.0f} s (naive servers' logs in {logs}); warming up ...")
        runner = Runner(pipeline, urls, args.format)
        for mode in modes:
            for photo in photos if mode != "d" else load_photos[:1]:
                runner.one(mode, photo)
        for mode in ("b", "c"):  # two requests per worker: enough for (b)'s autoscaler to react
            if mode in modes:
                runner.level(mode, load_photos, args.concurrency, 2 * args.concurrency)

        c1: dict[str, list[Sample]] = {mode: [] for mode in modes}
        levels: dict[str, list[Level]] = {mode: [] for mode in modes if mode in HTTP_MODES}
        for round_index in range(args.rounds):
            log(f"round {round_index + 1}/{args.rounds} at {time.perf_counter() - started:.0f} s")
            for photo_index, photo in enumerate(photos):
                for mode in rotated(modes, round_index + photo_index):
                    c1[mode].append(runner.one(mode, photo))
            for mode in rotated(list(levels), round_index):
                requests = args.d_requests if mode == "d" else args.requests
                time.sleep(args.settle_s)
                levels[mode].append(runner.level(mode, load_photos, args.concurrency, requests))
                log(f"  {MODES[mode]} c={args.concurrency}: {levels[mode][-1].throughput():.2f} img/s")
    return c1, levels


def ratio_rows(args, modes: list[str], sizes: list[int], c1: dict[str, list[Sample]],
               levels: dict[str, list[Level]]) -> list[list]:
    """The three ratios the issue asks for, and the 1024 px latency, each against its target."""

    def median_latency(mode: str, side: int, name: str | None = None) -> float:
        return common.median([s.latency_s for s in c1.get(mode, [])
                              if s.side == side and s.ok and (name is None or s.photo == name)])

    def rate(mode: str) -> float:
        return common.median([level.throughput() for level in levels.get(mode, [])])

    def per_round_ratio(numerator: str, denominator: str) -> str:
        pairs = zip(levels.get(numerator, []), levels.get(denominator, []))
        return " / ".join(fmt(n.throughput() / d.throughput(), 2) for n, d in pairs if d.throughput())

    rows = []
    for side in sizes:
        overhead = median_latency("b", side) / median_latency("a", side) if {"a", "b"} <= set(modes) else np.nan
        rows.append([f"(b)/(a) latency at c=1, {side} px (Serve overhead)", fmt(overhead, 3),
                     "<= 1.15" if side == 1024 else "", verdict(overhead, 1.15, True) if side == 1024 else ""])
    for other in ("c", "d"):
        value = rate("b") / rate(other) if {"b", other} <= set(modes) else np.nan
        target = ">= 1.3" if other == "c" else ""
        rows.append([f"(b)/({other}) throughput at c={args.concurrency} (per round {per_round_ratio('b', other)})",
                     fmt(value, 2), target, verdict(value, 1.3, False) if other == "c" else ""])
    square = median_latency("b", 1024, "astronaut")
    rows.append(["(b) 1024x1024 astronaut over HTTP at c=1, median s", fmt(square, 2), "<= 1.5 s",
                 verdict(square, 1.5, True) if 1024 in sizes else "not measured"])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    modes = [mode for mode in "abcd" if mode in args.modes]
    styles_dir = common.resolve_styles_dir(args.styles_dir)
    config = common.apply_overrides(
        common.load_serve_config(), [f"args.styles_dir={styles_dir}", *args.overrides]
    )
    served_threads = common.cartoonizer_threads(config)
    inproc_threads = args.inproc_threads or served_threads
    naive_threads = args.naive_threads or f"torch default = {os.cpu_count()}"
    sizes = common.parse_ints(args.sizes)
    photos = common.portraits(sizes)
    load_photos = [p for p in photos if p.side == args.load_size] or common.portraits([args.load_size])
    machine = common.machine_description()

    started = time.perf_counter()
    c1, levels = measure(args, modes, config, styles_dir, inproc_threads, photos, load_photos)
    elapsed = time.perf_counter() - started

    print(f"## Side by side: in-process, served graph, naive servers\n\n{machine}; run took {elapsed:.0f} s.")
    print(f"\nTorch threads: (a) {inproc_threads}, (b) Cartoonizer {served_threads}, (c)/(d) {naive_threads}. "
          f"Overrides: {', '.join(args.overrides) or 'none'}. Output format {args.format}.\n")
    print(f"### Latency at c=1 ({args.rounds} rounds, each photo once per round)\n")
    print(common.markdown_table(["mode", "px", "n", "p50 ms", "mean ms", "p95 ms", "errors"],
                                latency_rows(c1, sizes)))
    print(f"\n### Throughput at c={args.concurrency} ({args.load_size} px portraits; "
          f"{args.requests} requests per level for (b)/(c), {args.d_requests} for (d))\n")
    print(common.markdown_table(
        ["mode", "img/s (median)", "img/s per round", "p50 ms", "p95 ms", "errors", "mean batch"],
        throughput_rows(levels)))
    ratios = ratio_rows(args, modes, sizes, c1, levels)
    print("\n### Ratios and targets (this machine)\n")
    print(common.markdown_table(["figure", "value", "target", "verdict"], ratios))

    stage_columns = {}
    for mode in ("a", "b", "c"):
        if mode in c1:
            stage_columns[f"({mode}) c=1"] = stage_means([s for s in c1[mode] if s.side == args.load_size])
    for mode in ("b", "c"):
        if mode in levels:
            stage_columns[f"({mode}) c={args.concurrency}"] = stage_means(
                [s for level in levels[mode] for s in level.samples])
    stage_columns = {name: column for name, column in stage_columns.items() if column}
    print(f"\n### Stage breakdown, {args.load_size} px (Server-Timing; (a) from Result.timings)\n")
    print(stage_table(stage_columns))
    print("\nunet = wall in the Cartoonizer incl. queueing and batch wait; unet_compute = forward time of the "
          "batches the request's pieces rode in (shared with other requests at c>1); unaccounted = total minus "
          "the stages: ingress -> FaceAligner hand-over and the trip back to the ingress.")

    path = common.output_path(args.out, "compare.png")
    plot(c1, levels, stage_columns, sizes, path,
         f"side by side ({'; '.join(args.overrides) or 'serve_config.yaml as shipped'})")
    common.write_json(path.with_suffix(".json"), {
        "machine": machine,
        "args": vars(args),
        "threads": {"a": inproc_threads, "b": served_threads, "c/d": naive_threads},
        "c1": {mode: [asdict(s) for s in samples] for mode, samples in c1.items()},
        "levels": {mode: [{**level.summary(), "samples": [asdict(s) for s in level.samples]} for level in per_round]
                   for mode, per_round in levels.items()},
        "stages": stage_columns,
        "ratios": ratios,
    })
    print(f"\nplot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
