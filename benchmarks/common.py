"""What the benchmarks share: the hub models' architecture with random weights, a timer, a table printer."""

from __future__ import annotations

import time

import torch
from diffusers import DDPMScheduler, UNet2DModel


def celebahq_unet(sample_size: int = 256) -> UNet2DModel:
    """google/ddpm-celebahq-256's UNet2DModel (113.7M parameters at any size) with random weights."""
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=sample_size,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        layers_per_block=2,
    ).eval().requires_grad_(False)


def celebahq_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, variance_type="fixed_small")


def timed(fn, repeats: int) -> float:
    """The fastest of `repeats` runs, in seconds (the minimum is the least disturbed by a shared machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths)))
