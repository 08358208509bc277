"""Cartoon faces with known attributes: a deterministic generator and a model-free measurement of an image.

An image is one face on a plain background: a disc of skin colour, centre (cx, cy) and radius r, optionally hair
(the part of the disc above y = cy - hair_line * r, in a hair colour), two eyes, optionally glasses (a ring around
each eye and a bridge between them) and a mouth whose curvature c in [-1, 1] runs from a frown (c = -1, the corners
down) through a straight line (c = 0) to a smile (c = 1, the corners up). Every feature sits at a fixed place in
face coordinates (u, v) = ((x - cx) / r, (y - cy) / r): the geometry constants below. Images are (B,3,H,W) in
[0,1], anti-aliased by supersampling; positions are in pixels, (0, 0) the top-left corner. The sizes are relative
to the image side and legible from 32x32 up (a mouth stroke of 1.5 px at 32).

The measurement reads an image back without any model: the background from the border, the skin colour as the
commonest colour of the face, the face's coverage alpha of every pixel (edge pixels unmixed between the background
and the skin or hair colour), whose area and centroid give r and the centre, then the dark features inside the face:
an eye at the centre of the dark mass on either side of the upper face, glasses as dark rings round the eyes, the
mouth as the dark blob of the lower face, whose parabola gives the curvature. A generated image is measured back to
its own attributes; `well_formed` judges whether an image is one such face at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import scipy.ndimage
import torch

CLASSES = ("frowning", "smiling", "frowning with glasses", "smiling with glasses")  # label = smiling + 2 * glasses
SKINS = ((1.0, 0.87, 0.75), (0.95, 0.76, 0.6), (0.85, 0.64, 0.47), (0.68, 0.48, 0.33), (0.52, 0.36, 0.24))
HAIRS = ((0.1, 0.08, 0.08), (0.35, 0.2, 0.1), (1.0, 0.9, 0.35), (0.8, 0.35, 0.1))  # black, brown, blond, ginger
BACKGROUNDS = ((0.55, 0.75, 0.95), (0.6, 0.88, 0.65), (0.75, 0.68, 0.95), (0.25, 0.3, 0.4), (0.12, 0.45, 0.5))
DARK = (0.1, 0.08, 0.08)  # eyes and glasses
MOUTH = (0.6, 0.1, 0.15)
SUPERSAMPLE = 4  # sub-pixels per pixel side for anti-aliasing

# geometry, in units of the image side (radius, margin, strokes) or of r (face coordinates u, v)
RADIUS = (10 / 32, 12 / 32)  # r / image side
MARGIN = 2 / 32  # background between the face and the border / image side
STROKE = 1.5 / 32  # mouth stroke width / image side; the glasses' stroke is two thirds of it
EYE_U, EYE_V, EYE_RADIUS = 0.4, -0.15, 0.14
RING_RADIUS = 0.28  # centre line of a glasses ring, around its eye
MOUTH_V, MOUTH_HALF_WIDTH, MOUTH_SAG = 0.5, 0.4, 0.3  # v of the mouth's mean height; corners to middle at |c| = 1
HAIR_LINE = (0.6, 0.8)  # hair covers v < -hair_line: clear of the glasses' rings (top at v = -0.43 - half a stroke)
P_GLASSES, P_HAIR = 0.5, 0.75
MOUTH_BOX = (0.15, 0.85, 0.55)  # v from, v to, |u| up to: a box round the mouth (v 0.35..0.65 at |c| = 1)
HAIR_BOX = (-1.05, -0.5, 0.85)  # a box round the hair (v < -HAIR_LINE[0] inside the disc), clear of the glasses
MIN_CURVATURE = 0.35  # |c| of labelled faces: the corners sit >= 0.35 * 0.3 r (~1 px) above or below the middle


@dataclass(frozen=True)
class Faces:
    """Attributes of a batch of B faces."""

    curvature: torch.Tensor  # (B,) float in [-1,1]: < 0 frowning, > 0 smiling
    glasses: torch.Tensor  # (B,) bool
    hair: torch.Tensor  # (B,) bool
    hair_line: torch.Tensor  # (B,) float in HAIR_LINE: hair covers v < -hair_line (when hair)
    center: torch.Tensor  # (B,2) float, (cx, cy) in pixels
    radius: torch.Tensor  # (B,) float, r in pixels
    skin: torch.Tensor  # (B,3) float in [0,1], RGB
    hair_color: torch.Tensor  # (B,3) float in [0,1], RGB (drawn only when hair)
    background: torch.Tensor  # (B,3) float in [0,1], RGB

    @property
    def label(self) -> torch.Tensor:
        """(B,) long, index into CLASSES."""
        return (self.curvature > 0).long() + 2 * self.glasses.long()


def sample_faces(n: int, image_size: int, generator: torch.Generator, min_curvature: float = MIN_CURVATURE) -> Faces:
    """n random faces: |c| uniform in [min_curvature, 1] with a random sign (min_curvature 0: c uniform in [-1, 1]),
    glasses and hair by coin flips, r in RADIUS, the centre keeping MARGIN of background, palette colours."""
    u = torch.rand(n, 8, generator=generator, dtype=torch.float64)
    pick = [torch.randint(len(p), (n,), generator=generator) for p in (SKINS, HAIRS, BACKGROUNDS)]
    sign = torch.where(u[:, 1] < 0.5, -1.0, 1.0)
    curvature = sign * (min_curvature + (1 - min_curvature) * u[:, 0])
    r = image_size * (RADIUS[0] + (RADIUS[1] - RADIUS[0]) * u[:, 2])
    margin = r + image_size * MARGIN
    center = margin[:, None] + (image_size - 2 * margin[:, None]) * u[:, 3:5]
    hair_line = HAIR_LINE[0] + (HAIR_LINE[1] - HAIR_LINE[0]) * u[:, 5]
    skin, hair_color, background = (torch.tensor(p)[k] for p, k in zip((SKINS, HAIRS, BACKGROUNDS), pick))
    return Faces(curvature.float(), u[:, 6] < P_GLASSES, u[:, 7] < P_HAIR, hair_line.float(), center.float(),
                 r.float(), skin, hair_color, background)


def mouth_curve(u: torch.Tensor, curvature: torch.Tensor) -> torch.Tensor:
    """v of the mouth's centre line at u: MOUTH_V + c * MOUTH_SAG * (1/2 - (u / MOUTH_HALF_WIDTH)^2), the corners
    MOUTH_SAG * c above the middle (any shape broadcasting)."""
    return MOUTH_V + curvature * MOUTH_SAG * (0.5 - (u / MOUTH_HALF_WIDTH) ** 2)


def in_box(faces: Faces, image_size: int, box: tuple[float, float, float]) -> torch.Tensor:
    """(B,H,W) bool: the pixels whose centres lie in box (v from, v to, |u| up to: MOUTH_BOX, HAIR_BOX) of each
    face, in units of its radius."""
    grid = torch.arange(image_size) + 0.5
    u = (grid[None, None, :] - faces.center[:, 0, None, None]) / faces.radius[:, None, None]
    v = (grid[None, :, None] - faces.center[:, 1, None, None]) / faces.radius[:, None, None]
    v_from, v_to, half_width = box
    return (v >= v_from) & (v <= v_to) & (u.abs() <= half_width)


def layers(faces: Faces, image_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """What is painted, in order: (mask (B,Hs,Ws) bool on the SUPERSAMPLE grid, colour (B,3)) per layer."""
    s = SUPERSAMPLE
    grid = (torch.arange(image_size * s, dtype=torch.float32) + 0.5) / s  # sub-pixel centres
    r = faces.radius[:, None, None]
    x = grid[None, None, :] - faces.center[:, 0, None, None]  # (B,1,Ws) pixels from the centre
    y = grid[None, :, None] - faces.center[:, 1, None, None]  # (B,Hs,1)
    half_stroke = image_size * STROKE / 2
    face = x**2 + y**2 <= r**2
    hair = face & (y < -faces.hair_line[:, None, None] * r) & faces.hair[:, None, None]
    eye_distance = torch.minimum((x - EYE_U * r) ** 2, (x + EYE_U * r) ** 2).add((y - EYE_V * r) ** 2).sqrt()
    eyes = eye_distance <= EYE_RADIUS * r
    rings = (eye_distance - RING_RADIUS * r).abs() <= 2 / 3 * half_stroke
    bridge = (x.abs() <= (EYE_U - RING_RADIUS) * r) & ((y - EYE_V * r).abs() <= 2 / 3 * half_stroke)
    glasses = (rings | bridge) & faces.glasses[:, None, None]
    c = faces.curvature[:, None, None]
    slope = -2 * c * MOUTH_SAG * (x / r) / MOUTH_HALF_WIDTH**2  # dv/du of the centre line
    off_curve = (y - r * mouth_curve(x / r, c)).abs() / (1 + slope**2).sqrt()  # ~ distance to the centre line
    mouth = (off_curve <= half_stroke) & (x.abs() <= MOUTH_HALF_WIDTH * r)
    dark, red = torch.tensor(DARK).expand(len(r), 3), torch.tensor(MOUTH).expand(len(r), 3)
    return [(face, faces.skin), (hair, faces.hair_color), (eyes, dark), (glasses, dark), (mouth, red)]


def render(faces: Faces, image_size: int) -> torch.Tensor:
    """The images of the faces: each layer painted over the background at SUPERSAMPLE^2 sub-pixels per pixel,
    then averaged, (B,3,H,W) in [0,1]."""
    canvas = faces.background[:, :, None, None].expand(-1, -1, image_size * SUPERSAMPLE, image_size * SUPERSAMPLE)
    for mask, color in layers(faces, image_size):
        canvas = torch.where(mask[:, None], color[:, :, None, None], canvas)
    return torch.nn.functional.avg_pool2d(canvas, SUPERSAMPLE)


def make_batch(n: int, image_size: int, seed: int) -> tuple[torch.Tensor, Faces]:
    """n images (B,3,H,W) in [0,1] and their attributes, the same for the same (n, image_size, seed)."""
    faces = sample_faces(n, image_size, torch.Generator().manual_seed(seed))
    return render(faces, image_size), faces


@dataclass(frozen=True)
class Measurement:
    """What an image shows, read without any model."""

    background: tuple[float, float, float]  # RGB in [0,1], the median of the border
    skin: tuple[float, float, float]  # RGB in [0,1], the commonest colour of the face
    center: tuple[float, float]  # (cx, cy) in pixels, the centroid of the face's coverage
    radius: float  # r in pixels, from the face's covered area pi r^2
    hair: bool  # a colour other than the skin's fills the top of the face
    eyes: int  # 0..2: sides of the upper face (left, right of the centre) whose dark mass centres on a filled disc
    mouths: int  # dark blobs in the lower face
    curvature: float  # c of the parabola fitted to the largest mouth blob (nan without one): < 0 frowning, > 0 smiling
    glasses: bool  # dark rings round the eyes
    well_formed: bool  # one face on a plain background: a disc of skin of plausible size, two eyes, one mouth

    @property
    def label(self) -> int:
        """Index into CLASSES."""
        return int(self.curvature > 0) + 2 * int(self.glasses)

    @property
    def name(self) -> str:
        return CLASSES[self.label]


FOREGROUND = 0.15  # a pixel this far (RGB norm) from the background is the face's: skins and hairs are >= 0.3 from it
SAME_COLOR = 0.08  # colours this close (RGB norm) are one colour: the skin, the hair
FEATURE_ZONE = (0.85, -0.5)  # features are read where rho < 0.85 (clear of the edge) and v > -0.5 (clear of hair)
UPPER_V = 0.2  # the upper face (eyes, glasses: v -0.48..0.18) ends here, the mouth (0.275..0.725) lies below
MIN_BLOB = 1.0  # blobs of less feature coverage (in pixels) are specks, ignored
EYE_LEVEL = 0.6  # feature coverage at an eye's centre: ~1 on a filled disc, ~0 amid two eyes or in a ring
EYE_SPREAD = 0.2  # r.m.s. distance / r of a side's dark mass from its centre: 0.1 for an eye alone, ~0.24 in glasses
RING_LEVEL = 0.35  # mean feature coverage along a glasses ring: ~0.7 there, ~0 on skin
PLAIN = 0.02  # at most this fraction of the pixels off the face may differ from the background by > FOREGROUND ...
FILLED = 0.02  # ... and of the pixels inside the face's disc be background


def background_color(image: torch.Tensor) -> torch.Tensor:
    """The median of the one-pixel border, where the generator leaves a margin of background, (3,H,W) -> (3,)."""
    border = torch.cat([image[:, 0], image[:, -1], image[:, 1:-1, 0], image[:, 1:-1, -1]], dim=1)  # (3, 4(W-1))
    return border.median(dim=1).values


def commonest_color(pixels: torch.Tensor) -> torch.Tensor:
    """The median of the largest set of pixels within SAME_COLOR of one of them, (3,N) -> (3,)."""
    close = torch.cdist(pixels.T, pixels.T) <= SAME_COLOR  # (N,N)
    return pixels[:, close[close.sum(1).argmax()]].median(dim=1).values


def face_coverage(image: torch.Tensor, background: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """alpha: the fraction of each pixel covered by the face, (H,W) in [0,1]. Interior pixels (foreground, holes
    filled since a feature's edge may mix to a colour near the background's, with all eight neighbours foreground)
    count 1; an edge pixel is unmixed as background * (1 - a) + c * a, c the colour of `colors` (K,3) that explains
    it best (the skin, the hair), which keeps the area of anti-aliased edges."""
    p = image - background[:, None, None]  # (3,H,W)
    d = colors - background  # (K,3)
    a = (torch.einsum("chw,kc->khw", p, d) / d.pow(2).sum(1)[:, None, None]).clamp(0, 1)  # (K,H,W)
    residual = (p[None] - a[:, None] * d[:, :, None, None]).norm(dim=1)  # (K,H,W)
    unmixed = a.gather(0, residual.argmin(0, keepdim=True))[0]
    foreground = torch.from_numpy(scipy.ndimage.binary_fill_holes((p.norm(dim=0) > FOREGROUND).numpy()))
    return torch.where(interior(foreground), 1.0, unmixed)


def interior(mask: torch.Tensor) -> torch.Tensor:
    """The pixels of mask (H,W) bool whose eight neighbours are all in it too."""
    return torch.nn.functional.avg_pool2d(mask.float()[None], 3, stride=1, padding=1)[0] == 1


def feature_coverage(image: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """How much of each pixel is a dark feature drawn on the skin, (H,W) in [0,1]: the larger projection p of
    (pixel - skin) on (F - skin) for F the eyes' and glasses' DARK and the MOUTH, ramped as
    clamp((p - 0.15) / 0.7, 0, 1) so that faint noise counts as skin; the ramp is symmetric about 0.5, which keeps
    the area of anti-aliased edges."""
    p = image - skin[:, None, None]
    d = torch.tensor((DARK, MOUTH)) - skin  # (2,3)
    projection = (torch.einsum("chw,kc->khw", p, d) / d.pow(2).sum(1)[:, None, None]).amax(0)
    return ((projection - 0.15) / 0.7).clamp(0, 1)


def blobs(coverage: torch.Tensor, zone: torch.Tensor) -> list[torch.Tensor]:
    """The 4-connected blobs of pixels at least half covered inside zone (H,W) bool, as masks (H,W) bool,
    specks below MIN_BLOB left out."""
    labels, n = scipy.ndimage.label(((coverage >= 0.5) & zone).numpy())
    masks = [torch.from_numpy(labels == k) for k in range(1, n + 1)]
    return [m for m in masks if coverage[m].sum() >= MIN_BLOB]


def fit_curvature(coverage: torch.Tensor, mouth: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> float:
    """c of the mouth: v = a + b u + q u^2 fitted by least squares to the mouth blob grown by a pixel (its
    anti-aliased fringe), weighted by the coverage; c = -q MOUTH_HALF_WIDTH^2 / MOUTH_SAG inverts mouth_curve."""
    grown = torch.nn.functional.max_pool2d(mouth.float()[None], 3, stride=1, padding=1)[0].bool()
    w, u, v = coverage[grown], u[grown], v[grown]
    basis = torch.stack([torch.ones_like(u), u, u**2], dim=1) * w.sqrt()[:, None]
    q = torch.linalg.lstsq(basis.double(), (v * w.sqrt()).double()[:, None]).solution[2, 0]
    return float(-q * MOUTH_HALF_WIDTH**2 / MOUTH_SAG)


def bilinear(values: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """values (H,W) sampled bilinearly at points (N,2) of (x, y) in pixels, pixel centres at +0.5, -> (N,)."""
    grid = (points / values.shape[-1] * 2 - 1)[None, None]  # grid_sample's [-1,1] spans the pixels' outer edges
    return torch.nn.functional.grid_sample(values[None, None], grid, align_corners=False)[0, 0, 0]


def ring_darkness(coverage: torch.Tensor, eye: torch.Tensor, r: float, samples: int = 32) -> float:
    """The mean feature coverage along the circle of radius RING_RADIUS * r round an eye (x, y): ~0.7 on a glasses
    ring, 0 on skin."""
    angle = torch.arange(samples) * 2 * torch.pi / samples
    return float(bilinear(coverage, eye + RING_RADIUS * r * torch.stack([angle.cos(), angle.sin()], dim=1)).mean())


def side_mass(coverage: torch.Tensor, side: torch.Tensor, xs: torch.Tensor,
              ys: torch.Tensor) -> tuple[float, torch.Tensor, float]:
    """The dark mass of one side of the upper face (side (H,W) bool): its sum in pixels, centroid (x, y) and r.m.s.
    distance from the centroid in pixels. An eye in glasses is the centre of its ring, so its side's centroid."""
    w = coverage * side
    mass = w.sum().clamp_min(1e-6)
    centroid = torch.stack([(w * xs).sum(), (w * ys).sum()]) / mass
    spread = ((w * ((xs - centroid[0]) ** 2 + (ys - centroid[1]) ** 2)).sum() / mass).sqrt()
    return float(mass), centroid, float(spread)


