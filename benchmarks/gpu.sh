#!/usr/bin/env bash
# The GPU figures of docs/BENCHMARKS.md in one unattended run, printed as one table:
#   bash benchmarks/gpu.sh [OUT_DIR]             # one GPU (an H100: about 7 minutes); results in OUT_DIR
#   bash benchmarks/gpu.sh --dry-run [OUT_DIR]   # the same steps on this CPU with tiny sizes (about 3 minutes)
# From a fresh checkout on a bare machine: without a CUDA torch it makes .venv-gpu and
# installs the torch the Dockerfile pins (PyPI's Linux wheel is the CUDA build) and this
# project with its test and bench extras; offline, point PIP_FIND_LINKS at a wheelhouse
# and set PIP_NO_INDEX=1. Steps, each bounded by `timeout`, most telling first:
# 1. head crops/s (288 px) and tiles/s (384 px) at batch 1..64, fp16 and bf16,
#    channels-last, the served path (Stylizer.run: uint8 in and out) - benchmarks.unet;
# 2. configs/gpu.yaml over HTTP at Cartoonizer shares 1, 0.5 and 0.25 (1, 2, 4 replicas
#    on the GPU): 1024 px portraits at c=1 (latency) and c=32 (throughput) - benchmarks.load;
# 3. a 720p clip (48 frames) as a job of configs/gpu.yaml - benchmarks.video;
# then benchmarks.gpu_table reads the results and prints the table (missing steps as n/a).
set -u
cd "$(dirname "$0")/.."
dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3

if [ $dry = 0 ] && ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    torch_pin=$(sed -n 's/.*pip install.* \(torch==[0-9.]*\).*/\1/p' Dockerfile | head -1)
    [ -x .venv-gpu/bin/python ] || "$python" -m venv .venv-gpu || exit 2
    .venv-gpu/bin/python -m pip install --quiet "${torch_pin:-torch}" \
        && .venv-gpu/bin/python -m pip install --quiet -e ".[test,bench]" || exit 2
    python=.venv-gpu/bin/python
fi
if [ $dry = 0 ]; then
    "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to run')" || exit 2
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" 2>&1
    unet=(--preset gpu --precisions fp16,bf16 --batches 1,2,4,8,16,32,64 --budget-s 90 --skip-gpu-tests)
    portrait=1024 loaded=32 seconds=25 warmup=4 clip=1280x720 frames=48 gpus=()
    device=() limits=(120 100 70)  # seconds for the sweep, each share, the clip: 7.5 minutes at most
else
    # The same steps on the CPU: fp32, batch 1 and 2, small portraits and clip; the GPU
    # config's replicas still placed by their shares, on one logical GPU Ray declares.
    unet=(--preset cpu --precisions fp32 --batches 1,2 --threads 1 --iterations 1 --warmup 1)
    portrait=256 loaded=2 seconds=5 warmup=1 clip=160x96 frames=4 gpus=(--ray-gpus 1)
    limits=(300 300 300)  # a busy 2-core machine starts four Cartoonizers slowly
    device=(--set args.device=cpu --set FaceAligner.ray_actor_options.num_cpus=0.25
            --set Postprocessor.ray_actor_options.num_cpus=0.25 --set FaceAligner.autoscaling_config.min_replicas=1
            --set Cartoonizer.ray_actor_options.num_cpus=0.25)
fi
status=0
timeout ${limits[0]} "$python" -m benchmarks.unet "${unet[@]}" --plan sweep --shapes head,tile --out "$out/unet_sweep.png" \
    > "$out/unet_sweep.md" || status=$?
for share in 1 0.5 0.25; do
    replicas=$("$python" -c "print(round(1 / $share))")
    timeout ${limits[1]} "$python" -m benchmarks.load --deploy --config configs/gpu.yaml "${gpus[@]}" "${device[@]}" \
        --set "Cartoonizer.ray_actor_options.num_gpus=$share" \
        --set "Cartoonizer.autoscaling_config.min_replicas=$replicas" \
        --set "Cartoonizer.autoscaling_config.max_replicas=$replicas" \
        --sizes $portrait --concurrency 1,$loaded --rounds 3 --min-requests 8 --max-seconds $seconds \
        --warmup $warmup --out "$out/load_share$share.png" > "$out/load_share$share.md" || status=$?
done
timeout ${limits[2]} "$python" -m benchmarks.video --deploy configs/gpu.yaml "${gpus[@]}" "${device[@]}" --served-only \
    --size $clip --frames $frames --json "$out/video.json" > "$out/video.md" || status=$?
"$python" -m benchmarks.gpu_table "$out" || status=$?
exit $status
