"""The one table of ``bash benchmarks/gpu.sh``: reads the results its steps wrote and prints them.

    python -m benchmarks.gpu_table benchmarks/results/gpu

A step that failed or was cut short shows as n/a; the table says which file each part
came from, so its raw samples can be looked at.
"""

import argparse
import json
import sys
from pathlib import Path

from benchmarks.common import fmt, markdown_table

SHARES = ("1", "0.5", "0.25")


def read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def unet_rows(results: dict | None) -> list[list]:
    """Pieces per second of the served path, one row per shape and precision, batches in the cell."""
    if not results:
        return [["head crops/s and tiles/s", "-", "n/a", "unet_sweep.json"]]
    series: dict[tuple[str, str], list[str]] = {}
    for row in results["rows"]:
        precision = row["variant"].split()[0]
        unit = "head crops/s (288 px)" if row["shape"] == "head" else "tiles/s (384 px)"
        value = fmt(row["images_per_s"], 1) if row["images_per_s"] == row["images_per_s"] else row["note"] or "n/a"
        series.setdefault((unit, precision), []).append(f"b{row['batch']}: {value}")
    return [[unit, f"{precision}, channels-last, Stylizer.run", "; ".join(cells), "unet_sweep.json"]
            for (unit, precision), cells in series.items()]


def load_rows(directory: Path) -> list[list]:
    """c=1 latency and the loaded level's throughput of configs/gpu.yaml at each Cartoonizer share."""
    rows = []
    for share in SHARES:
        name = f"load_share{share}.json"
        results = read(directory / name)
        replicas = round(1 / float(share))
        setting = f"num_gpus {share} ({replicas} Cartoonizer{'s' if replicas > 1 else ''})"
        if not results:
            rows.append(["HTTP, configs/gpu.yaml", setting, "n/a", name])
            continue
        for side, levels in results["levels"].items():
            by_concurrency = {level["concurrency"]: level for level in levels}
            single = by_concurrency.get(1)
            loaded = max(by_concurrency.values(), key=lambda level: level["concurrency"])
            rows.append([f"{side} px c=1 latency p50 / p95 (ms)", setting,
                         f"{fmt(single['p50_ms'], 0)} / {fmt(single['p95_ms'], 0)}" if single else "n/a", name])
            rows.append([f"{side} px c={loaded['concurrency']} images/s (mean batch)", setting,
                         f"{fmt(loaded['throughput'], 2)} ({fmt(loaded['mean_batch'], 1)}); "
                         f"{loaded['ok']}/{loaded['requests']} ok", name])
    return rows


def video_rows(results: dict | None) -> list[list]:
    if not results or "served job" not in results.get("results", {}):
        return [["clip frames/s, jobs API", "configs/gpu.yaml", "n/a", "video.json"]]
    job = results["results"]["served job"]
    return [[f"clip {results['clip']} frames/s, jobs API", "configs/gpu.yaml (num_gpus 0.5)",
             f"{fmt(job['fps'], 2)} ({job['frames']} frames)", "video.json"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="where benchmarks/gpu.sh wrote its results")
    args = parser.parse_args(argv)
    device = (args.directory / "nvidia-smi.csv").read_text().strip().splitlines()[-1] \
        if (args.directory / "nvidia-smi.csv").is_file() else "no GPU (dry run)"
    unet = read(args.directory / "unet_sweep.json")
    print(f"## GPU figures: `bash benchmarks/gpu.sh`\n\n{device}; {unet['device'] if unet else 'unet sweep n/a'}\n")
    rows = unet_rows(unet) + load_rows(args.directory) + video_rows(read(args.directory / "video.json"))
    print(markdown_table(["measure", "setting", "value", "from"], rows))
    return 0 if all(row[2] != "n/a" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
