"""Distils a classical cartoon renderer (tools/teachers.py) into a style's UNet.

One model per style serves both passes: its teacher draws head crops and whole
pictures alike, so the student learns from two pools, aligned 288x288 face crops and
whole pictures at the background pass's scales, each batch drawn from both. One model
instead of a head and a background model halves the training cost and makes the
pasted head agree with the background around it. The model starts from
``cartoon.model.unet.random_generator`` and trains with Adam, a short warm-up and cosine
decay, on a line-weighted L1 plus an L1 of image gradients: the teachers' outlines
are thresholded, thin and dark, and an unweighted loss would let the student average
them away into grey smudges.

Data come from packages already installed (``tools.photos.TRAINING``); nothing is
downloaded, and the evaluation photos (``tools.photos.EVALUATION``) are never used.
The cameraman's small face is found by the project's detector and aligned with
``cartoon.image.align``; synthetic content adds drawn faces in the aligned frame, the LFW
faces of ``skimage.data.lfw_subset`` enlarged into the frame, and shapes-and-gradients
scenes. Every picture is augmented (scale, mirror, small similarity jitter for faces,
colour jitter) before the teacher draws it, so teacher and student see the same
pixels. Teacher outputs are computed once up front into fixed pools.

``--minutes`` budgets the whole run (data and training), counted in this process's
CPU time on the CPU (see ``budget_clock``). The step count comes from timing a few
steps and is recorded in ``<style>_train.json``, so a run can be repeated exactly
with ``--steps``.

Writes ``<style>.safetensors`` and ``<style>_train.json`` to ``--out`` and adds the
style to its ``registry.json``. ``--part background`` trains the same way a model for the
background pass alone, usually slimmer (``--width``), written as
``<style>_background.safetensors`` beside the style's head model.

Usage (from the repository root):
    python -m tools.train_style --style toon --minutes 20 --out cartoon/styles
    python -m tools.train_style --style toon --part background --width 8 --steps 3000 --seed 1 --out cartoon/styles
"""

import argparse
import copy
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata

from cartoon.image.align import similarity_transform, warp_crop
from cartoon.constants import CROP_SIZE, REFERENCE_POINTS_5, REFERENCE_POINTS_68
from cartoon.model.device import resolve_device
from cartoon.image.faces import DetectorConfig, FaceDetector
from cartoon.image.finish import FINISHES
from cartoon.image.styles import REGISTRY_FILE
from cartoon.model.unet import UNetConfig, UNetGenerator, random_generator, save_weights
from tools import photos as packaged
from tools.teachers import DESCRIPTIONS, Renderer, teacher

DEFAULT_STYLE = "toon"
# The only training photo with a face; dlib's HOG finds it once the photo is enlarged.
FACE_PHOTO = "skimage:camera"
FACE_PHOTO_ENLARGE = 3

