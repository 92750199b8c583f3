#!/usr/bin/env bash
# The main job: train PPO + M3ixup on the multimodal pendulum (configs/ppo-pendulum.toml: a fixed
# joint target, an annealed weight, training-time sensor dropout), then print the sensor-failure
# table for it and for the baselines whose runs exist.
#
#     scripts/main.sh                 # runs/ppo-pendulum, then its evaluation
#     scripts/main.sh --baselines     # also trains the four baselines first (5x the time)
#
# Run names are fixed so a second call reuses finished runs (delete runs/<name> to retrain) and
# resumes an interrupted one from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin train --bin evaluate
runs=runs
variants=(ppo-pendulum)
if [[ "${1:-}" == "--baselines" ]]; then
  variants+=(ppo-pendulum-m3ixup ppo-pendulum-gmc ppo-pendulum-none ppo-pendulum-dropout)
fi

train() { # name
  local dir="$runs/$1"
  if [[ -f "$dir/learning_curve.png" ]]; then
    echo "== $1: finished run found in $dir"
  elif [[ -f "$dir/checkpoint.toml" ]]; then
    echo "== $1: resuming $dir"
    target/release/train --resume "$dir"
  else
    rm -rf "$dir"
    target/release/train --config "configs/$1.toml" --runs-dir "$runs" --run-name "$1"
  fi
}

for v in "${variants[@]}"; do train "$v"; done

args=()
for v in ppo-pendulum ppo-pendulum-m3ixup ppo-pendulum-gmc ppo-pendulum-none ppo-pendulum-dropout; do
  if [[ -f "$runs/$v/checkpoint.toml" ]]; then
    label=${v#ppo-pendulum}; label=${label#-}
    args+=(--checkpoint "$runs/$v" --label "${label:-main}")
  fi
done
# The pendulum's episodes all last 300 steps: the README's tables give the mean per-step reward.
target/release/evaluate "${args[@]}" --score per-step --out "$runs/ppo-pendulum/eval"
