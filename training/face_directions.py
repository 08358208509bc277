"""Learn faces-32's Asyrp smile direction: f_t(h_t, t) that turns the mouth up (scale > 0) or down (< 0).

    python -m training.face_directions      # writes assets/faces-32/directions/smile.safetensors, smile.json, README.md

The size direction of shapes-16 (training.shape_directions) learned the same way, with another pair: a face, and the
same face (skin, hair, glasses, background, centre, radius) with its mouth curvature c changed to
clamp(c + s * c_per_scale, -1, 1). The face is inverted with DDIM and decoded by the asymmetric reverse process at
scale s (AsyrpPipeline.reverse_process); the loss is the mean squared error of the decoded image to the render of
the edited face, back-propagated into f_t. Every face is used at s and at -s. The U-Net stays frozen.

Held-out generator faces are then edited at scales -2..2 and read back with training.faces.measure (no model): the
measured curvature must rise with the scale while the glasses and the skin colour stay. The figures go into the
direction's card, assets/faces-32/directions/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipelines.asyrp.pipeline import AsyrpPipeline
from pipelines.asyrp.directions import save_direction
from training.faces import Faces, measure_batch, render, sample_faces
from training.shape_directions import (ROOT, SCALES, PairedLearning, asyrp_pipeline, edit_strip,
                                       largest_channel_change, learn_with_progress_bar, paired_scales, rises, share)

MODEL_ID = "faces-32"
IMAGE_SIZE = 32
SKIN_KEPT = 0.15  # the largest change of a skin colour channel that counts as kept, the shapes' colour tolerance;
# neighbouring palette skins differ by 0.13 to 0.17 in their most different channel, so the card also gives the largest change


@dataclass
class Config(PairedLearning):
    iterations: int = 100
    batch_size: int = 8  # faces per iteration; each is decoded twice (at s and at -s)
    lr: float = 3e-2
    num_inference_steps: int = 20  # half the tab's 40: one iteration takes half as long
    # The mouth is drawn late: an f_t that edits only t >= 500 (shapes-16's interval) is undone by the unedited steps
    # below. On 8 validation faces (seed 12345, not the held-out ones) after 15 iterations at lr 1e-2, the mean
    # curvature from s = -2 to 2 moved by +0.00 at t_edit 500, +0.18 at 250 and +0.25 at 100; at 250 and lr 3e-2, +0.29.
    t_edit: int = 250
    held_out: int = 32
    c_per_scale: float = 0.3  # mouth curvature the edit should add per unit of scale
    c_max: float = 0.4  # the faces to edit have c in [-c_max, c_max], so that c -/+ max_scale * c_per_scale stays in [-1, 1]


def faces_to_edit(n: int, config: Config, seed: int) -> Faces:
    """n generator faces with c uniform in [-c_max, c_max] (every other attribute as the generator draws it)."""
    generator = torch.Generator().manual_seed(seed)
    drawn = sample_faces(n, IMAGE_SIZE, generator)
    curvature = config.c_max * (2 * torch.rand(n, generator=generator) - 1)
    return dataclasses.replace(drawn, curvature=curvature)


def twice(faces: Faces) -> Faces:
    """The batch of faces followed by itself: every attribute (B,...) -> (2B,...)."""
    return Faces(**{f.name: torch.cat([getattr(faces, f.name)] * 2) for f in dataclasses.fields(faces)})


def smile_pairs(n: int, config: Config, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training pairs, deterministic by seed: n faces, each at a scale s and at -s with |s| uniform in
    [min_scale, max_scale]. Returns (images, targets) (2n,3,32,32) in [0,1] and scales (2n,): the target is the same
    face with curvature clamp(c + s * c_per_scale, -1, 1)."""
    faces = twice(faces_to_edit(n, config, seed))
    scales = paired_scales(n, config, seed + 1)  # (2n,)
    edited = dataclasses.replace(faces, curvature=(faces.curvature + scales * config.c_per_scale).clamp(-1, 1))
    return render(faces, IMAGE_SIZE), render(edited, IMAGE_SIZE), scales


@torch.no_grad()
def measure_smile_edits(pipe: AsyrpPipeline, direction, images: torch.Tensor, config: Config, t_boost: int = 0) -> dict:
    """Edit every image (N,3,32,32) in [0,1] at SCALES and measure the results: the mean measured curvature at each
    scale (over the faces with a mouth), the share of strips whose curvature rises strictly with the scale, the shares
    whose glasses stay those of the reconstruction, whose skin colour stays within SKIN_KEPT per channel and whose
    edits are all well-formed faces, and the largest change of a skin colour channel."""
    curvatures, rising, same_glasses, same_skin, well_formed, skin_change = [], [], [], [], [], []
    for image in images:
        measured = measure_batch(edit_strip(pipe, direction, image, config, t_boost))
        reconstruction = measured[SCALES.index(0.0)]
        c = [m.curvature for m in measured]
        curvatures.append(c)
        rising.append(rises(c))
        same_glasses.append(all(m.glasses == reconstruction.glasses for m in measured))
        change = max(largest_channel_change(m.skin, reconstruction.skin) for m in measured)
        same_skin.append(change <= SKIN_KEPT)
        skin_change.append(change)
        well_formed.append(all(m.well_formed for m in measured))
    curvatures = torch.tensor(curvatures)  # (N,S), nan where no mouth was found
    return {
        "scales": list(SCALES),
        "mean_curvature": [round(v, 3) for v in curvatures.nanmean(0).tolist()],
        "rising": share(rising),
        "same_glasses": share(same_glasses),
        "same_skin": share(same_skin),
        "well_formed": share(well_formed),
        "max_skin_change": round(max(skin_change), 3),
        "n": len(images),
    }


