"""Styles: named pairs of head and background generators, and the batched runner."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cartoon.errors import WeightsError
from cartoon.unet import UNetGenerator, config_from_weights, load_generator

DEFAULT_STYLES_DIR = Path(__file__).parent / "styles"
REGISTRY_FILE = "registry.json"


@dataclass(frozen=True)
class Style:
    """One entry of a style registry.

    Attributes:
        name: the id clients pass as ``style=``.
        description: one line for ``GET /v1/styles``.
        head: weights for aligned 288x288 head crops.
        background: weights for the whole picture (may be the same file as ``head``).
        width: the UNet width both files must have.
    """

    name: str
    description: str
    head: Path
    background: Path
    width: int

    def public(self) -> dict:
        return {"name": self.name, "description": self.description, "width": self.width}


class StyleRegistry:
    """The styles a service offers, read from ``registry.json`` in a weights directory."""

    def __init__(self, styles: list[Style], default: str):
        if not styles:
            raise WeightsError("a style registry needs at least one style")
        self.styles = {style.name: style for style in styles}
        if default not in self.styles:
            raise WeightsError(f"default style {default!r} is not among {sorted(self.styles)}")
        self.default = default

    @classmethod
    def from_directory(cls, directory: str | Path = DEFAULT_STYLES_DIR) -> "StyleRegistry":
        """Reads ``registry.json``: {"default": name, "styles": [{name, description, head, background, width}]}."""
        path = Path(directory) / REGISTRY_FILE
        try:
            document = json.loads(path.read_text())
            styles = [
                Style(
                    name=entry["name"],
                    description=entry.get("description", ""),
                    head=Path(directory) / entry["head"],
                    background=Path(directory) / entry["background"],
                    width=int(entry["width"]),
                )
                for entry in document["styles"]
            ]
            default = document.get("default", styles[0].name if styles else "")
        except FileNotFoundError as exc:
            raise WeightsError(f"style registry {path} does not exist") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"style registry {path} is malformed: {exc!r}") from exc
        return cls(styles, default)

    @classmethod
    def single_file(cls, path: str | Path, name: str = "custom") -> "StyleRegistry":
        """A registry of one style whose head and background share one weights file."""
        path = Path(path)
        width = config_from_weights(path).width
        return cls([Style(name, f"weights from {path.name}", path, path, width)], name)

    def names(self) -> list[str]:
        return sorted(self.styles)

    def get(self, name: str | None) -> Style:
        """The named style (the default when None); KeyError lists the valid names."""
        name = name or self.default
        if name not in self.styles:
            raise KeyError(f"unknown style {name!r}; valid styles: {', '.join(self.names())}")
        return self.styles[name]


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" is CUDA when present, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Stylizer:
    """Runs one style's generators on batches of uint8 pieces, on one device.

    On CUDA the generators run in half precision and channels_last; on the CPU in
    fp32 (CPU half precision is slower, and channels_last is measured in the benchmarks).
    """

    def __init__(
        self,
        head: UNetGenerator,
        background: UNetGenerator,
        device: str | torch.device = "auto",
        channels_last: bool | None = None,
    ):
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.models = {
            kind: model.to(self.device, self.dtype, memory_format=memory_format).eval()
            for kind, model in (("head", head), ("background", background))
        }

    @classmethod
    def from_style(cls, style: Style, device: str | torch.device = "auto") -> "Stylizer":
        """Loads a registry entry's weights, checking both files against its width."""
        generators = {}
        for kind, path in (("head", style.head), ("background", style.background)):
            generator = load_generator(path)
            if generator.config.width != style.width:
                raise WeightsError(
                    f"weights file {path} has width {generator.config.width}, "
                    f"style {style.name!r} declares {style.width}"
                )
            generators[kind] = generator
        return cls(generators["head"], generators["background"], device)

    @torch.inference_mode()
    def run(self, pieces: np.ndarray, kind: str) -> np.ndarray:
        """Stylizes a batch.

        Args:
            pieces: (B, H, W, 3) uint8, H and W multiples of 4.
            kind: "head" or "background".

        Returns:
            (B, H, W, 3) uint8.
        """
        batch = torch.from_numpy(np.ascontiguousarray(pieces)).to(self.device)
        batch = batch.permute(0, 3, 1, 2).to(self.dtype).div_(127.5).sub_(1.0)  # (B, 3, H, W)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        out = self.models[kind](batch)  # (B, 3, H, W) in [-1, 1], fp32
        out = out.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
        return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()
