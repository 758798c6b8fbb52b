"""The CPU targets end to end over HTTP, side by side in one run: fast path, fp32 before and now, width 32.

    python -m benchmarks.targets                        # about 12 minutes on a quiet 2-core machine
    python -m benchmarks.targets --rounds 1 --requests 8   # smoke run
    python -m benchmarks.targets --copies fp32_wide,fp32_full,fp32   # issue 29 alone: the fp32 path

One Serve instance serves up to seven copies of serve_config.yaml's app in turn, each under its
own route prefix and otherwise as shipped:

- ``fast``: serve_config.yaml itself (the inference mode ``cartoon.model.inference`` picks);
- ``fp32_wide``: ``args.precision: fp32`` with ``args.background_scale: 1`` and every
  style's background drawn by its head model (width 16), as before the slim background
  models: the picture reference;
- ``fp32_full``: ``args.precision: fp32`` with ``args.background_scale: 1``, the fp32 path
  as served (the registry's background models, at full size);
- ``fast_1thread``: the same with ``args.cpu_threads: 1`` (one torch thread always), to
  see what the second thread at c=1 buys on the machine at hand;
- ``fp32``: the same with ``args.precision: fp32`` and ``args.background_scale: auto``: the
  path of a CPU without native bf16 with its background model at half size
  (``cartoon.model.inference.choose_background_scale``), the speed lever of issue 29,
  which serve_config.yaml does not ship (full size is the default: docs/BENCHMARKS.md);
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
style; c=8 >= 3 images/s; width 32 at c=1 <= 1.5 s. Issue 29, the fp32 path: c=1 <= 0.5 s,
c=8 >= 2.5 images/s. The share of the CPU's peak is the convolution FLOPs of a request's
pieces over its ``unet_compute`` time. Each copy's c=1 pictures are compared with
``fp32_wide``'s (``fp32_full``'s when that copy does not run): PSNR and the largest
difference, faces and the rest apart.
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
from cartoon.image.styles import StyleRegistry

TARGET_C1_S = 0.4
TARGET_C8_IMAGES_PER_S = 3.0
TARGET_W32_C1_S = 1.5
TARGET_FP32_C1_S = 0.5
TARGET_FP32_C8_IMAGES_PER_S = 2.5
COPIES = ("fast", "fp32_wide", "fp32_full", "fp32", "fast_1thread", "fast_wait20", "w32")
LOADED_COPIES = ("fast", "fp32_wide", "fp32_full", "fp32", "fast_1thread", "fast_wait20")


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


def wide_registry(styles_dir: Path, directory: Path) -> Path:
    """The registry of ``styles_dir`` with each style's background drawn by its head model."""
    document = json.loads((styles_dir / "registry.json").read_text())
    for entry in document["styles"]:
        head = str((styles_dir / entry["head"]).resolve())
        entry.update(head=head, background=head, background_width=entry["width"])
        if entry.get("compat", {}).get("mask"):
            entry["compat"]["mask"] = str((styles_dir / entry["compat"]["mask"]).resolve())
    (directory / "registry.json").write_text(json.dumps(document))
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


