"""The classifier guidance tab: the model's own noise-aware classifier, or CLIP zero-shot over label prompts,
steers a model; or classifier-free guidance, beside it for comparison (runners.guidance)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from runners import guidance
from runners.guidance import CLASSIFIER_FREE, CLIP_ZERO_SHOT, FACE_PROMPTS, NOISE_AWARE

from . import examples
from .gpu import concurrency
from .handler import endpoint, estimator, live
from .outputs import gallery as shown
from .widgets import (describe, how_it_works, line_plot, model_dropdown, preview_slider, result_gallery, rule,
                      run_controls, seed_input, settings_inputs, take_home)

RULE = r"""**Classifier guidance** (Dhariwal & Nichol, NeurIPS 2021): each step climbs a classifier's log-probability of
the target, DDPM $\mu + s\,\Sigma\,\nabla_{x_t}\log p(y \mid x_t)$, DDIM
$\hat\epsilon = \epsilon_\theta - \sqrt{1-\bar\alpha_t}\,s\,\nabla_{x_t}\log p(y \mid x_t)$; beside it, classifier-free guidance."""

EXPLANATION = r"""
**Classifier guidance** (Dhariwal & Nichol, NeurIPS 2021) adds the gradient of a classifier's log-probability
of the target class y to every sampling step of an *unconditional* model, scaled by s:

$$\text{DDPM (Alg. 1):}\;\; x_{t-1} \sim \mathcal N\big(\mu + s\,\Sigma\,\nabla_{x_t}\log p_\phi(y \mid x_t),\; \Sigma\big)
\qquad \text{DDIM (Alg. 2):}\;\; \hat\epsilon = \epsilon_\theta(x_t) - \sqrt{1-\bar\alpha_t}\; s\,\nabla_{x_t}\log p_\phi(y \mid x_t)$$

