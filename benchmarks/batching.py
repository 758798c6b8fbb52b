"""Batch formation under load: Serve's ``@serve.batch`` against forming a batch when the model is free.

    python -m benchmarks.batching                    # GPU-like forward, three arrival rates, ~1 minute
    python -m benchmarks.batching --fixed-ms 0 --per-item-ms 100 --rates 5,12   # CPU-like forward

No model and no GPU: the forward is simulated (``time.sleep`` in a thread, as the
Cartoonizer runs ``Stylizer.run`` in a thread) and costs ``fixed + per_item * batch`` ms.
Pieces arrive open-loop at a fixed rate for ``--seconds``.

Two ways to form a batch, same ``max_batch_size`` and wait:

- ``serve.batch``: Ray Serve 2.60's decorator with ``max_concurrent_batches=1``, exactly as
  the Cartoonizer uses it. It forms the next batch as soon as its first piece arrives
  (waiting ``batch_wait_timeout_s`` for more), even while the previous batch still runs;
  the formed batch then waits for the model. A backlog never merges into bigger batches.
- ``when free``: the batch is formed when the model is free: it takes everything that
  queued meanwhile (up to ``max_batch_size``) at once; only a model that sat idle waits up
  to the timeout for company. Under a backlog batches grow, so the forward's fixed cost
  is paid less often.
"""

import argparse
import asyncio
import sys
import time
from unittest import mock

import numpy as np
from ray import serve
from ray.serve import batching as serve_batching

from benchmarks import common
from benchmarks.common import fmt


class Forward:
    """A simulated model: ``fixed_ms + per_item_ms * len(batch)``, in a worker thread."""

    def __init__(self, fixed_ms: float, per_item_ms: float):
        self.fixed_ms, self.per_item_ms = fixed_ms, per_item_ms
        self.sizes: list[int] = []

    async def __call__(self, items: list) -> list:
        self.sizes.append(len(items))
        await asyncio.to_thread(time.sleep, (self.fixed_ms + self.per_item_ms * len(items)) / 1000.0)
        return items


class ServeBatch:
    """The Cartoonizer's policy: ``@serve.batch`` on an async method."""

    def __init__(self, forward: Forward, max_batch_size: int, wait_s: float):
        self.forward = forward

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=wait_s)
        async def run(items: list) -> list:
            return await self.forward(items)

        self.run = run

    async def __call__(self, item):
        return await self.run(item)


class WhenFree:
    """Forms a batch only when the previous one is done: a backlog becomes one big batch."""

    def __init__(self, forward: Forward, max_batch_size: int, wait_s: float):
        self.forward, self.max_batch_size, self.wait_s = forward, max_batch_size, wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker: asyncio.Task | None = None

    async def __call__(self, item):
        if self.worker is None:
            self.worker = asyncio.create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((item, future))
        return await future

    async def _next_batch(self) -> list:
        # Pieces that queued while the model ran go now; only an idle model waits for company.
        backlog = not self.queue.empty()
        batch = [await self.queue.get()]
        deadline = time.monotonic() + (0.0 if backlog else self.wait_s)
        while len(batch) < self.max_batch_size:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _serve(self) -> None:
        while True:
            batch = await self._next_batch()
            outputs = await self.forward([item for item, _ in batch])
            for (_, future), output in zip(batch, outputs):
                if not future.cancelled():
                    future.set_result(output)


async def simulate(policy_name: str, rate: float, args) -> dict:
    """Open-loop arrivals at ``rate`` pieces/s for ``args.seconds``; then drains (bounded)."""
    forward = Forward(args.fixed_ms, args.per_item_ms)
    policy_class = ServeBatch if policy_name == "serve.batch" else WhenFree
    policy = policy_class(forward, args.max_batch_size, args.wait_ms / 1000.0)
    latencies: list[float] = []

    async def piece(index: int) -> None:
        start = time.perf_counter()
        await policy(index)
        latencies.append(time.perf_counter() - start)

    tasks = []
    start = time.perf_counter()
    count = int(rate * args.seconds)
    for index in range(count):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(piece(index)))
    await asyncio.wait(tasks, timeout=args.drain_seconds)
    wall = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    if isinstance(policy, WhenFree) and policy.worker:
        policy.worker.cancel()
    done = len(latencies)
    ms = [latency * 1000 for latency in latencies]
    return {
        "policy": policy_name, "rate": rate, "sent": count, "done": done, "wall_s": wall,
        "throughput": done / wall, "mean_batch": float(np.mean(forward.sizes)) if forward.sizes else float("nan"),
        "batches": len(forward.sizes), "p50_ms": common.percentile(ms, 50), "p95_ms": common.percentile(ms, 95),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batching", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixed-ms", type=float, default=4.0, help="forward cost per batch, ms")
    parser.add_argument("--per-item-ms", type=float, default=0.4, help="forward cost per piece, ms")
    parser.add_argument("--max-batch-size", type=int, default=32, help="as configs/gpu.yaml")
    parser.add_argument("--wait-ms", type=float, default=10.0, help="batch_wait_timeout_s, ms (configs/gpu.yaml)")
    parser.add_argument("--rates", default="1000,1800,2200", help="arrival rates to try, pieces/s")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long pieces arrive")
    parser.add_argument("--drain-seconds", type=float, default=12.0, help="stop waiting for answers after this")
    parser.add_argument("--out", help="PNG plot path (default benchmarks/results/batching.png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rates = [float(rate) for rate in args.rates.split(",")]
    results = []
    # Outside a replica, serve.batch's constructor only asks the replica context for
    # max_ongoing_requests to print a warning; that lookup is stubbed, nothing else.
    with mock.patch.object(serve_batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests",
                           lambda self: None):
        for rate in rates:
            for policy in ("serve.batch", "when free"):
                results.append(asyncio.run(simulate(policy, rate, args)))
                print(f"  {policy} at {rate:.0f}/s: mean batch {results[-1]['mean_batch']:.1f}", file=sys.stderr)
    capacity = args.max_batch_size / ((args.fixed_ms + args.per_item_ms * args.max_batch_size) / 1000.0)
    print(f"## Batch formation under load (simulated forward: {args.fixed_ms} ms + {args.per_item_ms} ms x batch; "
          f"max_batch_size {args.max_batch_size}, wait {args.wait_ms} ms; capacity at full batches "
          f"{capacity:.0f} pieces/s)\n")
    rows = [[r["policy"], fmt(r["rate"], 0), r["sent"], r["done"], fmt(r["throughput"], 0), fmt(r["mean_batch"], 1),
             fmt(r["p50_ms"], 0), fmt(r["p95_ms"], 0)] for r in results]
    print(common.markdown_table(
        ["policy", "arrivals/s", "sent", "done", "done/s", "mean batch", "p50 ms", "p95 ms"], rows))

    plt = common.pyplot()

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for policy in ("serve.batch", "when free"):
        mine = [r for r in results if r["policy"] == policy]
        left.plot([r["rate"] for r in mine], [r["mean_batch"] for r in mine], marker="o", label=policy)
        right.plot([r["rate"] for r in mine], [r["p95_ms"] for r in mine], marker="o", label=policy)
    left.set_ylabel("mean formed batch")
    right.set_ylabel("p95 latency (ms)")
    right.set_yscale("log")
    for axis in (left, right):
        axis.set_xlabel("arrivals (pieces/s)")
        axis.grid(True, alpha=0.3)
        axis.legend()
    path = common.output_path(args.out, "batching.png")
    common.save_figure(figure, path, "batch formation under load (simulated forward)")
    common.write_json(path.with_suffix(".json"), {"args": vars(args), "results": results})
    print(f"\nplot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