# RGB anchors for drawn faces and for tinting grey pictures; jittered per sample.
SKIN_TONES = np.array(
    [
        [255, 224, 196],
        [241, 194, 165],
        [224, 172, 135],
        [198, 134, 98],
        [141, 85, 54],
        [96, 60, 40],
    ],
    dtype=np.float32,
)
HAIR_TONES = np.array(
    [[30, 24, 22], [70, 45, 30], [120, 85, 50], [190, 150, 90], [160, 160, 160], [140, 60, 30]],
    dtype=np.float32,
)
IRIS_TONES = np.array(
    [[70, 45, 25], [60, 100, 140], [80, 110, 70], [40, 30, 25]], dtype=np.float32
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; written to ``<style>_train.json``."""

    style: str
    out: str
    minutes: float = 20.0  # CPU budget for data and training together
    head_share: float = 0.5  # fraction of each batch cut from the head pool
    steps: int | None = None  # fixed step count (reproducible); None = from the budget
    seed: int = 0
    width: int = 16  # UNet width C
    # "both": one model for head crops and backgrounds; "background": a model for the
    # background pass alone (its own, usually slimmer, width), beside the style's head model.
    part: str = "both"
    lr: float = 2e-3  # Adam peak learning rate
    grad_clip: float = 0.0  # largest gradient norm per step; 0 leaves gradients alone
    warmup: float = 0.03  # fraction of steps with a linear warm-up
    batch: int = 8
    patch: int = 128  # side of the square training patches (px)
    edge_weight: float = 0.5  # weight of the image-gradient L1 term
    line_weight: float = 4.0  # extra L1 weight on the teacher's dark line pixels
    head_pool: int = 240  # aligned head crops the teacher draws up front
    background_variants: int = 6  # augmented copies of each training photo
    synthetic_scenes: int = 12  # shapes-and-gradients pictures for the background pool
    threads: int = 1
    device: str = "auto"
    log_every: int = 25


@dataclass
class Pool:
    """Teacher pairs; pictures may differ in size but are all at least one patch."""

    inputs: list[np.ndarray] = field(default_factory=list)
    targets: list[np.ndarray] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)

    def add(self, picture: np.ndarray, renderer: Renderer, source: str) -> None:
        """Stores a picture with the teacher's drawing of it, counted under ``source``."""
        self.inputs.append(picture)
        self.targets.append(renderer(picture))
        self.sources[source] = self.sources.get(source, 0) + 1


def jitter_colour(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gamma, saturation, contrast, brightness and white balance; grey gets a tint."""
    x = rgb.astype(np.float32) / 255.0
    if np.ptp(x.reshape(-1, 3).mean(axis=0)) < 1e-3 and np.allclose(x[..., 0], x[..., 1]):
        if rng.random() < 0.5:
            tint = SKIN_TONES[rng.integers(len(SKIN_TONES))]
        else:
            tint = rng.uniform(80, 255, 3)
        x = x * (tint / tint.mean())
    x = np.clip(x, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.6, 1.4)
    x = (x - 0.5) * rng.uniform(0.8, 1.2) + 0.5 + rng.uniform(-0.08, 0.08)
    x = x * rng.uniform(0.92, 1.08, 3)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def random_window(rgb: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square window of a picture, resized to ``size``, maybe mirrored."""
    height, width = rgb.shape[:2]
    side = int(rng.integers(min(height, width, 150), min(height, width) + 1))
    y = int(rng.integers(0, height - side + 1))
    x = int(rng.integers(0, width - side + 1))
    window = rgb[y : y + side, x : x + side]
    window = cv2.resize(window, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(window[:, ::-1] if rng.random() < 0.5 else window)


def _photo_finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Makes a drawing look photographed: lighting, blotches, blur, sensor noise."""
    height, width = canvas.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * (xs / width - 0.5) + np.sin(angle) * (ys / height - 0.5)
    canvas = canvas * (1.0 + rng.uniform(0.1, 0.5) * ramp)[..., None]
    coarse = rng.normal(0, 1, (6, 6, 3)).astype(np.float32)
    blotches = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    canvas = canvas + rng.uniform(2, 10) * blotches
    canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.6, 1.5))
    canvas = canvas + rng.normal(0, rng.uniform(0.5, 4.0), canvas.shape).astype(np.float32)
    return np.round(np.clip(canvas, 0, 255)).astype(np.uint8)


def _similarity_jitter(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small random rotation, scale and shift: served faces are never aligned exactly."""
    centre = (CROP_SIZE / 2, CROP_SIZE / 2)
    matrix = cv2.getRotationMatrix2D(centre, rng.uniform(-10, 10), rng.uniform(0.9, 1.1))
    matrix[:, 2] += rng.uniform(-8, 8, 2)
    return cv2.warpAffine(
        crop,
        matrix,
        (CROP_SIZE, CROP_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def synthetic_face(rng: np.random.Generator, backdrop: np.ndarray) -> np.ndarray:
    """Draws a head and shoulders in the aligned 288x288 frame over a backdrop.

    Eyes, nose and mouth sit on the reference points (``REFERENCE_POINTS_68``), so the
    head model sees the layout it will be served, with random skin, hair, iris,
    clothing, expression, glasses and lighting.

    Args:
        rng: the random source.
        backdrop: (288, 288, 3) uint8 picture behind the head.

    Returns:
        (288, 288, 3) uint8.
    """
    def tone(table: np.ndarray, spread: float = 0.12) -> tuple[float, ...]:
        colour = table[rng.integers(len(table))] * rng.uniform(1 - spread, 1 + spread, 3)
        return tuple(float(c) for c in np.clip(colour, 0, 255))

    canvas = backdrop.astype(np.float32).copy()
    skin, hair = tone(SKIN_TONES), tone(HAIR_TONES)
    shade = tuple(0.8 * c for c in skin)
    cloth = tuple(float(c) for c in rng.uniform(0, 255, 3))
    aa = cv2.LINE_AA
    left_eye, right_eye, nose, left_mouth, right_mouth = (
        np.round(p + rng.normal(0, 2, 2)).astype(int) for p in REFERENCE_POINTS_68
    )
    cx = int((left_eye[0] + right_eye[0]) / 2)
    face_w, face_h = int(rng.uniform(64, 82)), int(rng.uniform(88, 104))
    shoulders = int(rng.uniform(120, 160))
    cv2.ellipse(canvas, (cx, 335), (shoulders, 95), 0, 0, 360, cloth, -1, aa)
    cv2.rectangle(canvas, (cx - 30, 200), (cx + 30, 290), shade, -1, aa)
    hair_len = int(rng.uniform(90, 150))
    cv2.ellipse(canvas, (cx, 140), (face_w + 18, hair_len), 0, 0, 360, hair, -1, aa)
    for ear_x in (cx - face_w, cx + face_w):
        cv2.ellipse(canvas, (ear_x, 160), (10, 18), 0, 0, 360, shade, -1, aa)
    cv2.ellipse(canvas, (cx, 165), (face_w, face_h), 0, 0, 360, skin, -1, aa)
    fringe = int(rng.uniform(30, 60))
    cv2.ellipse(canvas, (cx, 100), (face_w + 8, fringe), 0, 180, 360, hair, -1, aa)
    iris = tone(IRIS_TONES, 0.2)
    brow = tuple(0.7 * c for c in hair)
    dark, white, black = (35.0, 25.0, 25.0), (245.0, 240.0, 235.0), (15.0, 15.0, 15.0)
    for eye in (left_eye, right_eye):
        ex, ey = int(eye[0]), int(eye[1])
        cv2.ellipse(canvas, (ex, ey), (14, int(rng.uniform(5, 9))), 0, 0, 360, white, -1, aa)
        cv2.circle(canvas, (ex, ey), 6, iris, -1, aa)
        cv2.circle(canvas, (ex, ey), 3, black, -1, aa)
        cv2.ellipse(canvas, (ex, ey), (15, 8), 0, 180, 360, dark, 2, aa)
        brow_y = ey - int(rng.uniform(14, 22))
        thickness = int(rng.integers(3, 6))
        cv2.ellipse(canvas, (ex, brow_y + 6), (18, 7), 0, 200, 340, brow, thickness, aa)
    nx, ny = int(nose[0]), int(nose[1])
    cv2.line(canvas, (nx - 3, ny - 30), (nx - 6, ny), shade, 2, aa)
    nostril = tuple(0.5 * c for c in skin)
    for side in (-1, 1):
        cv2.ellipse(canvas, (nx + 8 * side, ny + 3), (4, 2), 0, 0, 360, nostril, -1, aa)
    lip = tuple(float(c) for c in np.clip(np.array(skin) * (1.05, 0.65, 0.65), 0, 255))
    mx, my = int((left_mouth[0] + right_mouth[0]) / 2), int((left_mouth[1] + right_mouth[1]) / 2)
    half = int((right_mouth[0] - left_mouth[0]) / 2)
    smile = rng.random() < 0.5
    cv2.ellipse(canvas, (mx, my), (half, int(rng.uniform(6, 12))), 0, 0, 360, lip, -1, aa)
    if smile:
        cv2.ellipse(canvas, (mx, my - 1), (half - 4, 6), 0, 0, 180, (240, 238, 230), -1, aa)
    parting = ((mx, my - 4), (half, 4)) if smile else ((mx, my), (half, 1))
    cv2.ellipse(canvas, *parting, 0, 0, 180, (60.0, 30.0, 30.0), 2, aa)
    if rng.random() < 0.3:
        frame = tuple(float(c) for c in rng.uniform(0, 200, 3))
        for eye in (left_eye, right_eye):
            cv2.ellipse(canvas, (int(eye[0]), int(eye[1]) + 2), (22, 16), 0, 0, 360, frame, 3, aa)
        bridge_left = (int(left_eye[0]) + 22, int(left_eye[1]))
        bridge_right = (int(right_eye[0]) - 22, int(right_eye[1]))
        cv2.line(canvas, bridge_left, bridge_right, frame, 3, aa)
    return _similarity_jitter(_photo_finish(canvas, rng), rng)


def lfw_face(rng: np.random.Generator, grey: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """An LFW face (25x25 grey) enlarged into the aligned frame, tinted, over a backdrop.

    The tiny crops are tight around the face with the eyes about 8 px apart; they are
    scaled so that distance matches the reference eye distance.
    """
    side = int(rng.uniform(190, 230))
    face = cv2.resize(grey.astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    tint = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1, 3)
    face = np.clip(face[..., None] * tint * 1.4, 0, 255)
    canvas = backdrop.astype(np.float32).copy()
    y0 = int(REFERENCE_POINTS_68[0, 1] - 0.4 * side)
    x0 = int(REFERENCE_POINTS_68[:2, 0].mean() - side / 2)
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    inside = ((xs - side / 2) / (side * 0.46)) ** 2 + ((ys - side / 2) / (side * 0.52)) ** 2 < 1
    mask = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 3)[..., None]
    y1, x1 = min(CROP_SIZE, y0 + side), min(CROP_SIZE, x0 + side)
    mask, face = mask[: y1 - y0, : x1 - x0], face[: y1 - y0, : x1 - x0]
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - mask) + face * mask
    return _similarity_jitter(_photo_finish(canvas, rng), rng)


def synthetic_scene(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Random gradients, filled shapes, stripes and lines: clean edges of every contrast."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a, b = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5)), 0, 1)[..., None]
    canvas = (a * (1 - t) + b * t).astype(np.float32)
    aa = cv2.LINE_AA
    for _ in range(int(rng.integers(8, 20))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        centre = tuple(int(c) for c in rng.integers(0, size, 2))
        kind = rng.integers(4)
        if kind == 0:
            axes = tuple(int(c) for c in rng.integers(8, size // 4, 2))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, aa)
        elif kind == 1:
            corner = tuple(int(c) for c in np.array(centre) + rng.integers(10, size // 3, 2))
            cv2.rectangle(canvas, centre, corner, colour, -1, aa)
        elif kind == 2:
            end = tuple(int(c) for c in rng.integers(0, size, 2))
            cv2.line(canvas, centre, end, colour, int(rng.integers(1, 8)), aa)
        else:
            corners = rng.integers(-60, 60, (int(rng.integers(3, 6)), 2))
            points = (np.array(centre) + corners).astype(np.int32)
            cv2.fillPoly(canvas, [points], colour, aa)
    return _photo_finish(canvas, rng)


def camera_face_points() -> np.ndarray:
    """The alignment points of the cameraman's face, in the camera photo's coordinates."""
    photo = packaged.load(FACE_PHOTO)
    big = cv2.resize(
        photo, None, fx=FACE_PHOTO_ENLARGE, fy=FACE_PHOTO_ENLARGE, interpolation=cv2.INTER_CUBIC
    )
    config = DetectorConfig(score_threshold=0.0, min_face=20, detect_long_side=max(big.shape))
    faces = FaceDetector(config).detect(big)
    if not faces:
        raise RuntimeError("the face in skimage's camera photo was not found")
    return faces[0].points / FACE_PHOTO_ENLARGE


def build_head_pool(
    config: TrainConfig,
    renderer: Renderer,
    photos: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> Pool:
    """Aligned 288x288 crops and their head-teacher drawings.

    Shares: 45% drawn faces, 15% LFW faces, 10% the cameraman aligned with jitter,
    30% windows of training photos (hair, cloth and backdrops look like that).
    """
    pool = Pool()
    names = sorted(photos)
    lfw = skdata.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    points = camera_face_points()
    camera = photos[FACE_PHOTO]
    for _ in range(config.head_pool):
        draw = rng.random()
        window = random_window(photos[names[rng.integers(len(names))]], rng, CROP_SIZE)
        backdrop = jitter_colour(window, rng)
        if draw < 0.45:
            pool.add(jitter_colour(synthetic_face(rng, backdrop), rng), renderer, "synthetic_face")
        elif draw < 0.60:
            face = lfw_face(rng, lfw[rng.integers(len(lfw))] * 255.0, backdrop)
            pool.add(jitter_colour(face, rng), renderer, "lfw_subset")
        elif draw < 0.70:
            jittered = points + rng.normal(0, 0.7, points.shape)
            crop = warp_crop(camera, similarity_transform(jittered, REFERENCE_POINTS_5))
            crop = np.ascontiguousarray(crop[:, ::-1]) if rng.random() < 0.5 else crop
            pool.add(jitter_colour(crop, rng), renderer, FACE_PHOTO)
        else:
            pool.add(backdrop, renderer, "photo_window")
    return pool


def build_background_pool(
    config: TrainConfig,
    renderer: Renderer,
    photos: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> Pool:
    """Whole pictures at several scales, drawn by the background teacher.

    The teacher sees the whole augmented picture (not a patch), as the served
    background pass sees the whole shrunk picture.
    """
    pool = Pool()
    for name in sorted(photos):
        photo = photos[name]
        for _ in range(config.background_variants):
            scale = max(rng.uniform(0.45, 1.0), (config.patch + 8) / min(photo.shape[:2]))
            picture = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if rng.random() < 0.5:
                picture = np.ascontiguousarray(picture[:, ::-1])
            pool.add(jitter_colour(picture, rng), renderer, name)
    for _ in range(config.synthetic_scenes):
        pool.add(synthetic_scene(rng), renderer, "synthetic_scene")
    return pool


def sample_batch(
    pools: tuple[Pool, Pool], rng: np.random.Generator, batch: int, patch: int, head_share: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random aligned patches of inputs and targets, (B, 3, P, P) in [-1, 1].

    Each patch comes from the head pool (``pools[0]``) with probability ``head_share``,
    else from the background pool.
    """
    inputs, targets = [], []
    for _ in range(batch):
        pool = pools[0] if rng.random() < head_share else pools[1]
        index = int(rng.integers(0, len(pool.inputs)))
        source, target = pool.inputs[index], pool.targets[index]
        y = int(rng.integers(0, source.shape[0] - patch + 1))
        x = int(rng.integers(0, source.shape[1] - patch + 1))
        window = (slice(y, y + patch), slice(x, x + patch))
        step = -1 if rng.random() < 0.5 else 1
        inputs.append(source[window][:, ::step])
        targets.append(target[window][:, ::step])

    def to_tensor(pieces: list[np.ndarray]) -> torch.Tensor:
        stacked = torch.from_numpy(np.ascontiguousarray(np.stack(pieces)))  # (B, P, P, 3) uint8
        batch = stacked.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (B, 3, P, P)
        # channels_last: about 20% faster training steps on one CPU thread, measured.
        return batch.contiguous(memory_format=torch.channels_last)

    return to_tensor(inputs), to_tensor(targets)


def line_weights(target: torch.Tensor, line_weight: float) -> torch.Tensor:
    """(B, 1, H, W) per-pixel loss weights: 1, plus ``line_weight`` on drawn lines.

    A line pixel is much darker than the brightest pixel within 3 px; the weight
    grows with that depth, reaching its full value at a quarter of the value range.
    """
    luma = target.mean(dim=1, keepdim=True)
    depth = F.max_pool2d(luma, kernel_size=7, stride=1, padding=3) - luma
    return 1.0 + line_weight * (depth / 0.5).clamp(0.0, 1.0)


def distillation_loss(
    output: torch.Tensor, target: torch.Tensor, edge_weight: float, line_weight: float
) -> torch.Tensor:
    """Line-weighted L1 on pixels plus L1 on horizontal and vertical differences."""
    weights = line_weights(target, line_weight)
    loss = (weights * (output - target).abs()).mean() / weights.mean()
    for dim in (2, 3):
        edges = F.l1_loss(torch.diff(output, dim=dim), torch.diff(target, dim=dim))
        loss = loss + edge_weight * edges
    return loss


class Trainer:
    """Adam with a linear warm-up and cosine decay to zero over a fixed number of steps."""

    def __init__(self, model: UNetGenerator, config: TrainConfig, device: torch.device):
        self.model = model.to(device, memory_format=torch.channels_last).train()
        self.config = config
        self.device = device
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    def step(self, pools: tuple[Pool, Pool], rng: np.random.Generator) -> float:
        """One optimiser step on a fresh batch; returns the loss."""
        config = self.config
        batch = sample_batch(pools, rng, config.batch, config.patch, config.head_share)
        inputs, targets = (t.to(self.device) for t in batch)
        loss = distillation_loss(
            self.model(inputs), targets, config.edge_weight, config.line_weight
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            # A 6000-step comic run at lr 2e-3 jumped to a stuck output (loss 0.21 -> 1.10
            # within 200 steps) and never came back; clipping stops such a jump.
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        return loss.item()

    def fit(
        self, pools: tuple[Pool, Pool], steps: int, rng: np.random.Generator, label: str
    ) -> dict:
        """Trains for ``steps`` steps; returns a summary (steps, seconds, final loss)."""
        warmup = max(1, int(self.config.warmup * steps))

        def factor(step: int) -> float:
            return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * step / steps))

        schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        every = self.config.log_every
        losses: list[float] = []
        wall, cpu = time.perf_counter(), time.process_time()
        last = wall
        for step in range(1, steps + 1):
            losses.append(self.step(pools, rng))
            schedule.step()
            if step % every == 0 or step == steps:
                now = time.perf_counter()
                images_per_second = self.config.batch * (step % every or every) / (now - last)
                last = now
                print(
                    f"[{label}] step {step}/{steps} loss {np.mean(losses[-every:]):.4f} "
                    f"lr {schedule.get_last_lr()[0]:.2e} {images_per_second:.1f} img/s "
                    f"{now - wall:.0f}s",
                    flush=True,
                )
        self.model.eval()
        return {
            "steps": steps,
            "wall_seconds": round(time.perf_counter() - wall, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
            "final_loss": round(float(np.mean(losses[-50:])), 5),  # mean of the last 50 steps
        }


def budget_clock(device: torch.device):
    """The clock the ``--minutes`` budget is counted on.

    On the CPU it is this process's CPU time: the budget means minutes of one core,
    and a neighbour loading the shared machine then slows the run without shrinking
    its training. On CUDA the GPU does the work, so wall time.
    """
    return time.process_time if device.type == "cpu" else time.perf_counter


def seconds_per_step(
    model: UNetGenerator, pools: tuple[Pool, Pool], config: TrainConfig, device: torch.device
) -> float:
    """Times a few steps on a throwaway copy, so the real run's randomness is untouched."""
    probe = Trainer(copy.deepcopy(model), config, device)
    rng = np.random.default_rng(config.seed + 1000)
    clock = budget_clock(device)
    times = []
    for _ in range(4):
        start = clock()
        probe.step(pools, rng)
        times.append(clock() - start)
    return float(np.median(times[1:]))


def _read_registry(out: Path) -> dict:
    path = out / REGISTRY_FILE
    return json.loads(path.read_text()) if path.is_file() else {"styles": []}


def _require_style(out: Path, style: str, document: dict) -> None:
    """Raises ValueError unless ``document`` (``out``'s registry) has the style a background
    model is trained for."""
    if not any(entry["name"] == style for entry in document["styles"]):
        raise ValueError(f"{out / REGISTRY_FILE} has no style {style!r} to give a background model; "
                         "train --part both first")


def update_registry(out: Path, style: str, width: int, part: str = "both") -> None:
    """Adds this style's entry to ``registry.json``, or updates the trained fields of the
    one there (its picture settings, such as ``tone`` and ``wash``, are kept); "toon" stays
    the default.

    ``part`` "both": head and background name the same weights file, one model serving
    both passes (a background model the style had is no longer used; its file stays).
    "background": only the background's file and width change; the style's entry must
    exist.
    """
    path = out / REGISTRY_FILE
    document = _read_registry(out)
    earlier = next((entry for entry in document["styles"] if entry["name"] == style), None)
    if part == "background":
        _require_style(out, style, document)
        trained = {"background": f"{style}_background.safetensors", "background_width": width}
    else:
        trained = {
            "name": style,
            "description": DESCRIPTIONS[style],
            "head": f"{style}.safetensors",
            "background": f"{style}.safetensors",
            "width": width,
            "background_width": width,
            "source": "trained by this project: tools/train_style.py (docs/MODEL_CARD.md)",
            "licence": "this project's own; no third-party weights or data",
        } | ({"finish": style} if style in FINISHES else {})
    entries = [entry for entry in document["styles"] if entry["name"] != style]
    entries.append((earlier or {}) | trained)
    entries.sort(key=lambda entry: (entry["name"] != DEFAULT_STYLE, entry["name"]))
    names = [entry["name"] for entry in entries]
    default = DEFAULT_STYLE if DEFAULT_STYLE in names else names[0]
    path.write_text(json.dumps({"default": default, "styles": entries}, indent=2) + "\n")


def machine() -> dict:
    """What the run ran on, for the record."""
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run(config: TrainConfig) -> dict:
    """Builds the pools, trains the model, writes weights, record and registry entry."""
    if config.part == "background":  # before the training, not after it
        _require_style(Path(config.out), config.style, _read_registry(Path(config.out)))
    torch.set_num_threads(config.threads)
    cv2.setNumThreads(config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    clock = budget_clock(device)
    wall, start = time.perf_counter(), clock()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    photos = {photo.id: packaged.load(photo.id) for photo in packaged.TRAINING}
    renderer = teacher(config.style)
    pools = (
        build_head_pool(config, renderer, photos, rng),
        build_background_pool(config, renderer, photos, rng),
    )
    data_seconds = clock() - start
    print(f"pools ready in {data_seconds:.0f}s: head {len(pools[0].inputs)}, "
          f"background {len(pools[1].inputs)}", flush=True)
    model = random_generator(UNetConfig(width=config.width), seed=config.seed)
    steps = config.steps
    if steps is None:
        remaining = config.minutes * 60.0 - (clock() - start)
        per_step = seconds_per_step(model, pools, config, device)
        steps = max(1, int(0.97 * remaining / per_step))
        print(f"{per_step:.2f} s/step -> {steps} steps", flush=True)
    trainer = Trainer(model, config, device)
    fitted = trainer.fit(pools, steps, np.random.default_rng(config.seed + 10), config.style)
    stem = config.style if config.part == "both" else f"{config.style}_{config.part}"
    save_weights(trainer.model.cpu(), out / f"{stem}.safetensors")
    record = {
        "config": asdict(config),
        "evaluation_photos_never_used": [photo.id for photo in packaged.EVALUATION],
        "training_photos": [photo.id for photo in packaged.TRAINING],
        "pools": {"head": pools[0].sources, "background": pools[1].sources},
        "machine": machine() | {"device": str(device), "threads": config.threads},
        "budget_clock": "process CPU time" if device.type == "cpu" else "wall time",
        "data_seconds": round(data_seconds, 1),
        "model": fitted,
        "parameters": sum(p.numel() for p in model.parameters()),
        "budget_seconds": round(clock() - start, 1),
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }
    (out / f"{stem}_train.json").write_text(json.dumps(record, indent=2) + "\n")
    update_registry(out, config.style, config.width, config.part)
    return record


def parse_args() -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = TrainConfig(style=DEFAULT_STYLE, out="cartoon/styles")
    parser.add_argument("--style", required=True, choices=sorted(DESCRIPTIONS))
    parser.add_argument("--out", default=defaults.out, help="weights dir; registry.json is updated")
    floats = ("minutes", "head_share", "lr", "grad_clip", "edge_weight", "line_weight")
    integers = (
        "seed", "width", "batch", "patch", "head_pool", "background_variants",
        "synthetic_scenes", "threads",
    )
    for names, kind in ((floats, float), (integers + ("log_every",), int)):
        for name in names:
            flag = f"--{name.replace('_', '-')}"
            parser.add_argument(flag, type=kind, default=getattr(defaults, name))
    parser.add_argument("--part", choices=("both", "background"), default=defaults.part,
                        help="train one model for both passes, or the background pass's own")
    parser.add_argument("--steps", type=int, help="fixed step count instead of the budget")
    parser.add_argument("--device", default=defaults.device, help='"auto", "cpu" or "cuda"')
    return TrainConfig(**vars(parser.parse_args()))


def main() -> None:
    record = run(parse_args())
    print(json.dumps(record["model"], indent=2))


if __name__ == "__main__":
    main()
