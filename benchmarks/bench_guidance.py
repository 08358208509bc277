"""Classifier guidance with a CLIP zero-shot classifier against unguided DDIM sampling, per sample, in one run.

    python benchmarks/bench_guidance.py --size 64 --steps 4 --batch 2 --repeats 2

U-Net: google/ddpm-celebahq-256's architecture; CLIP: ViT-B/32's architecture (transformers' CLIPConfig
defaults, 224x224 input); both with random weights. The unguided baseline is diffusers' DDIMPipeline with the same
steps and noise. Expected: "fixed_eps" adds one CLIP forward and backward per step, "exact" adds a U-Net backward
as well (about 3x an unguided step once the U-Net dominates, as it does at 256x256).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from diffusers import DDIMPipeline
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import celebahq_scheduler, celebahq_unet, print_table, timed  # noqa: E402
from pipelines import ClassifierGuidancePipeline, ClipZeroShotClassifier  # noqa: E402
from pipelines.clip import ClipJudge  # noqa: E402

PROMPTS = ["a photo of a smiling person", "a photo of a person with glasses"]


def random_clip(device, dtype) -> ClipJudge:
    """ViT-B/32-shaped CLIP with random weights and a character-level tokenizer (nothing downloaded)."""
    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={tok: i for i, tok in enumerate(tokens)}, merges=[])
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).to(device, dtype).eval().requires_grad_(False)
    return ClipJudge(model, tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    dtype = torch.float16 if args.device == "cuda" else torch.float32
    unet = celebahq_unet(args.size).to(args.device, dtype)
    classifier = ClipZeroShotClassifier(random_clip(args.device, dtype), PROMPTS)
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
