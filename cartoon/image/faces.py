"""Face detection (dlib HOG) and landmarks (face-recognition-models' dlib files)."""

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import dlib
import numpy as np

from cartoon.constants import DETECT_LONG_SIDE

LANDMARK_MODELS = {
    5: "shape_predictor_5_face_landmarks.dat",
    68: "shape_predictor_68_face_landmarks.dat",
}
# dlib's CNN (max-margin object detection) face detector and its face descriptor network.
CNN_DETECTOR = "mmod_human_face_detector.dat"
FACE_DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"


def model_path(filename: str) -> Path:
    """Finds a model file shipped by face-recognition-models (``LANDMARK_MODELS``, ``CNN_DETECTOR``, ...).

    The package's own ``__init__`` imports pkg_resources, which may be absent, so
    the files are located through the import system without importing it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the package face-recognition-models is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise FileNotFoundError(f"model file {filename} is missing from face-recognition-models")
    return path


def landmark_model_path(points: int) -> Path:
    """The landmark model of ``points`` (5 or 68) points shipped by face-recognition-models."""
    if points not in LANDMARK_MODELS:
        raise ValueError(f"landmark model must have 5 or 68 points, not {points}")
    return model_path(LANDMARK_MODELS[points])


@dataclass
class Face:
    """One detected face, in the coordinates of the full-size image.

    Attributes:
        box: (x0, y0, x1, y1) of the detector's box.
        score: the HOG detector's score (higher is surer).
        landmarks: (N, 2) float (x, y) from the landmark model, N = 5 or 68.
        points: (5, 2) float, the points aligned onto the reference frame.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray = field(repr=False)
    points: np.ndarray = field(repr=False)

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def alignment_points(landmarks: np.ndarray) -> np.ndarray:
    """The five points aligned onto the reference frame of the landmark layout.

    68 points reduce to eye centres, nose tip and mouth corners as in DCT-Net; the
    5-point model's own points (eye corners, nose base) are used as they are, against
    reference positions calibrated for them.
    """
    if len(landmarks) == 68:
        return np.array(
            [
                landmarks[36:42].mean(axis=0),
                landmarks[42:48].mean(axis=0),
                landmarks[30],
                landmarks[48],
                landmarks[54],
            ]
        )
    if len(landmarks) == 5:
        return landmarks.astype(np.float64).copy()
    raise ValueError(f"expected 5 or 68 landmarks, got {len(landmarks)}")


@dataclass(frozen=True)
class DetectorConfig:
    landmark_points: int = 5  # 5 (public domain) or 68 (iBUG 300-W: no commercial use)
    detect_long_side: int = DETECT_LONG_SIDE  # the HOG detector runs at this long side
    score_threshold: float = 0.3  # HOG score below which a detection is dropped
    max_faces: int = 8  # largest first
    min_face: int = 40  # faces smaller than this (px, full-size image) are ignored


class FaceDetector:
    """HOG face detector plus a landmark model, loaded once.

    Safe to call from several threads (Serve runs sync methods in a thread pool):
    dlib's detector crashes the process when two threads run it at once, so calls
    into dlib take a lock.
    """

    def __init__(self, config: DetectorConfig = DetectorConfig()):
        self.config = config
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(landmark_model_path(config.landmark_points)))
        self._dlib_lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Finds faces, largest first.

        Args:
            rgb: (H, W, 3) uint8.

        Returns:
            Up to ``max_faces`` faces scoring at least ``score_threshold`` and at
            least ``min_face`` px wide, sorted largest first.
        """
        height, width = rgb.shape[:2]
        scale = min(1.0, self.config.detect_long_side / max(height, width))
        small = rgb
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        with self._dlib_lock:
            return self._detect(rgb, small, scale)

    def _detect(self, rgb: np.ndarray, small: np.ndarray, scale: float) -> list[Face]:
        rects, scores, _ = self._detector.run(small, 0, self.config.score_threshold)
        faces = []
        for rect, score in zip(rects, scores):
            box = tuple(float(v) / scale for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
            if max(box[2] - box[0], box[3] - box[1]) < self.config.min_face:
                continue
            faces.append(self._locate(rgb, box, float(score)))
        faces.sort(key=lambda face: face.size, reverse=True)
        return faces[: self.config.max_faces]

    def locate(self, rgb: np.ndarray, box: tuple[float, float, float, float], score: float) -> Face:
        """The landmarks of a face known to be in ``box`` (a tracked face), without detecting."""
        with self._dlib_lock:
            return self._locate(rgb, box, score)

    def _locate(self, rgb: np.ndarray, box: tuple[float, float, float, float], score: float) -> Face:
        shape = self._predictor(rgb, dlib.rectangle(*(int(round(v)) for v in box)))
        landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return Face(box, score, landmarks, alignment_points(landmarks))
