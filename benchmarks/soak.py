"""Soak: thousands of mixed requests against the served graph; replicas' memory and 5xx.

    python -m benchmarks.soak --requests 2000            # deploys serve_config.yaml in-process
    python -m benchmarks.soak --requests 300 --warmup 60 --concurrency 4   # a quick look

The mix, drawn from a seeded generator: portraits and a no-face photo at several sizes,
sent as PNG, JPEG or WebP, every style and output format, some with ``strength`` and
``max_side``, bad inputs (garbage, truncated, a header claiming 70000x70000 px, an
unsupported format) and batch calls of two or three files. After the warm-up requests
(the same mix), every replica's RSS is read from ``/proc``; again after each of
``--checkpoints`` parts of the run. Prints counts by status, and per replica the RSS
after warm-up, at the end, the change and the RSS along the run. A 5xx is a failure, a
4xx is expected for the bad inputs. The default warm-up is 1,000 requests: the replicas'
allocators take about that long to reach the mix's working set (docs/RELIABILITY.md), so
a shorter one measures the warm-up, not a leak.
"""

import argparse
import asyncio
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np

from benchmarks import common
from cartoon.image.styles import StyleRegistry
from tests import photos
from tests.unit.image.test_codec import png_header

APP = "cartoon"


@dataclass(frozen=True)
class Call:
    """One request of the mix: what to send and whether success is expected."""

    kind: str  # "image", "bad", "batch"
    path: str
    params: dict
    content: bytes | None = None
    files: tuple = ()
    content_type: str = ""

    async def send(self, client: httpx.AsyncClient, prefix: str) -> int:
        if self.files:
            response = await client.post(prefix + self.path, params=self.params, files=list(self.files))
        else:
            response = await client.post(prefix + self.path, params=self.params, content=self.content,
                                         headers={"content-type": self.content_type})
        if response.status_code == 200 and self.kind == "batch":
            statuses = [item["status"] for item in response.json()["results"]]
            return max(statuses) if any(status >= 500 for status in statuses) else 200
        return response.status_code


def _encodings(sources: dict[str, np.ndarray]) -> list[tuple[bytes, str]]:
    """Every photo at every long side in every input format, encoded once."""
    encoded = []
    for rgb in sources.values():
        for side in (96, 200, 384, 640, 1024):
            scale = side / max(rgb.shape[:2])
            size = (max(16, round(rgb.shape[1] * scale)), max(16, round(rgb.shape[0] * scale)))
            resized = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            for format in ("PNG", "JPEG", "WEBP"):
                encoded.append((photos.encode(resized, format), f"image/{format.lower()}"))
    return encoded


