"""The shapes data: a deterministic generator, measurements that read its attributes back, the noise-aware classifier."""

import pytest
import torch

from pipelines import NoiseAwareClassifier
from pipelines.models import loading, registry
from training.shapes import BACKGROUND, CLASSES, Shapes, make_batch, measure, measure_batch, render, size_range


def test_generator_is_deterministic_by_seed():
    a, shapes_a = make_batch(16, 16, seed=3)
    b, shapes_b = make_batch(16, 16, seed=3)
    c, _ = make_batch(16, 16, seed=4)
    assert torch.equal(a, b) and torch.equal(shapes_a.center, shapes_b.center)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("image_size", [16, 24, 32])
def test_generator_draws_attributes_in_range_and_paints_them(image_size):
    images, shapes = make_batch(300, image_size, seed=0)
    assert images.shape == (300, 3, image_size, image_size) and 0 <= images.min() and images.max() <= 1
    assert set(shapes.label.tolist()) == set(range(len(CLASSES)))
    r_min, r_max = size_range(image_size)
    assert r_min <= shapes.size.min() and shapes.size.max() <= r_max
    # the bounding square keeps a one-pixel margin inside the image
    assert ((shapes.center - shapes.size[:, None]) >= 1).all() and ((shapes.center + shapes.size[:, None]) <= image_size - 1).all()
    # corners are background (the margin), the centre pixel is the shape's colour (every shape covers its centre)
    assert torch.allclose(images[:, :, 0, 0], torch.tensor(BACKGROUND).expand(300, 3))
    cx, cy = shapes.center.long().unbind(1)
    centre_pixels = images[torch.arange(300), :, cy, cx]  # (B,3)
    assert (centre_pixels - shapes.color).abs().max() < 1e-6


def test_areas_follow_the_class():
    """A circle covers pi r^2, a square 4 r^2, a triangle 2 r^2 pixels (up to anti-aliasing error)."""
    r = torch.full((3,), 6.0)
    shapes = Shapes(torch.arange(3), torch.full((3, 2), 16.0), r, torch.ones(3, 3))
    from training.shapes import coverage

    areas = coverage(shapes, 32).sum(dim=(1, 2))
    expected = torch.tensor([torch.pi, 4.0, 2.0]) * 36
    assert torch.allclose(areas, expected, rtol=0.02)  # 4x4 supersampling: edge pixels err by < 1/16 each


@pytest.mark.parametrize("image_size", [16, 24])
def test_measurement_recovers_the_generator_attributes(image_size):
    images, shapes = make_batch(120, image_size, seed=1)
    measured = measure_batch(images)
    assert [m.label for m in measured] == shapes.label.tolist()
    assert all(m.well_formed for m in measured)
    # sub-pixel precision: the outline is fitted from the coverage's area and centroid, which anti-aliasing keeps
    assert max(abs(m.size - r) for m, r in zip(measured, shapes.size.tolist())) < 0.25
    assert (torch.tensor([m.center for m in measured]) - shapes.center).abs().max() < 0.3
    assert (torch.tensor([m.color for m in measured]) - shapes.color).abs().max() < 1e-4  # interior pixels are the colour


def test_measurement_tolerates_mild_pixel_noise():
    images, shapes = make_batch(120, 16, seed=2)
    noisy = (images + 0.04 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    measured = measure_batch(noisy)
    assert [m.label for m in measured] == shapes.label.tolist()
    assert sum(m.well_formed for m in measured) >= 114  # noise of std 0.04 is below the 0.25 stray level: >= 95% stay clean


def test_two_shapes_noise_and_blank_images_are_not_clean():
    size = 16
    left = Shapes(torch.tensor([0, 1, 2]), torch.tensor([[4.5, 4.5]] * 3), torch.full((3,), 3.4), torch.tensor([[1.0, 0.2, 0.2]] * 3))
    right = Shapes(torch.tensor([1, 2, 0]), torch.tensor([[11.5, 11.5]] * 3), torch.full((3,), 3.4), torch.tensor([[0.2, 0.4, 1.0]] * 3))
    background = torch.tensor(BACKGROUND)[None, :, None, None]
    two = render(left, size) + render(right, size) - background  # both painted over the same background
    assert not any(m.well_formed for m in measure_batch(two))
    same_colour = render(left, size) + render(Shapes(right.label, right.center, right.size, left.color), size) - background
    assert not any(m.well_formed for m in measure_batch(same_colour))
    noise = torch.rand(8, 3, size, size, generator=torch.Generator().manual_seed(0))
    assert not any(m.well_formed for m in measure_batch(noise))
    assert not measure(background[0].expand(3, size, size)).well_formed
    smear = render(left, size).mean(dim=(2, 3), keepdim=True).expand(3, 3, size, size)  # a colour with no outline
    assert not any(m.well_formed for m in measure_batch(smear))


def test_noise_aware_classifier_saves_loads_and_ignores_x0_hat(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "cache", loading.ModelCache())
    torch.manual_seed(0)
    classifier = NoiseAwareClassifier(sample_size=16, num_classes=3, block_out_channels=(16, 32), norm_num_groups=8)
    classifier.save_pretrained(tmp_path / "classifier", safe_serialization=True)
    loaded = loading.load_classifier(tmp_path / "classifier")
    assert loaded is loading.load_classifier(tmp_path / "classifier")  # cached
    x_t = torch.randn(4, 3, 16, 16)
    logits = loaded(x_t, 500)
    assert logits.shape == (4, 3) and torch.equal(logits, classifier.eval()(x_t, torch.full((4,), 500)))
    assert torch.equal(loaded(x_t, 500, x0_hat=torch.zeros_like(x_t)), logits)
    assert not torch.allclose(loaded(x_t, 10), logits)  # the noise level is an input
    x = x_t.requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.log_softmax(loaded(x, 500), -1)[:, 0].sum(), x)
    assert grad.abs().sum() > 0  # differentiable in x_t, as classifier guidance needs


