"""The graph's wiring: ``serve run serve_config.yaml`` imports ``build_app`` from here."""

from ray.serve import Application

from deployments.cartoonizer import Cartoonizer
from deployments.face_aligner import FaceAligner
from deployments.postprocessor import Postprocessor
from serve_app.ingress import Ingress
from deployments.settings import AppArgs


def build_app(args: AppArgs) -> Application:
    """Ingress -> FaceAligner -> Cartoonizer -> Postprocessor, every knob from ``args``."""
    return Ingress.bind(
        FaceAligner.bind(args),
        Cartoonizer.bind(args),
        Postprocessor.bind(),
        args,
    )
