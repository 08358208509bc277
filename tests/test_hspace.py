"""h-space's properties on the bundled faces-32 model, read by training.faces.measure (no model judges): one Δh
(the shipped smile f_t) turns the mouth up on nearly every face while one face's Δε does not carry over; noise of
Δh's norm keeps faces well formed in h and breaks them in ε; Δh_t's consistency is a cosine; two directions combine
at 1/√2 each; and DDIB, CycleDiffusion's deterministic baseline, reconstructs with one class and translates with
another. Every generator is seeded."""

import math

import pytest
import torch

from pipelines import AsyrpPipeline
from pipelines.core import images
from pipelines.models import loading
from pipelines.cycle_diffusion.ddib import ddib
from pipelines.asyrp.directions import load_direction
from pipelines.asyrp.probes import combination
from pipelines.core.metrics import psnr
from runners import hspace
from training.face_directions import Config, faces_to_edit
from training.faces import make_batch, measure_batch, render

MODEL_ID = "faces-32"
SMILE = "assets/faces-32/directions/smile.safetensors"


@pytest.fixture(scope="module")
def faces_model():
    return loading.load_diffusion(MODEL_ID)


@pytest.fixture(scope="module")
def face_files(tmp_path_factory):
    """16 generator faces with mouth curvature in [-0.4, 0.4] (room to smile), as PNG files."""
    folder = tmp_path_factory.mktemp("faces")
    paths = []
    for b, image in enumerate(images.postprocess(render(faces_to_edit(16, Config(), seed=7), 32) * 2 - 1)):
        image.save(folder / f"face-{b}.png")
        paths.append(str(folder / f"face-{b}.png"))
    return paths


def test_one_delta_h_smiles_every_face_and_one_faces_delta_eps_does_not(face_files):
    result = hspace.homogeneity(hspace.Settings(model_id=MODEL_ID, images=tuple(face_files), scale=1.5))
    up, change = result.numbers["mouths_up"], result.numbers["curvature_change"]
    # measured: Δh turns the mouth up (curvature + 0.05 or more) on 16 of 16 faces, face 1's Δε on 4 of 16 (face 1
    # itself among them): Δε is a change of pixels where face 1's mouth is, and the other faces' mouths are elsewhere
    assert up["delta_h"] >= 0.8 * 16, change
    assert up["delta_eps"] <= 6, change
    # on face 1, adding its own Δε to its ε is the Δh edit itself (up to float rounding)
    assert change["delta_eps"][0] == pytest.approx(change["delta_h"][0], abs=0.01)
    assert len(result.pictures) == 4 * 16 and result.statement and not result.stopped


def test_noise_of_delta_hs_norm_keeps_faces_in_h_and_breaks_them_in_eps(face_files):
    result = hspace.robustness(hspace.Settings(model_id=MODEL_ID, images=tuple(face_files[:8])), norms=(1.0,))
    formed, quality = result.numbers["well_formed"], result.numbers["psnr_to_reconstruction"]
    # measured: noise of |sΔh_t| in h leaves 8 of 8 well formed (PSNR 34.4 dB to the reconstruction), the same norm
    # in ε none (4.8 dB); on all 16 faces, in ε a hundredth of that norm already breaks 4 and a thirtieth all 16
    assert formed["reconstruction"] == 1 and formed["h"][0] >= 7 / 8, formed
    assert formed["eps"][0] <= 1 / 8, formed
    assert quality["h"][0] > 25 > 10 > quality["eps"][0], quality
    assert len(result.pictures) == 8 * 3 and result.statement


