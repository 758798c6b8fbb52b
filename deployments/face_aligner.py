"""FaceAligner: decode, detect, align head crops, cut the background into pieces."""

from ray import serve

from cartoon.pipeline import Job, Options, Preparer
from cartoon.styles import StyleRegistry
from deployments import metrics
from deployments.settings import AppArgs


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=4)
class FaceAligner:
    def __init__(self, args: AppArgs):
        self.preparer = Preparer(args.pipeline_settings(), StyleRegistry.from_directory(args.styles_dir))

    def prepare(self, data: bytes, options: Options) -> Job:
        """Raises the typed ``cartoon.errors`` for bad images; the ingress maps them to 4xx."""
        job = self.preparer.prepare(data, options)
        metrics.record_stages(job.timings, metrics.ALIGNER_STAGES)
        metrics.record_faces(len(job.faces))
        return job

    def ping(self) -> bool:
        return True
