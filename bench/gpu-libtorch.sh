#!/usr/bin/env bash
# The LibTorch CUDA benchmark (README, "GPU figures"): one run on a GPU machine that has the
# NVIDIA driver and a pip torch (no cargo, no network), from a `train` binary built elsewhere
# with the `tch` feature against the same torch version:
#
#   scripts/build-gpu-bench.sh --features tch --torch-version 2.11.0      # here: gpu-bench/train-tch.gz
#   bench/gpu-libtorch.sh --tch-bin gpu-bench/train-tch.gz                 # on the GPU machine
#       [--libtorch DIR] [--python python3] [--updates 8] [--case-timeout 100] [--cpu-devices ""]
#       [--out DIR] [--quick] [--budget 510]
#
# --libtorch: the torch/lib folder to load LibTorch from (default: that of `--python`'s torch);
#   it goes in LD_LIBRARY_PATH, which the loader searches before the binary's RUNPATH (the build
#   machine's path).
# --cpu-devices "flex libtorch": also run the CPU cases (for trying the script on a CPU machine;
#   on the GPU machine, CPU time is better spent elsewhere).
# --quick: 3 updates per case and the smallest batch sizes only (a try-out of the script).
# --budget: seconds for the whole run (default 510, inside a 9-minute GPU slot): each case is
#   capped by --case-timeout and by its share of what is left.
#
# What it runs, in this order (each case stopped after --case-timeout seconds):
# 1. The PyTorch reference (bench/torch_ppo_update.py): the learning half of a PPO update with
#    the same network, minibatch and epochs, on the GPU, with GMC's contrastive loss (the core of
#    the M3ixup loss) and without an auxiliary loss; and at the GPU-sized batch.
# 2. bench/gpu.sh with the `tch` binary on libtorch-cuda:N: the M3ixup config (PPO + M3ixup) and
#    `aux.kind = "none"`, each with `rollout.inference` on the GPU and on a CPU copy; then the
#    GPU-sized configs (64, 256 and 1,024 environments on all cores, minibatches 1,024, 4,096
#    and 8,192).
# 3. A table: env-steps/s, learning seconds per update against PyTorch's, time to first update.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

tch_bin="" libtorch="" python="python3" updates=8 case_timeout=100 cpu_devices="" out="" quick=0 budget=510
usage() { sed -n '2,27p' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --tch-bin) tch_bin="$2"; shift 2 ;;
        --libtorch) libtorch="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        --updates) updates="$2"; shift 2 ;;
        --case-timeout) case_timeout="$2"; shift 2 ;;
        --cpu-devices) cpu_devices="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        --budget) budget="$2"; shift 2 ;;  # seconds for the whole run (default 510: inside a 9-minute slot)
        -h|--help) usage 0 ;;
        *) echo "unknown argument $1" >&2; usage 2 ;;
    esac
done
[ -n "$tch_bin" ] || { echo "give --tch-bin (a train binary built with --features tch)" >&2; exit 2; }
[ -f "$tch_bin" ] || { echo "--tch-bin $tch_bin: no such file" >&2; exit 2; }
[ "$quick" = 1 ] && updates=3
out="${out:-$(mktemp -d /tmp/m3ixup-gpu-libtorch.XXXXXX)}"
mkdir -p "$out"
if [ -z "$libtorch" ]; then
    libtorch="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
fi
[ -f "$libtorch/libtorch_cpu.so" ] || { echo "--libtorch $libtorch: no libtorch_cpu.so there" >&2; exit 2; }

# The whole run stays inside --budget seconds: each case gets the smaller of --case-timeout and
# its share of what is left, and a case with under 15 s left is skipped (and said so).
deadline=$(( $(date +%s) + budget ))
cap() {  # cap CASES: the timeout for each of CASES cases, or 0 when there is no time left
    local left=$(( deadline - $(date +%s) )) per cases=$(( $1 > 0 ? $1 : 1 ))
    per=$(( left / cases )); [ "$per" -gt "$case_timeout" ] && per="$case_timeout"
    [ "$per" -lt 15 ] && per=0
    echo "$per"
}

torch_device=cpu
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && torch_device=cuda
echo "torch: $("$python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)'), libtorch from $libtorch"
echo "PyTorch reference device: $torch_device; runs under $out"

# Batch sizes: (environments, minibatch). The M3ixup config's 16 x 128 steps, minibatch 256; then
# GPU-sized ones on every core.
sizes="16:256 64:1024 256:4096 1024:8192"
[ "$quick" = 1 ] && sizes="16:256"
workers="$(nproc)"

