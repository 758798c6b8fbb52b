"""Real photos shipped by installed packages, shared by unit and integration tests."""

import io

import numpy as np
from matplotlib import cbook
from PIL import Image
from skimage import data


def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins): one face, plus a mission patch."""
    return data.astronaut()


def grace_hopper() -> np.ndarray:
    """matplotlib's Grace Hopper portrait: one face."""
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


def coffee() -> np.ndarray:
    """scikit-image's coffee cup: no face."""
    return data.coffee()


def two_faces() -> np.ndarray:
    """The astronaut's head and shoulders beside their mirror image: two faces, 640x320.

    Cropped so the long side stays within the detector's default 640 px, where the
    faces keep the ~80 px the HOG detector needs.
    """
    head = astronaut()[0:320, 64:384]
    return np.ascontiguousarray(np.concatenate([head, head[:, ::-1]], axis=1))


def encode(rgb: np.ndarray, format: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=format, **params)
    return buffer.getvalue()
