"""Stable-Baselines3 PPO with the network and PPO settings of configs/ppo-pendulum-m3ixup.toml, on our
multimodal pendulum through our Python package: the reference of bench/ppo-vs-sb3.sh.

The network, as the Rust agent's with `policy_input = "latent"` (README, "CPU learner speed"):
pixels  Conv(2->16, k8 s4) ReLU Conv(16->32, k4 s2) ReLU flatten (1152)
sound   Linear(12->64) Swish
joint   Linear(1152 + 64 -> 64)              (f_M of `joint = "shared-trunk"`)
head    Linear(64->64) Swish Linear(64->10), L2-normalised   (g: the latent z)
actor   and critic: MLPs [64, 64] with tanh on z (SB3's default activation; ours too)
No auxiliary loss (SB3 has none): the counterpart of `aux.kind = "none"`.

PPO: 16 environments x 128 steps, minibatch 256, 4 epochs, Adam lr 5e-4, gamma 0.9, lambda 0.95,
clip 0.2, max grad norm 0.5. Env-steps/s counts every update but the first (warm-up), as
`bench ppo` does. Prints one JSON object.

    python bench/sb3_ppo.py --threads 1 [--updates 4]
"""
import argparse
import json
import time

import gymnasium as gym
import torch
import torch.nn as nn
import torch.nn.functional as F
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv

import m3ixup  # noqa: F401  (registers m3ixup/<name> with Gymnasium)

NUM_ENVS, STEPS = 16, 128
ENV_PARAMS = {"pixels": True, "sound": True, "proprio": False, "max_episode_steps": 200}


class SmallTrunkEncoder(BaseFeaturesExtractor):
    """The Rust encoder's path to z for complete observations (see the module docstring)."""

    def __init__(self, observation_space, feature_dim=64, head_hidden=64, latent_dim=10):
        super().__init__(observation_space, features_dim=latent_dim)
        c, h, w = observation_space["pixels"].shape
        self.pixels = nn.Sequential(
            nn.Conv2d(c, 16, 8, 4), nn.ReLU(), nn.Conv2d(16, 32, 4, 2), nn.ReLU(), nn.Flatten()
        )
        with torch.no_grad():
            conv_out = self.pixels(torch.zeros(1, c, h, w)).shape[1]
        self.sound = nn.Linear(observation_space["sound"].shape[0], 64)
        self.joint = nn.Linear(conv_out + 64, feature_dim)
        self.head = nn.Sequential(nn.Linear(feature_dim, head_hidden), nn.SiLU(), nn.Linear(head_hidden, latent_dim))

    def forward(self, obs):
        # Pixels are 0/1 (uint8 in the space, floats here): the Rust trunk's input scale is 1.
        h = torch.cat([self.pixels(obs["pixels"]), F.silu(self.sound(obs["sound"]))], dim=1)
        return F.normalize(self.head(self.joint(h)), dim=1)


class UpdateClock(BaseCallback):
    """The wall-clock time at the start of every rollout (one per PPO update)."""

    def __init__(self):
        super().__init__()
        self.starts = []

    def _on_rollout_start(self):
        self.starts.append(time.perf_counter())

    def _on_step(self):
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--updates", type=int, default=4, help="PPO updates (the first is warm-up)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.updates < 2:
        ap.error("--updates must be at least 2 (the first is warm-up)")
    torch.set_num_threads(args.threads)

    envs = DummyVecEnv(
        [lambda: gym.make("m3ixup/multimodal-pendulum", params=ENV_PARAMS) for _ in range(NUM_ENVS)]
    )
    model = PPO(
        "MultiInputPolicy",
        envs,
        learning_rate=lambda progress: 5e-4 * progress,  # annealed to 0, as anneal_lr
        n_steps=STEPS,
        batch_size=256,
        n_epochs=4,
        gamma=0.9,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs=dict(
            features_extractor_class=SmallTrunkEncoder,
            net_arch=dict(pi=[64, 64], vf=[64, 64]),
            activation_fn=nn.Tanh,
        ),
        seed=args.seed,
        device="cpu",
        verbose=0,
    )
    clock = UpdateClock()
    batch = NUM_ENVS * STEPS
    model.learn(total_timesteps=args.updates * batch, callback=clock)
    end = time.perf_counter()
    marks = clock.starts[1:] + [end]  # every update after the first, start to start
    seconds = [b - a for a, b in zip(marks, marks[1:])]
    print(
        json.dumps(
            {
                "learner": "sb3",
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "env_steps_per_sec": batch * len(seconds) / sum(seconds),
                "update_seconds": seconds,
                "parameters": sum(p.numel() for p in model.policy.parameters()),
            }
        )
    )


if __name__ == "__main__":
    main()
