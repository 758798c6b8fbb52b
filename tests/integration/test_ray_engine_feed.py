"""``cartoonize-batch --engine ray`` starts before its plan is walked, and plans only so far ahead.

Run on the Ray of the integration tests, with a plan of photos that do not exist (each
fails at once, ``io: ...``), so only the feeding is measured: the first photo must
finish while most of the plan is still unwalked, and at every finished photo the photos
planned and not finished must be within ``RaySettings.in_flight`` (plus the photo being finished and the one the
walk holds while it waits for room).
"""

from pathlib import PurePosixPath

from cartoon.batch.files import Location, Planned, Tally
from cartoon.batch.ray_engine import RaySettings, run
from cartoon.image.pipeline import Options

PHOTOS = 600
IN_FLIGHT = 32


class Watched(Tally):
    """A tally that notes, at each failure, how many photos the walk had planned."""

    def __init__(self, walked: list[int]):
        super().__init__()
        self.walked, self.seen = walked, []

    def fail(self, relative, error, status=None):
        self.seen.append((self.walked[0], len(self.failures)))
        super().fail(relative, error, status)


def test_photos_start_while_the_plan_is_walked_and_the_driver_holds_a_bounded_number(base_url, tmp_path):
    walked = [0]

    def plan():
        for index in range(PHOTOS):
            walked[0] += 1
            name = PurePosixPath(f"f{index // 100}/p{index:04d}")
            yield Planned(name.with_suffix(".jpg"), name.with_suffix(".png"))

    tally = Watched(walked)
    source, target = Location.parse(str(tmp_path / "in")), Location.parse(str(tmp_path / "out"))
    run(plan(), source, target, Options(), RaySettings(unet_actors=1, cpus_per_actor=0.5, in_flight=IN_FLIGHT),
        tally, [])
    assert len(tally.failures) == PHOTOS and all(f["error"].startswith("io: ") for f in tally.failures)
    first_walked, _ = tally.seen[0]
    assert first_walked < PHOTOS // 2, f"the first photo finished only after {first_walked} were planned"
    ahead = max(planned - finished for planned, finished in tally.seen)
    assert ahead <= IN_FLIGHT + 2, f"{ahead} photos planned ahead of those finished"
