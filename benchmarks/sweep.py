"""Batches that fill: an open-loop (Poisson) sweep through the real Serve graph, GPU simulated.

    python -m benchmarks.sweep                          # both GPU configs, 10-110 % of capacity
    python -m benchmarks.sweep --variants tuned --loads 10,50,80,110 --seconds 20   # shorter

The graph is configs/gpu.yaml deployed in this process, every stage real, except that the
Cartoonizer's forward is ``AppArgs.simulated_forward`` (benchmarks and tests only): a
sleep of ``fixed + per-megapixel`` cost, with one lock file standing for the one GPU all
replicas share. Its cost is the H200 estimate below, slowed down ``--dilation`` times so
this machine's CPU stages (decode, detect, compose, encode, Serve's hops) can feed it:
queueing and batch formation depend only on the ratios of the times involved, and the
batch wait (itself sized from measured forward times) scales with them.

GPU estimate (``--gpu-fixed-ms``, ``--gpu-ms-per-mpx``): the width-16 UNet costs 67 GFLOP
per megapixel of input (convolutions; ``python -m benchmarks.unet`` prints it). An H200
offers 989 dense fp16 TFLOP/s; convolutions of 16-64 channels use a small share of it,
taken as 10 %: 0.67 ms per Mpx, plus ~0.08 ms per Mpx of memory-bound work (activations,
guided filter at 4.8 TB/s): 0.75 ms/Mpx. Fixed per forward: ~60 kernel launches, the
host copies and a synchronisation, ~1 ms. Replace both with the GPU run's figures
(docs/BENCHMARKS.md, "On a GPU") once measured.

Variants: ``shipped`` is configs/gpu.yaml before issue 13 (four replicas at 0.25 GPU,
autoscaling on ongoing requests, fixed 10 ms wait); ``tuned`` is configs/gpu.yaml now
(one replica holding the GPU, the wait sized from measured forward times). Arrivals are
Poisson at a fraction of the simulated model's capacity (full batches of heads and tiles
alternating); each level is followed by a drain. Reported per level: offered and achieved
images/s, p50/p95 latency, the mean launched batch (pieces per forward), and *split
launches*: forwards started below the maximum batch while pieces of their kind waited
behind the busy model.
"""

import argparse
import asyncio
import copy
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks import common
from benchmarks.common import Photo, fmt
from benchmarks.load import Sample, send

ROOT = Path(__file__).resolve().parents[1]
GPU_CONFIG = ROOT / "configs" / "gpu.yaml"
# Head crops are 288x288; the square background is shrunk to one 384x384 tile (--photo-side 512).
HEAD_MPX = 288 * 288 / 1e6
TILE_MPX = 384 * 384 / 1e6


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def variant_config(name: str, simulated: dict, dilation: float) -> dict:
    """configs/gpu.yaml with the simulated forward; ``shipped`` restores the pre-issue-13 Cartoonizer."""
    config = common.load_serve_config(GPU_CONFIG)
    (app,) = config["applications"]
    app["args"] = {**app.get("args", {}), "device": "cpu", "process_side": 384, "simulated_forward": simulated}
    cartoonizer = common.deployment(config, "Cartoonizer")
    user_config = cartoonizer.setdefault("user_config", {})
    if name == "shipped":
        cartoonizer["ray_actor_options"] = {"num_cpus": 1, "num_gpus": 0.25}
        cartoonizer["max_ongoing_requests"] = 64
        cartoonizer["autoscaling_config"] = {
            "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16,
            "upscale_delay_s": 10, "downscale_delay_s": 120,
        }
        user_config.update({"max_batch_size": 32, "batch_wait_timeout_s": 0.01, "adaptive_batch_wait": False})
    # Times of the simulated model scale by the dilation; so do the waits the config states.
    for key in ("batch_wait_timeout_s", "max_batch_wait_s"):
        if key in user_config:
            user_config[key] = user_config[key] * dilation
    # The CPU stages get the logical CPUs of the GPU node; this machine's cores are shared.
    return config


def capacity(simulated: dict, max_batch: int) -> float:
    """Images/s of the simulated model: one full batch of heads and one of tiles per cycle."""
    cycle_ms = sum(simulated["fixed_ms"] + simulated["ms_per_megapixel"] * max_batch * mpx
                   for mpx in (HEAD_MPX, TILE_MPX))
    return max_batch / (cycle_ms / 1000.0)


async def replica_stats(app: str) -> dict[str, dict]:
    """batching_stats of every Cartoonizer replica (calls spread over replicas by the router)."""
    from ray import serve

    handle = serve.get_deployment_handle("Cartoonizer", app_name=app)
    stats = {}
    for _ in range(24):
        answer = await handle.batching_stats.remote()
        stats[answer["replica"]] = answer
    return stats


