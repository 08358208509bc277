"""Measure a bundled model (shapes-16 or faces-32) without using any model to judge it.

    python -m training.evaluate_shapes [--model assets/shapes-16] [--per-class 64] [--unconditional 192] [--steps 100] [--card]

Samples with the DDPM sampler of the model's own scheduler (respaced to --steps) and reads every sample back with
the measurement of the model's data set (MODEL/training.json names it): training.shapes.measure fits each shape's
outline, training.faces.measure reads a face's colours, eyes, mouth and glasses. Reports:
- class-conditional: the share of samples judged the requested class, and the share that are well formed;
- unconditional (the null class): the share that are well formed, and how the judged classes are spread;
- the noise-aware classifier's accuracy on generator images noised to several t.
Prints a markdown table, writes runs/<name>/eval.json and a grid of samples runs/<name>/samples.png, and with
--card the model card MODEL/README.md (from MODEL/training.json, which the training export writes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from pipelines.models.loading import load_classifier, load_diffusion, make_scheduler
from pipelines.core.sampling import eps_theta, initial_noise
from training.train_shapes import DATA

ROOT = Path(__file__).resolve().parent.parent


@torch.no_grad()
def sample(model, class_labels: torch.Tensor | None, n: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """n DDPM samples (B,3,H,W) in [0,1] of class_labels (B,), or of the null class when None."""
    scheduler = make_scheduler(model, "ddpm")
    scheduler.set_timesteps(steps)
    x = initial_noise(model.unet, n, generator, model.unet.device)
    for t in scheduler.timesteps:
        x = scheduler.step(eps_theta(model.unet, x, t, class_labels), t, x, generator=generator).prev_sample
    return (x.float().cpu() + 1) / 2


@torch.no_grad()
def classifier_accuracy(data, classifier, scheduler, image_size: int, t: int, n: int = 512) -> float:
    """Accuracy of p_phi(y | x_t, t) on n fresh images of the data module `data`, noised to t (seeded apart from
    training's batches)."""
    images, attributes = data.make_batch(n, image_size, seed=10**9 + t)
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(t))
    x_t = scheduler.add_noise(images * 2 - 1, eps, torch.full((n,), t))
    logits = classifier(x_t.to(classifier.device, classifier.dtype), t)
    return (logits.argmax(-1).cpu() == attributes.label).float().mean().item()


