"""UNet micro-benchmark: batch sweeps per input size, precision, memory format, compile, CUDA graphs.

    python -m benchmarks.unet                  # CPU: fp32 with channels_last off and on, and more
    python -m benchmarks.unet --preset gpu     # CUDA: tests/gpu, then the prepared GPU run; 9 minutes at most
    python -m benchmarks.unet --threads 1 --shapes head --batches 1,8   # a quick look

Sizes: aligned head crops (288x288), background tiles (384x384, the GPU config's tile)
and a whole 720x720 background (the CPU config's single piece for a square photo).
FLOPs are counted from the convolutions (2 * multiply-accumulates, by forward hooks);
the guided filter, activations and upsampling are memory-bound and left out, so the
achieved TFLOP/s is a slight underestimate. Peak: the CPU's from its clock and FMA
width, the GPU's from a table of dense tensor-core figures (override: --peak-tflops).
"""

import argparse
import math
import resource
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import common
from benchmarks.common import fmt
from cartoon.model import unet as unet_module
from cartoon.model.inference import InferenceMode, choose_mode
from cartoon.image.styles import StyleRegistry, Stylizer
from cartoon.model.unet import UNetConfig, UNetGenerator, load_generator, random_generator

SHAPES = {"head": 288, "tile": 384, "background": 720}

