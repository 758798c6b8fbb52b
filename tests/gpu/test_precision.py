"""The GPU's half-precision UNet stays within a stated distance of fp32 on the CPU."""

import pytest

from cartoon.image.styles import StyleRegistry
from tests.gpu import requires_cuda
from tests.gpu.precision import errors

pytestmark = requires_cuda

# Bounds in uint8 levels. Measured on a CPU (python -m tests.gpu.precision --device cpu)
# with the earlier toon and sketch weights: fp16 max 1, mean <= 0.02; bf16 max 2, mean
# <= 0.22 (bf16 keeps 8 mantissa bits to fp16's 11). The guided filter runs in fp32
# either way. TF32 fp32 stays within fp16's.
BOUNDS = {"fp32": (2, 0.05), "fp16": (3, 0.1), "bf16": (4, 0.5)}


@pytest.mark.parametrize("style", StyleRegistry.from_directory().names())
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_output_is_within_the_stated_tolerance_of_fp32(style, precision):
    worst, mean_bound = BOUNDS[precision]
    for kind, (largest, mean) in errors(style, "cuda", precision).items():
        assert largest <= worst and mean <= mean_bound, f"{style} {precision} {kind}: max {largest}, mean {mean:.3f}"
