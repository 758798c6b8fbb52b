"""Tests that need a CUDA GPU; skipped elsewhere. Run by ``python -m benchmarks.unet --preset gpu``."""

import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
