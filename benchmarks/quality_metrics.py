"""The figures of ``benchmarks.quality``: faces against dlib's CNN, identity, tone, smoothness.

How each is made (issue 26):

* reference faces: dlib's CNN detector (``mmod_human_face_detector.dat``) on a copy at
  most ``REFERENCE_LONG_SIDE`` px long, upsampled once; boxes of at least
  ``REFERENCE_MIN_FACE`` px in the photo. A reference face is found when a box the
  service reports overlaps it with IoU >= ``FOUND_IOU``;
* identity: the distance of dlib's ResNet face descriptors of the photo's face and of
  the cartoon at the same place, both read with the photo's 5-point landmarks
  (face_recognition calls two faces the same person under ``SAME_PERSON``);
* exposure F1: Canny edges of L* at ``ANALYSIS_SIDE`` px of the cartoon of the photo and
  of the cartoon of its darker copy, matched within ``MATCH_RADIUS`` px;
* dark structure: Canny of the photo's CLAHE-normalised L* inside its darkest
  ``DARK_SHARE``, the share found within ``MATCH_RADIUS`` px in the Canny of the
  cartoon's CLAHE-normalised L*;
* false edges: Canny of the cartoon's L* inside the photo's smooth area (9x9 L*
  deviation under ``SMOOTH_DEVIATION``, ``SMOOTH_CLEARANCE`` px or more from any photo
  edge), as a share of that area;
* seam: along the straight edges of every pasted crop, where the photo is quiet 6 px
  either side, the step the cartoon shows there (second difference across the edge,
  grey levels) above what it shows 3-15 px off;
* rim ink: share of the picture's rim (``RIM_SHARE`` of the short side) covered by ink
  lines (``tools.cartoon_metrics.ink_lines``) where the photo's rim is not dark.
"""

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from cartoon.image.align import apply_transform, invert_transform
from cartoon.image.faces import CNN_DETECTOR, FACE_DESCRIPTOR, landmark_model_path, model_path
from cartoon.constants import CROP_SIZE
from tools.cartoon_metrics import LINE_MAX_GREY, ink_lines

REFERENCE_LONG_SIDE = 900
REFERENCE_UPSAMPLE = 1
REFERENCE_MIN_FACE = 40
FOUND_IOU = 0.3
SAME_PERSON = 0.6
ANALYSIS_SIDE = 512
MATCH_RADIUS = 2
CANNY_LOW, CANNY_HIGH = 40, 100  # on 8-bit L* (0..255) lightly smoothed (sigma 1)
DARK_SHARE = 0.30
SMOOTH_WINDOW = 9
SMOOTH_DEVIATION = 2.0  # L* units (0..100)
SMOOTH_CLEARANCE = 3
CLAHE_CLIP, CLAHE_TILES = 2.0, 8
RIM_SHARE = 0.02
SEAM_NEAR, SEAM_FAR = 1.5, (3.0, 15.0)
QUIET = 1.0  # grey levels of the photo's own second difference under which it is quiet
# px either side of a crop edge where the photo must be quiet: as far as a stroke the students draw
# along a photo edge reaches (comic's are up to 6 px wide). At 3 px, the outline of a tile
# border or a window frame 3-6 px from a crop edge read as a seam of 6-9 levels, the same with
# the heads left unpasted (tests/unit/image/test_seams.py).
SEAM_QUIET_BAND = 6.0


@dataclass(frozen=True)
class ReferenceFace:
    """A face dlib's CNN finds: its box and 5-point landmarks in the photo."""

    box: tuple[float, float, float, float]
    shape: dlib.full_object_detection


