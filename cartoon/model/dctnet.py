"""Import the official DCT-Net models (ModelScope's frozen TF1 graphs) as a served style.

    python -m cartoon.model.dctnet MODEL_DIR --name NAME --styles-dir DIR

MODEL_DIR is a downloaded DCT-Net model folder: ``cartoon_h.pb`` (head) and
``cartoon_bg.pb`` (background), or ``cartoon_anime_h.pb`` / ``cartoon_anime_bg.pb`` in
releases before Sept 2022, and usually ``alpha.jpg``, the paste-back mask. The graphs
are read without TensorFlow (``cartoon.model.graphdef``) and checked against the official
exporter's structure before anything is written: the 36 weight and bias constants
(18 convolutions) and their shapes, SAME padding and strides, the ``ResizeBilinear``
flags, the leaky ReLU slope, the guided filter's radius and eps, the input placeholder,
the normalisation, the clip and the uint8 output. Then DIR receives
``NAME_head.safetensors``, ``NAME_background.safetensors`` (generator mode ``tf1``),
``NAME_mask.png`` when the folder has ``alpha.jpg``, and an entry in ``registry.json``
(created if absent). Files are written under temporary names and renamed at the end, so
a refused or failed import leaves DIR as it was.
"""

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from cartoon.constants import CROP_SIZE
from cartoon.model.graphdef import DT_FLOAT, DT_UINT8, GraphDefError, Node, parse_graphdef
from cartoon.model.registry import DEFAULT_PRECISION, REGISTRY_FILE
from cartoon.model.unet import TF1_CLIP, UNetConfig, UNetGenerator, save_weights

# File names: current releases first, then those before Sept 2022.
GRAPH_FILES = (("cartoon_h.pb", "cartoon_bg.pb"), ("cartoon_anime_h.pb", "cartoon_anime_bg.pb"))
MASK_FILE = "alpha.jpg"

# Official slim scope -> (our module, kernel, in channels, out channels, stride), the
# channels in units of the width C (0 = the 3 image channels). Residual blocks apart.
LAYERS = {
    "Conv": ("stem", 7, 0, 1, 1),
    "Conv_1": ("down1", 3, 1, 1, 2),
    "Conv_2": ("widen1", 3, 1, 2, 1),
    "Conv_3": ("down2", 3, 2, 2, 2),
    "Conv_4": ("widen2", 3, 2, 4, 1),
    "Conv_5": ("narrow2", 3, 4, 2, 1),
    "Conv_6": ("up2a", 3, 2, 2, 1),
    "Conv_7": ("up2b", 3, 2, 1, 1),
    "Conv_8": ("up1", 3, 1, 1, 1),
    "Conv_9": ("head", 7, 1, 0, 1),
}
WEIGHT_NAME = re.compile(r"^generator/(Conv(?:_\d+)?|block_(\d+)/conv[12])/(weights|biases)$")
# Every op the official exporter's frozen graph holds; anything else is refused.
KNOWN_OPS = {
    "Placeholder", "Const", "Identity", "StridedSlice", "Shape", "Pack", "Fill",
    "Conv2D", "BiasAdd", "LeakyRelu", "Add", "AddV2", "Sub", "Mul", "RealDiv", "ResizeBilinear",
    "DepthwiseConv2dNative", "ClipByValue", "Minimum", "Maximum", "Cast",
}
ADD_OPS = ("Add", "AddV2")
TOLERANCE = 1e-6


class DctNetError(ValueError):
    """A model folder or graph that is not the official DCT-Net export."""


@dataclass(frozen=True)
class ImportedGraph:
    """One validated graph: the generator config and its weights in our layout."""

    config: UNetConfig
    state: dict[str, torch.Tensor]


