#!/usr/bin/env bash
# Copies the small result files of finished runs (config, metrics, learning curve, evaluation;
# not checkpoints) into a results folder that is committed, e.g.
#
#     scripts/collect-results.sh results/ppo-pendulum runs/m3ixup-s1 runs/none-s1 ...
#
# then `cargo run --release --bin report -- --results results/ppo-pendulum --readme README.md`.
# Specialist runs (scripts/train-specialists.sh: runs/specialist-<modality>-s<seed>, evaluated
# alone) are collected the same way; `report` then compares the single-sensor rows with them.
set -euo pipefail
dest=$1; shift
for run in "$@"; do
  name=$(basename "$run")
  mkdir -p "$dest/$name/eval"
  for f in config.toml metrics.csv learning_curve.png; do
    [[ -f "$run/$f" ]] && cp "$run/$f" "$dest/$name/$f"
  done
  for f in eval.md eval.csv eval.json dropout.png; do
    [[ -f "$run/eval/$f" ]] && cp "$run/eval/$f" "$dest/$name/eval/$f"
  done
  echo "$run -> $dest/$name"
done
