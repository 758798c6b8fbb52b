"""The CPU targets end to end over HTTP, side by side in one run: fast path, 1 thread, fp32, width 32.

    python -m benchmarks.targets                        # about 8 minutes on a quiet 2-core machine
    python -m benchmarks.targets --rounds 1 --requests 8   # smoke run

One Serve instance serves five copies of serve_config.yaml's app in turn, each under its
own route prefix and otherwise as shipped:

- ``fast``: serve_config.yaml itself (the inference mode ``cartoon.model.inference`` picks);
- ``fast_1thread``: the same with ``args.cpu_threads: 1`` (one torch thread always), to
  see what the second thread at c=1 buys on the machine at hand;
- ``fp32``: the same with ``args.precision: fp32``, the reference path;
- ``fast_wait20``: the same with the Cartoonizer's ``batch_wait_timeout_s`` at 20 ms
  instead of 0 (the CPU setting before round 4), to see what a batch wait costs at c=1
  and buys at c=8;
- ``w32``: the fast path on a DCT-Net-shaped model (UNet width 32, 4x the FLOPs; random
  weights, since only the time is measured).

Only one copy is deployed at a time: idle replicas are not free (the five copies deployed
together kept 0.40 of this 2-core machine busy doing nothing, one copy 0.12), so
measuring one beside four idle others understated every copy by about 15 %. Per round,
in rotated order, each copy is deployed (replacing the previous one), warmed up, sent
each 1024 px portrait once at c=1, then (every copy but ``w32``) a closed-loop level at
c=8. Targets (issue 13): 1024 px at c=1 <= 0.4 s with the default
style; c=8 >= 3 images/s; width 32 at c=1 <= 1.5 s. The share of the CPU's peak is the
convolution FLOPs of a request's pieces over its ``unet_compute`` time.
"""

import argparse
import asyncio
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks import common
from benchmarks.common import Photo, fmt
from benchmarks.load import Level, Sample, run_level, sample_of
from benchmarks.unet import SHAPES, conv_macs, peak_tflops

TARGET_C1_S = 0.4
TARGET_C8_IMAGES_PER_S = 3.0
TARGET_W32_C1_S = 1.5
COPIES = ("fast", "fast_1thread", "fp32", "fast_wait20", "w32")
LOADED_COPIES = ("fast", "fast_1thread", "fp32", "fast_wait20")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def width32_registry(directory: Path) -> Path:
    """A one-style registry of seeded random width-32 weights (the DCT-Net import's shape)."""
    from cartoon.model.unet import UNetConfig, random_generator, save_weights

    save_weights(random_generator(UNetConfig(width=32), seed=13), directory / "w32.safetensors")
    (directory / "registry.json").write_text(json.dumps({
        "default": "w32",
        "styles": [{"name": "w32", "description": "random weights, DCT-Net width", "head": "w32.safetensors",
                    "background": "w32.safetensors", "width": 32}],
    }))
    return directory


def copy_app(app: dict, name: str, args: dict, batching: dict | None = None) -> dict:
    """``app`` under its own name and route, with ``args`` and the Cartoonizer's ``batching`` changed."""
    copied = copy.deepcopy(app)
    copied["name"], copied["route_prefix"] = name, f"/{name}"
    copied["args"] = {**copied.get("args", {}), **args}
    if batching:
        cartoonizer = common.deployment({"applications": [copied]}, "Cartoonizer")
        cartoonizer["user_config"] = {**cartoonizer.get("user_config", {}), **batching}
    return copied


def copy_configs(config: dict, w32_dir: Path) -> dict[str, dict]:
    """A whole Serve config per copy, each holding that copy's app alone."""
    (app,) = config["applications"]
    apps = [
        copy_app(app, "fast", {}),
        copy_app(app, "fast_1thread", {"cpu_threads": 1}),
        copy_app(app, "fp32", {"precision": "fp32"}),
        copy_app(app, "fast_wait20", {}, {"batch_wait_timeout_s": 0.02}),
        copy_app(app, "w32", {"styles_dir": str(w32_dir)}),
    ]
    return {copied["name"]: {**copy.deepcopy(config), "applications": [copied]} for copied in apps}


