"""The service's own Prometheus metrics, next to the ones Ray Serve records itself.

Ray exports them from each node's metrics port with a ``ray_`` prefix: the
histograms as ``ray_<name>_bucket`` / ``_sum`` / ``_count``, the counter as
``ray_<name>_total``. Serve tags each series with the ``deployment``, ``replica`` and
``application`` that recorded it. docs/DEPLOY.md says which ones to watch.
"""

from functools import cache

from ray.serve.metrics import Counter, Histogram

STAGE_LATENCY = "cartoon_stage_latency_ms"
UNET_BATCH_SIZE = "cartoon_unet_batch_size"
FACES_PER_IMAGE = "cartoon_faces_per_image"
HTTP_ERRORS = "cartoon_http_errors"

# The stages each deployment runs, named as in ``Job.timings`` (milliseconds).
ALIGNER_STAGES = ("decode", "detect", "align", "background")
CARTOONIZER_STAGES = ("unet",)
POSTPROCESSOR_STAGES = ("compose", "encode")

# From a thumbnail's decode to a 4K picture's UNet pass on a CPU.
LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]
BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]
# Buckets include their upper bound and must be positive; half steps give 0, 1, 2...
# faces a bucket each (the service stylizes at most AppArgs.max_faces, default 8).
FACE_COUNT_BOUNDARIES = [count + 0.5 for count in range(9)]


# Built on first use, not at import: Serve adds its deployment and replica tags only
# to metrics created inside a running replica. One of each per process.
@cache
def _stage_latency() -> Histogram:
    return Histogram(
        STAGE_LATENCY,
        description="Milliseconds one image spent in a pipeline stage (decode ... encode).",
        boundaries=LATENCY_BOUNDARIES_MS,
        tag_keys=("stage",),
    )


@cache
def _unet_batch_size() -> Histogram:
    return Histogram(
        UNET_BATCH_SIZE,
        description="Pieces (head crops or background tiles) in one UNet forward pass.",
        boundaries=BATCH_SIZE_BOUNDARIES,
        tag_keys=("kind",),
    )


@cache
def _faces_per_image() -> Histogram:
    return Histogram(
        FACES_PER_IMAGE,
        description="Faces found and stylized in one image.",
        boundaries=FACE_COUNT_BOUNDARIES,
    )


@cache
def _http_errors() -> Counter:
    return Counter(
        HTTP_ERRORS,
        description="Error answers of the API, by HTTP status and error code.",
        tag_keys=("status", "code"),
    )


def record_stages(timings: dict[str, float], stages: tuple[str, ...]) -> None:
    """Observes the latency of each of ``stages`` found in ``timings`` (milliseconds)."""
    for stage in stages:
        if stage in timings:
            _stage_latency().observe(timings[stage], tags={"stage": stage})


def record_unet_batch(kind: str, size: int) -> None:
    """Observes one UNet forward pass of ``size`` pieces of ``kind`` ("head" or "background")."""
    _unet_batch_size().observe(size, tags={"kind": kind})


def record_faces(count: int) -> None:
    """Observes how many faces one image brought to the UNet."""
    _faces_per_image().observe(count)


def record_error(status: int, code: str) -> None:
    """Counts one error answer: a whole request's, or one item's of a batch request."""
    _http_errors().inc(tags={"status": str(status), "code": code})
