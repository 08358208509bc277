"""Learn an Asyrp direction f_t from two texts on a folder of images, on one process or data-parallel over several.

    python -m training.learn_direction --source "face" --target "smiling face" --images FOLDER \\
        --model google/ddpm-celebahq-256 --out smiling.safetensors
    torchrun --standalone --nproc_per_node 2 -m training.learn_direction ...
    accelerate launch --multi_gpu --num_processes 2 -m training.learn_direction ...

The defaults are kwonminki/Asyrp_official's (README, script_train.sh): 100 images, 5 iterations, 40 steps for the
inversion and the training walk (its released directions; the README's example uses 50), SGD with lr 0.5, CLIP
directional loss weight 1, L1 weight 3, t_edit 500 (the script's user-defined t_edit), and, on one process, one image
per optimiser walk (bs_train 1). The f_t and the loss are this project's (pipelines.asyrp.directions.learn_direction).

Data parallel (accelerate; on a CPU both launchers above start gloo processes): the images go in global batches of
--batch-size (default: one per process); each process inverts and walks its contiguous share of every batch, and
the f_t gradients are averaged over the processes at every step (accelerate wraps f_t in DistributedDataParallel),
so N processes learn what one process learns from the same global batches, up to float round-off.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from pipelines import AsyrpPipeline, load_clip, load_diffusion, make_scheduler
from pipelines.asyrp.directions import learn_direction, save_direction
from pipelines.core.images import load_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def image_files(folder, count: int, batch_size: int) -> list[Path]:
    """The first `count` images of a folder (sorted by name), cut to whole global batches."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    files = files[:len(files) - len(files) % batch_size]
    if not files:
        raise SystemExit(f"{folder} has fewer than --batch-size {batch_size} images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def shard(files: list, batch_size: int, rank: int, world: int) -> list:
    """This process's share of every global batch: rows [rank * b, (rank + 1) * b) of each, b = batch_size / world."""
    if batch_size % world:
        raise SystemExit(f"--batch-size {batch_size} does not split over {world} processes; use a multiple of {world}")
    b = batch_size // world
    return [f for start in range(0, len(files), batch_size) for f in files[start + rank * b:start + (rank + 1) * b]]


@torch.no_grad()
def latents(pipe: AsyrpPipeline, files: list, steps: int, batch: int) -> torch.Tensor:
    """x_T of every image by DDIM inversion, `batch` images per call: (N,3,H,W)."""
    size = pipe.unet.config.sample_size
    images = torch.cat([load_image(f, size) for f in files])  # (N,3,H,W) in [0,1]
    return torch.cat([pipe.invert(x, num_inference_steps=steps) for x in images.split(batch)])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="text for what the images show, e.g. 'face'")
    parser.add_argument("--target", required=True, help="text for the edit, e.g. 'smiling face'")
    parser.add_argument("--images", required=True, help="folder of training images")
    parser.add_argument("--model", required=True, help="registry id or local folder of the diffusion model")
    parser.add_argument("--out", required=True, type=Path, help="the direction file to write (.safetensors)")
    parser.add_argument("--clip", default=None, help="CLIP registry id or local folder (default: the app's CLIP)")
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="DDIM steps of the inversion and of the training walk")
    parser.add_argument("--t-edit", type=int, default=500)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    parser.add_argument("--clip-weight", type=float, default=1.0)
    parser.add_argument("--l1-weight", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (default: one image per process)")
    parser.add_argument("--seed", type=int, default=0, help="seeds f_t's initial weights")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    batch_size = args.batch_size or accelerator.num_processes
    files = image_files(args.images, args.num_images, batch_size)
    mine = shard(files, batch_size, accelerator.process_index, accelerator.num_processes)
    mean = lambda loss: accelerator.reduce(torch.tensor(loss, device=accelerator.device), "mean").item()  # all shares
    model = load_diffusion(args.model)
    pipe = AsyrpPipeline(unet=model.unet, scheduler=make_scheduler(model))
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    x_T = latents(pipe, mine, args.steps, batch_size // accelerator.num_processes)  # (N / processes,3,H,W)
    judge = load_clip(args.clip).judge
    torch.manual_seed(args.seed)  # f_t's initial weights: DeltaBlock(C) is the next draw
    direction = learn_direction(
        pipe, None, judge, args.source, args.target, kind="implicit", t_edit=args.t_edit,
        num_inference_steps=args.steps, iterations=args.iterations, lr=args.lr, optimizer=args.optimizer,
        batch_size=batch_size // accelerator.num_processes, clip_weight=args.clip_weight, l1_weight=args.l1_weight,
        x_T=x_T, prepare=accelerator.prepare,
        progress=lambda i, n, loss: accelerator.print(f"iteration {i}/{n}: directional loss {mean(loss):.4f}"),
    )
    accelerator.wait_for_everyone()
    accelerator.print(f"{len(files)} images in batches of {batch_size} over {accelerator.num_processes} "
                      f"process(es): {time.perf_counter() - start:.1f} s")
    if accelerator.is_main_process:
        save_direction(args.out, direction, model_id=args.model, t_edit=args.t_edit, num_inference_steps=args.steps,
                       source=args.source, target=args.target,
                       note=f"training.learn_direction: {len(files)} images, {args.iterations} iterations, "
                            f"{args.optimizer} lr {args.lr}, batch {batch_size}")


if __name__ == "__main__":
    main()
