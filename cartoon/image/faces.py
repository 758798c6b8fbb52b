"""Face detection (dlib HOG and an MTCNN cascade) and landmarks (face-recognition-models' dlib files)."""

import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import dlib
import numpy as np

from cartoon.constants import DETECT_LONG_SIDE
from cartoon.image.mtcnn import Mtcnn

LANDMARK_MODELS = {
    5: "shape_predictor_5_face_landmarks.dat",
    68: "shape_predictor_68_face_landmarks.dat",
}
# HOG runs on CLAHE-normalised lightness (clip limit, tiles per side).
CLAHE_CLIP, CLAHE_TILES = 2.0, 8
# Long side of the copy searched at the tilts, only when the upright pass finds nothing.
TILT_LONG_SIDE = 640
# A tilted face's landmarks, or a dim one's (the grey levels of its box between these
# percentiles span under STRETCH_BELOW), are read on a square window this many face
# sizes wide, turned upright and stretched to that span.
WINDOW = 2.0
STRETCH_PERCENTILES = (1, 99)
STRETCH_BELOW = 160
# A cascade face is given the box HOG would give it, so that the landmark model (fitted
# to HOG's boxes) and the aligned crop see the same framing: on the 37 faces of the hard
# set both detectors find, HOG's square is centred 0.08 of the cascade box's height
# lower and 0.96 times as wide as the square root of its area.
CASCADE_SHIFT_DOWN, CASCADE_SIDE = 0.08, 0.96
# A cascade face whose eyes tilt more than this (degrees) has its landmarks read on a
# window turned upright, as a face of the tilted passes has.
CASCADE_UPRIGHT_WITHIN = 15.0
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
        score: the detector's score (higher is surer): HOG's margin, or the cascade's
            face probability (0.98 to 1) for a face only the cascade finds.
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
    detect_long_side: int = DETECT_LONG_SIDE  # the HOG detector runs on a copy this long (never enlarged)
    score_threshold: float = 0.3  # HOG score below which a detection is dropped
    max_faces: int = 8  # largest first
    # The MTCNN cascade, on the same copy as HOG, adds the faces HOG misses: faces
    # under HOG's 80 px, turned to three-quarter view, in dim light.
    cascade: bool = True
    min_face: int = 40  # faces smaller than this (px, full-size image) are ignored
    # Head tilts (degrees) tried, on a copy TILT_LONG_SIDE long, when the upright pass
    # finds no face: HOG's five views cover heads tilted up to about 20 degrees.
    tilts: tuple[float, ...] = (30.0, -30.0)


