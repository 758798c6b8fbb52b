"""Benchmarks: run on purpose, print markdown tables, write plots. Never tests.
Run from the repository root, one command each (docs/BENCHMARKS.md has today's figures):
    python -m benchmarks.targets    # one photo's latency and images/s over HTTP, fast path beside fp32
    python -m benchmarks.compare    # in-process vs served graph vs one-process servers, side by side
    python -m benchmarks.load       # HTTP load generator: concurrency sweep against a URL
    python -m benchmarks.unet       # UNet micro-benchmark (CPU; --preset gpu on a CUDA machine)
    python -m benchmarks.dctnet     # the official DCT-Net size beside the default, over HTTP
    python -m benchmarks.sweep      # batch formation through the graph, GPU simulated
    python -m benchmarks.raydata    # cartoonize-batch: HTTP mode against Ray Data
    python -m benchmarks.video      # a clip: flicker and frames per second
    python -m benchmarks.overload   # goodput and refusals at 10x capacity (docs/RELIABILITY.md)
    python -m benchmarks.soak       # memory and 5xx over thousands of requests (docs/RELIABILITY.md)
    python -m benchmarks.inputs     # peak memory of hostile inputs (docs/RELIABILITY.md)
    bash benchmarks/gpu.sh          # every GPU row, on a CUDA machine
"""