class _Graph:
    """Lookups over a parsed GraphDef, with errors that name the file."""

    def __init__(self, path: Path, nodes: dict[str, Node]):
        self.path, self.nodes = path, nodes
        self.consumers: dict[str, list[Node]] = {}
        for node in nodes.values():
            for name in node.inputs:
                self.consumers.setdefault(self.source_name(name), []).append(node)

    def fail(self, message: str) -> DctNetError:
        return DctNetError(f"{self.path}: {message}")

    @staticmethod
    def source_name(reference: str) -> str:
        """"^ctrl", "node:1" -> "node"."""
        return reference.lstrip("^").split(":")[0]

    def source(self, reference: str) -> Node:
        """The node an input comes from, through Identity nodes (frozen variable reads)."""
        node = self.nodes.get(self.source_name(reference))
        while node is not None and node.op == "Identity":
            node = self.nodes.get(self.source_name(node.inputs[0]))
        if node is None:
            raise self.fail(f"input {reference!r} names no node")
        return node

    def constant(self, reference: str) -> np.ndarray | None:
        node = self.source(reference)
        return node.attrs.get("value") if node.op == "Const" else None

    def scalar_input(self, node: Node, value: float) -> bool:
        """Whether one of ``node``'s inputs is the float constant ``value``."""
        for reference in node.inputs[:2]:
            constant = self.constant(reference)
            if constant is None or constant.size != 1:
                continue
            if abs(float(constant.reshape(-1)[0]) - value) <= TOLERANCE * max(1.0, abs(value)):
                return True
        return False

    def of_op(self, *ops: str) -> list[Node]:
        return [node for node in self.nodes.values() if node.op in ops]


def _check_ops(graph: _Graph) -> None:
    for node in graph.nodes.values():
        if node.op not in KNOWN_OPS:
            raise graph.fail(f"node {node.name!r} has op {node.op!r}, which the DCT-Net export does not use")


def _check_io(graph: _Graph) -> None:
    placeholder = graph.nodes.get("input_image")
    if placeholder is None or placeholder.op != "Placeholder":
        raise graph.fail("no Placeholder named 'input_image'")
    if placeholder.attrs.get("dtype") != ("type", DT_FLOAT):
        raise graph.fail(f"input_image has dtype {placeholder.attrs.get('dtype')}, expected float32")
    shape = placeholder.attrs.get("shape")
    if shape is not None and shape[1] is not None and (len(shape[1]) != 3 or shape[1][2] != 3):
        raise graph.fail(f"input_image has shape {shape[1]}, expected [H, W, 3]")
    others = [node.name for node in graph.of_op("Placeholder") if node.name != "input_image"]
    if others:
        raise graph.fail(f"unexpected extra input {others[0]!r}")
    output = graph.nodes.get("output_image")
    if output is None or output.op != "Cast" or output.attrs.get("DstT") != ("type", DT_UINT8):
        raise graph.fail("no uint8 Cast named 'output_image'")
    # The exporter: ((clip(x, -0.999999, 0.999999) + 1) * 127.5) cast to uint8.
    scale = graph.source(output.inputs[0])
    if scale.op != "Mul" or not graph.scalar_input(scale, 127.5):
        raise graph.fail("output_image is not (x + 1) * 127.5 cast to uint8")
    clips = graph.of_op("ClipByValue")
    if clips:
        low, high = (graph.constant(reference) for reference in clips[0].inputs[1:3])
        bounds = None if low is None or high is None else (float(low), float(high))
    else:
        minimum, maximum = graph.of_op("Minimum"), graph.of_op("Maximum")
        bounds = None
        if len(minimum) == 1 and len(maximum) == 1:
            high = next((graph.constant(r) for r in minimum[0].inputs if graph.constant(r) is not None), None)
            low = next((graph.constant(r) for r in maximum[0].inputs if graph.constant(r) is not None), None)
            bounds = None if low is None or high is None else (float(low), float(high))
    if bounds is None or abs(bounds[0] + TF1_CLIP) > TOLERANCE or abs(bounds[1] - TF1_CLIP) > TOLERANCE:
        raise graph.fail(f"output clip is {bounds}, expected (-{TF1_CLIP}, {TF1_CLIP})")
    # The input normalisation: x / 127.5 - 1 (after slicing and adding the batch axis).
    divisions = [node for node in graph.of_op("RealDiv") if graph.scalar_input(node, 127.5)]
    if len(divisions) != 1 or not any(
        consumer.op == "Sub" and graph.scalar_input(consumer, 1.0)
        for consumer in graph.consumers.get(divisions[0].name, [])
    ):
        raise graph.fail("input normalisation x / 127.5 - 1 not found")


