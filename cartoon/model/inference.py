"""How the UNet runs on a device: precision and memory format, chosen once at start-up.

The one place that decides it, so the Stylizer, the logs and ``/readyz`` agree. Figures
behind the choices are in docs/BENCHMARKS.md ("The UNet alone").
"""

import copy
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class InferenceMode:
    """The UNet's precision and memory format on one device, and why.

    Attributes:
        device: where the generators run.
        precision: "fp32", "bf16" or "fp16" for weights and activations (the guided
            filter always runs in fp32).
        channels_last: NHWC weights and inputs.
        reason: one line saying why this mode was chosen.
        background_scale: the background model's working scale (``choose_background_scale``);
            head crops always run at full size.
        background_precision: the background model's precision where it differs from
            the head model's ("" where it does not): each model of a style runs bf16
            only if it passes ``checked_bf16`` on its own.
    """

    device: torch.device
    precision: str
    channels_last: bool
    reason: str
    background_scale: float = 1.0
    background_precision: str = ""

    @property
    def dtype(self) -> torch.dtype:
        """The head model's dtype (and the background's, unless ``background_precision``)."""
        return DTYPES[self.precision]

    @property
    def background_dtype(self) -> torch.dtype:
        return DTYPES[self.background_precision or self.precision]

    def describe(self) -> dict:
        """What the logs and ``/readyz`` report."""
        return {
            "device": str(self.device),
            "precision": self.precision,
            "background_precision": self.background_precision or self.precision,
            "channels_last": self.channels_last,
            "background_scale": self.background_scale,
            "reason": self.reason,
        }


def native_cpu_bf16() -> str | None:
    """The CPU feature that computes bf16 natively (AMX or AVX-512 BF16), or None.

    Without one, oneDNN emulates bf16 through fp32 and it is slower than fp32.
    """
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX-512 BF16"
    return None


