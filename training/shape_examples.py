"""The example images of the bundled model's tabs: shapes drawn by the generator at 8x the model's resolution.

    python -m training.shape_examples      # writes assets/shapes/*.png

Drawn large, the examples look sharp in the browser; the app shrinks every input to the model's 16x16.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from .shapes import CLASSES, Shapes, render

SCALE = 8  # drawn at 8 x 16 = 128 px
EXAMPLES = {  # name: (class, (cx, cy), r, RGB), in the model's 16x16 pixels
    "red-circle": ("circle", (6.0, 6.5), 4.2, (0.9, 0.15, 0.15)),
    "blue-square": ("square", (9.5, 8.0), 3.6, (0.2, 0.4, 0.95)),
    "green-triangle": ("triangle", (8.0, 9.0), 4.6, (0.2, 0.85, 0.3)),
    "yellow-circle": ("circle", (10.0, 10.0), 3.3, (0.95, 0.85, 0.15)),
}


def draw(label: str, center, size: float, color) -> Image.Image:
    shapes = Shapes(torch.tensor([CLASSES.index(label)]), torch.tensor([center]) * SCALE,
                    torch.tensor([size * SCALE]), torch.tensor([color]))
    pixels = render(shapes, 16 * SCALE)[0]  # (3,128,128) in [0,1]
    return Image.fromarray((pixels.permute(1, 2, 0) * 255).round().byte().numpy())


def main(directory: Path = Path(__file__).resolve().parents[1] / "assets" / "shapes") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, attributes in EXAMPLES.items():
        draw(*attributes).save(directory / f"{name}.png")
        print(directory / f"{name}.png")


if __name__ == "__main__":
    main()
