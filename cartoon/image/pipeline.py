"""The three stages as plain objects, and ``Pipeline``: all of them in one process.

The served graph runs the very same objects, one per deployment:
``Preparer`` (FaceAligner), ``Stylizer`` (Cartoonizer), ``Composer`` (Postprocessor).
A ``Job`` carries one image from stage to stage; it holds numpy arrays only.
"""

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from cartoon.image import codec
from cartoon.image.align import similarity_transform, warp_crop
from cartoon.image.background import TilePlan, shrink, split, stitch
from cartoon.image.compose import DEFAULT_MAX_OUTPUT_PIXELS, compose, output_size, resize_to, scale_transform
from cartoon.constants import CROP_SIZE, REFERENCE_POINTS_5, REFERENCE_POINTS_68
from cartoon.errors import TooManyPiecesError
from cartoon.image.faces import DetectorConfig, Face, FaceDetector
from cartoon.image.styles import StyleRegistry, Stylizer
from cartoon.image.tone import ToneParams, apply_tone, apply_tone_to_crop, tone_map


@dataclass(frozen=True)
class Options:
    """Per-request choices."""

    style: str | None = None  # None: the registry's default
    strength: float = 1.0  # 1 = all cartoon, 0 = the original
    format: str = "png"  # png | jpeg | webp
    quality: int = 90  # JPEG and WebP quality, 1..100
    max_side: int | None = None  # cap on the output's long side; None = input size
    # The photo's global exposure gain (log2) for styles that re-expose it
    # (cartoon.image.tone), fixed by the caller (a video holds it per shot); None: measured.
    exposure: float | None = None


