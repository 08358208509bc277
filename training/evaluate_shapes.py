"""Measure the bundled shapes model without using any model to judge it.

    python -m training.evaluate_shapes [--model assets/shapes-16] [--per-class 64] [--unconditional 192] [--steps 100]

Samples with the DDPM sampler of the model's own scheduler (respaced to --steps) and reads every sample back with
training.shapes.measure (the shape by fitting its outline, the colour, the one-clean-shape check). Reports:
- class-conditional: the share of samples judged the requested class, and the share that are one clean shape;
- unconditional (the null class): the share that are one clean shape, and how the judged classes are spread;
- the noise-aware classifier's accuracy on generator images noised to several t.
Prints a markdown table, writes runs/<name>/eval.json and a grid of samples runs/<name>/samples.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from pipelines.models import load_classifier, load_diffusion, make_scheduler
from pipelines.sampling import eps_theta, initial_noise
from training.shapes import CLASSES, make_batch, measure_batch

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
def classifier_accuracy(classifier, scheduler, image_size: int, t: int, n: int = 512) -> float:
    """Accuracy of p_phi(y | x_t, t) on n fresh generator images noised to t (seeded apart from training's batches)."""
    images, shapes = make_batch(n, image_size, seed=10**9 + t)
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(t))
    x_t = scheduler.add_noise(images * 2 - 1, eps, torch.full((n,), t))
    logits = classifier(x_t.to(classifier.device, classifier.dtype), t)
    return (logits.argmax(-1).cpu() == shapes.label).float().mean().item()


def save_grid(images: torch.Tensor, path: Path, per_row: int = 16, zoom: int = 4) -> None:
    """Save images (N,3,H,W) in [0,1], N a multiple of per_row, as one PNG grid enlarged `zoom` times."""
    n, _, h, w = images.shape
    grid = images.reshape(n // per_row, per_row, 3, h, w).permute(0, 3, 1, 4, 2).reshape(n // per_row * h, per_row * w, 3)
    image = Image.fromarray((grid.clamp(0, 1) * 255).round().byte().numpy())
    image.resize((image.width * zoom, image.height * zoom), Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "assets" / "shapes-16"))
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--unconditional", type=int, default=192)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    model = load_diffusion(args.model)
    generator = torch.Generator(model.unet.device).manual_seed(args.seed)
    device = model.unet.device

    results: dict = {"model": args.model, "steps": args.steps, "seed": args.seed, "per_class": {}}
    grids = []
    conditional = []
    for k, name in enumerate(CLASSES):
        images = sample(model, torch.full((args.per_class,), k, device=device), args.per_class, args.steps, generator)
        measured = measure_batch(images)
        conditional += measured
        grids.append(images[:16])  # one row per class, then one unconditional row
        results["per_class"][name] = {
            "judged_requested": sum(m.label == k for m in measured) / len(measured),
            "clean": sum(m.clean for m in measured) / len(measured),
        }
    n_cond = len(conditional)
    results["conditional_judged_requested"] = sum(
        results["per_class"][name]["judged_requested"] * args.per_class for name in CLASSES) / n_cond
    results["conditional_clean"] = sum(m.clean for m in conditional) / n_cond

    images = sample(model, None, args.unconditional, args.steps, generator)
    grids.append(images[:16])
    measured = measure_batch(images)
    results["unconditional_clean"] = sum(m.clean for m in measured) / len(measured)
    results["unconditional_classes"] = {name: sum(m.label == k for m in measured) / len(measured)
                                        for k, name in enumerate(CLASSES)}

    classifier_dir = Path(args.model) / "classifier"
    if classifier_dir.is_dir():
        classifier = load_classifier(classifier_dir)
        scheduler = make_scheduler(model, "ddpm")
        size = model.unet.config.sample_size
        results["classifier_accuracy"] = {t: classifier_accuracy(classifier, scheduler, size, t) for t in (0, 250, 500, 750, 900)}
    results["seconds"] = round(time.perf_counter() - began, 1)

    out = ROOT / "runs" / Path(args.model).name
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2))
    save_grid(torch.cat(grids), out / "samples.png")

    print(f"| measure ({args.steps} DDPM steps) | value |\n|---|---|")
    print(f"| class-conditional samples judged the requested class ({n_cond}) | {results['conditional_judged_requested']:.1%} |")
    for name in CLASSES:
        print(f"| &nbsp; {name} | {results['per_class'][name]['judged_requested']:.1%} |")
    print(f"| class-conditional samples that are one clean shape | {results['conditional_clean']:.1%} |")
    print(f"| unconditional samples that are one clean shape ({args.unconditional}) | {results['unconditional_clean']:.1%} |")
    spread = ", ".join(f"{name} {share:.0%}" for name, share in results["unconditional_classes"].items())
    print(f"| unconditional samples judged as | {spread} |")
    for t, accuracy in results.get("classifier_accuracy", {}).items():
        print(f"| classifier accuracy on generator images at t = {t} | {accuracy:.1%} |")
    print(f"\nmeasured in {results['seconds']} s; wrote {out / 'eval.json'} and {out / 'samples.png'}")


if __name__ == "__main__":
    main()
