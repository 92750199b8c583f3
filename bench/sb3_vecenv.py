"""Stable-Baselines3 collecting from the Rust vector environment (``m3ixup.sb3.RustVecEnv``)
against SB3's own ``DummyVecEnv`` of the same environments (``gym.make("m3ixup/<name>")``), in
one process: env-steps/s of the bare ``VecEnv.step`` with random actions, and of PPO's
``collect_rollouts`` (policy forward passes included, torch on one thread).

    python bench/sb3_vecenv.py [--env multimodal-pendulum] [--num-envs 16] [--seconds 3] [--json]

Needs stable-baselines3 and the m3ixup package in the running Python (README, Python).
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

import m3ixup  # noqa: F401  (registers m3ixup/<name>)
from m3ixup.sb3 import RustVecEnv


def step_rate(venv, seconds: float) -> float:
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    space = venv.action_space
    actions = [np.stack([space.sample() for _ in range(venv.num_envs)]) for _ in range(64)]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        venv.step(actions[rng.integers(len(actions))])
        steps += venv.num_envs
    return steps / (time.perf_counter() - start)


def collect_rate(venv, n_steps: int, rounds: int) -> float:
    model = PPO("MultiInputPolicy", venv, n_steps=n_steps, batch_size=256, seed=0, verbose=0)
    _, callback = model._setup_learn(total_timesteps=10**9, callback=None)
    callback.on_training_start(locals(), globals())
    model.collect_rollouts(venv, callback, model.rollout_buffer, n_rollout_steps=n_steps)  # warm-up
    start = time.perf_counter()
    for _ in range(rounds):
        model.collect_rollouts(venv, callback, model.rollout_buffer, n_rollout_steps=n_steps)
    return rounds * n_steps * venv.num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="multimodal-pendulum")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--n-steps", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # 0..255 pixels: SB3 gives them its CNN, as a user of SB3 would run it.
    params = {"pixel_value": 255} if args.env == "multimodal-pendulum" else {}
    n = args.num_envs
    makers = {
        "DummyVecEnv (gym.make each)": lambda: DummyVecEnv([lambda: gym.make(f"m3ixup/{args.env}", params=params)] * n),
        "RustVecEnv, inline": lambda: RustVecEnv(args.env, num_envs=n, params=params),
        "RustVecEnv, 2 worker threads": lambda: RustVecEnv(args.env, num_envs=n, workers=2, params=params),
    }
    rows = []
    for label, make in makers.items():
        rows.append(
            {
                "vec_env": label,
                "step_env_steps_per_s": step_rate(make(), args.seconds),
                "ppo_collect_env_steps_per_s": collect_rate(make(), args.n_steps, args.rounds),
            }
        )
    base = rows[0]
    for r in rows:
        r["step_vs_dummy"] = r["step_env_steps_per_s"] / base["step_env_steps_per_s"]
        r["collect_vs_dummy"] = r["ppo_collect_env_steps_per_s"] / base["ppo_collect_env_steps_per_s"]
    if args.json:
        print(json.dumps({"env": args.env, "num_envs": n, "rows": rows}, indent=2))
        return
    print(f"{args.env}, {n} environments, torch on 1 thread")
    print("| vec env | VecEnv.step env-steps/s | vs DummyVecEnv | PPO collect_rollouts env-steps/s | vs DummyVecEnv |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['vec_env']} | {r['step_env_steps_per_s']:,.0f} | {r['step_vs_dummy']:.2f}x "
            f"| {r['ppo_collect_env_steps_per_s']:,.0f} | {r['collect_vs_dummy']:.2f}x |"
        )


if __name__ == "__main__":
    main()