@dataclass(frozen=True)
class PipelineSettings:
    """Service-wide knobs of the algorithm."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    process_side: int = 720  # background short side is shrunk to at most this
    tile: int = 0  # background piece side; 0 = the whole background as one piece
    halo: int = 64  # overlap of neighbouring tiles, >= the UNet's receptive radius
    max_pixels: int = codec.DEFAULT_MAX_PIXELS  # refused above this, read from the header
    background_pixels: int = 2_000_000  # background area cap, whatever the aspect ratio
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS  # the output is shrunk to at most this many pixels
    max_pieces: int = 64  # background pieces per image; refused (422) above
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    precision: str = "auto"  # cartoon.model.inference.choose_mode: fp32 is the reference
    tone: ToneParams = field(default_factory=ToneParams)  # for styles whose tone is "photo"
    # The background model's working scale, "auto" or in (0, 1]:
    # cartoon.model.inference.choose_background_scale (auto: 0.5 on the fp32 CPU path,
    # 1.24x the images/s at c=8 for thicker outlines and dashes on bokeh; 1, the default, full size).
    background_scale: float | str = 1.0


@dataclass(frozen=True)
class FaceInfo:
    """A detected face as reported to clients (coordinates of the input image)."""

    box: tuple[float, float, float, float]
    score: float
    # The five alignment points: eye centres, nose tip, mouth corners (68-point model)
    # or the four eye corners and the nose base (5-point model).
    points: tuple[tuple[float, float], ...]

    def public(self) -> dict:
        return {"box": list(self.box), "score": self.score, "points": [list(p) for p in self.points]}


@dataclass(frozen=True)
class FullSize:
    """The parts of a ``Job`` only the Postprocessor reads, kept away from the Cartoonizer.

    Attributes:
        original: (height, width, 3) uint8 when strength < 1, else None.
        alpha: (height, width) uint8 for transparent inputs, else None.
    """

    original: np.ndarray | None = None
    alpha: np.ndarray | None = None


@dataclass
class Job:
    """One image between stages.

    Attributes:
        height, width: the output size.
        options: the request's options.
        faces: what was found, largest first.
        matrices: (F, 2, 3) output-size picture -> crop transforms.
        heads: (F, 288, 288, 3) uint8 crops, stylized after the Cartoonizer.
        background: (N, T, T, 3) uint8 pieces, stylized after the Cartoonizer.
        plan: how to stitch the background pieces.
        original: (height, width, 3) uint8 when strength < 1, else None.
        alpha: (height, width) uint8 for transparent inputs, else None.
        timings: stage name -> milliseconds.
        batch_sizes: size of each UNet batch this job's pieces rode in.
        handed_over_at: wall-clock time the last stage finished, so the next stage
            can tell how long the job waited in queues and in transfer.
        paste_mask: (288, 288) uint8 the style's own paste-back mask (set with the
            stylized pieces), or None for the default ellipse.
        deadline: wall-clock time after which nobody waits for the result (0 = none),
            so every stage can skip work that can no longer be delivered.
        notices: what decoding changed about the input (``cartoon.image.codec`` notices).
    """

    height: int
    width: int
    options: Options
    faces: list[FaceInfo]
    matrices: np.ndarray
    heads: np.ndarray
    background: np.ndarray
    plan: TilePlan
    original: np.ndarray | None = None
    alpha: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    handed_over_at: float = 0.0
    paste_mask: np.ndarray | None = None
    deadline: float = 0.0
    notices: tuple[str, ...] = ()

    def split_full_size(self) -> tuple["Job", FullSize]:
        """The job without its full-size arrays, and those arrays."""
        return replace(self, original=None, alpha=None), FullSize(self.original, self.alpha)

    def with_full_size(self, full_size: FullSize) -> "Job":
        """The job with full-size arrays put back (the Postprocessor's input)."""
        return replace(self, original=full_size.original, alpha=full_size.alpha)

    def record_wait(self, stage: str) -> None:
        """Notes how long the job took to reach ``stage`` since it was handed over."""
        if self.handed_over_at:
            self.timings[f"wait_{stage}"] = max(0.0, (time.time() - self.handed_over_at) * 1000.0)


@dataclass
class Result:
    """The encoded output and what the client is told about it.

    Attributes:
        notices: short codes of what decoding changed about the input, in the order
            they happened (``cartoon.image.codec``: ``icc_converted_to_srgb``,
            ``icc_profile_ignored``, ``first_frame_only``); empty when nothing was.
    """

    data: bytes
    media_type: str
    width: int
    height: int
    faces: list[FaceInfo]
    timings: dict[str, float]
    batch_sizes: list[int]
    notices: tuple[str, ...] = ()


def checked_output_size(height: int, width: int, options: Options, settings: PipelineSettings) -> tuple[int, int]:
    """The output's (height, width) for an input of this size (the header's will do).

    EXIF orientation may swap the two, which changes neither the output's sides nor
    the verdict.

    Raises:
        OutputTooLargeError: the format cannot hold the output (``codec.MAX_OUTPUT_SIDE``).
    """
    height, width = output_size(height, width, options.max_side, settings.max_output_pixels)
    codec.check_encodable(options.format, height, width)
    return height, width


@contextmanager
def timed(timings: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + (time.perf_counter() - start) * 1000.0


class Preparer:
    """Decode, detect, align, and cut the background: everything before the UNet."""

    def __init__(self, settings: PipelineSettings = PipelineSettings(), registry: StyleRegistry | None = None):
        self.settings = settings
        # Styles may pad the background their own way (DCT-Net's padTo16x); without a
        # registry every style is padded the native way.
        self.registry = registry
        self.detector = FaceDetector(settings.detector)
        five = settings.detector.landmark_points == 5
        self.reference = REFERENCE_POINTS_5 if five else REFERENCE_POINTS_68

    def prepare(self, data: bytes, options: Options) -> Job:
        """Decodes bytes and prepares them; raises the typed errors of ``codec.decode``.

        An output its format cannot hold is refused from the header, before decoding.
        """
        timings: dict[str, float] = {}
        with timed(timings, "decode"):
            info = codec.probe(data, self.settings.max_pixels)
            checked_output_size(info.height, info.width, options, self.settings)
            decoded = codec.decode(data, self.settings.max_pixels)
        return self.prepare_array(decoded.rgb, options, decoded.alpha, timings, decoded.notices)

    def prepare_array(
        self,
        rgb: np.ndarray,
        options: Options,
        alpha: np.ndarray | None = None,
        timings: dict[str, float] | None = None,
        notices: tuple[str, ...] = (),
        faces: list[Face] | None = None,
    ) -> Job:
        """Prepares a decoded (H, W, 3) uint8 picture.

        ``faces``, when given (a video's tracked faces, largest first), are used as they
        are instead of detecting them.

        Raises:
            OutputTooLargeError: the output would not fit its format.
            TooManyPiecesError: the background needs more than ``max_pieces`` pieces.
        """
        timings = {} if timings is None else timings
        height, width = checked_output_size(*rgb.shape[:2], options, self.settings)
        if faces is None:
            with timed(timings, "detect"):
                faces = self.detector.detect(rgb)
        scale_x, scale_y = width / rgb.shape[1], height / rgb.shape[0]
        tone = None
        if self.registry is not None and self.registry.get(options.style).tone == "photo":
            with timed(timings, "tone"):
                tone = tone_map(rgb, [face.box for face in faces], self.settings.tone, options.exposure)
        with timed(timings, "align"):
            matrices = np.array(
                [similarity_transform(face.points, self.reference) for face in faces]
            ).reshape(-1, 2, 3)
            heads = [warp_crop(rgb, matrix) for matrix in matrices]
            if tone is not None:
                heads = [apply_tone_to_crop(head, tone, matrix) for head, matrix in zip(heads, matrices)]
            heads = np.array(heads, dtype=np.uint8).reshape(-1, CROP_SIZE, CROP_SIZE, 3)
        with timed(timings, "background"):
            padding = self.registry.get(options.style).background_padding if self.registry else "mirror4"
            background = shrink(rgb, self.settings.process_side, self.settings.background_pixels, padding)
            if tone is not None:
                background = apply_tone(background, tone)
            pieces, plan = split(background, self.settings.tile, self.settings.halo, padding)
            if len(pieces) > self.settings.max_pieces:
                raise TooManyPiecesError(
                    f"the background needs {len(pieces)} pieces, over the limit of {self.settings.max_pieces}"
                )
            original = resize_to(rgb, height, width) if options.strength < 1.0 else None
            if alpha is not None:
                alpha = resize_to(alpha, height, width)
        reported = [
            FaceInfo(
                box=face.box,
                score=face.score,
                points=tuple(tuple(map(float, p)) for p in face.points),
            )
            for face in faces
        ]
        return Job(
            height=height,
            width=width,
            options=options,
            faces=reported,
            matrices=np.array([scale_transform(m, scale_x, scale_y) for m in matrices]).reshape(-1, 2, 3),
            heads=heads,
            background=pieces,
            plan=plan,
            original=original,
            alpha=alpha,
            timings=timings,
            handed_over_at=time.time(),
            notices=notices,
        )


def stylize_job(job: Job, stylizer: Stylizer, finish: bool = True) -> Job:
    """Runs a whole job's pieces through one stylizer, one batch per kind (in-process path).

    Without ``finish`` the style's finish is left out (a video finishes frames in order,
    ``cartoon.image.finish.TemporalFinish``).
    """
    return stylize_jobs([job], stylizer, finish)[0]


def stylize_jobs(jobs: list[Job], stylizer: Stylizer, finish: bool = True) -> list[Job]:
    """Runs several jobs' pieces through one stylizer: one batch per kind and piece shape.

    The head crops of every job (all 288x288) ride in one batch, the background pieces
    in one batch per piece shape; one job alone gets one batch per kind. ``finish`` as
    in ``stylize_job``.
    """
    def run(pieces: np.ndarray, kind: str) -> np.ndarray:
        return stylizer.run(pieces, kind, None if finish else [False] * len(pieces))

    start = time.perf_counter()
    heads, head_batches = _stylize_stacks(run, "head", [job.heads for job in jobs])
    backgrounds, background_batches = _stylize_stacks(run, "background", [job.background for job in jobs])
    milliseconds = (time.perf_counter() - start) * 1000.0
    stylized = []
    for job, head, head_batch, background, background_batch in zip(
        jobs, heads, head_batches, backgrounds, background_batches
    ):
        timings = dict(job.timings)
        timings["unet"] = timings.get("unet", 0.0) + milliseconds
        batch_sizes = job.batch_sizes + [size for size in (head_batch, background_batch) if size]
        # No hand-over in one process: nothing waits between stages.
        stylized.append(replace(
            job, heads=head, background=background, timings=timings, batch_sizes=batch_sizes,
            handed_over_at=0.0, paste_mask=stylizer.paste_mask,
        ))
    return stylized


def _stylize_stacks(
    run: Callable[[np.ndarray, str], np.ndarray], kind: str, stacks: list[np.ndarray]
) -> tuple[list[np.ndarray], list[int]]:
    """Every (N, H, W, 3) uint8 stack through ``run``, the stacks of one piece shape in one batch.

    Returns:
        The stylized stacks in order, and the size of the batch each rode in (0 for an
        empty stack, which rides in none).
    """
    outputs, sizes = list(stacks), [0] * len(stacks)
    by_shape: dict[tuple, list[int]] = {}
    for index, stack in enumerate(stacks):
        if len(stack):
            by_shape.setdefault(stack.shape[1:], []).append(index)
    for indices in by_shape.values():
        batch = np.concatenate([stacks[index] for index in indices])  # (B, H, W, 3)
        parts = np.split(run(batch, kind), np.cumsum([len(stacks[index]) for index in indices])[:-1])
        for index, part in zip(indices, parts):
            outputs[index], sizes[index] = part, len(batch)
    return outputs, sizes


class Composer:
    """Stitch, paste heads back, blend by strength, encode."""

    def picture(self, job: Job) -> np.ndarray:
        """The composed (height, width, 3) uint8 picture, not encoded (a video frame)."""
        return compose(
            stitch(job.background, job.plan),
            job.heads,
            job.matrices,
            job.height,
            job.width,
            job.options.strength,
            job.original,
            None if job.paste_mask is None else job.paste_mask.astype(np.float32) / 255.0,
        )

    def compose(self, job: Job) -> Result:
        job.record_wait("postprocessor")
        timings = dict(job.timings)
        with timed(timings, "compose"):
            picture = self.picture(job)
        with timed(timings, "encode"):
            data = codec.encode(picture, job.options.format, job.options.quality, job.alpha)
        return Result(
            data=data,
            media_type=codec.MEDIA_TYPES[job.options.format],
            width=job.width,
            height=job.height,
            faces=job.faces,
            timings=timings,
            batch_sizes=job.batch_sizes,
            notices=job.notices,
        )


class Pipeline:
    """The whole cartoonization in one process: the reference the served graph must match."""

    def __init__(self, registry: StyleRegistry, settings: PipelineSettings = PipelineSettings()):
        self.registry = registry
        self.settings = settings
        self.preparer = Preparer(settings, registry)
        self.composer = Composer()
        self._stylizers: dict[str, Stylizer] = {}

    def stylizer(self, style: str | None) -> Stylizer:
        entry = self.registry.get(style)
        if entry.name not in self._stylizers:
            self._stylizers[entry.name] = Stylizer.from_style(
                entry, self.settings.device, self.settings.precision,
                self.settings.background_scale, tiled=bool(self.settings.tile),
            )
        return self._stylizers[entry.name]

    def __call__(self, image: bytes | np.ndarray, options: Options = Options()) -> Result:
        """Cartoonizes encoded bytes or an (H, W, 3) uint8 array."""
        stylizer = self.stylizer(options.style)
        if isinstance(image, np.ndarray):
            job = self.preparer.prepare_array(image, options)
        else:
            job = self.preparer.prepare(image, options)
        return self.composer.compose(stylize_job(job, stylizer))
