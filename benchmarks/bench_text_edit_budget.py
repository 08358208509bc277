"""What a CPU Space can run of the text edit tab: BK-SDM-Tiny's and SD 1.4's U-Net (random weights, published
configs) timed at 256 and 512 px, and the most sampling steps that fit the time budget.

    python -m benchmarks.bench_text_edit_budget [--threads 2] [--budget 300]

A step of the text edit evaluates the U-Net on a batch of four (the source and the target chain, each with and
without the text under classifier-free guidance); the SDEdit baseline adds a step at batch two. The VAE encodes once
and decodes twice. At strength 0.8, a request of n steps runs 0.8 n of them.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import UNet2DConditionModel

from benchmarks.bench_stable_cycle import BK_SDM_TINY_UNET, SD14_UNET, components
from benchmarks.common import print_table, timed

STRENGTH = 0.8


def seconds(fn, repeats: int = 2) -> float:
    """The faster of `repeats` runs after one warm-up."""
    fn()
    return timed(fn, repeats)


@torch.no_grad()
def unet_seconds(unet: UNet2DConditionModel, side: int, batch: int) -> float:
    x = torch.randn(batch, 4, side // 8, side // 8)
    text = torch.randn(batch, 77, unet.config.cross_attention_dim)
    return seconds(lambda: unet(x, 500, encoder_hidden_states=text))


@torch.no_grad()
def vae_seconds(vae, side: int) -> float:
    image = torch.rand(1, 3, side, side) * 2 - 1
    return seconds(lambda: vae.decode(vae.encode(image).latent_dist.mean).sample, repeats=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=300.0, help="STEER_MAX_SECONDS")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, config in (("bk-sdm-tiny", BK_SDM_TINY_UNET), ("SD 1.4", SD14_UNET)):
        parts = components(config, torch.device("cpu"), torch.float32)
        for side in (256, 512):
            step, baseline = unet_seconds(parts["unet"], side, 4), unet_seconds(parts["unet"], side, 2)
            vae = 1.5 * vae_seconds(parts["vae"], side)  # one encode, two decodes ~ 1.5 encode + decode round trips
            fits = [max(0, int((args.budget - vae) / (STRENGTH * (step + extra)))) for extra in (baseline, 0.0)]
            rows.append({"U-Net": name, "side (px)": side, "s/step (batch 4)": f"{step:.2f}",
                         "s/step baseline (batch 2)": f"{baseline:.2f}", "VAE (s)": f"{vae:.1f}",
                         "50 steps (s)": f"{vae + STRENGTH * 50 * (step + baseline):.0f}",
                         f"steps in {args.budget:.0f} s (with / without baseline)": f"{fits[0]} / {fits[1]}"})
        del parts
    print_table(rows)


if __name__ == "__main__":
    main()