def mixed_calls(count: int, seed: int = 0) -> list[Call]:
    """``count`` requests of the mix described in the module docstring, reproducibly."""
    rng = random.Random(seed)
    styles = StyleRegistry.from_directory().names()
    encodings = _encodings({"astronaut": photos.astronaut(), "grace_hopper": photos.grace_hopper(),
                            "two_faces": photos.two_faces(), "coffee": photos.coffee()})
    good = photos.encode(photos.astronaut()[:256, 96:352], "JPEG")
    bad_inputs = [
        (b"garbage, not an image", "application/octet-stream"),
        (good[: len(good) // 3], "image/jpeg"),
        (png_header(70000, 70000), "image/png"),
        (photos.encode(np.zeros((32, 32, 3), np.uint8), "ICO"), "image/x-icon"),
    ]
    calls = []
    for _ in range(count):
        roll = rng.random()
        params = {"style": rng.choice(styles), "format": rng.choice(("png", "jpeg", "webp"))}
        if rng.random() < 0.3:
            params["strength"] = round(rng.uniform(0.2, 0.9), 2)
        if rng.random() < 0.3:
            params["max_side"] = rng.choice((128, 256, 512))
        if roll < 0.1:
            content, content_type = rng.choice(bad_inputs)
            calls.append(Call("bad", "/v1/cartoonize", params, content, content_type=content_type))
        elif roll < 0.2:
            files = []
            for index in range(rng.choice((2, 3))):
                content, content_type = rng.choice(encodings)
                files.append(("images", (f"{index}", content, content_type)))
            calls.append(Call("batch", "/v1/cartoonize/batch", params, files=tuple(files)))
        else:
            content, content_type = rng.choice(encodings)
            calls.append(Call("image", "/v1/cartoonize", params, content, content_type=content_type))
    return calls


async def run_calls(
    url: str, calls: list[Call], concurrency: int, prefix: str = "", budget_s: float | None = None
) -> list[tuple[str, int, float]]:
    """Sends ``calls`` with ``concurrency`` workers; (kind, status, seconds) of each, 0 = no answer.

    With ``budget_s``, no call is started after that many seconds.
    """
    queue = list(reversed(calls))
    outcomes = []
    stop_at = time.monotonic() + budget_s if budget_s else float("inf")

    async def worker(client: httpx.AsyncClient):
        while queue and time.monotonic() < stop_at:
            call = queue.pop()
            start = time.perf_counter()
            try:
                status = await call.send(client, prefix)
            except httpx.HTTPError:
                status = 0
            outcomes.append((call.kind, status, time.perf_counter() - start))

    async with httpx.AsyncClient(base_url=url, timeout=180) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return outcomes


def replica_rss(app: str, gcs_address: str) -> dict[str, int]:
    """RSS in bytes of each Serve replica of ``app`` in the Ray cluster at ``gcs_address``.

    A replica's process title holds ``ServeReplica:<app>:<deployment>`` (idle:
    ``ray::ServeReplica:...``; in a call, ``ray::SERVE_REPLICA::...:ServeReplica:...``);
    its parent, the raylet, names its GCS on its command line, which tells this
    cluster's replicas from those of others on the same machine.
    """
    marker = f"--gcs-address={gcs_address}"
    title_pattern = re.compile(rf"ServeReplica:{re.escape(app)}:(\w+)")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            match = title_pattern.search(title)
            if not title.startswith("ray::") or not match:
                continue
            status = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
            parent = (Path("/proc") / status["PPid"].strip() / "cmdline").read_bytes().decode(errors="replace")
            if marker not in parent:
                continue
            deployment = match.group(1)
            found[f"{deployment} (pid {entry.name})"] = int(status["VmRSS"].split()[0]) * 1024
        except (OSError, KeyError, ValueError, IndexError):
            continue  # the process ended while being read
    return found


def rss_table(before: dict[str, int], after: dict[str, int]) -> list[list]:
    rows = []
    for name in sorted(before):
        if name in after:
            change = (after[name] - before[name]) / before[name] * 100.0
            rows.append([name, common.fmt(before[name] / 2**20, 0), common.fmt(after[name] / 2**20, 0),
                         f"{change:+.1f}%"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop sending after this long (measured part), report what was done")
    parser.add_argument("--checkpoints", type=int, default=8,
                        help="RSS is also read after each of this many equal parts of the measured run")
    parser.add_argument("--ray-cpus", type=int, default=None)
    parser.add_argument("--output", default=None, help="JSON results (default benchmarks/results/soak.json)")
    options = parser.parse_args(argv)

    warmup, calls = mixed_calls(options.warmup, options.seed), mixed_calls(options.requests, options.seed + 1)
    with common.served_graph(common.load_serve_config(), ray_cpus=options.ray_cpus) as url:
        import ray

        gcs_address = ray.get_runtime_context().gcs_address
        start = time.perf_counter()
        asyncio.run(run_calls(url, warmup, options.concurrency))
        before = replica_rss(APP, gcs_address)
        budget_s = options.minutes * 60 if options.minutes else None
        # RSS along the way tells a leak (steady growth) from an allocator still filling
        # up to its working set (growth that flattens).
        outcomes, trajectory = [], []
        for part in np.array_split(np.arange(len(calls)), max(1, options.checkpoints)):
            left = None if budget_s is None else budget_s - (time.perf_counter() - start)
            if left is not None and left <= 0:
                break
            outcomes += asyncio.run(run_calls(url, [calls[i] for i in part], options.concurrency, budget_s=left))
            trajectory.append((len(outcomes), replica_rss(APP, gcs_address)))
        wall_s = time.perf_counter() - start
        after = trajectory[-1][1] if trajectory else replica_rss(APP, gcs_address)

    statuses = Counter(status for _, status, _ in outcomes)
    by_kind = Counter((kind, status) for kind, status, _ in outcomes)
    rows = rss_table(before, after)
    print(f"{len(outcomes)} requests after {len(warmup)} warm-up, concurrency {options.concurrency}, "
          f"{wall_s:.0f} s; {common.machine_description()}")
    print(common.markdown_table(["kind", "status", "count"],
                                [[kind, status, count] for (kind, status), count in sorted(by_kind.items())]))
    print()
    print(common.markdown_table(["replica", "RSS after warm-up (MiB)", "RSS at end (MiB)", "change"], rows))
    print()
    names = sorted(before)
    print(common.markdown_table(
        ["after request", *[name.split()[0] for name in names]],
        [[done, *[common.fmt(rss.get(name, 0) / 2**20, 0) for name in names]] for done, rss in trajectory],
    ))
    server_errors = sum(count for status, count in statuses.items() if status >= 500 or status == 0)
    worst = max((abs(after[n] - before[n]) / before[n] for n in before if n in after), default=0.0)
    print(f"\n5xx or no answer: {server_errors}; largest RSS change: {worst * 100:.1f}%")
    common.write_json(common.output_path(options.output, "soak.json"), {
        "requests": len(outcomes), "warmup": len(warmup), "concurrency": options.concurrency,
        "wall_s": wall_s, "machine": common.machine_description(),
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
        "by_kind": {f"{kind} {status}": count for (kind, status), count in sorted(by_kind.items())},
        "rss_bytes": {name: {"after_warmup": before[name], "end": after.get(name)} for name in before},
        "rss_trajectory": [{"requests": done, "rss_bytes": rss} for done, rss in trajectory],
    })
    return 1 if server_errors or worst > 0.10 else 0


if __name__ == "__main__":
    sys.exit(main())
