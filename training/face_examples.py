"""The example images of faces-32's tabs: faces drawn by the generator at 8x the model's resolution.

    python -m training.face_examples      # writes assets/faces/*.png

Drawn large, the examples look sharp in the browser; the app shrinks every input to the model's 32x32. Every
attribute is explicit, in the model's 32x32 pixels, so the files are the same on every run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from .faces import BACKGROUNDS, HAIRS, SKINS, Faces, render

SCALE = 8  # drawn at 8 x 32 = 256 px
NO_HAIR = dict(hair=False, hair_line=0.7, hair_color=HAIRS[0])
EXAMPLES = {  # name: the face's attributes in the model's 32x32 pixels
    "frowning": dict(curvature=-0.6, glasses=False, **NO_HAIR, center=(16.0, 16.5), radius=11.0,
                     skin=SKINS[1], background=BACKGROUNDS[0]),
    "smiling": dict(curvature=0.7, glasses=False, hair=True, hair_line=0.7, hair_color=HAIRS[1], center=(15.5, 16.0),
                    radius=11.5, skin=SKINS[0], background=BACKGROUNDS[1]),
    "frowning-glasses": dict(curvature=-0.6, glasses=True, hair=True, hair_line=0.75, hair_color=HAIRS[0],
                             center=(16.5, 16.0), radius=11.5, skin=SKINS[2], background=BACKGROUNDS[2]),
    # the ILVR reference: a light face off the centre on a dark background, ginger hair, its mouth straight
    "drawn-face": dict(curvature=0.0, glasses=False, hair=True, hair_line=0.65, hair_color=HAIRS[3],
                       center=(13.0, 18.0), radius=10.5, skin=SKINS[0], background=BACKGROUNDS[4]),
}


def draw(curvature, glasses, hair, hair_line, center, radius, skin, hair_color, background) -> Image.Image:
    """One face rendered at SCALE times the model's resolution, as a 256x256 RGB image."""
    faces = Faces(torch.tensor([curvature]), torch.tensor([glasses]), torch.tensor([hair]), torch.tensor([hair_line]),
                  torch.tensor([center]) * SCALE, torch.tensor([radius * SCALE]), torch.tensor([skin]),
                  torch.tensor([hair_color]), torch.tensor([background]))
    pixels = render(faces, 32 * SCALE)[0]  # (3,256,256) in [0,1]
    return Image.fromarray((pixels.permute(1, 2, 0) * 255).round().byte().numpy())


def main(directory: Path = Path(__file__).resolve().parents[1] / "assets" / "faces") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, attributes in EXAMPLES.items():
        draw(**attributes).save(directory / f"{name}.png", optimize=True)
        print(directory / f"{name}.png")


if __name__ == "__main__":
    main()
