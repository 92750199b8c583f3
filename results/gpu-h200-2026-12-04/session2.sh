#!/usr/bin/env bash
# Second device call: LibTorch CUDA at 1,024 environments (and PyTorch's reference there), then
# CubeCL fusion + autotune on the main config with a longer cap, cold then warm.
set -u
cd "$(dirname "$0")/.."
W=/tmp/gpuw2; rm -rf "$W"; mkdir -p "$W"
exec > >(tee "$OUT/all2.txt") 2>&1
start=$(date +%s)
lt=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib
timeout 40 python3 bench/torch_ppo_update.py --device cuda --aux gmc --num-envs 1024 --minibatch 8192 --updates 4 > "$W/pytorch-1024.json"; cat "$W/pytorch-1024.json"
timeout 70 bench/gpu.sh --tch-bin gpu-bench/train-tch.gz --libtorch "$lt" --cpu-devices "" --inference learner --updates 4 \
    --set rollout.num_envs=1024 --set rollout.workers=16 --set ppo.minibatch_size=8192 --case-timeout 60 --out "$W/tch-1024"
echo "== CubeCL at $(( $(date +%s) - start ))s"
timeout 225 bench/gpu.sh --cuda-bin gpu-bench/train-cuda.gz --cpu-devices "" --inference cpu --caches "cold warm" --updates 4 \
    --case-timeout 110 --out "$W/cuda-main"
echo "== done at $(( $(date +%s) - start ))s"
(cd "$W" && find . -type f \( -name '*.log' -o -name '*.csv' -o -name '*.json' \) -not -path '*kernel-cache*' -size -20M | tar -czf "$OUT/results2.tar.gz" -T -)
