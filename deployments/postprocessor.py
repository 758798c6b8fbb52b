"""Postprocessor: stitch the background, paste heads back, blend, resize, encode."""

from ray import serve

from cartoon.pipeline import Composer, Job, Result
from deployments import metrics


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=4)
class Postprocessor:
    def __init__(self):
        self.composer = Composer()

    def compose(self, job: Job) -> Result:
        result = self.composer.compose(job)
        metrics.record_stages(result.timings, metrics.POSTPROCESSOR_STAGES)
        return result

    def ping(self) -> bool:
        return True
