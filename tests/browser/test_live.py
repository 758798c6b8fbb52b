"""The Live tab in Chromium with a fake camera (tests/browser/conftest.py: a clip of Grace
Hopper's portrait): the cartoon beside the camera, style and strength changed while it
runs, a PNG snapshot, a WebM recording, a phone layout, and a full service explained."""

import json
import time

from PIL import Image
from playwright.sync_api import expect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.browser.conftest import SLOW, open_page

PHONE = {"width": 390, "height": 844}
SESSIONS_TOTAL = 8  # serve_config.yaml's live_sessions_total (the AppArgs default)


def frames_drawn(page) -> int:
    return int(page.eval_on_selector("#live-cartoon", "canvas => canvas.dataset.frames || '0'"))


def wait_for(condition, timeout_s: float = SLOW / 1000) -> None:
    """Polls ``condition`` (the page's CSP forbids Playwright's wait_for_function)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        time.sleep(0.2)


def settings_in_use(page) -> dict:
    return json.loads(page.eval_on_selector("#live-cartoon", "canvas => canvas.dataset.settings || '{}'"))


def test_the_camera_is_cartoonized_live_with_style_changes_snapshot_and_recording(open_context, service_url):
    page = open_page(open_context(), service_url)
    page.click("#tab-live")
    page.click("#live-start")
    wait_for(lambda: frames_drawn(page) >= 3)
    expect(page.locator("#live-stats")).to_contain_text("frames/s")
    assert float(page.eval_on_selector("#live-stats", "stats => stats.dataset.fps")) > 0
    first = page.eval_on_selector("#live-cartoon", "canvas => [canvas.width, canvas.height]")
    assert first == [352, 288]  # the fake camera's 352x288 frames at the 480 px size: never enlarged

    page.check('input[name="style"][value="comic"]')
    page.locator("#strength").fill("0.5")
    page.locator("#strength").dispatch_event("change")
    assert settings_in_use(page)["format"] == "jpeg" and settings_in_use(page)["size"] == 480
    # Changed on the running session: no new session (the page opens one after a 4000 close).
    wait_for(lambda: settings_in_use(page)["style"] == "comic" and settings_in_use(page)["strength"] == 0.5, 30)
    assert page.eval_on_selector("#live-cartoon", "canvas => canvas.dataset.sessions") == "1"
    drawn = frames_drawn(page)
    wait_for(lambda: frames_drawn(page) >= drawn + 2)  # frames keep coming after the change

    with page.expect_download() as snapshot:
        page.click("#live-snapshot")
    picture = Image.open(snapshot.value.path())
    assert (picture.format, picture.size) == ("PNG", (352, 288))
    assert len(set(picture.convert("RGB").getdata())) > 50  # a drawing, not an empty canvas

    page.click("#live-record")
    drawn = frames_drawn(page)
    wait_for(lambda: frames_drawn(page) >= drawn + 3)
    page.click("#live-record")
    expect(page.locator("#live-recording")).to_be_visible()
    with page.expect_download() as recording:
        page.click("#live-recording")
    assert recording.value.suggested_filename == "cartoon-live.webm"
    assert open(recording.value.path(), "rb").read(4) == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file

    page.click("#live-stop")
    expect(page.locator("#live-start")).to_be_enabled()


def test_on_a_phone_camera_and_cartoon_sit_side_by_side_within_the_screen(open_context, service_url):
    page = open_page(open_context(viewport=PHONE, is_mobile=True, has_touch=True), service_url)
    page.click("#tab-live")
    page.click("#live-start")
    wait_for(lambda: frames_drawn(page) >= 1)
    camera = page.locator("#live-camera-view").bounding_box()
    cartoon = page.locator("#live-cartoon").bounding_box()
    assert abs(camera["y"] - cartoon["y"]) < 2 and camera["x"] + camera["width"] <= cartoon["x"]
    assert cartoon["x"] + cartoon["width"] <= PHONE["width"]
    assert page.eval_on_selector("html", "html => html.scrollWidth") <= PHONE["width"]
    page.click("#live-stop")


def test_a_full_service_is_explained_on_the_page(open_context, service_url):
    url = service_url.replace("http://", "ws://") + "/v1/live"
    holders = []
    try:
        # Until the total is held: one refused by a full replica while the other had room is let go.
        for _ in range(3 * SESSIONS_TOTAL):
            if len(holders) == SESSIONS_TOTAL:
                break
            holder = connect(url, open_timeout=60)
            holder.send("{}")
            try:
                while json.loads(holder.recv(timeout=60))["type"] != "ready":
                    pass
                holders.append(holder)
            except ConnectionClosed:
                holder.close()
        page = open_page(open_context(), service_url)
        page.click("#tab-live")
        page.click("#live-start")
        expect(page.locator("#live-reason")).to_contain_text("the service is full", timeout=SLOW)
        expect(page.locator("#live-start")).to_be_enabled()
    finally:
        for holder in holders:
            holder.close()
