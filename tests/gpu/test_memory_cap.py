"""The per-process CUDA cap holds on a real GPU, and the context fits in its reserve.

Each check runs in a fresh process: the cap and the context belong to a process, and
this one may hold a context of its own. Runs first in tests/gpu (by file name), while
the GPU is otherwise idle, since the context is measured from the GPU's free memory.
"""

import json
import subprocess
import sys

import pytest

from cartoon.model.device import CUDA_CONTEXT_RESERVE_BYTES
from tests.gpu import requires_cuda

pytestmark = requires_cuda

BLOCK = 256 << 20

FILL_TO_THE_CAP = f"""
import json, torch
from cartoon.model.device import cap_memory, resolve_device
device = resolve_device("cuda")
# cuBLAS and cuDNN load their handles and workspaces on first use: count them.
x = torch.randn(8, 32, 288, 288, device=device, dtype=torch.float16)
torch.nn.functional.conv2d(x, torch.randn(32, 32, 3, 3, device=device, dtype=torch.float16), padding=1)
x.flatten(1) @ x.flatten(1).T
del x
torch.cuda.synchronize(device)
torch.cuda.empty_cache()
free, total = torch.cuda.mem_get_info(device)
context = total - free - torch.cuda.memory_reserved(device)
fraction = cap_memory(device, share=0.25)
held = []
try:
    while True:
        held.append(torch.empty({BLOCK}, dtype=torch.uint8, device=device))
except torch.OutOfMemoryError:
    pass
print(json.dumps({{"fraction": fraction, "total": total, "context": context, "held": len(held) * {BLOCK}}}))
"""


@pytest.fixture(scope="module")
def filled() -> dict:
    """What a fresh process measured: its context, its cap, what it could allocate."""
    done = subprocess.run([sys.executable, "-c", FILL_TO_THE_CAP], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_allocator_stops_at_the_cap_and_not_before(filled):
    found = filled
    cap = found["fraction"] * found["total"]
    print(f"cap {cap / 2**30:.2f} GiB, held {found['held'] / 2**30:.2f} GiB, context {found['context'] / 2**20:.0f} MiB")
    assert found["held"] <= cap
    assert found["held"] >= cap - 2 * BLOCK


def test_the_cuda_context_fits_in_the_reserve(filled):
    """Assumes no other process uses the GPU: their memory would count as context."""
    found = filled
    assert 0 < found["context"] <= CUDA_CONTEXT_RESERVE_BYTES, f"context {found['context'] / 2**20:.0f} MiB"
