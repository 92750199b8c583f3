#!/usr/bin/env bash
# PPO training throughput against Stable-Baselines3, in one run with the learners interleaved
# (README, "CPU learner speed"). For each thread count and round, in turn:
#   - ours, `bench ppo` on configs/ppo-pendulum-m3ixup.toml (PPO + M3ixup) and its `aux.kind=none`
#     variant, on flex (and on LibTorch CPU with --libtorch-bin);
#   - SB3 PPO on PyTorch with the same network, PPO settings and environment (bench/sb3_ppo.py).
# Then one table: the median env-steps/s of each learner and its ratio to SB3 at the same thread
# count. Every learner leaves its first update out (warm-up).
#
#     bench/ppo-vs-sb3.sh [--threads "1 2"] [--rounds 3] [--updates 5] [--libtorch-bin PATH]
#
# SB3 runs in a virtual environment outside the repository, made on first use and reused:
# $M3IXUP_SB3_VENV, default ~/.cache/m3ixup/venv-sb3 (torch 2.9.0 from PyPI, about 7 GB with
# the CUDA libraries its wheel links; stable-baselines3 2.7.0; our Python package, rebuilt with
# maturin on every run so it matches the tree). --libtorch-bin takes a `bench` binary built with
# `--features tch` (README, "Backends and devices"); without it the LibTorch row is left out.
#
# Threads: every learner uses exactly the given count: torch and LibTorch in their op pools,
# flex (burn's pure-Rust CPU backend, one thread per op) by splitting each minibatch's loss
# into as many row shards computed in parallel (`--threads`, README "CPU learner speed").
set -euo pipefail
cd "$(dirname "$0")/.."

threads="1 2"
rounds=3
updates=5
libtorch_bin=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --updates) updates="$2"; shift 2 ;;
        --libtorch-bin) libtorch_bin="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "ppo-vs-sb3: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

venv="${M3IXUP_SB3_VENV:-$HOME/.cache/m3ixup/venv-sb3}"
if ! "$venv/bin/python" -c "import torch, stable_baselines3, maturin" 2>/dev/null; then
    echo "ppo-vs-sb3: installing torch 2.9.0 and stable-baselines3 2.7.0 into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        "torch==2.9.0" "stable-baselines3==2.7.0" "gymnasium>=1.1" numpy "maturin>=1.9,<2"
fi
echo "ppo-vs-sb3: building our Python package into $venv and the bench binary" >&2
(cd python && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --release --quiet >&2)
cargo build --release --bin bench >&2

results="$(mktemp)"
trap 'rm -f "$results"' EXIT
for t in $threads; do
    for r in $(seq "$rounds"); do
        echo "ppo-vs-sb3: threads $t, round $r/$rounds" >&2
        # One process per learner and round; OMP/MKL pools sized like torch's.
        export OMP_NUM_THREADS="$t" MKL_NUM_THREADS="$t"
        target/release/bench ppo --config configs/ppo-pendulum-m3ixup.toml --variant aux.kind=none \
            --updates "$updates" --rounds 1 --threads "$t" --json \
            | sed "s/^{/{\"learner\":\"ours-flex\",\"threads\":$t,/" >> "$results"
        if [[ -n "$libtorch_bin" ]]; then
            "$libtorch_bin" ppo --config configs/ppo-pendulum-m3ixup.toml --variant aux.kind=none \
                --updates "$updates" --rounds 1 --device libtorch --threads "$t" --json \
                | sed "s/^{/{\"learner\":\"ours-libtorch\",\"threads\":$t,/" >> "$results"
        fi
        "$venv/bin/python" bench/sb3_ppo.py --threads "$t" --updates "$updates" >> "$results"
    done
done

python3 - "$results" "$rounds" "$updates" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rounds, updates = sys.argv[2], sys.argv[3]
def key(r):
    if r["learner"] == "sb3":
        return (r["threads"], "sb3", "aux.kind=none")  # SB3 has no auxiliary loss
    config = "PPO + M3ixup (ppo-pendulum-m3ixup.toml)" if r["config"] == "the config" else r["config"]
    return (r["threads"], r["learner"], config)
groups = {}
for r in rows:
    groups.setdefault(key(r), []).append(r["env_steps_per_sec"])
print(f"PPO env-steps/s on the multimodal pendulum, {rounds} interleaved round(s) of {updates} updates "
      "per learner (the first left out); median (min-max) over rounds")
print()
print("| threads | learner | config | env-steps/s | vs SB3 (no aux) |")
print("|---:|---|---|---:|---:|")
for (t, learner, config), v in sorted(groups.items()):
    sb3 = statistics.median(groups[(t, "sb3", "aux.kind=none")])
    m = statistics.median(v)
    name = {"ours-flex": "ours, flex", "ours-libtorch": "ours, LibTorch CPU", "sb3": "SB3 on PyTorch"}[learner]
    print(f"| {t} | {name} | {config} | {m:,.0f} ({min(v):,.0f}-{max(v):,.0f}) | {m / sb3:.2f}x |")
PY
