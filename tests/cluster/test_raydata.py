"""``cartoonize-batch --engine ray`` on a two-node cluster: the served graph's pixels, a killed actor.

Both layouts: ``whole`` (the default on CPUs: each actor takes photos from file to file)
and ``staged`` (the default with GPUs: CPU tasks around UNet actors; a GPU is not
needed to run it, ``--layout staged`` runs it on CPUs).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ray.util.state import list_actors

from cartoon.image import codec
from cartoon.image.pipeline import Options, Pipeline
from cartoon.image.styles import StyleRegistry
from tests import photos
from tests.cluster.conftest import portrait_jpeg, serve_cluster
from tests.reports import read_report

COMMAND = str(Path(sys.executable).with_name("cartoonize-batch"))
# The pool's actors by layout: each runs the UNet.
ACTORS = {"whole": "MapWorker(MapBatches(PhotoStage))", "staged": "MapWorker(MapBatches(UNetStage))"}
# Two actors of one CPU each, half a CPU per prepare or compose task (staged): on a 1-CPU
# head and a 2-CPU worker node, so the stages spread over both nodes.
RAY_FLAGS = ["--engine", "ray", "--unet-actors", "2", "--cpus-per-actor", "1", "--cpus-per-task", "0.5",
             "--batch-size", "2"]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head and one worker node; the dashboard answers ``list_actors``."""
    with serve_cluster(tmp_path_factory.mktemp("ray"), head_cpus=1, include_dashboard=True) as cluster:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        yield cluster


def small(rgb: np.ndarray, side: int) -> bytes:
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    resized = cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    return photos.encode(resized, "JPEG", quality=90)


def write_folder(folder: Path, copies: int = 1) -> dict[str, bytes]:
    """Real photos, small: one face, two faces, another face, none; ``copies`` of each."""
    sources = {
        "portrait.jpg": portrait_jpeg(),
        "pair/two_faces.png": photos.encode(photos.two_faces()),
        "hopper.jpg": small(photos.grace_hopper(), 320),
        "no_face/coffee.jpg": small(photos.coffee(), 320),
    }
    written = {}
    for copy in range(copies):
        for name, data in sources.items():
            relative = str(Path(f"set{copy}") / name) if copies > 1 else name
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(data)
            written[relative] = data
    return written


def command(cluster, layout: str, *args) -> list[str]:
    return [COMMAND, *map(str, args), *RAY_FLAGS, "--layout", layout, "--address", cluster.address]


def run(cluster, layout: str, *args, timeout: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run(command(cluster, layout, *args), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("layout", ["whole", "staged"])
def test_a_folder_gives_the_served_pixels_and_reports_a_broken_file(two_nodes, tmp_path, layout):
    sources = write_folder(tmp_path / "in")
    (tmp_path / "in" / "pair" / "broken.jpg").write_bytes(portrait_jpeg()[:2000])
    report = tmp_path / "report.jsonl"

    # The input as a file:// URI, the output as a path: both go through pyarrow.
    done = run(two_nodes, layout, (tmp_path / "in").as_uri(), "-o", tmp_path / "out", "--report", report)

    assert done.returncode == 1, done.stdout + done.stderr
    summary = read_report(report)
    assert (summary["done"], summary["failed"]) == (len(sources), 1)
    assert summary["failures"][0]["input"] == "pair/broken.jpg"
    assert "corrupt_image" in summary["failures"][0]["error"]
    reference = Pipeline(StyleRegistry.from_directory())
    for relative, data in sources.items():
        output = codec.decode((tmp_path / "out" / relative).with_suffix(".png").read_bytes()).rgb
        expected = codec.decode(reference(data, Options()).data).rgb
        assert output.shape == expected.shape, relative
        difference = np.abs(output.astype(int) - expected.astype(int)).max()
        assert difference <= 1, f"{relative}: {difference}/255 from the in-process pipeline"
    assert not [path for path in (tmp_path / "out").rglob("*") if path.name.startswith(".")]  # no temporaries

    again = run(two_nodes, layout, tmp_path / "in", "-o", tmp_path / "out")

    assert again.returncode == 1  # the broken file fails again; the rest is skipped
    assert f"done 0, skipped {len(sources)}, failed 1" in again.stdout


def actor_pids(layout: str) -> list[int]:
    alive = [("class_name", "=", ACTORS[layout]), ("state", "=", "ALIVE")]
    return [actor.pid for actor in list_actors(filters=alive)]


@pytest.mark.parametrize("layout", ["whole", "staged"])
def test_a_killed_actor_is_restarted_and_no_photo_is_lost(two_nodes, tmp_path, layout):
    sources = write_folder(tmp_path / "in", copies=4)
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    process = subprocess.Popen(command(two_nodes, layout, tmp_path / "in", "-o", out, "--report", report),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.rglob("*.png")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    written_before = len(list(out.rglob("*.png")))
    assert process.poll() is None and 0 < written_before < len(sources), "the kill must land mid-run"
    [victim, _] = actor_pids(layout)

    os.kill(victim, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=300)

    # Ray restarts the actor; the photos it held are done again, each alone: as if nothing happened.
    assert process.returncode == 0, stdout + stderr
    summary = read_report(report)
    assert (summary["done"], summary["failed"]) == (len(sources), 0)
    assert {str(path.relative_to(out).with_suffix("")) for path in out.rglob("*.png")} == {
        str(Path(relative).with_suffix("")) for relative in sources
    }
    assert not [path for path in out.rglob("*") if path.name.startswith(".")]  # no temporaries left

    rerun = run(two_nodes, layout, tmp_path / "in", "-o", out)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"done 0, skipped {len(sources)}, failed 0" in rerun.stdout