def choose_mode(device: torch.device, precision: Precision = "auto") -> InferenceMode:
    """Picks the fastest mode that stays within 2/255 of fp32, or the one asked for.

    "auto": fp16 on CUDA; bf16 on a CPU with native bf16 (1.8-2.2x fp32, at most 2/255
    from it on the test photos), else fp32. Channels-last everywhere: oneDNN's and
    cuDNN's convolutions are faster in NHWC, and the guided filter takes NCHW copies.

    Args:
        device: the generators' device.
        precision: "auto", or "fp32" (the reference), "bf16", "fp16" (CUDA only).

    Raises:
        ValueError: for an unknown precision, or fp16 on a CPU (emulated, far slower).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if device.type == "cuda":
        chosen = "fp16" if precision == "auto" else precision
        reason = "CUDA: half precision on tensor cores" if precision == "auto" else "asked for"
        return InferenceMode(device, chosen, True, reason)
    if precision == "fp16":
        raise ValueError("fp16 on a CPU is emulated and slower than fp32; use auto, fp32 or bf16")
    feature = native_cpu_bf16()
    if precision == "auto":
        if feature:
            return InferenceMode(device, "bf16", True, f"CPU has native bf16 ({feature})")
        capability = torch.backends.cpu.get_cpu_capability()
        return InferenceMode(device, "fp32", True, f"CPU has no native bf16 (capability {capability})")
    reason = "asked for" if precision == "fp32" or feature else "asked for; this CPU emulates bf16 (slow)"
    return InferenceMode(device, precision, True, reason)


# The background pass's working scale where "auto" shrinks it: the fp32 CPU path, where
# the whole-background forward was 85 % of an image's UNet time. At 0.5 the forward
# costs about a quarter (docs/BENCHMARKS.md, "Background at half size").
REDUCED_BACKGROUND_SCALE = 0.5
BackgroundScale = float | Literal["auto"]


def choose_background_scale(
    mode: InferenceMode, requested: BackgroundScale = "auto", generator_mode: str = "native", tiled: bool = False,
    floor: float = 0.0,
) -> float:
    """The scale the background model works at (``UNetGenerator.forward``'s ``working_scale``).

    "auto": ``REDUCED_BACKGROUND_SCALE`` on the fp32 CPU path, where it buys 1.24x the
    images/s for thicker outlines and dashes on soft backdrops; 1 (full size) on CUDA and
    with bf16, which are fast enough, for DCT-Net imports (their TensorFlow parity), and
    for tiled backgrounds (a tile's halo would shrink with it below the UNet's receptive
    radius); never under ``floor``, the style's own least scale. A number asked for is
    taken as it is.

    Raises:
        ValueError: a number outside (0, 1].
    """
    if requested == "auto":
        reduced = mode.device.type == "cpu" and mode.precision == "fp32" and generator_mode == "native" and not tiled
        return max(REDUCED_BACKGROUND_SCALE, floor) if reduced else 1.0
    if not 0.0 < float(requested) <= 1.0:
        raise ValueError(f"background_scale must be 'auto' or in (0, 1], not {requested!r}")
    return float(requested)


def forward_threads(max_threads: int, images_in_flight: int) -> int:
    """Torch threads for one CPU forward pass.

    All ``max_threads`` only while this forward is the only image in flight on the
    machine (``ImagesInFlight``): then the other stages of the graph and the other
    Cartoonizer replicas are idle and the cores are the UNet's. With more images in
    flight the others work on them, and a multi-threaded forward would wait at every
    parallel region for a thread the OS gave to them (measured 2-8x slower,
    docs/BENCHMARKS.md), so it runs on one.
    """
    return max_threads if images_in_flight <= 1 else 1


def _in_flight_directory() -> Path:
    shared = Path("/dev/shm")
    base = shared if shared.is_dir() and os.access(shared, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"cartoon-images-in-flight-{os.getuid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ImagesInFlight:
    """Images in flight in every process on this machine that counts them here.

    Each Cartoonizer replica counts its own images in a file named by its process id
    and reads the others' files, so replicas that share the machine's cores agree when a
    forward may take all of them. No locks: each file has one writer, replaced whole.
    Files of processes that died without removing them (a killed replica) are skipped
    and removed. Machine-wide is the right scope: the cores are shared by every process
    on the machine (a container's /dev/shm is its own).

    Args:
        directory: where the counts are kept (tests give their own).
    """

    def __init__(self, directory: Path | None = None):
        self.directory = directory or _in_flight_directory()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._pid = os.getpid()
        self._path = self.directory / str(self._pid)
        self.own = 0
        self._write()

    def add(self, count: int) -> None:
        """Counts ``count`` more (or, negative, fewer) images in flight in this process."""
        self.own += count
        self._write()

    def total(self) -> int:
        """Images in flight in every live counting process, this one included."""
        total = self.own
        for entry in os.scandir(self.directory):
            if not entry.name.isdigit() or int(entry.name) == self._pid:
                continue
            if not _alive(int(entry.name)):
                Path(entry.path).unlink(missing_ok=True)
                continue
            try:
                total += int(Path(entry.path).read_text() or 0)
            except (OSError, ValueError):  # removed or being replaced just now
                continue
        return total

    def close(self) -> None:
        """Stops counting this process."""
        self._path.unlink(missing_ok=True)

    def _write(self) -> None:
        staged = self.directory / f".{self._pid}"
        staged.write_text(str(self.own))
        os.replace(staged, self._path)


# bf16 must stay this close to fp32 (levels of 255) on the probe, or a style runs fp32.
# The probe's ramps are harsher than photos: toon 3 on it and at most 2 on the test
# photos, comic 6 on both (tests/unit/model/test_inference.py holds the photos to 2).
BF16_TOLERANCE = 3


def _probe_picture() -> torch.Tensor:
    """A fixed 288x288 picture (smooth noise over colour ramps), (1, 3, H, W) in [-1, 1] steps of 1/127.5."""
    noise = torch.rand(1, 3, 36, 36, generator=torch.Generator().manual_seed(0))
    smooth = F.interpolate(noise, size=(288, 288), mode="bicubic", align_corners=False)
    ramp = torch.linspace(0.0, 1.0, 288)
    ramps = torch.stack([ramp[None, :].expand(288, 288), ramp[:, None].expand(288, 288), 1 - ramp[None, :].expand(288, 288)])
    picture = (0.6 * smooth + 0.4 * ramps[None]).clamp(0.0, 1.0).mul(255).round()
    return picture.div(127.5).sub(1.0).contiguous(memory_format=torch.channels_last)


def checked_bf16(mode: InferenceMode, generators: list[nn.Module]) -> InferenceMode:
    """``mode`` (bf16) if every generator's bf16 output is within ``BF16_TOLERANCE`` of fp32 on a probe.

    Styles differ: one shipped style measured 5-6/255 from fp32 in bf16 while the others
    stayed within 2. The check costs two forwards of a 288 px picture per generator at load.

    Args:
        mode: the bf16 mode ``choose_mode`` picked.
        generators: fp32 generators on the CPU (left unchanged).

    Returns:
        ``mode``, or fp32 with the measured difference as the reason.
    """
    probe = _probe_picture()
    worst = 0
    with torch.inference_mode():
        for generator in generators:
            levels = lambda out: out.clamp(-1.0, 1.0).add(1.0).mul(127.5).round()  # noqa: E731
            reference = levels(generator.to(memory_format=torch.channels_last)(probe))
            fast = copy.deepcopy(generator).to(torch.bfloat16)
            worst = max(worst, int((levels(fast(probe.to(torch.bfloat16)).float()) - reference).abs().max()))
    if worst <= BF16_TOLERANCE:
        return mode
    return InferenceMode(mode.device, "fp32", mode.channels_last,
                         f"bf16 was {worst}/255 from fp32 on the probe (over {BF16_TOLERANCE}); fp32")
