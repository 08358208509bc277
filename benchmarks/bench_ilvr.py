"""ILVR against plain DDPM sampling (diffusers' DDPMPipeline), same model, steps and noise, in one run.

    python benchmarks/bench_ilvr.py --size 256 --steps 5 --repeats 3

Target: ILVR at most 1.05x plain sampling (its extra work is two low-pass filters and one q_sample per step).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import DDPMPipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import benchmark_unet, celebahq_scheduler, parse_args, print_table, timed  # noqa: E402
from pipelines import ILVRPipeline  # noqa: E402


def main() -> None:
    args = parse_args(__doc__, size=256, steps=5, repeats=3)
    unet = benchmark_unet(args)
    reference = torch.rand(1, 3, args.size, args.size)
    plain = DDPMPipeline(unet=unet, scheduler=celebahq_scheduler())
    ilvr = ILVRPipeline(unet=unet, scheduler=celebahq_scheduler())
    plain.set_progress_bar_config(disable=True)
    ilvr.set_progress_bar_config(disable=True)
    common = dict(num_inference_steps=args.steps, output_type="pt")

    with torch.inference_mode():
        plain(generator=torch.Generator().manual_seed(0), **common)  # warm-up
        t_plain = timed(lambda: plain(generator=torch.Generator().manual_seed(0), **common), args.repeats)
        t_ilvr = timed(lambda: ilvr(reference, down_factor=4, generator=torch.Generator().manual_seed(0), **common), args.repeats)

    print(f"device {args.device}, {args.size}x{args.size}, {args.steps} steps, best of {args.repeats}")
    print_table([
        {"sampler": "DDPMPipeline", "total s": f"{t_plain:.2f}", "s/step": f"{t_plain / args.steps:.3f}", "ratio": "1.000"},
        {"sampler": "ILVR (N=4)", "total s": f"{t_ilvr:.2f}", "s/step": f"{t_ilvr / args.steps:.3f}", "ratio": f"{t_ilvr / t_plain:.3f}"},
    ])


if __name__ == "__main__":
    main()
