"""The video tab in Chromium against the served graph: a real clip in, its cartoon played
beside it, a job followed across a reload and cancelled."""

import re
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from playwright.sync_api import expect

from tests import clips
from tests.browser.conftest import SLOW, open_page

FPS = 10
# 4 s: long enough that the page polls the job while it runs (700 ms apart) on a fast
# machine too, where 15 frames once went from queued to done between two polls.
FRAMES = 40
CLIP_S = FRAMES / FPS
LONG_FRAMES = 80  # still running when it is cancelled
# Grace Hopper's portrait clip: her face, about 110 px wide, gets the face pass.
WIDTH, HEIGHT = 288, 352


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return clips.portrait_clip(tmp_path_factory.mktemp("clips") / "hopper.mp4", frames=FRAMES, fps=FPS)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return clips.portrait_clip(tmp_path_factory.mktemp("clips") / "long.webm", frames=LONG_FRAMES, fps=FPS,
                               container="webm", codec="libvpx-vp9", audio_codec="libopus")


def media(page, selector: str) -> dict:
    return page.eval_on_selector(selector, """video => ({
        duration: video.duration, readyState: video.readyState, width: video.videoWidth,
        height: video.videoHeight, time: video.currentTime, paused: video.paused,
        audioBytes: video.webkitAudioDecodedByteCount, error: video.error && video.error.message})""")


def wait_for(condition, timeout_s: float = 30.0) -> None:
    """Polls ``condition`` until it holds (the page's CSP forbids Playwright's
    wait_for_function, which evaluates a string)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        time.sleep(0.1)


def shows(text: str, progress: dict, total: int) -> bool:
    """Whether a progress line says what the service's progress says: the frames, the
    frame rate to its one decimal, and an ETA when the service gave one."""
    frames = re.match(rf"(\d+) of {total} frames", text)
    if not frames or int(frames[1]) != progress["frames_done"]:
        return False
    rate = re.search(r" · ([\d.]+) frames/s", text)
    if progress["fps"] and not (rate and abs(float(rate[1]) - progress["fps"]) <= 0.051):
        return False
    return progress["eta_s"] is None or bool(re.search(r" · about \d+ (s|min \d+ s) left$", text))


def decoded(path: Path) -> tuple[list[np.ndarray], str | None]:
    """A video file's frames (RGB) and its audio codec."""
    with av.open(str(path)) as container:
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)], audio


def test_clip_cartoonized_with_progress_and_played_beside_the_clip(open_context, service_url, clip, screenshot):
    page = open_page(open_context(), service_url)
    page.focus("#tab-single")
    page.keyboard.press("End")  # the tabs' keyboard: End selects the last one (Live),
    page.keyboard.press("ArrowLeft")  # and the arrow the one before it (Video)
    expect(page.locator("#panel-video")).to_be_visible()
    page.set_input_files("#video-file", clip)
    expect(page.locator("#status")).to_have_text("Clip chosen: hopper.mp4. Press Cartoonize the clip.")
    wait_for(lambda: media(page, "#video-before")["readyState"] >= 1)
    assert media(page, "#video-before")["duration"] == pytest.approx(CLIP_S, abs=0.1)
    page.check('input[name="style"][value="toon"]')
    # Every text the progress line shows, as it changes.
    page.evaluate("""() => {
        window.progressSeen = [];
        const line = document.getElementById("video-progress-text");
        const bar = document.getElementById("video-progress");
        new MutationObserver(() => window.progressSeen.push([line.textContent, bar.value, bar.max]))
            .observe(line, { childList: true, characterData: true, subtree: true });
    }""")

    polls = []
    page.on("response", lambda response: polls.append(response) if re.search(r"/v1/jobs/\w+$", response.url) else None)
    with page.expect_request(lambda request: "/v1/jobs?" in request.url) as sent:
        page.click("#video-run")
    assert "style=toon" in sent.value.url and "format=mp4" in sent.value.url and "strength=0.7" in sent.value.url
    expect(page.locator("#video-after-figure")).to_be_visible(timeout=SLOW)
    expect(page.locator("#status")).to_have_text(f"Done: hopper.mp4 is cartoonized ({FRAMES} frames).")
    expect(page.locator("#video-progress-text")).to_have_text(f"Done: {FRAMES} frames")

    seen = page.evaluate("window.progressSeen")
    counted = [value / maximum for text, value, maximum in seen if f" of {FRAMES} frames" in text]
    assert counted and counted == sorted(counted)  # the bar never goes back
    assert seen[-1][1:] == [1, 1]  # full when done
    # Each running answer of the service, as the page showed it.
    texts = {text for text, _, _ in seen}
    for job in (response.json() for response in polls):
        if job["state"] == "running":
            assert any(shows(text, job["progress"], FRAMES) for text in texts), (job, texts)

    wait_for(lambda: media(page, "#video-after")["readyState"] >= 4)
    result = media(page, "#video-after")
    assert result["error"] is None
    assert result["duration"] == pytest.approx(CLIP_S, abs=0.1)
    assert (result["width"], result["height"]) == (WIDTH, HEIGHT)
    page.click("#video-play-both")
    wait_for(lambda: media(page, "#video-after")["time"] > 0.5)
    assert media(page, "#video-after")["audioBytes"] > 0  # its sound was decoded as it played
    assert media(page, "#video-before")["time"] > 0.3

    with page.expect_download() as download:
        page.click("#video-download")
    assert download.value.suggested_filename == "hopper.mp4"
    cartoon, audio = decoded(Path(download.value.path()))
    source, _ = decoded(clip)
    assert len(cartoon) == len(source) == FRAMES and audio == "aac"
    # A cartoon, not the clip handed back: every frame changed, by a margin far over codec noise.
    assert min(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(cartoon, source)) > 5

    page.eval_on_selector_all("video", "videos => videos.forEach(video => { video.pause(); video.currentTime = 0.75; })")
    wait_for(lambda: media(page, "#video-after")["readyState"] >= 2 and media(page, "#video-before")["readyState"] >= 2)
    screenshot(page, "page-video.png")


