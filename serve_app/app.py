"""The graph's wiring: ``serve run serve_config.yaml`` imports ``build_app`` from here."""

from ray.serve import Application

from cartoon.image.styles import StyleRegistry
from deployments.cartoonizer import Cartoonizer
from deployments.face_aligner import FaceAligner
from deployments.postprocessor import Postprocessor
from deployments.settings import AppArgs
from deployments.video_jobs import VideoJobRunner
from serve_app.ingress import Ingress

# A replica told to stop finishes its requests first; seconds beyond the request
# timeout for the last stage's answer to reach the client.
SHUTDOWN_MARGIN_S = 5.0


def build_app(args: AppArgs) -> Application:
    """Ingress -> FaceAligner -> Cartoonizer -> Postprocessor, every knob from ``args``;
    video jobs: Ingress -> VideoJobRunner -> the same three stages.

    The style registry is read here, once, and handed to every replica, so all of them
    serve the same styles even if ``registry.json`` changes while replicas start.
    Every replica waits out the request timeout when it is stopped (a downscale, a
    redeploy), so no admitted request is cut off; Serve's own default is 20 s. A
    VideoJobRunner waits ``job_shutdown_s`` for its jobs, then hands back the rest.
    """
    registry = StyleRegistry.from_directory(args.styles_dir)
    shutdown = {"graceful_shutdown_timeout_s": args.request_timeout_s + SHUTDOWN_MARGIN_S}
    aligner = FaceAligner.options(**shutdown).bind(args, registry)
    cartoonizer = Cartoonizer.options(**shutdown).bind(args, registry)
    postprocessor = Postprocessor.options(**shutdown).bind(args.stage_niceness)
    video_jobs = VideoJobRunner.options(
        graceful_shutdown_timeout_s=args.job_shutdown_s, max_ongoing_requests=args.video_jobs_per_replica,
    ).bind(aligner, cartoonizer, postprocessor, args, registry)
    return Ingress.options(**shutdown).bind(aligner, cartoonizer, postprocessor, video_jobs, args, registry)
