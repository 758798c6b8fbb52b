"""Faces followed through a video: detect now and then, landmarks every frame, smoothed.

Detecting every frame is slow and jittery: the HOG box jumps by a few pixels from frame
to frame, and with it the aligned crop, so the cartoon head shimmers. Here faces are
detected every ``detect_every`` frames and at shot cuts; in between, each face's box is
carried along by its landmarks, the landmarks are found in that box, and the five
alignment points are smoothed with a One Euro filter (Casiez, Roussel and Vogel, CHI
2012): heavy smoothing while a face is still, little lag while it moves.
"""

import itertools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from cartoon.image.align import apply_transform, similarity_transform
from cartoon.image.faces import Face, FaceDetector


@dataclass(frozen=True)
class TrackerSettings:
    detect_every: int = 5  # frames between two detections (1 = every frame)
    cut_distance: float = 0.5  # colour-histogram distance (Bhattacharyya) above which a shot starts
    min_cutoff: float = 1.0  # One Euro cutoff at rest (Hz): lower = steadier, laggier
    beta: float = 0.02  # cutoff added per px/s of speed: higher = less lag when moving
    d_cutoff: float = 1.0  # cutoff of the speed estimate (Hz)
    match_iou: float = 0.3  # a detection continues the track whose box it overlaps this much
    patience: int = 1  # detections a track may miss before it ends


def _smoothing(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The One Euro filter on an array of coordinates (each value filtered on its own)."""

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None
        self._time = 0.0

    def __call__(self, value: np.ndarray, time_s: float) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self._value is None:
            self._value, self._speed, self._time = value, np.zeros_like(value), time_s
            return value
        dt = max(time_s - self._time, 1e-3)
        speed = (value - self._value) / dt
        self._speed = self._speed + _smoothing(self.d_cutoff, dt) * (speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        self._value = self._value + _smoothing(cutoff, dt) * (value - self._value)
        self._time = time_s
        return self._value


@dataclass
class _Track:
    id: int
    anchor_box: tuple[float, float, float, float]  # the box of the last detection
    anchor_points: np.ndarray  # the raw points found in that box
    points: np.ndarray  # the latest raw points
    score: float
    filter: OneEuroFilter
    misses: int = 0

    def box(self) -> tuple[float, float, float, float]:
        """The anchor box carried along by the points' motion since the detection."""
        motion = similarity_transform(self.anchor_points, self.points)
        x0, y0, x1, y1 = self.anchor_box
        corners = apply_transform(motion, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
        (left, top), (right, bottom) = corners.min(axis=0), corners.max(axis=0)
        return float(left), float(top), float(right), float(bottom)


@dataclass(frozen=True)
class TrackedFace:
    track_id: int
    face: Face  # points smoothed; landmarks the raw points found in this frame


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def colour_histogram(rgb: np.ndarray) -> np.ndarray:
    """A normalised hue-saturation histogram of a small copy: what a shot cut changes."""
    small = cv2.resize(rgb, (64, 36), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    histogram = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
    return cv2.normalize(histogram, histogram).astype(np.float32)


@dataclass
class FaceTracker:
    """Follows the faces of one video, frame by frame, in order."""

    detector: FaceDetector
    settings: TrackerSettings = TrackerSettings()
    _tracks: list[_Track] = field(default_factory=list)
    _frame: int = 0
    _histogram: np.ndarray | None = None
    _ids: itertools.count = field(default_factory=itertools.count)

    def update(self, rgb: np.ndarray, time_s: float) -> tuple[list[TrackedFace], bool]:
        """The faces of the next frame, largest first, and whether the frame starts a new shot.

        Args:
            rgb: (H, W, 3) uint8, the frame upright.
            time_s: its presentation time (the filter's clock).
        """
        histogram = colour_histogram(rgb)
        cut = self._histogram is not None and cv2.compareHist(
            self._histogram, histogram, cv2.HISTCMP_BHATTACHARYYA
        ) > self.settings.cut_distance
        self._histogram = histogram
        if cut:
            self._tracks = []
        for track in self._tracks:
            track.points = self.detector.locate(rgb, track.box(), track.score).points
        if cut or self._frame % self.settings.detect_every == 0:
            self._match(self.detector.detect(rgb))
        self._frame += 1
        faces = [
            TrackedFace(track.id, Face(track.box(), track.score, track.points, track.filter(track.points, time_s)))
            for track in self._tracks
        ]
        faces.sort(key=lambda tracked: tracked.face.size, reverse=True)
        return faces[: self.detector.config.max_faces], cut

    def _match(self, detections: list[Face]) -> None:
        """Re-anchors tracks on the detections that overlap them; starts tracks for the rest."""
        unmatched = list(self._tracks)
        for detection in detections:
            best = max(unmatched, key=lambda track: _iou(track.box(), detection.box), default=None)
            if best is not None and _iou(best.box(), detection.box) >= self.settings.match_iou:
                unmatched.remove(best)
                best.anchor_box, best.anchor_points = detection.box, detection.points
                best.points, best.score, best.misses = detection.points, detection.score, 0
                continue
            self._tracks.append(_Track(
                next(self._ids), detection.box, detection.points, detection.points, detection.score,
                OneEuroFilter(self.settings.min_cutoff, self.settings.beta, self.settings.d_cutoff),
            ))
        for track in unmatched:
            track.misses += 1
        self._tracks = [track for track in self._tracks if track.misses <= self.settings.patience]
