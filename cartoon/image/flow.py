"""Dense optical flow between frames and images warped along it (DIS flow, OpenCV)."""

import cv2
import numpy as np


def optical_flow(source_gray: np.ndarray, target_gray: np.ndarray,
                 preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> np.ndarray:
    """(H, W, 2) float32 DIS optical flow: where each pixel of ``source`` is in ``target``."""
    return cv2.DISOpticalFlow_create(preset).calc(source_gray, target_gray, None)


def sample(image: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``image`` read at every pixel's position plus ``flow``."""
    height, width = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], interpolation, borderMode=cv2.BORDER_REPLICATE)
