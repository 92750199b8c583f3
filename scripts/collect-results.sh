#!/usr/bin/env bash
# Copies the small result files of finished runs (config, metrics, learning curve, evaluation;
# not checkpoints: m3ixup::report::RESULT_FILES) into a results folder that is committed, and
# prints the folder's table, e.g.
#
#     scripts/collect-results.sh results/ppo-pendulum runs/m3ixup-s1 runs/none-s1 ...
#
# then `cargo run --release --bin report -- --results results/ppo-pendulum --readme README.md`.
# The same as `report --results DEST --collect RUN ...`, which it runs. Specialist runs
# (scripts/train-specialists.sh: runs/specialist-<modality>-s<seed>, evaluated alone) are
# collected the same way; `report` then compares the single-sensor rows with them.
set -euo pipefail
dest=$1; shift
collect=()
for run in "$@"; do collect+=(--collect "$run"); done
exec cargo run --manifest-path "$(dirname "$0")/../Cargo.toml" --release --quiet --bin report -- \
  --results "$dest" "${collect[@]}"
