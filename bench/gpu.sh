#!/usr/bin/env bash
# GPU benchmark (issue 7): the PPO + M3ixup config (ppo-pendulum-m3ixup.toml) for a fixed number of updates on every
# available GPU device and on the CPU, printing env-steps/s, learner samples/s and GPU memory.
# Runs prebuilt `train` binaries (no cargo needed on the GPU machine). Build them with
# scripts/build-gpu-bench.sh, which leaves gzip-compressed, stripped binaries in gpu-bench/,
# then copy this folder, configs/ and gpu-bench/ to the GPU machine:
#
#   bench/gpu.sh --cuda-bin gpu-bench/train-cuda-base.gz --cuda-bin gpu-bench/train-cuda.gz \
#       [--tch-bin ./train-tch --libtorch DIR] [--nvrtc DIR] [--updates 10] [--case-timeout 900]
#
# --cuda-bin may be repeated: one binary per build of burn's CUDA backend (features `cuda`:
# fusion + autotune; `cuda-base`: neither; `cuda-fusion`, `cuda-autotune`), each run as its
# own case and named by its file name. A `.gz` binary (here and for --tch-bin) is unpacked into
# the output folder.
# Each CUDA run writes its kernel log (every kernel compilation and autotune, stamped with the
# seconds since start: `train --kernel-log`) beside its output, keeps compiled kernels and
# autotune results in a cache per binary (`train --kernel-cache`, shared by that binary's
# cases), and the summary line says how many kernels it compiled and when the last one
# started; a run that exceeds --case-timeout seconds is stopped and reported with the same
# figures, which say whether it was still compiling.
#
# Needs the NVIDIA driver (libcuda) and, for cuda:N, NVRTC of the CUDA major version the
# binary was built for (libnvrtc.so.12 by default, libnvrtc.so.13 with CUDARC_CUDA_VERSION=13000:
# from a CUDA toolkit, --nvrtc DIR, or else found in a pip torch's nvidia-* wheels) and the CUDA
# headers (CUDA_PATH, default /usr/local/cuda; without either, the bundle cuda-include-<major>.tar.gz
# that scripts/build-gpu-bench.sh leaves beside the binaries).
# The tch binary needs LibTorch 2.9.0 with CUDA (--libtorch DIR: the torch/lib folder of a pip
# torch==2.9.0, whose own rpath finds the nvidia-* wheels beside it), unless it finds it at the
# path it was built with. Devices a binary cannot use are reported and skipped.
#
# Figures, per device, from the run's metrics.csv, the first update left out (warm-up: kernel
# compilation, autotuning, allocator growth):
#   env-steps/s         transitions per update / wall seconds per update (rollout + learning)
#   learner samples/s   transitions x update epochs / learning seconds (gradient passes per second)
#   GPU memory          peak memory.used of that GPU during the run minus before it (nvidia-smi)
#   warm-up             the first update's wall seconds (rollout + learning)
#   first update at     seconds from the process start to the end of the first update (loading
#                       the libraries, CUDA context, model, first rollout and update): the
#                       process's wall time minus the later updates' rollout + learning seconds
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

cuda_bins=() tch_bin="" libtorch="" nvrtc="" updates=10 config="$root/configs/ppo-pendulum-m3ixup.toml"
cpu_devices="flex" sets=() out="" case_timeout=900 inferences="learner cpu" cubecl_devices="" caches="shared"
usage() { sed -n '2,33p' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --cuda-bin|--cubecl-bin) cuda_bins+=("$2"); shift 2 ;;
        --cubecl-devices) cubecl_devices="$2"; shift 2 ;;  # devices for the CubeCL binaries (default: cuda:N per GPU)
        --caches) caches="$2"; shift 2 ;;  # "shared" (one kernel cache per binary) or "cold warm" (each case twice)
        --tch-bin) tch_bin="$2"; shift 2 ;;
        --libtorch) libtorch="$2"; shift 2 ;;
        --nvrtc) nvrtc="$2"; shift 2 ;;
        --updates) updates="$2"; shift 2 ;;
        --config) config="$2"; shift 2 ;;
        --cpu-devices) cpu_devices="$2"; shift 2 ;;  # e.g. "flex libtorch"
        --set) sets+=(--set "$2"); shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --case-timeout) case_timeout="$2"; shift 2 ;;  # seconds per device run (a stuck one is stopped)
        --inference) inferences="$2"; shift 2 ;;  # GPU cases' rollout.inference settings: "learner cpu" (default), "learner"
        -h|--help) usage 0 ;;
        *) echo "unknown argument $1" >&2; usage 2 ;;
    esac
