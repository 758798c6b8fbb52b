"""CPU runtimes side by side: torch fp32, the served torch path, ONNX Runtime, OpenVINO.

    python -m benchmarks.runtimes                        # head 288 and background 720, 1 and 2 threads
    python -m benchmarks.runtimes --threads 1 --shapes head --iterations 3   # a quick look
    python -m benchmarks.runtimes --smoke                # 64x64, one turn: does every variant run?

Issue 13: measure before adding a dependency, with fp32 as the reference. Each variant
runs the shipped ``toon`` generator on a real photo (scikit-image's astronaut resized to
the shape); the variants of one shape and thread count take turns, and each reports the
median time of one forward and how far its uint8 output (``cartoon.model.unet.to_uint8``, as
the service scales it) lies from torch fp32's, so speed and correctness show together.
ONNX Runtime and OpenVINO run the same ONNX file, exported from the fp32 model once per
shape with ``torch.onnx.export``. A variant whose package is missing is skipped with the
``pip install`` that enables it (all of them: ``pip install -e ".[runtimes]"``).
torch.compile is measured by ``python -m benchmarks.unet --compile``.
"""

import argparse
import importlib.metadata
import importlib.util
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

from benchmarks import common
from benchmarks.common import fmt
from cartoon.model.inference import InferenceMode
from cartoon.image.styles import StyleRegistry, Stylizer
from cartoon.model.unet import UNetGenerator, load_generator, to_uint8

SIDES = {"head": 288, "background": 720}
SMOKE_SIDE = 64
STYLE = "toon"
CPU = torch.device("cpu")
REFERENCE_MODE = InferenceMode(CPU, "fp32", False, "the reference")
REFERENCE = "torch fp32 NCHW eager"

# Builds one variant for a thread count, a (H, W, 3) uint8 photo and the ONNX file of
# its shape; returns a no-argument function running one forward, whose output is
# (1, 3, H, W) in [-1, 1] (a tensor or an array).
Build = Callable[[int, np.ndarray, Path | None], Callable[[], object]]


@dataclass(frozen=True)
class Variant:
    """One way to run the generator.

    Attributes:
        name: the table's label.
        build: makes its forward function (see ``Build``).
        needs_onnx: runs the exported ONNX file.
    """

    name: str
    build: Build
    needs_onnx: bool = False


def photo(side: int) -> np.ndarray:
    """The astronaut (512x512) resized to (side, side, 3) uint8."""
    interpolation = cv2.INTER_AREA if side < 512 else cv2.INTER_CUBIC
    return cv2.resize(data.astronaut(), (side, side), interpolation=interpolation)