# Dense (no sparsity) peak TFLOP/s by GPU name fragment: fp32 (CUDA cores), tf32, bf16, fp16.
GPU_PEAKS = {
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Seconds a case needs beyond its timing (building): one is not started with less left.
BUILD_RESERVE_S = {"compile": 90.0, "compile_graphs": 90.0}
ROOT = Path(__file__).resolve().parents[1]
# tests/gpu before the GPU run: each test at most TEST_TIMEOUT_S, all of them at most
# GPU_TESTS_TIMEOUT_S (the per-test limit fires first, so Ray is shut down cleanly).
GPU_TESTS_TIMEOUT_S = 240.0
GPU_TEST_TIMEOUT_S = 150


@dataclass(frozen=True)
class Variant:
    """How the model runs.

    Attributes:
        precision: "fp32", "bf16" or "fp16" (weights and activations; the guided filter
            always runs in fp32).
        channels_last: NHWC memory format for weights and input.
        runner: "eager"; "stylizer" (``Stylizer.run`` on uint8 numpy, as the Cartoonizer
            calls it: conversion and host<->device copies included; the served path when
            precision and layout are those ``cartoon.model.inference.choose_mode`` picks);
            "cuda_graph" (captured once per shape, replayed);
            "compile" (torch.compile, default mode); "compile_graphs" (mode "reduce-overhead").
        cudnn_benchmark: let cuDNN time its algorithms per shape (CUDA only).
        filter: how the guided filter runs: "served" (``cartoon.model.unet.filter_output``:
            in bands with OpenCV on a CPU, whole tensors elsewhere); "whole" (whole
            NCHW tensors on a CPU too, as before the banded filter); "avg_pool" (whole
            tensors with ``avg_pool2d`` box means, as before the separable sums). The
            two older ones show what each change buys.
        background_scale: the "stylizer" runner's background working scale
            (``cartoon.model.inference.choose_background_scale``): below 1 every input but
            a head crop runs as a background, shrunk by it and guided-upsampled back.
    """

    precision: str
    channels_last: bool
    runner: str = "eager"
    cudnn_benchmark: bool = True
    filter: str = "served"
    background_scale: float = 1.0

    @property
    def name(self) -> str:
        parts = [self.precision, "NHWC" if self.channels_last else "NCHW", self.runner]
        if self.filter != "served":
            parts.append(f"{self.filter} filter")
        if self.background_scale < 1.0:
            parts.append(f"background x{self.background_scale:g}")
        if not self.cudnn_benchmark:
            parts.append("no-cudnn-bench")
        return " ".join(parts)


def pooled_box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The box mean as ``cartoon/model/unet.py`` computed it before its separable sums."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def whole_picture_filter(x: torch.Tensor, raw: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """``cartoon.model.unet.filter_output`` as it ran on a CPU before the banded filter."""
    precision = torch.promote_types(x.dtype, torch.float32)
    return unet_module.guided_filter(x.to(precision).contiguous(), raw.to(precision).contiguous(), radius, eps)


@dataclass(frozen=True)
class Case:
    variant: Variant
    shape: str
    batch: int
    threads: int = 0  # CPU torch threads; 0 on CUDA


@dataclass
class Row:
    case: Case
    ms_per_batch: float = math.nan
    images_per_s: float = math.nan
    peak_mib: float = math.nan
    tflops: float = math.nan
    peak_tflops: float | None = None
    note: str = ""
    iterations: list[float] = field(default_factory=list)

    def cells(self) -> list:
        share = self.tflops / self.peak_tflops * 100 if self.peak_tflops and not math.isnan(self.tflops) else math.nan
        threads = self.case.threads or "-"
        return [self.case.variant.name, threads, f"{self.case.shape} {SHAPES[self.case.shape]}", self.case.batch,
                fmt(self.ms_per_batch, 1), fmt(self.images_per_s, 1), fmt(self.peak_mib, 0),
                fmt(self.tflops, 3), fmt(share, 1), self.note]


HEADERS = ["variant", "threads", "input", "batch", "ms/batch", "img/s", "peak MiB", "TFLOP/s", "% peak", "note"]


# --- the model and its cost ---------------------------------------------------------------------


def load_model(styles_dir: str | None, width: int) -> tuple[UNetGenerator, str]:
    """Random weights of ``width`` when it is set, else the registry's default head model."""
    if width:
        return random_generator(UNetConfig(width=width)), f"random weights, width {width}"
    style = StyleRegistry.from_directory(styles_dir or common.DEFAULT_STYLES_DIR).get(None)
    return load_generator(style.head), f"style {style.name!r} head model, width {style.width}"


def conv_macs(model: UNetGenerator, side: int) -> int:
    """Multiply-accumulates of every convolution for one (1, 3, side, side) input."""
    total = 0

    def count(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * (module.in_channels // module.groups) * kernel

    probe = UNetGenerator(model.config).to("meta")
    hooks = [m.register_forward_hook(count) for m in probe.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        probe(torch.empty(1, 3, side, side, device="meta"))
    for hook in hooks:
        hook.remove()
    return total


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_ghz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000.0
    except (OSError, ValueError):
        pass
    return None


def peak_tflops(device: torch.device, precision: str, threads: int, override: float | None) -> float | None:
    """The device's peak for this precision, or None when unknown.

    CPU: cores used x clock x 32 fp32 FLOP/cycle (two 256-bit FMA pipes, as on AMD Zen 4
    and most x86 server cores; AVX-512 BF16 dot products double that for bf16). GPU: the
    dense tensor-core table; fp32 counts as TF32 when cuDNN may use it (torch's default).
    """
    if override:
        return override
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        table = next((peaks for key, peaks in GPU_PEAKS.items() if key in name), None)
        if table is None:
            return None
        if precision == "fp32" and torch.backends.cudnn.allow_tf32:
            return table["tf32"]
        return table[precision]
    ghz = cpu_ghz()
    if ghz is None:
        return None
    per_cycle = 32.0
    if precision == "bf16" and "avx512_bf16" in cpu_flags():
        per_cycle *= 2
    return threads * ghz * per_cycle / 1000.0


# --- running one case ---------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_runner(variant: Variant, model: UNetGenerator, device: torch.device, side: int, batch: int):
    """A no-argument function that runs one batch, with its inputs prepared once."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch, side, side, 3), dtype=torch.uint8, generator=generator)
    if variant.runner == "stylizer":
        mode = InferenceMode(device, variant.precision, variant.channels_last, "benchmark variant",
                             variant.background_scale)
        stylizer = Stylizer(model, model, device, mode)
        array = pixels.numpy()
        kind = "head" if side == SHAPES["head"] else "background"
        return lambda: stylizer.run(array, kind)
    dtype = DTYPES[variant.precision]
    memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
    net = model.to(device, dtype, memory_format=memory_format).eval()
    x = pixels.permute(0, 3, 1, 2).to(device, dtype).div_(127.5).sub_(1.0)  # (B, 3, H, W) in [-1, 1]
    x = x.contiguous(memory_format=memory_format)
    if variant.runner == "eager":
        return lambda: net(x)
    if variant.runner in ("compile", "compile_graphs"):
        mode = "reduce-overhead" if variant.runner == "compile_graphs" else "default"
        compiled = torch.compile(net, mode=mode, dynamic=False)
        return lambda: compiled(x)
    if variant.runner == "cuda_graph":
        if device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        static_input = x.clone()
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):  # warm up on a side stream, as capture requires
            for _ in range(3):
                net(static_input)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = net(static_input)

        def replay() -> torch.Tensor:
            graph.replay()
            return static_output  # held here, so the graph's output memory stays its own

        return replay
    raise ValueError(f"unknown runner {variant.runner!r}")


def measure_cuda(run, device: torch.device, warmup: int, min_iterations: int, min_seconds: float) -> list[float]:
    """Milliseconds per batch on CUDA, one entry per timed block.

    Blocks of back-to-back launches sized to last ``min_seconds``, synchronised at each
    end: launch gaps count, a per-batch synchronisation does not.
    """
    for _ in range(warmup):
        run()
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    single = max(time.perf_counter() - start, 1e-5)
    per_block = max(1, math.ceil(min_seconds / single))
    blocks = []
    for _ in range(max(3, min_iterations // per_block)):
        start = time.perf_counter()
        for _ in range(per_block):
            run()
        synchronize(device)
        blocks.append((time.perf_counter() - start) * 1000.0 / per_block)
    return blocks


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: the peak allocated since the last reset. CPU: the process's RSS high-water mark."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def prepare_call(case: Case, base: UNetGenerator, device: torch.device):
    """A no-argument function running one batch of ``case`` on a fresh copy of the model."""
    model = UNetGenerator(base.config)
    model.load_state_dict(base.state_dict())
    model.eval()

    def context():
        stack = ExitStack()
        if case.variant.filter in ("whole", "avg_pool"):
            stack.enter_context(mock.patch.object(unet_module, "filter_output", whole_picture_filter))
        if case.variant.filter == "avg_pool":
            stack.enter_context(mock.patch.object(unet_module, "box_mean", pooled_box_mean))
        return stack

    with torch.inference_mode(), context():
        run = make_runner(case.variant, model, device, SHAPES[case.shape], case.batch)

    def call():
        # Patched at every call too: the eager runners look the filter up as they run.
        with torch.inference_mode(), context():
            return run()

    return call


def finish(row: Row, times: list[float], device: torch.device, macs: dict[str, int]) -> Row:
    case = row.case
    row.iterations = times
    row.ms_per_batch = statistics.median(times)
    row.images_per_s = case.batch / row.ms_per_batch * 1000.0
    row.peak_mib = peak_memory_mib(device)
    row.tflops = 2.0 * macs[case.shape] * case.batch / (row.ms_per_batch / 1000.0) / 1e12
    return row


def failure(exc: Exception) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory"
    return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"


def run_case(case: Case, base: UNetGenerator, device: torch.device, macs: dict[str, int], args) -> Row:
    """One case alone (the GPU path): build it, time it, free it."""
    row = Row(case, peak_tflops=peak_tflops(device, case.variant.precision, case.threads, args.peak_tflops))
    torch.backends.cudnn.benchmark = case.variant.cudnn_benchmark
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        call = prepare_call(case, base, device)
        times = measure_cuda(call, device, args.warmup, args.iterations, args.min_seconds)
    except Exception as exc:  # a variant that cannot run here is reported, not fatal
        row.note = failure(exc)
        return row
    finally:
        if case.variant.runner.startswith("compile"):
            torch._dynamo.reset()  # drop compiled graphs before the next case
    return finish(row, times, device, macs)


def run_interleaved(cases: list[Case], base: UNetGenerator, macs: dict[str, int], args) -> list[Row]:
    """Cases of one shape, batch and thread count, timed in turns (CPU path).

    On a shared machine the load drifts; taking turns puts the drift on every variant
    alike, so their ratios hold even when the absolute times wander.
    """
    device = torch.device("cpu")
    torch.set_num_threads(cases[0].threads)
    rows = [Row(case, peak_tflops=peak_tflops(device, case.variant.precision, case.threads, args.peak_tflops))
            for case in cases]
    calls = {}
    for row in rows:
        try:
            calls[row.case] = prepare_call(row.case, base, device)
            for _ in range(args.warmup):
                calls[row.case]()
        except Exception as exc:  # reported in the table, the others go on
            calls.pop(row.case, None)
            row.note = failure(exc)
    times: dict[Case, list[float]] = {case: [] for case in calls}
    order = list(calls)
    for turn in range(args.iterations):
        for case in order[turn % len(order):] + order[: turn % len(order)]:
            start = time.perf_counter()
            calls[case]()
            times[case].append((time.perf_counter() - start) * 1000.0)
    return [finish(row, times[row.case], device, macs) if row.case in times else row for row in rows]


# --- the plans ----------------------------------------------------------------------------------


def cpu_plan(args) -> list[Case]:
    shapes = args.shapes.split(",")
    batches = {"head": [1, 2, 4, 8], "tile": [1, 4], "background": [1, 2]}
    if args.batches:
        batches = {shape: common.parse_ints(args.batches) for shape in SHAPES}
    served = choose_mode(torch.device("cpu"))
    variants = [
        Variant("fp32", True, "stylizer", filter="avg_pool"),  # what the Cartoonizer ran first
        Variant("fp32", False),
        Variant("fp32", True, "stylizer"),  # the fp32 reference path
        Variant("bf16", True, "stylizer", filter="avg_pool"),
        Variant("bf16", True, "stylizer", filter="whole"),  # served before the banded filter
        Variant(served.precision, served.channels_last, "stylizer"),  # the served path
        # The fp32 path's background at a working scale (issue 29); no change on head crops.
        Variant("fp32", True, "stylizer", background_scale=0.75),
        Variant("fp32", True, "stylizer", background_scale=0.5),
    ]
    if args.compile:
        variants.append(Variant(served.precision, served.channels_last, "compile"))
    return [
        Case(variant, shape, batch, threads)
        for threads in common.parse_ints(args.threads)
        for variant in variants
        for shape in shapes
        for batch in batches[shape]
    ]


def sweep_plan(args) -> list[Case]:
    """The served path (``Stylizer.run``, channels-last) per precision, shape and batch: ``--plan sweep``."""
    precisions = args.precisions.split(",")
    batches = common.parse_ints(args.batches or "1,2,4,8,16,32,64")
    threads = common.parse_ints(args.threads)[0] if args.preset == "cpu" else 0
    return [Case(Variant(precision, True, "stylizer"), shape, batch, threads)
            for precision in precisions for shape in args.shapes.split(",") for batch in batches]


def gpu_plan(args) -> list[Case]:
    """Most telling first: cases still waiting when the time budget is spent are skipped."""
    fp16 = Variant("fp16", True)
    plan = [(fp16, "head", b) for b in (1, 8, 16, 32, 64, 128, 256)]
    plan += [(fp16, "tile", b) for b in (1, 8, 32, 64)]
    plan += [(fp16, "background", b) for b in (1, 4, 8)]
    served = Variant("fp16", True, "stylizer", cudnn_benchmark=False)  # the Cartoonizer's path today
    plan += [(served, "head", b) for b in (8, 32, 128)] + [(served, "tile", 32)]
    pooled = Variant("fp16", True, filter="avg_pool")
    plan += [(pooled, "head", b) for b in (1, 32, 128)] + [(pooled, "tile", 32)]
    plan += [(Variant("fp16", True, "stylizer"), "head", b) for b in (32, 128)]
    plan += [(Variant("fp16", True, cudnn_benchmark=False), "head", b) for b in (32, 128)]
    graphs = Variant("fp16", True, "cuda_graph")
    plan += [(graphs, "head", b) for b in (1, 8, 32, 128)] + [(graphs, "tile", 32)]
    plan += [(Variant("bf16", True), "head", b) for b in (1, 32, 128)] + [(Variant("bf16", True), "tile", 32)]
    plan += [(Variant("fp16", False), "head", b) for b in (1, 32, 128)]
    plan += [(Variant("fp32", True), "head", b) for b in (1, 32, 128)]
    plan += [(Variant("fp32", False), "head", b) for b in (32, 128)]
    plan += [(Variant("fp16", True, "compile"), "head", b) for b in (32, 128)]
    plan += [(Variant("fp16", True, "compile_graphs"), "head", b) for b in (32, 128)]
    shapes = set(args.shapes.split(","))
    return [Case(variant, shape, batch) for variant, shape, batch in plan if shape in shapes]


# --- output ---------------------------------------------------------------------------------


def plot(rows: list[Row], path: Path, title: str) -> None:
    plt = common.pyplot()

    shapes = [shape for shape in SHAPES if any(row.case.shape == shape for row in rows)]
    figure, axes = plt.subplots(1, len(shapes), figsize=(5.5 * len(shapes), 4.2), squeeze=False)
    for axis, shape in zip(axes[0], shapes):
        series: dict[tuple[str, int], list[Row]] = {}
        for row in rows:
            if row.case.shape == shape and not math.isnan(row.images_per_s):
                series.setdefault((row.case.variant.name, row.case.threads), []).append(row)
        names = list(dict.fromkeys(name for name, _ in series))
        for (name, threads), points in series.items():
            points.sort(key=lambda r: r.case.batch)
            label = name + (f", {threads} thr" if threads else "")
            style = "-" if threads <= 1 else "--"  # one line style per thread count, one colour per variant
            axis.plot([r.case.batch for r in points], [r.images_per_s for r in points], marker="o",
                      linestyle=style, color=plt.cm.tab20(names.index(name) % 20), label=label)
        axis.set_ylim(bottom=0)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("batch size")
        axis.set_ylabel("images/s")
        axis.set_title(f"{shape} {SHAPES[shape]}x{SHAPES[shape]}")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=6)
    common.save_figure(figure, path, title)


def run_gpu_tests() -> tuple[str, bool]:
    """Runs tests/gpu in a child process, before this one touches the GPU (they measure it idle).

    Returns:
        pytest's summary line and whether every test passed.
    """
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
               "-o", f"timeout={GPU_TEST_TIMEOUT_S}", "tests/gpu"]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=GPU_TESTS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"stopped after {GPU_TESTS_TIMEOUT_S:.0f} s", False
    print(done.stdout[-6000:] + done.stderr[-2000:], file=sys.stderr, flush=True)
    lines = done.stdout.strip().splitlines() or ["no output"]
    return lines[-1], done.returncode == 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.unet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("cpu", "gpu"), default="cpu",
                        help="cpu (default) or gpu (needs CUDA; bounded by --budget-s)")
    parser.add_argument("--plan", choices=("full", "sweep"), default="full",
                        help="full: the preset's variants; sweep: the served path per --precisions, shape and batch")
    parser.add_argument("--precisions", default="fp16,bf16", help="--plan sweep: precisions to sweep")
    parser.add_argument("--styles-dir", help="time the default style's model from here (default: shipped styles)")
    parser.add_argument("--width", type=int, default=0,
                        help="time random weights of this UNet width (32: the DCT-Net import's) instead of a style")
    parser.add_argument("--shapes", default="head,tile,background", help="of head (288), tile (384), background (720)")
    parser.add_argument("--batches", help="batch sizes for every shape (default: a per-shape sweep)")
    parser.add_argument("--threads", default="1,2", help="CPU torch thread counts to sweep")
    parser.add_argument("--compile", action="store_true", help="CPU: add a torch.compile variant (slow to build)")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up runs per case (default: 1 CPU, 5 GPU)")
    parser.add_argument("--iterations", type=int, default=0,
                        help="CPU: timed turns per variant (default 5); GPU: at least this many batches (default 10)")
    parser.add_argument("--min-seconds", type=float, default=0.3, help="GPU: each timed block lasts at least this")
    parser.add_argument("--budget-s", type=float, default=0,
                        help="skip cases after this long (default 600 CPU, 230 GPU)")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, instead of the built-in estimate")
    parser.add_argument("--out", help="PNG plot path (default benchmarks/results/unet_<preset>.png)")
    parser.add_argument("--skip-gpu-tests", action="store_true", help="GPU: do not run tests/gpu first")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    gpu = args.preset == "gpu"
    if gpu and not torch.cuda.is_available():
        print("--preset gpu needs CUDA, and torch.cuda.is_available() is False here; nothing to run.",
              file=sys.stderr)
        return 2
    tests_summary, tests_passed = run_gpu_tests() if gpu and not args.skip_gpu_tests else ("not run", True)
    device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
    args.warmup = args.warmup or (5 if gpu else 1)
    args.iterations = args.iterations or (10 if gpu else 5)
    args.budget_s = args.budget_s or (230.0 if gpu else 600.0)
    model, source = load_model(args.styles_dir, args.width)
    macs = {shape: conv_macs(model, side) for shape, side in SHAPES.items()}
    plan = sweep_plan(args) if args.plan == "sweep" else gpu_plan(args) if gpu else cpu_plan(args)
    if gpu:
        description = f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    else:
        description = f"{common.machine_description()}; torch {torch.__version__}"

    started = time.perf_counter()
    rows, skipped = [], []
    groups = [[case] for case in plan]  # GPU: one case at a time, most telling first
    if not gpu:  # CPU: the variants of one shape, batch and thread count take turns
        keyed: dict[tuple, list[Case]] = {}
        for case in plan:
            keyed.setdefault((case.threads, case.shape, case.batch), []).append(case)
        groups = list(keyed.values())
    for index, group in enumerate(groups):
        reserve = BUILD_RESERVE_S.get(group[0].variant.runner, 0.0)
        if time.perf_counter() - started + reserve > args.budget_s:
            skipped += group
            continue
        done = run_interleaved(group, model, macs, args) if not gpu else [run_case(group[0], model, device, macs, args)]
        rows += done
        for row in done:
            case = row.case
            print(f"  {case.variant.name} {case.shape} b={case.batch} thr={case.threads or '-'}: "
                  f"{fmt(row.ms_per_batch)} ms {row.note}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started

    print(f"## UNet micro-benchmark ({args.preset})\n\n{description}; {source}; "
          f"{elapsed:.0f} s.\n")
    if gpu:
        print(f"tests/gpu: {tests_summary}\n")
    print("Convolution cost per image: "
          + ", ".join(f"{shape} {SHAPES[shape]}: {2 * macs[shape] / 1e9:.2f} GFLOP" for shape in SHAPES) + ".\n")
    print(common.markdown_table(HEADERS, [row.cells() for row in rows]))
    if skipped:
        print(f"\nSkipped after the {args.budget_s:.0f} s budget: "
              + "; ".join(f"{c.variant.name} {c.shape} b={c.batch}" for c in skipped))
    path = common.output_path(args.out, f"unet_{args.preset}.png")
    plot(rows, path, f"UNet: {description.split(';')[0]}")
    common.write_json(path.with_suffix(".json"), {
        "device": description, "model": source, "args": vars(args),
        "gflop_per_image": {shape: 2 * macs[shape] / 1e9 for shape in SHAPES},
        "rows": [{"variant": r.case.variant.name, "threads": r.case.threads, "shape": r.case.shape,
                  "batch": r.case.batch, "ms_per_batch": r.ms_per_batch, "images_per_s": r.images_per_s,
                  "peak_mib": r.peak_mib, "tflops": r.tflops, "peak_tflops": r.peak_tflops,
                  "note": r.note, "iterations_ms": r.iterations} for r in rows],
        "skipped": [f"{c.variant.name} {c.shape} b={c.batch}" for c in skipped],
        "gpu_tests": tests_summary,
    })
    print(f"\nplot: {path}")
    return 0 if tests_passed else 1


if __name__ == "__main__":
    sys.exit(main())
