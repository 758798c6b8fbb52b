"""Benchmarks: run on purpose, print markdown tables, write plots. Never tests.

Run from the repository root, one command each (see docs/BENCHMARKS.md):

    python -m benchmarks.load       # HTTP load generator: concurrency sweep against a URL
    python -m benchmarks.compare    # in-process vs served graph vs naive servers, side by side
    python -m benchmarks.unet       # UNet micro-benchmark (CPU; --preset gpu on a CUDA machine)
    python -m benchmarks.batching   # batch formation under load, simulated forward
    python -m benchmarks.naive_server  # the one-process server a user would write instead
"""
