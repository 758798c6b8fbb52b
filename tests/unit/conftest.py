import json
import sys

import pytest

from cartoon.image.faces import DetectorConfig, FaceDetector
from cartoon.image.pipeline import Pipeline
from cartoon.image.styles import StyleRegistry
from cartoon.model.unet import UNetConfig, random_generator, save_weights
from tests import photos


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Unit tests run the core alone: starting Ray here is a bug."""
    ray = sys.modules.get("ray")
    if ray is not None:
        def refuse(*args, **kwargs):
            raise RuntimeError("unit tests must not start Ray")
        monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(scope="session")
def astronaut():
    return photos.astronaut()


@pytest.fixture(scope="session")
def detector5():
    return FaceDetector(DetectorConfig(landmark_points=5))


@pytest.fixture(scope="session")
def detector68():
    return FaceDetector(DetectorConfig(landmark_points=68))


@pytest.fixture(scope="session")
def random_registry(tmp_path_factory):
    """A one-style registry of small random weights: fast, and enough to test plumbing."""
    directory = tmp_path_factory.mktemp("random_style")
    save_weights(random_generator(UNetConfig(width=8), seed=3), directory / "random.safetensors")
    (directory / "registry.json").write_text(json.dumps({
        "default": "random",
        "styles": [{"name": "random", "description": "random weights", "head": "random.safetensors",
                    "background": "random.safetensors", "width": 8}],
    }))
    return StyleRegistry.from_directory(directory)


@pytest.fixture(scope="session")
def pipeline(random_registry):
    return Pipeline(random_registry)
