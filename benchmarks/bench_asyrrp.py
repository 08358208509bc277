"""Asyrrp against plain DDIM over the same steps (same model, same x_T), in one run; plus learning one direction.

    python benchmarks/bench_asyrrp.py --size 256 --steps 40 --repeats 3          # on a GPU
    python benchmarks/bench_asyrrp.py                                              # CPU default: 64px, 10 steps

Rows: plain DDIM from x_T; an edit with the inversion cached (what moving the scale slider costs); a first edit
(DDIM inversion + edit); learning a global delta_h (one pass over the edit interval on one image, a random
CLIP ViT-B/32). Target: the edit at most 1.6x plain DDIM (its steps in [T, t_edit] run the U-Net on a batch of 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from diffusers import DDIMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from benchmarks.common import celebahq_scheduler, celebahq_unet, print_table, timed  # noqa: E402
from conftest import tiny_clip_components  # noqa: E402  (its character tokenizer; the CLIP built here is full size)
from pipelines import AsyrrpPipeline  # noqa: E402
from pipelines.asyrrp import _inversions, default_interval  # noqa: E402
from pipelines.clip import ClipJudge  # noqa: E402
from pipelines.sampling import eps_theta  # noqa: E402


def random_clip_b32(device):
    """openai/clip-vit-base-patch32's architecture with random weights (no download)."""
    from transformers import CLIPConfig, CLIPModel

    _, tokenizer = tiny_clip_components()
    vocab = len(tokenizer)
    config = CLIPConfig(text_config=dict(vocab_size=vocab, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1))
    return ClipJudge(CLIPModel(config).eval().requires_grad_(False).to(device), tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    dtype = torch.float16 if args.device == "cuda" else torch.float32
    unet = celebahq_unet(args.size).to(args.device, dtype)
    pipe = AsyrrpPipeline(unet=unet, scheduler=celebahq_scheduler()).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    t_edit, t_boost = default_interval("google/ddpm-celebahq-256")
    direction = torch.randn(pipe.h_shape, generator=torch.Generator().manual_seed(0)) * 0.1
    common = dict(t_edit=t_edit, t_boost=t_boost, num_inference_steps=args.steps, output_type="pt")
    x_T = pipe.invert(image, args.steps)

    @torch.inference_mode()
    def plain():
        ddim = DDIMScheduler.from_config(pipe.scheduler.config)
        ddim.set_timesteps(args.steps)
        generator, x = torch.Generator().manual_seed(0), x_T
        for t in ddim.timesteps:
            x = ddim.step(eps_theta(unet, x, t), t, x, eta=1.0 if t < t_boost else 0.0, generator=generator).prev_sample
        return x

    def edit():
        return pipe(image, direction, scale=1.0, generator=torch.Generator().manual_seed(0), **common)

    def first_edit():
        _inversions.clear()
        return edit()

    edit()  # warm-up, and fills the inversion cache
    t_plain = timed(plain, args.repeats)
    t_edit_cached = timed(edit, args.repeats)
    t_first = timed(first_edit, args.repeats)

    judge = random_clip_b32(args.device)
    t_learn = timed(lambda: pipe.learn_direction(image, judge, "a face", "a smiling face", kind="global", t_edit=t_edit,
                                                 num_inference_steps=args.steps, iterations=1), 1)
    edit_steps = sum(int(t) >= t_edit for t in pipe.ddim(args.steps).timesteps)

    print(f"device {args.device}, {args.size}x{args.size}, {args.steps} steps (t_edit {t_edit}: {edit_steps} edited, "
          f"t_boost {t_boost}), best of {args.repeats}")
    rows = [("plain DDIM from x_T", t_plain), ("Asyrrp edit, cached inversion", t_edit_cached),
            ("Asyrrp first edit (inversion + edit)", t_first), ("learn global delta_h, 1 pass, 1 image", t_learn)]
    print_table([{"run": name, "total s": f"{s:.2f}", "ratio to plain": f"{s / t_plain:.3f}"} for name, s in rows])


if __name__ == "__main__":
    main()
