"""The paper's implicit function f_t (Kwon, Jeong & Uh, ICLR 2023, §3.3): delta_h_t = f_t(h_t, t), a small network
on h-space that an AsyrpPipeline takes as its direction."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import Timesteps
from torch import nn


class DeltaBlock(nn.Module):
    """The implicit function f_t(h, t) = W_2 silu(GN(W_1 h) + E(t)): two 1x1 convolutions and a time embedding.

    W_2 starts at zero, so an untrained f_t is the zero direction (no edit), as in the official code.
    """

    def __init__(self, channels: int, time_channels: int = 128):
        super().__init__()
        self.time_proj = Timesteps(time_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = nn.Linear(time_channels, channels)
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.norm = nn.GroupNorm(math.gcd(32, channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor, t) -> torch.Tensor:
        """(B,C,h,w), timestep -> delta_h_t (B,C,h,w); computed in the block's dtype (fp32), returned in h's."""
        x = h.to(self.conv1.weight.dtype)
        t = torch.as_tensor(t, device=h.device).reshape(-1).expand(h.shape[0])
        emb = self.time_embed(self.time_proj(t).to(x.dtype))  # (B,C)
        return self.conv2(F.silu(self.norm(self.conv1(x)) + emb[:, :, None, None])).to(h.dtype)