def model_input(pixels: np.ndarray, mode: InferenceMode) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1], prepared as ``Stylizer._forward`` prepares a batch."""
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div_(127.5).sub_(1.0).to(mode.dtype)
    return x.contiguous(memory_format=torch.channels_last) if mode.channels_last else x.contiguous()


def torch_variant(name: str, model: UNetGenerator, mode: InferenceMode) -> Variant:
    """Eager torch with ``model`` already in ``mode``'s dtype and memory format (threads: the caller's)."""

    def build(threads: int, pixels: np.ndarray, onnx_path: Path | None) -> Callable[[], object]:
        x = model_input(pixels, mode)

        def run() -> torch.Tensor:
            with torch.inference_mode():
                return model(x)

        return run

    return Variant(name, build)


def onnxruntime_variant() -> Variant:
    def build(threads: int, pixels: np.ndarray, onnx_path: Path | None) -> Callable[[], object]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads spin by default; in turns they would take the cores from
        # the next variant's forward.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: model_input(pixels, REFERENCE_MODE).numpy()}
        return lambda: session.run(None, feed)[0]

    return Variant("ONNX Runtime fp32 (CPU EP)", build, needs_onnx=True)


def openvino_variant(precision: str) -> Variant:
    """OpenVINO on the CPU at inference precision ``precision`` ("f32" or "bf16")."""

    def build(threads: int, pixels: np.ndarray, onnx_path: Path | None) -> Callable[[], object]:
        import openvino as ov

        config = {
            # Stated even for f32: on CPUs with bf16 OpenVINO's default precision is bf16.
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # Unpinned like torch's and ONNX Runtime's threads, on a machine others share.
            "ENABLE_CPU_PINNING": False,
        }
        request = ov.Core().compile_model(str(onnx_path), "CPU", config).create_infer_request()
        x = model_input(pixels, REFERENCE_MODE).numpy()

        def run() -> np.ndarray:
            request.infer([x], share_inputs=True, share_outputs=True)
            return request.get_output_tensor(0).data  # overwritten by the next run

        return run

    return Variant(f"OpenVINO {precision} (CPU)", build, needs_onnx=True)


def installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


def variants(reference: UNetGenerator, served: Stylizer) -> tuple[list[Variant], list[str]]:
    """The variants this environment can run, and a line for each one it cannot.

    The served path is the Stylizer's own model and mode, as ``Stylizer.from_style``
    chooses them (bf16 channels-last where the CPU has native bf16, else fp32).
    """
    mode = served.mode
    layout = "NHWC" if mode.channels_last else "NCHW"
    chosen = [
        torch_variant(REFERENCE, reference, REFERENCE_MODE),
        torch_variant(f"torch {mode.precision} {layout} eager (served)", served.models["head"], mode),
    ]
    skipped = []
    exporter = installed("onnx", "onnxscript")
    if not exporter:
        skipped.append("ONNX Runtime and OpenVINO: the exporter needs `pip install onnx onnxscript`")
    if exporter and installed("onnxruntime"):
        chosen.append(onnxruntime_variant())
    elif exporter:
        skipped.append("ONNX Runtime: `pip install onnxruntime`")
    if exporter and installed("openvino"):
        import openvino as ov

        chosen.append(openvino_variant("f32"))
        if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            chosen.append(openvino_variant("bf16"))
        else:
            skipped.append("OpenVINO bf16: this CPU has no native bf16 (OPTIMIZATION_CAPABILITIES lacks BF16)")
    elif exporter:
        skipped.append("OpenVINO: `pip install openvino`")
    return chosen, skipped


def export_onnx(model: UNetGenerator, side: int, directory: Path) -> Path:
    """The fp32 model exported for a fixed (1, 3, side, side) input."""
    path = directory / f"{STYLE}_{side}.onnx"
    example = model_input(photo(side), REFERENCE_MODE)
    torch.onnx.export(model, (example,), path, input_names=["image"], output_names=["cartoon"],
                      external_data=False, verbose=False)
    return path


def as_levels(output: torch.Tensor | np.ndarray, generator_mode: str) -> torch.Tensor:
    """A forward's output as the service's uint8 levels (int32, to subtract), on a copy."""
    copy = output.clone() if isinstance(output, torch.Tensor) else torch.from_numpy(np.array(output))
    return to_uint8(copy.float(), generator_mode).int()


def run_group(chosen: list[Variant], threads: int, pixels: np.ndarray, onnx_path: Path | None,
              iterations: int, generator_mode: str) -> dict[str, tuple[float, int]]:
    """One shape at one thread count: every variant in turns.

    On a shared machine the load drifts; taking turns (each round starting one variant
    later) spreads the drift over all of them, so their ratios hold.

    Returns:
        Per variant that ran: the median ms of one forward, and the largest difference
        from the reference's uint8 output, in levels of 255.
    """
    torch.set_num_threads(threads)
    runs, levels = {}, {}
    for variant in chosen:
        try:
            runs[variant.name] = variant.build(threads, pixels, onnx_path)
            levels[variant.name] = as_levels(runs[variant.name](), generator_mode)  # the warm-up forward
        except Exception as exc:  # reported, and the others go on
            runs.pop(variant.name, None)
            print(f"  {variant.name} thr={threads} {pixels.shape[0]} px: failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
    times = {name: [] for name in runs}
    order = list(runs)
    for turn in range(iterations):
        for name in order[turn % len(order):] + order[: turn % len(order)]:
            start = time.perf_counter()
            runs[name]()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: (statistics.median(times[name]), int((levels[name] - levels[REFERENCE]).abs().max()))
            for name in runs}


def ratios(numerators: list[float], denominators: list[float]) -> str:
    """"1.85x / 2.01x": each shape's numerator over its denominator ("n/a" where one is missing)."""
    return " / ".join(fmt(a / b, 2) + "x" if not math.isnan(a / b) else "n/a" for a, b in zip(numerators, denominators))


