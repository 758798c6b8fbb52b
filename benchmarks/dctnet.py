"""The official DCT-Net size (width 32) beside the width-16 default, end to end over HTTP, in one run.

    python -m benchmarks.dctnet                     # CPU: serve_config.yaml, 1024 px, ~5 minutes on 2 cores
    python -m benchmarks.dctnet --preset gpu        # configs/gpu.yaml on a GPU node (c=1 and c=16)
    python -m benchmarks.dctnet --dctnet-dir DIR    # a style converted with python -m cartoon.model.dctnet

One served app holds both styles: the shipped default (width 16, native mode) and a
width-32 DCT-Net-shaped style in tf1 mode (1,467,075 parameters per generator; random
weights unless ``--dctnet-dir`` names a converted official model, whose speed is the
same). Requests alternate between the two styles in rounds, the order rotated each
round, so a shared machine's drift lands on both alike; the table gives each style's
latency and the UNet's share (Server-Timing), and the width-32 / width-16 ratios.
"""

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks import common
from benchmarks.common import fmt
from benchmarks.load import run_level, sample_of
from cartoon.image.styles import StyleRegistry
from cartoon.model.unet import UNetConfig, random_generator, save_weights

DCTNET_STYLE = "dctnet32"
PRESETS = {"cpu": common.SERVE_CONFIG, "gpu": common.ROOT / "configs" / "gpu.yaml"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dctnet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="cpu: serve_config.yaml; gpu: configs/gpu.yaml")
    parser.add_argument("--dctnet-dir", help="styles_dir with a converted DCT-Net style (default: random width-32 weights)")
    parser.add_argument("--dctnet-style", default=DCTNET_STYLE, help="the DCT-Net style's name in --dctnet-dir")
    parser.add_argument("--size", type=int, default=1024, help="long side of the photos")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds at c=1 (each photo once per style)")
    parser.add_argument("--concurrency", type=int, default=0, help="a throughput level at this c (0: cpu none, gpu 16)")
    parser.add_argument("--requests", type=int, default=32, help="requests per throughput level")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. args.cpu_threads=2 (repeatable)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/dctnet_<preset>.json)")
    return parser


def styles_dir(args, directory: Path) -> tuple[Path, str]:
    """The default styles plus a width-32 tf1 style (converted, or random weights)."""
    shutil.copytree(common.DEFAULT_STYLES_DIR, directory, dirs_exist_ok=True)
    registry_path = directory / "registry.json"
    document = json.loads(registry_path.read_text())
    if args.dctnet_dir:
        source = Path(args.dctnet_dir)
        entry = next(e for e in json.loads((source / "registry.json").read_text())["styles"] if e["name"] == args.dctnet_style)
        for key in ("head", "background"):
            shutil.copy(source / entry[key], directory / entry[key])
        if entry.get("compat", {}).get("mask"):
            shutil.copy(source / entry["compat"]["mask"], directory / entry["compat"]["mask"])
        name = entry["name"]
    else:
        name = DCTNET_STYLE
        config = UNetConfig(width=32, filter_eps=1e-2, mode="tf1")
        save_weights(random_generator(config, seed=32), directory / f"{name}.safetensors")
        entry = {
            "name": name, "description": "random weights, official DCT-Net shape", "head": f"{name}.safetensors",
            "background": f"{name}.safetensors", "width": 32, "source": "benchmarks/dctnet.py (random)",
            "licence": "n/a", "compat": {"mode": "tf1", "background_padding": "white16"},
        }
    document["styles"] = [e for e in document["styles"] if e["name"] != name] + [entry]
    registry_path.write_text(json.dumps(document, indent=2))
    return directory, name


def summary(samples: list) -> dict:
    ok = [s for s in samples if s.ok]
    latencies = [s.latency_s * 1000 for s in ok]
    unet = [s.timings.get("unet", float("nan")) for s in ok]
    return {
        "n": len(ok), "errors": len(samples) - len(ok),
        "p50_ms": common.median(latencies) if latencies else float("nan"),
        "mean_ms": sum(latencies) / len(latencies) if latencies else float("nan"),
        "unet_ms": common.median(unet) if unet else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = common.apply_overrides(common.load_serve_config(PRESETS[args.preset]), args.overrides)
    concurrency = args.concurrency or (16 if args.preset == "gpu" else 0)
    with tempfile.TemporaryDirectory(prefix="dctnet_bench") as temporary:
        directory, dctnet = styles_dir(args, Path(temporary))
        config["applications"][0].setdefault("args", {})["styles_dir"] = str(directory)
        registry = StyleRegistry.from_directory(directory)
        styles = [registry.default, dctnet]
        widths = {name: registry.get(name).width for name in styles}
        photos = common.portraits([args.size])
        print(f"# DCT-Net width 32 vs default width 16, preset {args.preset}\n\n{common.machine_description()}\n")
        samples: dict[str, list] = {name: [] for name in styles}
        levels: dict[str, object] = {}
        start = time.perf_counter()
        with common.served_graph(config) as url, httpx.Client(timeout=300) as client:
            for name in styles:  # warm-up: loads each style on the Cartoonizer
                client.post(url + common.CARTOONIZE_PATH, params={"style": name}, content=photos[0].data)
            for round_index in range(args.rounds):
                order = styles if round_index % 2 == 0 else styles[::-1]
                for name in order:
                    for photo in photos:
                        began = time.perf_counter()
                        response = client.post(url + common.CARTOONIZE_PATH, params={"style": name},
                                               content=photo.data, headers={"content-type": photo.content_type})
                        samples[name].append(sample_of(photo, response, time.perf_counter() - began))
            if concurrency:
                for name in styles:
                    levels[name] = asyncio.run(run_level(url + common.CARTOONIZE_PATH, photos, concurrency,
                                                         args.requests, params={"style": name}))
        results = {name: summary(samples[name]) for name in styles}
        base, big = results[styles[0]], results[dctnet]
        rows = [[name, widths[name], r["n"], r["errors"], fmt(r["p50_ms"], 0), fmt(r["mean_ms"], 0), fmt(r["unet_ms"], 0)]
                for name, r in results.items()]
        rows.append(["ratio 32 / 16", "", "", "", fmt(big["p50_ms"] / base["p50_ms"], 2),
                     fmt(big["mean_ms"] / base["mean_ms"], 2), fmt(big["unet_ms"] / base["unet_ms"], 2)])
        print(f"c=1, {args.size} px, {args.rounds} rounds x {len(photos)} photos per style "
              f"({time.perf_counter() - start:.0f} s):\n")
        print(common.markdown_table(["style", "width", "ok", "errors", "p50 ms", "mean ms", "unet ms (p50)"], rows))
        document = {"preset": args.preset, "size": args.size, "machine": common.machine_description(),
                    "c1": results, "widths": widths}
        if levels:
            throughput = {name: level.throughput() for name, level in levels.items()}
            print(f"\nc={concurrency}, {args.requests} requests per style:\n")
            print(common.markdown_table(
                ["style", "img/s", "p50 ms"],
                [[name, fmt(throughput[name], 2), fmt(levels[name].summary()["p50_ms"], 0)] for name in styles]
                + [["ratio 32 / 16", fmt(throughput[dctnet] / throughput[styles[0]], 2), ""]]))
            document["throughput"] = throughput
        common.write_json(common.output_path(args.out, f"dctnet_{args.preset}.json"), document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
