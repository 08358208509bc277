"""What the methods mean on the bundled faces-32 model: ILVR keeps a reference's layout and colours, class
translation changes the mouth or adds glasses and keeps the rest, and the shipped smile direction turns the mouth up
with the scale. Every judgement is training.faces.measure's (no model); every generator is seeded."""

import pytest
import torch
from test_app import no_progress, shown_image

from pipelines import AsyrpPipeline, CycleDiffusionPipeline, ILVRPipeline
from pipelines.core import images
from pipelines.models import loading
from pipelines.asyrp.directions import load_direction
from pipelines.asyrp.interval import asyrp_interval
from training.face_directions import (Config, faces_to_edit, largest_channel_change, measure_smile_edits, rises,
                                      smile_pairs)
from training.faces import make_batch, measure, measure_batch, render

MODEL_ID = "faces-32"
DRAWN_FACE = "assets/faces/drawn-face.png"  # a light face off the centre on a dark background (training/face_examples.py)
STEPS = 25  # few sampler steps: what the tests check is decided in the first, noisiest steps
SMILE_DIRECTION = "assets/faces-32/directions/smile.safetensors"  # training/face_directions.py: smiling at s > 0


@pytest.fixture(scope="module")
def faces_model():
    return loading.load_diffusion(MODEL_ID)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def centre_distance(a, b) -> float:
    """Pixels between two centres (x, y)."""
    return float(torch.tensor(a).sub(torch.tensor(b)).norm())


