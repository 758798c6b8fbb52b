"""``cartoonize-batch --engine ray`` on a very large folder: how soon the first photo starts, and the driver's memory.

    python -m benchmarks.listing                       # 10^6 names, before and after, ~5 min on 2 cores
    python -m benchmarks.listing --names 100000 --taken 5000

The folder is synthetic: a pyarrow filesystem (``SyntheticFolder``) that lists
``--folders`` folders of photo names and holds no bytes, so only the listing is
measured, not the disk. Each mode runs in a child process of its own (its own peak
RSS), on a Ray of its own (2 CPUs), started before the clock starts:

- ``before``: the planning of commit 4917fac (``cartoon/batch/files.py`` as it was, read
  from git): the whole folder listed and sorted, a row per photo, then
  ``ray.data.from_items`` in blocks of 4 rows, as the Ray engine did;
- ``after``: ``files.plan`` streamed by the Ray engine's planning thread
  (``ray_engine._feed``) through ``Listing``.

In both, a stand-in stage (it passes the rows on) takes the place of the photo work,
and the driver takes ``--taken`` rows out. Printed: seconds to the first row out, to
``--taken`` rows, the driver's RSS before planning and its peak (``ru_maxrss``).
"""

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import PurePosixPath

import pyarrow.fs as pafs

from benchmarks import common
from benchmarks.common import fmt

BEFORE_COMMIT = "4917fac"


class SyntheticFolder(pafs.FileSystemHandler):
    """``in/`` of ``folders`` folders of ``per_folder`` empty ``.jpg`` names each; ``out/`` empty."""

    def __init__(self, folders: int, per_folder: int):
        self.folders, self.per_folder = folders, per_folder

    def __reduce__(self):
        return SyntheticFolder, (self.folders, self.per_folder)

    def _folder_names(self) -> list[str]:
        return [f"in/f{index:05d}" for index in range(self.folders)]

    def _files(self, folder: str) -> list[pafs.FileInfo]:
        return [pafs.FileInfo(f"{folder}/p{index:06d}.jpg", pafs.FileType.File, size=0)
                for index in range(self.per_folder)]

    def _info(self, path: str) -> pafs.FileInfo:
        parts = PurePosixPath(path).parts
        if path in ("in", "") or (len(parts) == 2 and parts[0] == "in" and parts[1].startswith("f")):
            return pafs.FileInfo(path, pafs.FileType.Directory)
        if len(parts) == 3 and parts[0] == "in":
            return pafs.FileInfo(path, pafs.FileType.File, size=0)
        return pafs.FileInfo(path, pafs.FileType.NotFound)

    def get_type_name(self):
        return "synthetic"

    def equals(self, other):
        return isinstance(other, SyntheticFolder) and (other.folders, other.per_folder) == (self.folders, self.per_folder)

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return [self._info(path) for path in paths]

    def get_file_info_selector(self, selector):
        base = selector.base_dir.rstrip("/")
        if base == "in":
            folders = [pafs.FileInfo(name, pafs.FileType.Directory) for name in self._folder_names()]
            if not selector.recursive:
                return folders
            return [info for folder in folders for info in [folder, *self._files(folder.path)]]
        if self._info(base).type == pafs.FileType.Directory and base.startswith("in/"):
            return self._files(base)
        if selector.allow_not_found:
            return []
        raise FileNotFoundError(base)

    def _unused(self, *args, **kwargs):
        raise NotImplementedError("the synthetic folder is only listed")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _unused
    move = copy_file = open_input_stream = open_input_file = open_output_stream = open_append_stream = _unused


def _passed_on(batch: dict) -> dict:
    return {"relative": batch["relative"]}


def _load_before_files():
    """``cartoon/batch/files.py`` as it was at BEFORE_COMMIT, as a module of its own."""
    source = subprocess.run(["git", "show", f"{BEFORE_COMMIT}:cartoon/batch/files.py"], cwd=common.ROOT,
                            capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("files_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{BEFORE_COMMIT}:cartoon/batch/files.py", "exec"), module.__dict__)
    return module


def measure(mode: str, folders: int, per_folder: int, taken: int) -> dict:
    """One mode, in this process: the clock starts at planning; Ray is up before it."""
    import ray

    from cartoon.batch import files, ray_engine

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    filesystem = pafs.PyFileSystem(SyntheticFolder(folders, per_folder))
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if mode == "before":
        before = _load_before_files()
        source, target = before.Location(filesystem, "in"), before.Location(filesystem, "out")
        planned, _ = before.plan_location(source, target, "png", False, before.Tally())
        rows = [{"relative": str(relative), "source": source.join(relative), "target": target.join(output)}
                for relative, output in planned]
        photos = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // ray_engine.ROWS_PER_BLOCK)))
        back = None
    else:
        source, target = files.Location(filesystem, "in"), files.Location(filesystem, "out")
        planned = files.plan(source, target, "png", False, files.Tally())
        ledger, queue = ray_engine.Ledger(ray_engine.IN_FLIGHT_ROWS), ray.util.queue.Queue()
        threading.Thread(target=ray_engine._feed, daemon=True, args=(
            planned, source, target, queue, ledger, files.Tally(), ray_engine.tqdm(disable=True))).start()
        photos = ray.data.read_datasource(ray_engine.Listing(queue), override_num_blocks=1)
        back = ledger.back
    first = None
    for count, row in enumerate(photos.map_batches(_passed_on, batch_size=ray_engine.ROWS_PER_BLOCK).iter_rows(), 1):
        if back is not None:
            back(row["relative"])
        if first is None:
            first = time.perf_counter() - started
        if count == taken:
            break
    elapsed = time.perf_counter() - started
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ray.shutdown()
    return {"mode": mode, "first_s": first, "taken_s": elapsed, "rss_start_mb": rss_start / 1024,
            "rss_peak_mb": rss_peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1_000_000, help="photos in the synthetic folder")
    parser.add_argument("--folders", type=int, default=1000, help="folders they are spread over")
    parser.add_argument("--taken", type=int, default=20_000, help="rows the driver takes out")
    parser.add_argument("--modes", nargs="+", default=["after", "before"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    per_folder = args.names // args.folders
    if args.child:
        print(json.dumps(measure(args.child, args.folders, per_folder, args.taken)))
        return
    rows = []
    for mode in args.modes:
        done = subprocess.run([sys.executable, "-m", "benchmarks.listing", "--names", str(args.names), "--folders",
                               str(args.folders), "--taken", str(args.taken), "--child", mode],
                              cwd=common.ROOT, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.folders * per_folder} names in {args.folders} folders; {args.taken} rows taken out")
    print(f"{'mode':8} {'first row s':>12} {'taken s':>9} {'RSS at start MB':>16} {'peak RSS MB':>12}")
    for row in rows:
        print(f"{row['mode']:8} {fmt(row['first_s']):>12} {fmt(row['taken_s']):>9} "
              f"{row['rss_start_mb']:>16.0f} {row['rss_peak_mb']:>12.0f}")


if __name__ == "__main__":
    main()