class FaceDetector:
    """HOG face detector, an MTCNN cascade and a landmark model, loaded once.

    HOG and the cascade search the same copy of the picture; the cascade's faces
    that no HOG face overlaps are added. HOG runs on the picture's lightness, contrast-normalised (CLAHE), so that a face in
    a dim room or before a bright window shows the same gradients as a well-lit one;
    landmarks are read on a window around each face stretched to its own range, for
    the same reason. A picture with no upright face is searched again at the tilts of
    ``DetectorConfig.tilts``.

    Safe to call from several threads (Serve runs sync methods in a thread pool):
    dlib's detector crashes the process when two threads run it at once, so calls
    into dlib take a lock. The cascade runs on a thread of its own while HOG runs on the
    caller's: both release the GIL in their native code, so a picture's detection takes
    the longer of the two on a machine with a free core rather than their sum.
    """

    def __init__(self, config: DetectorConfig = DetectorConfig()):
        self.config = config
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(landmark_model_path(config.landmark_points)))
        self._clahe = cv2.createCLAHE(CLAHE_CLIP, (CLAHE_TILES, CLAHE_TILES))
        self._cascade = Mtcnn() if config.cascade else None
        self._cascade_thread = ThreadPoolExecutor(1, "cascade") if config.cascade else None
        self._dlib_lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Finds faces, largest first.

        Args:
            rgb: (H, W, 3) uint8.

        Returns:
            Up to ``max_faces`` faces at least ``min_face`` px wide, sorted largest
            first: HOG's scoring at least ``score_threshold``, and the cascade's that
            no HOG face overlaps.
        """
        small, scale = _shrunk(rgb, self.config.detect_long_side)
        cascade = self._cascade_thread.submit(self._cascaded, small, scale) if self._cascade_thread else None
        with self._dlib_lock:
            hog = self._upright(self._grey(small), scale)
        found = cascade.result() if cascade is not None else []
        with self._dlib_lock:
            found = hog + [face for face in found if not any(_overlaps(face[0], other) for other, _, _ in hog)]
            if not found and self.config.tilts:
                small, small_scale = self._normalised(rgb, TILT_LONG_SIDE)
                found = self._tilted(small, small_scale)
            faces = [self._locate(rgb, box, score, angle) for box, score, angle in found]
        faces.sort(key=lambda face: face.size, reverse=True)
        return faces[: self.config.max_faces]

    def _normalised(self, rgb: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
        """The picture's grey, shrunk to ``long_side`` at most and CLAHE-normalised, and its scale."""
        small, scale = _shrunk(rgb, long_side)
        return self._grey(small), scale

    def _grey(self, small: np.ndarray) -> np.ndarray:
        return self._clahe.apply(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))

    def _cascaded(self, small: np.ndarray, scale: float) -> list[tuple[tuple[float, ...], float, float]]:
        """The cascade's faces on the shrunk colour copy, as HOG-framed boxes in the picture,
        with the angle that turns each upright when its eyes tilt past ``CASCADE_UPRIGHT_WITHIN``.

        The cascade sees colour, not CLAHE grey: it was trained on colour photos, dim ones
        included, and equalised copies gave it false faces in dark textures.
        """
        found = []
        for detection in self._cascade.detect(small, self.config.min_face * scale):
            x0, y0, x1, y1 = detection.box
            side = CASCADE_SIDE * np.sqrt((x1 - x0) * (y1 - y0))
            centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2 + CASCADE_SHIFT_DOWN * (y1 - y0)])
            box = tuple(float(v) / scale for v in (*(centre - side / 2), *(centre + side / 2)))
            # Eye line from the image-left eye to the image-right one, counter-clockwise
            # positive; the window is turned back by as much.
            (lx, ly), (rx, ry) = detection.landmarks[0], detection.landmarks[1]
            roll = float(np.degrees(np.arctan2(ly - ry, rx - lx)))
            if max(x1 - x0, y1 - y0) / scale >= self.config.min_face:
                found.append((box, detection.score, -roll if abs(roll) > CASCADE_UPRIGHT_WITHIN else 0.0))
        return found

    def _upright(self, grey: np.ndarray, scale: float) -> list[tuple[tuple[float, ...], float, float]]:
        rects, scores, _ = self._detector.run(grey, 0, self.config.score_threshold)
        found = []
        for rect, score in zip(rects, scores):
            box = tuple(float(v) / scale for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
            if max(box[2] - box[0], box[3] - box[1]) >= self.config.min_face:
                found.append((box, float(score), 0.0))
        return found

    def _tilted(self, grey: np.ndarray, scale: float) -> list[tuple[tuple[float, ...], float, float]]:
        """Faces found on copies turned by each tilt: upright square boxes in the picture."""
        height, width = grey.shape
        found: list[tuple[tuple[float, ...], float, float]] = []
        for angle in self.config.tilts:
            matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
            turned = cv2.warpAffine(grey, matrix, (width, height), borderMode=cv2.BORDER_REFLECT_101)
            back = cv2.invertAffineTransform(matrix)
            rects, scores, _ = self._detector.run(turned, 0, self.config.score_threshold)
            for rect, score in zip(rects, scores):
                centre = back @ np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2, 1.0])
                half = (rect.right() - rect.left()) / 2
                box = tuple(float(v) / scale for v in (*(centre - half), *(centre + half)))
                if 2 * half / scale >= self.config.min_face and not any(
                        _overlaps(box, other) for other, _, _ in found):
                    found.append((box, float(score), angle))
        return found

    def locate(self, rgb: np.ndarray, box: tuple[float, float, float, float], score: float) -> Face:
        """The landmarks of a face known to be in ``box`` (a tracked face), without detecting."""
        with self._dlib_lock:
            return self._locate(rgb, box, score)

    def _locate(self, rgb: np.ndarray, box: tuple[float, ...], score: float, angle: float = 0.0) -> Face:
        """Landmarks of the face in ``box``; a tilted or dim face's are read on a window around
        it, turned upright and stretched to its own range."""
        x0, y0, x1, y1 = box
        inner = rgb[max(int(y0), 0):max(int(y1), 1), max(int(x0), 0):max(int(x1), 1)]
        low, high = np.percentile(cv2.cvtColor(inner, cv2.COLOR_RGB2GRAY), STRETCH_PERCENTILES) if inner.size else (0, 255)
        if angle == 0.0 and high - low >= STRETCH_BELOW:
            shape = self._predictor(rgb, dlib.rectangle(*(int(round(v)) for v in box)))
            landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            return Face(tuple(box), score, landmarks, alignment_points(landmarks))
        side = max(x1 - x0, y1 - y0)
        window = int(np.ceil(side * WINDOW))
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
        matrix[:, 2] += window / 2 - np.array(centre)
        patch = cv2.warpAffine(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), matrix, (window, window),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if high - low < STRETCH_BELOW:
            gain = 255.0 / max(high - low, 1.0)
            patch = cv2.convertScaleAbs(patch, alpha=gain, beta=-low * gain)
        half = side / 2
        shape = self._predictor(patch, dlib.rectangle(*(int(round(v)) for v in (
            window / 2 - half, window / 2 - half, window / 2 + half, window / 2 + half))))
        local = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        back = cv2.invertAffineTransform(matrix)
        landmarks = local @ back[:, :2].T + back[:, 2]
        return Face(tuple(box), score, landmarks, alignment_points(landmarks))


def _shrunk(rgb: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """The picture shrunk to ``long_side`` at most (area-averaged), and the scale used."""
    height, width = rgb.shape[:2]
    scale = min(1.0, long_side / max(height, width))
    if scale == 1.0:
        return rgb, scale
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether the centre of either box lies inside the other."""
    def inside(box, other):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return other[0] <= cx <= other[2] and other[1] <= cy <= other[3]

    return inside(a, b) or inside(b, a)
