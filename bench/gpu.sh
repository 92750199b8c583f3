#!/usr/bin/env bash
# GPU benchmark (issue 7): the main PPO + M3ixup config for a fixed number of updates on every
# available GPU device and on the CPU, printing env-steps/s, learner samples/s and GPU memory.
# Runs prebuilt `train` binaries (no cargo needed on the GPU machine); copy this folder, the
# configs/ folder and the binaries there:
#
#   # on the build machine (x86-64 Linux):
#   cargo build --release --features cuda --bin train && cp target/release/train train-cuda
#   eval "$(scripts/setup-libtorch.sh)"          # optional, for the LibTorch devices
#   cargo build --release --features tch --bin train && cp target/release/train train-tch
#   # on the GPU machine:
#   bench/gpu.sh --cuda-bin ./train-cuda [--tch-bin ./train-tch --libtorch DIR] [--updates 10] \
#       [--case-timeout 900]   # seconds per device run: a stuck run is stopped and reported
#
# Needs the NVIDIA driver (libcuda) and, for cuda:N, NVRTC (libnvrtc.so.12: from a CUDA
# toolkit, or --nvrtc DIR, e.g. a pip nvidia-cuda-nvrtc-cu12's nvidia/cuda_nvrtc/lib). The tch
# binary needs LibTorch 2.9.0 with CUDA (--libtorch DIR: the torch/lib folder of a pip
# torch==2.9.0, whose own rpath finds the nvidia-* wheels beside it), unless it finds it at the
# path it was built with. Devices a binary cannot use are reported and skipped.
#
# Figures, per device, from the run's metrics.csv, the first update left out (warm-up: kernel
# compilation, autotuning, allocator growth):
#   env-steps/s         transitions per update / wall seconds per update (rollout + learning)
#   learner samples/s   transitions x update epochs / learning seconds (gradient passes per second)
#   GPU memory          peak memory.used of that GPU during the run minus before it (nvidia-smi)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

cuda_bin="" tch_bin="" libtorch="" nvrtc="" updates=10 config="$root/configs/ppo-pendulum.toml"
cpu_devices="flex" sets=() out="" case_timeout=900
usage() { sed -n '2,30p' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --cuda-bin) cuda_bin="$2"; shift 2 ;;
        --tch-bin) tch_bin="$2"; shift 2 ;;
        --libtorch) libtorch="$2"; shift 2 ;;
        --nvrtc) nvrtc="$2"; shift 2 ;;
        --updates) updates="$2"; shift 2 ;;
        --config) config="$2"; shift 2 ;;
        --cpu-devices) cpu_devices="$2"; shift 2 ;;  # e.g. "flex libtorch"
        --set) sets+=(--set "$2"); shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --case-timeout) case_timeout="$2"; shift 2 ;;  # seconds per device run (a stuck one is stopped)
        -h|--help) usage 0 ;;
        *) echo "unknown argument $1" >&2; usage 2 ;;
    esac
done
[ -n "$cuda_bin$tch_bin" ] || { echo "give --cuda-bin and/or --tch-bin" >&2; exit 2; }
[ "$updates" -ge 2 ] || { echo "--updates must be at least 2 (the first is warm-up)" >&2; exit 2; }
[ -n "$nvrtc" ] && export LD_LIBRARY_PATH="$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -n "$libtorch" ] && export LD_LIBRARY_PATH="$libtorch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out="${out:-$(mktemp -d /tmp/m3ixup-gpu-bench.XXXXXX)}"
mkdir -p "$out"

gpus=()
if command -v nvidia-smi >/dev/null 2>&1; then
    while IFS=, read -r idx name mem; do gpus+=("$idx"); echo "GPU $idx:$name,$mem MiB" ; done \
        < <(nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits)
    nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1 | sed 's/^/driver /'
else
    echo "nvidia-smi not found: no GPU devices, CPU only" >&2
fi
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) logical CPUs"
echo "config: $config, $updates updates (first = warm-up), runs under $out"
echo

# (binary, device, rollout inference) triples to try: each GPU learner with the rollout's
# forward passes on the GPU itself and on a CPU copy of the weights (`rollout.inference`).
cases=()
for d in $cpu_devices; do
    case "$d" in
        flex) cases+=("${cuda_bin:-$tch_bin} flex learner") ;;
        libtorch) [ -n "$tch_bin" ] && cases+=("$tch_bin libtorch learner") ;;
    esac
