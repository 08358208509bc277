"""What the bundled text-to-image model faces-text-32 does, read back from the pixels by its generator's measurement:
the fast checks of its card's claims (the long measurement: training/faces_text_edits.py and
`python -m training.train_faces_text --measure`; the figures: assets/faces-text-32/README.md)."""

import json
import random

import pytest
import torch

from runners import cycle_text
from training import captions, faces
from training import faces_text_edits as edits
from training import train_faces_text as text
from training.train_shapes import ROOT

MODEL = ROOT / "assets" / "faces-text-32"
FACES = 8  # held-out faces per edit


@pytest.fixture(scope="module")
def pipe():
    return cycle_text.pipeline("faces-text-32")


@pytest.fixture(scope="module")
def smiles(pipe):
    """frowning -> smiling on FACES held-out faces, with replace control and without."""
    return {name: edits.run_edit(pipe, edits.EDITS[name], FACES, seed=1, steps=50, guidance_scale=2.0, map_step=20)
            for name in ("smile, replace", "smile, no control")}


def test_the_model_is_small_safetensors_in_stable_diffusions_layout_without_vae_or_checker():
    index = json.loads((MODEL / "model_index.json").read_text())
    assert index["vae"] == [None, None] and index["safety_checker"] == [None, None]
    assert not list(MODEL.rglob("*.bin")) and not list(MODEL.rglob("*.pt"))
    bundled = sum(p.stat().st_size for p in (ROOT / "assets").rglob("*.safetensors"))
    assert bundled <= 25e6  # every bundled model, classifier and direction together
    training = json.loads((MODEL / "training.json").read_text())
    assert training["config"]["p_uncond"] == 0.1 and training["steps"] >= 1000


def test_samples_show_what_their_captions_say():
    """16 captions of held-out generator faces, one sample each (guidance 2, 25 DDIM steps)."""
    model = text.load(MODEL)
    drawn = faces.sample_faces(16, 32, torch.Generator().manual_seed(edits.HELD_OUT_SEED))
    wanted = [captions.attributes(drawn, i) for i in range(16)]
    rng = random.Random(0)
    images = text.sample(model, [captions.caption(w, rng) for w in wanted], 2.0, 25, torch.Generator().manual_seed(0))
    seen = [captions.read_attributes(image) for image in images]
    for name in ("mouth", "glasses", "hair", "skin", "background"):
        assert sum(s[name] == w[name] for s, w in zip(seen, wanted)) >= 15, (name, seen, wanted)  # card: >= 95%


def test_frowning_to_smiling_turns_the_mouth_and_keeps_the_rest(smiles):
    found = smiles["smile, replace"]
    assert found["input_read_right"] == 1.0
    assert found["changed"] >= 0.75, found  # the measured curvature changes sign
    assert all(found["kept"][name] >= 0.75 for name in ("glasses", "skin", "background")), found


def test_replace_control_keeps_the_face_closer_than_no_control(smiles):
    assert smiles["smile, replace"]["psnr"] > smiles["smile, no control"]["psnr"]


def test_the_word_smiling_attends_to_the_mouth(smiles):
    attention = smiles["smile, replace"]["attention"]
    assert attention["mouth_share"] > 1.5 * attention["area_share"], attention


@pytest.mark.parametrize("example, attribute, to", [(0, "mouth", "smiling"), (1, "glasses", "glasses"),
                                                   (2, "hair", "red")])
def test_the_text_edit_tabs_examples_change_their_attribute_and_keep_the_rest(example, attribute, to):
    from ui.cycle_text import EXAMPLES

    image, model_id, source, target, strength, steps, guidance, control, seed = EXAMPLES[example]
    result = cycle_text.run(cycle_text.Settings(image, model_id, source, target, strength, steps, guidance,
                                                control=control, seed=seed, sdedit=False))
    read = result.metrics["read"]
    assert read["input"][attribute] != to and read["edit"][attribute] == to, read
    assert {k: v for k, v in read["edit"].items() if k != attribute} == {
        k: v for k, v in read["input"].items() if k != attribute}, read
    if attribute == "mouth":
        assert any(caption == "target: “smiling”" for _, caption in result.attention)