def table(chosen: list[Variant], served_name: str, thread_counts: list[int], sides: dict[str, int],
          results: dict[tuple[str, int, str], tuple[float, int]]) -> str:
    """The markdown table: one row per variant and thread count, one ms column per shape."""
    headers = ["variant", "threads"] + [f"{shape} {side} ms" for shape, side in sides.items()]
    headers += ["max diff vs fp32 /255", "speed-up vs fp32", "speed-up vs served"]
    rows = []
    for threads in thread_counts:
        ms = {variant.name: [results.get((variant.name, threads, shape), (math.nan, 0))[0] for shape in sides]
              for variant in chosen}
        for variant in chosen:
            cells = [results.get((variant.name, threads, shape)) for shape in sides]
            diffs = " / ".join(str(cell[1]) if cell else "n/a" for cell in cells)
            rows.append([variant.name, threads, *(fmt(value) for value in ms[variant.name]), diffs,
                         ratios(ms[REFERENCE], ms[variant.name]), ratios(ms[served_name], ms[variant.name])])
    return common.markdown_table(headers, rows)


def versions() -> str:
    found = []
    for package in ("torch", "onnx", "onnxruntime", "openvino"):
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runtimes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=5, help="timed turns per variant (default 5)")
    parser.add_argument("--threads", default="1,2", help="thread counts, each runtime's own (default 1,2)")
    parser.add_argument("--shapes", default="head,background", help="of head (288), background (720)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"a {SMOKE_SIDE}x{SMOKE_SIDE} input and one turn: checks that every variant runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sides = {"smoke": SMOKE_SIDE} if args.smoke else {shape: SIDES[shape] for shape in args.shapes.split(",")}
    iterations = 1 if args.smoke else args.iterations
    thread_counts = common.parse_ints(args.threads)
    style = StyleRegistry.from_directory(common.DEFAULT_STYLES_DIR).get(STYLE)
    reference = load_generator(style.head)
    served = Stylizer.from_style(style, CPU)
    chosen, skipped = variants(reference, served)
    served_name = chosen[1].name
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)

    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for shape, side in sides.items():
            pixels = photo(side)
            onnx_path = export_onnx(reference, side, Path(directory)) if any(v.needs_onnx for v in chosen) else None
            for threads in thread_counts:
                for name, result in run_group(chosen, threads, pixels, onnx_path, iterations,
                                              reference.config.mode).items():
                    results[(name, threads, shape)] = result
                    print(f"  {name} thr={threads} {shape}: {result[0]:.1f} ms, max diff {result[1]}/255",
                          file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started

    print(f"## Runtimes side by side (style {STYLE!r}, batch 1)\n\n{common.machine_description()}; "
          f"{versions()}; served mode: {served.mode.precision}, {served.mode.reason}; "
          f"median of {iterations} turns; {elapsed:.0f} s.\n")
    print(table(chosen, served_name, thread_counts, sides, results))
    if len(sides) > 1:
        print("\nDiff and speed-up cells: " + " / ".join(sides) + ".")
    for line in skipped:
        print(f"\nSkipped: {line}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
