"""The DCT-Net / White-box-Cartoonization UNet generator and its guided filter.

Two modes share one layer list. ``native`` is this project's own (symmetric padding,
half-pixel bilinear upsampling, RGB, rounding to uint8): the styles trained here.
``tf1`` reproduces the official DCT-Net TensorFlow 1 graph (``cartoon.model.dctnet`` imports
it): TF SAME padding on the stride-2 convolutions (0 before, 1 after on even sizes),
TF1 ``resize_bilinear`` without half-pixel centres, BGR channel order, output clipped to
+-0.999999 and truncated to uint8. A weights file names its mode in its metadata.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from cartoon.constants import UNET_STRIDE
from cartoon.errors import WeightsError

MODES = ("native", "tf1")
# The official exporter clips to this before scaling, so 255 is never produced.
TF1_CLIP = 0.999999


@dataclass(frozen=True)
class UNetConfig:
    width: int = 32  # C: channels at full resolution; 2C at 1/2, 4C at 1/4
    res_blocks: int = 4  # residual blocks at 1/4 resolution
    filter_radius: int = 1  # guided filter box radius
    filter_eps: float = 5e-3  # guided filter regulariser (inputs in [-1, 1])
    mode: str = "native"  # "native" (trained here) or "tf1" (the official DCT-Net graph)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown generator mode {self.mode!r}; known: {', '.join(MODES)}")


def _window_counts(size: int, radius: int, dtype: torch.dtype) -> torch.Tensor:
    """How many of a (2r+1) window's pixels fall inside a line of ``size`` pixels, per position."""
    index = torch.arange(size)
    return ((index + radius).clamp(max=size - 1) - (index - radius).clamp(min=0) + 1).to(dtype)