def test_bundled_model_is_the_default_without_a_gpu(monkeypatch):
    monkeypatch.delenv("STEER_MODEL", raising=False)
    monkeypatch.setattr(registry, "device_and_dtype", lambda: (torch.device("cpu"), torch.float32))
    registry._hub_default_can_serve.cache_clear()
    assert registry.default_model_id() == registry.BUNDLED_MODEL
    assert registry.REGISTRY["shapes-16"].class_names == CLASSES
    monkeypatch.setenv("STEER_MODEL", "google/ddpm-cat-256")
    assert registry.default_model_id() == "google/ddpm-cat-256"  # the environment still decides
    registry._hub_default_can_serve.cache_clear()


def test_bundled_model_resolves_inside_the_repository_or_says_how_to_train_it(monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "ROOT", tmp_path)
    with pytest.raises(loading.ModelLoadError, match="python -m training.train_shapes"):
        loading.resolve("shapes-16", "ddpm")
    (tmp_path / "assets" / "shapes-16").mkdir(parents=True)
    assert loading.resolve("shapes-16", "ddpm") == tmp_path / "assets" / "shapes-16"


def test_bundled_model_is_the_default_on_a_gpu_without_the_hub(monkeypatch, tmp_path):
    monkeypatch.delenv("STEER_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache: no copy of the hub default
    monkeypatch.setattr(registry, "device_and_dtype", lambda: (torch.device("cuda"), torch.float16))
    registry._hub_default_can_serve.cache_clear()
    assert registry.default_model_id() == registry.BUNDLED_MODEL
    (tmp_path / "copies" / registry.DEFAULT_MODEL).mkdir(parents=True)
    monkeypatch.setenv("STEER_MODEL_DIR", str(tmp_path / "copies"))
    registry._hub_default_can_serve.cache_clear()
    assert registry.default_model_id() == registry.DEFAULT_MODEL  # a local copy serves without the hub
    registry._hub_default_can_serve.cache_clear()


def test_ilvr_with_N4_keeps_the_reference_position_and_colour(bundled):
    from pipelines.ilvr import ILVRPipeline

    references, shapes = make_batch(4, 16, seed=7)
    pipe = ILVRPipeline(unet=bundled.unet, scheduler=loading.make_scheduler(bundled))
    pipe.set_progress_bar_config(disable=True)
    errors = {"ilvr": [], "plain": []}
    for reference, center, color in zip(references, shapes.center, shapes.color):
        for mode, range_t in (("ilvr", 0), ("plain", 1000)):  # range_t = T: no conditioning, plain DDPM from the same noise
            out = pipe(reference[None], down_factor=4, range_t=range_t, num_inference_steps=25, batch_size=4,
                       generator=torch.Generator().manual_seed(0), output_type="pt")
            for m in measure_batch(out.images):
                errors[mode].append(((torch.tensor(m.center) - center).norm().item(), (torch.tensor(m.color) - color).abs().max().item()))
    ilvr, plain = torch.tensor(errors["ilvr"]), torch.tensor(errors["plain"])
    # phi_4 keeps a 4x4 image: the shape's centre to about a pixel and its colour's mean, so every sample follows the reference
    assert ilvr[:, 0].max() < 1.5 and ilvr[:, 1].max() < 0.2
    # and that is ILVR's doing: without it the same noise lands anywhere, in any colour
    assert plain[:, 0].mean() > 3 * ilvr[:, 0].mean() and plain[:, 1].mean() > 3 * ilvr[:, 1].mean()
