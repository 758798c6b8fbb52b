"""The web page in a real browser (Chromium) against the served graph."""

import io
import json
import time
import zipfile

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests import photos
from tests.browser.conftest import SLOW, open_page, style_count

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}


def decoded_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def api_message(url: str, data: bytes) -> str:
    """What the API itself says about these bytes, for comparing with the page's message."""
    return httpx.post(f"{url}/v1/cartoonize", content=data, timeout=120).json()["error"]["message"]


def statuses(page) -> list[str]:
    return page.locator("#batch-list li").evaluate_all("rows => rows.map(row => row.dataset.status)")


def test_one_photo_end_to_end(open_context, service_url, photo_dir, screenshot):
    page = open_page(open_context(), service_url)
    expect(page.locator("#strength")).to_have_value("0.7")
    expect(page.locator("#size")).to_have_value("1024")

    page.set_input_files("#single-file", photo_dir / "people" / "astronaut.png")
    expect(page.locator(".style-option .preview img")).to_have_count(style_count(service_url), timeout=SLOW)
    page.check('input[name="style"][value="sketch"]')
    page.fill("#strength", "1")
    expect(page.locator("#strength-value")).to_have_text("1.00")
    with page.expect_request(lambda request: "/v1/cartoonize?" in request.url) as sent:
        page.click("#single-run")
    assert "style=sketch" in sent.value.url and "strength=1&" in sent.value.url

    expect(page.locator("#single-result")).to_be_visible(timeout=SLOW)
    expect(page.locator("#single-info")).to_contain_text("1 face found")
    expect(page.locator("#status")).to_contain_text("Done: 1 face found")
    page.focus("#compare-position")
    page.keyboard.press("Home")
    assert page.eval_on_selector("#compare", "box => box.style.getPropertyValue('--position')") == "0%"
    page.keyboard.press("ArrowRight")
    assert page.eval_on_selector("#compare", "box => box.style.getPropertyValue('--position')") == "1%"
    page.fill("#compare-position", "50")
    page.dispatch_event("#compare-position", "input")
    with page.expect_download() as download:
        page.click("#single-download")
    assert download.value.suggested_filename == "astronaut.png"
    assert decoded_size(open(download.value.path(), "rb").read()) == (512, 512)
    screenshot(page, "page-desktop.png")


def test_batch_of_good_and_bad_files_kept_across_reload(open_context, service_url, photo_dir, screenshot):
    page = open_page(open_context(), service_url)
    page.click("#tab-batch")
    page.set_input_files("#batch-folder", photo_dir)

    rows = page.locator("#batch-list li")
    expect(rows).to_have_count(4)
    expect(page.locator("#batch-count")).to_have_text("4 of 4 finished: 2 done, 2 failed", timeout=SLOW)
    expect(page.locator("#status")).to_contain_text("Batch finished: 2 done, 2 failed")
    by_name = {row.locator(".name").inner_text(): row for row in rows.all()}
    assert sorted(by_name) == ["album/notes.jpg", "album/people/astronaut.png", "album/people/hopper.jpg",
                               "album/truncated.jpg"]
    for name in ("album/people/astronaut.png", "album/people/hopper.jpg"):
        expect(by_name[name]).to_have_attribute("data-status", "done")
        expect(by_name[name].locator(".detail")).to_contain_text("1 face")
    for name in ("album/notes.jpg", "album/truncated.jpg"):
        expect(by_name[name]).to_have_attribute("data-status", "failed")
        expected = api_message(service_url, (photo_dir.parent / name).read_bytes())
        expect(by_name[name].locator(".detail")).to_have_text(expected)
    screenshot(page, "page-batch.png")

    def zip_entries() -> dict[str, tuple[int, int]]:
        with page.expect_download() as download:
            page.click("#batch-zip")
        assert download.value.suggested_filename == "cartoons.zip"
        with zipfile.ZipFile(download.value.path()) as archive:
            assert archive.testzip() is None  # every CRC matches
            return {name: decoded_size(archive.read(name)) for name in archive.namelist()}

    expected_zip = {"album/people/astronaut.png": (512, 512), "album/people/hopper.png": (512, 600)}
    assert zip_entries() == expected_zip

    page.reload()
    expect(rows).to_have_count(4)
    expect(page.locator("#batch-count")).to_have_text("4 of 4 finished: 2 done, 2 failed")
    assert sorted(statuses(page)) == ["done", "done", "failed", "failed"]
    page.click("#tab-batch")
    assert zip_entries() == expected_zip


