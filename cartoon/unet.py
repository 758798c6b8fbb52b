"""The DCT-Net / White-box-Cartoonization UNet generator and its guided filter."""

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from cartoon.errors import WeightsError


@dataclass(frozen=True)
class UNetConfig:
    width: int = 32  # C: channels at full resolution; 2C at 1/2, 4C at 1/4
    res_blocks: int = 4  # residual blocks at 1/4 resolution
    filter_radius: int = 1  # guided filter box radius
    filter_eps: float = 5e-3  # guided filter regulariser (inputs in [-1, 1])


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, counting only pixels inside the image."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


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
    mean_g = box_mean(guide, radius)
    mean_s = box_mean(src, radius)
    cov = box_mean(guide * src, radius) - mean_g * mean_s
    var = box_mean(guide * guide, radius) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_s - a * mean_g
    return box_mean(a, radius) * guide + box_mean(b, radius)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv(channels, channels, 3)
        self.conv2 = _conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class UNetGenerator(nn.Module):
    """Image-to-image generator; input and output (B, 3, H, W) in [-1, 1], H and W % 4 == 0."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        c = config.width
        self.stem = _conv(3, c, 7)
        self.down1 = _conv(c, c, 3, stride=2)
        self.widen1 = _conv(c, 2 * c, 3)
        self.down2 = _conv(2 * c, 2 * c, 3, stride=2)
        self.widen2 = _conv(2 * c, 4 * c, 3)
        self.blocks = nn.Sequential(*(ResBlock(4 * c) for _ in range(config.res_blocks)))
        self.narrow2 = _conv(4 * c, 2 * c, 3)
        self.up2a = _conv(2 * c, 2 * c, 3)
        self.up2b = _conv(2 * c, c, 3)
        self.up1 = _conv(c, c, 3)
        self.head = _conv(c, 3, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        x0 = act(self.stem(x))  # (B, C, H, W)
        x1 = act(self.widen1(act(self.down1(x0))))  # (B, 2C, H/2, W/2)
        x2 = act(self.widen2(act(self.down2(x1))))  # (B, 4C, H/4, W/4)
        x2 = act(self.narrow2(self.blocks(x2)))  # (B, 2C, H/4, W/4)
        x3 = F.interpolate(x2, scale_factor=2, mode="bilinear", align_corners=False)
        x3 = act(self.up2b(act(self.up2a(x3 + x1))))  # (B, C, H/2, W/2)
        x4 = F.interpolate(x3, scale_factor=2, mode="bilinear", align_corners=False)
        raw = self.head(act(self.up1(x4 + x0)))  # (B, 3, H, W)
        # The filter runs in fp32 (its variance terms lose too much in half precision)
        # and in NCHW: its box means run 1.6x slower on channels_last tensors.
        out = guided_filter(
            x.float().contiguous(), raw.float().contiguous(),
            self.config.filter_radius, self.config.filter_eps,
        )
        return out.clamp(-1.0, 1.0)


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


def save_weights(model: UNetGenerator, path: str | Path) -> None:
    """Writes the weights as safetensors, with the config as metadata."""
    metadata = {key: str(value) for key, value in asdict(model.config).items()}
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    # safetensors creates the file owner-only; weights ship as package data for everyone.
    Path(path).chmod(0o644)


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {exc}") from exc


def config_from_weights(path: str | Path, base: UNetConfig = UNetConfig()) -> UNetConfig:
    """Reads the width and block count a weights file was saved with."""
    state = _read(Path(path))
    if "stem.weight" not in state:
        raise WeightsError(f"weights file {path} has no key 'stem.weight'")
    blocks = {key.split(".")[1] for key in state if key.startswith("blocks.")}
    return UNetConfig(
        width=state["stem.weight"].shape[0],
        res_blocks=len(blocks),
        filter_radius=base.filter_radius,
        filter_eps=base.filter_eps,
    )


def load_generator(path: str | Path, config: UNetConfig | None = None) -> UNetGenerator:
    """Loads a generator from safetensors with strict key and shape checks.

    Args:
        path: the .safetensors file.
        config: the expected architecture; read from the file when None.

    Returns:
        The generator in eval mode on the CPU.

    Raises:
        WeightsError: naming the file and the first missing, unexpected or
            mis-shaped key.
    """
    path = Path(path)
    config = config or config_from_weights(path)
    model = UNetGenerator(config)
    state = _read(path)
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
