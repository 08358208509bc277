"""The faces data: a deterministic generator and a model-free measurement that reads its attributes back."""

import math
from dataclasses import replace

import pytest
import torch

from training.faces import (BACKGROUNDS, CLASSES, DARK, FOREGROUND, HAIRS, MARGIN, MIN_CURVATURE, MOUTH, RADIUS, SKINS,
                            Faces, make_batch, measure, measure_batch, render, sample_faces)

SIZE = 32


@pytest.fixture(autouse=True)
def one_thread():
    """The measurement is ~150 small tensor operations per image: a second thread adds only synchronisation (4x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def distance(a, b) -> float:
    return float(torch.tensor(a).sub(torch.tensor(b)).norm())


def face_coordinates(faces: Faces, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """u, v (B,H,W) of every pixel centre: (x - cx) / r, (y - cy) / r."""
    grid = torch.arange(size) + 0.5
    u = (grid[None, None, :] - faces.center[:, 0, None, None]) / faces.radius[:, None, None]
    v = (grid[None, :, None] - faces.center[:, 1, None, None]) / faces.radius[:, None, None]
    return u.expand(-1, size, size), v.expand(-1, size, size)


def test_generator_is_deterministic_by_seed():
    a, faces_a = make_batch(16, SIZE, seed=3)
    b, faces_b = make_batch(16, SIZE, seed=3)
    c, _ = make_batch(16, SIZE, seed=4)
    assert torch.equal(a, b) and torch.equal(faces_a.curvature, faces_b.curvature)
    assert not torch.equal(a, c)


def test_generator_draws_attributes_in_range_and_paints_them():
    images, faces = make_batch(300, SIZE, seed=0)
    assert images.shape == (300, 3, SIZE, SIZE) and 0 <= images.min() and images.max() <= 1
    assert set(faces.label.tolist()) == set(range(len(CLASSES)))
    assert ((faces.curvature.abs() >= MIN_CURVATURE) & (faces.curvature.abs() <= 1)).all()  # the classes stand apart
    assert all(("smiling" in CLASSES[k]) == (c > 0) and ("glasses" in CLASSES[k]) == g
               for k, c, g in zip(faces.label.tolist(), faces.curvature.tolist(), faces.glasses.tolist()))
    r_min, r_max = RADIUS[0] * SIZE, RADIUS[1] * SIZE
    assert (r_min <= faces.radius).all() and (faces.radius <= r_max).all()
    margin = MARGIN * SIZE  # background between the face and the border
    assert ((faces.center - faces.radius[:, None]) >= margin - 1e-4).all()
    assert ((faces.center + faces.radius[:, None]) <= SIZE - margin + 1e-4).all()
    # the border is the background; the pixel at v = 0.05 is the skin (clear of the bridge above and the mouth below)
    assert torch.allclose(images[:, :, 0, :], faces.background[:, :, None].expand(-1, -1, SIZE))
    cx, cy = (faces.center + torch.stack([torch.zeros(300), 0.05 * faces.radius], dim=1)).long().unbind(1)
    assert (images[torch.arange(300), :, cy, cx] - faces.skin).abs().max() < 1e-6
    continuous = sample_faces(300, SIZE, torch.Generator().manual_seed(0), min_curvature=0.0).curvature
    assert (continuous.abs() < MIN_CURVATURE).any() and continuous.abs().max() <= 1  # for directions: c anywhere in [-1, 1]


def test_palettes_keep_the_colours_the_measurement_separates_apart():
    # the face is what lies > FOREGROUND from the background; skin, hair and features must stand out from each other
    assert min(distance(b, c) for b in BACKGROUNDS for c in SKINS + HAIRS) > 2 * FOREGROUND
    assert min(distance(h, s) for h in HAIRS for s in SKINS) > FOREGROUND
    assert min(distance(f, s) for f in (DARK, MOUTH) for s in SKINS) > FOREGROUND


def test_measurement_recovers_the_generator_attributes():
    images, faces = make_batch(120, SIZE, seed=1)
    measured = measure_batch(images)
    assert all(m.well_formed for m in measured)
    assert [m.label for m in measured] == faces.label.tolist()  # hence the curvature's sign and the glasses, always
    assert [m.hair for m in measured] == faces.hair.tolist()
    # sub-pixel: r and the centre come from the face's coverage, whose area and centroid anti-aliasing keeps
    # (worst cases measured on 300 faces: 0.07 px and 0.1 px)
    assert max(abs(m.radius - r) for m, r in zip(measured, faces.radius.tolist())) < 0.25
    assert (torch.tensor([m.center for m in measured]) - faces.center).abs().max() < 0.25
    # colours to rounding: the background is the border's median, the skin the median of the face's commonest colour
    assert (torch.tensor([m.background for m in measured]) - faces.background).abs().max() < 1e-3
    assert (torch.tensor([m.skin for m in measured]) - faces.skin).abs().max() < 1e-3
    # the mouth's parabola through 1.5-px strokes at 32 px: errors are <= 0.14 (and under-read |c| by ~4% on average)
    curvature = torch.tensor([m.curvature for m in measured])
    assert (curvature - faces.curvature).abs().max() < 0.2


def test_measurement_reads_a_continuous_curvature():
    faces = sample_faces(80, SIZE, torch.Generator().manual_seed(5), min_curvature=0.0)
    measured = measure_batch(render(faces, SIZE))
    curvature = torch.tensor([m.curvature for m in measured])
    assert all(m.well_formed for m in measured)  # a straight mouth (c = 0) is a mouth
    assert (curvature - faces.curvature).abs().max() < 0.2
    clear = faces.curvature.abs() >= 0.2  # the sign is right wherever |c| exceeds the error
    assert ((curvature[clear] > 0) == (faces.curvature[clear] > 0)).all()
    assert torch.corrcoef(torch.stack([curvature, faces.curvature]))[0, 1] > 0.99


def test_measurement_tolerates_mild_pixel_noise():
    images, faces = make_batch(60, SIZE, seed=2)
    noisy = (images + 0.02 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    measured = measure_batch(noisy)
    assert [m.label for m in measured] == faces.label.tolist()
    # noise of std 0.02 stays under FOREGROUND and the features' 0.15 ramp: none fell out of 200 (>= 95% asserted)
    assert sum(m.well_formed for m in measured) >= 57


def without(images: torch.Tensor, faces: Faces, where: torch.Tensor) -> torch.Tensor:
    """images with the pixels where (B,H,W) painted over in the skin colour."""
    return torch.where(where[:, None], faces.skin[:, :, None, None], images)


def test_broken_images_are_not_well_formed():
    images, faces = make_batch(8, SIZE, seed=4)
    assert all(m.well_formed for m in measure_batch(images))
    u, v = face_coordinates(faces)
    inside = u**2 + v**2 < 0.85**2
    no_mouth = without(images, faces, inside & (v > 0.2))
    assert not any(m.well_formed for m in measure_batch(no_mouth))
    assert all(math.isnan(m.curvature) and m.mouths == 0 for m in measure_batch(no_mouth))
    no_eyes = without(images, faces, inside & (v > -0.5) & (v <= 0.2))
    assert not any(m.well_formed for m in measure_batch(no_eyes))
    one_eye = without(images, faces, inside & (v > -0.5) & (v <= 0.2) & (u < 0))
    assert not any(m.well_formed for m in measure_batch(one_eye))

    small = replace(faces, radius=torch.full((8,), 7.0), center=torch.tensor([[8.5, 16.0]] * 8))
    two = render(small, SIZE) + render(replace(small, center=torch.tensor([[23.5, 16.0]] * 8)), SIZE)
    two = two - faces.background[:, :, None, None]  # both painted over the same background
    assert not any(m.well_formed for m in measure_batch(two))
    cut = render(replace(faces, center=faces.center + torch.tensor([12.0, 0.0])), SIZE)  # across the border
    assert not any(m.well_formed for m in measure_batch(cut))

    noise = torch.rand(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    assert not any(m.well_formed for m in measure_batch(noise))
    blank = faces.background[:, :, None, None].expand(-1, -1, SIZE, SIZE)
    assert not any(m.well_formed for m in measure_batch(blank))
    assert not measure(blank[0]).well_formed and measure(blank[0]).radius == 0
    smear = images.mean(dim=(2, 3), keepdim=True).expand(-1, -1, SIZE, SIZE)  # the colours with no face
    assert not any(m.well_formed for m in measure_batch(smear))


@pytest.mark.parametrize("size", [48, 64])
def test_the_generator_and_measurement_scale_with_the_image(size):
    images, faces = make_batch(12, size, seed=6)
    measured = measure_batch(images)
    assert all(m.well_formed for m in measured) and [m.label for m in measured] == faces.label.tolist()
    assert max(abs(m.radius - r) for m, r in zip(measured, faces.radius.tolist())) < 0.25 * size / SIZE
