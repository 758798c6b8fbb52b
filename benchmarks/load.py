"""HTTP load generator: a concurrency sweep of real portraits against a cartoonize URL.

    python -m benchmarks.load --deploy                 # deploys serve_config.yaml in-process
    python -m benchmarks.load --url http://127.0.0.1:8000
    python -m benchmarks.load --url http://127.0.0.1:8100 --sizes 1024 --concurrency 1,8

Closed loop: ``c`` workers each send the next photo as soon as their previous answer is
back, until the level's request count or time limit is reached. Reports throughput,
latency percentiles, errors and the mean UNet batch the requests rode in (X-Batch-Sizes).
"""

import argparse
import asyncio
import itertools
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

from benchmarks import common
from benchmarks.common import Photo, fmt


@dataclass
class Sample:
    """One request as the client saw it."""

    photo: str
    side: int
    status: int  # 0 = no HTTP answer (connection error, client timeout)
    latency_s: float
    timings: dict[str, float] = field(default_factory=dict)  # Server-Timing, ms
    batch_sizes: list[int] = field(default_factory=list)  # X-Batch-Sizes
    faces: int = -1
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Level:
    """One concurrency level of one photo set."""

    concurrency: int
    wall_s: float
    samples: list[Sample]

    @property
    def ok(self) -> list[Sample]:
        return [sample for sample in self.samples if sample.ok]

    def throughput(self) -> float:
        return len(self.ok) / self.wall_s if self.wall_s else float("nan")

    def latencies_ms(self) -> list[float]:
        return [sample.latency_s * 1000.0 for sample in self.ok]

    def errors(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sample in self.samples:
            if not sample.ok:
                key = str(sample.status or sample.error)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def mean_batch(self) -> float:
        """Mean size of the UNet batches the requests' pieces rode in.

        Each request lists every batch it took part in, so a batch shared by k
        requests is counted k times: this is the batch an average request saw.
        """
        sizes = [size for sample in self.ok for size in sample.batch_sizes]
        return float(np.mean(sizes)) if sizes else float("nan")

    def summary(self) -> dict:
        latencies = self.latencies_ms()
        return {
            "concurrency": self.concurrency,
            "requests": len(self.samples),
            "ok": len(self.ok),
            "wall_s": self.wall_s,
            "throughput": self.throughput(),
            "p50_ms": common.percentile(latencies, 50),
            "p95_ms": common.percentile(latencies, 95),
            "p99_ms": common.percentile(latencies, 99),
            "mean_ms": float(np.mean(latencies)) if latencies else float("nan"),
            "errors": self.errors(),
            "mean_batch": self.mean_batch(),
        }


async def send(client: httpx.AsyncClient, url: str, photo: Photo, params: dict) -> Sample:
    """Posts one photo as the raw body; never raises."""
    start = time.perf_counter()
    try:
        response = await client.post(
            url, content=photo.data, params=params, headers={"content-type": photo.content_type}
        )
        await response.aread()
    except httpx.HTTPError as exc:
        return Sample(photo.name, photo.side, 0, time.perf_counter() - start, error=type(exc).__name__)
    return sample_of(photo, response, time.perf_counter() - start)


def sample_of(photo: Photo, response: httpx.Response, latency_s: float) -> Sample:
    """A Sample from a read response: status, Server-Timing, X-Batch-Sizes, X-Faces."""
    sample = Sample(photo.name, photo.side, response.status_code, latency_s)
    if response.status_code == 200:
        sample.timings = common.parse_server_timing(response.headers.get("server-timing", ""))
        sizes = response.headers.get("x-batch-sizes", "")
        sample.batch_sizes = [int(size) for size in sizes.split(",") if size.strip()]
        sample.faces = int(response.headers.get("x-faces", "-1"))
    else:
        sample.error = response.text[:200]
    return sample


async def run_level(
    url: str,
    photos: list[Photo],
    concurrency: int,
    requests: int,
    max_seconds: float = float("inf"),
    params: dict | None = None,
    timeout_s: float = 300.0,
) -> Level:
    """Keeps ``concurrency`` requests in flight until ``requests`` were sent or time is up.

    Photos are sent round-robin. A request already in flight when time is up still counts.
    """
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    samples: list[Sample] = []
    counter = itertools.count()
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        start = time.perf_counter()
        deadline = start + max_seconds

        async def worker() -> None:
            while True:
                index = next(counter)
                if index >= requests or time.perf_counter() > deadline:
                    return
                samples.append(await send(client, url, photos[index % len(photos)], params or {}))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return Level(concurrency, wall, samples)


def level_row(side: int, level: Level) -> list:
    s = level.summary()
    errors = ", ".join(f"{key}: {count}" for key, count in s["errors"].items()) or "0"
    return [
        side, s["concurrency"], s["ok"], fmt(s["throughput"], 2), fmt(s["p50_ms"], 0),
        fmt(s["p95_ms"], 0), fmt(s["p99_ms"], 0), errors, fmt(s["mean_batch"], 2),
    ]


LEVEL_HEADERS = ["px", "c", "ok", "img/s", "p50 ms", "p95 ms", "p99 ms", "errors", "mean batch"]


def plot(results: dict[int, list[Level]], path, title: str) -> None:
    plt = common.pyplot()

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for side, levels in results.items():
        xs = [level.concurrency for level in levels]
        left.plot(xs, [level.throughput() for level in levels], marker="o", label=f"{side} px")
        right.plot(xs, [level.summary()["p50_ms"] / 1000 for level in levels], marker="o", label=f"{side} px p50")
        right.plot(xs, [level.summary()["p95_ms"] / 1000 for level in levels], marker="x", linestyle="--",
                   label=f"{side} px p95")
    for axis, label in ((left, "throughput (img/s)"), (right, "latency (s)")):
        axis.set_ylim(bottom=0)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend()
    common.save_figure(figure, path, title)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the service")
    parser.add_argument("--path", default=common.CARTOONIZE_PATH, help="endpoint path")
    parser.add_argument("--deploy", action="store_true",
                        help="deploy serve_config.yaml in this process (a free port) and target it")
    parser.add_argument("--config", default=str(common.SERVE_CONFIG), help="Serve config for --deploy")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for --deploy, e.g. args.cpu_threads=2 or "
                             "Cartoonizer.user_config.max_batch_size=4 (repeatable)")
    parser.add_argument("--ray-gpus", type=int,
                        help="--deploy: logical GPUs Ray declares (a dry run on a CPU places a GPU config's "
                             "replicas; add --set args.device=cpu)")
    parser.add_argument("--styles-dir", help="styles directory for --deploy (default: the shipped styles)")
    parser.add_argument("--sizes", default="1024,2048", help="long sides of the portraits, px")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32", help="levels to sweep")
    parser.add_argument("--requests", type=int, default=0,
                        help="requests per level; 0 = max(--min-requests, --rounds * c)")
    parser.add_argument("--rounds", type=int, default=2, help="requests per worker per level (default rule)")
    parser.add_argument("--min-requests", type=int, default=6, help="fewest requests per level (default rule)")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="stop issuing after this per level")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured requests per size first")
    parser.add_argument("--format", default="png", choices=("png", "jpeg", "webp"), help="output format")
    parser.add_argument("--timeout", type=float, default=300.0, help="client timeout per request, s")
    parser.add_argument("--out", help="PNG plot path (default benchmarks/results/load.png)")
    return parser