def test_consistency_is_a_cosine_and_exactly_one_for_a_constant_direction(face_files):
    two = tuple(face_files[:2])
    learned = hspace.consistency(hspace.Settings(model_id=MODEL_ID, images=two))
    cos = torch.tensor(learned.numbers["cosine"])
    steps = len(learned.numbers["timesteps"])  # t >= t_edit = 250 of 20 steps: 950 ... 250
    assert cos.shape == (steps, steps) == (15, 15) and torch.allclose(cos.diagonal(), torch.ones(steps))
    # measured 0.21: the shipped f_t turns between the early and the late steps (blocks in the heat map)
    assert -1 <= learned.numbers["mean_off_diagonal"] <= 1 and learned.numbers["mean_off_diagonal"] < 0.9
    constant = hspace.consistency(hspace.Settings(model_id=MODEL_ID, images=two, k=1))  # a principal direction
    assert constant.numbers["mean_off_diagonal"] == 1.0
    for result in (learned, constant):
        assert result.statement and result.pictures[0][0].size == (steps, steps)


def test_two_directions_combine_at_one_over_root_two_each(faces_model):
    pipe = AsyrpPipeline(unet=faces_model.unet, scheduler=loading.make_scheduler(faces_model, "ddim"))
    pipe.set_progress_bar_config(disable=True)
    smile, _ = load_direction(SMILE, shape=pipe.h_shape, model_id=MODEL_ID)
    x_T = pipe.invert(render(faces_to_edit(1, Config(), seed=3), 32), num_inference_steps=20)
    edit = dict(t_edit=250, t_boost=0, num_inference_steps=20, output_type="pt")
    # the smile at s_1 = 1 with a second direction at s_2 = 0 is the smile alone at 1/√2
    zero = torch.zeros(pipe.h_shape)
    mixed = pipe(x_T=x_T, direction=combination([smile, zero], [(1.0, 0.0)], 20), **edit).images
    alone = pipe(x_T=x_T, direction=smile, scale=1 / math.sqrt(2), **edit).images
    assert torch.allclose(mixed, alone, atol=1e-5)


def test_linear_combination_view_shows_the_grid(face_files):
    result = hspace.linear_combination(hspace.Settings(model_id=MODEL_ID, images=tuple(face_files[:1])), 1,
                                       grid=(0.0, 2.0))
    assert [caption for _, caption in result.pictures][::3] == ["s₁ = +0, s₂ = +0", "s₁ = +2, s₂ = +2"]
    curvature = result.numbers["curvature"]  # cells (0,0), (0,2), (2,0), (2,2)
    assert curvature[2] > curvature[0] + hspace.RISE and curvature[3] > curvature[1] + hspace.RISE  # the smile s_1
    assert 0 <= result.numbers["additivity_gap"] and result.statement


def test_a_stopped_view_returns_at_once(face_files):
    import threading

    stop = threading.Event()
    stop.set()
    result = hspace.consistency(hspace.Settings(model_id=MODEL_ID, images=tuple(face_files[:1])), stop=stop)
    assert result.stopped and result.statement == "Stopped."


def test_ddib_reconstructs_with_one_class_and_translates_with_another(faces_model):
    x, faces = make_batch(64, 32, seed=0)
    frowning = x[(faces.label == 0).nonzero()[:4, 0]]  # (4,3,32,32)
    scheduler = loading.make_scheduler(faces_model, "ddim")
    steps = []
    run = dict(strength=0.5, num_inference_steps=20, output_type="pt")
    same = ddib(faces_model.unet, scheduler, frowning, class_labels=0, target_class_labels=0,
                callback=lambda step, t, x_t, x0_hat: steps.append(t), **run).images
    smiling = ddib(faces_model.unet, scheduler, frowning, class_labels=0, target_class_labels=1, **run).images
    # CycleDiffusion's timesteps (951, 901, ..., 1 at 20 steps): up to t0 = 451 and back, K = 10 steps each way
    assert steps == list(range(1, 452, 50)) + list(range(451, 0, -50))
    # measured: 38.2 dB for one class (the DDIM inversion's error only), 26.8 dB across classes
    assert psnr(same, frowning) > 33 > psnr(smiling, frowning)
    assert [m.name for m in measure_batch(same)] == ["frowning"] * 4
    assert [m.name for m in measure_batch(smiling)] == ["smiling"] * 4  # measured 4 of 4
