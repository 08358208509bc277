"""The text edits of faces-text-32, measured: CycleDiffusion (pipelines.StableCycleDiffusionPipeline) on held-out
generator faces, read back by training.faces' measurement (no model judges).

    python -m training.faces_text_edits --faces 32 --seed 0        # the card's table, and edits.png beside the model

Each edit encodes a face under its own caption and decodes the same latent under a caption that differs in a few
words. An edit succeeds when the measured attribute is the target's, and it keeps the face when every other named
attribute (mouth, glasses, hair, skin, background, as captions.read_attributes names them) reads as the input's:
    smile    frowning faces, "frowning" -> "smiling" (and "a frown" -> "a smile"), replace control and none
    glasses  faces without glasses, "with glasses" added to a caption that leaves glasses unsaid, refine control
    hair     brown-haired faces, "brown hair" -> "red hair", replace control
plus PSNR to the input, and where the word "smiling" attends: the share of its cross-attention map (upsampled to the
image) on the mouth region of the drawn face, against the region's share of the image (a map that ignores the mouth).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from pipelines.core.metrics import psnr
from pipelines import StableCycleDiffusionPipeline, load_text_to_image
from training import captions, faces
from training.evaluate_shapes import save_grid
from training.train_shapes import ROOT

HELD_OUT_SEED = 10**9  # training batch i is seeded seed * 1_000_003 + i: far below this


def plain_caption(named: dict[str, str], glasses: bool = True) -> str:
    """One fixed template, so that edits change only their words: "a frowning face with no glasses, brown hair and
    fair skin on a blue background" (glasses=False leaves the glasses unsaid)."""
    said = captions.phrases(named, "no glasses")
    items = [said[k] for k in (("glasses",) if glasses else ()) + ("hair", "skin")]
    return f"a {named['mouth']} face with {', '.join(items[:-1])} and {items[-1]} on a {said['background']}"


@dataclass(frozen=True)
class Edit:
    """One kind of text edit: the faces it starts from, its prompts, its control and what it should change."""

    name: str
    faces: Callable[[faces.Faces], faces.Faces]  # the drawn faces, set up for the edit
    prompts: Callable[[dict[str, str], random.Random], tuple[str, str]]  # (source, target) from a face's attributes
    control: str | None
    changes: str  # the attribute that should change
    to: str  # ... to this


def frowning(drawn: faces.Faces) -> faces.Faces:
    return replace(drawn, curvature=-drawn.curvature.abs())


def frown_to_smile(named: dict[str, str], rng: random.Random) -> tuple[str, str]:
    """The face's own caption (any template) and the same with the mouth's words swapped."""
    source = captions.caption(named, rng)
    return source, source.replace("frowning", "smiling").replace("a frown", "a smile")


def without_glasses(drawn: faces.Faces) -> faces.Faces:
    return replace(drawn, glasses=torch.zeros_like(drawn.glasses))


def add_glasses(named: dict[str, str], rng: random.Random) -> tuple[str, str]:
    source = plain_caption(named, glasses=False)
    return source, source.replace(" face with ", " face with glasses, ")


def brown_haired(drawn: faces.Faces) -> faces.Faces:
    brown = torch.tensor(faces.HAIRS[captions.HAIR_NAMES.index("brown")])
    return replace(drawn, hair=torch.ones_like(drawn.hair), hair_color=brown.expand_as(drawn.hair_color))


def brown_to_red(named: dict[str, str], rng: random.Random) -> tuple[str, str]:
    source = plain_caption(named)
    return source, source.replace("brown hair", "red hair")


EDITS = {
    "smile, replace": Edit("smile, replace", frowning, frown_to_smile, "replace", "mouth", "smiling"),
    "smile, no control": Edit("smile, no control", frowning, frown_to_smile, None, "mouth", "smiling"),
    "glasses, refine": Edit("glasses, refine", without_glasses, add_glasses, "refine", "glasses", "glasses"),
    "hair, replace": Edit("hair, replace", brown_haired, brown_to_red, "replace", "hair", "red"),
}


def held_out_faces(n: int, seed: int, setup: Callable[[faces.Faces], faces.Faces]) -> tuple[torch.Tensor, faces.Faces]:
    """n generator faces no training batch drew, set up for an edit: images (n,3,32,32) in [0,1] and attributes."""
    drawn = setup(faces.sample_faces(n, 32, torch.Generator().manual_seed(HELD_OUT_SEED + seed)))
    return faces.render(drawn, 32), drawn