def test_503_with_retry_after_is_waited_out(open_context, service_url, photo_dir):
    page = open_page(open_context(), service_url)
    answered = []

    def busy_once(route):
        answered.append(time.monotonic())
        if len(answered) == 1:
            route.fulfill(status=503, headers={"Retry-After": "2"}, content_type="application/json",
                          body=json.dumps({"error": {"code": "overloaded", "message": "at capacity"}}))
        else:
            route.continue_()

    page.route(lambda url: "/v1/cartoonize?" in url, busy_once)
    page.click("#tab-batch")
    page.set_input_files("#batch-files", photo_dir / "people" / "hopper.jpg")

    row = page.locator("#batch-list li")
    expect(row).to_have_attribute("data-status", "waiting")
    expect(row.locator(".detail")).to_contain_text("service busy")
    expect(row).to_have_attribute("data-status", "done", timeout=SLOW)
    assert len(answered) == 2
    assert answered[1] - answered[0] >= 2.0


def test_cancel_then_retry(open_context, service_url, photo_dir, tmp_path):
    copies = []
    for index in range(6):
        copy = tmp_path / f"copy{index}.jpg"
        copy.write_bytes((photo_dir / "people" / "hopper.jpg").read_bytes())
        copies.append(copy)
    page = open_page(open_context(), service_url)
    page.select_option("#size", "512")
    page.click("#tab-batch")
    page.set_input_files("#batch-files", copies)
    page.click("#batch-cancel")

    expect(page.locator("#status")).to_contain_text("Batch finished", timeout=SLOW)
    states = statuses(page)
    assert set(states) <= {"cancelled", "done"} and states.count("cancelled") >= 3

    page.click("#batch-retry")
    expect(page.locator("#batch-count")).to_have_text("6 of 6 finished: 6 done, 0 failed", timeout=SLOW)


def test_asks_for_an_api_key_on_401(open_context, service_url):
    context = open_context()
    sent = []

    def guarded(route):
        sent.append(route.request.headers.get("authorization"))
        if route.request.headers.get("authorization") == "Bearer sesame":
            route.continue_()
        else:
            route.fulfill(status=401, content_type="application/json",
                          body=json.dumps({"error": {"code": "unauthorized", "message": "an API key is needed"}}))

    context.route("**/v1/**", guarded)
    page = context.new_page()
    page.goto(f"{service_url}/")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#key-reason")).to_have_text("This service needs an API key.")
    page.fill("#key-input", "wrong")
    page.click('#key-dialog button[value="ok"]')
    expect(page.locator("#key-reason")).to_have_text("The service refused that key. Enter a valid API key.")
    page.fill("#key-input", "sesame")
    page.keyboard.press("Enter")

    expect(page.locator('input[name="style"]')).to_have_count(style_count(service_url))
    expect(dialog).to_be_hidden()
    assert sent == [None, "Bearer wrong", "Bearer sesame"]


def test_phone_layout(open_context, service_url, photo_dir, screenshot):
    page = open_page(open_context(**PHONE), service_url)
    page.set_input_files("#single-file", photo_dir / "people" / "hopper.jpg")
    page.click("#single-run")
    expect(page.locator("#single-result")).to_be_visible(timeout=SLOW)
    expect(page.locator(".style-option .preview img")).to_have_count(style_count(service_url), timeout=SLOW)

    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone"
    screenshot(page, "page-phone.png")


def test_docs_render_offline(open_context, service_url):
    page = open_context().new_page()
    page.goto(f"{service_url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Portrait cartoonization")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