def test_job_followed_across_a_reload_then_cancelled(open_context, service_url, long_clip):
    page = open_page(open_context(), service_url)
    page.click("#tab-video")
    page.set_input_files("#video-file", long_clip)
    page.select_option("#video-format", "webm")  # the clip's Opus sound goes into WebM as it is
    with page.expect_response(lambda response: response.url.split("?")[0].endswith("/v1/jobs")) as answered:
        page.click("#video-run")
    assert answered.value.status == 202
    job_id = answered.value.headers["location"].rsplit("/", 1)[1]
    expect(page.locator("#status")).to_have_text("long.webm is queued.")

    page.reload()
    expect(page.locator("#panel-video")).to_be_visible()
    expect(page.locator("#status")).to_contain_text("Following long.webm again")
    expect(page.locator("#video-progress-text")).to_contain_text(f" of {LONG_FRAMES} frames", timeout=SLOW)
    expect(page.locator("#video-cancel")).to_be_enabled()
    with page.expect_request(lambda request: request.method == "DELETE") as deleted:
        page.click("#video-cancel")
    assert deleted.value.url.endswith(f"/v1/jobs/{job_id}")
    expect(page.locator("#status")).to_have_text("Cancelled: long.webm.")
    expect(page.locator("#video-progress-text")).to_contain_text("Cancelled after")
    expect(page.locator("#video-run")).to_be_disabled()  # the clip was not kept across the reload
    expect(page.locator("#video-cancel")).to_be_disabled()

    job = httpx.get(f"{service_url}/v1/jobs/{job_id}", timeout=30).json()
    assert job["state"] == "cancelled"
    assert job["progress"]["frames_done"] < job["progress"]["frames_total"] == LONG_FRAMES
    page.reload()  # a finished job is not followed again
    expect(page.locator("#panel-video")).to_be_hidden()


def test_files_that_are_not_clips_get_clear_messages(open_context, service_url, tmp_path):
    page = open_page(open_context(), service_url)
    page.click("#tab-video")
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list")
    page.set_input_files("#video-file", notes)
    expect(page.locator("#status")).to_have_text("notes.txt is not a video clip: choose an MP4, MOV, WebM or MKV file.")
    expect(page.locator("#video-run")).to_be_disabled()

    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"shopping list, not a video\n" * 40)
    page.set_input_files("#video-file", fake)
    page.click("#video-run")
    refused = httpx.post(f"{service_url}/v1/jobs", content=fake.read_bytes(),
                         headers={"Content-Type": "video/mp4"}, timeout=60)
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "not_a_video")
    message = refused.json()["error"]["message"]
    expect(page.locator("#status")).to_have_text(f"Failed: {message}", timeout=SLOW)
    expect(page.locator("#video-run")).to_be_enabled()
