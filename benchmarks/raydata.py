"""``cartoonize-batch`` side by side: through the served graph (HTTP) and through Ray Data.

    python -m benchmarks.raydata                  # CPU preset: 96 and 192 photos, 2 rounds, ~12 min on 2 cores
    python -m benchmarks.raydata --preset gpu     # one GPU node: configs/gpu.yaml against one GPU actor

The same folder (the two real portraits at a 1024 px long side, in turn) goes through
every mode of the preset, each run as a user runs it, the console script in a child
process:

- ``http``: ``cartoonize-batch --url`` against the preset's Serve config deployed in this
  process (warm: every deployment ready before the clock starts);
- ``ray``: ``cartoonize-batch --engine ray`` on a Ray of its own, which it starts (the
  Ray start-up, actor start-up and model loading are inside its wall time), with the
  layout the command picks (cpu: whole photos per actor; gpu: staged);
- ``ray-staged`` (cpu): the same with ``--layout staged``, serve_config.yaml's layout
  mirrored, to show what the whole-photo layout gains on CPUs.

Each mode runs a folder of n photos and one of 2n, each from a cold start: a Ray of its
own for the Ray modes, a service deployed anew for http (so its autoscaling starts
from the config's minimum in both runs, not warmed by the first). Reported per mode:
the wall time of the 2n run (Ray's start inside, the service's start not), its own
images/s (the command's count over its own time: from its first request on, for Ray
from the plan on, actor start-up and model loading inside), and the marginal rate
n / (own(2n) - own(n)), in which every fixed cost (the actors' start, the first batch,
the service scaling up) cancels: the rate a long run settles at. Its noise is the
run-to-run spread of those fixed costs, which is why n is large. (The outputs' mtimes
cannot give it: the staged layout's CPU tasks run ahead while its actors load.) Then
the ratios to http, and how far apart the modes' pictures are (largest channel
difference over all photos). Each round starts with another mode.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common
from benchmarks.common import fmt
from cartoon.image import codec

COMMAND = str(Path(sys.executable).with_name("cartoonize-batch"))
PRESETS = {
    "cpu": {
        "serve_config": common.SERVE_CONFIG,
        "photos": 96,
        "modes": {
            "http": ["--concurrency", "8"],
            # The command's defaults on CPUs: one whole-photo actor per CPU.
            "ray": [],
            # serve_config.yaml's layout mirrored: two UNet actors of 0.75 CPU (one torch
            # thread each), the CPU stages in the quarter CPUs left.
            "ray-staged": ["--layout", "staged", "--unet-actors", "2", "--cpus-per-actor", "0.75",
                           "--cpus-per-task", "0.25"],
        },
    },
    # configs/gpu.yaml's layout mirrored: one UNet actor holding the GPU, 384 px tiles,
    # one CPU per CPU task.
    "gpu": {
        "serve_config": common.ROOT / "configs" / "gpu.yaml",
        "photos": 48,
        "modes": {
            "http": ["--concurrency", "32"],
            "ray": ["--unet-actors", "1", "--gpus-per-actor", "1", "--cpus-per-actor", "1", "--cpus-per-task", "1",
                    "--batch-size", "16", "--tile", "384"],
        },
    },
}
RATE = re.compile(r"done (\d+), skipped \d+, failed (\d+); ([\d.]+) images/s over ([\d.]+) s")


def write_folder(folder: Path, count: int) -> None:
    portraits = common.portraits([1024])
    for index in range(count):
        path = folder / f"part{index % 2}" / f"photo{index:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(portraits[index % len(portraits)].data)


def run_command(args: list[str], count: int) -> dict:
    """Runs the console script on ``count`` photos; its wall time, its own time and rate."""
    start = time.perf_counter()
    done = subprocess.run([COMMAND, *args], capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    match = RATE.search(done.stdout)
    if done.returncode != 0 or not match or int(match.group(1)) != count:
        raise SystemExit(f"cartoonize-batch {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return {"wall_s": wall_s, "own_s": float(match.group(4)), "own_rate": float(match.group(3))}


def run_mode(work: Path, mode: str, flags: list[str], config: dict, count: int, round_index: int) -> dict:
    """The n and 2n runs of one mode, each from a cold start; the 2n run's figures and the marginal rate."""
    own_s = {}
    for size in (count, 2 * count):
        args = [str(work / f"in{size}"), "-o", str(work / f"{mode}{round_index}_{size}"), *flags]
        if mode == "http":
            with common.served_graph(config) as url:
                result = run_command([*args, "--url", url], size)
        else:
            result = run_command([*args, "--engine", "ray"], size)
        own_s[size] = result["own_s"]
    return {**result, "marginal_rate": count / (own_s[2 * count] - own_s[count])}


def largest_difference(first: Path, second: Path) -> int:
    """The largest channel difference between same-named pictures of two output trees."""
    largest = 0
    for path in sorted(first.rglob("*.png")):
        a = codec.decode(path.read_bytes()).rgb.astype(int)
        b = codec.decode((second / path.relative_to(first)).read_bytes()).rgb.astype(int)
        largest = max(largest, int(np.abs(a - b).max()))
    return largest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.raydata", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--photos", type=int, help="n: photos of the small folder, the large one has 2n (preset: cpu 96, gpu 48)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", help="results JSON (default benchmarks/results/raydata_PRESET.json)")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    modes = list(preset["modes"])
    count = args.photos or preset["photos"]
    config = common.load_serve_config(preset["serve_config"])
    description = common.machine_description()
    work = Path(tempfile.mkdtemp(prefix="raydata-bench"))
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    try:
        for size in (count, 2 * count):
            write_folder(work / f"in{size}", size)
        for round_index in range(args.rounds):
            shift = round_index % len(modes)
            for mode in modes[shift:] + modes[:shift]:
                result = run_mode(work, mode, preset["modes"][mode], config, count, round_index)
                results[mode].append(result)
                print(f"round {round_index + 1} {mode}: {2 * count} photos in {result['wall_s']:.1f} s wall, "
                      f"{result['own_rate']:.2f} img/s own, {result['marginal_rate']:.2f} img/s marginal",
                      file=sys.stderr, flush=True)
        differences = {mode: largest_difference(work / f"http0_{2 * count}", work / f"{mode}0_{2 * count}")
                       for mode in modes if mode != "http"}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(mode: str, key: str) -> float:
        return common.median([result[key] for result in results[mode]])

    rows = [[mode, 2 * count, fmt(median(mode, "wall_s")), fmt(median(mode, "own_rate"), 2),
             fmt(median(mode, "marginal_rate"), 2),
             " / ".join(fmt(result["marginal_rate"], 2) for result in results[mode])] for mode in modes]
    rows += [[f"{mode} / http", "", fmt(median(mode, "wall_s") / median("http", "wall_s"), 2) + "x",
              fmt(median(mode, "own_rate") / median("http", "own_rate"), 2) + "x",
              fmt(median(mode, "marginal_rate") / median("http", "marginal_rate"), 2) + "x", ""]
             for mode in modes if mode != "http"]
    print(f"\n{description}; preset {args.preset}, {args.rounds} rounds (medians)\n")
    print(common.markdown_table(
        ["mode", "photos", "wall s (lower: faster)", "images/s (own)", "images/s (marginal)", "marginal, per round"], rows))
    for mode, difference in differences.items():
        print(f"largest channel difference between the http and {mode} pictures: {difference}/255")
    common.write_json(common.output_path(args.output, f"raydata_{args.preset}.json"), {
        "machine": description, "preset": args.preset, "photos": count, "results": results,
        "largest_differences": differences,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