class FaceReference:
    """dlib's CNN detector, 5-point landmarks and ResNet descriptor, loaded once."""

    def __init__(self):
        self._detector = dlib.cnn_face_detection_model_v1(str(model_path(CNN_DETECTOR)))
        self._predictor = dlib.shape_predictor(str(landmark_model_path(5)))
        self._descriptor = dlib.face_recognition_model_v1(str(model_path(FACE_DESCRIPTOR)))
        self._lock = threading.Lock()

    def faces(self, rgb: np.ndarray) -> list[ReferenceFace]:
        """The CNN's faces of at least ``REFERENCE_MIN_FACE`` px, in photo coordinates."""
        return [self.landmarks(rgb, box) for box in self.boxes(rgb)]

    def boxes(self, rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
        """The CNN's boxes of at least ``REFERENCE_MIN_FACE`` px, in photo coordinates."""
        height, width = rgb.shape[:2]
        scale = min(1.0, REFERENCE_LONG_SIDE / max(height, width))
        small = rgb if scale == 1.0 else cv2.resize(
            rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        with self._lock:
            detections = self._detector(np.ascontiguousarray(small), REFERENCE_UPSAMPLE)
        boxes = []
        for detection in detections:
            r = detection.rect
            box = tuple(v / scale for v in (r.left(), r.top(), r.right(), r.bottom()))
            if max(box[2] - box[0], box[3] - box[1]) >= REFERENCE_MIN_FACE:
                boxes.append(box)
        return boxes

    def landmarks(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> ReferenceFace:
        """The photo's 5-point landmarks of the face in ``box``."""
        with self._lock:
            return ReferenceFace(box, self._predictor(rgb, dlib.rectangle(*(int(round(v)) for v in box))))

    def descriptor(self, rgb: np.ndarray, face: ReferenceFace) -> np.ndarray:
        """The 128-d descriptor of the face at ``face``'s landmarks in ``rgb``."""
        with self._lock:
            return np.array(self._descriptor.compute_face_descriptor(np.ascontiguousarray(rgb), face.shape))

    def identity_distance(self, photo: np.ndarray, cartoon: np.ndarray, face: ReferenceFace) -> float:
        """Descriptor distance of the photo's face and the cartoon at the same place."""
        return float(np.linalg.norm(self.descriptor(photo, face) - self.descriptor(cartoon, face)))


class CachedReference(FaceReference):
    """``FaceReference`` whose CNN boxes are kept in a JSON file, by the picture's digest.

    The CNN costs 10-40 s of CPU per picture at the reference settings; its boxes depend
    on nothing but the picture, so a second run of the benchmark reuses them.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self._boxes = json.loads(path.read_text()) if path.is_file() else {}

    def boxes(self, rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
        key = hashlib.sha1(np.ascontiguousarray(rgb).tobytes() + str(rgb.shape).encode()).hexdigest()
        if key not in self._boxes:
            self._boxes[key] = [list(box) for box in super().boxes(rgb)]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self._boxes, indent=1) + "\n")
        return [tuple(box) for box in self._boxes[key]]


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def found(reference: list[ReferenceFace], boxes: list[tuple[float, ...]]) -> list[bool]:
    """For each reference face, whether a reported box overlaps it with IoU >= ``FOUND_IOU``."""
    return [any(iou(face.box, box) >= FOUND_IOU for box in boxes) for face in reference]


def analysis_size(rgb: np.ndarray, side: int = ANALYSIS_SIDE) -> np.ndarray:
    """The picture shrunk (or enlarged) so its long side is ``side``."""
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def lightness(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 CIE L* in 0..100."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[..., 0]


def _l8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(lightness(rgb) * 2.55 + 0.5, 0, 255).astype(np.uint8)


def edges(l8: np.ndarray) -> np.ndarray:
    """(H, W) bool Canny edges of an 8-bit lightness, after a light smoothing."""
    return cv2.Canny(cv2.GaussianBlur(l8, (0, 0), 1.0), CANNY_LOW, CANNY_HIGH) > 0


def clahe(l8: np.ndarray) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of an 8-bit lightness."""
    return cv2.createCLAHE(CLAHE_CLIP, (CLAHE_TILES, CLAHE_TILES)).apply(l8)


def near(mask: np.ndarray, radius: int = MATCH_RADIUS) -> np.ndarray:
    """Pixels within ``radius`` (a square) of a true pixel of ``mask``."""
    side = 2 * radius + 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((side, side), np.uint8)) > 0


def edge_f1(a: np.ndarray, b: np.ndarray, radius: int = MATCH_RADIUS) -> float:
    """F1 of two edge maps, a pixel matching within ``radius``."""
    if not a.any() or not b.any():
        return 1.0 if not a.any() and not b.any() else 0.0
    precision, recall = near(b, radius)[a].mean(), near(a, radius)[b].mean()
    return float(2 * precision * recall / max(precision + recall, 1e-9))


def exposure_f1(cartoon: np.ndarray, cartoon_of_darker: np.ndarray) -> float:
    """Canny F1 of L* at ``ANALYSIS_SIDE`` px: the cartoon of the photo vs of its darker copy."""
    return edge_f1(edges(_l8(analysis_size(cartoon))), edges(_l8(analysis_size(cartoon_of_darker))))


def dark_structure(photo: np.ndarray, cartoon: np.ndarray) -> float:
    """Share of the photo's CLAHE-L* edges in its darkest ``DARK_SHARE`` kept by the cartoon."""
    photo_l = _l8(analysis_size(photo))
    dark = photo_l <= np.quantile(photo_l, DARK_SHARE)
    wanted = edges(clahe(photo_l)) & dark
    if not wanted.any():
        return float("nan")
    drawn = edges(clahe(_l8(analysis_size(cartoon))))
    return float(near(drawn)[wanted].mean())


def smooth_area(photo: np.ndarray) -> np.ndarray:
    """(H, W) bool at ``ANALYSIS_SIDE`` px: 9x9 L* deviation < 2, 3 px or more from any edge."""
    small = analysis_size(photo)
    lab_l = lightness(small)
    mean = cv2.blur(lab_l, (SMOOTH_WINDOW, SMOOTH_WINDOW))
    square = cv2.blur(lab_l * lab_l, (SMOOTH_WINDOW, SMOOTH_WINDOW))
    deviation = np.sqrt(np.maximum(square - mean * mean, 0.0))
    return (deviation < SMOOTH_DEVIATION) & ~near(edges(_l8(small)), SMOOTH_CLEARANCE - 1)


def false_edges(photo: np.ndarray, cartoon: np.ndarray) -> tuple[float, float]:
    """(share of the photo's smooth area where the cartoon's L* has a Canny edge, that area's share)."""
    smooth = smooth_area(photo)
    if not smooth.any():
        return float("nan"), 0.0
    drawn = edges(_l8(analysis_size(cartoon)))
    return float(drawn[smooth].mean()), float(smooth.mean())


def second_difference(grey: np.ndarray, points: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """|f(p) - (f(p - n) + f(p + n)) / 2| at each point, bilinearly sampled."""
    def sample(at: np.ndarray) -> np.ndarray:
        xy = at.astype(np.float32).reshape(-1, 1, 2)
        return cv2.remap(grey, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR).ravel()

    return np.abs(sample(points) - 0.5 * (sample(points - normal) + sample(points + normal)))


def crop_edges(matrix: np.ndarray, height: int, width: int, margin: float):
    """Each straight edge of a crop's footprint: (points along its middle 80 %, unit normal).

    Only the points at least ``margin`` px inside the picture; edges mostly outside it
    are left out.
    """
    inverse = invert_transform(matrix)
    along = np.linspace(0.1, 0.9, 200)[:, None]
    for start, end in (((0, 0), (CROP_SIZE, 0)), ((0, CROP_SIZE), (CROP_SIZE, CROP_SIZE)),
                       ((0, 0), (0, CROP_SIZE)), ((CROP_SIZE, 0), (CROP_SIZE, CROP_SIZE))):
        a, b = apply_transform(inverse, np.array([start, end], float))
        points = a + along * (b - a)
        direction = (b - a) / np.linalg.norm(b - a)
        normal = np.array([-direction[1], direction[0]])
        inside = ((points >= margin) & (points < (width - margin, height - margin))).all(axis=1)
        if inside.mean() >= 0.5:
            yield points[inside], normal


def seam_step(photo: np.ndarray, cartoon: np.ndarray, matrix: np.ndarray) -> float:
    """The largest seam along a pasted crop's straight edges, in grey levels (nan: none measurable).

    Per edge, at the points where the photo is quiet across it (within
    ``SEAM_QUIET_BAND`` px on either side): the median second
    difference of the cartoon within ``SEAM_NEAR`` px of the edge (its peak over the
    offsets), less the median 3-15 px off on either side.
    """
    photo_grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.cvtColor(cartoon, cv2.COLOR_RGB2GRAY).astype(np.float32)
    offsets = np.arange(-SEAM_FAR[1], SEAM_FAR[1] + 0.25, 0.5)
    steps = []
    for points, normal in crop_edges(matrix, *grey.shape, margin=SEAM_FAR[1] + 12):
        # Quiet across the whole near band, not only on the edge's line: a photo edge
        # running beside the crop's edge (a group composite's tile border) is no seam.
        quiet = np.max([second_difference(photo_grey, points + o * normal, normal)
                        for o in np.arange(-SEAM_QUIET_BAND, SEAM_QUIET_BAND + 0.25, 0.5)], axis=0) < QUIET
        if quiet.sum() < 20:
            continue
        points = points[quiet]
        profile = np.array([np.median(second_difference(grey, points + o * normal, normal)) for o in offsets])
        far = np.median(profile[(np.abs(offsets) >= SEAM_FAR[0]) & (np.abs(offsets) <= SEAM_FAR[1])])
        steps.append(float(max(0.0, profile[np.abs(offsets) <= SEAM_NEAR].max() - far)))
    return max(steps) if steps else float("nan")


def rim_ink(photo: np.ndarray, cartoon: np.ndarray) -> float:
    """Share of the rim where the photo is not dark that the cartoon covers with ink lines."""
    height, width = photo.shape[:2]
    band = max(4, round(RIM_SHARE * min(height, width)))
    rim = np.ones((height, width), bool)
    rim[band:-band, band:-band] = False
    bright = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY) >= LINE_MAX_GREY
    chosen = rim & bright
    if not chosen.any():
        return float("nan")
    return float(ink_lines(cartoon)[chosen].mean())