def copy_configs(config: dict, w32_dir: Path, wide_dir: Path) -> dict[str, dict]:
    """A whole Serve config per copy, each holding that copy's app alone."""
    (app,) = config["applications"]
    apps = [
        copy_app(app, "fast", {}),
        copy_app(app, "fp32_wide", {"precision": "fp32", "background_scale": 1.0, "styles_dir": str(wide_dir)}),
        copy_app(app, "fp32_full", {"precision": "fp32", "background_scale": 1.0}),
        copy_app(app, "fast_1thread", {"cpu_threads": 1}),
        copy_app(app, "fp32", {"precision": "fp32", "background_scale": "auto"}),
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


def gflop_per_request(photo: Photo, settings, widths: tuple[int, int], background_scale: float = 1.0) -> float:
    """Convolution GFLOP of the pieces one photo sends through the UNet: heads and
    backgrounds at their models' ``widths``, backgrounds at ``background_scale``."""
    from cartoon.image.pipeline import Options, Preparer
    from cartoon.model.unet import UNetConfig, random_generator

    job = Preparer(settings).prepare(photo.data, Options())
    head_width, background_width = widths
    per_pixel = {width: 2 * conv_macs(random_generator(UNetConfig(width=width)), SHAPES["head"]) / SHAPES["head"] ** 2
                 for width in set(widths)}
    pixels = sum(piece.shape[0] * piece.shape[1] for piece in job.heads)
    background_pixels = sum(piece.shape[0] * piece.shape[1] * background_scale**2 for piece in job.background)
    return (per_pixel[head_width] * pixels + per_pixel[background_width] * background_pixels) / 1e9


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
    parser.add_argument("--c1-repeats", type=int, default=3,
                        help="c=1 requests per photo per round (a few samples swing with the machine)")
    parser.add_argument("--settle-s", type=float, default=3.0, help="pause before each throughput level")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a serve_config.yaml override applied to every copy (see benchmarks.compare)")
    parser.add_argument("--copies", default=",".join(COPIES), help=f"which copies, of {', '.join(COPIES)}")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/targets.json)")
    args = parser.parse_args(argv)
    copies = [name for name in COPIES if name in args.copies.split(",")]
    loaded = [name for name in copies if name in LOADED_COPIES]

    from cartoon.image import codec
    from cartoon.model.inference import choose_background_scale, choose_mode
    import torch

    base = common.apply_overrides(common.load_serve_config(), args.overrides)
    settings = common.pipeline_settings(base)
    threads = common.cartoonizer_threads(base)
    photos = common.portraits([1024])
    faces = {photo.name: common.face_mask(codec.decode(photo.data).rgb) for photo in photos}
    started = time.perf_counter()
    description = common.machine_description()
    c1: dict[str, list[Sample]] = {name: [] for name in copies}
    levels: dict[str, list[Level]] = {name: [] for name in loaded}
    pictures: dict[str, dict[str, np.ndarray]] = {name: {} for name in copies}
    ready: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="w32_style") as w32_dir, \
            tempfile.TemporaryDirectory(prefix="wide_styles") as wide_dir:
        shipped = Path(common.resolve_styles_dir(common.app_args(base).get("styles_dir")))
        configs = copy_configs(base, width32_registry(Path(w32_dir)), wide_registry(shipped, Path(wide_dir)))
        modes = {}  # copy -> (precision, background scale), as the Cartoonizer will choose them
        for name, app_config in configs.items():
            app = common.app_args(app_config)
            mode = choose_mode(torch.device("cpu"), app.get("precision", "auto"))
            modes[name] = (mode.precision, choose_background_scale(mode, app.get("background_scale", "auto"),
                                                                   tiled=bool(app.get("tile", 0))))
        precision = {name: mode[0] for name, mode in modes.items()}
        default_style = StyleRegistry.from_directory(shipped).get(None)
        widths = {name: (default_style.width, default_style.background_width) for name in configs}
        widths.update(w32=(32, 32), fp32_wide=(default_style.width, default_style.width))
        gflop = {name: {p.name: gflop_per_request(p, settings, widths[name], scale) for p in photos}
                 for name, (_, scale) in modes.items()}
        # Logical CPUs for two copies at full scale: the outgoing one may still be stopping.
        with common.served_graph(configs[copies[0]], ray_cpus=4, ready_timeout_s=600) as url:
            port = int(url.rsplit(":", 1)[1])
            with httpx.Client(timeout=300) as client:

                def endpoint(name: str) -> str:
                    return f"{url}/{name}{common.CARTOONIZE_PATH}"

                def one(name: str, photo: Photo) -> Sample:
                    start = time.perf_counter()
                    response = client.post(endpoint(name), content=photo.data,
                                           headers={"content-type": photo.content_type})
                    sample = sample_of(photo, response, time.perf_counter() - start)
                    if sample.ok:
                        pictures[name][photo.name] = codec.decode(response.content).rgb
                    return sample

                for round_index in range(args.rounds):
                    log(f"round {round_index + 1}/{args.rounds} at {time.perf_counter() - started:.0f} s, "
                        f"load average {os.getloadavg()[0]:.1f}")
                    shift = round_index % len(copies)
                    for name in copies[shift:] + copies[:shift]:
                        ready[name] = serve_only(configs[name], url, port, name)
                        for photo in photos:  # warm-up
                            one(name, photo)
                        if name in loaded:
                            asyncio.run(run_level(endpoint(name), photos, args.concurrency, args.concurrency))
                        time.sleep(args.settle_s)
                        c1[name] += [one(name, photo) for _ in range(args.c1_repeats) for photo in photos]
                        if name in loaded:
                            time.sleep(args.settle_s)
                            level = asyncio.run(run_level(endpoint(name), photos, args.concurrency, args.requests))
                            levels[name].append(level)
                            log(f"  {name} c={args.concurrency}: {level.throughput():.2f} img/s")
    elapsed = time.perf_counter() - started
    end_load = ", ".join(f"{value:.2f}" for value in os.getloadavg())

    def latencies(name: str) -> list[float]:
        return [s.latency_s for s in c1.get(name, []) if s.ok]

    def rates(name: str) -> list[float]:
        return [level.throughput() for level in levels.get(name, [])]

    rows = []
    for name in copies:
        lat = latencies(name)
        stage = {key: mean([s.timings.get(key, np.nan) for s in c1[name] if s.ok]) for key in ("unet_compute", "encode")}
        rows.append([
            name, precision[name], modes[name][1], len(lat), fmt(common.median(lat) * 1000, 0),
            fmt(mean(lat) * 1000, 0), fmt(common.percentile(lat, 95) * 1000, 0), fmt(stage["unet_compute"], 0),
            fmt(stage["encode"], 0),
            fmt(peak_share([s for s in c1[name] if s.ok], gflop[name], precision[name],
                           1 if name == "fast_1thread" else threads), 0),
            fmt(common.median(rates(name)), 2) if name in levels else "-",
            " / ".join(fmt(rate, 2) for rate in rates(name)) if name in levels else "-",
        ])
    print(f"## CPU targets, end to end over HTTP: `python -m benchmarks.targets`\n\n{description}; "
          f"load average at the end {end_load}; {elapsed:.0f} s. Cartoonizer: up to {threads} torch "
          f"threads per forward. Inference modes from /readyz: "
          + "; ".join(f"{name}: {ready[name].get('inference')}" for name in copies) + "\n")
    print(common.markdown_table(
        ["copy", "precision", "background scale", "n c=1", "p50 ms c=1", "mean ms c=1", "p95 ms c=1",
         "unet_compute ms", "encode ms", "% of peak (UNet, cores used)", f"img/s c={args.concurrency} (median)",
         "per round"],
        rows))
    reference_copy = "fp32_wide" if "fp32_wide" in copies else "fp32_full"
    print(f"\nPictures at c=1 against {reference_copy}'s (PSNR dB / largest difference of 255), faces and the rest:\n")
    picture_rows = []
    for name in copies:
        for photo in photos:
            reference, candidate = pictures.get(reference_copy, {}).get(photo.name), pictures[name].get(photo.name)
            if name == reference_copy or reference is None or candidate is None:
                continue
            cost = common.picture_cost(reference, candidate, faces[photo.name])
            picture_rows.append([name, photo.label, *(
                f"{fmt(cost[f'{part}_psnr'], 1)} / {fmt(cost[f'{part}_max'], 0)}" if f"{part}_psnr" in cost else "-"
                for part in ("faces", "background"))])
    print(common.markdown_table(["copy", "photo", "faces", "background"], picture_rows))

    def c1_row(target: str, name: str, limit: float, beside: str) -> list:
        value, other = common.median(latencies(name)), common.median(latencies(beside))
        return [target, f"{fmt(value, 3)} s (p50)", f"{beside}: {fmt(other, 3)} s ({fmt(other / value, 2)}x)",
                verdict(value, limit, True)]

    def rate_row(target: str, name: str, limit: float, beside: str) -> list:
        value, other = common.median(rates(name)), common.median(rates(beside))
        return [target, f"{fmt(value, 2)} img/s (median)", f"{beside}: {fmt(other, 2)} img/s ({fmt(value / other, 2)}x)",
                verdict(value, limit, False)]

    targets = []  # the rows whose copies ran
    if {"fast", "fp32"} <= set(copies):
        targets += [
            c1_row(f"1024 px, c=1, default style: <= {TARGET_C1_S} s", "fast", TARGET_C1_S, "fp32"),
            rate_row(f"c={args.concurrency}: >= {TARGET_C8_IMAGES_PER_S} img/s", "fast", TARGET_C8_IMAGES_PER_S,
                     "fp32"),
        ]
    if {"fp32_full", "fp32_wide"} <= set(copies):
        targets += [
            c1_row(f"fp32 path as served, 1024 px, c=1: <= {TARGET_FP32_C1_S} s", "fp32_full", TARGET_FP32_C1_S,
                   "fp32_wide"),
            rate_row(f"fp32 path as served, c={args.concurrency}: >= {TARGET_FP32_C8_IMAGES_PER_S} img/s", "fp32_full",
                     TARGET_FP32_C8_IMAGES_PER_S, "fp32_wide"),
        ]
    if {"fp32", "fp32_full"} <= set(copies):
        targets += [
            c1_row(f"fp32 path, 1024 px, c=1: <= {TARGET_FP32_C1_S} s", "fp32", TARGET_FP32_C1_S, "fp32_full"),
            rate_row(f"fp32 path, c={args.concurrency}: >= {TARGET_FP32_C8_IMAGES_PER_S} img/s", "fp32",
                     TARGET_FP32_C8_IMAGES_PER_S, "fp32_full"),
        ]
    if "w32" in copies:
        targets.append([f"width-32 model, c=1: <= {TARGET_W32_C1_S} s",
                        f"{fmt(common.median(latencies('w32')), 3)} s (p50)", "-",
                        verdict(common.median(latencies("w32")), TARGET_W32_C1_S, True)])
    print()
    print(common.markdown_table(["target", "measured", "beside it", "verdict"], targets))
    path = common.output_path(args.out, "targets.json")
    common.write_json(path, {
        "machine": description, "load_average_end": end_load, "elapsed_s": elapsed, "args": vars(args),
        "readyz": ready, "gflop_per_request": gflop, "picture_rows": picture_rows,
        "c1": {name: [vars(s) for s in c1[name]] for name in copies},
        "levels": {name: [level.summary() for level in levels[name]] for name in loaded},
    })
    print(f"\nraw samples: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
