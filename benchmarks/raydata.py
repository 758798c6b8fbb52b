"""``cartoonize-batch`` side by side: through the served graph (HTTP) and through Ray Data.

    python -m benchmarks.raydata                  # CPU preset: 24 photos, 2 rounds, ~5 min on 2 cores
    python -m benchmarks.raydata --preset gpu     # one GPU node: configs/gpu.yaml against one GPU actor

The same folder (the two real portraits at a 1024 px long side, in turn) goes through
both modes, each run as a user runs it, the console script in a child process:

- ``http``: ``cartoonize-batch --url`` against the preset's Serve config deployed in this
  process (warm: every deployment ready before the clock starts);
- ``ray``: ``cartoonize-batch --engine ray`` on a Ray of its own, which it starts (the
  Ray start-up, actor start-up and model loading are inside its wall time).

Per mode and round it reports the command's wall time, its own images/s (first photo
to last, after start-up), and the steady rate between the first and the last output
file written ((n - 1) / their mtime span); the ratio ray / http of each; and how far
apart the two modes' pictures are (largest channel difference over all photos).
Rounds alternate the order of the modes.
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
from cartoon import images

COMMAND = str(Path(sys.executable).with_name("cartoonize-batch"))
MODES = ("http", "ray")
PRESETS = {
    # serve_config.yaml's layout mirrored: two UNet actors of 0.75 CPU (one torch thread
    # each), the CPU stages in the quarter CPUs left.
    "cpu": {
        "serve_config": common.SERVE_CONFIG,
        "photos": 24,
        "http": ["--concurrency", "8"],
        "ray": ["--unet-actors", "2", "--cpus-per-actor", "0.75", "--cpus-per-task", "0.25", "--batch-size", "4"],
    },
    # configs/gpu.yaml's layout mirrored: one UNet actor holding the GPU, 384 px tiles,
    # one CPU per CPU task.
    "gpu": {
        "serve_config": common.ROOT / "configs" / "gpu.yaml",
        "photos": 48,
        "http": ["--concurrency", "32"],
        "ray": ["--unet-actors", "1", "--gpus-per-actor", "1", "--cpus-per-actor", "1", "--cpus-per-task", "1",
                "--batch-size", "16", "--tile", "384"],
    },
}
RATE = re.compile(r"done (\d+), skipped \d+, failed (\d+); ([\d.]+) images/s")


def write_folder(folder: Path, count: int) -> None:
    portraits = common.portraits([1024])
    for index in range(count):
        path = folder / f"part{index % 2}" / f"photo{index:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(portraits[index % len(portraits)].data)


def run_command(args: list[str], count: int) -> dict:
    """Runs the console script; its wall time, own rate and the outputs' steady rate."""
    start = time.perf_counter()
    done = subprocess.run([COMMAND, *args], capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    match = RATE.search(done.stdout)
    if done.returncode != 0 or not match or int(match.group(1)) != count:
        raise SystemExit(f"cartoonize-batch {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    output = Path(args[args.index("-o") + 1])
    stamps = sorted(path.stat().st_mtime for path in output.rglob("*.png"))
    return {"wall_s": wall_s, "own_rate": float(match.group(3)), "steady_rate": (len(stamps) - 1) / (stamps[-1] - stamps[0])}


def largest_difference(first: Path, second: Path) -> int:
    """The largest channel difference between same-named pictures of two output trees."""
    largest = 0
    for path in sorted(first.rglob("*.png")):
        a = images.decode(path.read_bytes()).rgb.astype(int)
        b = images.decode((second / path.relative_to(first)).read_bytes()).rgb.astype(int)
        largest = max(largest, int(np.abs(a - b).max()))
    return largest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.raydata", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--photos", type=int, help="photos in the folder (preset: cpu 24, gpu 48)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", help="results JSON (default benchmarks/results/raydata_PRESET.json)")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    count = args.photos or preset["photos"]
    config = common.load_serve_config(preset["serve_config"])
    description = common.machine_description()
    work = Path(tempfile.mkdtemp(prefix="raydata-bench"))
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    try:
        write_folder(work / "in", count)
        for round_index in range(args.rounds):
            for mode in MODES if round_index % 2 == 0 else MODES[::-1]:
                output = work / f"{mode}{round_index}"
                flags = [str(work / "in"), "-o", str(output), *preset[mode]]
                if mode == "http":
                    with common.served_graph(config) as url:
                        result = run_command([*flags, "--url", url], count)
                else:
                    result = run_command([*flags, "--engine", "ray"], count)
                results[mode].append(result)
                print(f"round {round_index + 1} {mode}: {result['wall_s']:.1f} s wall, "
                      f"{result['own_rate']:.2f} img/s own, {result['steady_rate']:.2f} img/s steady",
                      file=sys.stderr, flush=True)
        difference = largest_difference(work / "http0", work / "ray0")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(mode: str, key: str) -> float:
        return common.median([result[key] for result in results[mode]])

    rows = [[mode, count, fmt(median(mode, "wall_s")), fmt(median(mode, "own_rate"), 2),
             fmt(median(mode, "steady_rate"), 2),
             " / ".join(fmt(result["steady_rate"], 2) for result in results[mode])] for mode in MODES]
    rows.append(["ray / http", "", fmt(median("http", "wall_s") / median("ray", "wall_s"), 2) + "x faster",
                 fmt(median("ray", "own_rate") / median("http", "own_rate"), 2) + "x",
                 fmt(median("ray", "steady_rate") / median("http", "steady_rate"), 2) + "x", ""])
    print(f"\n{description}; preset {args.preset}, {args.rounds} rounds (medians)\n")
    print(common.markdown_table(
        ["mode", "photos", "wall s", "images/s (own)", "images/s (steady)", "steady, per round"], rows))
    print(f"\nlargest channel difference between the two modes' pictures: {difference}/255")
    common.write_json(common.output_path(args.output, f"raydata_{args.preset}.json"), {
        "machine": description, "preset": args.preset, "photos": count, "results": results,
        "largest_difference": difference,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
