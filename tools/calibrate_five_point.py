"""Calibrates REFERENCE_POINTS_5 so the 5-point and 68-point paths align alike.

Each face is aligned with the 68-point path (DCT-Net's reference points); the
5-point model's raw points are mapped into that aligned frame and averaged. Then
both paths align every face and the mean distance between where they put the
crop's corners is printed. Photos: scikit-image's astronaut and matplotlib's
Grace Hopper, each also mirrored and rotated, so the figure does not come from one face.

Usage: python tools/calibrate_five_point.py
"""

import numpy as np
from matplotlib import cbook
from PIL import Image
from skimage import data

import cv2
from cartoon.image.align import apply_transform, similarity_transform
from cartoon.constants import CROP_SIZE, REFERENCE_POINTS_68
from cartoon.image.faces import DetectorConfig, FaceDetector


def variants(rgb: np.ndarray):
    height, width = rgb.shape[:2]
    for flip in (False, True):
        image = rgb[:, ::-1].copy() if flip else rgb
        for angle in (-12, 0, 12):
            rotation = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
            yield cv2.warpAffine(image, rotation, (width, height), borderMode=cv2.BORDER_REFLECT)


def photos():
    yield data.astronaut()
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        yield np.asarray(Image.open(handle).convert("RGB"))


def landmark_pairs(photo: np.ndarray, five: FaceDetector, sixty_eight: FaceDetector) -> list:
    """(5-point, 68-point) raw points of the face in each variant where both find exactly one."""
    pairs = []
    for image in variants(photo):
        faces5, faces68 = five.detect(image), sixty_eight.detect(image)
        if len(faces5) == 1 and len(faces68) == 1:
            pairs.append((faces5[0].points, faces68[0].points))
    return pairs


def calibrate(pairs: list) -> np.ndarray:
    """The 5-point model's points averaged in the frame the 68-point path aligns to."""
    mapped = [
        apply_transform(similarity_transform(points68, REFERENCE_POINTS_68), points5)
        for points5, points68 in pairs
    ]
    return np.mean(mapped, axis=0)


def corner_distance(points5: np.ndarray, points68: np.ndarray, reference5: np.ndarray) -> float:
    """Mean distance (crop px) from the 68-point crop's corners to where they land in the 5-point crop."""
    corners = np.array([[0, 0], [CROP_SIZE, 0], [0, CROP_SIZE], [CROP_SIZE, CROP_SIZE]], float)
    inverse68 = cv2.invertAffineTransform(similarity_transform(points68, REFERENCE_POINTS_68))
    in_photo = apply_transform(inverse68, corners)
    in_crop5 = apply_transform(similarity_transform(points5, reference5), in_photo)
    return float(np.linalg.norm(in_crop5 - corners, axis=1).mean())


def main() -> None:
    five = FaceDetector(DetectorConfig(landmark_points=5))
    sixty_eight = FaceDetector(DetectorConfig(landmark_points=68))
    pairs = [pair for photo in photos() for pair in landmark_pairs(photo, five, sixty_eight)]
    reference5 = calibrate(pairs)
    print(f"faces used: {len(pairs)}")
    print("REFERENCE_POINTS_5 =", np.array2string(reference5, precision=1, separator=", "))
    distances = [corner_distance(points5, points68, reference5) for points5, points68 in pairs]
    print(
        f"crop corners, 5-point vs 68-point frame: mean {np.mean(distances):.2f} px, "
        f"max {np.max(distances):.2f} px (of the {CROP_SIZE} px crop)"
    )


if __name__ == "__main__":
    main()