def _weights(graph: _Graph) -> tuple[dict[str, np.ndarray], int, int]:
    """The generator's constants by scope, the width and the residual block count."""
    found: dict[str, np.ndarray] = {}
    blocks: set[int] = set()
    for node in graph.of_op("Const"):
        match = WEIGHT_NAME.match(node.name)
        if match:
            found[f"{match.group(1)}/{match.group(3)}"] = node.attrs.get("value")
            if match.group(2) is not None:
                blocks.add(int(match.group(2)))
    if "Conv/weights" not in found:
        raise graph.fail("no constant 'generator/Conv/weights': not a DCT-Net generator")
    stem = found["Conv/weights"]
    if stem.ndim != 4 or stem.shape[:3] != (7, 7, 3):
        raise graph.fail(f"generator/Conv/weights has shape {stem.shape}, expected (7, 7, 3, width)")
    width = stem.shape[3]
    if blocks != set(range(len(blocks))) or not blocks:
        raise graph.fail(f"residual blocks {sorted(blocks)} are not block_0 .. block_N")
    shapes = {}
    for scope, (_, kernel, cin, cout, _) in LAYERS.items():
        shapes[scope] = (kernel, kernel, cin * width or 3, cout * width or 3)
    for index in sorted(blocks):
        for conv in ("conv1", "conv2"):
            shapes[f"block_{index}/{conv}"] = (3, 3, 4 * width, 4 * width)
    expected = {f"{scope}/weights": shape for scope, shape in shapes.items()}
    expected.update({f"{scope}/biases": shape[3:] for scope, shape in shapes.items()})
    for key, shape in expected.items():
        value = found.get(key)
        if value is None:
            raise graph.fail(f"missing constant generator/{key}")
        if value.dtype != np.float32 or value.shape != shape:
            raise graph.fail(
                f"generator/{key} is {value.dtype} {value.shape}, expected float32 {shape} (width {width})"
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise graph.fail(f"unexpected generator constant generator/{extra[0]}")
    return found, width, len(blocks)


def _module(scope: str) -> str:
    """Official scope -> our module name: "Conv_3" -> "down2", "block_1/conv2" -> "blocks.1.conv2"."""
    if scope in LAYERS:
        return LAYERS[scope][0]
    block, conv = scope.split("/")
    return f"blocks.{block.removeprefix('block_')}.{conv}"


def _check_convolutions(graph: _Graph, weights: dict[str, np.ndarray]) -> None:
    """Every Conv2D reads one generator weight, SAME, NHWC, the layer's stride, + its bias."""
    used: set[str] = set()
    for node in graph.of_op("Conv2D"):
        source = graph.source(node.inputs[1])
        match = WEIGHT_NAME.match(source.name)
        if not match or match.group(3) != "weights":
            raise graph.fail(f"Conv2D {node.name!r} reads {source.name!r}, not a generator weight")
        scope = match.group(1)
        if scope in used:
            raise graph.fail(f"generator/{scope}/weights is used by more than one Conv2D")
        used.add(scope)
        stride = LAYERS[scope][4] if scope in LAYERS else 1
        if node.attrs.get("padding") != b"SAME":
            raise graph.fail(f"Conv2D {node.name!r} has padding {node.attrs.get('padding')!r}, expected SAME")
        if list(node.attrs.get("strides", [])) != [1, stride, stride, 1]:
            raise graph.fail(
                f"Conv2D {node.name!r} has strides {node.attrs.get('strides')}, expected [1, {stride}, {stride}, 1]"
            )
        if node.attrs.get("data_format", b"NHWC") != b"NHWC":
            raise graph.fail(f"Conv2D {node.name!r} is not NHWC")
        if any(d != 1 for d in node.attrs.get("dilations", [1, 1, 1, 1])):
            raise graph.fail(f"Conv2D {node.name!r} is dilated")
        bias_adds = [c for c in graph.consumers.get(node.name, []) if c.op == "BiasAdd"]
        if len(bias_adds) != 1 or graph.source(bias_adds[0].inputs[1]).name != f"generator/{scope}/biases":
            raise graph.fail(f"Conv2D {node.name!r} is not followed by a BiasAdd of generator/{scope}/biases")
    missing = sorted({key.rsplit("/", 1)[0] for key in weights} - used)
    if missing:
        raise graph.fail(f"generator/{missing[0]}/weights is not used by any Conv2D")


def _check_generator_ops(graph: _Graph, blocks: int) -> None:
    resizes = graph.of_op("ResizeBilinear")
    if len(resizes) != 2:
        raise graph.fail(f"{len(resizes)} ResizeBilinear nodes, expected 2")
    for node in resizes:
        for flag in ("align_corners", "half_pixel_centers"):
            if node.attrs.get(flag, False):
                raise graph.fail(f"ResizeBilinear {node.name!r} has {flag}=True; DCT-Net's has it False")
    relus = graph.of_op("LeakyRelu")
    if len(relus) != 9 + blocks:
        raise graph.fail(f"{len(relus)} LeakyRelu nodes, expected {9 + blocks}")
    for node in relus:
        alpha = node.attrs.get("alpha", 0.2)
        if abs(alpha - 0.2) > TOLERANCE:
            raise graph.fail(f"LeakyRelu {node.name!r} has alpha {alpha}, expected 0.2")


def _guided_filter(graph: _Graph) -> tuple[int, float]:
    """The radius (from the box kernels) and eps (the constant added to the variance)."""
    radii = set()
    boxes = graph.of_op("DepthwiseConv2dNative")
    if not boxes:
        raise graph.fail("no guided filter (DepthwiseConv2dNative box filters) found")
    for node in boxes:
        kernel = graph.constant(node.inputs[1])
        if kernel is None or kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0 \
                or kernel.shape[3] != 1 or not np.allclose(kernel, 1.0 / kernel.shape[0] ** 2, rtol=1e-6):
            raise graph.fail(f"box filter {node.name!r} does not have a uniform odd square kernel")
        if node.attrs.get("padding") != b"SAME" or list(node.attrs.get("strides", [])) != [1, 1, 1, 1]:
            raise graph.fail(f"box filter {node.name!r} is not stride 1 with SAME padding")
        radii.add(kernel.shape[0] // 2)
    if len(radii) != 1:
        raise graph.fail(f"box filters of several radii {sorted(radii)}")
    # A = cov / (var + eps): the one Add of a scalar constant that is a divisor.
    candidates = []
    for node in graph.of_op("RealDiv"):
        divisor = graph.source(node.inputs[1])
        if divisor.op in ADD_OPS:
            for reference in divisor.inputs:
                constant = graph.constant(reference)
                if constant is not None and constant.size == 1:
                    candidates.append(float(constant.reshape(-1)[0]))
    if len(candidates) != 1 or not candidates[0] > 0:
        raise graph.fail(f"cannot read the guided filter's eps (found {candidates})")
    return radii.pop(), candidates[0]


def read_graph(path: Path) -> ImportedGraph:
    """Parses and validates one frozen DCT-Net graph; raises DctNetError naming what differs."""
    try:
        nodes = parse_graphdef(path.read_bytes())
    except GraphDefError as exc:
        raise DctNetError(f"{path}: not a readable GraphDef ({exc})") from exc
    except OSError as exc:
        raise DctNetError(f"{path}: cannot read ({exc})") from exc
    graph = _Graph(path, nodes)
    _check_ops(graph)
    try:
        _check_io(graph)
        weights, width, blocks = _weights(graph)
        _check_convolutions(graph, weights)
        _check_generator_ops(graph, blocks)
        radius, eps = _guided_filter(graph)
    except (IndexError, KeyError, TypeError, AttributeError) as exc:
        # A node missing an input or holding an attribute of the wrong kind.
        raise graph.fail(f"malformed graph: {exc!r}") from exc
    config = UNetConfig(width=width, res_blocks=blocks, filter_radius=radius, filter_eps=eps, mode="tf1")
    state = {}
    for key, value in weights.items():
        scope, kind = key.rsplit("/", 1)
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        if kind == "weights":  # HWIO -> OIHW
            state[f"{_module(scope)}.weight"] = tensor.permute(3, 2, 0, 1).contiguous()
        else:
            state[f"{_module(scope)}.bias"] = tensor
    return ImportedGraph(config, state)


def find_graphs(model_dir: Path) -> tuple[Path, Path]:
    """(head, background) graph paths of either release's naming."""
    if not model_dir.is_dir():
        raise DctNetError(f"{model_dir} is not a directory")
    for head, background in GRAPH_FILES:
        if (model_dir / head).is_file() and (model_dir / background).is_file():
            return model_dir / head, model_dir / background
    names = " or ".join(f"{head} + {background}" for head, background in GRAPH_FILES)
    raise DctNetError(f"{model_dir} holds neither {names}")


def read_mask(path: Path) -> np.ndarray:
    """The official paste mask: alpha.jpg resized (area) to 288 px, to grayscale, as uint8."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DctNetError(f"{path}: not a readable image")
    image = cv2.resize(image, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def card_licence(model_dir: Path) -> str:
    """The ``license:`` of the model card's front matter (ModelScope's README.md), or ""."""
    card = model_dir / "README.md"
    if not card.is_file():
        return ""
    lines = card.read_text(errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return ""
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, _, value = line.partition(":")
        if key.strip().lower() in ("license", "licence") and value.strip():
            return value.strip().strip("'\"")
    return ""


def _registry(styles_dir: Path) -> dict:
    path = styles_dir / REGISTRY_FILE
    if not path.exists():
        return {"styles": []}
    try:
        document = json.loads(path.read_text())
        if not isinstance(document.get("styles"), list):
            raise ValueError("no 'styles' list")
        return document
    except ValueError as exc:
        raise DctNetError(f"{path} is not a readable style registry ({exc})") from exc


def convert(
    model_dir: str | Path,
    name: str,
    styles_dir: str | Path,
    description: str = "",
    source: str = "",
    licence: str = "",
    replace: bool = False,
) -> dict:
    """Converts a DCT-Net model folder into a style of ``styles_dir``; returns its registry entry.

    Everything is read and validated first; the files are then written under temporary
    names and renamed into place, ``registry.json`` last.

    Raises:
        DctNetError: one message naming the file and what differs; ``styles_dir`` unchanged.
    """
    model_dir, styles_dir = Path(model_dir), Path(styles_dir)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise DctNetError(f"style name {name!r}: use letters, digits, '-' and '_'")
    head_path, background_path = find_graphs(model_dir)
    head, background = read_graph(head_path), read_graph(background_path)
    if head.config.width != background.config.width:
        raise DctNetError(f"head width {head.config.width} differs from background width {background.config.width}")
    mask = read_mask(model_dir / MASK_FILE) if (model_dir / MASK_FILE).is_file() else None
    styles_dir.mkdir(parents=True, exist_ok=True)
    document = _registry(styles_dir)
    if any(entry.get("name") == name for entry in document["styles"]) and not replace:
        raise DctNetError(f"{styles_dir / REGISTRY_FILE} already has a style {name!r} (pass --replace)")
    licence = licence or card_licence(model_dir) or "unknown: see the model card"
    entry = {
        "name": name,
        "description": description or f"DCT-Net {model_dir.name}",
        "head": f"{name}_head.safetensors",
        "background": f"{name}_background.safetensors",
        "width": head.config.width,
        "source": source or f"DCT-Net model folder {model_dir.name} ({head_path.name}, {background_path.name})",
        "licence": licence,
        # TensorFlow's parity holds in fp32 only; the style's owner may change it to "auto".
        "precision": DEFAULT_PRECISION["tf1"],
        "compat": {
            "mode": "tf1",
            "background_padding": "white16",
            "stride2_padding": "tf_same",
            "upsampling": "tf1_resize_bilinear",
            "channel_order": "bgr",
            "normalisation": "x / 127.5 - 1",
            "clip": TF1_CLIP,
            "to_uint8": "truncate",
            "filter_radius": head.config.filter_radius,
            "filter_eps": head.config.filter_eps,
            **({"mask": f"{name}_mask.png"} if mask is not None else {}),
        },
    }
    document["styles"] = [e for e in document["styles"] if e.get("name") != name] + [entry]
    document.setdefault("default", name)
    pending: list[tuple[Path, Path]] = []
    try:
        for kind, imported in (("head", head), ("background", background)):
            model = UNetGenerator(imported.config)
            model.load_state_dict(imported.state)
            temporary = _temporary(styles_dir, ".safetensors")
            save_weights(model, temporary, {"source": entry["source"], "licence": licence})
            pending.append((temporary, styles_dir / entry[kind]))
        if mask is not None:
            temporary = _temporary(styles_dir, ".png")
            if not cv2.imwrite(str(temporary), mask):
                raise DctNetError(f"cannot write {temporary}")
            temporary.chmod(0o644)
            pending.append((temporary, styles_dir / entry["compat"]["mask"]))
        temporary = _temporary(styles_dir, ".json")
        temporary.write_text(json.dumps(document, indent=2) + "\n")
        temporary.chmod(0o644)
        pending.append((temporary, styles_dir / REGISTRY_FILE))
    except BaseException:
        for temporary, _ in pending:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, final in pending:
        os.replace(temporary, final)
    return entry


def _temporary(directory: Path, suffix: str) -> Path:
    handle, name = tempfile.mkstemp(prefix=".dctnet-", suffix=suffix, dir=directory)
    os.close(handle)
    return Path(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cartoon.model.dctnet", description="Convert an official DCT-Net model folder into a served style."
    )
    parser.add_argument("model_dir", type=Path, help="folder with cartoon_h.pb + cartoon_bg.pb (or cartoon_anime_*)")
    parser.add_argument("--name", required=True, help="style id clients pass as style=")
    parser.add_argument("--styles-dir", required=True, type=Path, help="the styles_dir to add the style to")
    parser.add_argument("--description", default="", help="one line for GET /v1/styles")
    parser.add_argument("--source", default="", help="where the weights came from, e.g. the ModelScope model id")
    parser.add_argument("--licence", default="", help="the weights' licence; default: the model card's license field")
    parser.add_argument("--replace", action="store_true", help="replace a style of the same name")
    args = parser.parse_args(argv)
    try:
        entry = convert(args.model_dir, args.name, args.styles_dir, args.description, args.source, args.licence,
                        args.replace)
    except DctNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    compat = entry["compat"]
    print(f"style {entry['name']!r}: width {entry['width']}, guided filter r={compat['filter_radius']} "
          f"eps={compat['filter_eps']:.6g}, mask {'alpha.jpg' if 'mask' in compat else 'default ellipse'}, "
          f"licence {entry['licence']!r} -> {args.styles_dir / REGISTRY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
