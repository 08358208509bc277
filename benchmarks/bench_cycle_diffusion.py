"""CycleDiffusion encode + decode against one plain DDIM sampling pass (diffusers' DDIMPipeline), same model, steps
and eta, in one run; also the reconstruction error of the DPM-Encoder.

    python benchmarks/bench_cycle_diffusion.py --size 64 --steps 10 --repeats 2

Target: encode + decode at most 2.1x one sampling pass (each is one U-Net forward per step; the encoder's extra
work is a q_sample and a posterior step per step).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import DDIMPipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import benchmark_unet, celebahq_scheduler, parse_args, print_table, timed  # noqa: E402
from pipelines import CycleDiffusionPipeline  # noqa: E402
from pipelines.cycle_diffusion.dpm_encoder import encoder_scheduler  # noqa: E402


def main() -> None:
    args = parse_args(__doc__, size=64, steps=10, repeats=2, eta=1.0)
    unet = benchmark_unet(args)
    image = torch.rand(1, 3, args.size, args.size)
    plain = DDIMPipeline(unet=unet, scheduler=encoder_scheduler(celebahq_scheduler().config))
    cycle = CycleDiffusionPipeline(unet=unet, scheduler=celebahq_scheduler())
    plain.set_progress_bar_config(disable=True)
    cycle.set_progress_bar_config(disable=True)

    def sample():
        plain(generator=torch.Generator().manual_seed(0), eta=args.eta, num_inference_steps=args.steps, output_type="np")

    def encode_decode():
        latent = cycle.encode(image, num_inference_steps=args.steps, eta=args.eta,
                              generator=torch.Generator().manual_seed(0))
        return cycle.decode(latent, output_type="pt").images

    with torch.inference_mode():
        sample()  # warm-up
        t_plain = timed(sample, args.repeats)
        t_cycle = timed(encode_decode, args.repeats)
        error = (encode_decode().cpu() - image).abs().max().item()

    print(f"device {args.device} ({unet.dtype}), {args.size}x{args.size}, {args.steps} steps, eta {args.eta}, "
          f"best of {args.repeats}")
    print_table([
        {"run": "DDIMPipeline (one sampling pass)", "total s": f"{t_plain:.2f}", "ratio": "1.000"},
        {"run": "CycleDiffusion encode + decode", "total s": f"{t_cycle:.2f}", "ratio": f"{t_cycle / t_plain:.3f}"},
    ])
    print(f"reconstruction error, max |G(z) - x| in [0,1] units: {error:.2e} (target <= 2e-3)")


if __name__ == "__main__":
    main()
