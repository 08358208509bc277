"""What the process views cost, each against the same call without it, in one run on the hub models' architecture
(random weights): ILVR's frequency split, guidance's p(target | x_t) trace and gradient maps, Asyrp's |s delta_h_t|,
CycleDiffusion's SDEdit baseline (one more decoding: about 1/3 more for a translation) and DDIB baseline, and the
h-space views of runners/hspace.py next to the Asyrp edit of the same two images they run on (homogeneity and
robustness decode three more times, the linear combination a 3x3 grid, consistency only records delta_h_t).

    python benchmarks/bench_views.py --size 256 --steps 10 --repeats 3        # on a GPU
    python benchmarks/bench_views.py                                            # CPU default: 256px, 2 steps, 1 repeat

Each row checks that the view leaves the result unchanged (bit for bit) and prints the shapes of what it returns.
Target: the split, the trace and the norms within 1.1x (CLIP's trace adds one CLIP forward a step).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (benchmark_unet, celebahq_scheduler, parse_args, print_table, random_clip_b32, timed)  # noqa: E402
from pipelines import AsyrpPipeline, ClassifierGuidancePipeline, CycleDiffusionPipeline, ILVRPipeline  # noqa: E402
from pipelines.cycle_diffusion.ddib import ddib  # noqa: E402
from pipelines.guidance import ClipZeroShotClassifier  # noqa: E402
from pipelines.asyrp.probes import (NoisyDirection, RecordedDirection, combination, cosine_matrix, ) # noqa: E402                                      first_row_shift, noise_shift, shifted_pipeline
from pipelines.core.images import to_unit  # noqa: E402


def compare(name: str, plain, viewed, repeats: int, shapes) -> dict:
    """A row: both calls timed, the results compared, the view's outputs described."""
    plain_out, viewed_out = plain(), viewed()
    same = torch.equal(plain_out.images, viewed_out.images)
    t_plain, t_viewed = timed(plain, repeats), timed(viewed, repeats)
    return {"view": name, "without (s)": f"{t_plain:.2f}", "with (s)": f"{t_viewed:.2f}",
            "ratio": f"{t_viewed / t_plain:.2f}", "result unchanged": same, "returns": shapes(viewed_out)}


