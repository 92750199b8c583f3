"""PyTorch reference for `bench encoders --gmc-only`: GMC's encoder (docs/M3IXUP.md section 1; the
Rust `EncoderConfig::default()`) and the GMC loss on multimodal-pendulum shaped inputs, one
training step (batch assembly from uint8/float32 arrays, forward, loss, backward, Adam) timed as
the Rust benchmark times it. Prints one JSON object.

    python bench/torch_gmc.py --threads 1 [--batch-size 128] [--steps 5] [--warmup 2]
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MASKED = -1.0e9


class GmcTrunk(nn.Module):
    """Conv(2->32, k4 s2 p1, no bias) -> Swish -> Conv(32->64, k4 s2 p1, no bias) -> Swish -> flatten."""

    def __init__(self, channels):
        super().__init__()
        self.c1 = nn.Conv2d(channels, 32, 4, 2, 1, bias=False)
        self.c2 = nn.Conv2d(32, 64, 4, 2, 1, bias=False)

    def forward(self, x):
        return F.silu(self.c2(F.silu(self.c1(x)))).flatten(1)


class MlpTrunk(nn.Module):
    """12 -> 50 -> 50, Swish after each layer."""

    def __init__(self, d, hidden=(50, 50)):
        super().__init__()
        layers, prev = [], d
        for w in hidden:
            layers.append(nn.Linear(prev, w))
            prev = w
        self.layers = nn.ModuleList(layers)
        self.out_dim = prev

    def forward(self, x):
        for l in self.layers:
            x = F.silu(l(x))
        return x


class GmcEncoder(nn.Module):
    """f_pixels, f_sound (trunk + Linear to 64), f_M with its own trunks (separate joint),
    shared head g: Linear(64, 128) -> Swish -> Linear(128, 10) -> L2 normalisation."""

    def __init__(self, img_shape=(2, 60, 60), sound_dim=12, feature_dim=64, head_hidden=128, latent_dim=10):
        super().__init__()
        c, h, w = img_shape
        conv_out = 64 * (h // 4) * (w // 4)
        self.pix_trunk, self.pix_proj = GmcTrunk(c), nn.Linear(conv_out, feature_dim)
        self.snd_trunk = MlpTrunk(sound_dim)
        self.snd_proj = nn.Linear(self.snd_trunk.out_dim, feature_dim)
        self.joint_pix, self.joint_snd = GmcTrunk(c), MlpTrunk(sound_dim)
        self.joint_proj = nn.Linear(conv_out + self.joint_snd.out_dim, feature_dim)
        self.head_hidden, self.head_out = nn.Linear(feature_dim, head_hidden), nn.Linear(head_hidden, latent_dim)

    def project(self, h):
        z = self.head_out(F.silu(self.head_hidden(h)))
        return z / z.square().sum(1, keepdim=True).clamp_min(1e-24).sqrt()

    def forward(self, pixels, sound):
        h_pix = self.pix_proj(self.pix_trunk(pixels))
        h_snd = self.snd_proj(self.snd_trunk(sound))
        h_m = self.joint_proj(torch.cat([self.joint_pix(pixels), self.joint_snd(sound)], 1))
        return self.project(h_m), [self.project(h_pix), self.project(h_snd)]


def info_nce(z_m, z_u, tau):
    n = 2 * z_m.shape[0]
    pos = (z_m * z_u).sum(1, keepdim=True) / tau
    pos = torch.cat([pos, pos], 0)
    z = torch.cat([z_m, z_u], 0)
    s = (z @ z.t()) / tau
    s = s.masked_fill(torch.eye(n, dtype=torch.bool), MASKED)
    return (torch.logsumexp(s, dim=1, keepdim=True) - pos).mean()


def gmc_loss(z_m, z_uni, tau=0.3):
    return sum(info_nce(z_m, z_u, tau) for z_u in z_uni)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    b = args.batch_size
    # Binary pixels as the environment renders them (u8 0/1, scale 1/max(high) = 1), sound floats.
    pixels_u8 = (rng.random((b, 2, 60, 60)) < 0.05).astype(np.uint8)
    sound = rng.standard_normal((b, 12)).astype(np.float32)
    model = GmcEncoder()
    optim = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-5)
    seconds = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        x_pix = torch.from_numpy(pixels_u8).float()
        x_snd = torch.from_numpy(sound.copy())
        z_m, z_uni = model(x_pix, x_snd)
        loss = gmc_loss(z_m, z_uni)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        _ = float(loss.detach())
        if i >= args.warmup:
            seconds.append(time.perf_counter() - start)
    print(json.dumps({
        "device": "pytorch", "backend": f"PyTorch {torch.__version__} (CPU)", "threads": torch.get_num_threads(),
        "batch_size": b, "warmup": args.warmup, "gmc_seconds": seconds, "gmc_median": float(np.median(seconds)),
    }))


if __name__ == "__main__":
    main()
