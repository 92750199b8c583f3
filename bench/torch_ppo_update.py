"""Plain-PyTorch reference for the learning half of a PPO update (bench/gpu-libtorch.sh): the
network of configs/ppo-pendulum-m3ixup.toml, the same minibatch size and epochs, timed per update on a
CPU or a GPU. Needs torch and numpy only (the GPU machine has nothing else).

The network, as the Rust agent's (`pixel_trunk = "small"`, `joint = "shared-trunk"`,
`policy_input = "latent"`):
pixels  Conv(2->16, k8 s4) ReLU Conv(16->32, k4 s2) ReLU flatten (1152);  f_pixels = Linear(1152->64)
sound   Linear(12->64) Swish;                                              f_sound  = Linear(64->64)
joint   f_M = Linear(1152 + 64 -> 64) on the same trunk outputs
head    g = Linear(64->64) Swish Linear(64->10), L2-normalised: z_M, z_pixels, z_sound
actor   and critic: MLPs [64, 64] with tanh on z_M; a Gaussian policy with a learned log-std

One update = the rollout's transitions (num_envs x steps, pendulum-shaped: 3%-occupied binary
frames) copied from host memory to the device once, then `epochs` passes of shuffled minibatches:
clipped PPO loss + 0.5 value loss + aux_weight x the auxiliary loss, backward, gradient clipping
at 0.5, Adam. `--aux gmc` adds GMC's contrastive loss (sum over modalities of InfoNCE between z_M
and z_u, tau = 0.3): the contrastive core of the M3ixup loss, without its mixup terms, so the
Rust M3ixup update does more work per minibatch than this reference does. `--aux none` matches
`aux.kind = "none"`. Prints one JSON object; the first `--warmup` updates are left out.

    python bench/torch_ppo_update.py --device cuda [--aux gmc] [--num-envs 16 --steps 128]
        [--minibatch 256] [--epochs 4] [--updates 6] [--warmup 1] [--threads 1]
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MASKED = -1.0e9


class Agent(nn.Module):
    def __init__(self, img=(2, 60, 60), sound=12, feature=64, head=64, latent=10, hidden=64, action=1):
        super().__init__()
        c, h, w = img
        self.trunk = nn.Sequential(nn.Conv2d(c, 16, 8, 4), nn.ReLU(), nn.Conv2d(16, 32, 4, 2), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            conv_out = self.trunk(torch.zeros(1, c, h, w)).shape[1]
        self.sound = nn.Linear(sound, 64)
        self.f_pixels, self.f_sound = nn.Linear(conv_out, feature), nn.Linear(64, feature)
        self.f_joint = nn.Linear(conv_out + 64, feature)
        self.head = nn.Sequential(nn.Linear(feature, head), nn.SiLU(), nn.Linear(head, latent))
        self.actor = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                   nn.Linear(hidden, action))
        self.critic = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                    nn.Linear(hidden, 1))
        self.log_std = nn.Parameter(torch.zeros(action))

    def project(self, h):
        return F.normalize(self.head(h), dim=1)

    def forward(self, pixels, sound, unimodal):
        t_pix, t_snd = self.trunk(pixels), F.silu(self.sound(sound))
        z_m = self.project(self.f_joint(torch.cat([t_pix, t_snd], 1)))
        z_uni = [self.project(self.f_pixels(t_pix)), self.project(self.f_sound(t_snd))] if unimodal else []
        return z_m, z_uni


def info_nce(z_m, z_u, tau=0.3):
    n = 2 * z_m.shape[0]
    pos = (z_m * z_u).sum(1, keepdim=True) / tau
    z = torch.cat([z_m, z_u], 0)
    s = (z @ z.t()) / tau
    s = s.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), MASKED)
    return (torch.logsumexp(s, dim=1, keepdim=True) - torch.cat([pos, pos], 0)).mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--aux", choices=["none", "gmc"], default="gmc")
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--minibatch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--updates", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU work)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    n = args.num_envs * args.steps
    rng = np.random.default_rng(0)
    host = {  # one rollout's transitions, as the Rust learner receives them from the workers
        "pixels": (rng.random((n, 2, 60, 60)) < 0.03).astype(np.uint8),
        "sound": rng.standard_normal((n, 12)).astype(np.float32),
        "actions": rng.standard_normal((n, 1)).astype(np.float32),
        "logprobs": rng.standard_normal(n).astype(np.float32) - 1.0,
        "advantages": rng.standard_normal(n).astype(np.float32),
        "returns": rng.standard_normal(n).astype(np.float32),
    }
    agent = Agent().to(device)
    optim = torch.optim.Adam(agent.parameters(), lr=5e-4, eps=1e-5)

    def update():
        d = {k: torch.from_numpy(v).to(device, non_blocking=False) for k, v in host.items()}
        pixels = d["pixels"].float()
        for _ in range(args.epochs):
            order = torch.randperm(n, device=device)
            for start in range(0, n, args.minibatch):
                mb = order[start:start + args.minibatch]
                z_m, z_uni = agent(pixels[mb], d["sound"][mb], unimodal=args.aux == "gmc")
                mean, value = agent.actor(z_m), agent.critic(z_m).squeeze(1)
                dist = torch.distributions.Normal(mean, agent.log_std.exp())
                logprob = dist.log_prob(d["actions"][mb]).sum(1)
                ratio = (logprob - d["logprobs"][mb]).exp()
                adv = d["advantages"][mb]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
                v_loss = 0.5 * (value - d["returns"][mb]).square().mean()
                loss = pg + 0.5 * v_loss
                if z_uni:
                    loss = loss + sum(info_nce(z_m, z_u) for z_u in z_uni)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
                optim.step()
        return float(loss.detach())  # a host read-back ends the update, as the Rust metrics do

    seconds = []
    for i in range(args.warmup + args.updates):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        update()
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            seconds.append(time.perf_counter() - start)
    per_update = float(np.median(seconds))
    print(json.dumps({
        "learner": "pytorch", "torch": torch.__version__, "device": args.device,
        "gpu": torch.cuda.get_device_name(device) if cuda else None, "aux": args.aux,
        "transitions": n, "minibatch": args.minibatch, "epochs": args.epochs, "threads": torch.get_num_threads(),
        "update_seconds": seconds, "median_update_seconds": per_update,
        "learner_samples_per_sec": n * args.epochs / per_update,
    }))


if __name__ == "__main__":
    main()
