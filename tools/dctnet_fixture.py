"""Builds small DCT-Net-shaped frozen graphs with TensorFlow, and records their outputs.

The official DCT-Net weights are not ours to ship, so the importer (``cartoon.model.dctnet``)
is tested against graphs built here the way the official exporter builds them: the
UNet generator (slim scope names ``Conv`` .. ``Conv_9``, ``block_{i}/conv{1,2}``,
``weights`` in HWIO and ``biases``, SAME padding, leaky ReLU 0.2, TF1
``resize_bilinear``), the guided filter (depthwise box filter, r = 1, eps = 1e-2), and
the exporter wrapper (``input_image`` float32 [H, W, 3] BGR 0..255, ``x / 127.5 - 1``,
clip to +-0.999999, ``(x + 1) * 127.5``, ``Cast`` to uint8 named ``output_image``),
frozen with ``convert_variables_to_constants``. Weights are random at a small width,
biases non-zero, so every layer's bias and every padding choice shows in the output.

Variants cover what graphs in the wild differ in: ``addv2`` (TF >= 1.15 ops, file names
``cartoon_h.pb`` / ``cartoon_bg.pb``, with an ``alpha.jpg`` paste mask) and ``add``
(the ``Add`` op and ``Minimum``/``Maximum`` clipping of TF 1.14, the pre-Sept-2022 file
names ``cartoon_anime_h.pb`` / ``cartoon_anime_bg.pb``, and the exporter's ops built in
a second ``generator_1`` name scope while the weights keep ``generator/...``).

TensorFlow is needed only here: ``pip install -e '.[fixtures]'`` into a separate
virtual environment (e.g. ``python3.11 -m venv /work/tfvenv``), then, from the
repository root::

    /work/tfvenv/bin/python -m tools.dctnet_fixture --out tests/fixtures/dctnet

Each variant folder gets the two graphs; ``inputs/`` the input pictures (RGB PNG) and
``expected/<variant>_<head|bg>_<input>.png`` TensorFlow's outputs (RGB PNG).
"""

import argparse
from pathlib import Path

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1

# (scope, kernel, input channels / width, output channels / width, stride); blocks apart.
LAYERS_BEFORE_BLOCKS = [("Conv", 7, None, 1, 1), ("Conv_1", 3, 1, 1, 2), ("Conv_2", 3, 1, 2, 1),
                        ("Conv_3", 3, 2, 2, 2), ("Conv_4", 3, 2, 4, 1)]
INPUT_SIZES = {"even16": (64, 80), "even4": (44, 60)}  # (H, W); 44 and 60 are not multiples of 16
VARIANTS = {
    "addv2": {"add": "AddV2", "files": ("cartoon_h.pb", "cartoon_bg.pb"), "mask": True, "scope_suffix": False},
    "add": {"add": "Add", "files": ("cartoon_anime_h.pb", "cartoon_anime_bg.pb"), "mask": False, "scope_suffix": True},
}


class Ops:
    """The few ops whose kind differs between TF 1.14 and later graphs."""

    def __init__(self, add_op: str):
        self.add_op = add_op

    def add(self, x, y, name=None):
        if self.add_op == "Add":
            return tf.raw_ops.Add(x=x, y=y, name=name)
        return tf.raw_ops.AddV2(x=x, y=y, name=name)

    def clip(self, x, low, high):
        if self.add_op == "Add":  # TF 1.14's clip_by_value: Minimum then Maximum
            return tf.maximum(tf.minimum(x, high), low)
        return tf.clip_by_value(x, low, high)


