"""The fast inference path: chosen by what the CPU offers, and within 2/255 of fp32."""

import multiprocessing
import os

import numpy as np
import pytest
import torch

from cartoon.model import inference
from cartoon.model.inference import REDUCED_BACKGROUND_SCALE, choose_background_scale, choose_mode
from cartoon.image.pipeline import Options, Pipeline, PipelineSettings, Preparer
from cartoon.image.styles import StyleRegistry, Stylizer
from tests import photos

CPU = torch.device("cpu")
SHIPPED_STYLES = tuple(StyleRegistry.from_directory().names())
# bf16 keeps 8 significant bits; through the UNet and the fp32 guided filter the
# shipped styles measured at most 2/255 from fp32 (docs/BENCHMARKS.md).
MAX_BF16_DIFFERENCE = 2


@pytest.fixture(scope="module")
def real_pieces():
    """Head crops and whole backgrounds of both real portraits, as the pipeline cuts them."""
    preparer = Preparer()
    pieces = {}
    for name, rgb in (("astronaut", photos.astronaut()), ("grace_hopper", photos.grace_hopper())):
        job = preparer.prepare_array(rgb, Options())
        pieces[f"{name} head"] = ("head", job.heads)
        pieces[f"{name} background"] = ("background", job.background)
    return pieces


@pytest.mark.parametrize("style", SHIPPED_STYLES)
def test_fast_path_output_is_within_two_levels_of_fp32_on_real_photos(style, real_pieces):
    entry = StyleRegistry.from_directory().get(style)
    reference = Stylizer.from_style(entry, "cpu", "fp32")
    fast = Stylizer.from_style(entry, "cpu")  # auto: bf16 where the CPU and the style's probe allow
    assert set(reference.dtypes.values()) == {torch.float32}
    for label, (kind, batch) in real_pieces.items():
        assert len(batch), label
        # The generators, where precision acts; the finish after them snaps to colour
        # bands, so a 1-level difference on a band boundary becomes a whole band there.
        expected = reference.generate(batch, kind).astype(np.int16)
        got = fast.generate(batch, kind).astype(np.int16)
        difference = np.abs(got - expected)
        assert difference.max() <= MAX_BF16_DIFFERENCE, f"{style} {label}: max {difference.max()}/255 ({fast.mode})"
        if fast.dtypes[kind] == torch.bfloat16:  # bf16 really ran, and rounded somewhere
            assert difference.mean() < 0.5 and difference.max() > 0, f"{style} {label}: mean {difference.mean()}"


def test_default_style_runs_bf16_where_the_cpu_has_it():
    fast = Stylizer.from_style(StyleRegistry.from_directory().get(None), "cpu")
    assert fast.mode.precision == ("bf16" if inference.native_cpu_bf16() else "fp32"), fast.mode