@pytest.fixture(scope="module")
def ilvr(faces_model):
    pipe = ILVRPipeline(unet=faces_model.unet, scheduler=loading.make_scheduler(faces_model, "ddpm"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def reference():
    """The drawn face (1,3,32,32) in [0,1] and its measurement."""
    image = images.load_image(DRAWN_FACE, 32)
    return image, measure(image[0])


def ilvr_samples(pipe, reference: torch.Tensor, down_factor: int, range_t: int) -> list:
    """8 ILVR samples of the reference (1,3,32,32), seed 0, measured."""
    samples = pipe(reference, down_factor=down_factor, range_t=range_t, num_inference_steps=STEPS, batch_size=8,
                   generator=gen(0), output_type="pt").images
    return measure_batch(samples)


def keeps(m, wanted, skin_tolerance: float, centre_tolerance: float) -> bool:
    """The measured face m has the skin, background and centre of the measured reference."""
    # the background is one flat colour, which phi_N keeps at any N: measured within 0.02
    return (largest_channel_change(m.skin, wanted.skin) <= skin_tolerance
            and largest_channel_change(m.background, wanted.background) <= 0.05
            and centre_distance(m.center, wanted.center) <= centre_tolerance)


@pytest.fixture(scope="module")
def unconditional(ilvr, reference):
    """8 samples of the same seed without conditioning (range_t = T: plain DDPM sampling), measured."""
    return ilvr_samples(ilvr, reference[0], down_factor=4, range_t=1000)


@pytest.mark.parametrize("down_factor, skin_tolerance, centre_tolerance", [
    # phi_4 keeps 8x8 of the reference: measured skin within 0.01 and centre within 0.2 px for all 8 samples
    (4, 0.05, 0.5),
    # phi_8 keeps only 4x4: measured skin within 0.07, centre within 1.3 px (the features move within the disc)
    (8, 0.1, 1.5),
])
def test_ilvr_samples_keep_the_reference_layout_and_colours(ilvr, reference, unconditional, down_factor,
                                                             skin_tolerance, centre_tolerance):
    """8 ILVR samples of the drawn face against 8 unconditional samples of the same seed: the skin colour, the
    background and the face's centre stay the reference's, which random faces' do not."""
    image, wanted = reference
    conditioned = [keeps(m, wanted, skin_tolerance, centre_tolerance) for m in ilvr_samples(ilvr, image, down_factor, 0)]
    assert sum(conditioned) >= 7, conditioned  # measured 8 of 8 at both N
    # a random face has one of 5 skins and 5 backgrounds and its centre anywhere in an 8 px square: rarely all three
    unrelated = [keeps(m, wanted, skin_tolerance, centre_tolerance) for m in unconditional]
    assert sum(unrelated) <= 2, unrelated  # measured 0 of 8


def translate(faces_model, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> list:
    """CycleDiffusion class translation of images (B,3,32,32) in [0,1] from their classes source (B,) to target (B,),
    measured."""
    pipe = CycleDiffusionPipeline(unet=faces_model.unet, scheduler=loading.make_scheduler(faces_model, "ddim"))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(x, class_labels=source.tolist(), target_class_labels=target.tolist(), strength=0.5,
               num_inference_steps=20, generator=gen(0), output_type="pt", reconstruct=False).images
    return measure_batch(out)


@pytest.mark.parametrize("attribute, sources, added", [
    ("smile", (0, 2), 1),  # frowning -> smiling, without and with glasses
    ("glasses", (0, 1), 2),  # no glasses -> glasses, frowning and smiling
])
def test_class_translation_changes_the_attribute_and_keeps_the_face(faces_model, attribute, sources, added):
    """8 generator faces (4 of each source class), encoded under their class and decoded under the class with the
    attribute (strength 0.5, 20 DDIM steps, eta = 1)."""
    x, faces = make_batch(64, 32, seed=0)
    keep = torch.cat([(faces.label == k).nonzero()[:4, 0] for k in sources])  # (8,)
    translated = translate(faces_model, x[keep], faces.label[keep], faces.label[keep] + added)
    changed = [m.curvature > 0 if attribute == "smile" else m.glasses for m in translated]
    other_kept = [m.glasses == bool(g) if attribute == "smile" else m.curvature * c > 0
                  for m, g, c in zip(translated, faces.glasses[keep].tolist(), faces.curvature[keep].tolist())]
    assert sum(changed) >= 0.8 * len(keep), changed  # measured 8 of 8 for both
    assert sum(other_kept) >= 0.8 * len(keep), other_kept  # the attribute not asked for stays: measured 8 of 8
    for m, skin, background, centre in zip(translated, faces.skin[keep].tolist(), faces.background[keep].tolist(),
                                           faces.center[keep].tolist()):
        # measured within 0.07 (glasses darken the commonest colour a little): below the smallest step between two
        # palette skins, 0.13
        assert largest_channel_change(m.skin, skin) <= 0.1, (m.skin, skin)
        assert largest_channel_change(m.background, background) <= 0.05, (m.background, background)  # measured 0.02
        assert centre_distance(m.center, centre) <= 1.0, (m.center, centre)  # measured within 0.2 px


def test_ilvr_examples_keep_the_drawn_face_layout_and_colours():
    from ui import ilvr_tab

    rows = [row for row in ilvr_tab.EXAMPLES if row[1] == MODEL_ID]
    assert {row[2] for row in rows} == {4, 8} and rows == ilvr_tab.EXAMPLES[:len(rows)]  # the tab's first examples
    for row in rows:
        gallery, _ = ilvr_tab.run_ilvr(*row, progress=no_progress)
        wanted = measure(shown_image(gallery[0][0], 32))
        samples = [measure(shown_image(path, 32)) for path, _ in gallery[2:]]
        assert len(samples) == row[5]
        # measured for the 4 + 4 samples: skin within 0.06, centre within 1.6 px
        assert all(keeps(m, wanted, skin_tolerance=0.1, centre_tolerance=2.0) for m in samples), (row, samples)


def test_cycle_examples_smile_or_put_on_glasses_and_keep_the_face():
    from ui import cycle_tab

    rows = [row for row in cycle_tab.EXAMPLES if row[2] == MODEL_ID]
    assert rows == cycle_tab.EXAMPLES[:len(rows)]  # the tab's first examples
    for image, mode, source_id, target_id, target_text, source_text, strength, eta, steps, seed, source, target in rows:
        gallery, _, _ = cycle_tab.run_cycle(image, mode, source_id, target_id, target_text, source_text, strength, eta,
                                            steps, 10.0, False, 0, 1e-3, seed, source, target, False,
                                            progress=no_progress)
        given, result = measure(shown_image(gallery[0][0], 32)), measure(shown_image(gallery[-1][0], 32))
        assert (given.name, result.name) == (source, target)
        # measured: skin within 0.04, background within 0.02, centre within 0.1 px
        assert keeps(result, given, skin_tolerance=0.1, centre_tolerance=1.0), (image, target, result)


def test_smile_pairs_are_one_face_with_the_mouth_turned_by_the_scale():
    """The smile direction's training pairs (no model), read back by the measurement."""
    config = Config()
    images, targets, scales = smile_pairs(16, config, seed=3)
    assert torch.equal(scales[:16], -scales[16:]) and torch.equal(images[:16], images[16:])  # every face at s and -s
    for m, t, s in zip(measure_batch(images), measure_batch(targets), scales.tolist()):
        assert t.well_formed and t.glasses == m.glasses
        assert largest_channel_change(t.skin, m.skin) <= 0.01 and centre_distance(t.center, m.center) <= 0.1
        # the measured curvature moves by s * c_per_scale: measured within 0.16 (a 1.5 px stroke at 32 px)
        assert t.curvature - m.curvature == pytest.approx(s * config.c_per_scale, abs=0.2), s


@pytest.fixture(scope="module")
def asyrp(faces_model):
    pipe = AsyrpPipeline(unet=faces_model.unet, scheduler=loading.make_scheduler(faces_model, "ddim"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_shipped_smile_direction_turns_the_mouth_up_with_the_scale(asyrp):
    """8 held-out generator faces (not the script's), edited at s = -2, -1, 0, 1, 2 over the tab's interval."""
    direction, meta = load_direction(SMILE_DIRECTION, shape=asyrp.h_shape, model_id=MODEL_ID)
    config = Config(t_edit=int(meta["t_edit"]), num_inference_steps=int(meta["num_inference_steps"]))
    t_edit, t_boost = asyrp_interval(MODEL_ID)
    assert config.t_edit == t_edit  # the tab edits over the interval the direction was learned on
    result = measure_smile_edits(asyrp, direction, render(faces_to_edit(8, config, seed=7), 32), config, t_boost)
    # measured: mean curvature -0.21 / -0.09 / +0.05 / +0.27 / +0.41, rising on 8 of 8 faces (97% of the card's 32)
    assert rises(result["mean_curvature"]), result
    assert result["rising"] >= 6 / 8, result
    # the mouth moves, the rest stays: glasses kept on 8 of 8, skin within 0.04
    assert result["same_glasses"] == 1 and result["max_skin_change"] <= 0.1, result


def test_asyrp_example_turns_a_frown_into_a_smile_along_the_smile_direction(asyrp):
    from ui import asyrp_tab

    rows = [row for row in asyrp_tab.EXAMPLES if row[1] == MODEL_ID]
    assert rows == asyrp_tab.EXAMPLES[:len(rows)] and all(row[4] == SMILE_DIRECTION for row in rows)
    _, meta = load_direction(SMILE_DIRECTION, shape=asyrp.h_shape, model_id=MODEL_ID)
    for image, model_id, source, k, direction_file, scale, strip, steps, seed, _released in rows:
        t_edit, t_boost = asyrp_interval(model_id)  # what the tab's sliders show for this model
        assert (t_edit, int(steps)) == (int(meta["t_edit"]), int(meta["num_inference_steps"])), "edit as it was learned"
        gallery, info, _ = asyrp_tab.run_asyrp(image, model_id, source, k, None, direction_file, scale, strip, False,
                                            t_edit, t_boost, steps, seed, progress=no_progress)
        assert "a frowning face → a smiling face" in info and len(gallery) == 2 + 4  # input, reconstruction, strip
        given, rebuilt, *edits = [measure(shown_image(item[0], 32)) for item in gallery]
        assert rebuilt.name == given.name == "frowning" and rebuilt.well_formed
        strip = edits[:2] + [rebuilt] + edits[2:]  # scales -2s, -s, 0, s, 2s
        assert rises([m.curvature for m in strip]), (image, strip)  # measured -0.62 / -0.59 / -0.50 / -0.05 / +0.46
        assert strip[-1].name == "smiling", strip[-1]  # the frown turned into a smile at 2s
        assert all(m.glasses == given.glasses and largest_channel_change(m.skin, given.skin) <= 0.1 for m in strip)
