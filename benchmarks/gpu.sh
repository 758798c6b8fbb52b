#!/usr/bin/env bash
# The GPU rows of docs/BENCHMARKS.md in one bounded run, on a machine with CUDA:
#   bash benchmarks/gpu.sh [OUT_DIR]          # at most 14 minutes; results in OUT_DIR
# 1. UNet micro-benchmark, shipped width-16 model: fp16/bf16, channels-last, the served
#    path, CUDA graphs, torch.compile; batch sweeps (230 s budget).
# 2. The same for a width-32 (DCT-Net-shaped) model, heads and tiles (150 s budget).
# 3. configs/gpu.yaml end to end over HTTP, closed loop at c=8/32/128 with 1024 px
#    portraits: images/s, latency and the mean batch the requests rode in.
# 4. Live: camera clients over GET /v1/live on configs/gpu.yaml, 1/4/8/16 sessions at
#    640x360 (adds up to 200 s: run it alone, `python -m benchmarks.live --preset gpu`,
#    where the 14 minutes must hold).
set -u
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to run')" || exit 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" 2>&1
status=0
timeout 300 python -m benchmarks.unet --preset gpu --out "$out/unet_gpu.png" > "$out/unet_gpu.md" || status=$?
timeout 200 python -m benchmarks.unet --preset gpu --width 32 --shapes head,tile --budget-s 150 \
    --out "$out/unet_gpu_w32.png" > "$out/unet_gpu_w32.md" || status=$?
timeout 330 python -m benchmarks.load --deploy --config configs/gpu.yaml --sizes 1024 \
    --concurrency 8,32,128 --max-seconds 60 --warmup 4 --out "$out/load_gpu.png" > "$out/load_gpu.md" || status=$?
timeout 200 python -m benchmarks.live --preset gpu --seconds 10 > "$out/live_gpu.md" || status=$?
cat "$out"/*.md
exit $status
