#!/usr/bin/env bash
# Trains the specialists of a config, configs/<base>-specialist-<modality>.toml (the base config
# on one sensor, no auxiliary loss), for each seed given, then evaluates each alone, so that its
# run folder is ready for `evaluate --specialist` and, once collected, for `report`:
#
#     scripts/train-specialists.sh 1 2 3                    # the pendulum's: pixels and sound
#     scripts/train-specialists.sh --runs-dir runs --set train.total_steps=4096 1   # a quick check
#     scripts/train-specialists.sh 1 2 3 -- --episodes 100 --steps 300 --score per-step
#     scripts/train-specialists.sh --base ppo-reacher --set train.total_steps=200000 1 2
#
# `--base` names the configs (default ppo-pendulum; ppo-reacher and ppo-cartpole have theirs).
# Runs: <runs-dir>/specialist-<modality>-s<seed>. `--set` is passed to every `train`; what
# follows `--` replaces the evaluation's arguments (default: `--score per-step` for the
# pendulum, as the README's pendulum tables; evaluate's own defaults for the others). A finished
# run is kept (delete it to retrain) and so is its evaluation (delete its eval/ to evaluate
# again); an interrupted run resumes from its last checkpoint. Every command is printed before it runs. Then, e.g.:
#
#     target/release/evaluate --checkpoint runs/m3ixup-s1 --score per-step \
#         --specialist pixels=runs/specialist-pixels-s1 --specialist sound=runs/specialist-sound-s1
#     scripts/collect-results.sh results/ppo-pendulum runs/specialist-*-s*
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: $0 [--base CONFIG_NAME] [--runs-dir DIR] [--set SECTION.KEY=VALUE]... SEED... [-- EVALUATE_ARGS...]" >&2
  exit 2
}

base=ppo-pendulum
runs=runs
sets=()
seeds=()
eval_args=()
eval_args_given=false
while [[ $# -gt 0 ]]; do
  case "$1" in
    --base) [[ $# -ge 2 ]] || usage; base=$2; shift 2 ;;
    --runs-dir) [[ $# -ge 2 ]] || usage; runs=$2; shift 2 ;;
    --set) [[ $# -ge 2 ]] || usage; sets+=(--set "$2"); shift 2 ;;
    --) shift; eval_args=("$@"); eval_args_given=true; break ;;
    -h|--help) usage ;;
    *)
      [[ "$1" =~ ^[0-9]+$ ]] || { echo "$0: \`$1\` is not a seed (a whole number)" >&2; usage; }
      seeds+=("$1"); shift ;;
  esac
done
[[ ${#seeds[@]} -gt 0 ]] || { echo "$0: no seed given" >&2; usage; }
if [[ $eval_args_given == false && $base == ppo-pendulum ]]; then eval_args=(--score per-step); fi

modalities=()
for config in configs/"$base"-specialist-*.toml; do
  [[ -f "$config" ]] || { echo "$0: no configs/$base-specialist-<modality>.toml (is --base right?)" >&2; exit 2; }
  modality=${config#configs/"$base"-specialist-}
  modalities+=("${modality%.toml}")
done

run() { # prints a command, then runs it
  echo "+ $*"
  "$@"
}

run cargo build --release --bin train --bin evaluate

for seed in "${seeds[@]}"; do
  for modality in "${modalities[@]}"; do
    name=specialist-$modality-s$seed
    dir=$runs/$name
    if [[ -f "$dir/learning_curve.png" ]]; then
      echo "== $name: finished run found in $dir"
      if [[ -f "$dir/eval/eval.json" ]]; then
        echo "== $name: evaluation found in $dir/eval (delete it to evaluate again)"
        continue
      fi
    elif [[ -f "$dir/checkpoint.toml" ]]; then
      echo "== $name: resuming $dir"
      run target/release/train --resume "$dir"
    else
      rm -rf "$dir"
      run target/release/train --config "configs/$base-specialist-$modality.toml" \
        --set "train.seed=$seed" ${sets[@]+"${sets[@]}"} --runs-dir "$runs" --run-name "$name"
    fi
    run target/release/evaluate --checkpoint "$dir" ${eval_args[@]+"${eval_args[@]}"} --out "$dir/eval"
  done
done