def conv(x, channels, kernel, stride, scope, rng, bias_scale=0.1, weight_scale=1.0):
    """slim.convolution2d without activation: Conv2D (SAME) + BiasAdd in ``scope``."""
    with tf1.variable_scope(scope):
        cin = int(x.shape[-1])
        fan_in = kernel * kernel * cin
        weights = tf1.get_variable(
            "weights", initializer=(rng.standard_normal((kernel, kernel, cin, channels)) * weight_scale * (2.0 / fan_in) ** 0.5)
            .astype(np.float32))
        biases = tf1.get_variable("biases", initializer=(rng.standard_normal(channels) * bias_scale).astype(np.float32))
        y = tf.nn.conv2d(x, weights, [1, stride, stride, 1], "SAME", name="Conv2D")
        return tf.nn.bias_add(y, biases, name="BiasAdd")


def generator(x, width, ops, rng, blocks=4):
    """The official unet_generator's layer list (seeded random weights)."""
    act = lambda t: tf.nn.leaky_relu(t, 0.2)  # noqa: E731
    x0 = act(conv(x, width, 7, 1, "Conv", rng))
    x1 = act(conv(x0, width, 3, 2, "Conv_1", rng))
    x1 = act(conv(x1, 2 * width, 3, 1, "Conv_2", rng))
    x2 = act(conv(x1, 2 * width, 3, 2, "Conv_3", rng))
    x2 = act(conv(x2, 4 * width, 3, 1, "Conv_4", rng))
    for index in range(blocks):
        with tf1.variable_scope(f"block_{index}"):
            inner = act(conv(x2, 4 * width, 3, 1, "conv1", rng))
            x2 = ops.add(conv(inner, 4 * width, 3, 1, "conv2", rng), x2)
    x2 = act(conv(x2, 2 * width, 3, 1, "Conv_5", rng))
    x3 = tf1.image.resize_bilinear(x2, (tf.shape(x2)[1] * 2, tf.shape(x2)[2] * 2))
    x3 = act(conv(ops.add(x3, x1), 2 * width, 3, 1, "Conv_6", rng))
    x3 = act(conv(x3, width, 3, 1, "Conv_7", rng))
    x4 = tf1.image.resize_bilinear(x3, (tf.shape(x3)[1] * 2, tf.shape(x3)[2] * 2))
    x4 = act(conv(ops.add(x4, x0), width, 3, 1, "Conv_8", rng))
    # A damped head keeps the output spread over 0..255 rather than saturated.
    return conv(x4, 3, 7, 1, "Conv_9", rng, weight_scale=0.3)


def box_filter(x, radius):
    channels = int(x.shape[-1])
    kernel = np.full((2 * radius + 1, 2 * radius + 1, channels, 1), 1.0 / (2 * radius + 1) ** 2, np.float32)
    return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")


def guided_filter(x, y, ops, radius=1, eps=1e-2):
    """The official guided filter: box means normalised by a box filter of ones."""
    shape = tf.shape(x)
    count = box_filter(tf.ones((1, shape[1], shape[2], 1), dtype=x.dtype), radius)
    mean_x = box_filter(x, radius) / count
    mean_y = box_filter(y, radius) / count
    cov_xy = box_filter(x * y, radius) / count - mean_x * mean_y
    var_x = box_filter(x * x, radius) / count - mean_x * mean_x
    a = cov_xy / ops.add(var_x, eps)
    b = mean_y - a * mean_x
    return ops.add(box_filter(a, radius) / count * x, box_filter(b, radius) / count)


def export(width, seed, variant) -> bytes:
    """One frozen graph, serialised, built as the official exporter builds it."""
    ops = Ops(variant["add"])
    graph = tf.Graph()
    with graph.as_default():
        rng = np.random.default_rng(seed)
        if variant["scope_suffix"]:
            # A first graph (training) owns the variables; the exporter reuses them,
            # so its ops land in "generator_1" while weights stay "generator/...".
            with tf1.variable_scope("generator"):
                generator(tf1.placeholder(tf.float32, [1, None, None, 3], name="train_photo"), width, ops, rng)
        image = tf1.placeholder(tf.float32, [None, None, 3], name="input_image")
        x = image[:, :, :][tf.newaxis]
        x = x / 127.5 - 1.0
        with tf1.variable_scope("generator", reuse=variant["scope_suffix"]):
            raw = generator(x, width, ops, rng)
        out = guided_filter(x, raw, ops)[0]
        out = ops.clip(out, -0.999999, 0.999999)
        out = ops.add(out, 1.0) * 127.5
        tf.cast(out, tf.uint8, name="output_image")
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            frozen = tf1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), ["output_image"])
    return frozen.SerializeToString()


