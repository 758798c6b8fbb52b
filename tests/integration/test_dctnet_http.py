"""A DCT-Net style converted with ``python -m cartoon.model.dctnet``, served over real HTTP."""

import cv2
import numpy as np

from cartoon.image import codec
from cartoon.image.pipeline import Options, Pipeline
from cartoon.image.styles import StyleRegistry
from deployments.settings import AppArgs
from tests import photos
from tests.integration.conftest import DCTNET_FIXTURE, DCTNET_STYLE

EXPECTED = DCTNET_FIXTURE.parent / "expected"
INPUTS = DCTNET_FIXTURE.parent / "inputs"


def test_converted_style_is_listed_with_source_and_licence(client):
    styles = {style["name"]: style for style in client.get("/dctnet/v1/styles").json()["styles"]}
    assert {"toon", DCTNET_STYLE} <= set(styles)
    assert styles[DCTNET_STYLE]["licence"] == "Apache License 2.0"
    assert styles[DCTNET_STYLE]["source"] == "tools/dctnet_fixture.py"
    assert styles[DCTNET_STYLE]["mode"] == "tf1" and styles["toon"]["mode"] == "native"
    # The config says "auto": the imported style pins fp32, our own take the fast path.
    assert styles[DCTNET_STYLE]["precision"] == "fp32" and styles["toon"]["precision"] == "auto"


def test_served_dctnet_style_matches_tensorflow_by_default(client):
    """The whole served graph with the config's default precision, against TensorFlow's own output.

    An 80x64 picture with no face: no shrinking (short side under 720), no padding (both
    sides multiples of 16), so the answer is the background generator's output alone.
    """
    picture = (INPUTS / "even16.png").read_bytes()
    response = client.post("/dctnet/v1/cartoonize", params={"style": DCTNET_STYLE}, content=picture)
    assert response.status_code == 200, response.text
    assert response.headers["x-faces"] == "0"
    served = codec.decode(response.content).rgb.astype(int)
    tensorflow = cv2.cvtColor(cv2.imread(str(EXPECTED / "addv2_bg_even16.png")), cv2.COLOR_BGR2RGB).astype(int)
    difference = np.abs(served - tensorflow)
    assert served.shape == tensorflow.shape == (64, 80, 3)
    assert difference.max() <= 1 and (difference == 0).mean() >= 0.99


def test_served_dctnet_style_equals_in_process_pipeline(client, serve_config, dctnet_styles_dir):
    args = AppArgs(**{**serve_config["applications"][0]["args"], "styles_dir": str(dctnet_styles_dir)})
    pipeline = Pipeline(StyleRegistry.from_directory(dctnet_styles_dir), args.pipeline_settings())
    # Sides that are not multiples of 16, so the white padding to 16 is exercised.
    picture = photos.encode(photos.astronaut()[:500, :460])
    for style in (DCTNET_STYLE, "toon"):
        response = client.post("/dctnet/v1/cartoonize", params={"style": style}, content=picture)
        assert response.status_code == 200, response.text
        assert response.headers["x-faces"] == "1"
        served = codec.decode(response.content).rgb
        local = codec.decode(pipeline(picture, Options(style=style)).data).rgb
        assert served.shape == local.shape == (500, 460, 3)
        assert np.abs(served.astype(int) - local.astype(int)).max() <= 1
