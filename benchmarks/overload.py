"""Overload: a burst far beyond capacity; every answer a timely 200 or a fast 503.

    python -m benchmarks.overload                          # 400 x 768 px, 200 at once
    python -m benchmarks.overload --requests 100 --concurrency 50 --side 512

Deploys serve_config.yaml in-process, warms it up with ``--warmup`` requests at
concurrency 4 (so the Ingress has measured its throughput), then sends ``--requests``
portraits of ``--side`` px with ``--concurrency`` in flight and reports, per status, the
count and the time to the answer (median and max). Without admission control the queue
admitted work that could never finish and answered 504 after the timeout.
"""

import argparse
import asyncio
import sys
import time
from collections import defaultdict

import httpx

from benchmarks import common

CARTOONIZE = "/v1/cartoonize"


async def burst(url: str, body: bytes, requests: int, concurrency: int) -> list[tuple[int, float]]:
    """(status, seconds to the answer) of each request; status 0 = no answer."""
    remaining = list(range(requests))
    outcomes = []

    async def worker(client: httpx.AsyncClient):
        while remaining:
            remaining.pop()
            start = time.perf_counter()
            try:
                status = (await client.post(CARTOONIZE, content=body)).status_code
            except httpx.HTTPError:
                status = 0
            outcomes.append((status, time.perf_counter() - start))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--side", type=int, default=768)
    parser.add_argument("--warmup", type=int, default=24)
    parser.add_argument("--ray-cpus", type=int, default=None)
    parser.add_argument("--output", default=None, help="JSON results (default benchmarks/results/overload.json)")
    options = parser.parse_args(argv)

    photo = common.portraits([options.side])[0]  # the astronaut
    config = common.load_serve_config()
    timeout_s = float(common.app_args(config).get("request_timeout_s", 60))
    with common.served_graph(config, ray_cpus=options.ray_cpus) as url:
        asyncio.run(burst(url, photo.data, options.warmup, 4))
        start = time.perf_counter()
        outcomes = asyncio.run(burst(url, photo.data, options.requests, options.concurrency))
        wall_s = time.perf_counter() - start

    by_status = defaultdict(list)
    for status, seconds in outcomes:
        by_status[status].append(seconds)
    rows = [[status, len(times), common.fmt(common.median(times), 2), common.fmt(max(times), 2)]
            for status, times in sorted(by_status.items())]
    print(f"{options.requests} requests of {options.side} px, {options.concurrency} in flight, after "
          f"{options.warmup} warm-up; request_timeout_s {timeout_s:.0f}; {wall_s:.0f} s; "
          f"{common.machine_description()}")
    print(common.markdown_table(["status", "count", "median s", "max s"], rows))
    late_ok = sum(1 for status, seconds in outcomes if status == 200 and seconds > timeout_s)
    slow_503 = sum(1 for status, seconds in outcomes if status == 503 and seconds > 2.0)
    print(f"\n504: {len(by_status.get(504, []))}; 200 after the timeout: {late_ok}; 503 after 2 s: {slow_503}")
    common.write_json(common.output_path(options.output, "overload.json"), {
        "requests": options.requests, "concurrency": options.concurrency, "side": options.side,
        "warmup": options.warmup, "request_timeout_s": timeout_s, "wall_s": wall_s,
        "machine": common.machine_description(),
        "by_status": {str(status): {"count": len(times), "median_s": common.median(times), "max_s": max(times)}
                      for status, times in sorted(by_status.items())},
    })
    return 1 if by_status.get(504) or by_status.get(0) or late_ok else 0


if __name__ == "__main__":
    sys.exit(main())