def measure(image: torch.Tensor) -> Measurement:
    """Measure one image (3,H,W) in [0,1]: the background, the face's colour and disc, then its features."""
    image = image.detach().float().cpu().clamp(0, 1)
    size = image.shape[-1]
    background = background_color(image)
    foreground = (image - background[:, None, None]).norm(dim=0) > FOREGROUND
    if foreground.sum() < 4:  # blank: no face
        plain = tuple(background.tolist())
        return Measurement(background=plain, skin=plain, center=(size / 2, size / 2), radius=0.0, hair=False, eyes=0,
                           mouths=0, curvature=float("nan"), glasses=False, well_formed=False)
    skin = commonest_color(image[:, foreground])
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")

    # 1. the hair: another colour in the top of the face (off its anti-aliased edge), placed by the foreground's area
    # and centroid; its colour from the pixels furthest from the skin, not the hair line's mixtures of the two
    r0, cy0 = (foreground.sum() / torch.pi).sqrt(), ys[foreground].mean()
    off_skin = (image - skin[:, None, None]).norm(dim=0)
    top = interior(foreground) & (ys < cy0 - HAIR_LINE[0] * r0) & (off_skin > FOREGROUND)
    hair = bool(top.sum() >= 4)
    if hair:
        colors = torch.stack([skin, commonest_color(image[:, top & (off_skin >= 0.8 * off_skin[top].max())])])
    else:
        colors = skin[None]

    # 2. the disc: r from the covered area pi r^2, the centre from the coverage's centroid
    alpha = face_coverage(image, background, colors)
    area = alpha.sum()
    radius = float((area / torch.pi).sqrt())
    center = torch.stack([(alpha * xs).sum(), (alpha * ys).sum()]) / area
    u, v = (xs - center[0]) / radius, (ys - center[1]) / radius
    rho = (u**2 + v**2).sqrt()

    # 3. the features: an eye at the centre of each upper side's dark mass, glasses as dark rings round them,
    # the mouth as the dark blobs of the lower face (at this size an eye and its ring are too close to tell blobs apart)
    coverage = feature_coverage(image, skin)
    zone = (rho < FEATURE_ZONE[0]) & (v > FEATURE_ZONE[1])
    sides = [side_mass(coverage, zone & (v <= UPPER_V) & side, xs, ys) for side in (u < 0, u >= 0)]
    eye_centers = torch.stack([centroid for _, centroid, _ in sides])  # (2,2): left, right
    masses = torch.tensor([mass for mass, _, _ in sides])
    eyes = int(((masses >= MIN_BLOB) & (bilinear(coverage, eye_centers) >= EYE_LEVEL)).sum())
    glasses = sum(ring_darkness(coverage, eye, radius) for eye in eye_centers) / 2 > RING_LEVEL
    lower = blobs(coverage, zone & (v > UPPER_V))
    curvature = fit_curvature(coverage, max(lower, key=lambda m: coverage[m].sum()), u, v) if lower else float("nan")

    # 4. one well-formed face: a filled disc of plausible size inside the image on a plain background, two eyes,
    # nothing else above but the glasses (an eye alone is compact), one mouth at least half the generator's width
    off_face = rho > 1 + 1 / radius
    plain = ((image - background[:, None, None]).norm(dim=0) > FOREGROUND)[off_face].float().mean() <= PLAIN
    disc = (alpha[rho < 1 - 1 / radius] < 0.5).float().mean() <= FILLED
    plausible = 0.8 * RADIUS[0] * size <= radius <= 1.2 * RADIUS[1] * size and bool(
        (center - radius >= 0.5).all() and (center + radius <= size - 0.5).all())
    two_eyes = eyes == 2 and (glasses or all(spread <= EYE_SPREAD * radius for _, _, spread in sides))
    one_mouth = len(lower) == 1 and bool(xs[lower[0]].max() - xs[lower[0]].min() + 1 >= MOUTH_HALF_WIDTH * radius)
    return Measurement(
        background=tuple(background.tolist()),
        skin=tuple(skin.tolist()),
        center=tuple(center.tolist()),
        radius=radius,
        hair=hair,
        eyes=eyes,
        mouths=len(lower),
        curvature=curvature,
        glasses=glasses,
        well_formed=bool(plain and disc and plausible and two_eyes and one_mouth),
    )


def measure_batch(images: torch.Tensor) -> list[Measurement]:
    """Measure every image of a batch (B,3,H,W) in [0,1]."""
    return [measure(image) for image in images]