def mouth_share(maps: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """(B,) the share of each map's mass (upsampled bilinearly to the mask's size) inside the mask."""
    up = F.interpolate(torch.stack(maps)[:, None].float(), size=mask.shape[-2:], mode="bilinear")[:, 0]
    return (up * mask).sum((1, 2)) / up.sum((1, 2))


@torch.no_grad()
def run_edit(pipe, edit: Edit, n: int, seed: int, steps: int, guidance_scale: float, map_step: int,
             strength: float = 0.8, eta: float = 0.1) -> dict:
    """The edit on n held-out faces: its measured success and keeping, PSNR to the input, the images, and for the
    smile the mouth share of the word "smiling"'s attention."""
    images, drawn = held_out_faces(n, seed, edit.faces)
    rng = random.Random(seed)
    named = [captions.attributes(drawn, i) for i in range(n)]
    sources, targets = zip(*(edit.prompts(a, rng) for a in named))
    out = pipe(prompt=list(targets), source_prompt=list(sources), image=images, strength=strength,
               num_inference_steps=steps, guidance_scale=guidance_scale, eta=eta, output_type="pt",
               cross_attention_control=edit.control, attention_map_step=map_step,
               generator=torch.Generator().manual_seed(seed))
    edited = out.images.float().cpu()
    before = [captions.read_attributes(x) for x in images]
    after = [captions.read_attributes(x) for x in edited]
    others = [k for k in before[0] if k != edit.changes]
    found = dict(
        changed=sum(a[edit.changes] == edit.to for a in after) / n,
        kept={k: sum(a[k] == b[k] for a, b in zip(after, before)) / n for k in others},
        kept_all=sum(all(a[k] == b[k] for k in others) for a, b in zip(after, before)) / n,
        input_read_right=sum(b == w for b, w in zip(before, named)) / n,
        psnr=sum(psnr(x[None], y[None]) for x, y in zip(images, edited)) / n,
    )
    if edit.changes == "mouth" and out.attention_maps:
        smiling = [dict(m["target"]).get("smiling", dict(m["target"]).get("smile")) for m in out.attention_maps]
        mask = faces.in_box(drawn, 32, faces.MOUTH_BOX)  # (B,32,32)
        share, area = mouth_share(smiling, mask), mask.float().mean((1, 2))  # (B,), (B,)
        found["attention"] = dict(mouth_share=float(share.mean()), area_share=float(area.mean()),
                                  peaks_on_mouth=float((share > area).float().mean()))
    return dict(found, images=(images, edited), prompts=(sources[0], targets[0]))


def figure(rows: dict[str, tuple[torch.Tensor, torch.Tensor]], columns: int, path: Path) -> None:
    """Per edit, its first `columns` inputs over their edits, as one PNG."""
    save_grid(torch.cat([t for images, edited in rows.values() for t in (images[:columns], edited[:columns])]), path,
              per_row=columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "assets" / "faces-text-32")
    parser.add_argument("--faces", type=int, default=32, help="held-out faces per edit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (the chain runs strength 0.8 of them)")
    parser.add_argument("--guidance-scale", type=float, default=2.0, help="classifier-free guidance w")
    parser.add_argument("--strength", type=float, default=0.8, help="t0 = strength x T")
    parser.add_argument("--eta", type=float, default=0.1, help="the sampler's noise (CycleDiffusion needs > 0)")
    parser.add_argument("--edits", nargs="*", default=list(EDITS), choices=list(EDITS), metavar="EDIT",
                        help=f"which edits (default all: {', '.join(EDITS)})")
    parser.add_argument("--map-step", type=int, default=20, help="the chain's step whose attention maps are read")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", action="store_true", help="also write edits.png beside the model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = StableCycleDiffusionPipeline(**load_text_to_image(str(args.model)).components())
    pipe.set_progress_bar_config(disable=True)
    began, table, shown = time.perf_counter(), {}, {}
    for name in args.edits:
        found = run_edit(pipe, EDITS[name], args.faces, args.seed, args.steps, args.guidance_scale, args.map_step,
                         args.strength, args.eta)
        shown[name] = found.pop("images")
        table[name] = found
        print(name, json.dumps(found), flush=True)
    print(f"{len(args.edits)} x {args.faces} edits measured in {time.perf_counter() - began:.1f} s")
    if args.figure:
        figure(shown, 8, args.model / "edits.png")


if __name__ == "__main__":
    main()