def _window_sum(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Sum over a (2r+1) window along ``dim``, treating pixels outside the image as 0."""
    out = x.clone()
    size = x.shape[dim]
    for shift in range(1, min(radius, size - 1) + 1):
        out.narrow(dim, shift, size - shift).add_(x.narrow(dim, 0, size - shift))
        out.narrow(dim, 0, size - shift).add_(x.narrow(dim, shift, size - shift))
    return out


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, counting only pixels inside the image.

    Separable: one running window along W, one along H, then a division by the
    in-image pixel count. Equal to ``avg_pool2d(..., count_include_pad=False)`` up to
    rounding, and several times faster on a CPU, where that pooling kernel was the
    guided filter's main cost (docs/BENCHMARKS.md).
    """
    height, width = x.shape[-2:]
    sums = _window_sum(_window_sum(x, radius, x.dim() - 1), radius, x.dim() - 2)
    counts = _window_counts(height, radius, x.dtype).to(x.device)[:, None] * _window_counts(
        width, radius, x.dtype
    ).to(x.device)[None, :]
    return sums.div_(counts)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter, per channel: edges of `guide` shape `src`.

    Args:
        guide: (B, C, H, W) the image whose edges are kept.
        src: (B, C, H, W) the signal to smooth.
        radius: box radius.
        eps: regulariser; larger smooths more.

    Returns:
        (B, C, H, W) filtered `src`.
    """
    mean_a, mean_b = guided_coefficients(guide, src, radius, eps)
    return mean_a.mul_(guide).add_(mean_b)


def guided_coefficients(
    guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The guided filter's local linear model: ``src ~ A * guide + B`` per pixel.

    Args and shapes as ``guided_filter``, whose output is ``A * guide + B``.

    Returns:
        (A, B), each (B, C, H, W): the window-averaged coefficients.
    """
    mean_g = box_mean(guide, radius)
    mean_s = box_mean(src, radius)
    cov = box_mean(guide * src, radius).sub_(mean_g * mean_s)
    var = box_mean(guide * guide, radius).sub_(mean_g * mean_g)
    a = cov.div_(var.add_(eps))
    b = mean_s.sub_(a * mean_g)
    return box_mean(a, radius), box_mean(b, radius)


# Rows per band of ``guided_filter_banded``: the band's dozen float arrays stay in the
# core's cache (48-96 rows measured alike at 720 px wide).
FILTER_BAND_ROWS = 64


def guided_filter_banded(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """``guided_filter`` of one (H, W, C) float32 or float64 picture, C <= 4, with OpenCV.

    The same arithmetic up to rounding, a band of rows at a time: the whole-picture
    version makes about 25 passes over arrays larger than the cache and is
    memory-bound on a CPU; here each band's intermediates stay in cache (2-3x faster
    on a 720 px background, docs/BENCHMARKS.md). A band reads 2r rows beyond its own
    on each side, as two box means in a row see that far.
    """
    height, width, channels = guide.shape
    side = 2 * radius + 1
    # A window's in-picture pixel count is a row factor times a column factor; OpenCV's
    # normalised box divides by side^2, so the rows and columns within r of the
    # picture's edges are scaled back by side / (their factor).
    row_fix = side / _window_counts(height, radius, torch.float64).numpy()
    fixed_rows = np.flatnonzero(row_fix != 1.0)
    column_fix = (side / _window_counts(width, radius, torch.float64).numpy()).astype(guide.dtype)
    fixed_columns = np.flatnonzero(column_fix != 1.0)
    column_fix = column_fix[fixed_columns, None]
    halo = 2 * radius
    out = np.empty_like(src)
    for top in range(0, height, FILTER_BAND_ROWS):
        bottom = min(height, top + FILTER_BAND_ROWS)
        first, last = max(0, top - halo), min(height, bottom + halo)
        g, s = guide[first:last], src[first:last]
        band_fixed_rows = fixed_rows[(fixed_rows >= first) & (fixed_rows < last)]

        def mean(x: np.ndarray) -> np.ndarray:
            # Zeros outside the band: wrong only in the halo rows, which are not kept.
            means = cv2.boxFilter(x, -1, (side, side), normalize=True, borderType=cv2.BORDER_CONSTANT)
            means = means.reshape(len(x), width, -1)  # OpenCV drops a single channel's axis
            means[:, fixed_columns] *= column_fix
            for row in band_fixed_rows:
                means[row - first] *= row_fix[row]
            return means

        mean_g, mean_s = mean(g), mean(s)
        cov = cv2.subtract(mean(cv2.multiply(g, s)), cv2.multiply(mean_g, mean_s))
        var = cv2.subtract(mean(cv2.multiply(g, g)), cv2.multiply(mean_g, mean_g))
        var += eps  # in numpy: how OpenCV's bindings spread a scalar over channels has varied
        a = cv2.divide(cov, var)
        b = cv2.subtract(mean_s, cv2.multiply(a, mean_g))
        filtered = cv2.add(cv2.multiply(mean(a), g), mean(b))
        out[top:bottom] = filtered.reshape(last - first, width, channels)[top - first : bottom - first]
    return out


def filter_output(x: torch.Tensor, raw: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """The generator's last step: ``raw`` guided-filtered by its input ``x``, (B, C, H, W).

    In fp32 at least: the variance terms lose too much in half precision (float64 stays
    float64). On a CPU, outside training, in bands with OpenCV (``guided_filter_banded``);
    elsewhere as whole NCHW tensors: the box means run 1.6x slower on channels_last ones.
    """
    precision = torch.promote_types(x.dtype, torch.float32)
    # OpenCV is outside autograd: a forward that records gradients (training) keeps the
    # tensor version, and so does an empty batch.
    banded = x.device.type == "cpu" and len(x) > 0 and x.shape[1] <= 4
    if banded and not (x.requires_grad or raw.requires_grad):
        # (B, H, W, C) views of channels_last tensors; copies of NCHW ones.
        guide = x.to(precision).permute(0, 2, 3, 1).contiguous().numpy()
        src = raw.to(precision).permute(0, 2, 3, 1).contiguous().numpy()
        filtered = np.stack([guided_filter_banded(g, s, radius, eps) for g, s in zip(guide, src)])
        return torch.from_numpy(filtered).permute(0, 3, 1, 2)
    return guided_filter(x.to(precision).contiguous(), raw.to(precision).contiguous(), radius, eps)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pads like TensorFlow's SAME: the odd pixel of the total goes after, not before."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def tf1_upsample2x(x: torch.Tensor) -> torch.Tensor:
    """TF1 ``resize_bilinear`` to twice the size, align_corners=False, half_pixel_centers=False.

    Output pixel i samples input position i / 2: even pixels copy the input, odd ones
    average two neighbours, the last one repeats the edge. Same formula as TF's kernel
    (top + (bottom - top) * 0.5), so the float results match.
    """

    def along(t: torch.Tensor, dim: int) -> torch.Tensor:
        following = torch.cat([t.narrow(dim, 1, t.shape[dim] - 1), t.narrow(dim, t.shape[dim] - 1, 1)], dim)
        between = t + (following - t) * 0.5
        return torch.stack([t, between], dim + 1).flatten(dim, dim + 1)

    return along(along(x, 3), 2)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv(channels, channels, 3)
        self.conv2 = _conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place on fresh convolution outputs: the same values, less memory traffic.
        return self.conv2(F.leaky_relu_(self.conv1(x), 0.2)).add_(x)


class UNetGenerator(nn.Module):
    """Image-to-image generator; input and output (B, 3, H, W) in [-1, 1], H and W % 4 == 0."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        self.tf1 = config.mode == "tf1"
        c = config.width
        self.stem = _conv(3, c, 7)
        self.down1 = self._down(c, c)
        self.widen1 = _conv(c, 2 * c, 3)
        self.down2 = self._down(2 * c, 2 * c)
        self.widen2 = _conv(2 * c, 4 * c, 3)
        self.blocks = nn.Sequential(*(ResBlock(4 * c) for _ in range(config.res_blocks)))
        self.narrow2 = _conv(4 * c, 2 * c, 3)
        self.up2a = _conv(2 * c, 2 * c, 3)
        self.up2b = _conv(2 * c, c, 3)
        self.up1 = _conv(c, c, 3)
        self.head = _conv(c, 3, 7)

    def _down(self, cin: int, cout: int) -> nn.Conv2d:
        # In tf1 mode the padding depends on the input size, so forward applies it.
        return nn.Conv2d(cin, cout, 3, stride=2, padding=0) if self.tf1 else _conv(cin, cout, 3, stride=2)

    def _downsample(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return conv(tf_same_pad(x, 3, 2)) if self.tf1 else conv(x)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf1:
            return tf1_upsample2x(x)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, working_scale: float = 1.0) -> torch.Tensor:
        """(B, 3, H, W) RGB in [-1, 1] to the same; in tf1 mode the layers see BGR.

        Args:
            x: the input.
            working_scale: below 1, the layers run on a copy shrunk by this factor and
                the guided filter's linear model, fitted there, is applied to ``x``
                itself (``guided_upsample``): about ``working_scale ** 2`` of the
                work, with edges taken from the full-size input.
        """
        if self.tf1:
            x = x.flip(1)
        radius, eps = self.config.filter_radius, self.config.filter_eps
        if working_scale < 1.0:
            small = F.interpolate(x, size=working_size(x.shape[-2:], working_scale), mode="area")
            out = guided_upsample(small, self.layers(small), x, radius, eps)
        else:
            out = filter_output(x, self.layers(x), radius, eps)
        out = out.clamp(-1.0, 1.0)
        return out.flip(1) if self.tf1 else out

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutions before the guided filter: (B, 3, H, W) to the raw (B, 3, H, W)."""
        # Activations and skip additions work in place on the fresh outputs of the layer
        # before (convolutions, upsampling): the same values, and on a CPU 6-9 % faster
        # a forward, as every full-size temporary is memory traffic (docs/BENCHMARKS.md).
        act = lambda t: F.leaky_relu_(t, 0.2)  # noqa: E731
        x0 = act(self.stem(x))  # (B, C, H, W)
        x1 = act(self.widen1(act(self._downsample(self.down1, x0))))  # (B, 2C, H/2, W/2)
        x2 = act(self.widen2(act(self._downsample(self.down2, x1))))  # (B, 4C, H/4, W/4)
        x2 = act(self.narrow2(self.blocks(x2)))  # (B, 2C, H/4, W/4)
        x3 = act(self.up2b(act(self.up2a(self._upsample(x2).add_(x1)))))  # (B, C, H/2, W/2)
        return self.head(act(self.up1(self._upsample(x3).add_(x0))))  # (B, 3, H, W)


def working_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    """(height, width) shrunk by ``scale``, each a multiple of the UNet's stride (at least one stride)."""
    return tuple(max(UNET_STRIDE, round(side * scale / UNET_STRIDE) * UNET_STRIDE) for side in size)


def guided_upsample(
    small: torch.Tensor, raw_small: torch.Tensor, guide: torch.Tensor, radius: int, eps: float
) -> torch.Tensor:
    """The generator's output at full size from its layers run at a smaller size.

    He and Sun's fast guided filter (2015): the local linear model ``raw ~ A * x + B``
    is fitted on the small input and its raw output, its coefficients are upsampled
    bilinearly (they vary slowly, being window means) and applied to the full-size
    input, so edges and fine texture come from the photo at full size. At the same
    size (``small`` is ``guide``) it is ``filter_output``.

    Args:
        small: (B, C, h, w) the shrunk input the layers saw.
        raw_small: (B, C, h, w) the layers' raw output.
        guide: (B, C, H, W) the full-size input.
        radius, eps: the generator's guided filter.

    Returns:
        (B, C, H, W) in fp32 at least, like ``filter_output``.
    """
    precision = torch.promote_types(guide.dtype, torch.float32)
    coefficients = guided_coefficients(
        small.to(precision).contiguous(), raw_small.to(precision).contiguous(), radius, eps
    )
    a, b = (
        F.interpolate(c, size=guide.shape[-2:], mode="bilinear", align_corners=False) for c in coefficients
    )
    return a.mul_(guide.to(precision)).add_(b)


def to_uint8(out: torch.Tensor, mode: str) -> torch.Tensor:
    """Generator output in [-1, 1] to 0..255 the way the mode's exporter does.

    native rounds; tf1 clips to +-0.999999 and truncates, as the official graph's
    ``Cast`` to uint8 does (so it never yields 255).
    """
    if mode == "tf1":
        return out.clamp_(-TF1_CLIP, TF1_CLIP).add_(1.0).mul_(127.5).to(torch.uint8)
    return out.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def receptive_radius(config: UNetConfig) -> int:
    """How far (in input pixels) an output pixel can see, along the deepest path.

    Each k x k convolution at scale s (1, 2 or 4 input pixels per feature pixel)
    adds s * (k // 2); a stride-2 convolution reads its input grid; a bilinear x2
    upsample reads one coarse pixel each side; the guided filter applies two box
    means of radius r.
    """
    r = 3  # stem 7x7 at scale 1
    r += 1 + 2  # down1 (3x3 on the scale-1 grid), widen1 at scale 2
    r += 2 + 4  # down2 (3x3 on the scale-2 grid), widen2 at scale 4
    r += config.res_blocks * 2 * 4  # two 3x3 convs per block at scale 4
    r += 4 + 4  # narrow2 at scale 4, bilinear from scale 4
    r += 2 + 2 + 2  # up2a, up2b at scale 2, bilinear from scale 2
    r += 1 + 3  # up1 3x3, head 7x7 at scale 1
    r += 2 * config.filter_radius
    return r


def random_generator(config: UNetConfig = UNetConfig(), seed: int = 0) -> UNetGenerator:
    """A generator with seeded random weights (for tests and before training)."""
    generator = torch.Generator().manual_seed(seed)
    model = UNetGenerator(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            else:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) * (1.0 / fan_in) ** 0.5)
    return model.eval()


def save_weights(model: UNetGenerator, path: str | Path, extra_metadata: dict[str, str] | None = None) -> None:
    """Writes the weights as safetensors, with the config (and ``extra_metadata``) as metadata."""
    metadata = {**(extra_metadata or {}), **{key: str(value) for key, value in asdict(model.config).items()}}
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    # safetensors creates the file owner-only; weights ship as package data for everyone.
    Path(path).chmod(0o644)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Reads a safetensors file once: its tensors and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {exc}") from exc


def _config(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str], base: UNetConfig) -> UNetConfig:
    """The architecture from the tensors, the filter and mode from the metadata.

    Files written before a field existed lack it; ``base`` supplies those.
    """
    if "stem.weight" not in state:
        raise WeightsError(f"weights file {path} has no key 'stem.weight'")
    blocks = {key.split(".")[1] for key in state if key.startswith("blocks.")}
    values = {}
    for field in fields(UNetConfig):
        if field.name in ("width", "res_blocks") or field.name not in metadata:
            continue
        try:
            values[field.name] = type(getattr(base, field.name))(metadata[field.name])
        except ValueError as exc:
            raise WeightsError(f"weights file {path}: metadata {field.name}={metadata[field.name]!r} is invalid") from exc
    try:
        return UNetConfig(
            **{**asdict(base), **values, "width": state["stem.weight"].shape[0], "res_blocks": len(blocks)}
        )
    except ValueError as exc:
        raise WeightsError(f"weights file {path}: {exc}") from exc


def config_from_weights(path: str | Path, base: UNetConfig = UNetConfig()) -> UNetConfig:
    """Reads the config a weights file was saved with (``base`` fills what it lacks)."""
    state, metadata = read_weights(path)
    return _config(Path(path), state, metadata, base)


def load_generator(path: str | Path, config: UNetConfig | None = None) -> UNetGenerator:
    """Loads a generator from safetensors with strict key and shape checks.

    Args:
        path: the .safetensors file.
        config: the expected architecture; read from the file (tensors and metadata,
            one read) when None.

    Returns:
        The generator in eval mode on the CPU.

    Raises:
        WeightsError: naming the file and the first missing, unexpected or
            mis-shaped key.
    """
    path = Path(path)
    state, metadata = read_weights(path)
    config = config or _config(path, state, metadata, UNetConfig())
    model = UNetGenerator(config)
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise WeightsError(f"weights file {path} is missing key {key!r}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"weights file {path}: key {key!r} has shape {tuple(state[key].shape)}, "
                f"the model expects {tuple(tensor.shape)}"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise WeightsError(f"weights file {path} has unexpected key {unexpected[0]!r}")
    model.load_state_dict({key: value.float() for key, value in state.items()})
    return model.eval()
