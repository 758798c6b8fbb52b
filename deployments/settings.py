"""Every knob of the application, typed, with defaults that run on a CPU-only laptop."""

import re
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from cartoon.image.faces import DetectorConfig
from cartoon.image.compose import DEFAULT_MAX_OUTPUT_PIXELS
from cartoon.constants import DETECT_LONG_SIDE, UNET_STRIDE
from cartoon.errors import WeightsError
from cartoon.image.codec import DEFAULT_MAX_PIXELS
from cartoon.image.pipeline import PipelineSettings
from cartoon.image.styles import DEFAULT_STYLES_DIR, StyleRegistry

ORIGIN = re.compile(r"^https?://[^/\s]+$")


class SimulatedForward(BaseModel):
    """BENCHMARKS AND TESTS ONLY: the UNet replaced by a sleep (deployments/simulated.py)."""

    model_config = {"extra": "forbid"}

    fixed_ms: float = Field(ge=0, description="cost of any forward pass")
    ms_per_megapixel: float = Field(ge=0, description="added cost per million input pixels of the batch")
    device_lock: str | None = Field(None, description="file locked during a forward: replicas sharing it take turns")


class AppArgs(BaseModel):
    """Arguments of ``build_app``: the ``args`` block of a Serve config."""

    model_config = {"extra": "forbid"}

    styles_dir: str = Field(str(DEFAULT_STYLES_DIR), description="directory holding registry.json and weights")
    device: str = Field(
        "auto", description="auto (CUDA when Ray gave the replica a GPU, else CPU), cpu, cuda or cuda:N"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="UNet precision: auto (fp16 on CUDA, bf16 on CPUs with native bf16, else fp32)"
    )
    background_scale: float | Literal["auto"] = Field(
        1.0,
        description="working scale of the background model, edges restored by guided upsampling: auto (0.5 on "
        "the fp32 CPU path, else 1) or a number in (0, 1]; 1 = full size, the reference",
    )
    cpu_threads: int = Field(0, ge=0, description="torch threads on CPU; 0 = the replica's num_cpus, at least 1")
    styles_per_replica: int = Field(4, ge=1, description="styles each Cartoonizer keeps loaded (LRU)")
    gpu_memory_fraction: float = Field(
        0.0, ge=0.0, le=1.0,
        description="per-replica CUDA memory cap; 0 = the replica's num_gpus less 1 GiB for the CUDA context",
    )
    process_side: int = Field(720, ge=64, description="background short side is shrunk to at most this")
    tile: int = Field(0, ge=0, description="background piece side (multiple of 4); 0 = whole background")
    halo: int = Field(64, ge=0, description="overlap between background tiles, >= the UNet's receptive radius")
    landmark_points: Literal[5, 68] = Field(5, description="5 (public domain) or 68 (non-commercial use only)")
    detect_long_side: int = Field(DETECT_LONG_SIDE, ge=64, description="the face detector runs on a copy this long")
    score_threshold: float = Field(0.3, description="HOG detection score below which a face is dropped")
    max_faces: int = Field(8, ge=0, description="faces stylized per image, largest first")
    min_face: int = Field(40, ge=1, description="faces smaller than this (px) are ignored")
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1, description="request body limit (413 above)")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="width * height limit from the header (413)")
    background_pixels: int = Field(
        2_000_000, ge=1, description="background area cap after shrinking, whatever the aspect ratio"
    )
    max_output_pixels: int = Field(
        DEFAULT_MAX_OUTPUT_PIXELS, ge=1, description="the output is shrunk (aspect kept) to at most this many pixels"
    )
    max_pieces: int = Field(64, ge=1, description="background pieces per image; 422 above")
    max_batch_items: int = Field(32, ge=1, description="images in one /v1/cartoonize/batch request")
    max_batch_pixels: int = Field(
        16_000_000, ge=1, description="sum of the header-declared pixels of one batch request (413 above)"
    )
    request_timeout_s: float = Field(60.0, gt=0, description="a request still running after this gets 504")
    simulated_forward: SimulatedForward | None = Field(
        None, description="BENCHMARKS AND TESTS ONLY: replace the UNet by a calibrated sleep"
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with 503 when queues are full")
    replica_retries: int = Field(
        2, ge=0, description="times a request whose replica died is sent again, within its deadline"
    )
    stage_niceness: int = Field(
        0, ge=0, le=19,
        description="nice value of the FaceAligner, Cartoonizer and Postprocessor processes, so the HTTP path "
        "(proxy, Ingress, refusals) runs first on busy cores; 0 = as the proxy",
    )
    poison_ttl_s: float = Field(
        3600.0, ge=0,
        description="seconds an input in flight at a replica's crash is remembered (serve_app.suspects); one "
        "whose trial alone crashed too is refused that long (422 poison_input)",
    )
    min_in_flight: int = Field(
        8, ge=1,
        description="images each Ingress replica admits at least, and while neither its throughput nor the "
        "Cartoonizers' start-up forward is known",
    )
    max_in_flight: int = Field(
        200, ge=1, description="requests each Ingress replica admits at most, whatever its throughput"
    )
    api_key_file: str = Field(
        "", description="file holding the API key (CARTOON_API_KEY wins); empty and no variable = open"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed by CORS, e.g. https://app.example.com; empty = off"
    )
    jobs_dir: str = Field(
        str(Path(tempfile.gettempdir()) / "cartoon-jobs"),
        description="video jobs' state, uploads and results; every Ingress and VideoJobRunner replica must see "
                    "the same store: a local path (a shared volume on a cluster) or a URI of pyarrow's "
                    "filesystems (file://, s3://, gs://, abfs://)",
    )
    max_video_bytes: int = Field(200 * 1024 * 1024, ge=1, description="video upload limit (413 above)")
    max_video_seconds: float = Field(600.0, gt=0, description="longest video taken (413 video_too_long above)")
    max_video_pixels: int = Field(
        1920 * 1080, ge=1, description="largest video frame, width x height (413 too_many_pixels above)"
    )
    video_jobs_per_replica: int = Field(
        1, ge=1, description="video jobs each VideoJobRunner replica runs at once; the rest wait, queued"
    )
    video_frames_in_flight: int = Field(
        8, ge=1, description="frames of one job between decoding and encoding at once (sent through the graph together)"
    )
    video_detect_every: int = Field(5, ge=1, description="frames between face detections in a video (tracked in between)")
    job_lost_after_s: float = Field(
        30.0, gt=0, description="a queued or running job whose holder has not said a word for this long is sent again"
    )
    job_max_attempts: int = Field(
        3, ge=1, description="times a job is sent to a runner; when the last runner dies too, the job is lost"
    )
    job_retention_s: float = Field(
        86400.0, gt=0, description="finished jobs and their files are deleted this long after they finished"
    )
    max_queued_jobs: int = Field(32, ge=1, description="video jobs waiting for a runner, all clients together (503 above)")
    max_jobs_per_client: int = Field(
        2, ge=1, description="queued and running video jobs of one client (API key, else address; 429 above)"
    )
    max_jobs_bytes: int = Field(
        8 * 1024**3, ge=1, description="bytes of every job's files together in jobs_dir (507 for an upload beyond)"
    )
    job_shutdown_s: float = Field(
        600.0, gt=0, description="a VideoJobRunner told to stop finishes its jobs this long, then hands them back"
    )
    live_sessions_per_replica: int = Field(
        4, ge=0, description="live camera sessions (GET /v1/live) each Ingress replica holds at once; 0 = live off"
    )
    live_sessions_total: int = Field(
        8, ge=0, description="live sessions of all Ingress replicas together; 0 = only the per-replica bound"
    )
    live_max_frame_bytes: int = Field(1_000_000, ge=1, description="an encoded live camera frame (closed 4413 above)")
    live_max_frame_pixels: int = Field(
        1920 * 1080, ge=1, description="a live camera frame's width x height, from its header (closed 4413 above)"
    )
    live_max_size: int = Field(1280, ge=64, description="the longest cartoon side a live client may ask for")
    live_send_timeout_s: float = Field(
        5.0, gt=0, description="a live client that acknowledges cartoons and acknowledged none for this long is closed (4408 slow_client)"
    )
    live_max_session_s: float = Field(
        100.0, gt=0,
        description="a live session is closed after this (4000 session_time; the page reconnects); keep it under "
        "http_options.request_timeout_s, where Serve's proxy cuts every request, WebSockets included",
    )
    live_idle_timeout_s: float = Field(
        30.0, gt=0, description="a live client that sends nothing for this long is closed (4408 idle), freeing its seat"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "AppArgs":
        """Checks across fields, so a bad config fails ``serve run`` instead of serving 500s."""
        problems = []
        if self.halo % UNET_STRIDE:
            problems.append(f"halo ({self.halo}) must be a multiple of {UNET_STRIDE}")
        if self.tile and (self.tile % UNET_STRIDE or self.tile <= 2 * self.halo):
            problems.append(
                f"tile ({self.tile}) must be 0 or a multiple of {UNET_STRIDE} above 2 * halo ({2 * self.halo})"
            )
        if self.background_scale != "auto" and not 0.0 < self.background_scale <= 1.0:
            problems.append(f"background_scale ({self.background_scale}) must be 'auto' or in (0, 1]")
        elif self.background_scale != "auto" and self.background_scale < 1.0 and self.tile:
            problems.append(
                f"background_scale ({self.background_scale}) below 1 needs whole backgrounds (tile 0): a tile's "
                "halo would shrink with it below the UNet's receptive radius"
            )
        if self.background_pixels < self.process_side**2:
            problems.append(
                f"background_pixels ({self.background_pixels}) must be at least process_side squared "
                f"({self.process_side**2})"
            )
        if self.max_in_flight < self.min_in_flight:
            problems.append(f"max_in_flight ({self.max_in_flight}) must be >= min_in_flight ({self.min_in_flight})")
        try:
            StyleRegistry.from_directory(self.styles_dir)
        except WeightsError as exc:
            problems.append(f"styles_dir ({self.styles_dir}): {exc}")
        if self.api_key_file and not _readable_key(self.api_key_file):
            problems.append(f"api_key_file ({self.api_key_file}) is not a readable file holding a key")
        problems += [f"cors_origins: {origin!r} is not '*' or scheme://host[:port]"
                     for origin in self.cors_origins if origin != "*" and not ORIGIN.match(origin)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def pipeline_settings(self) -> PipelineSettings:
        return PipelineSettings(
            detector=DetectorConfig(
                landmark_points=self.landmark_points,
                detect_long_side=self.detect_long_side,
                score_threshold=self.score_threshold,
                max_faces=self.max_faces,
                min_face=self.min_face,
            ),
            process_side=self.process_side,
            tile=self.tile,
            halo=self.halo,
            max_pixels=self.max_pixels,
            background_pixels=self.background_pixels,
            max_output_pixels=self.max_output_pixels,
            max_pieces=self.max_pieces,
            device=self.device,
            precision=self.precision,
            background_scale=self.background_scale,
        )


def _readable_key(path: str) -> bool:
    try:
        return bool(Path(path).read_text().strip())
    except OSError:
        return False


class BatchingConfig(BaseModel):
    """The Cartoonizer's ``user_config``: changed live through ``reconfigure``."""

    model_config = {"extra": "forbid"}

    max_batch_size: int = Field(8, ge=1, description="pieces (head crops or tiles) per UNet forward")
    batch_wait_timeout_s: float = Field(
        0.02, ge=0, description="how long a batch waits to fill (the start value when adaptive)"
    )
    adaptive_batch_wait: bool = Field(
        False, description="set the wait from measured forward times (deployments/batching.py)"
    )
    max_batch_wait_s: float = Field(0.5, gt=0, description="upper bound of the adaptive wait")
