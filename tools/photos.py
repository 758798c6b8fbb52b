"""The real photos the styles are trained and evaluated on, all shipped by pip packages.

Nothing is downloaded: each photo is a file inside an installed distribution. The
scikit-image, scikit-learn and matplotlib photos come with the ``train`` extra;
insightface's and ultralytics' photos are read as plain files from their installed
distributions, which need no dependencies for that:
``pip install --no-deps insightface==2.1 ultralytics==8.4.190``.

Two disjoint sets: ``TRAINING`` feeds tools/train_style.py; ``EVALUATION`` (the gallery,
the metrics, the tests) is never trained on. The face_recognition project's sample
photos are kept for evaluation by others and are used by neither.
"""

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Photo:
    """One photo and where it comes from.

    Attributes:
        id: "<source>:<name>", how configs and records name it.
        package: the pip distribution that ships it.
        licence: the distribution's licence and what is known of the picture's own.
        content: what is in it, for the model card.
        publishable: the picture's own licence is known and lets us publish stylised
            copies of it (the committed gallery and the README strip show only these).
    """

    id: str
    package: str
    licence: str
    content: str
    publishable: bool = False

    @property
    def name(self) -> str:
        """A short file-name-safe name."""
        return Path(self.id.split(":", 1)[1]).stem


PUBLIC_DOMAIN_NASA = "BSD-3-Clause package; NASA photo, public domain"
TRAINING = (
    Photo("skimage:coffee", "scikit-image", "BSD-3-Clause package; CC0 photo", "cup of coffee"),
    Photo("skimage:chelsea", "scikit-image", "BSD-3-Clause package; CC0 photo", "a cat"),
    Photo("skimage:rocket", "scikit-image", "BSD-3-Clause package; SpaceX photo, public domain",
          "rocket on the pad"),
    Photo(
        "skimage:stereo_motorcycle", "scikit-image",
        "BSD-3-Clause package; Middlebury 2014 stereo benchmark, research use",
        "motorcycle in a workshop",
    ),
    Photo(
        "skimage:camera", "scikit-image", "BSD-3-Clause package; CC0 photo",
        "cameraman (grey, one small face)",
    ),
    Photo("sklearn:china.jpg", "scikit-learn", "BSD-3-Clause package; CC-BY-2.0 photo", "temple"),
    Photo("sklearn:flower.jpg", "scikit-learn", "BSD-3-Clause package; CC-BY-2.0 photo", "flower"),
)
EVALUATION = (
    Photo(
        "skimage:astronaut", "scikit-image", PUBLIC_DOMAIN_NASA,
        "Eileen Collins, head and shoulders, light skin, 40s", publishable=True,
    ),
    Photo(
        "matplotlib:grace_hopper.jpg", "matplotlib", "PSF-style package; US Navy photo, public domain",
        "Grace Hopper in uniform with glasses, light skin, 70s", publishable=True,
    ),
    Photo(
        "insightface:t1.jpg", "insightface==2.1",
        "MIT package; publicity still (Friends cast), picture copyright not stated",
        "group of six adults around a table, light skin, 20s-30s",
    ),
    Photo(
        "ultralytics:zidane.jpg", "ultralytics==8.4.190",
        "AGPL-3.0 package; press photo, picture copyright not stated",
        "two men in suits, olive skin, 40s and 50s, one shouting",
    ),
    Photo(
        "ultralytics:bus.jpg", "ultralytics==8.4.190",
        "AGPL-3.0 package; street photo, picture copyright not stated",
        "people by a bus, two in sunglasses, faces too small for the detector",
    ),
    Photo(
        "insightface:Tom_Hanks_54745.png", "insightface==2.1",
        "MIT package; aligned 112x112 face crop, picture copyright not stated",
        "tight face crop, light skin, 50s (enlarged 4x before use)",
    ),
)
# The gallery that is committed: stylised copies of pictures whose own licence is unknown
# (a TV publicity still, a press photo) are scored locally but not published.
GALLERY = tuple(photo for photo in EVALUATION if photo.publishable)
# Enlargement of photos too small for the face detector's 80 px minimum face.
ENLARGE = {"insightface:Tom_Hanks_54745.png": 4}
# Where the file-only photos sit inside their distributions.
PACKAGE_FILES = {
    "insightface": "insightface/data/images",
    "ultralytics": "ultralytics/assets",
}


def _packaged_file(source: str, name: str) -> Path:
    distribution = importlib.metadata.distribution(source)
    path = Path(str(distribution.locate_file(f"{PACKAGE_FILES[source]}/{name}")))
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not in the installed {source} distribution")
    return path


def load(photo_id: str) -> np.ndarray:
    """Reads a packaged photo by id ("skimage:<name>", "sklearn:<file>", ...).

    Args:
        photo_id: a ``Photo.id``.

    Returns:
        (H, W, 3) uint8 RGB; grey photos are repeated into three channels, small ones
        enlarged by their ``ENLARGE`` factor.

    Raises:
        importlib.metadata.PackageNotFoundError: the shipping distribution is not installed.
        ValueError: an unknown source.
    """
    source, name = photo_id.split(":", 1)
    if source == "skimage":
        from skimage import data

        rgb = getattr(data, name)()
        if isinstance(rgb, tuple):  # stereo_motorcycle: (left, right, disparity)
            rgb = rgb[0]
    elif source == "sklearn":
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        rgb = bunch.images[[Path(f).name for f in bunch.filenames].index(name)]
    elif source == "matplotlib":
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data(name) as handle:
            rgb = np.asarray(Image.open(handle).convert("RGB"))
    elif source in PACKAGE_FILES:
        bgr = cv2.imread(str(_packaged_file(source, name)), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        raise ValueError(f"unknown photo source in {photo_id!r}")
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rgb = np.ascontiguousarray(rgb[..., :3])
    factor = ENLARGE.get(photo_id, 1)
    if factor > 1:
        rgb = cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    return rgb