def stats_delta(before: dict[str, dict], after: dict[str, dict]) -> dict:
    zero = {"launches": 0, "pieces": 0, "split_launches": 0}
    total = dict(zero)
    for replica, now in after.items():
        then = before.get(replica, zero)
        for key in zero:
            total[key] += now[key] - then[key]
    total["replicas"] = len(after)
    total["batch_wait_s"] = [round(stats["batch_wait_s"], 4) for stats in after.values()]
    return total


async def open_loop(url: str, photo: Photo, rate: float, seconds: float, seed: int,
                    app: str | None = None) -> tuple[list[Sample], int, dict]:
    """Poisson arrivals at ``rate``/s for ``seconds``, then waits for every answer (the drain).

    Returns:
        Every sample; how many answers came back 200 in the last three quarters of the
        arrival window (the first quarter fills the empty pipeline); and, when
        ``app`` is given, the Cartoonizers' launch counts over the window (the drain's
        partial batches left out).
    """
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    done_in_window = 0
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        start = time.perf_counter()
        end = start + seconds

        async def timed_send() -> Sample:
            nonlocal done_in_window
            sample = await send(client, url, photo, {})
            if sample.ok and start + seconds / 4 <= time.perf_counter() <= end:
                done_in_window += 1
            return sample

        before = await replica_stats(app) if app else {}
        tasks = []
        next_arrival = start
        while next_arrival < end:
            await asyncio.sleep(max(0.0, next_arrival - time.perf_counter()))
            tasks.append(asyncio.create_task(timed_send()))
            next_arrival += rng.expovariate(rate)
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        delta = stats_delta(before, await replica_stats(app)) if app else {}
        samples = await asyncio.gather(*tasks)
        return list(samples), done_in_window, delta


