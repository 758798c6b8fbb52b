"""The CUDA path on a machine without a GPU: device choice, memory cap, out-of-memory retries.

Where torch can check an argument without a GPU, the real torch function runs; only
what needs a GPU is faked: CUDA's presence, its initialisation, the driver call that
sets the cap, and an out-of-memory error.
"""

import numpy as np
import pytest
import torch
from ray.exceptions import RayTaskError

from cartoon.model.device import (
    CUDA_CONTEXT_RESERVE_BYTES,
    cap_memory,
    halve_on_out_of_memory,
    memory_fraction,
    resolve_device,
)
from cartoon.errors import DeviceError, DeviceOutOfMemoryError, TooLargeForDeviceError
from cartoon.image.styles import Stylizer
from cartoon.model.unet import UNetConfig, random_generator
from serve_app.errors import to_api_error
from tests import photos

H200_BYTES = 150_754_820_096  # torch.cuda.get_device_properties(0).total_memory of an H200


@pytest.fixture
def two_gpus(monkeypatch):
    """torch believes in two CUDA devices; nothing else about torch.cuda changes."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.fixture
def driver(monkeypatch):
    """Fakes CUDA's initialisation and the driver call; records the caps torch passes on.

    ``torch.cuda.set_per_process_memory_fraction`` itself runs: its device-index,
    type and range checks are the ones a GPU machine would run.
    """
    caps = []
    monkeypatch.setattr(torch.cuda.memory, "_lazy_init", lambda: None)
    monkeypatch.setattr(torch._C, "_cuda_setMemoryFraction", lambda fraction, index: caps.append((fraction, index)),
                        raising=False)
    return caps


def test_cpu_and_auto_without_cuda_run_on_the_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")  # this machine has no CUDA
    assert resolve_device("auto", []) == torch.device("cpu")


def test_auto_takes_no_gpu_that_ray_did_not_assign(two_gpus):
    assert resolve_device("auto", []) == torch.device("cpu")


def test_auto_takes_the_assigned_gpu_by_its_visible_index(two_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert resolve_device("auto", ["3"]) == torch.device("cuda", 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert resolve_device("auto", ["3"]) == torch.device("cuda", 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert resolve_device("auto", ["1"]) == torch.device("cuda", 1)


def test_cuda_always_comes_with_an_index(two_gpus):
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto").index == 0


@pytest.mark.parametrize("requested, assigned, message", [
    ("cuda", [], "given none"),
    ("cuda:0", None, "lacks"),
    ("tpu", None, "not a torch device"),
])
def test_cuda_that_cannot_be_had_is_a_clear_error(requested, assigned, message):
    with pytest.raises(DeviceError, match=message):
        resolve_device(requested, assigned)


def test_a_gpu_index_beyond_the_visible_ones_is_refused(two_gpus):
    with pytest.raises(DeviceError, match="cuda:2 does not exist"):
        resolve_device("cuda:2")


def test_torch_refuses_an_index_less_cuda_device_for_the_cap(driver):
    """What every GPU replica hit before: the real check, reached without a GPU."""
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_per_process_memory_fraction(0.25, torch.device("cuda"))
    assert driver == []


def test_the_resolved_device_passes_torchs_checks_for_the_cap(two_gpus, driver, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    device = resolve_device("auto", ["5"])
    fraction = cap_memory(device, share=0.25, fraction=0.2)
    assert driver == [(0.2, 0)] and fraction == 0.2


def test_the_derived_cap_leaves_room_for_four_contexts(two_gpus, driver, monkeypatch):
    class Properties:
        total_memory = H200_BYTES

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties)
    for _ in range(4):
        cap_memory(resolve_device("cuda"), share=0.25)
    assert len(driver) == 4
    used = sum(fraction for fraction, _ in driver) * H200_BYTES + 4 * CUDA_CONTEXT_RESERVE_BYTES
    assert used <= H200_BYTES
    assert driver[0] == (pytest.approx(0.25 - CUDA_CONTEXT_RESERVE_BYTES / H200_BYTES), 0)


def test_memory_fraction_of_a_whole_and_of_too_small_a_share():
    assert memory_fraction(1.0, 16 << 30) == pytest.approx(15 / 16)
    assert memory_fraction(2.0, 16 << 30) == pytest.approx(15 / 16)  # two GPUs: each process caps one
    assert isinstance(memory_fraction(1.0, 16 << 30), float)
    with pytest.raises(DeviceError, match="leaves nothing"):
        memory_fraction(0.05, 16 << 30)


class RunsOutOfMemory(torch.nn.Module):
    """A real generator that fails like CUDA does on batches above ``limit`` (CPU cannot)."""

    def __init__(self, limit: int):
        super().__init__()
        self.generator = random_generator(UNetConfig(width=4), 1)
        self.config = self.generator.config
        self.limit = limit
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor, working_scale: float = 1.0) -> torch.Tensor:
        self.batches.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.generator(x, working_scale)


def stylizer_failing_above(limit: int) -> Stylizer:
    model = RunsOutOfMemory(limit)
    return Stylizer(model, model, "cpu")


@pytest.fixture(scope="module")
def heads() -> np.ndarray:
    """Eight 64 px crops of the astronaut."""
    image = photos.astronaut()
    return np.stack([image[y : y + 64, x : x + 64] for y in (0, 96, 192, 288) for x in (128, 224)])


def test_a_batch_that_runs_out_of_memory_is_run_as_two_halves(heads):
    stylizer = stylizer_failing_above(4)
    out = stylizer.run(heads, "head")
    assert stylizer.models["head"].batches == [8, 4, 4]
    expected = np.concatenate([stylizer_failing_above(8).run(heads[i : i + 1], "head") for i in range(8)])
    assert np.abs(out.astype(int) - expected).max() <= 1  # the same pieces, in order


def test_halves_that_run_out_of_memory_too_give_a_typed_error(heads):
    stylizer = stylizer_failing_above(2)
    with pytest.raises(DeviceOutOfMemoryError, match="batch of 8"):
        stylizer.run(heads, "head")
    assert stylizer.models["head"].batches == [8, 4]  # once, then no further splitting


def test_a_single_piece_out_of_memory_is_not_retried(heads):
    stylizer = stylizer_failing_above(0)
    with pytest.raises(TooLargeForDeviceError, match="one piece"):
        stylizer.run(heads[:1], "head")
    assert stylizer.models["head"].batches == [1]


def test_a_piece_that_never_fits_is_a_422_not_a_retryable_503():
    cause = TooLargeForDeviceError("one piece of shape (4096, 4096, 3) does not fit in the GPU memory")
    wrapped = RayTaskError("Cartoonizer.stylize", "Traceback ...", cause, proctitle="test", ip="127.0.0.1")
    for exc in (cause, wrapped.as_instanceof_cause()):
        error = to_api_error(exc, retry_after_s=2, timeout_s=60)
        assert (error.status, error.code, error.headers) == (422, "too_large_for_device", {})


def test_other_errors_are_not_retried():
    calls = []

    def broken(batch):
        calls.append(len(batch))
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        halve_on_out_of_memory(broken, np.zeros((4, 8, 8, 3), np.uint8))
    assert calls == [4]


def test_out_of_memory_from_a_replica_is_a_503_with_retry_after():
    cause = DeviceOutOfMemoryError("a batch of 8 pieces did not fit in GPU memory, nor did its halves")
    # As the ingress receives it: Ray's wrapper, an instance of the replica's error too.
    wrapped = RayTaskError("Cartoonizer.stylize", "Traceback ...", cause, proctitle="test", ip="127.0.0.1")
    for exc in (cause, wrapped.as_instanceof_cause()):
        error = to_api_error(exc, retry_after_s=2, timeout_s=60)
        assert (error.status, error.code, error.headers) == (503, "out_of_memory", {"Retry-After": "2"})
