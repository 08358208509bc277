"""Coloured shapes with known attributes: a deterministic generator and model-free measurements of an image.

An image is one shape (circle, square or upright triangle) of one colour on a plain dark background.
Every shape is inscribed in the square [cx - r, cx + r] x [cy - r, cy + r]: the circle has radius r, the
square half-side r, the triangle its apex at (cx, cy - r) and its base from (cx - r, cy + r) to (cx + r, cy + r).
Images are (B,3,H,W) in [0,1], anti-aliased by supersampling; positions are in pixels, (0, 0) the top-left corner.

The measurements read an image back without any model: the colour from the pixels furthest from the
background, the coverage alpha of every pixel, and the shape by fitting each class's outline (rendered by
this same generator at the size and centre that the coverage's area and centroid imply) and keeping the
best fit. A generated image is measured back to its own attributes.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import torch

CLASSES = ("circle", "square", "triangle")
BACKGROUND = (0.1, 0.1, 0.1)  # plain dark grey, far from every shape colour
SUPERSAMPLE = 4  # sub-pixels per pixel side for anti-aliasing
AREA = {0: torch.pi, 1: 4.0, 2: 2.0}  # shape area / r^2 per class
CENTROID_DY = {0: 0.0, 1: 0.0, 2: 1 / 3}  # (centroid_y - cy) / r per class: a triangle's mass sits low


@dataclass(frozen=True)
class Shapes:
    """Attributes of a batch of B shapes."""

    label: torch.Tensor  # (B,) long, index into CLASSES
    center: torch.Tensor  # (B,2) float, (cx, cy) in pixels
    size: torch.Tensor  # (B,) float, r in pixels: half the side of the bounding square
    color: torch.Tensor  # (B,3) float in [0,1], RGB


def size_range(image_size: int) -> tuple[float, float]:
    """The r the generator draws from: bounding squares from two fifths to two thirds of the image side."""
    return image_size / 5, image_size / 3


def sample_shapes(n: int, image_size: int, generator: torch.Generator) -> Shapes:
    """n random shapes: uniform class, r in size_range, centre keeping a one-pixel margin, a saturated bright hue."""
    u = torch.rand(n, 7, generator=generator, dtype=torch.float64)
    label = torch.randint(len(CLASSES), (n,), generator=generator)
    r_min, r_max = size_range(image_size)
    r = r_min + (r_max - r_min) * u[:, 0]
    margin = r + 1
    center = margin[:, None] + (image_size - 2 * margin[:, None]) * u[:, 1:3]
    hsv = torch.stack([u[:, 3], 0.6 + 0.4 * u[:, 4], 0.7 + 0.3 * u[:, 5]], dim=1)
    color = torch.tensor([colorsys.hsv_to_rgb(*c) for c in hsv.tolist()], dtype=torch.float64)
    return Shapes(label, center.float(), r.float(), color.float())


def coverage(shapes: Shapes, image_size: int) -> torch.Tensor:
    """alpha: the fraction of each pixel inside the shape, (B,H,W) in [0,1], by SUPERSAMPLE^2 sub-pixels."""
    s = SUPERSAMPLE
    grid = (torch.arange(image_size * s, dtype=torch.float32) + 0.5) / s  # sub-pixel centres
    x = grid[None, None, :] - shapes.center[:, 0, None, None]  # (B,1,Hs) offsets from the centre
    y = grid[None, :, None] - shapes.center[:, 1, None, None]  # (B,Hs,1)
    r = shapes.size[:, None, None]
    circle = x**2 + y**2 <= r**2
    square = (x.abs() <= r) & (y.abs() <= r)
    triangle = (y <= r) & (2 * x.abs() <= y + r)
    label = shapes.label[:, None, None]
    inside = torch.where(label == 0, circle, torch.where(label == 1, square, triangle)).float()
    return torch.nn.functional.avg_pool2d(inside[:, None], s)[:, 0]


def render(shapes: Shapes, image_size: int) -> torch.Tensor:
    """The images of the shapes: background * (1 - alpha) + color * alpha, (B,3,H,W) in [0,1]."""
    alpha = coverage(shapes, image_size)[:, None]  # (B,1,H,W)
    background = torch.tensor(BACKGROUND)[None, :, None, None]
    return background * (1 - alpha) + shapes.color[:, :, None, None] * alpha


def make_batch(n: int, image_size: int, seed: int) -> tuple[torch.Tensor, Shapes]:
    """n images (B,3,H,W) in [0,1] and their attributes, the same for the same (n, image_size, seed)."""
    shapes = sample_shapes(n, image_size, torch.Generator().manual_seed(seed))
    return render(shapes, image_size), shapes


@dataclass(frozen=True)
class Measurement:
    """What an image shows, read without any model."""

    label: int  # best-fitting class, index into CLASSES
    fit: float  # soft IoU of the image's coverage with the best class's outline, in [0,1]
    fits: tuple[float, float, float]  # soft IoU for every class
    center: tuple[float, float]  # (cx, cy) in pixels, of the best-fitting outline
    size: float  # r in pixels, of the best-fitting outline
    color: tuple[float, float, float]  # RGB in [0,1]
    stray: float  # fraction of pixels where the image and the re-rendered best fit differ by > STRAY_LEVEL
    well_formed: bool  # one shape, of one colour, inside the image on the plain background

    @property
    def name(self) -> str:
        return CLASSES[self.label]


STRAY_LEVEL = 0.25  # a pixel is stray when some channel is this far from the re-rendered fit
CLEAN_FIT = 0.8  # generator images fit at >= 0.98; blobs, smears and wrong outlines fit worse
CLEAN_STRAY = 0.03  # generator images have no stray pixel; a second shape (>= 20 px of 256 at 16x16) is > 0.07


def shape_color(image: torch.Tensor) -> torch.Tensor:
    """The shape's colour: the median of the pixels at least 80% as far from the background as the furthest, (3,3,H,W)->(3,)."""
    background = torch.tensor(BACKGROUND)[:, None]
    pixels = image.reshape(3, -1)  # (3,HW)
    distance = (pixels - background).norm(dim=0)
    return pixels[:, distance >= 0.8 * distance.max()].median(dim=1).values


