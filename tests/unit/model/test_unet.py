import cv2
import numpy as np
import pytest
import torch

from cartoon.errors import WeightsError
from cartoon.model.unet import (
    UNetConfig,
    UNetGenerator,
    box_mean,
    guided_filter,
    guided_filter_banded,
    guided_upsample,
    load_generator,
    random_generator,
    receptive_radius,
    save_weights,
    working_size,
)
from cartoon.image.styles import StyleRegistry
from tests import photos


def test_box_mean_counts_only_pixels_inside():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    # Every 3x3 window of a 2x2 image covers all four pixels: mean 2.5 everywhere.
    np.testing.assert_allclose(box_mean(x, 1).numpy(), 2.5)
    y = torch.tensor([[[[0.0, 3.0, 6.0]]]])
    np.testing.assert_allclose(box_mean(y, 1).numpy(), [[[[1.5, 3.0, 4.5]]]])



@pytest.mark.parametrize("radius, height, width", [(1, 31, 17), (2, 5, 40), (3, 2, 9), (1, 1, 1)])
def test_box_mean_matches_average_pooling_without_padding(radius, height, width):
    # The separable box mean replaces avg_pool2d(count_include_pad=False): same numbers,
    # at every border and for images narrower than the window, in NCHW and NHWC.
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(radius))
    pooled = torch.nn.functional.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    np.testing.assert_allclose(box_mean(x, radius).numpy(), pooled.numpy(), atol=1e-6)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(box_mean(nhwc, radius).numpy(), pooled.numpy(), atol=1e-6)

def test_guided_filter_hand_computed_1x3():
    guide = torch.tensor([[[[0.0, 1.0, 2.0]]]])
    src = torch.tensor([[[[0.0, 2.0, 4.0]]]])
    # src = 2 * guide exactly, so with eps -> 0 each window fits a = 2, b = 0.
    out = guided_filter(guide, src, 1, 1e-8)
    np.testing.assert_allclose(out.numpy(), src.numpy(), atol=1e-5)
    # With eps huge the slope vanishes (a = 0, b = window means of src = [1, 2, 3]),
    # and the output is the window means of b: [1.5, 2, 2.5].
    flat = guided_filter(guide, src, 1, 1e8)
    np.testing.assert_allclose(flat.numpy()[0, 0, 0], [1.5, 2.0, 2.5], atol=1e-5)


