"""``cartoonize-batch`` against the served graph: the console script, run as a user runs it."""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from cartoon.batch import ray_engine
from tests import photos
from tests.reports import read_report

COMMAND = str(Path(sys.executable).with_name("cartoonize-batch"))
# A folder whose sitecustomize makes a photo starting with POISON kill its process.
POISON_HOOK = Path(__file__).with_name("poison")
POISON = b"POISON"


def run(*args, timeout: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` real photos (astronaut, Grace Hopper, two faces, in turn) in two subfolders."""
    makers = [photos.astronaut, photos.grace_hopper, photos.two_faces]
    paths = []
    for index in range(count):
        path = folder / f"part{index % 2}" / f"photo{index:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = makers[index % len(makers)]()
        path.write_bytes(photos.encode(rgb, "JPEG", quality=90))
        paths.append(path)
    return paths


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        image.load()  # a truncated file fails here
        return image.size


def test_folder_mirrored_and_a_corrupt_file_reported(base_url, tmp_path):
    sources = write_photos(tmp_path / "in", 3)
    corrupt = tmp_path / "in" / "part1" / "broken.jpg"
    corrupt.write_bytes(sources[0].read_bytes()[:3000])
    (tmp_path / "in" / "notes.txt").write_text("not a photo")
    report = tmp_path / "failures.jsonl"

    done = run(tmp_path / "in", "-o", tmp_path / "out", "--url", base_url, "--report", report)

    assert done.returncode == 1, done.stdout + done.stderr
    for source in sources:
        output = tmp_path / "out" / source.relative_to(tmp_path / "in").with_suffix(".png")
        assert size_of(output) == size_of(source)
    assert not (tmp_path / "out" / "part1" / "broken.png").exists()
    assert "ignored 1 files" in done.stdout
    summary = read_report(report)
    assert (summary["done"], summary["skipped"], summary["failed"], summary["retries"]) == (3, 0, 1, 0)
    [failure] = summary["failures"]
    assert failure["input"] == "part1/broken.jpg"
    assert failure["status"] == 400 and "corrupt_image" in failure["error"]
    assert "done 3, skipped 0, failed 1" in done.stdout


STOPPED_RUN_PHOTOS = 20  # the run is still going when the signal lands, however fast the service
# The console script's entry point with Ctrl-C restored. A shell without job control
# (a CI runner, `cmd &`) starts its children with SIGINT ignored, and Python then never
# raises KeyboardInterrupt, so the signal below would be lost; a terminal's Ctrl-C is
# what it stands for.
INTERRUPTIBLE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from cartoon.batch.command import main; sys.exit(main())"
)


def test_stopped_run_resumes(base_url, tmp_path):
    write_photos(tmp_path / "in", STOPPED_RUN_PHOTOS)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE, str(tmp_path / "in"), "-o", str(out), "--url", base_url,
         "--concurrency", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not list(out.rglob("*.png")) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert "interrupted" in stdout
    finished = sorted(out.rglob("*.png"))
    assert 1 <= len(finished) < STOPPED_RUN_PHOTOS
    assert not [path for path in out.rglob("*") if path.is_file() and path.suffix != ".png"]  # no temporaries
    stamps = {path: path.stat().st_mtime_ns for path in finished}
    for path in finished:
        size_of(path)

    resumed = run(tmp_path / "in", "-o", out, "--url", base_url)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"done {STOPPED_RUN_PHOTOS - len(finished)}, skipped {len(finished)}, failed 0" in resumed.stdout
    assert len(list(out.rglob("*.png"))) == STOPPED_RUN_PHOTOS
    assert {path: path.stat().st_mtime_ns for path in finished} == stamps


def test_503_answers_are_retried(base_url, tmp_path):
    """The /overloaded copy of the app takes one image at a time and queues one: six in
    flight get 503 with Retry-After, and every one of them must still end up done."""
    write_photos(tmp_path / "in", 6)
    report = tmp_path / "report.jsonl"

    done = run(tmp_path / "in", "-o", tmp_path / "out", "--url", f"{base_url}/overloaded",
               "--concurrency", "6", "--max-side", "256", "--format", "jpeg", "--report", report)

    assert done.returncode == 0, done.stdout + done.stderr
    summary = read_report(report)
    assert (summary["done"], summary["failed"]) == (6, 0)
    assert summary["retries"] > 0
    assert all(max(size_of(path)) == 256 for path in (tmp_path / "out").rglob("*.jpg"))


@pytest.mark.parametrize("extra, message", [
    (["--style", "no-such-style"], "unknown style"),
    (["--strength", "2"], "--strength"),
    (["--concurrency", "0"], "--concurrency"),
])
def test_usage_errors_exit_2(base_url, tmp_path, extra, message):
    write_photos(tmp_path / "in", 1)

    refused = run(tmp_path / "in", "-o", tmp_path / "out", "--url", base_url, *extra)

    assert refused.returncode == 2
    assert message in refused.stderr
    assert not (tmp_path / "out").exists()


def test_missing_folder_exits_2(tmp_path):
    refused = run(tmp_path / "nowhere", "-o", tmp_path / "out")
    assert refused.returncode == 2
    assert "is not a folder" in refused.stderr


def test_ray_engine_retries_a_photo_that_kills_its_worker_alone_then_reports_it(tmp_path):
    """A photo that kills its worker (tests/integration/poison) takes the photos in flight
    with it: they are done alone, and it is reported as poison, once. Ray's own retries
    would never end. With Ray Data on a Ray of the command's own, on this machine."""
    sources = write_photos(tmp_path / "in", 5)
    (tmp_path / "in" / "part0" / "poison.jpg").write_bytes(POISON + sources[0].read_bytes())
    report = tmp_path / "report.jsonl"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(POISON_HOOK), os.environ.get("PYTHONPATH")]))}

    done = subprocess.run(
        [COMMAND, tmp_path / "in", "-o", tmp_path / "out", "--report", report, "--engine", "ray",
         "--unet-actors", "1", "--batch-size", "2", "--max-side", "256"],
        capture_output=True, text=True, timeout=420, env=environment)

    assert done.returncode == 1, done.stdout + done.stderr
    summary = read_report(report)
    assert (summary["done"], summary["failed"]) == (len(sources), 1)
    [failure] = summary["failures"]
    assert (failure["input"], failure["error"]) == ("part0/poison.jpg", ray_engine.POISON)
    for source in sources:
        assert (tmp_path / "out" / source.relative_to(tmp_path / "in")).with_suffix(".png").exists()
    assert not [path for path in (tmp_path / "out").rglob("*") if path.name.startswith(".")]  # no temporaries