def run(graph_bytes: bytes, bgr: np.ndarray) -> np.ndarray:
    """Runs a frozen graph the way the ModelScope pipeline does (import_graph_def)."""
    graph_def = tf1.GraphDef()
    graph_def.ParseFromString(graph_bytes)
    graph = tf.Graph()
    with graph.as_default():
        tf1.import_graph_def(graph_def, name="model")
    with tf1.Session(graph=graph) as session:
        return session.run("model/output_image:0", {"model/input_image:0": bgr.astype(np.float32)})


def test_picture(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB: smooth gradients, a few flat shapes with hard edges, and noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = np.stack([xs / width * 200 + 30, ys / height * 180 + 40, (xs + ys) / (height + width) * 150 + 60], -1)
    for _ in range(4):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, height / 3)
        picture[(ys - cy) ** 2 + (xs - cx) ** 2 < radius**2] = rng.uniform(0, 255, 3)
    picture += rng.normal(0, 12, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


def mask_jpeg(size: int = 64) -> bytes:
    """A soft ellipse as a grayscale-looking RGB JPEG, like the official alpha.jpg."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    radius = np.sqrt(((xs - size / 2) / (0.4 * size)) ** 2 + ((ys - size / 2) / (0.48 * size)) ** 2)
    mask = np.clip((1.15 - radius) / 0.3, 0, 1) * 255
    rgb = np.repeat(mask[..., None], 3, axis=-1).astype(np.uint8)
    return _evaluate(lambda image: tf.io.encode_jpeg(image, quality=95), rgb)


def _evaluate(function, array: np.ndarray):
    """Runs one TF function on an array (eager execution is off for the TF1 graphs)."""
    with tf.Graph().as_default(), tf1.Session() as session:
        return session.run(function(tf.constant(array)))


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.write_bytes(_evaluate(tf.io.encode_png, rgb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/dctnet"))
    parser.add_argument("--width", type=int, default=3, help="UNet width (the official models use 32)")
    args = parser.parse_args()
    tf1.disable_eager_execution()
    tf1.disable_resource_variables()  # frozen TF1 graphs read weights from VariableV2 constants
    (args.out / "inputs").mkdir(parents=True, exist_ok=True)
    (args.out / "expected").mkdir(parents=True, exist_ok=True)
    pictures = {}
    for index, (name, (height, width)) in enumerate(INPUT_SIZES.items()):
        pictures[name] = test_picture(height, width, seed=100 + index)
        write_png(args.out / "inputs" / f"{name}.png", pictures[name])
    for variant_index, (variant_name, variant) in enumerate(VARIANTS.items()):
        folder = args.out / variant_name
        folder.mkdir(exist_ok=True)
        for kind_index, (kind, file_name) in enumerate(zip(("head", "bg"), variant["files"])):
            graph_bytes = export(args.width, seed=10 * variant_index + kind_index, variant=variant)
            (folder / file_name).write_bytes(graph_bytes)
            for name, rgb in pictures.items():
                bgr_out = run(graph_bytes, rgb[:, :, ::-1])
                write_png(args.out / "expected" / f"{variant_name}_{kind}_{name}.png", bgr_out[:, :, ::-1].copy())
                print(f"{variant_name} {kind} {name}: output {bgr_out.shape}, "
                      f"mean {bgr_out.mean():.1f}, std {bgr_out.std():.1f}, max {bgr_out.max()}")
        if variant["mask"]:
            (folder / "alpha.jpg").write_bytes(mask_jpeg())


if __name__ == "__main__":
    main()