def main() -> None:
    args = parse_args(__doc__, size=256, steps=2, repeats=1)
    unet, scheduler = benchmark_unet(args), celebahq_scheduler()
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    steps, repeats = args.steps, args.repeats

    def seeded(**kwargs):
        return dict(generator=torch.Generator().manual_seed(0), output_type="pt", num_inference_steps=steps, **kwargs)

    rows = []
    ilvr = ILVRPipeline(unet=unet, scheduler=scheduler).to(args.device)
    ilvr.set_progress_bar_config(disable=True)
    rows.append(compare("ILVR frequency split", lambda: ilvr(image, down_factor=8, **seeded()),
                        lambda: ilvr(image, down_factor=8, split_step=0, **seeded()), repeats,
                        lambda out: f"4 x {tuple(out.frequency_split.x_prev.shape)}"))

    classifier = ClipZeroShotClassifier(random_clip_b32(args.device, unet.dtype), ["a smiling face", "a face"])
    guided = ClassifierGuidancePipeline(unet=unet, scheduler=scheduler, classifier=classifier).to(args.device)
    guided.set_progress_bar_config(disable=True)
    run = dict(class_labels=[0], guidance_scale=10.0, sampler="ddim", gradient="fixed_eps")
    rows.append(compare("guidance trace (CLIP)", lambda: guided(**run, **seeded()),
                        lambda: guided(**run, return_log_probs=True, gradient_map_steps=range(steps), **seeded()),
                        repeats, lambda out: f"log_probs {tuple(out.log_probs.shape)}, "
                                             f"{len(out.gradient_maps)} x {tuple(out.gradient_maps[0].shape)}"))

    asyrp = AsyrpPipeline(unet=unet, scheduler=scheduler).to(args.device)
    asyrp.set_progress_bar_config(disable=True)
    x_T = asyrp.invert(image, num_inference_steps=steps)
    direction = torch.randn(asyrp.h_shape, generator=torch.Generator().manual_seed(0)) * 0.1
    edit = dict(x_T=x_T, direction=direction, scale=[-1.0, 1.0], t_edit=0, t_boost=0)
    def asyrp_plain():  # the reverse process alone: __call__ always keeps the norms
        scales = torch.tensor([-1.0, 1.0]).view(-1, 1, 1, 1)
        x = asyrp.reverse_process(x_T.repeat(2, 1, 1, 1), direction=direction, scales=scales, t_edit=0, t_boost=0,
                                  num_inference_steps=steps)
        return type("Out", (), {"images": to_unit(x)})

    rows.append(compare("Asyrp |s delta_h_t|", asyrp_plain, lambda: asyrp(**edit, **seeded()), repeats,
                        lambda out: f"{len(out.delta_h_norms)} x {tuple(next(iter(out.delta_h_norms.values())).shape)}"))

    two = torch.rand(2, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    pair = dict(x_T=asyrp.invert(two, num_inference_steps=steps), t_edit=0, t_boost=0)
    second = torch.randn(asyrp.h_shape, generator=torch.Generator().manual_seed(1)) * 0.1

    def beside_the_edit(view):  # the edit of two images, then what the view runs besides it
        def run():
            out = asyrp(**pair, direction=direction, **seeded())
            return type("Out", (), {"images": out.images, "view": view()})
        return run

    def decodings(*pipes_and_directions):
        return [tuple(p(**pair, direction=d, scale=s, **seeded()).images.shape) for p, d, s in pipes_and_directions]

    noise = NoisyDirection(direction, 1.0, torch.Generator().manual_seed(0), steps)
    views = {
        "h-space homogeneity": lambda: decodings((asyrp, None, 0.0),
                                                 (shifted_pipeline(asyrp, first_row_shift), direction, 1.0)),
        "h-space robustness (1 norm)": lambda: decodings(
            (asyrp, None, 0.0), (asyrp, noise, 1.0),
            (shifted_pipeline(asyrp, noise_shift(1.0, torch.Generator().manual_seed(0))), direction, 1.0)),
        "h-space linear combination 3x3": lambda: tuple(asyrp(
            x_T=pair["x_T"][:1].expand(9, -1, -1, -1), t_edit=0, t_boost=0, **seeded(),
            direction=combination([direction, second], [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)], steps)
        ).images.shape),
    }
    for name, view in views.items():
        rows.append(compare(name, lambda: asyrp(**pair, direction=direction, **seeded()), beside_the_edit(view),
                            repeats, lambda out: str(out.view)))

    def recorded():
        f = RecordedDirection(direction, steps)
        out = asyrp(**pair, direction=f, **seeded())
        return type("Out", (), {"images": out.images, "cosine": cosine_matrix(f.record)})

    rows.append(compare("h-space consistency", lambda: asyrp(**pair, direction=direction, **seeded()), recorded,
                        repeats, lambda out: f"cosine {tuple(out.cosine.shape)}"))

    cycle = CycleDiffusionPipeline(unet=unet, scheduler=scheduler).to(args.device)
    cycle.set_progress_bar_config(disable=True)

    def translate():
        return cycle(image, target_unet=unet, strength=1.0, **seeded())

    def with_sdedit():
        out = translate()
        baseline = cycle.decode(out.latent.with_fresh_noise(torch.Generator().manual_seed(1)), unet=unet,
                                output_type="pt").images
        return type("Out", (), {"images": out.images, "baseline": baseline})

    rows.append(compare("CycleDiffusion SDEdit baseline", translate, with_sdedit, repeats,
                        lambda out: f"baseline {tuple(out.baseline.shape)}"))

    def with_ddib():
        out = translate()
        baseline = ddib(unet, scheduler, image, target_unet=unet, strength=1.0, num_inference_steps=steps,
                        output_type="pt").images
        return type("Out", (), {"images": out.images, "baseline": baseline})

    rows.append(compare("CycleDiffusion DDIB baseline", translate, with_ddib, repeats,
                        lambda out: f"baseline {tuple(out.baseline.shape)}"))
    print(f"{args.size}px, {steps} steps, {args.device}, {unet.dtype}, best of {repeats}")
    print_table(rows)


if __name__ == "__main__":
    main()
