"""The DCT-Net importer against graphs TensorFlow built and ran (tools/dctnet_fixture.py).

The fixtures are the official generator, guided filter and exporter rebuilt in
tf.compat.v1 at width 3 with random weights and non-zero biases, frozen with the
official node names; ``expected/`` holds TensorFlow's own uint8 outputs. No
TensorFlow is needed here.
"""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from safetensors.torch import save_file

from cartoon.model import dctnet
from cartoon.image import codec
from cartoon.model import inference
from cartoon.model import unet
from cartoon.image.background import split, stitch
from cartoon.image.compose import compose
from cartoon.model.dctnet import DctNetError, convert, main, read_graph
from cartoon.model.graphdef import GraphDefError, parse_graphdef
from cartoon.image.pipeline import Composer, Options, Pipeline, PipelineSettings, stylize_job
from cartoon.model.inference import choose_mode
from cartoon.image.styles import DEFAULT_STYLES_DIR, StyleRegistry, Stylizer
from cartoon.model.unet import UNetConfig, UNetGenerator, load_generator, tf1_upsample2x, tf_same_pad

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dctnet"
VARIANTS = ("addv2", "add")  # AddV2 + current file names; Add + old names + generator_1 scope
INPUTS = ("even16", "even4")  # 64x80, and 44x60 (multiples of 4, not of 16)
KINDS = {"head": "head", "background": "bg"}
# The bar the issue sets: at most 1 apart, at least 99 % of values exact.
MAX_DIFF, MIN_EXACT = 1, 0.99
FP32 = choose_mode(torch.device("cpu"), "fp32")


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def parity(stylizer: Stylizer, variant: str, swap_channels: bool = False) -> tuple[int, float]:
    """Worst max |difference| and worst share of exact values over every input and kind.

    ``swap_channels`` feeds the model BGR and reads its output as BGR, which undoes the
    tf1 mode's own channel flip: the layers then see RGB.
    """
    worst_diff, worst_exact = 0, 1.0
    for name in INPUTS:
        rgb = read_rgb(FIXTURES / "inputs" / f"{name}.png")
        for kind, file_kind in KINDS.items():
            if swap_channels:
                ours = stylizer.run(rgb[None, :, :, ::-1], kind)[0, :, :, ::-1].astype(np.int16)
            else:
                ours = stylizer.run(rgb[None], kind)[0].astype(np.int16)
            theirs = read_rgb(FIXTURES / "expected" / f"{variant}_{file_kind}_{name}.png").astype(np.int16)
            difference = np.abs(ours - theirs)
            worst_diff = max(worst_diff, int(difference.max()))
            worst_exact = min(worst_exact, float((difference == 0).mean()))
    return worst_diff, worst_exact


def passes(figures: tuple[int, float]) -> bool:
    return figures[0] <= MAX_DIFF and figures[1] >= MIN_EXACT


@pytest.fixture(scope="module", params=VARIANTS)
def converted(request, tmp_path_factory) -> tuple[str, Path]:
    styles_dir = tmp_path_factory.mktemp(f"styles_{request.param}")
    convert(FIXTURES / request.param, "fixture", styles_dir)
    return request.param, styles_dir


def stylizer_for(styles_dir: Path) -> Stylizer:
    # fp32: parity is against TensorFlow's fp32 graph (bf16 adds up to 2/255 of its own).
    return Stylizer.from_style(StyleRegistry.from_directory(styles_dir).get("fixture"), "cpu", "fp32")


def test_converted_fixture_matches_tensorflow(converted):
    variant, styles_dir = converted
    max_diff, exact = parity(stylizer_for(styles_dir), variant)
    print(f"{variant}: max |diff| {max_diff}, exact {exact:.4%}")
    assert max_diff <= MAX_DIFF and exact >= MIN_EXACT


def test_converted_style_is_served_fp32_by_default_even_where_bf16_is_native(converted, monkeypatch):
    """The config's default precision ("auto") would pick bf16 on an AMX CPU; the style pins fp32.

    The load-time bf16 probe would refuse this random fixture (5-6/255 from fp32) but let
    the real models through (3/255, its tolerance), so the probe is opened up here.
    """
    variant, styles_dir = converted
    monkeypatch.setattr(inference, "native_cpu_bf16", lambda: "AMX")
    monkeypatch.setattr(inference, "BF16_TOLERANCE", 255)
    style = StyleRegistry.from_directory(styles_dir).get("fixture")
    assert style.precision == "fp32" and style.public()["precision"] == "fp32"
    served = Stylizer.from_style(style, "cpu")
    assert served.mode.precision == "fp32" and "asks for fp32" in served.mode.reason
    assert passes(parity(served, variant))
    # Our own styles keep the fast path, and the config can still ask for bf16.
    assert StyleRegistry.from_directory().get(None).public()["precision"] == "auto"
    assert choose_mode(torch.device("cpu")).precision == "bf16"
    assert style.public("bf16")["precision"] == "bf16"