DDPM shifts the *mean* of each random step; DDIM shifts the *predicted noise* and then takes its usual step.
Two classifiers can play $p_\phi$. A **noise-aware classifier**, trained on noisy $x_t$ as in the paper, reads $x_t$
and $t$ directly; the bundled models ship one (faces-32: smiling or frowning, with or without glasses; shapes-16:
circle, square, triangle). **CLIP, zero-shot**, works with
any model: $p(y{=}k) = \mathrm{softmax}_k(100\cos(\mathrm{CLIP}(\hat x_0), \mathrm{CLIP}(\text{prompt}_k)))$ over your label
prompts, judged on the predicted clean image $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta)/\sqrt{\bar\alpha_t}$
because CLIP has never seen noise; its gradient either goes **through the U-Net** (exact, about 3x slower) or holds
$\epsilon_\theta$ fixed (fast). Each sample shows the classifier's probability of the target, so you can see what s
does; **sweep** renders the same seed at several scales side by side (s = 0 is plain sampling). The plot follows
$p_\phi(y \mid x_t)$ step by step for the guided run and the unguided run from the same seed, and the maps show
where $|\nabla_{x_t} \log p_\phi(y \mid x_t)|$ pushes. Too large an s breaks the image, and the run stops if the
numbers overflow. For comparison, **classifier-free guidance** (Ho & Salimans 2022) needs no classifier but a
class-conditional model trained with a null class (the bundled ones are):
$\hat\epsilon = \epsilon_\theta(x_t, \varnothing) + w\,(\epsilon_\theta(x_t, y) - \epsilon_\theta(x_t, \varnothing))$, $w = 1$
the class itself, $w = 0$ no class; the model's classifier, where it ships one, then only judges. A run may also
**start from an image** noised to $t_0$ instead of from noise: at scale 0 that is SDEdit.
"""

CARTOON_PROMPTS = ("a cartoon face, frowning\na cartoon face, smiling\na cartoon face with glasses, frowning\n"
                   "a cartoon face with glasses, smiling")
SHAPE_PROMPTS = "a drawing of a circle\na drawing of a square\na drawing of a triangle"

EXAMPLE_FIELDS = ("classifier_kind", "model_id", "prompts_text", "target", "scale", "sampler", "steps", "samples",
                  "seed", "sweep", "sweep_scales")
EXAMPLES = [
    [NOISE_AWARE, "faces-32", CARTOON_PROMPTS, "smiling", 40, "ddpm", 50, 4, 0, False, "0, 10, 20, 40"],
    [NOISE_AWARE, "faces-32", CARTOON_PROMPTS, "smiling with glasses", 40, "ddpm", 50, 2, 1, True, "0, 10, 20, 40"],
    [NOISE_AWARE, "shapes-16", SHAPE_PROMPTS, "triangle", 10, "ddpm", 50, 4, 0, False, "0, 5, 10, 20"],
    [NOISE_AWARE, "shapes-16", SHAPE_PROMPTS, "circle", 10, "ddpm", 50, 4, 1, True, "0, 1, 2, 5, 10"],
    [NOISE_AWARE, "shapes-16", SHAPE_PROMPTS, "square", 5, "ddim", 50, 2, 2, True, "0, 0.5, 1, 2, 5"],
    [CLIP_ZERO_SHOT, "google/ddpm-celebahq-256", FACE_PROMPTS, "a photo of a smiling person", 10, "ddim", 50, 2, 0,
     False, "0, 5, 10, 20"],
    [CLIP_ZERO_SHOT, "google/ddpm-celebahq-256", FACE_PROMPTS, "a photo of a person with glasses", 10, "ddim", 50, 1,
     3, True, "0, 5, 10, 20, 40"],
    [CLIP_ZERO_SHOT, "google/ddpm-cat-256", "a photo of a cat\na photo of a dog\na photo of a car",
     "a photo of a car", 20, "ddpm", 100, 2, 1, False, "0, 10, 20"],
]

CLASSIFIERS = [("the model's noise-aware classifier", NOISE_AWARE),
               ("CLIP zero-shot over label prompts", CLIP_ZERO_SHOT), ("none: classifier-free guidance", CLASSIFIER_FREE)]
SAMPLERS = [("DDIM (Algorithm 2: shift the noise)", "ddim"), ("DDPM (Algorithm 1: shift the mean)", "ddpm")]
GRADIENTS = [("fast: eps held fixed", "fixed_eps"), ("exact: through the U-Net", "exact")]
PLOT_COLUMNS = ["step", "p(target | x_t)", "run"]


def labels_or_none(classifier_kind: str, prompts_text: str, model_id: str) -> list[str]:
    try:
        return guidance.target_labels(classifier_kind, prompts_text, model_id)
    except ValueError:  # prompts being typed past the limits: the run says so
        return []


def target_dropdown(classifier_kind: str, prompts_text: str, model_id: str, current: str | None) -> gr.Dropdown:
    labels = labels_or_none(classifier_kind, prompts_text, model_id)
    return gr.Dropdown(choices=labels, value=current if current in labels else next(iter(labels), None))


def classifier_controls(classifier_kind: str, prompts_text: str, model_id: str, current: str | None):
    """The label prompts box (shown for CLIP only) and the target dropdown for this classifier."""
    return (gr.Textbox(visible=classifier_kind == CLIP_ZERO_SHOT),
            target_dropdown(classifier_kind, prompts_text, model_id, current))


def model_controls(model_id: str, prompts_text: str, current: str | None):
    """A newly picked model: its own classifier when it ships one, else CLIP; the prompts box, targets and sampler."""
    kind = guidance.default_classifier(model_id)
    return (kind, *classifier_controls(kind, prompts_text, model_id, current), guidance.default_sampler(model_id))


def example_controls(classifier_kind, model_id, prompts_text, target, *rest):
    """An example's prompts box and target menu, made to match the example as written (its menus' choices)."""
    return classifier_controls(classifier_kind, prompts_text, model_id, target)


def render(result: guidance.Result):
    """The samples, the plot of p(target | x_t) and the gradient maps."""
    return shown(result.gallery), pd.DataFrame(result.trace, columns=PLOT_COLUMNS), shown(result.gradient_maps)


run_guidance = endpoint("guidance", guidance.Settings, guidance.run, render, guidance.cost)


def build_tab() -> None:
    with gr.Tab("Classifier guidance"):
        rule(RULE)
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    model_id = model_dropdown()
                    kind = guidance.default_classifier(model_id.value)
                    labels = labels_or_none(kind, FACE_PROMPTS, model_id.value)
                    target = gr.Dropdown(labels, value=next(iter(labels), None), allow_custom_value=True,
                                         label="Target class y", elem_classes="tab-input")
                with gr.Row():
                    classifier_kind = gr.Radio(CLASSIFIERS, value=kind, label="Classifier p(y | x_t)")
                    prompts = gr.Textbox(FACE_PROMPTS, lines=3, max_lines=16,
                                         label="Label prompts, one per line (CLIP's classes)",
                                         visible=kind == CLIP_ZERO_SHOT)
                with gr.Row():
                    scale = gr.Slider(0, guidance.MAX_SCALE, value=10, step=0.5,
                                      label="Guidance scale s (0 = no guidance)")
                    samples = gr.Slider(1, 8, value=2, step=1, label="Number of samples")
                run, time_estimate = run_controls("Run classifier guidance")
                sampler = gr.Radio(SAMPLERS, value=guidance.default_sampler(model_id.value), label="Sampler")
                how_it_works(EXPLANATION)
                with gr.Accordion("Sweep the scale, compare with unguided sampling", open=False):
                    sweep = gr.Checkbox(False, label="Sweep: the same seed at several scales side by side")
                    sweep_scales = gr.Textbox("0, 5, 10, 20", label="Sweep scales (comma-separated)")
                    compare = gr.Checkbox(True, label="Also run unguided (s = 0) from the same seed, to compare in "
                                                      "the plot of p(target | x_t)")
                with gr.Accordion("Start from an image instead of noise (at scale 0: SDEdit)", open=False):
                    image = gr.Image(type="filepath", label="Image, noised to t0 (none: sample from noise)", height=200)
                    strength = gr.Slider(0.05, 1.0, value=1.0, step=0.05,
                                         label="Strength (start t0 = strength × T; lower = more of the image)")
                with gr.Accordion("Advanced", open=False):
                    gradient = gr.Radio(GRADIENTS, value="fixed_eps",
                                        label="CLIP: gradient of log p(y | x̂0) with respect to x_t (the noise-aware "
                                              "classifier reads x_t itself)")
                    eta = gr.Slider(0, 1, value=0, step=0.1, label="DDIM eta (0 = deterministic, 1 = DDPM-like)")
                    steps = gr.Slider(guidance.MIN_STEPS, 1000, value=50, step=10,
                                      label="Sampling steps (DDPM wants more than DDIM)")
                    seed = seed_input()
                    preview_every = preview_slider()
            with gr.Column():
                gallery = result_gallery("Samples with the classifier's probability of the target", 4, height=360)
                plot = line_plot("The classifier's p(target | x_t) at each step, guided and unguided", "step",
                                 "p(target | x_t)")
                maps = gr.Gallery(label="|∇ log p(y | x_t)| of the first guided sample at a few steps (white = its "
                                        "largest): where the classifier pushes", columns=guidance.GRADIENT_MAPS,
                                  height=240, interactive=False)
                results = gr.Column()
        # the menus follow the user's picks (.input); an example sets them as written, choices included
        model_id.input(model_controls, [model_id, prompts, target], [classifier_kind, prompts, target, sampler],
                       api_visibility="private")
        classifier_kind.input(classifier_controls, [classifier_kind, prompts, model_id, target], [prompts, target],
                              api_visibility="private")
        prompts.input(target_dropdown, [classifier_kind, prompts, model_id, target], target, api_visibility="private")
        settings = dict(prompts_text=prompts, target=target, model_id=model_id, scale=scale, sampler=sampler,
                        gradient=gradient, eta=eta, steps=steps, samples=samples, seed=seed, sweep=sweep,
                        sweep_scales=sweep_scales, classifier_kind=classifier_kind, compare=compare,
                        preview_every=preview_every, image=image, strength=strength)
        examples.add(EXAMPLES, EXAMPLE_FIELDS, settings, model_field="model_id", label="Examples (pick one, then Run)",
                     run=run_guidance, outputs=[gallery, plot, maps], fill=(example_controls, [prompts, target]))
        inputs = settings_inputs(guidance.Settings, **settings)
        estimate = estimator(guidance.Settings, guidance.cost)
        costs = [model_id, classifier_kind, gradient, steps, samples, sweep, sweep_scales, scale, compare, image,
                 strength]
        gr.on([c.change for c in costs], estimate, inputs, time_estimate, api_visibility="private")
        describe(run_guidance, guidance.run, guidance.Settings, inputs)
        event = run.click(live(run_guidance, 3), inputs, [gallery, plot, maps], api_name="guidance", **concurrency())
        event.then(estimate, inputs, time_estimate, api_visibility="private")
        with results:
            take_home(guidance, inputs, gallery, event)
