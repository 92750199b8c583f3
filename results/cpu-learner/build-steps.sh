#!/usr/bin/env bash
# Builds `bench` at each step of the CPU-speed work, for one interleaved comparison.
set -euo pipefail
cd /work/main
mk() { # name commit [patch-cmd]
  local dir=/tmp/wt-$1
  rm -rf "$dir"; git worktree add -f -q "$dir" "$2"
  if [[ -n "${3:-}" ]]; then (cd "$dir" && eval "$3"); fi
  (cd "$dir" && CARGO_TARGET_DIR=/work/main/target cargo build --release --bin bench -q)
  cp /work/main/target/release/bench /tmp/hist-$1
  git worktree remove --force "$dir"
}
mk 0-baseline 5eac935
mk 1-rows-malloc 78ede0c "sed -i 's/terms.push((LossTerm::Input, input_mixup_loss_from_first_layers(encoder, first, z_m.clone(), draws.lambda, \&draws.perm, tau)));/terms.push((LossTerm::Input, input_mixup_loss(encoder, batch, z_m.clone(), draws.lambda, \&draws.perm, tau)));/' agents/src/losses.rs && grep -q 'input_mixup_loss(encoder, batch' agents/src/losses.rs"
mk 2-first-layer-lin 78ede0c
mk 3-sparse $(git rev-parse HEAD~1)
mk 4-contrastive $(git rev-parse HEAD)
echo done