def test_bf16_fails_the_parity_bar(converted):
    """Why the pin matters: the same style in bf16 is several levels from TensorFlow."""
    variant, styles_dir = converted
    style = StyleRegistry.from_directory(styles_dir).get("fixture")
    figures = parity(Stylizer.from_style(style, "cpu", "bf16"), variant)
    print(f"{variant} in bf16: max |diff| {figures[0]}, exact {figures[1]:.4%}")
    assert not passes(figures)


def test_native_mode_fails_the_parity_bar(converted):
    """Today's generator (symmetric padding, half-pixel upsampling, eps 5e-3, RGB, rounding)."""
    variant, styles_dir = converted
    style = StyleRegistry.from_directory(styles_dir).get("fixture")
    generators = []
    for path in (style.head, style.background):
        imported = load_generator(path)
        native = UNetGenerator(UNetConfig(width=imported.config.width))
        native.load_state_dict(imported.state_dict())
        generators.append(native.eval())
    assert not passes(parity(Stylizer(*generators, device="cpu", mode=FP32), variant))


def _tf1_model(styles_dir: Path, **config_changes) -> Stylizer:
    style = StyleRegistry.from_directory(styles_dir).get("fixture")
    generators = []
    for path in (style.head, style.background):
        imported = load_generator(path)
        changed = UNetGenerator(replace(imported.config, **config_changes))
        changed.load_state_dict(imported.state_dict())
        generators.append(changed.eval())
    return Stylizer(*generators, device="cpu", mode=FP32)


