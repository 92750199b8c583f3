#!/usr/bin/env bash
# What a local Ray sweep costs over running the same trials back to back with the binaries
# (README, "Many runs: sweeps on Ray"). The same trials (variants x seeds of the M3ixup config,
# shortened), each trained and evaluated, then the results table, three ways:
#
# 1. back to back: `train`, then `evaluate`, per trial, then `report` (release binaries);
# 2. `python -m m3ixup.sweep --cpus-per-trial 2`: one trial at a time, as in 1, so that the
#    difference is the sweep's own cost (Ray's start, Tune, every metrics row reported);
# 3. `python -m m3ixup.sweep --cpus-per-trial 1`: two trials at a time on the 2 cores.
#
#     bench/sweep-overhead.sh [--steps 20480] [--seeds 2] [--out /tmp/m3ixup-sweep-bench]
#
# Needs the release binaries (cargo build --release --bin train --bin evaluate --bin report) and
# the extension built in release (cd python && maturin develop --release) in the active Python
# environment, with ray[tune] (pip install "./python[sweep]"). Prints each wall time and its
# ratio to 1.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=20480 seeds=2 out=/tmp/m3ixup-sweep-bench
while [[ $# -gt 0 ]]; do
  case $1 in
    --steps) steps=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
variants=(m3ixup=configs/ppo-pendulum-m3ixup.toml none=configs/ppo-pendulum-none.toml)
eval_args=(--score per-step --episodes 10 --steps 200)
rm -rf "$out"; mkdir -p "$out"
now() { date +%s.%N; }

start=$(now)
for v in "${variants[@]}"; do
  name=${v%%=*} config=${v#*=}
  for seed in $(seq 1 "$seeds"); do
    target/release/train --config "$config" --set "train.total_steps=$steps" --set "train.seed=$seed" \
      --runs-dir "$out/binaries" --run-name "$name-s$seed" --quiet >/dev/null
    target/release/evaluate --checkpoint "$out/binaries/$name-s$seed" --label "$name" "${eval_args[@]}" \
      --out "$out/binaries/$name-s$seed/eval" >/dev/null
  done
done
target/release/report --results "$out/binaries" >/dev/null
binaries=$(python3 -c "print($(now) - $start)")

sweep() { # cpus-per-trial folder
  local start; start=$(now)
  python -m m3ixup.sweep "${variants[@]}" --seeds "$seeds" --set "train.total_steps=$steps" --cpus 2 \
    --cpus-per-trial "$1" --eval-score per-step --eval-episodes 10 --eval-steps 200 --out "$out/$2" --quiet \
    >"$out/$2.log" 2>&1 || { tail -20 "$out/$2.log"; exit 1; }
  python3 -c "print($(now) - $start)"
}
one_at_a_time=$(sweep 2 sweep-serial)
two_at_a_time=$(sweep 1 sweep-parallel)

# The sweeps' runs must be the binaries' (same seeds, same metrics but the time columns).
python3 - "$out" <<'EOF'
import csv, sys, pathlib
out = pathlib.Path(sys.argv[1])
def rows(p):
    with open(p) as f:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)]
for run in sorted((out / "binaries").glob("*-s*")):
    for sweep in ("sweep-serial", "sweep-parallel"):
        if rows(run / "metrics.csv") != rows(out / sweep / run.name / "metrics.csv"):
            sys.exit(f"{sweep}/{run.name}: metrics differ from the binary's run")
print(f"metrics: every sweep run equals the binary's run of the same seed")
EOF
trials=$(( ${#variants[@]} * seeds ))
python3 - "$binaries" "$one_at_a_time" "$two_at_a_time" "$trials" "$steps" <<'EOF'
import sys
b, s1, s2 = map(float, sys.argv[1:4])
print(f"{sys.argv[4]} trials of {sys.argv[5]} env steps (PPO on the multimodal pendulum), each trained and evaluated, then the table:")
print(f"  back to back with the binaries:      {b:7.1f} s  1.00")
print(f"  sweep, one trial at a time:          {s1:7.1f} s  {s1 / b:.2f}  (overhead {100 * (s1 / b - 1):+.1f}% of wall time)")
print(f"  sweep, two trials at a time:         {s2:7.1f} s  {s2 / b:.2f}")
EOF