def save_grid(images: torch.Tensor, path: Path, per_row: int = 16, zoom: int = 4) -> None:
    """Save images (N,3,H,W) in [0,1], N a multiple of per_row, as one PNG grid enlarged `zoom` times."""
    n, _, h, w = images.shape
    grid = images.reshape(n // per_row, per_row, 3, h, w).permute(0, 3, 1, 4, 2).reshape(n // per_row * h, per_row * w, 3)
    image = Image.fromarray((grid.clamp(0, 1) * 255).round().byte().numpy())
    image.resize((image.width * zoom, image.height * zoom), Image.NEAREST).save(path)


HEADERS = {
    "shapes": """# shapes-16: a small class-conditional DDPM of coloured shapes

Bundled with the Space so that every tab runs offline, on a CPU, in seconds, and so that tests can check what
each steering method means: the images have known attributes that `training/shapes.py` measures without a model.

## Data
`training/shapes.py`: one shape per 16x16 image, class uniform over circle, square, upright triangle; the shape
inscribed in a square of half-side r uniform in [3.2, 5.3] px, centred anywhere that leaves a one-pixel margin;
a saturated colour (HSV hue uniform, saturation 0.6-1, value 0.7-1) on a plain dark-grey background (0.1, 0.1, 0.1);
anti-aliased by 4x4 supersampling. A fresh batch every step, deterministic by seed: no data set to download.
""",
    "faces": """# faces-32: a small class-conditional DDPM of cartoon faces

Bundled with the Space so that the papers' own edits (a smile, glasses) run offline, on a CPU, in seconds, and so
that tests can measure them: every attribute of these faces is read back by `training/faces.py` without a model.

## Data
`training/faces.py`: one face per 32x32 image: a disc of radius 10-12 px in one of 5 skin colours, centred anywhere
that leaves 2 px of background, on one of 5 plain background colours; two dark eyes; a red mouth, a parabola whose
curvature c runs from -1 (frown) to 1 (smile), |c| >= 0.35 for the labelled classes; glasses (two rings and a bridge)
with probability 1/2; hair of one of 4 colours over the top of the face with probability 3/4. Class =
smiling + 2 x glasses: {classes}. Anti-aliased by 4x4 supersampling; a fresh batch every step, deterministic by seed.

The noise-aware classifier pools its last feature map by attention, as guided-diffusion's classifiers do. A first
classifier pooled by a mean (as shapes-16's) learned glasses but never smile against frown, 48.8% accuracy on clean
images over 5,400 steps: a smile and a frown have the same local edges, on opposite sides, and a mean forgets where
they are. It was replaced (`classifier_pool`); its training time is part of the minutes below.
""",
}

CARD = """---
license: apache-2.0
library_name: diffusers
pipeline_tag: unconditional-image-generation
---

{header}
## Models
- `unet/`: `UNet2DModel`, {unet_params:,} parameters, blocks {blocks}, self-attention at {attention} px,
  `num_class_embeds` {n_embeds}: labels {labels} = {classes}, label {null} = the null class (unconditional). The weights are the EMA (decay {ema_decay}).
- `scheduler/`: `DDPMScheduler` as the google/ddpm-* models: 1000 steps, linear betas 1e-4..0.02, clip_sample,
  fixed_small. Sample with fewer steps (`set_timesteps(50..100)`).
- `classifier/`: `pipelines.NoiseAwareClassifier`, {classifier_params:,} parameters, {pool}-pooled,
  p_phi(y | x_t, t) over the {n_classes} classes, for classifier guidance (`pipelines.load_classifier("{name}")`).
- `directions/`: Asyrp h-space directions learned by `{directions_script}`, each with its measured effect
  in [`directions/README.md`](directions/README.md).

## Training
    {command}

Seed {seed}, batch {batch_size}, AdamW at lr {lr} (linear warm-up over {warmup} steps, then constant), gradient norm
clipped at 1. The U-Net: {unet_steps} steps of eps-prediction MSE with t uniform over 0..999 and the label dropped to the
null class with probability {p_uncond} (classifier-free training). The classifier: {classifier_steps} steps of
cross-entropy on x_t of the same schedule. {minutes} minutes of training (the time spent in the training steps) on
one CPU thread (`--threads 1`, the default) of a 2-core machine shared with other work.

## Measured quality
    {eval_command}

Samples from {steps} DDPM steps, judged by `training.{data}.measure` (no model involved):

{table}
"""


def table(results: dict) -> str:
    """The measured figures as markdown rows."""
    rows = [
        ("class-conditional samples judged the requested class", results["conditional_judged_requested"]),
        *((f"&nbsp; requested {name}", v["judged_requested"]) for name, v in results["per_class"].items()),
        ("class-conditional samples that are well formed", results["conditional_well_formed"]),
        ("unconditional samples that are well formed", results["unconditional_well_formed"]),
        *((f"&nbsp; unconditional samples judged {name}", v) for name, v in results["unconditional_classes"].items()),
        *((f"classifier accuracy on generator images noised to t = {t}", v)
          for t, v in results.get("classifier_accuracy", {}).items()),
    ]
    return "| measure | value |\n|---|---|\n" + "\n".join(f"| {name} | {value:.1%} |" for name, value in rows)


def write_card(model_dir: Path, results: dict) -> Path:
    """model_dir/README.md from training.json (written by the export) and the measured results."""
    record = json.loads((model_dir / "training.json").read_text())
    config = record["config"]
    classes = DATA[config["data"]].CLASSES
    model = load_diffusion(str(model_dir))
    classifier = load_classifier(model_dir / "classifier")
    unet = model.unet.config
    attention = [unet.sample_size // 2**k for k, kind in enumerate(unet.down_block_types) if "Attn" in kind]
    card = CARD.format(
        header=HEADERS[config["data"]].format(classes=", ".join(f"{k} {name}" for k, name in enumerate(classes))),
        unet_params=sum(p.numel() for p in model.unet.parameters()), blocks=tuple(config["block_out_channels"]),
        attention=" and ".join(f"{a}x{a}" for a in attention), n_embeds=unet.num_class_embeds,
        labels=", ".join(map(str, range(len(classes)))), classes=", ".join(classes), null=len(classes),
        ema_decay=config["ema_decay"], n_classes=len(classes), pool=classifier.config.pool,
        directions_script={"shapes": "training/shape_directions.py", "faces": "training/face_directions.py"}[config["data"]], name=config["name"], data=config["data"],
        classifier_params=sum(p.numel() for p in classifier.parameters()), command=record["command"],
        seed=config["seed"], batch_size=config["batch_size"], lr=config["lr"], warmup=config["warmup"],
        unet_steps=record["unet_steps"], p_uncond=config["p_uncond"], classifier_steps=record["classifier_steps"],
        minutes=record["minutes"], steps=results["steps"], eval_command=results["command"],
        table=table(results) + f"\n\n{results['n_conditional']} class-conditional and {results['n_unconditional']} "
                               f"unconditional samples, measured in {results['seconds']} s.",
    )
    (model_dir / "README.md").write_text(card)
    return model_dir / "README.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "assets" / "shapes-16"))
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--unconditional", type=int, default=192)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--card", action="store_true", help="write the model card, MODEL/README.md, with the figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    model = load_diffusion(args.model)
    data = DATA[json.loads((Path(args.model) / "training.json").read_text())["config"]["data"]]
    generator = torch.Generator(model.unet.device).manual_seed(args.seed)
    device = model.unet.device

    model_arg = Path(args.model).resolve()
    shown = model_arg.relative_to(ROOT) if model_arg.is_relative_to(ROOT) else model_arg
    command = (f"python -m training.evaluate_shapes --model {shown} --per-class {args.per_class} "
               f"--unconditional {args.unconditional} --steps {args.steps} --seed {args.seed}{' --card' * args.card}")
    results: dict = {"model": str(shown), "command": command, "steps": args.steps, "seed": args.seed, "per_class": {}}
    grids = []
    conditional = []
    for k, name in enumerate(data.CLASSES):
        images = sample(model, torch.full((args.per_class,), k, device=device), args.per_class, args.steps, generator)
        measured = data.measure_batch(images)
        conditional += measured
        grids.append(images[:16])  # one row per class, then one unconditional row
        results["per_class"][name] = {
            "judged_requested": sum(m.label == k for m in measured) / len(measured),
            "well_formed": sum(m.well_formed for m in measured) / len(measured),
        }
    n_cond = len(conditional)
    results["n_conditional"], results["n_unconditional"] = n_cond, args.unconditional
    results["conditional_judged_requested"] = sum(
        results["per_class"][name]["judged_requested"] * args.per_class for name in data.CLASSES) / n_cond
    results["conditional_well_formed"] = sum(m.well_formed for m in conditional) / n_cond

    images = sample(model, None, args.unconditional, args.steps, generator)
    grids.append(images[:16])
    measured = data.measure_batch(images)
    results["unconditional_well_formed"] = sum(m.well_formed for m in measured) / len(measured)
    results["unconditional_classes"] = {name: sum(m.label == k for m in measured) / len(measured)
                                        for k, name in enumerate(data.CLASSES)}

    classifier_dir = Path(args.model) / "classifier"
    if classifier_dir.is_dir():
        classifier = load_classifier(classifier_dir)
        scheduler = make_scheduler(model, "ddpm")
        size = model.unet.config.sample_size
        results["classifier_accuracy"] = {t: classifier_accuracy(data, classifier, scheduler, size, t) for t in (0, 250, 500, 750, 900)}
    results["seconds"] = round(time.perf_counter() - began, 1)

    out = ROOT / "runs" / Path(args.model).name
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2))
    save_grid(torch.cat(grids), out / "samples.png")

    print(table(results))
    print(f"\nmeasured in {results['seconds']} s; wrote {out / 'eval.json'} and {out / 'samples.png'}")
    if args.card:
        print(f"wrote {write_card(Path(args.model), results)}")


if __name__ == "__main__":
    main()