def _symmetric_pad(x, kernel, stride):
    return F.pad(x, [kernel // 2] * 4)


def _half_pixel_upsample(x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _rounding(out, mode):
    return out.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


@pytest.mark.parametrize("difference", ["padding", "upsampling", "eps", "channel_order", "rounding"])
def test_each_official_detail_alone_breaks_parity(converted, difference, monkeypatch):
    """Undoing any one of the tf1 mode's details fails the bar, so the parity test sees each."""
    variant, styles_dir = converted
    if difference == "padding":
        monkeypatch.setattr(unet, "tf_same_pad", _symmetric_pad)
    elif difference == "upsampling":
        monkeypatch.setattr(unet, "tf1_upsample2x", _half_pixel_upsample)
    elif difference == "rounding":
        monkeypatch.setattr("cartoon.image.styles.to_uint8", _rounding)
    stylizer = _tf1_model(styles_dir, filter_eps=5e-3) if difference == "eps" else _tf1_model(styles_dir)
    assert not passes(parity(stylizer, variant, swap_channels=difference == "channel_order"))


def test_registry_entry_and_metadata(converted):
    variant, styles_dir = converted
    document = json.loads((styles_dir / "registry.json").read_text())
    assert document["default"] == "fixture"
    (entry,) = document["styles"]
    assert entry["width"] == 3 and entry["licence"] and entry["source"] and entry["precision"] == "fp32"
    assert entry["compat"]["mode"] == "tf1" and entry["compat"]["background_padding"] == "white16"
    assert entry["compat"]["filter_radius"] == 1
    assert entry["compat"]["filter_eps"] == pytest.approx(1e-2)
    # The generator takes eps and radius from the file's own metadata.
    model = load_generator(styles_dir / entry["head"])
    assert model.config.mode == "tf1" and model.config.filter_eps == pytest.approx(1e-2)
    assert ("mask" in entry["compat"]) == (variant == "addv2")  # only addv2 ships alpha.jpg
    style = StyleRegistry.from_directory(styles_dir).get("fixture")
    assert style.public()["licence"] == entry["licence"] and style.public()["source"] == entry["source"]


def test_mask_is_alpha_jpg_as_the_official_pipeline_reads_it(tmp_path):
    convert(FIXTURES / "addv2", "fixture", tmp_path)
    mask = cv2.imread(str(tmp_path / "fixture_mask.png"), cv2.IMREAD_GRAYSCALE)
    source = cv2.imread(str(FIXTURES / "addv2" / "alpha.jpg"))
    expected = cv2.cvtColor(cv2.resize(source, (288, 288), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(mask, expected)
    assert stylizer_for(tmp_path).paste_mask is not None


def test_adds_to_an_existing_registry_and_keeps_its_styles(tmp_path):
    shutil.copytree(DEFAULT_STYLES_DIR, tmp_path, dirs_exist_ok=True)
    convert(FIXTURES / "addv2", "fixture", tmp_path, licence="Apache License 2.0", source="damo/test")
    registry = StyleRegistry.from_directory(tmp_path)
    assert {"toon", "sketch", "fixture"} <= set(registry.names())
    assert registry.default == StyleRegistry.from_directory(DEFAULT_STYLES_DIR).default
    assert registry.get("fixture").public()["licence"] == "Apache License 2.0"
    with pytest.raises(DctNetError, match="already has a style 'fixture'"):
        convert(FIXTURES / "addv2", "fixture", tmp_path)
    convert(FIXTURES / "add", "fixture", tmp_path, replace=True)
    assert registry.names() == StyleRegistry.from_directory(tmp_path).names()


def test_licence_is_read_from_the_model_card(tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(FIXTURES / "add", model_dir)
    (model_dir / "README.md").write_text("---\ntasks:\n- image-portrait-stylization\nlicense: Apache License 2.0\n---\n# card\n")
    entry = convert(model_dir, "fixture", tmp_path / "styles")
    assert entry["licence"] == "Apache License 2.0"


def _model_dir(tmp_path: Path, head_bytes: bytes) -> Path:
    """A copy of the addv2 fixture whose head graph is replaced."""
    model_dir = tmp_path / "model"
    shutil.copytree(FIXTURES / "addv2", model_dir)
    (model_dir / "cartoon_h.pb").write_bytes(head_bytes)
    return model_dir


def _swap_conv5_shape(data: bytes) -> bytes:
    """Conv_5's weights (3, 3, 12, 6) relabelled (3, 3, 6, 12): same bytes, another shape."""
    dims = lambda *sizes: b"".join(b"\x12\x02\x08" + bytes([size]) for size in sizes)  # noqa: E731
    assert data.count(dims(3, 3, 12, 6)) == 1
    return data.replace(dims(3, 3, 12, 6), dims(3, 3, 6, 12))


HEAD = (FIXTURES / "addv2" / "cartoon_h.pb").read_bytes()
BROKEN = {
    "truncated": (HEAD[: len(HEAD) // 2], "not a readable GraphDef"),
    "not_a_graphdef": ((FIXTURES / "inputs" / "even4.png").read_bytes(), "not a readable GraphDef"),
    "wrong_conv_shape": (_swap_conv5_shape(HEAD), r"generator/Conv_5/weights is float32 \(3, 3, 6, 12\), expected float32 \(3, 3, 12, 6\)"),
    "unknown_op": (HEAD.replace(b"ResizeBilinear", b"ResizeBicubicX"), "has op 'ResizeBicubicX'"),
    "half_pixel_centers": (HEAD.replace(b"half_pixel_centers\x12\x02(\x00", b"half_pixel_centers\x12\x02(\x01"),
                           "has half_pixel_centers=True"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_refuses_with_one_message_and_writes_nothing(tmp_path, case, capsys):
    data, message = BROKEN[case]
    model_dir = _model_dir(tmp_path, data)
    styles_dir = tmp_path / "styles"
    shutil.copytree(DEFAULT_STYLES_DIR, styles_dir)
    before = {path.name: path.read_bytes() for path in styles_dir.iterdir()}
    with pytest.raises(DctNetError, match=message):
        convert(model_dir, "fixture", styles_dir)
    assert main([str(model_dir), "--name", "fixture", "--styles-dir", str(styles_dir)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "cartoon_h.pb" in error[0]
    assert {path.name: path.read_bytes() for path in styles_dir.iterdir()} == before


def test_refuses_a_folder_without_graphs(tmp_path):
    with pytest.raises(DctNetError, match="holds neither cartoon_h.pb"):
        convert(tmp_path, "fixture", tmp_path / "styles")
    assert not (tmp_path / "styles").exists()


def test_graphdef_reader_rejects_garbage():
    with pytest.raises(GraphDefError):
        parse_graphdef(b"\x0a\xff\xff\xff\x0f")
    with pytest.raises(GraphDefError):
        parse_graphdef(b"")
    nodes = parse_graphdef(HEAD)
    assert nodes["output_image"].op == "Cast"
    assert read_graph(FIXTURES / "addv2" / "cartoon_h.pb").config.filter_radius == 1


def test_tf_same_padding_puts_the_odd_pixel_after():
    assert tf_same_pad(torch.ones(1, 1, 4, 6), 3, 2).shape[-2:] == (5, 7)
    padded = tf_same_pad(torch.ones(1, 1, 4, 4), 3, 2)[0, 0]
    assert padded[0].sum() > 0 and padded[-1].sum() == 0  # nothing before, one row after
    assert tf_same_pad(torch.ones(1, 1, 5, 5), 3, 2).shape[-2:] == (7, 7)  # odd: one each side


def test_tf1_upsample_samples_at_half_positions():
    x = torch.tensor([[[[0.0, 2.0, 8.0]]]])
    np.testing.assert_allclose(tf1_upsample2x(x)[0, 0, 0].numpy(), [0, 1, 2, 5, 8, 8])
    assert tf1_upsample2x(torch.ones(1, 2, 3, 5)).shape == (1, 2, 6, 10)


def test_white16_padding_is_padto16x():
    image = np.zeros((64, 70, 3), np.uint8)
    pieces, plan = split(image, padding="white16")
    # One side not a multiple of 16: both grow to the next multiple above (64 -> 80).
    assert pieces.shape == (1, 80, 80, 3) and (plan.height, plan.width) == (64, 70)
    assert pieces[0, 64:].min() == 255 and pieces[0, :, 70:].min() == 255 and pieces[0, :64, :70].max() == 0
    assert split(np.zeros((64, 80, 3), np.uint8), padding="white16")[0].shape == (1, 64, 80, 3)


def test_native_files_keep_loading_in_native_mode():
    for style in StyleRegistry.from_directory(DEFAULT_STYLES_DIR).styles.values():
        model = load_generator(style.head)
        assert model.config.mode == "native" and model.config.filter_eps == pytest.approx(5e-3)
        assert style.background_padding == "mirror4" and style.mask is None


def test_metadata_filter_settings_are_honoured(tmp_path):
    config = UNetConfig(width=4, filter_radius=2, filter_eps=1e-3)
    unet.save_weights(unet.random_generator(config), tmp_path / "w.safetensors")
    assert load_generator(tmp_path / "w.safetensors").config == config


def test_invalid_mode_in_metadata_is_a_weights_error(tmp_path):
    model = unet.random_generator(UNetConfig(width=4))
    unet.save_weights(model, tmp_path / "w.safetensors", {"source": "x"})
    state, metadata = unet.read_weights(tmp_path / "w.safetensors")
    assert metadata["source"] == "x" and metadata["mode"] == "native"
    save_file(state, str(tmp_path / "bad.safetensors"), metadata={**metadata, "mode": "tf3"})
    with pytest.raises(unet.WeightsError, match="unknown generator mode 'tf3'"):
        load_generator(tmp_path / "bad.safetensors")



def test_pipeline_pads_like_padto16x_and_pastes_with_the_styles_mask(tmp_path, astronaut):
    shutil.copytree(DEFAULT_STYLES_DIR, tmp_path, dirs_exist_ok=True)
    convert(FIXTURES / "addv2", "fixture", tmp_path)
    pipeline = Pipeline(StyleRegistry.from_directory(tmp_path), PipelineSettings(device="cpu"))
    rgb = np.ascontiguousarray(astronaut[:500, :460])
    job = pipeline.preparer.prepare_array(rgb, Options(style="fixture"))
    assert job.background.shape == (1, 512, 464, 3) and job.background[0, 500:].min() == 255
    assert pipeline.preparer.prepare_array(rgb, Options(style="toon")).background.shape == (1, 500, 460, 3)
    assert len(job.faces) == 1
    stylized = stylize_job(job, pipeline.stylizer("fixture"))
    mask = stylized.paste_mask.astype(np.float32) / 255.0
    expected = compose(stylized.background[0, :500, :460],
                       stylized.heads, stylized.matrices, 500, 460, mask=mask)
    ours = Composer().compose(stylized)
    np.testing.assert_array_equal(codec.decode(ours.data).rgb, expected)
    with_ellipse = codec.decode(Composer().compose(replace(stylized, paste_mask=None)).data).rgb
    assert np.abs(with_ellipse.astype(int) - expected.astype(int)).max() > 0


def test_tiles_stitch_to_the_whole_background_in_tf1_mode(converted):
    """The GPU preset cuts the background into tiles; in tf1 mode they must stitch exactly."""
    _, styles_dir = converted
    stylizer = stylizer_for(styles_dir)
    rgb = np.ascontiguousarray(read_rgb(FIXTURES / "inputs" / "even16.png").repeat(3, 0).repeat(4, 1)[:190, :300])
    whole, whole_plan = split(rgb, padding="white16")
    tiles, tile_plan = split(rgb, tile=160, halo=64, padding="white16")
    assert len(tiles) > 1
    np.testing.assert_array_equal(
        stitch(stylizer.run(tiles, "background"), tile_plan), stitch(stylizer.run(whole, "background"), whole_plan)
    )


def test_a_node_missing_its_inputs_is_one_clear_message(monkeypatch):
    nodes = parse_graphdef(HEAD)
    nodes["generator/Conv_3/Conv2D"].inputs = []
    monkeypatch.setattr(dctnet, "parse_graphdef", lambda data: nodes)
    with pytest.raises(DctNetError, match="cartoon_h.pb: malformed graph"):
        read_graph(FIXTURES / "addv2" / "cartoon_h.pb")
