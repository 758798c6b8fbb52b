"""Styles: named pairs of head and background generators, and the batched runner."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from cartoon.image.background import PADDINGS
from cartoon.image.align import face_interior_mask
from cartoon.constants import CROP_SIZE
from cartoon.model.device import halve_on_out_of_memory, resolve_device
from cartoon.errors import WeightsError
from cartoon.image.finish import FINISHES, Finish, Wash, apply_batch, wash_batch
from cartoon.model.registry import DEFAULT_PRECISION, DEFAULT_STYLES_DIR, REGISTRY_FILE, STYLE_PRECISIONS
from cartoon.image.tone import TONES
from cartoon.model.inference import (
    BackgroundScale, InferenceMode, Precision, checked_bf16, choose_background_scale, choose_mode,
)
from cartoon.model.unet import MODES, UNetGenerator, config_from_weights, load_generator, to_uint8



@dataclass(frozen=True)
class Style:
    """One entry of a style registry.

    Attributes:
        name: the id clients pass as ``style=``.
        description: one line for ``GET /v1/styles``.
        head: weights for aligned 288x288 head crops.
        background: weights for the whole picture (may be the same file as ``head``).
        width: the UNet width of the head weights.
        background_width: the UNet width of the background weights: a slimmer model
            may draw the background, where most of a picture's pixels are, while heads,
            whose identity must hold, keep the wider one.
        source: where the weights come from (a model id or "trained here").
        licence: the weights' licence as their source states it.
        mode: the generator mode both files must declare ("native" or "tf1").
        background_padding: how the background is padded before the UNet
            (``cartoon.image.background.PADDINGS``).
        mask: a (288, 288) grayscale paste-back mask image; the feathered ellipse if None.
        finish: the name of the hard last steps (``cartoon.image.finish.FINISHES``) run on the
            generators' output, or None for the generators' output as it is.
        precision: one of ``STYLE_PRECISIONS``, what the style asks to be served in
            when the config's ``precision`` is "auto".
        tone: "photo" to re-expose the photo from itself before the generators
            (``cartoon.image.tone``), or None to give them the photo as it is (an
            imported style whose output must stay exact).
        min_background_scale: the smallest working scale "auto" may give its background
            model (``cartoon.model.inference.choose_background_scale``): 1 for a style whose
            outlines a half-size background loses (comic's ink on clothes).
        wash: whether the generators' output is washed where the photo is calm
            (``cartoon.image.finish.Wash``), before any finish; off for an imported style
            whose output must stay exact.
    """

    name: str
    description: str
    head: Path
    background: Path
    width: int
    background_width: int = 0  # 0: the same as width
    source: str = ""
    licence: str = ""
    mode: str = "native"
    background_padding: str = "mirror4"
    mask: Path | None = None
    finish: str | None = None
    precision: str = "auto"
    tone: str | None = None
    min_background_scale: float = 0.0
    wash: bool = False

    def __post_init__(self):
        if not self.background_width:
            object.__setattr__(self, "background_width", self.width)

    def served_precision(self, configured: Precision = "auto") -> str:
        """The precision the style is served in: the config's, unless it says "auto"."""
        return self.precision if configured == "auto" else configured

    def public(self, configured: Precision = "auto") -> dict:
        """What ``GET /v1/styles`` shows; ``configured`` is the config's ``precision``."""
        return {
            "name": self.name,
            "description": self.description,
            "width": self.width,
            "background_width": self.background_width,
            "source": self.source,
            "licence": self.licence,
            "mode": self.mode,
            "finish": self.finish,
            "precision": self.served_precision(configured),
        }


def _style(directory: Path, entry: dict) -> Style:
    compat = entry.get("compat", {})
    mode = compat.get("mode", "native")
    style = Style(
        name=entry["name"],
        description=entry.get("description", ""),
        head=directory / entry["head"],
        background=directory / entry["background"],
        width=int(entry["width"]),
        background_width=int(entry.get("background_width", 0)),
        source=entry.get("source", ""),
        licence=entry.get("licence", ""),
        mode=mode,
        background_padding=compat.get("background_padding", "mirror4"),
        mask=directory / compat["mask"] if compat.get("mask") else None,
        finish=entry.get("finish"),
        precision=entry.get("precision", DEFAULT_PRECISION.get(mode, "auto")),
        tone=entry.get("tone"),
        min_background_scale=float(entry.get("min_background_scale", 0.0)),
        wash=bool(entry.get("wash", False)),
    )
    if style.precision not in STYLE_PRECISIONS:
        raise ValueError(
            f"style {style.name!r}: unknown precision {style.precision!r}; known: {', '.join(STYLE_PRECISIONS)}"
        )
    if style.finish is not None and style.finish not in FINISHES:
        raise ValueError(f"style {style.name!r}: unknown finish {style.finish!r}; known: {', '.join(FINISHES)}")
    if style.tone not in TONES:
        raise ValueError(f"style {style.name!r}: unknown tone {style.tone!r}; known: photo, or none")
    if not 0.0 <= style.min_background_scale <= 1.0:
        raise ValueError(f"style {style.name!r}: min_background_scale must be within 0..1")
    if style.mode not in MODES:
        raise ValueError(f"style {style.name!r}: unknown mode {style.mode!r}")
    if style.background_padding not in PADDINGS:
        raise ValueError(f"style {style.name!r}: unknown background_padding {style.background_padding!r}")
    return style


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
        """Reads ``registry.json``.

        Its form: {"default": name, "styles": [{name, description, head, background,
        width, background_width, source, licence, finish, precision, compat: {mode,
        background_padding, mask, ...}}]}; background_width (the head's width by
        default), source, licence, finish, precision and compat are optional (a style
        trained here).
        """
        path = Path(directory) / REGISTRY_FILE
        try:
            document = json.loads(path.read_text())
            styles = [_style(Path(directory), entry) for entry in document["styles"]]
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
        config = config_from_weights(path)
        padding = "white16" if config.mode == "tf1" else "mirror4"
        style = Style(name, f"weights from {path.name}", path, path, config.width, mode=config.mode,
                      background_padding=padding, precision=DEFAULT_PRECISION[config.mode])
        return cls([style], name)

    def names(self) -> list[str]:
        return sorted(self.styles)

    def get(self, name: str | None) -> Style:
        """The named style (the default when None); KeyError lists the valid names.

        An empty name is not the default: it names no style (an API client that sends
        ``style=`` gets the same 422 as for any unknown name).
        """
        name = self.default if name is None else name
        if name not in self.styles:
            raise KeyError(f"unknown style {name!r}; valid styles: {', '.join(self.names())}")
        return self.styles[name]


class Stylizer:
    """Runs one style's generators on batches of uint8 pieces, on one device.

    Precision and memory format come from ``cartoon.model.inference.choose_mode`` unless a
    ``mode`` is given: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32. A batch
    that runs out of CUDA memory is retried as two halves, once. A style's finish
    (``cartoon.image.finish``) runs on the generators' output, on the CPU.
    """

    def __init__(
        self,
        head: UNetGenerator,
        background: UNetGenerator,
        device: str | torch.device = "auto",
        mode: InferenceMode | None = None,
        paste_mask: np.ndarray | None = None,
        finish: Finish | None = None,
        wash: Wash | None = None,
    ):
        self.paste_mask = paste_mask
        self.finish = finish
        self.wash = wash
        self.device = resolve_device(str(device))
        self.mode = mode or choose_mode(self.device)
        self.dtypes = {"head": self.mode.dtype, "background": self.mode.background_dtype}
        self.channels_last = self.mode.channels_last
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.models = {
            kind: model.to(self.device, self.dtypes[kind], memory_format=memory_format).eval()
            for kind, model in (("head", head), ("background", background))
        }

    @classmethod
    def from_style(
        cls,
        style: Style,
        device: str | torch.device = "auto",
        precision: Precision = "auto",
        background_scale: BackgroundScale = 1.0,
        tiled: bool = False,
    ) -> "Stylizer":
        """Loads a registry entry's weights, checking both files against its width and mode.

        ``precision`` is the config's; with "auto" the style's own ``precision`` decides.
        ``background_scale`` as ``cartoon.model.inference.choose_background_scale`` takes it
        (``tiled``: the backgrounds come in tiles); 1, the default, is the reference.
        """
        generators = {}
        for kind, path, width in (("head", style.head, style.width),
                                  ("background", style.background, style.background_width)):
            generator = load_generator(path)
            if generator.config.width != width:
                raise WeightsError(
                    f"weights file {path} has width {generator.config.width}, "
                    f"style {style.name!r} declares {width} for its {kind}"
                )
            if generator.config.mode != style.mode:
                raise WeightsError(
                    f"weights file {path} is in mode {generator.config.mode!r}, "
                    f"style {style.name!r} declares {style.mode!r}"
                )
            generators[kind] = generator
        device = resolve_device(str(device))
        served = style.served_precision(precision)
        mode = choose_mode(device, served)
        if served == "auto" and mode.precision == "bf16":
            # Each model on its own: a slim background model rounds further from fp32
            # in bf16 than its head model, and need not hold the heads back.
            head, background = (checked_bf16(mode, [generators[kind]]) for kind in ("head", "background"))
            if background.precision != head.precision:
                head = replace(head, background_precision=background.precision,
                               reason=f"{head.reason}; background model: {background.reason}")
            mode = head
        elif served != precision:
            mode = replace(mode, reason=f"style {style.name!r} asks for {served}")
        # The background model's own precision decides its working scale.
        background_mode = replace(mode, precision=mode.background_precision or mode.precision)
        scale = choose_background_scale(background_mode, background_scale, style.mode, tiled,
                                        style.min_background_scale)
        return cls(
            generators["head"], generators["background"], device, replace(mode, background_scale=scale),
            paste_mask=load_mask(style), finish=FINISHES[style.finish] if style.finish else None,
            wash=Wash() if style.wash else None,
        )

    def run(self, pieces: np.ndarray, kind: str, finished: Sequence[bool] | None = None) -> np.ndarray:
        """Stylizes a batch: the generators, the wash of their calm areas, then the style's finish.

        Args:
            pieces: (B, H, W, 3) uint8, H and W multiples of 4.
            kind: "head" or "background".
            finished: per piece, whether it gets the finish here (None: all of them); a
                video's frames ride in the same batches unfinished and are finished in
                order afterwards (``cartoon.image.finish.TemporalFinish``). The wash
                (``cartoon.image.finish.Wash``) needs the photo pieces, so every piece
                gets it here; a head's face is left out of it.

        Returns:
            (B, H, W, 3) uint8.

        Raises:
            DeviceOutOfMemoryError: the batch and its halves did not fit in GPU memory.
        """
        output = self.generate(pieces, kind)
        if self.wash is not None:
            # A head's face keeps the student's own picture: washing smooth skin moved the
            # faces' identity distance (median 0.451 -> 0.475 on benchmarks.quality --quick).
            keep = face_interior_mask(pieces.shape[1]) if kind == "head" else None
            output = wash_batch(output, pieces, self.wash, keep)
        if finished is None:
            return apply_batch(output, self.finish)
        chosen = np.flatnonzero(np.asarray(finished, dtype=bool))
        if len(chosen):
            output[chosen] = apply_batch(output[chosen], self.finish)
        return output

    def generate(self, pieces: np.ndarray, kind: str) -> np.ndarray:
        """The generators' output alone, without the finish: what precision changes.

        Takes, returns and raises what ``run`` does.
        """
        return halve_on_out_of_memory(lambda part: self._forward(part, kind), pieces)

    @torch.inference_mode()
    def _forward(self, pieces: np.ndarray, kind: str) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(pieces)).to(self.device)
        # Scaled in fp32 before the cast: in bf16 the step 1/127.5 would not survive.
        batch = batch.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).to(self.dtypes[kind])  # (B, 3, H, W)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        model = self.models[kind]
        scale = self.mode.background_scale if kind == "background" else 1.0  # heads at full size
        out = to_uint8(model(batch, scale), model.config.mode)  # (B, 3, H, W)
        return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def load_mask(style: Style) -> np.ndarray | None:
    """A style's (288, 288) uint8 paste-back mask, or None for the default ellipse."""
    if style.mask is None:
        return None
    mask = cv2.imread(str(style.mask), cv2.IMREAD_GRAYSCALE)
    if mask is None or mask.shape != (CROP_SIZE, CROP_SIZE):
        raise WeightsError(f"style {style.name!r}: mask {style.mask} is not a {CROP_SIZE}x{CROP_SIZE} grayscale image")
    return mask
