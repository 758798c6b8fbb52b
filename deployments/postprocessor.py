"""Postprocessor: stitch the background, paste heads back, blend, resize, encode."""

import numpy as np
from ray import serve

from cartoon.image.pipeline import Composer, FullSize, Job, Result
from deployments import deadlines, metrics
from deployments.priority import lower_priority


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=4)
class Postprocessor:
    def __init__(self, niceness: int = 0):
        lower_priority(niceness)
        self.composer = Composer()

    def compose(self, job: Job, full_size: FullSize) -> Result:
        """Composes the stylized ``job`` with the full-size arrays the FaceAligner made.

        Skips the job (``DeadlineExceeded``) when its deadline passed while it queued.
        """
        deadlines.check(job.deadline, "the Postprocessor")
        result = self.composer.compose(job.with_full_size(full_size))
        metrics.record_stages(result.timings, metrics.POSTPROCESSOR_STAGES)
        return result

    def compose_frame(self, job: Job, full_size: FullSize) -> np.ndarray:
        """The composed (height, width, 3) uint8 picture of a video frame, not encoded."""
        return self.composer.picture(job.with_full_size(full_size))

    def check_health(self) -> None:
        """Serve's per-replica probe, called beside the request queue: nothing to load, so alive is healthy."""
