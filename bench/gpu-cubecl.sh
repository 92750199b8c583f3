#!/usr/bin/env bash
# The CubeCL GPU benchmark (docs/GPU.md, section 4): one run on a GPU machine, from `train`
# binaries built elsewhere (no cargo there), that says how long burn's CUDA backend takes to
# its first PPO update and how fast it trains after, with the kernel counts:
#
#   scripts/build-gpu-bench.sh --cuda-version 13000 --features "cuda-base cuda"   # here
#   bench/gpu-cubecl.sh --base-bin gpu-bench/train-cuda-base.gz --bin gpu-bench/train-cuda.gz   # there
#       [--devices cuda:0] [--case-timeout 90] [--updates 4] [--config configs/ppo-pendulum-m3ixup.toml]
#       [--out DIR]
#
# In this order, each case stopped after --case-timeout seconds (about 8 minutes at most with
# the defaults), rollout inference on a CPU copy (`auto` on a GPU):
# 1. the M3ixup config on `--base-bin` (no fusion, no autotune: the fewest kernels), cold;
# 2. the M3ixup config on `--bin` (fusion + autotune) with an empty kernel cache, then again with
#    the cache the first run filled;
# 3. a GPU-sized config (256 environments on 16 threads, minibatch 4,096) on `--bin`, cold and
#    warm.
# Each case's line gives env-steps/s after the first update, the first update's seconds and
# the kernel log's summary (kernels compiled, autotunes and their seconds, the last event): a
# case stopped at its timeout still says which kernel or autotune it was on. `--devices
# wgpu:cpu` with wgpu builds tries the script on a CPU machine (docs/GPU.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

base_bin="" bin="" devices="" case_timeout=90 updates=4 config="$root/configs/ppo-pendulum-m3ixup.toml" out=""
usage() { sed -n '2,22p' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --base-bin) base_bin="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        --devices) devices="$2"; shift 2 ;;
        --case-timeout) case_timeout="$2"; shift 2 ;;
        --updates) updates="$2"; shift 2 ;;
        --config) config="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument $1" >&2; usage 2 ;;
    esac
done
[ -n "$base_bin" ] && [ -n "$bin" ] || { echo "--base-bin and --bin are both needed" >&2; usage 2; }
out="${out:-$root/gpu-cubecl-$(date -u +%Y%m%dT%H%MZ)}"
mkdir -p "$out"

common=(--cpu-devices "" --inference cpu --updates "$updates" --case-timeout "$case_timeout" --config "$config")
[ -n "$devices" ] && common+=(--cubecl-devices "$devices")
gpu_sized=(--set rollout.num_envs=256 --set rollout.workers=16 --set ppo.minibatch_size=4096 --set train.total_steps=10000000)

step() {
    local title="$1"; shift
    echo "=== $title"
    # A case that fails or times out is reported by gpu.sh; the next step still runs.
    "$here/gpu.sh" "$@" "${common[@]}" 2>&1 | tee "$out/$(echo "$title" | tr ' ,/' '___').log" || true
}
step "1 M3ixup config, base build, cold" --cubecl-bin "$base_bin" --caches cold --out "$out/1-base"
step "2 M3ixup config, fusion and autotune, cold then warm" --cubecl-bin "$bin" --caches "cold warm" --out "$out/2-main"
step "3 GPU-sized config, fusion and autotune, cold then warm" --cubecl-bin "$bin" --caches "cold warm" \
    "${gpu_sized[@]}" --out "$out/3-gpu-sized"

echo
echo "=== summary ($out)"
echo "| step | device, build, cache | env-steps/s | vs first | learner samples/s | s/update rollout / learning | GPU memory | first update, s | first update done, s after start |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for log in "$out"/*.log; do
    step="$(basename "$log" .log | tr '_' ' ')"
    grep '^| ' "$log" | grep -v '^| device\|^|---' | sed "s/^| /| ${step%% *} | /" || true
done
