"""How much a stylized video flickers: the warping error of Lai et al. (ECCV 2018).

For each pair of consecutive frames, optical flow is computed on the INPUT frames (the
stylized ones would mislead it), the previous output frame is warped onto the current
one along that flow, and the squared RGB difference is averaged over the pixels the flow
can be trusted at: not occluded by the forward-backward consistency check of Ruder et
al. (2016), and not pointing outside the frame. Values are in [0, 1] RGB, so a static
video stylized identically twice scores 0, and flicker raises the score; the input's own
score (its warping error against itself) is what flow errors alone cost.
"""

import cv2
import numpy as np

from cartoon.image.flow import optical_flow, sample


def trusted_flow(current: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flow from the current input frame to the previous one, and where it holds.

    Returns:
        (H, W, 2) float32 flow and an (H, W) bool mask: consistent forward and
        backward (|f + b|^2 <= 0.01 (|f|^2 + |b|^2) + 0.5) and landing inside the frame.
    """
    current_gray = cv2.cvtColor(current, cv2.COLOR_RGB2GRAY)
    previous_gray = cv2.cvtColor(previous, cv2.COLOR_RGB2GRAY)
    forward = optical_flow(current_gray, previous_gray)
    backward = sample(optical_flow(previous_gray, current_gray), forward)
    disagreement = np.sum((forward + backward) ** 2, axis=-1)
    magnitude = np.sum(forward**2, axis=-1) + np.sum(backward**2, axis=-1)
    height, width = forward.shape[:2]
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    landing_x, landing_y = xs + forward[..., 0], ys + forward[..., 1]
    inside = (landing_x >= 0) & (landing_x <= width - 1) & (landing_y >= 0) & (landing_y <= height - 1)
    return forward, (disagreement <= 0.01 * magnitude + 0.5) & inside


def pair_error(output: np.ndarray, previous_output: np.ndarray, flow: np.ndarray, mask: np.ndarray) -> float:
    """Mean over the trusted pixels of the squared RGB distance (in [0, 1] units) between
    the current output and the previous output warped onto it."""
    warped = sample(previous_output.astype(np.float32) / 255.0, flow)
    distance = np.sum((output.astype(np.float32) / 255.0 - warped) ** 2, axis=-1)
    return float(distance[mask].mean()) if mask.any() else 0.0


def warping_error(inputs: list[np.ndarray], outputs_by_name: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """The mean warping error of each output video, over all consecutive pairs.

    Args:
        inputs: the input frames, (H, W, 3) uint8.
        outputs_by_name: output videos of the same frames and size, by name; the
            input itself may be one of them (the flow's own floor).

    Returns:
        name -> mean warping error.
    """
    totals = {name: 0.0 for name in outputs_by_name}
    for index in range(1, len(inputs)):
        flow, mask = trusted_flow(inputs[index], inputs[index - 1])
        for name, outputs in outputs_by_name.items():
            totals[name] += pair_error(outputs[index], outputs[index - 1], flow, mask)
    pairs = max(1, len(inputs) - 1)
    return {name: total / pairs for name, total in totals.items()}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 pictures."""
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10.0 * np.log10(255.0**2 / error))
