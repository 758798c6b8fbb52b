"""Real HTTP against the app deployed from serve_config.yaml."""

import asyncio
import base64

import httpx
import numpy as np
import pytest

from cartoon.image import codec
from cartoon.image.pipeline import Options, Pipeline
from cartoon.image.styles import StyleRegistry, Stylizer
from deployments.settings import AppArgs
from tests import photos
from tests.integration.conftest import BATCHING_USER_CONFIG, OVERLOADED_RETRY_AFTER_S
from tests.unit.image.test_codec import png_header


@pytest.fixture(scope="module")
def astronaut_png():
    return photos.encode(photos.astronaut())


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    return body


def assert_still_serving(client, astronaut_png):
    response = client.post("/v1/cartoonize", content=astronaut_png)
    assert response.status_code == 200 and response.headers["x-faces"] == "1"


def test_astronaut_comes_back_same_size_with_one_face(client, astronaut_png):
    response = client.post("/v1/cartoonize", content=astronaut_png, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-faces"] == "1"
    stages = [entry.split(";")[0] for entry in response.headers["server-timing"].split(", ")]
    assert {"decode", "detect", "align", "unet", "compose", "encode", "total"} <= set(stages)
    decoded = codec.decode(response.content).rgb
    assert decoded.shape == (512, 512, 3)
    assert np.abs(decoded.astype(int) - photos.astronaut()).mean() > 5  # really changed


def test_multipart_upload_and_json_mode(client, astronaut_png):
    response = client.post(
        "/v1/cartoonize",
        params={"format": "jpeg", "quality": 80, "max_side": 256},
        files={"image": ("astronaut.png", astronaut_png, "image/png")},
        headers={"accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-faces"] == "1" and "total;dur=" in response.headers["server-timing"]
    body = response.json()
    assert (body["width"], body["height"], body["media_type"]) == (256, 256, "image/jpeg")
    (face,) = body["faces"]
    assert len(face["box"]) == 4 and len(face["points"]) == 5 and face["score"] > 0.3
    assert body["timings"]["unet"] > 0 and all(size >= 1 for size in body["batch_sizes"])
    assert codec.decode(base64.b64decode(body["image"])).rgb.shape == (256, 256, 3)


def test_transparent_png_keeps_alpha(client):
    rgba = np.dstack([photos.astronaut(), np.full((512, 512), 255, np.uint8)])
    rgba[:, :128, 3] = 0
    response = client.post("/v1/cartoonize", content=photos.encode(rgba))
    assert response.status_code == 200
    decoded = codec.decode(response.content)
    assert decoded.alpha is not None and decoded.alpha[:, :120].max() == 0


def test_batch_reports_every_item_and_a_corrupt_one_does_not_sink_the_rest(client, astronaut_png):
    files = [
        ("images", ("good-1.png", astronaut_png, "image/png")),
        ("images", ("corrupt.png", astronaut_png[: len(astronaut_png) // 3], "image/png")),
        ("images", ("coffee.jpg", photos.encode(photos.coffee(), "JPEG"), "image/jpeg")),
        ("images", ("notes.txt", b"not a picture", "text/plain")),
    ]
    response = client.post("/v1/cartoonize/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["index"], r["filename"], r["status"]) for r in results] == [
        (0, "good-1.png", 200), (1, "corrupt.png", 400), (2, "coffee.jpg", 200), (3, "notes.txt", 400)
    ]
    assert results[1]["error"]["code"] == "corrupt_image"
    assert results[3]["error"]["code"] == "not_an_image"
    assert len(results[0]["faces"]) == 1 and results[2]["faces"] == []
    coffee = codec.decode(base64.b64decode(results[2]["image"])).rgb
    assert coffee.shape == photos.coffee().shape


def test_styles_health_and_readiness(client):
    styles = client.get("/v1/styles").json()
    assert styles["default"] in [style["name"] for style in styles["styles"]]
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    # Ready only once a Cartoonizer reported the forward it ran at start-up.
    assert ready.status_code == 200, ready.text
    # The inference mode chosen at start-up for the default style, as cartoon.model.inference
    # picks it on this CPU (each of the style's models checked for bf16 on its own).
    expected = Stylizer.from_style(StyleRegistry.from_directory().get(None), "cpu").mode.describe()
    assert {key: ready.json()["inference"][key] for key in expected} == expected
    assert ready.json()["inference"]["max_cpu_threads"] == 2
    assert 0 < ready.json()["inference"]["seconds_per_image"] < 60
    assert "/v1/cartoonize" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("body, code", [
    (b"garbage, not an image at all", "not_an_image"),
    (b"", "not_an_image"),
])
def test_garbage_is_400(client, astronaut_png, body, code):
    assert_error(client.post("/v1/cartoonize", content=body), 400, code)


def test_truncated_file_is_400(client, astronaut_png):
    assert_error(client.post("/v1/cartoonize", content=astronaut_png[:4000]), 400, "corrupt_image")


def test_png_header_claiming_70000_squared_is_413(client, astronaut_png):
    assert_error(client.post("/v1/cartoonize", content=png_header(70000, 70000)), 413, "too_many_pixels")
    assert_still_serving(client, astronaut_png)


def test_body_over_the_limit_is_413(client, serve_config):
    limit = AppArgs(**serve_config["applications"][0]["args"]).max_body_bytes
    assert_error(client.post("/v1/cartoonize", content=b"\0" * (limit + 1)), 413, "body_too_large")


def test_unsupported_format_is_415(client):
    ico = photos.encode(np.zeros((32, 32, 3), np.uint8), "ICO")
    assert_error(client.post("/v1/cartoonize", content=ico), 415, "unsupported_format")


@pytest.mark.parametrize("params", [
    {"strength": "1.5"}, {"strength": "lots"}, {"format": "gif"}, {"quality": "0"}, {"max_side": "3"},
])
def test_bad_parameter_is_422(client, astronaut_png, params):
    assert_error(client.post("/v1/cartoonize", params=params, content=astronaut_png), 422, "invalid_parameter")


@pytest.mark.parametrize("style", ["nope", ""])
def test_unknown_style_is_422_listing_the_valid_ones(client, astronaut_png, style):
    # An empty style names no style, as the schema's enum says (schemathesis found it served).
    body = assert_error(client.post("/v1/cartoonize", params={"style": style}, content=astronaut_png),
                        422, "unknown_style")
    for entry in client.get("/v1/styles").json()["styles"]:
        assert entry["name"] in body["error"]["message"]


def test_full_queue_is_503_with_retry_after(base_url, client, astronaut_png):
    async def flood():
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as session:
            return await asyncio.gather(
                *(session.post("/overloaded/v1/cartoonize", content=astronaut_png) for _ in range(12))
            )

    responses = asyncio.run(flood())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
    rejected = next(r for r in responses if r.status_code == 503)
    assert_error(rejected, 503, "overloaded")
    assert rejected.headers["retry-after"] == str(OVERLOADED_RETRY_AFTER_S)
    assert_still_serving(client, astronaut_png)


def test_deadline_passed_is_504(client, astronaut_png):
    big = photos.encode(np.ascontiguousarray(np.tile(photos.astronaut(), (6, 6, 1))))  # 3072 px
    assert_error(client.post("/deadline/v1/cartoonize", content=big), 504, "timeout")
    assert_still_serving(client, astronaut_png)


def test_concurrent_requests_share_cartoonizer_batches(base_url):
    """8 requests at once: some UNet batch must hold pieces of more than one request.

    Each request sends one head crop and one background piece, each kind in its own
    batch, so any reported batch size above 1 holds pieces of several requests. On the
    /batching copy, whose batches wait to fill: Serve 2.60 closes a batch after its
    wait even while the model is busy, so with the CPU config's zero wait a batch of
    one is the rule (deployments.batching) and batches met only by chance. Eight, the
    admission floor (`min_in_flight`): the copy's one Cartoonizer admitted 15 of 16 on
    the CI machine by its start-up estimate.
    """
    portrait = photos.encode(photos.astronaut()[:256, 96:352], "JPEG")

    async def burst():
        async with httpx.AsyncClient(base_url=base_url, timeout=300) as session:
            return await asyncio.gather(
                *(session.post("/batching/v1/cartoonize", content=portrait) for _ in range(8))
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 8
    sizes = [int(size) for r in responses for size in r.headers["x-batch-sizes"].split(",")]
    assert max(sizes) > 1, sizes
    assert max(sizes) <= BATCHING_USER_CONFIG["max_batch_size"], sizes


def test_served_output_equals_in_process_pipeline(client, serve_config, astronaut_png):
    args = AppArgs(**serve_config["applications"][0]["args"])
    pipeline = Pipeline(StyleRegistry.from_directory(args.styles_dir), args.pipeline_settings())
    for options in (Options(), Options(strength=0.6, max_side=300)):
        params = {"strength": options.strength}
        if options.max_side:
            params["max_side"] = options.max_side
        served = codec.decode(client.post("/v1/cartoonize", params=params, content=astronaut_png).content).rgb
        local = codec.decode(pipeline(astronaut_png, options).data).rgb
        assert served.shape == local.shape
        assert np.abs(served.astype(int) - local.astype(int)).max() <= 1
