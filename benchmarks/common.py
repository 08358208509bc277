"""What the benchmarks share: the hub models' architecture with random weights, a timer, a table printer."""

from __future__ import annotations

import argparse
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


def parse_args(doc: str, size: int, steps: int, repeats: int, **extra) -> argparse.Namespace:
    """--size, --steps, --repeats, --device (cuda when there is one), plus `extra` as name=default options."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=size)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    for name, default in extra.items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    return parser.parse_args()


def benchmark_unet(args: argparse.Namespace) -> UNet2DModel:
    """celebahq_unet at --size on --device, in fp16 on CUDA as the app runs it."""
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    return celebahq_unet(args.size).to(args.device, dtype)


def random_clip_b32(device, dtype=torch.float32):
    """openai/clip-vit-base-patch32's architecture with random weights and a character-level tokenizer (no download)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from pipelines.core.clip import ClipJudge

    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={tok: i for i, tok in enumerate(tokens)}, merges=[])
    n = len(tokens)
    config = CLIPConfig(text_config=dict(vocab_size=n, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1))
    torch.manual_seed(0)
    return ClipJudge(CLIPModel(config).to(device, dtype).eval().requires_grad_(False), tokenizer)
