#!/usr/bin/env bash
# The main config trained with 2 PPO learner threads (flex, `--threads 2`), 5 seeds, one run at
# a time on the 2 cores; each evaluated with the main table's protocol; then the table here.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bin train --bin evaluate --bin report
runs=runs/threads
for seed in 1 2 3 4 5; do
    name=threads2-s$seed
    rm -rf "$runs/$name"
    target/release/train --config configs/ppo-pendulum.toml --set train.seed=$seed --threads 2 \
        --runs-dir "$runs" --run-name "$name" --quiet
    target/release/evaluate --checkpoint "$runs/$name" --score per-step --out "$runs/$name/eval" --quiet
done
target/release/report --results results/ppo-pendulum-threads \
    $(for seed in 1 2 3 4 5; do echo --collect "$runs/threads2-s$seed"; done)
