"""Where the UNet runs: the device chosen once, the CUDA memory cap, out-of-memory retries.

A replica of a Ray Serve deployment may share one GPU with others; Ray hands out GPU
shares by bookkeeping only, so each process caps its own CUDA caching allocator. The
cap leaves room for what the allocator does not count: the CUDA context with its
cuBLAS and cuDNN handles and workspaces, which every process on the GPU pays once.
"""

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from cartoon.errors import DeviceError, DeviceOutOfMemoryError, TooLargeForDeviceError

# GPU memory a process uses outside torch's caching allocator: the CUDA context,
# cuBLAS/cuDNN handles and workspaces, loaded kernels. Commonly 0.3 to 0.6 GiB on
# recent GPUs; 1 GiB keeps shares apart with room to spare. tests/gpu measures it.
CUDA_CONTEXT_RESERVE_BYTES = 1 << 30


def resolve_device(requested: str = "auto", assigned_gpus: Sequence[str] | None = None) -> torch.device:
    """The one device a process runs the UNet on, with its CUDA index resolved.

    Args:
        requested: "auto", "cpu", "cuda" or "cuda:N".
        assigned_gpus: the GPU ids a scheduler (Ray) gave this process, empty when it
            gave none; None when no scheduler is involved (the CLI, a notebook), and
            then every GPU torch sees counts.

    Returns:
        ``torch.device("cpu")`` or ``torch.device("cuda", index)``, never an index-less
        CUDA device: torch's memory functions refuse those.

    Raises:
        DeviceError: CUDA asked for but not given (no GPU assigned, none visible).
    """
    if requested == "auto":
        wanted = torch.cuda.is_available() if assigned_gpus is None else bool(assigned_gpus)
        if not wanted:
            return torch.device("cpu")
        device = torch.device("cuda")
    else:
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise DeviceError(f"device {requested!r} is not a torch device: {exc}") from exc
    if device.type != "cuda":
        return device
    if assigned_gpus is not None and not assigned_gpus:
        raise DeviceError(f"device {requested!r} needs a GPU, but the replica was given none (set num_gpus)")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {requested!r} needs CUDA, which this torch build or machine lacks")
    if device.index is not None:
        index = device.index
    elif assigned_gpus:
        index = visible_index(assigned_gpus[0])
    else:
        index = torch.cuda.current_device()
    if not 0 <= index < torch.cuda.device_count():
        raise DeviceError(f"device cuda:{index} does not exist; {torch.cuda.device_count()} visible")
    return torch.device("cuda", index)


def visible_index(gpu_id: str) -> int:
    """The torch index of a physical GPU id: its place in CUDA_VISIBLE_DEVICES when set.

    Ray sets CUDA_VISIBLE_DEVICES to the GPUs it assigned, so the first is cuda:0;
    without the variable (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES) ids are indices.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return int(gpu_id)
    ids = [entry.strip() for entry in visible.split(",")]
    if gpu_id not in ids:
        raise DeviceError(f"GPU {gpu_id} is not among CUDA_VISIBLE_DEVICES={visible}")
    return ids.index(gpu_id)


def memory_fraction(share: float, total_bytes: int, reserve_bytes: int = CUDA_CONTEXT_RESERVE_BYTES) -> float:
    """The allocator cap for a process holding ``share`` of a GPU of ``total_bytes``.

    The share less the context reserve, so that processes whose shares sum to one GPU
    fit on it together with their contexts.

    Raises:
        DeviceError: when the share leaves nothing after the reserve.
    """
    fraction = min(1.0, share) - reserve_bytes / total_bytes
    if fraction <= 0.0:
        raise DeviceError(
            f"a {share:g} share of {total_bytes / 2**30:.1f} GiB leaves nothing after the "
            f"{reserve_bytes / 2**30:.1f} GiB CUDA context reserve; give the replica more of the GPU"
        )
    return float(fraction)


def cap_memory(device: torch.device, share: float, fraction: float = 0.0) -> float:
    """Caps this process's CUDA allocator on ``device``; returns the fraction set.

    Args:
        device: a CUDA device from ``resolve_device``.
        share: the GPU share the scheduler gave the process (Ray's num_gpus).
        fraction: an explicit cap; 0 derives it from ``share`` by ``memory_fraction``.
    """
    if not fraction:
        fraction = memory_fraction(share, torch.cuda.get_device_properties(device).total_memory)
    torch.cuda.set_per_process_memory_fraction(float(fraction), device)
    return float(fraction)


def halve_on_out_of_memory(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
    """``run(batch)``; on CUDA out-of-memory, runs each half once, then gives up.

    Raises:
        TooLargeForDeviceError: when a batch of one does not fit: the piece never will.
        DeviceOutOfMemoryError: when both halves do not fit either (other batches may).
    """
    try:
        return run(batch)
    except torch.OutOfMemoryError:
        pass  # retried outside the handler, whose traceback still holds the failed pass's tensors
    if len(batch) < 2:
        _release_cached_memory()
        raise TooLargeForDeviceError(f"one piece of shape {tuple(batch.shape[1:])} does not fit in the GPU memory "
                                     "this replica may use")
    _release_cached_memory()
    middle = len(batch) // 2
    try:
        return np.concatenate([run(batch[:middle]), run(batch[middle:])])
    except torch.OutOfMemoryError:
        pass
    _release_cached_memory()
    raise DeviceOutOfMemoryError(f"a batch of {len(batch)} pieces did not fit in GPU memory, nor did its halves")


def _release_cached_memory() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
