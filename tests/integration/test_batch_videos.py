"""``cartoonize-batch`` on a folder holding video clips, against the served graph's jobs API."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import av

from tests import clips, photos
from tests.integration.test_batch_command import INTERRUPTIBLE, run, size_of
from tests.reports import read_report

SIDE = 128
FPS = 10
WEBM = {"container": "webm", "codec": "libvpx-vp9", "audio_codec": "libopus"}


def astronaut_clip(path: Path, frames: int, **codecs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return clips.write_clip(path, clips.camera_move(photos.astronaut(), frames, SIDE, SIDE), FPS, **codecs)


def probe(path: Path) -> tuple[int, tuple[int, int], str | None]:
    """A clip's frame count (decoded), frame size and audio codec."""
    with av.open(str(path)) as container:
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        decoded = list(container.decode(video=0))
        return len(decoded), (decoded[0].width, decoded[0].height), audio


def test_clips_and_photos_mirrored_a_broken_clip_reported_and_a_rerun_skips(base_url, tmp_path):
    source = tmp_path / "in"
    (source / "trip").mkdir(parents=True)
    astronaut_clip(source / "trip" / "hello.mp4", 10)
    astronaut_clip(source / "wave.webm", 5, **WEBM)
    (source / "trip" / "hello.jpg").write_bytes(photos.encode(photos.grace_hopper(), "JPEG", quality=90))
    (source / "broken.mov").write_bytes((source / "trip" / "hello.mp4").read_bytes()[:600])
    report = tmp_path / "report.jsonl"

    done = run(source, "-o", tmp_path / "out", "--url", base_url, "--max-side", "512", "--report", report)

    assert done.returncode == 1, done.stdout + done.stderr
    assert probe(tmp_path / "out" / "trip" / "hello.mp4") == (10, (SIDE, SIDE), "aac")
    assert probe(tmp_path / "out" / "wave.webm") == (5, (SIDE, SIDE), "opus")
    assert max(size_of(tmp_path / "out" / "trip" / "hello.png")) == 512
    summary = read_report(report)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (3, 0, 1)
    [failure] = summary["failures"]
    assert failure["input"] == "broken.mov"
    assert failure["status"] == 400 and failure["error"].startswith(("400 not_a_video", "400 corrupt_video"))
    assert not (tmp_path / "out" / "broken.mov").exists()
    assert not [path for path in (tmp_path / "out").rglob(".*")]  # no temporaries left

    again = run(source, "-o", tmp_path / "out", "--url", base_url, "--max-side", "512")

    assert again.returncode == 1
    assert "done 0, skipped 3, failed 1" in again.stdout


def logged(replica_logs: Path, request: str) -> int:
    """How many requests the Ingress logged that start with ``request`` ("DELETE /v1/jobs/")."""
    return sum(line.count(request) for path in replica_logs.glob("replica_cartoon_Ingress_*.log")
               for line in path.read_text(errors="replace").splitlines())


def wait_for_more(replica_logs: Path, request: str, before: int, timeout_s: float = 120.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (count := logged(replica_logs, request)) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def test_a_stopped_run_cancels_the_job_it_was_following(base_url, tmp_path, replica_logs):
    astronaut_clip(tmp_path / "in" / "long.mp4", 100)
    sent_before = logged(replica_logs, "POST /v1/jobs 202")
    cancels_before = logged(replica_logs, "DELETE /v1/jobs/")
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--url", base_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert wait_for_more(replica_logs, "POST /v1/jobs 202", sent_before) == sent_before + 1
    process.send_signal(signal.SIGINT)  # while it follows the job: 100 frames take longer than the logs
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stdout + stderr
    assert "interrupted: done 0" in stdout
    assert not (tmp_path / "out" / "long.mp4").exists()
    assert wait_for_more(replica_logs, "DELETE /v1/jobs/", cancels_before, 30.0) == cancels_before + 1
