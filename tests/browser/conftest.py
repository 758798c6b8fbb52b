"""One served graph (serve_config.yaml, as ``serve run`` deploys it) and one Chromium for
the browser tests.

The browser is Debian's Chromium (``apt-get install chromium``) driven by Playwright;
Playwright's own browser download is never used. Without Chromium the tests are skipped,
except where ``CARTOON_REQUIRE_BROWSER`` is set (CI), where they fail.
"""

import logging
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import ray
from playwright.sync_api import expect
from ray import serve

from serve_app.local import deploy_config, free_port
from tests import clips, photos
from tests.integration.conftest import load_config, wait_until_ready

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The main app's replicas at full scale take 2 logical CPUs.
RAY_CPUS = 2
DESKTOP = {"width": 1280, "height": 900}
SLOW = 120_000  # ms: a few photos, or a short clip, on a 2-core CI machine


def style_count(url: str) -> int:
    return len(httpx.get(f"{url}/v1/styles", timeout=30).json()["styles"])


def open_page(context, url):
    """The page, once its style cards are there."""
    page = context.new_page()
    page.goto(f"{url}/")
    expect(page.locator('input[name="style"]')).to_have_count(style_count(url))
    return page


@pytest.fixture(scope="package")
def fake_camera(tmp_path_factory) -> Path:
    """What the browser's camera films: Grace Hopper under a slow handheld move, 352x288, looped."""
    frames = clips.camera_move(photos.grace_hopper(), 30, 352, 288)
    return clips.write_y4m(tmp_path_factory.mktemp("camera") / "camera.y4m", frames + frames[-2:0:-1])


@pytest.fixture(scope="package")
def browser(fake_camera):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CARTOON_REQUIRE_BROWSER"):
            pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # A fake camera, and camera permission granted without asking (the Live tab).
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={fake_camera}",
        ])
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def service_url(browser, tmp_path_factory):
    config = load_config()
    port = free_port()
    config["http_options"]["port"] = port
    ray.init(
        num_cpus=RAY_CPUS,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    deploy_config(config)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, ["/"])
    yield url
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def open_context(browser, service_url):
    """Makes fresh browser contexts (own storage); afterwards, checks that every request
    they made went to the service and nowhere else."""
    contexts, seen = [], []

    def make(**options):
        context = browser.new_context(accept_downloads=True, **{"viewport": DESKTOP, **options})
        context.on("request", lambda request: seen.append(request.url))
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    service = urlsplit(service_url).netloc
    foreign = [url for url in seen if urlsplit(url).scheme not in ("about", "blob", "data") and urlsplit(url).netloc != service]
    assert foreign == [], "requests to other hosts"


@pytest.fixture(scope="package")
def photo_dir(tmp_path_factory) -> Path:
    """An album: real photos in a subfolder, a truncated JPEG and a text file named .jpg."""
    album = tmp_path_factory.mktemp("photos") / "album"
    (album / "people").mkdir(parents=True)
    (album / "people" / "astronaut.png").write_bytes(photos.encode(photos.astronaut()))
    (album / "people" / "hopper.jpg").write_bytes(photos.encode(photos.grace_hopper(), "JPEG", quality=90))
    (album / "truncated.jpg").write_bytes(photos.encode(photos.astronaut(), "JPEG", quality=90)[:4000])
    (album / "notes.jpg").write_bytes(b"shopping list: eggs, flour, milk\n")
    return album


@pytest.fixture
def screenshot():
    """Saves a screenshot into $CARTOON_SCREENSHOTS (docs/ when refreshing the README's)."""
    folder = os.environ.get("CARTOON_SCREENSHOTS")

    def take(page, name: str) -> None:
        if folder:
            page.screenshot(path=str(Path(folder) / name), full_page=True)

    return take
