"""Work whose deadline has passed is skipped by every CPU stage, not done for nobody."""

import time

import pytest

from cartoon.image.pipeline import Options
from cartoon.image.styles import StyleRegistry
from deployments.deadlines import DeadlineExceeded
from deployments.face_aligner import FaceAligner
from deployments.postprocessor import Postprocessor
from deployments.settings import AppArgs
from tests import photos


@pytest.fixture(scope="module")
def aligner():
    args = AppArgs(stage_niceness=0)  # the test process's own priority stays
    return FaceAligner.func_or_class(args, StyleRegistry.from_directory(args.styles_dir))


@pytest.fixture(scope="module")
def portrait() -> bytes:
    return photos.encode(photos.astronaut())


def test_a_job_carries_its_deadline_through_the_stages(aligner, portrait):
    deadline = time.time() + 60
    job = aligner.prepare(portrait, Options(), deadline)
    pieces, full_size = job.split_full_size()
    assert job.deadline == pieces.deadline == deadline
    assert Postprocessor.func_or_class().compose(pieces, full_size).width == 512


def test_the_aligner_skips_an_image_whose_deadline_passed(aligner, portrait):
    with pytest.raises(DeadlineExceeded, match="FaceAligner"):
        aligner.prepare(portrait, Options(), time.time() - 1)


def test_the_postprocessor_skips_a_job_whose_deadline_passed(aligner, portrait):
    job = aligner.prepare(portrait, Options(), time.time() + 60)
    job.deadline = time.time() - 1
    with pytest.raises(DeadlineExceeded, match="Postprocessor"):
        Postprocessor.func_or_class().compose(*job.split_full_size())
