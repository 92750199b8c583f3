#!/usr/bin/env bash
# One device call: the machine's facts, then bench/gpu-libtorch.sh and bench/gpu-cubecl.sh, each
# capped; every log, metrics.csv and JSON tarred into $OUT/results.tar.gz (8 files come back).
set -u
cd "$(dirname "$0")/.."
W=/tmp/gpuw; rm -rf "$W"; mkdir -p "$W"
exec > >(tee "$OUT/all.txt") 2>&1
start=$(date +%s)
since() { echo "$(( $(date +%s) - start ))s"; }
echo "== machine, $(date -u +%Y-%m-%dT%H:%MZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
echo "cpus $(nproc); $(grep -m1 'model name' /proc/cpuinfo)"
python3 -c 'import sys, torch; print(sys.executable, torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0))'
ls -d /usr/local/cuda* 2>&1 | head -3; command -v nvcc && nvcc --version | tail -1
ldconfig -p | grep nvrtc | head -3
ls /usr/local/cuda/include/cccl 2>&1 | head -3
echo "== LibTorch CUDA at $(since)"
timeout 265 bench/gpu-libtorch.sh --tch-bin gpu-bench/train-tch.gz --out "$W/libtorch" --budget 240 --updates 6
echo "== CubeCL at $(since)"
timeout 285 bench/gpu-cubecl.sh --base-bin gpu-bench/train-cuda-base.gz --bin gpu-bench/train-cuda.gz \
    --case-timeout 55 --updates 4 --out "$W/cubecl"
echo "== done at $(since)"
(cd "$W" && find . -type f \( -name '*.log' -o -name '*.csv' -o -name '*.json' -o -name '*.err' -o -name '*.mem' \
    -o -name config.toml \) -not -path '*kernel-cache*' -size -20M | tar -czf "$OUT/results.tar.gz" -T -)
# At most 16 MiB comes back per file: without the kernel logs (their summaries are in all.txt) if too big.
if [ "$(stat -c %s "$OUT/results.tar.gz")" -gt 15000000 ]; then
    (cd "$W" && find . -type f \( -name '*.csv' -o -name '*.json' -o -name '*.err' -o -name '*.mem' -o -name config.toml \
        -o \( -name '*.log' -not -name '*.kernels.log' \) \) -not -path '*kernel-cache*' | tar -czf "$OUT/results.tar.gz" -T -)
    for k in $(find "$W" -name '*.kernels.log' | head -4); do tail -c 2000000 "$k" | gzip > "$OUT/$(basename "$k").tail.gz"; done
fi
ls -la "$OUT"
