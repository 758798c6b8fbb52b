"""FaceAligner: decode, detect, align head crops, cut the background into pieces."""

import numpy as np
from ray import serve

from cartoon.image.faces import Face
from cartoon.image.pipeline import Job, Options, Preparer
from cartoon.image.styles import StyleRegistry
from deployments import deadlines, metrics
from deployments.priority import lower_priority
from deployments.settings import AppArgs


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=4)
class FaceAligner:
    def __init__(self, args: AppArgs, registry: StyleRegistry):
        lower_priority(args.stage_niceness)
        self.preparer = Preparer(args.pipeline_settings(), registry)

    def prepare(self, data: bytes, options: Options, deadline: float = 0.0) -> Job:
        """Raises the typed ``cartoon.errors`` for bad images; the ingress maps them to 4xx.

        Skips the image (``DeadlineExceeded``) when its deadline passed while it queued.
        """
        deadlines.check(deadline, "the FaceAligner")
        job = self.preparer.prepare(data, options)
        job.deadline = deadline
        metrics.record_stages(job.timings, metrics.ALIGNER_STAGES)
        metrics.record_faces(len(job.faces))
        return job

    def prepare_frame(self, rgb: np.ndarray, options: Options, faces: list[Face]) -> Job:
        """Prepares one decoded video frame whose faces its job tracked (no detection here)."""
        job = self.preparer.prepare_array(rgb, options, faces=faces)
        metrics.record_stages(job.timings, metrics.ALIGNER_STAGES)
        return job

    def check_health(self) -> None:
        """Serve's per-replica probe, called beside the request queue: the detector is loaded."""
        if self.preparer.detector is None:
            raise RuntimeError("the face detector is not loaded")
