"""Throughput from Python: m3ixup's Rust vector environment against Gymnasium's SyncVectorEnv.

    python bench/python_vector.py [--num-envs 8] [--seconds 2]

For each built-in environment it steps, with random actions drawn beforehand:
  - gymnasium.vector.SyncVectorEnv over `num_envs` copies of `m3ixup/<name>` (the same Rust
    environment, one Python call per sub-environment and step, batched by Gymnasium),
  - m3ixup.VectorEnv inline (workers=0) and on 2 threads (workers=2): one Python call per step.
Then the pendulum state alone: Gymnasium's own Pendulum-v1 (numpy) in SyncVectorEnv against
multimodal-pendulum with only `proprio` (the same dynamics) in m3ixup.VectorEnv.
Prints a Markdown table of environment steps per second (batch steps x num_envs).
"""

import argparse
import time

import gymnasium as gym
import numpy as np

import m3ixup


def measure(venv, seconds, rng):
    venv.reset(seed=0)
    space = venv.action_space
    space.seed(int(rng.integers(1 << 31)))
    actions = [space.sample() for _ in range(256)]
    for a in actions[:20]:  # warm-up
        venv.step(a)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions[:64]:
            venv.step(a)
        steps += 64
    elapsed = time.perf_counter() - start
    return steps * venv.num_envs / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    n, seconds = args.num_envs, args.seconds
    rng = np.random.default_rng(0)
    same_step = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    rows = []
    for name in m3ixup.registered_names():
        sync = gym.vector.SyncVectorEnv([lambda name=name: gym.make(f"m3ixup/{name}") for _ in range(n)], **same_step)
        base = measure(sync, seconds, rng)
        inline = measure(m3ixup.VectorEnv(name, num_envs=n, workers=0), seconds, rng)
        threads = measure(m3ixup.VectorEnv(name, num_envs=n, workers=2), seconds, rng)
        rows.append((name, f"SyncVectorEnv of m3ixup/{name}", base, inline, threads))

    sync = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1") for _ in range(n)], **same_step)
    base = measure(sync, seconds, rng)
    state_only = {"pixels": False, "sound": False, "proprio": True, "frame_stack": 1}
    inline = measure(m3ixup.VectorEnv("multimodal-pendulum", num_envs=n, workers=0, params=state_only), seconds, rng)
    threads = measure(m3ixup.VectorEnv("multimodal-pendulum", num_envs=n, workers=2, params=state_only), seconds, rng)
    rows.append(("pendulum state only", "SyncVectorEnv of Gymnasium's Pendulum-v1", base, inline, threads))

    print(f"num_envs = {n}, {seconds} s per measurement; environment steps per second")
    print()
    print("| environment | Gymnasium baseline | baseline | m3ixup.VectorEnv inline | m3ixup.VectorEnv 2 threads | inline / baseline |")
    print("|---|---|---:|---:|---:|---:|")
    for name, what, base, inline, threads in rows:
        print(f"| {name} | {what} | {base:,.0f} | {inline:,.0f} | {threads:,.0f} | {inline / base:.1f}x |")


if __name__ == "__main__":
    main()