def serve_only(config: dict, url: str, port: int, name: str) -> dict:
    """Deploys ``config``'s one app in place of whatever Serve runs; returns its /readyz."""
    from serve_app.local import deploy_config

    config = copy.deepcopy(config)
    config["http_options"].update(host="127.0.0.1", port=port)
    deploy_config(config)  # the controller deletes the apps the config leaves out
    common.wait_ready(f"{url}/{name}/readyz", 600)
    return httpx.get(f"{url}/{name}/readyz", timeout=30).json()


def gflop_per_request(photo: Photo, settings, width: int) -> float:
    """Convolution GFLOP of the pieces one photo sends through the UNet."""
    from cartoon.image.pipeline import Options, Preparer
    from cartoon.model.unet import UNetConfig, random_generator

    job = Preparer(settings).prepare(photo.data, Options())
    per_pixel = 2 * conv_macs(random_generator(UNetConfig(width=width)), SHAPES["head"]) / SHAPES["head"] ** 2
    pixels = sum(piece.shape[0] * piece.shape[1] for piece in [*job.heads, *job.background])
    return per_pixel * pixels / 1e9


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def verdict(value: float, limit: float, at_most: bool) -> str:
    if np.isnan(value):
        return "unknown"
    return "**met**" if (value <= limit if at_most else value >= limit) else "**not met**"