def test_a_style_too_far_from_fp32_in_bf16_falls_back_to_fp32(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(inference, "BF16_TOLERANCE", -1)
    fast = Stylizer.from_style(StyleRegistry.from_directory().get(None), "cpu")
    assert set(fast.dtypes.values()) == {torch.float32} and "from fp32 on the probe" in fast.mode.reason


def test_each_model_of_a_style_runs_bf16_only_if_it_holds_on_its_own(monkeypatch):
    """A head model within the tolerance runs bf16 beside a background model that is not."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    style = StyleRegistry.from_directory().get(None)
    assert style.background_width != style.width  # so the check below can tell the models apart
    checked = inference.checked_bf16

    def background_too_far(mode, generators):
        if any(generator.config.width == style.background_width for generator in generators):
            return inference.InferenceMode(
                mode.device, "fp32", mode.channels_last, "bf16 was 9/255 from fp32 on the probe (over 3); fp32")
        return checked(mode, generators)

    monkeypatch.setattr("cartoon.image.styles.checked_bf16", background_too_far)
    fast = Stylizer.from_style(style, "cpu")
    assert fast.dtypes == {"head": torch.bfloat16, "background": torch.float32}
    assert fast.mode.describe()["background_precision"] == "fp32" and "background model" in fast.mode.reason
    picture = np.full((1, 64, 64, 3), 128, np.uint8)
    assert fast.generate(picture, "background").shape == picture.shape


@pytest.mark.parametrize("feature, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_picks_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, feature, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: feature)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    mode = choose_mode(CPU)
    assert mode.precision == expected and mode.channels_last
    assert ("AVX-512 BF16" in mode.reason) == feature
    assert mode.describe()["precision"] == expected


def test_explicit_precisions_and_refusals():
    assert choose_mode(CPU, "fp32").dtype == torch.float32
    assert choose_mode(torch.device("cuda"), "auto").precision == "fp16"
    with pytest.raises(ValueError, match="fp16 on a CPU"):
        choose_mode(CPU, "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_mode(CPU, "int8")


def test_auto_shrinks_the_background_only_on_the_fp32_cpu_path_with_whole_native_backgrounds():
    fp32, bf16 = choose_mode(CPU, "fp32"), choose_mode(CPU, "bf16")
    cuda = choose_mode(torch.device("cuda"), "fp32")
    assert choose_background_scale(fp32) == REDUCED_BACKGROUND_SCALE == 0.5
    assert choose_background_scale(bf16) == 1.0  # the bf16 path stays as it was
    assert choose_background_scale(cuda) == 1.0
    assert choose_background_scale(fp32, generator_mode="tf1") == 1.0  # DCT-Net parity
    assert choose_background_scale(fp32, tiled=True) == 1.0  # a tile's halo would shrink
    assert choose_background_scale(bf16, 0.75) == 0.75
    assert choose_background_scale(fp32, floor=1.0) == 1.0  # a style that loses its outlines at half size
    assert choose_background_scale(fp32, 0.5, floor=1.0) == 0.5  # a scale asked for is taken as it is
    for wrong in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="background_scale"):
            choose_background_scale(fp32, wrong)


def test_comic_keeps_its_background_at_full_size_on_the_fp32_path():
    comic = StyleRegistry.from_directory().get("comic")
    assert Stylizer.from_style(comic, "cpu", "fp32", background_scale="auto").mode.background_scale == 1.0


def test_auto_shrinks_the_fp32_background_and_the_default_does_not():
    style = StyleRegistry.from_directory().get(None)
    reference = Stylizer.from_style(style, "cpu", "fp32")
    assert reference.mode.background_scale == 1.0
    assert Pipeline(StyleRegistry.from_directory(), PipelineSettings(device="cpu", precision="fp32")).stylizer(
        None).mode.background_scale == 1.0
    served = Pipeline(StyleRegistry.from_directory(),
                      PipelineSettings(device="cpu", precision="fp32", background_scale="auto")).stylizer(None)
    assert served.mode.background_scale == 0.5 and served.mode.describe()["background_scale"] == 0.5
    # Heads are never shrunk; backgrounds differ, within what the half scale costs.
    rng = np.random.default_rng(0)
    head = rng.integers(0, 256, (1, 288, 288, 3), dtype=np.uint8)
    np.testing.assert_array_equal(served.generate(head, "head"), reference.generate(head, "head"))
    job = Preparer().prepare_array(photos.grace_hopper(), Options())
    half, full = served.generate(job.background, "background"), reference.generate(job.background, "background")
    assert half.shape == full.shape and not np.array_equal(half, full)


def test_this_machine_reports_its_bf16_feature():
    # Whatever the CPU, auto agrees with the feature probe (CI's CPUs have AVX-512 BF16).
    assert (choose_mode(CPU).precision == "bf16") == (inference.native_cpu_bf16() is not None)


def _count_in_child(directory, count, counted, release):
    in_flight = inference.ImagesInFlight(directory)
    in_flight.add(count)
    counted.set()
    release.wait(30)
    in_flight.close()


def test_images_in_flight_are_counted_across_processes_and_a_dead_ones_are_dropped(tmp_path):
    """Two Cartoonizer replicas on one machine see each other's images in flight."""
    context = multiprocessing.get_context("spawn")
    here = inference.ImagesInFlight(tmp_path)
    here.add(1)
    assert here.total() == 1
    assert inference.forward_threads(2, here.total()) == 2
    counted, release = context.Event(), context.Event()
    child = context.Process(target=_count_in_child, args=(tmp_path, 2, counted, release))
    child.start()
    try:
        assert counted.wait(60)
        assert here.total() == 3
        assert inference.forward_threads(2, here.total()) == 1
    finally:
        child.kill()  # dies without removing its count, as a killed replica does
        child.join(30)
    assert here.total() == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == [str(os.getpid())]
    here.add(-1)
    here.close()
    assert here.total() == 0 and not any(tmp_path.iterdir())
