"""Classifier guidance on the bundled faces-32 with its noise-aware classifier, judged without a model: the
target class goes from its base rate under plain sampling to most samples."""

import pytest
import torch

from pipelines import ClassifierGuidancePipeline
from pipelines.models import loading, registry
from training.faces import CLASSES, measure_batch

SAMPLES, STEPS = 16, 50


@pytest.fixture(scope="module")
def pipe():
    if not (registry.ROOT / registry.REGISTRY["faces-32"].path / "unet").is_dir():
        pytest.skip("assets/faces-32 is not trained yet: python -m training.train_shapes --data faces")
    model = loading.load_diffusion("faces-32")
    pipe = ClassifierGuidancePipeline(unet=model.unet, scheduler=loading.make_scheduler(model, "ddpm"),
                                      classifier=loading.load_classifier("faces-32"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def share_of(pipe, target: int, scale: float) -> float:
    """The share of SAMPLES guided samples (DDPM, Algorithm 1, one seed) that the measurement judges `target`."""
    out = pipe([target] * SAMPLES, guidance_scale=scale, sampler="ddpm", num_inference_steps=STEPS,
               generator=torch.Generator().manual_seed(0), output_type="pt")
    return sum(m.label == target for m in measure_batch(out.images)) / SAMPLES


def test_guidance_toward_smiling_turns_the_base_rate_into_most_samples(pipe):
    smiling = CLASSES.index("smiling")
    # the unconditional model draws "smiling" (no glasses) rarely: it favours glasses (measured: 12% of 192)
    assert share_of(pipe, smiling, 0.0) <= 0.25
    # measured 94% at s = 20 and s = 40 from this seed; the issue asks for at least 80%
    assert share_of(pipe, smiling, 40.0) >= 0.8


def test_the_guidance_tabs_faces_examples_come_first_and_reach_their_target(pipe):
    from test_app import no_progress, shown_image
    from ui import guidance_tab

    rows = [row for row in guidance_tab.EXAMPLES if row[1] == "faces-32"]
    assert rows and rows == guidance_tab.EXAMPLES[:len(rows)]  # the tab's first examples
    kind, model_id, prompts, target, scale, sampler, steps, samples, seed, sweep, sweep_scales = rows[0]
    gallery, _, _ = guidance_tab.run_guidance(prompts, target, model_id, scale, sampler, "fixed_eps", 0.0, steps,
                                              samples, seed, sweep, sweep_scales, kind, False, progress=no_progress)
    judged = [CLASSES[m.label] for m in measure_batch(torch.stack([shown_image(path, 32) for path, _ in gallery]))]
    assert judged.count(target) > samples / 2, (target, judged)
