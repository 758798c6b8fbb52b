"""The CPU graph's Cartoonizer layout, side by side: as shipped against one replica.

    python -m benchmarks.layout                  # about 5 minutes on a quiet 2-core machine

One Serve instance holds two copies of serve_config.yaml's app, each under its own route
prefix:

- ``shipped``: serve_config.yaml itself: two Cartoonizer replicas (0.75 logical CPU and
  at most 4 requests each) that count their images in flight machine-wide
  (``cartoon.model.inference.ImagesInFlight``), so a forward takes both cores only while it is
  the machine's only image;
- ``one``: the layout before round 4: one Cartoonizer (1 logical CPU, 16 requests,
  batches of 8), the FaceAligner at 0.5 logical CPU.

Both answer closed-loop levels at c = 1, 2, 4 and 8 with the two 1024 px portraits, in
alternating order per round. It prints images/s, p50 latency and the machine's busy
cores (from /proc/stat, so the client and Ray's own processes count too) per copy and
level, and the ratio shipped / one.
"""

import argparse
import asyncio
import copy
import os
import sys
import time

import numpy as np

from benchmarks import common
from benchmarks.common import fmt
from benchmarks.load import run_level
from benchmarks.targets import copy_app

COPIES = ("shipped", "one")


def busy_cpu_seconds() -> float:
    """CPU-seconds the machine spent busy since boot (every core; idle and iowait excluded)."""
    fields = [int(value) for value in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def one_cartoonizer(app: dict) -> dict:
    """``app`` under /one with the one-Cartoonizer layout of rounds 1-3."""
    one = copy_app(app, "one", {}, {"max_batch_size": 8, "batch_wait_timeout_s": 0.02})
    single = {"applications": [one]}
    cartoonizer = common.deployment(single, "Cartoonizer")
    cartoonizer["ray_actor_options"]["num_cpus"] = 1
    cartoonizer["autoscaling_config"].update(min_replicas=1, max_replicas=1, target_ongoing_requests=8)
    cartoonizer["max_ongoing_requests"] = 16
    common.deployment(single, "FaceAligner")["ray_actor_options"]["num_cpus"] = 0.5
    return one


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.layout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--levels", default="1,2,4,8", help="concurrency levels")
    parser.add_argument("--requests-per-client", type=int, default=5, help="requests per level = this x c (at least 8)")
    args = parser.parse_args(argv)
    levels = common.parse_ints(args.levels)
    base = common.load_serve_config()
    (app,) = base["applications"]
    config = copy.deepcopy(base)
    config["applications"] = [copy_app(app, "shipped", {}), one_cartoonizer(app)]
    photos = common.portraits([1024])
    description = common.machine_description()
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    started = time.perf_counter()
    with common.served_graph(config, ray_cpus=8) as url:
        urls = {name: f"{url}/{name}{common.CARTOONIZE_PATH}" for name in COPIES}
        for name in COPIES:  # warm-up: both replicas of each copy load the model
            asyncio.run(run_level(urls[name], photos, 8, 16))
        for round_index in range(args.rounds):
            for concurrency in levels:
                order = COPIES if round_index % 2 == 0 else COPIES[::-1]
                for name in order:
                    time.sleep(2)
                    requests = max(8, args.requests_per_client * concurrency)
                    busy = busy_cpu_seconds()
                    level = asyncio.run(run_level(urls[name], photos, concurrency, requests))
                    cores = (busy_cpu_seconds() - busy) / level.wall_s
                    p50 = common.median([s.latency_s for s in level.ok])
                    results.setdefault((name, concurrency), []).append((level.throughput(), p50, cores))
                    print(f"round {round_index + 1} {name} c={concurrency}: {level.throughput():.2f} img/s, "
                          f"p50 {p50 * 1000:.0f} ms, {cores:.2f} cores busy", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    rows = []
    for concurrency in levels:
        def figure(name: str, index: int) -> float:
            return common.median([result[index] for result in results[(name, concurrency)]])

        def rounds(name: str) -> str:
            return " / ".join(fmt(rate, 2) for rate, _, _ in results[(name, concurrency)])

        rows.append([
            concurrency,
            f"{fmt(figure('shipped', 0), 2)} ({rounds('shipped')})",
            f"{fmt(figure('one', 0), 2)} ({rounds('one')})",
            f"{fmt(figure('shipped', 0) / figure('one', 0), 2)}x",
            fmt(figure("shipped", 1) * 1000, 0), fmt(figure("one", 1) * 1000, 0),
            f"{fmt(figure('shipped', 2), 2)} / {fmt(figure('one', 2), 2)}",
        ])
    print(f"## Cartoonizer layout: `python -m benchmarks.layout`\n\n{description}; {elapsed:.0f} s\n")
    print(common.markdown_table(
        ["c", "shipped img/s (median; rounds)", "one Cartoonizer img/s", "shipped / one", "shipped p50 ms",
         "one p50 ms", "cores busy, shipped / one"],
        rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
