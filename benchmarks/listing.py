"""``cartoonize-batch``'s planning of a very large folder: how soon the first photo is planned, and the memory.

    python -m benchmarks.listing                       # 10^6 names in 1000 folders, before and after
    python -m benchmarks.listing --names 100000 --folders 100

The folder is synthetic: a pyarrow filesystem (``SyntheticFolder``) that lists
``--folders`` folders of photo names and holds no bytes, so only the planning is
measured, not the disk. Each mode runs in a child process of its own (its own peak RSS):

- ``before``: the planning of commit 4917fac (``cartoon/batch/files.py`` as it was, read
  from git): the whole folder listed in one recursive listing, sorted, then chosen;
- ``after``: ``files.plan``, which walks a folder at a time and yields as it goes.

Printed: seconds to the first planned photo, to all of them, and the process's RSS
before planning and its peak (``ru_maxrss``).

``--modes ray ray-before`` run the Ray engine's ``run`` on the same folder, on a Ray of
their own (``--cpus`` logical CPUs, one whole-photo actor): its reads fail at once (the
folder holds no bytes), so what is measured is the feeding, not the cartoons. Each stops
``--window`` seconds after its first photo finished (or at ``--cap`` seconds with none)
and prints the seconds to the first photo, the photos finished in the window, and the
driver's peak RSS. ``ray``: the plan walked on a thread and fed as it goes
(``ray_engine.Feeder``); ``ray-before``: ``cartoon/batch/ray_engine.py`` of commit
f198d87, which made one ``ray.data.from_items`` of the whole plan first.
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
RAY_BEFORE_COMMIT = "f198d87"


class Stop(BaseException):
    """Ends a Ray mode's run from inside it (a BaseException, so the run does not report it as a failure)."""


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


def _load_before(commit: str, path: str, name: str):
    """The module at ``path`` as it was at ``commit``, as a module of its own."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=common.ROOT,
                            capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
    return module


def measure_ray(mode: str, folders: int, per_folder: int, cpus: int, window_s: float, cap_s: float) -> dict:
    """A Ray mode, in this process (the driver); see the module's docstring."""
    import ray

    from cartoon.batch import files, ray_engine
    from cartoon.image.pipeline import Options

    engine = ray_engine if mode == "ray" else _load_before(RAY_BEFORE_COMMIT, "cartoon/batch/ray_engine.py",
                                                           "ray_engine_before")
    filesystem = pafs.PyFileSystem(SyntheticFolder(folders, per_folder))
    source, target = files.Location(filesystem, "in"), files.Location(filesystem, "out")
    started = time.perf_counter()
    first: list[float] = []
    finished = [0]

    class Timed(files.Tally):
        def fail(self, relative, error, status=None):
            now = time.perf_counter()
            first[:] = first or [now - started]
            finished[0] += 1
            if now - started > first[0] + window_s:
                raise Stop
            super().fail(relative, error, status)

    def watchdog():
        time.sleep(cap_s)
        if not first:
            import _thread
            _thread.interrupt_main()

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tally = Timed()
    threading.Thread(target=watchdog, daemon=True).start()
    try:
        engine.run(files.plan(source, target, "png", False, tally), source, target, Options(),
                   engine.RaySettings(unet_actors=1), tally, [])
    except (Stop, KeyboardInterrupt):
        pass
    elapsed = time.perf_counter() - started
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "count": finished[0], "first_s": first[0] if first else None, "all_s": elapsed,
            "rss_start_mb": rss_start / 1024, "rss_peak_mb": rss_peak / 1024}


def measure(mode: str, folders: int, per_folder: int) -> dict:
    """One mode, in this process."""
    from cartoon.batch import files

    filesystem = pafs.PyFileSystem(SyntheticFolder(folders, per_folder))
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if mode == "before":
        before = _load_before(BEFORE_COMMIT, "cartoon/batch/files.py", "files_before")
        planned, _ = before.plan_location(before.Location(filesystem, "in"), before.Location(filesystem, "out"),
                                          "png", False, before.Tally())
        first = time.perf_counter() - started
        count = len(planned)
    else:
        items = files.plan(files.Location(filesystem, "in"), files.Location(filesystem, "out"), "png", False,
                           files.Tally())
        next(items)
        first = time.perf_counter() - started
        count = 1 + sum(1 for _ in items)
    elapsed = time.perf_counter() - started
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "count": count, "first_s": first, "all_s": elapsed, "rss_start_mb": rss_start / 1024,
            "rss_peak_mb": rss_peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1_000_000, help="photos in the synthetic folder")
    parser.add_argument("--folders", type=int, default=1000, help="folders they are spread over")
    parser.add_argument("--modes", nargs="+", default=["after", "before"],
                        choices=["after", "before", "ray", "ray-before"])
    parser.add_argument("--cpus", type=int, default=2, help="logical CPUs of a Ray mode's Ray")
    parser.add_argument("--window", type=float, default=60.0, help="a Ray mode's seconds after its first photo")
    parser.add_argument("--cap", type=float, default=600.0, help="a Ray mode's seconds without a first photo")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    per_folder = args.names // args.folders
    if args.child:
        row = (measure(args.child, args.folders, per_folder) if not args.child.startswith("ray") else
               measure_ray(args.child, args.folders, per_folder, args.cpus, args.window, args.cap))
        print(json.dumps(row))
        return
    rows = []
    for mode in args.modes:
        done = subprocess.run([sys.executable, "-m", "benchmarks.listing", "--names", str(args.names), "--folders",
                               str(args.folders), "--cpus", str(args.cpus), "--window", str(args.window), "--cap",
                               str(args.cap), "--child", mode], cwd=common.ROOT, capture_output=True, text=True,
                              check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.folders * per_folder} names in {args.folders} folders")
    print(f"{'mode':10} {'done':>9} {'first s':>8} {'all s':>7} {'RSS at start MB':>16} {'peak RSS MB':>12}")
    for row in rows:
        print(f"{row['mode']:10} {row['count']:>9} {fmt(row['first_s'], 2):>8} {fmt(row['all_s']):>7} "
              f"{row['rss_start_mb']:>16.0f} {row['rss_peak_mb']:>12.0f}")


if __name__ == "__main__":
    main()
