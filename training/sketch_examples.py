"""The ILVR canvas's examples: hand-drawn-looking strokes, each as the editor's background, a stroke layer and their
composite (what the reference becomes).

    python -m training.sketch_examples      # writes assets/sketches/*.png

- face-strokes: a few colour strokes on a blank canvas, a face for google/ddpm-celebahq-256 at a large N (paint-to-image);
- astronaut-scribble: strokes over the astronaut photo (scribble editing);
- drawn-triangle: a triangle outlined and filled by hand for shapes-16;
- drawn-face: a face drawn with a few strokes for faces-32.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def wobbly(points, seed: int, amount: float = 2.0) -> list[tuple[float, float]]:
    """A polyline through `points`, densified and jittered, as a hand would draw it."""
    rng, out = random.Random(seed), []
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        n = max(2, int(math.dist((x0, y0), (x1, y1)) / 4))
        out += [(x0 + (x1 - x0) * i / n + rng.uniform(-amount, amount),
                 y0 + (y1 - y0) * i / n + rng.uniform(-amount, amount)) for i in range(n)]
    return out + [points[-1]]


def ellipse_points(cx, cy, rx, ry, start=0.0, end=360.0, n=48) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in (start + (end - start) * i / n for i in range(n + 1))]


def strokes(size, lines, seed: int) -> Image.Image:
    """A transparent layer with each (colour, width, points) drawn as a jittered stroke with round ends."""
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for k, (colour, width, points) in enumerate(lines):
        path = wobbly(points, seed + k)
        draw.line(path, fill=colour, width=width, joint="curve")
        for x, y in (path[0], path[-1]):
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=colour)
    return layer


def filled(size, polygons) -> Image.Image:
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for colour, points in polygons:
        draw.polygon(points, fill=colour)
    return layer


def face_strokes() -> tuple[Image.Image, Image.Image]:
    size = (256, 256)
    background = Image.new("RGB", size, "white")
    layer = Image.alpha_composite(
        filled(size, [((92, 120, 170, 255), [(0, 0), (256, 0), (256, 256), (0, 256)]),  # a blue wall
                      ((72, 50, 40, 255), ellipse_points(128, 112, 78, 92)),  # hair
                      ((228, 184, 150, 255), ellipse_points(128, 136, 56, 72))]),  # face
        strokes(size, [((45, 35, 30, 255), 7, [(100, 120), (116, 118)]), ((45, 35, 30, 255), 7, [(140, 118), (156, 120)]),
                       ((180, 80, 80, 255), 8, ellipse_points(128, 160, 18, 8, 20, 160, 12)),
                       ((60, 60, 70, 255), 30, [(40, 256), (80, 220), (176, 220), (216, 256)])], seed=1),
    )
    return background, layer


def astronaut_scribble() -> tuple[Image.Image, Image.Image]:
    background = Image.open(ASSETS / "astronaut.png").convert("RGB")
    layer = strokes(background.size, [((250, 220, 60, 255), 26, [(150, 110), (230, 40), (330, 40), (380, 120)]),  # hair
                                      ((200, 40, 40, 255), 22, [(120, 460), (200, 420), (300, 430), (400, 470)])], seed=2)
    return background, layer


def drawn_triangle() -> tuple[Image.Image, Image.Image]:
    size = (128, 128)
    background = Image.new("RGB", size, (26, 26, 26))
    corners = [(64, 24), (104, 100), (24, 100), (64, 24)]
    layer = Image.alpha_composite(filled(size, [((230, 60, 200, 255), corners)]),
                                  strokes(size, [((230, 60, 200, 255), 8, corners)], seed=3))
    return background, layer


def drawn_face() -> tuple[Image.Image, Image.Image]:
    size = (256, 256)
    background = Image.new("RGB", size, (153, 224, 166))
    layer = Image.alpha_composite(
        filled(size, [((242, 194, 153, 255), ellipse_points(128, 128, 80, 80))]),
        strokes(size, [((40, 30, 30, 255), 14, [(100, 104), (102, 112)]), ((40, 30, 30, 255), 14, [(156, 104), (154, 112)]),
                       ((40, 30, 30, 255), 10, ellipse_points(128, 140, 40, 30, 30, 150, 16))], seed=4),
    )
    return background, layer


SKETCHES = {"face-strokes": face_strokes, "astronaut-scribble": astronaut_scribble,
            "drawn-triangle": drawn_triangle, "drawn-face": drawn_face}


def main(directory: Path = ASSETS / "sketches") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, draw in SKETCHES.items():
        background, layer = draw()
        if name != "astronaut-scribble":  # the photo's background is assets/astronaut.png itself
            background.save(directory / f"{name}-background.png")
        layer.save(directory / f"{name}-layer.png")
        Image.alpha_composite(background.convert("RGBA"), layer).convert("RGB").save(directory / f"{name}.png")
        print(directory / f"{name}.png")


if __name__ == "__main__":
    main()