async def sweep(args, url: str) -> dict[int, list[Level]]:
    results: dict[int, list[Level]] = {}
    params = {"format": args.format}
    for side in common.parse_ints(args.sizes):
        photos = common.portraits([side])
        if args.warmup:
            await run_level(url, photos, 1, args.warmup, params=params, timeout_s=args.timeout)
        results[side] = []
        for concurrency in common.parse_ints(args.concurrency):
            requests = args.requests or max(args.min_requests, args.rounds * concurrency)
            level = await run_level(url, photos, concurrency, requests, args.max_seconds, params, args.timeout)
            results[side].append(level)
            print(f"  {side} px c={concurrency}: {level.throughput():.2f} img/s", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    machine = common.machine_description()
    if args.deploy:
        config = common.load_serve_config(Path(args.config))
        overrides = [f"args.styles_dir={common.resolve_styles_dir(args.styles_dir)}", *args.overrides]
        config = common.apply_overrides(config, overrides)
        with common.served_graph(config, ray_gpus=args.ray_gpus) as base_url:
            target = base_url + args.path
            results = asyncio.run(sweep(args, target))
    else:
        target = args.url.rstrip("/") + args.path
        results = asyncio.run(sweep(args, target))

    rows = [level_row(side, level) for side, levels in results.items() for level in levels]
    print(f"## Load sweep: {target}\n\n{machine}\n")
    print(common.markdown_table(LEVEL_HEADERS, rows))
    path = common.output_path(args.out, "load.png")
    plot(results, path, f"load sweep: {target}")
    common.write_json(path.with_suffix(".json"), {
        "target": target,
        "machine": machine,
        "args": vars(args),
        "levels": {side: [{**level.summary(), "samples": [asdict(s) for s in level.samples]} for level in levels]
                   for side, levels in results.items()},
    })
    print(f"\nplot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
