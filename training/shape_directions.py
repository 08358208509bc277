"""Learn the bundled model's Asyrp size direction: f_t(h_t, t) that grows a shape (scale > 0) or shrinks it (< 0).

    python -m training.shape_directions      # writes assets/shapes-16/directions/size.safetensors, size.json, README.md

Asyrp learns its implicit function f_t (pipelines.asyrp.directions.DeltaBlock) with CLIP's directional loss, but CLIP
cannot read a 16-pixel shape. Here the generator supervises instead, with pairs: a shape, and the same shape (class,
colour, centre) with its size r changed by s * r_per_scale pixels. The image is inverted with DDIM and decoded by the
asymmetric reverse process at scale s (AsyrpPipeline.reverse_process: P_t sees h_t + s f_t(h_t, t) for t >= t_edit, D_t the
unedited eps, then DDIM); the loss is the mean squared error of the decoded image to the resized render,
back-propagated through the whole decoding into f_t. Every shape is used at s and at -s. The U-Net stays frozen.

Held-out generator images are then edited at scales -2..2 and read back with training.shapes.measure (no model):
the measured r must grow with the scale while the class and the colour stay. The figures go into the direction's
card, assets/shapes-16/directions/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from pipelines.asyrp.pipeline import AsyrpPipeline
from pipelines.asyrp.directions import DeltaBlock, save_direction
from pipelines.models.loading import load_diffusion, make_scheduler
from training.shapes import Shapes, measure_batch, render, sample_shapes

ROOT = Path(__file__).resolve().parent.parent
MODEL_ID = "shapes-16"  # the bundled model these directions are learned on
Pairs = Callable[[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # (n, seed) -> images, targets, scales
SCALES = (-2.0, -1.0, 0.0, 1.0, 2.0)  # the Asyrp tab's strip at s = 1, with the reconstruction in the middle


@dataclass
class PairedLearning:
    """What learning an f_t from generator pairs needs, whatever the attribute (training.face_directions reuses it)."""

    seed: int = 0
    iterations: int = 60
    batch_size: int = 16  # images per iteration; each is decoded twice (at s and at -s)
    lr: float = 3e-3
    max_scale: float = 2.0  # |s| is drawn from [min_scale, max_scale]: the tab's strip reaches 2 at s = 1
    min_scale: float = 0.25
    num_inference_steps: int = 40  # the Asyrp tab's default
    t_edit: int = 500
    held_out: int = 24  # images edited at SCALES to measure the result


@dataclass
class Config(PairedLearning):
    r_per_scale: float = 0.5  # pixels of r the edit should add per unit of scale
    r_min: float = 3.8  # r of the shapes to edit, so that r -/+ max_scale * r_per_scale stays near the generator's [3.2, 5.3]
    r_max: float = 4.6


def shapes_to_edit(n: int, config: Config, seed: int, image_size: int = 16) -> Shapes:
    """n generator shapes with r in [r_min, r_max], far enough from the border to grow by max_scale * r_per_scale."""
    generator = torch.Generator().manual_seed(seed)
    drawn = sample_shapes(n, image_size, generator)
    r = config.r_min + (config.r_max - config.r_min) * torch.rand(n, generator=generator)
    margin = (r + config.max_scale * config.r_per_scale + 1)[:, None]
    return Shapes(drawn.label, drawn.center.clamp(min=margin, max=image_size - margin), r, drawn.color)


def paired_scales(n: int, config: PairedLearning, seed: int) -> torch.Tensor:
    """The scales of n pairs, deterministic by seed: (2n,) = [s; -s] with |s| uniform in [min_scale, max_scale]."""
    magnitude = config.min_scale + (config.max_scale - config.min_scale) * torch.rand(n, generator=torch.Generator().manual_seed(seed))
    return torch.cat([magnitude, -magnitude])


def size_pairs(n: int, config: Config, seed: int, image_size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training pairs, deterministic by seed: n shapes, each at a scale s and at -s with |s| uniform in [min_scale, max_scale].
    Returns (images, targets) (2n,3,H,W) in [0,1] and scales (2n,): the target is the same shape (class, colour,
    centre) with r + s * r_per_scale."""
    shapes = shapes_to_edit(n, config, seed, image_size)
    scales = paired_scales(n, config, seed + 1)  # (2n,)
    twice = Shapes(shapes.label.repeat(2), shapes.center.repeat(2, 1), shapes.size.repeat(2), shapes.color.repeat(2, 1))
    resized = Shapes(twice.label, twice.center, twice.size + scales * config.r_per_scale, twice.color)
    return render(twice, image_size), render(resized, image_size), scales


