"""The bundled model's Asyrp size direction: its training pairs, its training step, and what the shipped f_t does,
measured by training.shapes (no model)."""

import pytest
import torch

from pipelines.models import loading
from pipelines.asyrp.pipeline import AsyrpPipeline
from pipelines.asyrp.interval import asyrp_interval
from pipelines.asyrp.directions import DeltaBlock, load_direction
from training.shape_directions import Config, measure_edits, paired_loss, shapes_to_edit, size_pairs
from training.shapes import measure_batch, render
from ui.asyrp_tab import SIZE_DIRECTION


@pytest.fixture(scope="module")
def pipe(bundled):
    pipe = AsyrpPipeline(unet=bundled.unet, scheduler=loading.make_scheduler(bundled, "ddim"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_size_pairs_resize_the_same_shape_by_the_scale():
    config = Config()
    images, targets, scales = size_pairs(8, config, seed=3)
    assert torch.equal(scales[:8], -scales[8:]) and (scales[:8].abs() >= config.min_scale).all()
    assert (scales[:8].abs() <= config.max_scale).all()
    assert torch.equal(images[:8], images[8:])  # every shape at s and at -s
    source, target = measure_batch(images), measure_batch(targets)
    for m, t, s in zip(source, target, scales.tolist()):
        assert t.label == m.label and t.well_formed
        assert t.size - m.size == pytest.approx(s * config.r_per_scale, abs=0.25)
        assert max(abs(a - b) for a, b in zip(t.color, m.color)) < 0.02
        assert max(abs(a - b) for a, b in zip(t.center, m.center)) < 0.3


def test_one_training_step_lowers_the_paired_loss_through_the_asymmetric_decoding(pipe):
    """f_t starts at zero (the unedited reconstruction); the gradient reaches it through every edited P_t of the
    decoding, so one small step along it lowers the loss on its batch."""
    config = Config(num_inference_steps=20, lr=1e-3)
    images, targets, scales = size_pairs(4, config, seed=5)
    torch.manual_seed(0)
    f_t = DeltaBlock(pipe.h_shape[0])
    before = paired_loss(pipe, f_t, images, targets, scales, config)
    before.backward()
    assert f_t.conv2.weight.grad.abs().sum() > 0
    with torch.no_grad():
        for p in f_t.parameters():
            p -= 1e-2 * p.grad / p.grad.norm().clamp_min(1e-12)
        after = paired_loss(pipe, f_t, images, targets, scales, config)
    assert after < before


def test_the_shipped_size_direction_grows_the_measured_size_with_the_scale(pipe):
    """Held-out generator shapes (not the script's), edited at s = -2, -1, 0, 1, 2 with the tab's interval."""
    direction, meta = load_direction(SIZE_DIRECTION, shape=pipe.h_shape, model_id="shapes-16")
    config = Config(t_edit=int(meta["t_edit"]), num_inference_steps=int(meta["num_inference_steps"]))
    assert config.t_edit == asyrp_interval("shapes-16")[0]  # the tab edits over the interval it was learned on
    images = render(shapes_to_edit(8, config, seed=7), 16)
    result = measure_edits(pipe, direction, images, config, t_boost=asyrp_interval("shapes-16")[1])
    r = result["mean_r"]
    assert all(a < b for a, b in zip(r, r[1:])), result  # the mean measured size grows with the scale
    assert r[-1] - r[0] >= 0.5, result  # the targets span 2 px; the shipped f_t reaches about 0.8 px (see its card)
    assert result["monotone"] >= 6 / 8 and result["same_class"] >= 6 / 8, result  # shape by shape, nearly always
    assert result["max_colour_change"] < 0.3, result  # brighter or darker with the size, never another colour
