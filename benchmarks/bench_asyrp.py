"""Asyrp against plain DDIM over the same steps (same model, same x_T), in one run; plus learning one direction.

    python benchmarks/bench_asyrp.py --size 256 --steps 40 --repeats 3          # on a GPU
    python benchmarks/bench_asyrp.py                                              # CPU default: 64px, 10 steps

Rows: plain DDIM from x_T; an edit with the inversion cached (what moving the scale slider costs); a first edit
(DDIM inversion + edit); learning a global delta_h (one pass over the edit interval on one image, a random
CLIP ViT-B/32). Target: the edit at most 1.6x plain DDIM (its steps in [T, t_edit] run the U-Net on a batch of 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import DDIMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (benchmark_unet, celebahq_scheduler, parse_args, print_table, random_clip_b32, timed)  # noqa: E402
from pipelines import AsyrpPipeline  # noqa: E402
from pipelines.asyrp.directions import learn_direction  # noqa: E402
from pipelines.asyrp.interval import asyrp_interval  # noqa: E402
from pipelines.core.sampling import eps_theta  # noqa: E402


def main() -> None:
    args = parse_args(__doc__, size=64, steps=10, repeats=3)
    unet = benchmark_unet(args)
    pipe = AsyrpPipeline(unet=unet, scheduler=celebahq_scheduler()).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    t_edit, t_boost = asyrp_interval("google/ddpm-celebahq-256")
    direction = torch.randn(pipe.h_shape, generator=torch.Generator().manual_seed(0)) * 0.1
    common = dict(t_edit=t_edit, t_boost=t_boost, num_inference_steps=args.steps, output_type="pt")
    x_T = pipe.invert(image, num_inference_steps=args.steps)

    @torch.inference_mode()
    def plain():
        ddim = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
        ddim.set_timesteps(args.steps)
        generator, x = torch.Generator().manual_seed(0), x_T
        for t in ddim.timesteps:
            x = ddim.step(eps_theta(unet, x, t), t, x, eta=1.0 if t < t_boost else 0.0, generator=generator).prev_sample
        return x

    def edit():
        return pipe(x_T=x_T, direction=direction, scale=1.0, generator=torch.Generator().manual_seed(0), **common)

    def first_edit():
        return pipe(image, direction=direction, scale=1.0, generator=torch.Generator().manual_seed(0), **common)

    edit()  # warm-up
    t_plain = timed(plain, args.repeats)
    t_edit_cached = timed(edit, args.repeats)
    t_first = timed(first_edit, args.repeats)

    judge = random_clip_b32(args.device)
    t_learn = timed(lambda: learn_direction(pipe, image, judge, "a face", "a smiling face", kind="global", t_edit=t_edit,
                                                 num_inference_steps=args.steps, iterations=1), 1)
    edit_steps = sum(int(t) >= t_edit for t in pipe.ddim(args.steps).timesteps)

    print(f"device {args.device}, {args.size}x{args.size}, {args.steps} steps (t_edit {t_edit}: {edit_steps} edited, "
          f"t_boost {t_boost}), best of {args.repeats}")
    rows = [("plain DDIM from x_T", t_plain), ("Asyrp edit from a given x_T", t_edit_cached),
            ("Asyrp first edit (inversion + edit)", t_first), ("learn global delta_h, 1 pass, 1 image", t_learn)]
    print_table([{"run": name, "total s": f"{s:.2f}", "ratio to plain": f"{s / t_plain:.3f}"} for name, s in rows])


if __name__ == "__main__":
    main()