def paired_loss(pipe: AsyrpPipeline, f_t, images, targets, scales, config: PairedLearning) -> torch.Tensor:
    """MSE of the asymmetric decoding of each image (B,3,H,W) in [0,1], edited at its scale (B,), to its target (B,3,H,W)."""
    x_T = pipe.invert(images, num_inference_steps=config.num_inference_steps)  # (B,3,H,W)
    decoded = pipe.reverse_process(x_T, direction=f_t, scales=scales.view(-1, 1, 1, 1), t_edit=config.t_edit, t_boost=0,
                                   num_inference_steps=config.num_inference_steps)  # (B,3,H,W) in [-1,1]
    return (decoded - (targets * 2 - 1)).pow(2).mean()


def learn_paired_direction(pipe: AsyrpPipeline, config: PairedLearning, pairs: Pairs, progress=None) -> tuple[DeltaBlock, list[float]]:
    """Train f_t on fresh pairs every iteration (pairs(batch_size, seed * 1_000_003 + i) at iteration i); returns
    f_t and the losses. progress(iteration, loss) after each iteration."""
    torch.manual_seed(config.seed)
    f_t = DeltaBlock(pipe.h_shape[0])
    pipe.unet.requires_grad_(False)
    optimizer = torch.optim.Adam(f_t.parameters(), lr=config.lr)
    losses = []
    for i in range(config.iterations):
        images, targets, scales = pairs(config.batch_size, config.seed * 1_000_003 + i)
        loss = paired_loss(pipe, f_t, images, targets, scales, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(i + 1, loss.item())
    return f_t.eval().requires_grad_(False), losses


def learn_with_progress_bar(pipe: AsyrpPipeline, config: PairedLearning, pairs: Pairs) -> tuple[DeltaBlock, list[float], float]:
    """learn_paired_direction with a progress bar of the MSE; returns f_t, the losses and the minutes it took."""
    began = time.perf_counter()
    bar = tqdm(total=config.iterations, desc="learning f_t")
    f_t, losses = learn_paired_direction(pipe, config, pairs, lambda i, loss: (bar.update(), bar.set_postfix(mse=f"{loss:.4f}")))
    bar.close()
    return f_t, losses, round((time.perf_counter() - began) / 60, 1)


def edit_strip(pipe: AsyrpPipeline, direction, image: torch.Tensor, config: PairedLearning, t_boost: int) -> torch.Tensor:
    """One image (3,H,W) in [0,1] edited at every one of SCALES: (S,3,H,W) in [0,1]."""
    return pipe(image[None], direction=direction, scale=SCALES, t_edit=config.t_edit, t_boost=t_boost,
                num_inference_steps=config.num_inference_steps, generator=torch.Generator().manual_seed(config.seed),
                output_type="pt").images


def asyrp_pipeline(model_id: str) -> AsyrpPipeline:
    """The Asyrp pipeline of a bundled model with its DDIM scheduler, progress bars off."""
    model = load_diffusion(model_id)
    pipe = AsyrpPipeline(unet=model.unet, scheduler=make_scheduler(model, "ddim"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def largest_channel_change(a, b) -> float:
    """The largest change of one RGB channel between two colours (3-tuples in [0,1])."""
    return max(abs(x - y) for x, y in zip(a, b))


def rises(values: list[float]) -> bool:
    """Whether values rise strictly from one to the next (a nan, nothing measured, never rises)."""
    return all(a < b for a, b in zip(values, values[1:]))


def share(flags: list[bool]) -> float:
    """The fraction of the flags that are true."""
    return sum(flags) / len(flags)


@torch.no_grad()
def measure_edits(pipe: AsyrpPipeline, direction, images: torch.Tensor, config: Config, t_boost: int = 0) -> dict:
    """Edit every image (N,3,H,W) in [0,1] at SCALES and measure the results: measured r (N,S), whether r grows
    strictly with the scale, whether the class and the colour (every channel within 0.15) stay those of the
    reconstruction, and the largest change of a colour channel."""
    sizes, monotone, same_class, same_colour, colour_change = [], [], [], [], []
    for image in images:
        measured = measure_batch(edit_strip(pipe, direction, image, config, t_boost))
        r = [m.size for m in measured]
        reconstruction = measured[SCALES.index(0.0)]
        sizes.append(r)
        monotone.append(rises(r))
        same_class.append(all(m.label == reconstruction.label for m in measured))
        change = max(largest_channel_change(m.color, reconstruction.color) for m in measured)
        same_colour.append(change < 0.15)
        colour_change.append(change)
    sizes = torch.tensor(sizes)
    return {
        "scales": list(SCALES),
        "mean_r": [round(v, 3) for v in sizes.mean(0).tolist()],
        "monotone": share(monotone),
        "same_class": share(same_class),
        "same_colour": share(same_colour),
        "max_colour_change": round(max(colour_change), 3),
        "n": len(images),
    }


CARD = """# Asyrp directions for shapes-16

`size.safetensors`: an f_t (the paper's implicit function, `pipelines.asyrp.directions.DeltaBlock`, {params:,} parameters)
that makes the shape bigger at positive scales and smaller at negative ones. Load it in the Asyrp tab
(*load a direction file*, or its examples) or with `pipelines.asyrp.directions.load_direction`.

    {command}

Learned on pairs from the generator instead of the paper's CLIP loss (CLIP cannot read 16-pixel shapes): a shape with
r in [{r_min}, {r_max}] px, inverted with {num_inference_steps}-step DDIM and decoded by the asymmetric reverse process at a scale s and
at -s (|s| uniform in [{min_scale}, {max_scale}], t_edit = {t_edit}, no quality boosting), against the same shape rendered with r + {r_per_scale} s px;
the loss is the mean squared error, back-propagated through the decoding. {iterations} iterations of
{batch_size} shapes, Adam at lr {lr}, seed {seed}: MSE {first_loss:.4f} -> {last_loss:.4f} in {minutes} minutes on a 2-core CPU.

## Measured
{n} held-out generator shapes, each edited at scales {scales}, read back by `training.shapes.measure` (no model):

| t_boost | mean measured r at each scale (px) | r grows strictly with s | class kept | colour kept (within 0.15) | largest colour change |
|---|---|---|---|---|---|
{rows}

Read the table for what the edit does and does not do: the size follows the scale, but it moves by less than the
{r_per_scale} px per unit of scale it was trained toward (more when growing than when shrinking, below the generator's
smallest r), a few shapes change class at the ends of the strip, and the colour drifts with the size (smaller
shapes come out darker). Quality boosting (t_boost > 0) redraws the fine detail at random and blurs the trend, so the
Asyrp tab uses t_boost = 0 for this model.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=Config.iterations)
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--t-edit", type=int, default=Config.t_edit)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "assets" / MODEL_ID / "directions"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = Config(iterations=args.iterations, seed=args.seed, t_edit=args.t_edit)
    pipe = asyrp_pipeline(MODEL_ID)
    f_t, losses, minutes = learn_with_progress_bar(pipe, config, lambda n, seed: size_pairs(n, config, seed))

    images = render(shapes_to_edit(config.held_out, config, seed=10**9), 16)
    measured = {t_boost: measure_edits(pipe, f_t, images, config, t_boost) for t_boost in (0, 200)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = f"python -m training.shape_directions --iterations {config.iterations} --seed {config.seed} --t-edit {config.t_edit}"
    save_direction(out / "size.safetensors", f_t, model_id=MODEL_ID, t_edit=config.t_edit, num_inference_steps=config.num_inference_steps,
                   source="a smaller shape", target="a bigger shape", note=f"learned on generator pairs: {command}")
    record = {"config": asdict(config), "command": command, "minutes": minutes, "losses": losses, "measured": measured}
    (out / "size.json").write_text(json.dumps(record, indent=2))
    rows = "\n".join(
        f"| {t_boost} | {' / '.join(f'{r:.2f}' for r in m['mean_r'])} | {m['monotone']:.0%} | {m['same_class']:.0%} | {m['same_colour']:.0%} | {m['max_colour_change']:.2f} |"
        for t_boost, m in measured.items())
    card = CARD.format(params=sum(p.numel() for p in f_t.parameters()), command=command, **asdict(config), minutes=minutes,
                       first_loss=losses[0], last_loss=losses[-1], n=config.held_out, scales=", ".join(f"{s:g}" for s in SCALES), rows=rows)
    (out / "README.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