def test_guided_filter_keeps_a_constant():
    guide = torch.rand(1, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    src = torch.full((1, 3, 9, 9), 0.3)
    np.testing.assert_allclose(guided_filter(guide, src, 1, 5e-3).numpy(), 0.3, atol=1e-5)


def test_generator_keeps_shape_and_range():
    model = random_generator(UNetConfig(width=8))
    x = torch.rand(2, 3, 36, 52) * 2 - 1
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1


def test_published_width_has_1_47_million_parameters():
    count = sum(p.numel() for p in UNetGenerator(UNetConfig(width=32)).parameters())
    assert 1_460_000 < count < 1_480_000


def test_random_init_is_seeded():
    a, b = random_generator(seed=5), random_generator(seed=5)
    c = random_generator(seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.stem.weight, c.stem.weight)


def test_receptive_radius_bounds_the_reach_of_one_pixel():
    config = UNetConfig(width=8)
    model = random_generator(config, seed=1)
    radius = receptive_radius(config)
    assert radius == 64
    size = 2 * radius + 64
    x = torch.zeros(1, 3, size, size)
    poked = x.clone()
    poked[0, :, size // 2, size // 2] = 1.0
    with torch.no_grad():
        changed = (model(poked) - model(x)).abs().amax(dim=(0, 1)) > 0
    ys, xs = torch.nonzero(changed, as_tuple=True)
    reach = max((ys - size // 2).abs().max().item(), (xs - size // 2).abs().max().item())
    assert radius - 8 <= reach <= radius


def test_weights_round_trip(tmp_path):
    model = random_generator(UNetConfig(width=8), seed=4)
    save_weights(model, tmp_path / "w.safetensors")
    loaded = load_generator(tmp_path / "w.safetensors")
    assert loaded.config.width == 8
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_wrong_shape_is_named(tmp_path):
    save_weights(random_generator(UNetConfig(width=8)), tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match=r"w\.safetensors.*'stem\.weight' has shape \(8, 3, 7, 7\)"):
        load_generator(tmp_path / "w.safetensors", UNetConfig(width=16))


def test_missing_key_is_named(tmp_path):
    from safetensors.torch import save_file

    state = random_generator(UNetConfig(width=8)).state_dict()
    del state["blocks.2.conv1.bias"]
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match=r"missing key 'blocks\.2\.conv1\.bias'"):
        load_generator(tmp_path / "w.safetensors", UNetConfig(width=8))


def test_unexpected_key_is_named(tmp_path):
    from safetensors.torch import save_file

    state = random_generator(UNetConfig(width=8)).state_dict()
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match=r"unexpected key 'extra\.weight'"):
        load_generator(tmp_path / "w.safetensors", UNetConfig(width=8))


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(WeightsError, match="nowhere.safetensors does not exist"):
        load_generator(tmp_path / "nowhere.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="junk.safetensors is not a readable safetensors"):
        load_generator(tmp_path / "junk.safetensors")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "radius, height, width, channels",
    [(1, 150, 97, 3), (2, 64, 40, 1), (3, 129, 33, 2), (1, 2, 5, 4), (1, 1, 7, 3), (40, 200, 9, 3)],
)
def test_banded_guided_filter_matches_the_whole_picture_one(dtype, radius, height, width, channels):
    # Heights across FILTER_BAND_ROWS: band edges must not show.
    generator = torch.Generator().manual_seed(height)
    guide = torch.rand(1, channels, height, width, generator=generator, dtype=dtype) * 2 - 1
    src = (guide + 0.2 * torch.randn(1, channels, height, width, generator=generator, dtype=dtype)).clamp(-1, 1)
    expected = guided_filter(guide, src, radius, 5e-3)[0].permute(1, 2, 0).numpy()
    banded = guided_filter_banded(
        guide[0].permute(1, 2, 0).contiguous().numpy(), src[0].permute(1, 2, 0).contiguous().numpy(), radius, 5e-3
    )
    np.testing.assert_allclose(banded, expected, atol=1e-6 if dtype == torch.float32 else 1e-12)


def test_training_gets_gradients_and_the_inference_path_gives_the_same_picture():
    # Inference on a CPU filters with OpenCV (outside autograd), training with tensors.
    model = random_generator(UNetConfig(width=8), seed=3)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    trained = model(x)
    trained.square().mean().backward()
    assert model.stem.weight.grad is not None and model.stem.weight.grad.abs().sum() > 0
    with torch.inference_mode():
        served = model(x)
    np.testing.assert_allclose(served.numpy(), trained.detach().numpy(), atol=1e-6)
    with torch.inference_mode():
        assert model(x[:0]).shape == (0, 3, 64, 64)


def test_guided_upsample_at_the_same_size_is_the_guided_filter():
    generator = torch.Generator().manual_seed(4)
    guide = torch.rand(2, 3, 20, 28, generator=generator) * 2 - 1
    raw = torch.rand(2, 3, 20, 28, generator=generator) * 2 - 1
    expected = guided_filter(guide, raw, 1, 5e-3)
    np.testing.assert_allclose(guided_upsample(guide, raw, guide, 1, 5e-3).numpy(), expected.numpy(), atol=1e-5)


def test_working_size_keeps_the_unets_stride():
    assert working_size((720, 844), 0.5) == (360, 424)
    assert working_size((360, 640), 0.5) == (180, 320)
    assert working_size((6, 5), 0.5) == (4, 4)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4.0 / ((a - b) ** 2).mean()))  # values in [-1, 1]


def test_a_half_size_background_takes_its_edges_from_the_full_size_photo():
    # The shipped background model on a real photo: at working scale 0.5 its output,
    # guided-upsampled, is nearer the full-size output than the half-size output
    # upsampled bilinearly, the most on the photo's edges (the fast guided filter's point).
    model = load_generator(StyleRegistry.from_directory().get("toon").background)
    rgb = photos.astronaut()  # 512 x 512
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
    with torch.inference_mode():
        full = model(x)
        guided = model(x, 0.5)
        small = torch.nn.functional.interpolate(x, size=working_size(x.shape[-2:], 0.5), mode="area")
        naive = torch.nn.functional.interpolate(model(small), size=x.shape[-2:], mode="bilinear")
    assert guided.shape == full.shape and float(guided.abs().max()) <= 1.0
    assert _psnr(guided, full) > 21.5
    edges = torch.from_numpy(cv2.Canny(rgb, 100, 200) > 0)[None, None].expand_as(full)
    assert _psnr(guided[edges], full[edges]) > _psnr(naive[edges], full[edges]) + 0.5  # measured +0.77 dB