done
for g in "${gpus[@]}"; do
    for inference in learner cpu; do
        [ -n "$cuda_bin" ] && cases+=("$cuda_bin cuda:$g $inference")
        [ -n "$tch_bin" ] && cases+=("$tch_bin libtorch-cuda:$g $inference")
    done
done

gpu_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$1" 2>/dev/null | head -1; }

# Column of a metrics.csv by header name; mean over rows 2.. (the first update is warm-up).
csv_mean() {
    awk -F, -v key="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == key) c = i; next }
        NR > 2 && c { s += $c; n++ } END { if (n) printf "%.6f", s / n; else print "nan" }' "$1"
}

results=()
ref_sps=""
for c in "${cases[@]}"; do
    read -r bin dev inference <<< "$c"
    name="$(echo "$dev" | tr ':' '-')-inference-$inference"
    label="$dev, inference on $inference"
    log="$out/$name.log"
    gpu=""; case "$dev" in *:*) gpu="${dev##*:}" ;; esac
    base=""; peak_file="$out/$name.mem"; : > "$peak_file"; poll=""
    if [ -n "$gpu" ]; then
        base="$(gpu_mem "$gpu")"
        ( while true; do gpu_mem "$gpu" >> "$peak_file"; sleep 0.5; done ) &
        poll=$!
    fi
    echo "== $label ($bin)"
    set +e
    timeout "$case_timeout" "$bin" --config "$config" --device "$dev" --max-updates "$updates" --runs-dir "$out/runs" \
        --run-name "$name" --quiet --set rollout.inference="$inference" "${sets[@]}" > "$log" 2>&1
    rc=$?
    set -e
    [ -n "$poll" ] && kill "$poll" 2>/dev/null && wait "$poll" 2>/dev/null || true
    if [ $rc -eq 124 ]; then
        done_updates="$(($(wc -l < "$out/runs/$name/metrics.csv" 2>/dev/null || echo 1) - 1))"
        echo "   stopped after ${case_timeout}s with $done_updates of $updates updates done (log: $log)"
        results+=("| $label | timed out ($done_updates/$updates updates in ${case_timeout}s) | | | | |")
        continue
    elif [ $rc -ne 0 ]; then
        echo "   failed or unavailable (exit $rc): $(grep -m1 -i 'error\|device' "$log" | cut -c1-300)"
        results+=("| $label | unavailable | | | | |")
        continue
    fi
    csv="$out/runs/$name/metrics.csv"
    batch="$(grep -m1 -o '[0-9]* updates of [0-9]* transitions' "$log" | awk '{print $4}')"
    epochs="$(awk -F= '/^\[ppo\]/{s=1;next} /^\[/{s=0} s && $1 ~ /^update_epochs *$/ {gsub(/ /,"",$2); print $2}' "$out/runs/$name/config.toml")"
    rollout_s="$(csv_mean "$csv" time/rollout_seconds)"
    learn_s="$(csv_mean "$csv" time/learn_seconds)"
    sps="$(awk -v b="$batch" -v r="$rollout_s" -v l="$learn_s" 'BEGIN { printf "%.0f", b / (r + l) }')"
    lsps="$(awk -v b="$batch" -v e="$epochs" -v l="$learn_s" 'BEGIN { printf "%.0f", b * e / l }')"
    mem="-"
    if [ -n "$gpu" ] && [ -s "$peak_file" ]; then
        peak="$(sort -n "$peak_file" | tail -1)"
        mem="$((peak - base)) MiB"
    fi
    [ -z "$gpu" ] && [ -z "$ref_sps" ] && ref_sps="$sps" ref_dev="$dev"
    speedup="$(awk -v s="$sps" -v r="$ref_sps" 'BEGIN { if (r > 0) printf "%.2fx", s / r; else print "-" }')"
    echo "   env-steps/s $sps, learner samples/s $lsps, rollout ${rollout_s}s + learning ${learn_s}s per update, GPU memory $mem"
    results+=("| $label | $sps | $speedup | $lsps | $rollout_s / $learn_s | $mem |")
done

echo
echo "PPO + M3ixup ($(basename "$config")), $updates updates, first left out; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| device | env-steps/s | vs ${ref_dev:-CPU} | learner samples/s | s/update rollout / learning | GPU memory (peak - idle) |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${results[@]}"