done
[ ${#cuda_bins[@]} -gt 0 ] || [ -n "$tch_bin" ] || { echo "give --cuda-bin and/or --tch-bin" >&2; exit 2; }
[ "$updates" -ge 2 ] || { echo "--updates must be at least 2 (the first is warm-up)" >&2; exit 2; }
cuda_include=""
for b in "${cuda_bins[@]}"; do  # the header bundle scripts/build-gpu-bench.sh leaves beside the binaries
    [ -z "$cuda_include" ] && cuda_include="$(ls "$(dirname "$b")"/cuda-include-*.tar.gz 2>/dev/null | head -1 || true)"
done
[ -n "$libtorch" ] && export LD_LIBRARY_PATH="$libtorch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out="${out:-$(mktemp -d /tmp/m3ixup-gpu-bench.XXXXXX)}"
mkdir -p "$out"

# CubeCL compiles its kernels at run time: NVRTC (libnvrtc.so.<CUDA major>) and the CUDA headers
# (CUDA_PATH/include, with CCCL's <cuda/barrier> in include/cccl). On a machine without a CUDA
# toolkit, NVRTC comes from a pip torch's nvidia-* wheels and the headers from the bundle that
# scripts/build-gpu-bench.sh leaves beside the binaries.
if [ ${#cuda_bins[@]} -gt 0 ]; then
    major="$(basename "${cuda_include:-none}" .tar.gz | sed -n 's/^cuda-include-//p' || true)"
    if [ -z "$nvrtc" ] && ! ldconfig -p 2>/dev/null | grep -q "libnvrtc\.so\.${major:-[0-9]}"; then
        for d in $(python3 -c 'import sys; print(" ".join(p for p in sys.path if p))' 2>/dev/null); do
            lib="$(find "$d/nvidia" -maxdepth 3 -name "libnvrtc.so.${major:-*}" 2>/dev/null | head -1 || true)"
            [ -n "$lib" ] && { nvrtc="$(dirname "$lib")"; break; }
        done
    fi
    [ -n "$nvrtc" ] && echo "NVRTC from $nvrtc"
    if [ -z "${CUDA_PATH:-}" ] && [ ! -f /usr/local/cuda/include/cuda_runtime.h ] && [ -n "$cuda_include" ]; then
        mkdir -p "$out/cuda-headers" && tar -C "$out/cuda-headers" -xzf "$cuda_include"
        export CUDA_PATH="$out/cuda-headers/cuda"
    fi
    echo "CUDA headers from ${CUDA_PATH:-/usr/local/cuda}$([ -d "${CUDA_PATH:-/usr/local/cuda}/include/cccl" ] && echo ', CCCL in include/cccl')"
fi
[ -n "$nvrtc" ] && export LD_LIBRARY_PATH="$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Compressed binaries (as scripts/build-gpu-bench.sh leaves them) are unpacked into $out/bin.
unpacked() {  # unpacked FLAG PATH: the runnable binary PATH names
    [ -f "$2" ] || { echo "$1 $2: no such file" >&2; exit 2; }
    [ "${2%.gz}" = "$2" ] && { echo "$2"; return; }
    local u="$out/bin/$(basename "${2%.gz}")"
    mkdir -p "$out/bin" && gzip -dc "$2" > "$u" && chmod +x "$u" && echo "$u"
}
for i in "${!cuda_bins[@]}"; do cuda_bins[$i]="$(unpacked --cuda-bin "${cuda_bins[$i]}")"; done
[ -n "$tch_bin" ] && tch_bin="$(unpacked --tch-bin "$tch_bin")"

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
        flex) cases+=("${cuda_bins[0]:-$tch_bin} flex learner") ;;
        libtorch) [ -n "$tch_bin" ] && cases+=("$tch_bin libtorch learner") ;;
    esac
done
if [ -z "$cubecl_devices" ]; then
    for g in "${gpus[@]}"; do cubecl_devices+=" cuda:$g"; done
fi
for dev in $cubecl_devices; do
    for cuda_bin in "${cuda_bins[@]}"; do
        for inference in $inferences; do
            for cache in $caches; do cases+=("$cuda_bin $dev $inference $cache"); done
        done
    done
done
for g in "${gpus[@]}"; do
    if [ -n "$tch_bin" ]; then
        for inference in $inferences; do cases+=("$tch_bin libtorch-cuda:$g $inference"); done
    fi
done

gpu_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$1" 2>/dev/null | head -1; }

# What a CubeCL run's kernel log says (bench/kernel_log.py: kernels compiled, autotunes and the
# seconds they took, the last event); without python3, counts from grep.
kernel_summary() {
    [ -s "$1" ] || { echo "no kernel log"; return; }
    if command -v python3 >/dev/null 2>&1; then python3 "$here/kernel_log.py" --one-line "$1"; return; fi
    local compiled tuned last_compile last_line
    compiled="$(grep -c '\[Compiling kernel\]' "$1" || true)"
    tuned="$(grep -c ' Tuning ' "$1" || true)"
    last_compile="$(grep '\[Compiling kernel\]' "$1" | tail -1 | awk '{print $1}')"
    last_line="$(grep -E '^ *[0-9]+\.[0-9]+s ' "$1" | tail -1 | cut -c1-160)"
    echo "$compiled kernels compiled (last started at ${last_compile:-never}), $tuned autotunes; last log line: $last_line"
}

# Column of a metrics.csv by header name; mean over rows 2.. (the first update is warm-up).
csv_mean() {
    awk -F, -v key="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == key) c = i; next }
        NR > 2 && c { s += $c; n++ } END { if (n) printf "%.6f", s / n; else print "nan" }' "$1"
}

results=()
ref_sps=""
for c in "${cases[@]}"; do
    read -r bin dev inference cache <<< "$c"
    build="$(basename "$bin")"
    name="$build-$(echo "$dev" | tr ':' '-')-inference-$inference${cache:+-$cache}"
    label="$dev, inference on $inference"
    kernel_args=()
    case "$dev" in
        cuda*|wgpu*)
            label="$dev ($build), inference on $inference${cache:+, $cache cache}"
            # "shared": one cache per binary; "cold": an empty one per case, which "warm" reuses.
            cache_dir="$out/kernel-cache/$build"
            [ "$cache" != shared ] && cache_dir="$out/kernel-cache/$build-$(echo "$dev" | tr ':' '-')-$inference"
            [ "$cache" = cold ] && rm -rf "$cache_dir"
            kernel_args=(--kernel-log "$out/$name.kernels.log" --kernel-cache "$cache_dir") ;;
    esac
    log="$out/$name.log"
    gpu=""; case "$dev" in cuda:*|libtorch-cuda:*) gpu="${dev##*:}" ;; esac
    base=""; peak_file="$out/$name.mem"; : > "$peak_file"; poll=""
    if [ -n "$gpu" ]; then
        base="$(gpu_mem "$gpu")"
        ( while true; do gpu_mem "$gpu" >> "$peak_file"; sleep 0.5; done ) &
        poll=$!
    fi
    echo "== $label ($bin)"
    set +e
    t0="$(date +%s.%N)"
    timeout "$case_timeout" "$bin" --config "$config" --device "$dev" --max-updates "$updates" --runs-dir "$out/runs" \
        --run-name "$name" --quiet --set rollout.inference="$inference" "${kernel_args[@]}" "${sets[@]}" > "$log" 2>&1
    rc=$?
    wall="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')"
    set -e
    [ -n "$poll" ] && kill "$poll" 2>/dev/null && wait "$poll" 2>/dev/null || true
    if [ $rc -eq 124 ]; then
        lines="$(cat "$out/runs/$name/metrics.csv" 2>/dev/null | wc -l)"
        done_updates="$((lines > 1 ? lines - 1 : 0))"
        echo "   stopped after ${case_timeout}s with $done_updates of $updates updates done (log: $log)"
        [ ${#kernel_args[@]} -gt 0 ] && echo "   kernels: $(kernel_summary "$out/$name.kernels.log")"
        results+=("| $label | timed out ($done_updates/$updates updates in ${case_timeout}s) | | | | | | |")
        continue
    elif [ $rc -ne 0 ]; then
        # The error and its cause (lavapipe's harmless XDG_RUNTIME_DIR line left out).
        why="$(grep -v XDG_RUNTIME_DIR "$log" | grep -i -m1 -A3 'error\|panicked' | grep -v '^ *$\|^Caused by' | head -2 | tr -s ' \n' ' ')"
        echo "   failed or unavailable (exit $rc): ${why:0:300}"
        [ ${#kernel_args[@]} -gt 0 ] && echo "   kernels: $(kernel_summary "$out/$name.kernels.log")"
        results+=("| $label | unavailable | | | | | | |")
        continue
    fi
    csv="$out/runs/$name/metrics.csv"
    batch="$(grep -m1 -o '[0-9]* updates of [0-9]* transitions' "$log" | awk '{print $4}')"
    epochs="$(awk -F= '/^\[ppo\]/{s=1;next} /^\[/{s=0} s && $1 ~ /^update_epochs *$/ {gsub(/ /,"",$2); print $2}' "$out/runs/$name/config.toml")"
    rollout_s="$(csv_mean "$csv" time/rollout_seconds)"
    warmup_s="$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "time/rollout_seconds") r = i; if ($i == "time/learn_seconds") l = i }; next }
        NR == 2 { printf "%.1f", $r + $l }' "$csv")"
    learn_s="$(csv_mean "$csv" time/learn_seconds)"
    first_at="$(awk -F, -v wall="$wall" 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "time/rollout_seconds") r = i; if ($i == "time/learn_seconds") l = i }; next }
        NR > 2 { later += $r + $l } END { printf "%.1f", wall - later }' "$csv")"
    sps="$(awk -v b="$batch" -v r="$rollout_s" -v l="$learn_s" 'BEGIN { printf "%.0f", b / (r + l) }')"
    lsps="$(awk -v b="$batch" -v e="$epochs" -v l="$learn_s" 'BEGIN { printf "%.0f", b * e / l }')"
    mem="-"
    if [ -n "$gpu" ] && [ -s "$peak_file" ]; then
        peak="$(sort -n "$peak_file" | tail -1)"
        mem="$((peak - base)) MiB"
    fi
    [ -z "$gpu" ] && [ -z "$ref_sps" ] && ref_sps="$sps" ref_dev="$dev"
    speedup="$(awk -v s="$sps" -v r="$ref_sps" 'BEGIN { if (r > 0) printf "%.2fx", s / r; else print "-" }')"
    echo "   env-steps/s $sps, learner samples/s $lsps, rollout ${rollout_s}s + learning ${learn_s}s per update, GPU memory $mem, first update ${warmup_s}s, done ${first_at}s after the start"
    [ ${#kernel_args[@]} -gt 0 ] && echo "   kernels: $(kernel_summary "$out/$name.kernels.log")"
    results+=("| $label | $sps | $speedup | $lsps | $rollout_s / $learn_s | $mem | $warmup_s | $first_at |")
done

echo
echo "PPO + M3ixup ($(basename "$config")), $updates updates, first left out; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| device | env-steps/s | vs ${ref_dev:-CPU} | learner samples/s | s/update rollout / learning | GPU memory (peak - idle) | first update, s | first update done, s after start |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${results[@]}"