def peak_share(samples: list[Sample], gflop: dict[str, float], precision: str, threads: int) -> float:
    """Mean achieved convolution GFLOP/s over ``unet_compute``, as % of the peak of ``threads`` cores.

    At c=1 a forward of the fast copies runs on up to ``threads`` threads; fast_1thread's on one.
    """
    import torch

    rates = [gflop[s.photo] / (s.timings["unet_compute"] / 1e3) for s in samples if s.timings.get("unet_compute")]
    peak = peak_tflops(torch.device("cpu"), precision, threads, None)
    return mean(rates) / (peak * 1e3) * 100 if peak and rates else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.targets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--requests", type=int, default=24, help="requests per c=8 level")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrency of the throughput levels")
    parser.add_argument("--settle-s", type=float, default=3.0, help="pause before each throughput level")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a serve_config.yaml override applied to every copy (see benchmarks.compare)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/targets.json)")
    args = parser.parse_args(argv)

    from cartoon.model.inference import choose_mode
    import torch

    base = common.apply_overrides(common.load_serve_config(), args.overrides)
    settings = common.pipeline_settings(base)
    threads = common.cartoonizer_threads(base)
    fast_precision = choose_mode(torch.device("cpu"), common.app_args(base).get("precision", "auto")).precision
    photos = common.portraits([1024])
    gflop = {
        "fast": {p.name: gflop_per_request(p, settings, 16) for p in photos},
        "w32": {p.name: gflop_per_request(p, settings, 32) for p in photos},
    }
    gflop["fp32"] = gflop["fast_1thread"] = gflop["fast_wait20"] = gflop["fast"]
    precision = {"fast": fast_precision, "fast_1thread": fast_precision, "fp32": "fp32",
                 "fast_wait20": fast_precision, "w32": fast_precision}
    started = time.perf_counter()
    description = common.machine_description()
    c1: dict[str, list[Sample]] = {name: [] for name in COPIES}
    levels: dict[str, list[Level]] = {name: [] for name in LOADED_COPIES}
    ready: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="w32_style") as w32_dir:
        configs = copy_configs(base, width32_registry(Path(w32_dir)))
        # Logical CPUs for two copies at full scale: the outgoing one may still be stopping.
        with common.served_graph(configs[COPIES[0]], ray_cpus=4, ready_timeout_s=600) as url:
            port = int(url.rsplit(":", 1)[1])
            with httpx.Client(timeout=300) as client:

                def endpoint(name: str) -> str:
                    return f"{url}/{name}{common.CARTOONIZE_PATH}"

                def one(name: str, photo: Photo) -> Sample:
                    start = time.perf_counter()
                    response = client.post(endpoint(name), content=photo.data,
                                           headers={"content-type": photo.content_type})
                    return sample_of(photo, response, time.perf_counter() - start)

                for round_index in range(args.rounds):
                    log(f"round {round_index + 1}/{args.rounds} at {time.perf_counter() - started:.0f} s, "
                        f"load average {os.getloadavg()[0]:.1f}")
                    shift = round_index % len(COPIES)
                    for name in COPIES[shift:] + COPIES[:shift]:
                        ready[name] = serve_only(configs[name], url, port, name)
                        for photo in photos:  # warm-up
                            one(name, photo)
                        if name in LOADED_COPIES:
                            asyncio.run(run_level(endpoint(name), photos, args.concurrency, args.concurrency))
                        time.sleep(args.settle_s)
                        c1[name] += [one(name, photo) for photo in photos]
                        if name in LOADED_COPIES:
                            time.sleep(args.settle_s)
                            level = asyncio.run(run_level(endpoint(name), photos, args.concurrency, args.requests))
                            levels[name].append(level)
                            log(f"  {name} c={args.concurrency}: {level.throughput():.2f} img/s")
    elapsed = time.perf_counter() - started
    end_load = ", ".join(f"{value:.2f}" for value in os.getloadavg())

    def latencies(name: str) -> list[float]:
        return [s.latency_s for s in c1[name] if s.ok]

    def rates(name: str) -> list[float]:
        return [level.throughput() for level in levels[name]]

    rows = []
    for name in COPIES:
        lat = latencies(name)
        stage = {key: mean([s.timings.get(key, np.nan) for s in c1[name] if s.ok]) for key in ("unet_compute", "encode")}
        rows.append([
            name, precision[name], len(lat), fmt(common.median(lat) * 1000, 0), fmt(mean(lat) * 1000, 0),
            fmt(common.percentile(lat, 95) * 1000, 0), fmt(stage["unet_compute"], 0), fmt(stage["encode"], 0),
            fmt(peak_share([s for s in c1[name] if s.ok], gflop[name], precision[name],
                           1 if name == "fast_1thread" else threads), 0),
            fmt(common.median(rates(name)), 2) if name in levels else "-",
            " / ".join(fmt(rate, 2) for rate in rates(name)) if name in levels else "-",
        ])
    print(f"## CPU targets, end to end over HTTP: `python -m benchmarks.targets`\n\n{description}; "
          f"load average at the end {end_load}; {elapsed:.0f} s. Cartoonizer: up to {threads} torch "
          f"threads per forward. Inference modes from /readyz: "
          + "; ".join(f"{name}: {ready[name].get('inference')}" for name in COPIES) + "\n")
    print(common.markdown_table(
        ["copy", "precision", "n c=1", "p50 ms c=1", "mean ms c=1", "p95 ms c=1", "unet_compute ms",
         "encode ms", "% of peak (UNet, cores used)", f"img/s c={args.concurrency} (median)", "per round"],
        rows))
    fast_c1 = common.median(latencies("fast"))
    w32_c1 = common.median(latencies("w32"))
    fast_rate = common.median(rates("fast"))
    fp32_c1 = common.median(latencies("fp32"))
    fp32_rate = common.median(rates("fp32"))
    print()
    print(common.markdown_table(["target", "measured", "fp32 beside it", "verdict"], [
        [f"1024 px, c=1, default style: <= {TARGET_C1_S} s", f"{fmt(fast_c1, 3)} s (p50)",
         f"{fmt(fp32_c1, 3)} s ({fmt(fp32_c1 / fast_c1, 2)}x)", verdict(fast_c1, TARGET_C1_S, True)],
        [f"c={args.concurrency}: >= {TARGET_C8_IMAGES_PER_S} img/s", f"{fmt(fast_rate, 2)} img/s (median)",
         f"{fmt(fp32_rate, 2)} img/s ({fmt(fast_rate / fp32_rate, 2)}x)",
         verdict(fast_rate, TARGET_C8_IMAGES_PER_S, False)],
        [f"width-32 model, c=1: <= {TARGET_W32_C1_S} s", f"{fmt(w32_c1, 3)} s (p50)", "-",
         verdict(w32_c1, TARGET_W32_C1_S, True)],
    ]))
    path = common.output_path(args.out, "targets.json")
    common.write_json(path, {
        "machine": description, "load_average_end": end_load, "elapsed_s": elapsed, "args": vars(args),
        "readyz": ready, "gflop_per_request": gflop,
        "c1": {name: [vars(s) for s in c1[name]] for name in COPIES},
        "levels": {name: [level.summary() for level in levels[name]] for name in LOADED_COPIES},
    })
    print(f"\nraw samples: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