# 1. PyTorch reference, per batch size and auxiliary loss.
mkdir -p "$out/pytorch"
for size in $sizes; do
    envs="${size%%:*}" minibatch="${size##*:}"
    for aux in gmc none; do
        [ "$envs" != 16 ] && [ "$aux" = none ] && continue
        f="$out/pytorch/envs-$envs-aux-$aux.json"
        echo "== PyTorch reference: $envs environments x 128 steps, minibatch $minibatch, aux $aux"
        t="$(cap 1)"; [ "$t" = 0 ] && { echo "   skipped: the --budget of ${budget}s is spent"; continue; }
        timeout "$t" "$python" "$here/torch_ppo_update.py" --device "$torch_device" --aux "$aux" \
            --num-envs "$envs" --minibatch "$minibatch" --updates "$updates" > "$f" 2> "$f.err" \
            || echo "   failed (exit $?): $(tail -1 "$f.err")"
    done
done

# 2. Our learner, through bench/gpu.sh.
case_args=(--tch-bin "$tch_bin" --libtorch "$libtorch" --updates "$updates" --cpu-devices "$cpu_devices")
# Cases left, for each call's share of the budget: per GPU, two inference settings for the main
# config and one for a GPU-sized config; plus the CPU devices in every call.
gpus="$(nvidia-smi -L 2>/dev/null | wc -l)" cpus="$(echo $cpu_devices | wc -w)"
left_cases=$(( 2 * (2 * gpus + cpus) + ($(echo $sizes | wc -w) - 1) * (gpus + cpus) ))
run_cases() {  # run_cases N gpu.sh-arguments...: N cases, each capped by its share of the budget
    local n="$1" t; shift
    t="$(cap "$left_cases")"; left_cases=$(( left_cases - n ))
    [ "$t" = 0 ] && { echo "   skipped: the --budget of ${budget}s is spent"; return; }
    "$here/gpu.sh" "${case_args[@]}" --case-timeout "$t" "$@"
}
for size in $sizes; do
    envs="${size%%:*}" minibatch="${size##*:}"
    if [ "$envs" = 16 ]; then
        for aux in m3ixup none; do
            echo; echo "#### M3ixup config, aux.kind = $aux"
            run_cases $(( 2 * gpus + cpus )) --set aux.kind="$aux" --out "$out/envs-16-aux-$aux"
        done
    else
        echo; echo "#### GPU-sized: $envs environments on $workers workers, minibatch $minibatch, aux.kind = m3ixup"
        # A total far beyond the updates run: the M3ixup config's would end a big batch's run after one.
        run_cases $(( gpus + cpus )) --inference learner --set rollout.num_envs="$envs" \
            --set rollout.workers="$workers" --set ppo.minibatch_size="$minibatch" \
            --set train.total_steps=100000000 --out "$out/envs-$envs-aux-m3ixup"
    fi
done

# 3. Our learning seconds per update against PyTorch's, from the run directories and the JSONs.
echo
"$python" - "$out" <<'PY'
import csv, glob, json, os, statistics, sys

out = sys.argv[1]
print("| case | device, inference | first update, s | env-steps/s | learning s/update | PyTorch s/update | PyTorch / ours |")
print("|---|---|---:|---:|---:|---:|---:|")
for run in sorted(glob.glob(os.path.join(out, "envs-*", "runs", "*"))):
    case = os.path.basename(os.path.dirname(os.path.dirname(run)))  # envs-N-aux-K
    with open(os.path.join(run, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    if len(rows) < 2:
        continue
    batch = float(rows[1]["global_step"]) - float(rows[0]["global_step"])
    first = float(rows[0]["time/rollout_seconds"]) + float(rows[0]["time/learn_seconds"])
    rows = rows[1:]  # the first update is warm-up
    learn = statistics.mean(float(r["time/learn_seconds"]) for r in rows)
    rollout = statistics.mean(float(r["time/rollout_seconds"]) for r in rows)
    sps = batch / (learn + rollout)
    envs, aux = case.split("-")[1], case.split("-")[3]
    ref_file = os.path.join(out, "pytorch", f"envs-{envs}-aux-{'gmc' if aux == 'm3ixup' else 'none'}.json")
    ref = json.load(open(ref_file)) if os.path.exists(ref_file) and os.path.getsize(ref_file) else None
    ref_s = ref["median_update_seconds"] if ref else float("nan")
    name = os.path.basename(run).replace("train-tch-", "").replace("-inference-", ", inference on ")
    print(f"| {case} | {name} | {first:.1f} | {sps:.0f} | {learn:.3f} | {ref_s:.3f} | {ref_s / learn:.2f}x |")
PY
