"""Classifier guidance with a CLIP zero-shot classifier against unguided DDIM sampling, per sample, in one run.

    python benchmarks/bench_guidance.py --size 64 --steps 4 --batch 2 --repeats 2

U-Net: google/ddpm-celebahq-256's architecture; CLIP: ViT-B/32's architecture (transformers' CLIPConfig
defaults, 224x224 input); both with random weights. The unguided baseline is diffusers' DDIMPipeline with the same
steps and noise. Expected: "fixed_eps" adds one CLIP forward and backward per step, "exact" adds a U-Net backward
as well (about 3x an unguided step once the U-Net dominates, as it does at 256x256).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import DDIMPipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (benchmark_unet, celebahq_scheduler, parse_args, print_table, random_clip_b32, timed)  # noqa: E402
from pipelines import ClassifierGuidancePipeline, ClipZeroShotClassifier  # noqa: E402

PROMPTS = ["a photo of a smiling person", "a photo of a person with glasses"]


def main() -> None:
    args = parse_args(__doc__, size=64, steps=4, repeats=2, batch=2)
    unet = benchmark_unet(args)
    classifier = ClipZeroShotClassifier(random_clip_b32(args.device, unet.dtype), PROMPTS)
    plain = DDIMPipeline(unet=unet, scheduler=celebahq_scheduler())
    guided = ClassifierGuidancePipeline(unet=unet, scheduler=celebahq_scheduler(), classifier=classifier)
    plain.set_progress_bar_config(disable=True)
    guided.set_progress_bar_config(disable=True)
    common = dict(num_inference_steps=args.steps, output_type="pt")
    labels = [0] * args.batch

    def run_plain():
        plain(batch_size=args.batch, use_clipped_model_output=True, generator=torch.Generator().manual_seed(0), **common)

    def run_guided(gradient):
        guided(labels, guidance_scale=10.0, gradient=gradient, generator=torch.Generator().manual_seed(0), **common)

    run_plain()  # warm-up
    times = {"DDIMPipeline (unguided)": timed(run_plain, args.repeats)}
    times["guided, fixed_eps gradient"] = timed(lambda: run_guided("fixed_eps"), args.repeats)
    times["guided, exact gradient"] = timed(lambda: run_guided("exact"), args.repeats)

    base = times["DDIMPipeline (unguided)"] / args.batch
    print(f"device {args.device}, {args.size}x{args.size}, {args.steps} DDIM steps, batch {args.batch}, "
          f"best of {args.repeats}")
    print_table([
        {"sampler": name, "s/sample": f"{t / args.batch:.2f}", "s/step/sample": f"{t / args.batch / args.steps:.3f}",
         "ratio to unguided": f"{t / args.batch / base:.2f}"}
        for name, t in times.items()
    ])


if __name__ == "__main__":
    main()
