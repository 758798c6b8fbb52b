"""What one typical image costs the UNet, timed once at a replica's start.

The Ingress's admission (``serve_app.admission``) needs a throughput before it has
seen any image complete; a fixed floor refused most of a first burst although the
machine could clear it well within the timeout. A Cartoonizer times the pieces of a
typical upload instead: one 288 px head crop and the background of a 3:4 portrait at
the processing side, cut as the config cuts backgrounds (whole, or tiles and halo).
"""

import time
from collections.abc import Callable

import numpy as np
import torch

from cartoon.image.background import split
from cartoon.constants import CROP_SIZE, UNET_STRIDE


def typical_pieces(process_side: int, tile: int, halo: int) -> dict[str, np.ndarray]:
    """The UNet's inputs for one face in a 3:4 portrait shrunk to ``process_side``.

    Returns:
        {"head": (1, 288, 288, 3), "background": (N, H, W, 3)} uint8, mid-grey with
        noise so no kernel meets a constant picture.
    """
    rng = np.random.default_rng(0)
    height = -(-round(process_side * 4 / 3) // UNET_STRIDE) * UNET_STRIDE
    portrait = rng.integers(64, 192, (height, process_side, 3), dtype=np.uint8)
    background, _ = split(portrait, tile, halo)
    head = rng.integers(64, 192, (1, CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    return {"head": head, "background": background}


def seconds_per_image(
    run: Callable[[np.ndarray, str], np.ndarray],
    pieces: dict[str, np.ndarray],
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Seconds ``run(pieces, kind)`` takes for every kind of ``pieces``, on one torch thread.

    One thread because that is what a forward gets under load (``cartoon.model.inference.
    forward_threads``), when admission matters. The first pass warms caches and kernels
    up and is not counted.

    Args:
        clock: ``time.thread_time`` for a CPU forward: one torch thread computes in the
            calling thread, so its CPU time is what the forward costs a core, however
            many replicas start on the machine at the same time (on a 2-core machine,
            seven starting together measured 3-4x their wall time). Wall time for a
            GPU, whose work the thread only waits for.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for kind, batch in pieces.items():
            run(batch, kind)
        start = clock()
        for kind, batch in pieces.items():
            run(batch, kind)
        return clock() - start
    finally:
        torch.set_num_threads(threads)