def run_variant(args, name: str, simulated: dict, photo: Photo, model_capacity: float) -> list[dict]:
    config = variant_config(name, simulated, args.dilation)
    rows = []
    log(f"deploying variant {name!r} ...")
    with common.served_graph(config, ray_cpus=16, ray_gpus=1, ready_timeout_s=600) as url:
        target = url + common.CARTOONIZE_PATH
        asyncio.run(open_loop(target, photo, 0.3 * model_capacity, 3.0 * args.cycle_s, seed=0))  # warm-up
        for index, load in enumerate(common.parse_ints(args.loads)):
            rate = model_capacity * load / 100.0
            samples, done, delta = asyncio.run(
                open_loop(target, photo, rate, args.seconds, seed=index + 1, app="cartoon"))
            ok = [s for s in samples if s.ok]
            broken = sorted({s.status for s in samples if s.status in (0, 500)})
            if broken:
                # A broken graph must not pass as a slow one; 503 and 504 are overload answers.
                raise SystemExit(f"{name} {load}%: answers with status {broken}: the graph is failing")
            latencies = [s.latency_s * 1000 for s in ok]
            row = {
                "variant": name, "load_pct": load, "offered": rate, "sent": len(samples), "ok": len(ok),
                "achieved": done / (0.75 * args.seconds),
                "refused": sum(s.status == 503 for s in samples), "late": sum(s.status == 504 for s in samples),
                "p50_ms": common.percentile(latencies, 50),
                "p95_ms": common.percentile(latencies, 95),
                "mean_batch": delta["pieces"] / delta["launches"] if delta["launches"] else float("nan"),
                **delta,
            }
            rows.append(row)
            log(f"  {name} {load}%: {row['achieved']:.2f}/{rate:.2f} img/s, mean batch {row['mean_batch']:.1f}, "
                f"p50 {row['p50_ms']:.0f} ms, split {delta['split_launches']}/{delta['launches']}, "
                f"503 {row['refused']}, 504 {row['late']}, "
                f"load average {os.getloadavg()[0]:.1f}")
            time.sleep(args.cycle_s)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    plt = common.pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in dict.fromkeys(row["variant"] for row in rows):
        points = [row for row in rows if row["variant"] == name]
        loads = [row["load_pct"] for row in points]
        axes[0].plot(loads, [row["mean_batch"] for row in points], marker="o", label=name)
        axes[1].plot(loads, [row["achieved"] / row["offered"] * 100 for row in points], marker="o", label=name)
        axes[2].plot(loads, [row["p95_ms"] for row in points], marker="o", label=f"{name} p95")
        axes[2].plot(loads, [row["p50_ms"] for row in points], marker=".", linestyle="--", label=f"{name} p50")
    for axis, label in zip(axes, ("mean launched batch", "achieved / offered %", "latency ms")):
        axis.set_xlabel("offered load, % of the simulated model's capacity")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    common.save_figure(figure, path, title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="shipped,tuned", help="shipped and/or tuned")
    parser.add_argument("--loads", default="10,25,50,65,80,90,100,110", help="offered load, % of capacity")
    parser.add_argument("--seconds", type=float, default=60.0, help="arrivals per level, s")
    parser.add_argument("--max-batch-size", type=int, default=32, help="the configs' max_batch_size")
    parser.add_argument("--gpu-fixed-ms", type=float, default=1.0, help="H200 estimate: ms per forward")
    parser.add_argument("--gpu-ms-per-mpx", type=float, default=0.75, help="H200 estimate: ms per input Mpx")
    parser.add_argument("--dilation", type=float, default=500.0,
                        help="simulated times are the GPU estimate times this (this machine's CPU stages must keep up)")
    parser.add_argument("--photo-side", type=int, default=512, help="long side of the portraits sent")
    parser.add_argument("--out", help="PNG plot path (default benchmarks/results/sweep.png)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="simulated_gpu") as lock_dir:
        simulated = {
            "fixed_ms": args.gpu_fixed_ms * args.dilation,
            "ms_per_megapixel": args.gpu_ms_per_mpx * args.dilation,
            "device_lock": str(Path(lock_dir) / "gpu.lock"),
        }
        model_capacity = capacity(simulated, args.max_batch_size)
        args.cycle_s = args.max_batch_size / model_capacity
        # The astronaut alone: square, so every image is exactly one head and one tile.
        photo = next(p for p in common.portraits([args.photo_side]) if p.name == "astronaut")
        description = common.machine_description()
        started = time.perf_counter()
        rows = []
        for name in args.variants.split(","):
            rows += run_variant(args, name, simulated, photo, model_capacity)
    elapsed = time.perf_counter() - started
    h200 = capacity({"fixed_ms": args.gpu_fixed_ms, "ms_per_megapixel": args.gpu_ms_per_mpx}, args.max_batch_size)
    print(f"## Batch formation under open-loop load: `python -m benchmarks.sweep`\n\n{description}; {elapsed:.0f} s. "
          f"Simulated forward: {simulated['fixed_ms']:.0f} ms + {simulated['ms_per_megapixel']:.0f} ms/Mpx "
          f"(H200 estimate {args.gpu_fixed_ms} ms + {args.gpu_ms_per_mpx} ms/Mpx, x{args.dilation:g}); "
          f"capacity {model_capacity:.2f} images/s at full batches of {args.max_batch_size} "
          f"(undilated: {h200:.0f} images/s, one 288 px head and one 384 px tile each); "
          f"{args.seconds:g} s of Poisson arrivals per level.\n")
    table = [[row["variant"], row["load_pct"], fmt(row["offered"], 2), fmt(row["achieved"], 2),
              f"{row['ok']}/{row['sent']}", f"{row['refused']}/{row['late']}", fmt(row["mean_batch"], 1),
              fmt(row["mean_batch"] / args.max_batch_size, 2), fmt(row["p50_ms"], 0), fmt(row["p95_ms"], 0),
              f"{row['split_launches']}/{row['launches']}", row["replicas"], row["batch_wait_s"]] for row in rows]
    print(common.markdown_table(
        ["variant", "load %", "offered img/s", "achieved img/s", "ok/sent", "503/504", "mean batch", "/ max",
         "p50 ms", "p95 ms", "split launches / launches", "replicas", "batch wait s (dilated)"], table))
    behind = [row for row in rows if row["load_pct"] <= 90 and row["achieved"] < 0.9 * row["offered"]]
    kept_up = {row["load_pct"] for row in rows if row not in behind}
    # A variant that falls behind where another kept up at the same load is slowed by its
    # own configuration; only where every variant fell behind were the CPU stages short.
    starved = [f"{row['variant']} {row['load_pct']}%" for row in behind if row["load_pct"] not in kept_up]
    slow = [f"{row['variant']} {row['load_pct']}%" for row in behind if row["load_pct"] in kept_up]
    if slow:
        print(f"\nBelow capacity, {', '.join(slow)} fell behind the arrivals where another variant "
              f"kept up at the same load: that configuration's own limit, not the machine's.")
    if starved:
        print(f"\n**Not a measurement of batching**: below capacity the graph fell behind the arrivals "
              f"({', '.join(starved)}) in every variant, so this machine's CPU stages, not the simulated "
              f"model, were the bottleneck. Rerun on a quieter machine or with a larger --dilation.")
    path = common.output_path(args.out, "sweep.png")
    plot(rows, path, f"Open-loop sweep, simulated GPU x{args.dilation:g}")
    common.write_json(path.with_suffix(".json"), {"machine": description, "args": vars(args),
                                                  "simulated": simulated, "rows": rows})
    print(f"\nplot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