def alpha_of(image: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """Per-pixel coverage: the projection p of (pixel - background) on (color - background), ramped as
    clamp((p - 0.15) / 0.7, 0, 1) so that faint noise counts as background; the ramp is symmetric about 0.5,
    which keeps the area of anti-aliased edges. (3,H,W) -> (H,W) in [0,1]."""
    background = torch.tensor(BACKGROUND)[:, None, None]
    direction = color[:, None, None] - background
    p = ((image - background) * direction).sum(0) / direction.pow(2).sum().clamp_min(1e-6)
    return ((p - 0.15) / 0.7).clamp(0, 1)


def measure(image: torch.Tensor) -> Measurement:
    """Measure one image (3,H,W) in [0,1]: fit every class's outline to its coverage and keep the best."""
    image = image.detach().float().cpu().clamp(0, 1)
    image_size = image.shape[-1]
    color = shape_color(image)
    alpha = alpha_of(image, color)  # (H,W)
    area = alpha.sum().clamp_min(1e-6)
    ys, xs = torch.meshgrid(torch.arange(image_size) + 0.5, torch.arange(image_size) + 0.5, indexing="ij")
    centroid = torch.stack([(alpha * xs).sum(), (alpha * ys).sum()]) / area
    candidates = []
    for label in range(len(CLASSES)):
        r = (area / AREA[label]).sqrt()
        center = centroid - torch.stack([torch.tensor(0.0), CENTROID_DY[label] * r])
        fitted = Shapes(torch.tensor([label]), center[None], r[None], color[None])
        fit_alpha = coverage(fitted, image_size)[0]
        iou = torch.minimum(alpha, fit_alpha).sum() / torch.maximum(alpha, fit_alpha).sum().clamp_min(1e-6)
        candidates.append((float(iou), fitted))
    fits = tuple(iou for iou, _ in candidates)
    best = max(range(len(CLASSES)), key=lambda k: fits[k])
    fitted = candidates[best][1]
    low, high = fitted.center[0] - fitted.size[0], fitted.center[0] + fitted.size[0]
    inside = bool((low >= 0.5).all() and (high <= image_size - 0.5).all())  # background all round, as generated
    stray = float(((render(fitted, image_size)[0] - image).abs().amax(0) > STRAY_LEVEL).float().mean())
    return Measurement(
        label=best,
        fit=fits[best],
        fits=fits,
        center=tuple(fitted.center[0].tolist()),
        size=float(fitted.size[0]),
        color=tuple(color.tolist()),
        stray=stray,
        well_formed=inside and fits[best] >= CLEAN_FIT and stray <= CLEAN_STRAY,
    )


def measure_batch(images: torch.Tensor) -> list[Measurement]:
    """Measure every image of a batch (B,3,H,W) in [0,1]."""
    return [measure(image) for image in images]