CARD = """# Asyrp directions for faces-32

`smile.safetensors`: an f_t (the paper's implicit function, `pipelines.asyrp.directions.DeltaBlock`, {params:,} parameters)
that turns the mouth up (a smile) at positive scales and down (a frown) at negative ones. Load it in the Asyrp tab
(*load a direction file*, or its examples) or with `pipelines.asyrp.directions.load_direction`.

    {command}

Learned on pairs from the generator instead of the paper's CLIP loss, as the shapes-16 size direction was
(`training/shape_directions.py`): a face with mouth curvature c in [-{c_max}, {c_max}] (-1 the deepest frown, 1 the
widest smile), inverted with {num_inference_steps}-step DDIM and decoded by the asymmetric reverse process at a scale s and at -s
(|s| uniform in [{min_scale}, {max_scale}], t_edit = {t_edit}, no quality boosting), against the same face rendered with
curvature clamp(c + {c_per_scale} s, -1, 1); the loss is the mean squared error, back-propagated through the decoding.
{iterations} iterations of {batch_size} faces, Adam at lr {lr}, seed {seed}, one CPU thread: MSE {first_loss:.4f} -> {last_loss:.4f}
(mean of the first and last ten iterations: {first_ten:.4f} -> {last_ten:.4f}) in {minutes} minutes.

## Measured
{n} held-out generator faces, each edited at scales {scales} with {num_inference_steps} steps, read back by
`training.faces.measure` (no model):

| t_boost | mean measured curvature at each scale | curvature rises strictly with s | glasses kept | skin kept (within {skin_kept}) | all five well formed | largest skin change |
|---|---|---|---|---|---|---|
{rows}

t_edit = {t_edit}, not shapes-16's 500: this model draws the mouth late, and an f_t that edits only t >= 500 is
undone by the unedited steps below it. Quality boosting (t_boost > 0) redraws the fine detail at random and blurs
the trend; the Asyrp tab edits this model over the interval the direction was learned on, without boosting.
"""


def card_row(t_boost: int, m: dict) -> str:
    curvatures = " / ".join(f"{c:+.2f}" for c in m["mean_curvature"])
    return (f"| {t_boost} | {curvatures} | {m['rising']:.0%} | {m['same_glasses']:.0%} | {m['same_skin']:.0%} "
            f"| {m['well_formed']:.0%} | {m['max_skin_change']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=Config.iterations)
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--t-edit", type=int, default=Config.t_edit)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "assets" / MODEL_ID / "directions"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = Config(iterations=args.iterations, seed=args.seed, t_edit=args.t_edit)
    pipe = asyrp_pipeline(MODEL_ID)
    f_t, losses, minutes = learn_with_progress_bar(pipe, config, lambda n, seed: smile_pairs(n, config, seed))

    images = render(faces_to_edit(config.held_out, config, seed=10**9), IMAGE_SIZE)
    measured = {t_boost: measure_smile_edits(pipe, f_t, images, config, t_boost) for t_boost in (0, 200)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = (f"python -m training.face_directions --iterations {config.iterations} --seed {config.seed} --t-edit {config.t_edit} "
               f"--threads {args.threads}")
    save_direction(out / "smile.safetensors", f_t, model_id=MODEL_ID, t_edit=config.t_edit, num_inference_steps=config.num_inference_steps,
                   source="a frowning face", target="a smiling face", note=f"learned on generator pairs: {command}")
    record = {"config": asdict(config), "command": command, "threads": args.threads, "minutes": minutes, "losses": losses, "measured": measured}
    (out / "smile.json").write_text(json.dumps(record, indent=2))
    card = CARD.format(params=sum(p.numel() for p in f_t.parameters()), command=command, **asdict(config), minutes=minutes,
                       first_loss=losses[0], last_loss=losses[-1], first_ten=sum(losses[:10]) / len(losses[:10]),
                       last_ten=sum(losses[-10:]) / len(losses[-10:]), n=config.held_out, skin_kept=SKIN_KEPT,
                       scales=", ".join(f"{s:g}" for s in SCALES), rows="\n".join(card_row(t, m) for t, m in measured.items()))
    (out / "README.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
