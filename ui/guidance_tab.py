"""The classifier guidance tab: the model's own noise-aware classifier, or CLIP zero-shot over label prompts,
steers an unconditional model."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from pipelines import (ClassifierGuidancePipeline, ClipZeroShotClassifier, load_classifier, load_clip, load_diffusion,
                       make_scheduler, registry)

from .common import (GPU_CONCURRENCY, StepReporter, Stopped, check_budget, class_names, display, estimate_markdown,
                     evenly, gpu, heat_image, line_plot, live, make_generator, model_dropdown, offered_model,
                     parse_prompts, preview_slider, run_controls, seed_input, started, take_home, user_errors)

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
numbers overflow.
"""

FACE_PROMPTS = "a photo of a smiling person\na photo of a person with glasses\na photo of a person with a beard"

CARTOON_PROMPTS = ("a cartoon face, frowning\na cartoon face, smiling\na cartoon face with glasses, frowning\n"
                   "a cartoon face with glasses, smiling")
SHAPE_PROMPTS = "a drawing of a circle\na drawing of a square\na drawing of a triangle"
NOISE_AWARE = "noise-aware classifier of the model (trained on noisy x_t)"
CLIP_ZERO_SHOT = "CLIP zero-shot over label prompts"
CLASSIFIERS = [NOISE_AWARE, CLIP_ZERO_SHOT]

# classifier, model, prompts, target, scale, sampler, steps, samples, seed, sweep, sweep scales
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

SAMPLERS = [("DDIM (Algorithm 2: shift the noise)", "ddim"), ("DDPM (Algorithm 1: shift the mean)", "ddpm")]
MIN_STEPS = 10
GRADIENTS = [("fast: eps held fixed", "fixed_eps"), ("exact: through the U-Net", "exact")]
MAX_SCALE = 100  # the slider's range; a sweep stays in it too


def model_class_names(model_id: str) -> tuple[str, ...]:
    """The classes of the model's own noise-aware classifier; () when the model ships none."""
    info = registry.REGISTRY.get(model_id)
    return class_names(model_id) if info is not None and info.classifier else ()


def default_classifier(model_id: str) -> str:
    return NOISE_AWARE if model_class_names(model_id) else CLIP_ZERO_SHOT


def target_labels(classifier_kind: str, prompts_text: str, model_id: str) -> list[str]:
    """The classes the target is chosen from: the model's class names or the label prompts."""
    return list(model_class_names(model_id)) if classifier_kind == NOISE_AWARE else parse_prompts(prompts_text)


def target_dropdown(classifier_kind: str, prompts_text: str, model_id: str, current: str | None) -> gr.Dropdown:
    labels = target_labels(classifier_kind, prompts_text, model_id)
    return gr.Dropdown(choices=labels, value=current if current in labels else next(iter(labels), None))


def classifier_controls(classifier_kind: str, prompts_text: str, model_id: str, current: str | None):
    """The label prompts box (shown for CLIP only) and the target dropdown for this classifier."""
    return (gr.Textbox(visible=classifier_kind == CLIP_ZERO_SHOT),
            target_dropdown(classifier_kind, prompts_text, model_id, current))


def model_controls(model_id: str, prompts_text: str, current: str | None):
    """A newly picked model: its own classifier when it ships one, else CLIP; the prompts box and targets to match."""
    kind = default_classifier(model_id)
    return (kind, *classifier_controls(kind, prompts_text, model_id, current))


def make_classifier(classifier_kind: str, prompts_text: str, target: str, model_id: str):
    """(classifier(x_t, t, x0_hat) -> logits, the index of the target among its classes), or a gr.Error."""
    if classifier_kind == NOISE_AWARE:
        labels = model_class_names(model_id)
        if not labels:
            ships = ", ".join(name for name, info in registry.REGISTRY.items() if info.classifier)
            raise gr.Error(f"The model {model_id} comes with no noise-aware classifier. Pick '{CLIP_ZERO_SHOT}', "
                           f"or a model that ships one ({ships}).", title="No noise-aware classifier")
        if target not in labels:
            raise gr.Error(f"The target {target!r} is not one of the model's classes; "
                           f"pick one of: {', '.join(labels)}.")
        return load_classifier(model_id), labels.index(target)
    if classifier_kind != CLIP_ZERO_SHOT:
        raise gr.Error(f"Pick a classifier: '{NOISE_AWARE}' or '{CLIP_ZERO_SHOT}'.")
    prompts = parse_prompts(prompts_text)
    if not prompts:
        raise gr.Error("Write the label prompts, one per line: the target and at least one label it competes with.",
                       title="No label prompts")
    if target not in prompts:
        raise gr.Error(f"The target {target!r} is not one of the label prompts; pick one of: {', '.join(prompts)}.")
    classifier = ClipZeroShotClassifier(load_clip().judge, prompts)  # text embedded once
    return classifier, prompts.index(target)


def parse_scales(text: str) -> list[float]:
    try:
        scales = [float(part) for part in (text or "").replace(";", ",").split(",") if part.strip()]
    except ValueError as err:
        raise gr.Error(f"Write the sweep scales as numbers separated by commas, e.g. 0, 5, 10, 20 ({err}).") from err
    if not 1 <= len(scales) <= 8:
        raise gr.Error("Give from 1 to 8 sweep scales, separated by commas, e.g. 0, 5, 10, 20.")
    if not all(0 <= s <= MAX_SCALE for s in scales):
        raise gr.Error(f"Sweep scales must be from 0 to {MAX_SCALE}, as on the slider; got {text}.")
    return scales


GRADIENT_MAPS = 4  # steps of the first guided run whose gradient norm map is shown


def trajectory_rows(s: float, log_probs) -> list[dict]:
    """The plot's rows of one run: p(target | x_t) of each sample at each step."""
    return [{"step": step + 1, "p(target | x_t)": p, "run": f"s={s:g}, sample {i + 1}"}
            for step, row in enumerate(log_probs.exp().tolist()) for i, p in enumerate(row)]


def gradient_frames(gradient_maps: dict, timesteps, s: float) -> list[tuple]:
    """The first sample's gradient norm map at each kept step, white at its own maximum."""
    return [(display(heat_image(m[0])), f"s={s:g}, step {step + 1} (t={int(timesteps[step])}): "
                                        f"|∇ log p(y|x_t)|, max {m[0].max().item():.3g}")
            for step, m in sorted(gradient_maps.items())]


@user_errors
@gpu
def run_guidance(prompts_text, target, model_id, scale, sampler, gradient, eta, steps, samples, seed, sweep,
                 sweep_scales, classifier_kind=CLIP_ZERO_SHOT, compare=True, preview_every=0,
                 request: gr.Request = None, progress=gr.Progress()):
    """The samples, a plot of the classifier's p(target | x_t) over the steps for every scale run (with `compare`,
    the unguided run from the same seed too), and the gradient norm maps of the first guided run."""
    model_id = offered_model(model_id)
    scales = runs(scale, sweep, sweep_scales, compare)
    classifier, y = make_classifier(classifier_kind, prompts_text, target, model_id)
    model = load_diffusion(model_id)
    pipe = ClassifierGuidancePipeline(unet=model.unet, scheduler=make_scheduler(model, "ddpm"), classifier=classifier)
    for s in scales:
        pipe.check_inputs(class_labels=[y] * int(samples), guidance_scale=s, sampler=sampler,
                          num_inference_steps=int(steps), eta=float(eta), gradient=gradient, output_type="pil")
    check_budget(model, *cost(classifier_kind, gradient, steps, samples, sweep, sweep_scales, scale, compare),
                 lower="the steps, the number of samples or the sweep's scales (or use the fixed-eps gradient, or "
                       "untick the unguided comparison)",
                 smallest=cost(classifier_kind, "fixed_eps", MIN_STEPS, 1, False, "", 1, False))
    gallery, rows, maps, stop = [], [], [], started(request)
    map_steps = evenly(int(steps), GRADIENT_MAPS)
    for s in scales:
        reporter = StepReporter(progress, int(steps), f"guided sampling, s = {s:g}", stop=stop,
                                preview_every=preview_every)
        try:
            out = pipe(
                [y] * int(samples),
                guidance_scale=s,
                sampler=sampler,
                num_inference_steps=int(steps),
                eta=float(eta),
                gradient=gradient,
                generator=make_generator(seed),
                callback=reporter,
                return_log_probs=True,
                gradient_map_steps=map_steps if s > 0 and not maps else (),
            )
        except Stopped:
            gallery += [(path, f"s={s:g}, {caption}") for path, caption in reporter.stopped_gallery()]
            return gallery, plot_frame(rows), maps
        for i, (image, p) in enumerate(zip(out.images, out.probabilities[:, y].tolist())):
            gallery.append((display(image), f"s={s:g}, sample {i + 1}: p(target) = {p:.2f}"))
        rows += trajectory_rows(s, out.log_probs)
        maps += gradient_frames(out.gradient_maps or {}, out.timesteps, s)
    return gallery, plot_frame(rows), maps


def runs(scale, sweep, sweep_scales, compare) -> list[float]:
    """The scales one request samples at: the sweep's, or the scale (and 0 after it, to compare, unless it is 0)."""
    if sweep:
        return parse_scales(sweep_scales)
    return [float(scale)] + ([0.0] if compare and float(scale) != 0 else [])


def plot_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["step", "p(target | x_t)", "run"])


def cost(classifier_kind, gradient, steps, samples, sweep, sweep_scales, scale=1, compare=False) -> tuple[int, int]:
    """U-Net evaluations at batch 1 (plain, back-propagated): one per step, sample and scale run; back-propagated when
    CLIP's gradient goes through the U-Net ("exact")."""
    n = int(steps) * int(samples) * len(runs(scale, sweep, sweep_scales, compare))
    return (0, n) if classifier_kind == CLIP_ZERO_SHOT and gradient == "exact" else (n, 0)


def estimate(model_id, classifier_kind, gradient, steps, samples, sweep, sweep_scales, scale, compare) -> str:
    try:
        return estimate_markdown(model_id, *cost(classifier_kind, gradient, steps, samples, sweep, sweep_scales,
                                                 scale, compare))
    except gr.Error:  # sweep scales being typed
        return ""


def build_tab() -> None:
    with gr.Tab("Classifier guidance"):
        gr.Markdown(EXPLANATION, latex_delimiters=[{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}])
        default_model = registry.default_model_id()
        kind = default_classifier(default_model)
        with gr.Row():
            with gr.Column():
                model_id = model_dropdown()
                classifier_kind = gr.Radio(CLASSIFIERS, value=kind, label="Classifier p(y | x_t)")
                prompts = gr.Textbox(FACE_PROMPTS, lines=3, label="Label prompts, one per line (CLIP's classes)",
                                     visible=kind == CLIP_ZERO_SHOT)
                labels = target_labels(kind, FACE_PROMPTS, default_model)
                target = gr.Dropdown(labels, value=next(iter(labels), None), allow_custom_value=True,
                                     label="Target class y")
                scale = gr.Slider(0, MAX_SCALE, value=10, step=0.5, label="Guidance scale s (0 = no guidance)")
                # the bundled model's deterministic DDIM samples are often not clean shapes (about 5 in 8); DDPM's are
                sampler = gr.Radio(SAMPLERS, value="ddpm" if default_model == registry.BUNDLED_MODEL else "ddim", label="Sampler")
                samples = gr.Slider(1, 8, value=2, step=1, label="Number of samples")
                sweep = gr.Checkbox(False, label="Sweep: the same seed at several scales side by side")
                sweep_scales = gr.Textbox("0, 5, 10, 20", label="Sweep scales (comma-separated)")
                compare = gr.Checkbox(True, label="Also run unguided (s = 0) from the same seed, to compare in the "
                                                  "plot of p(target | x_t)")
                with gr.Accordion("Advanced", open=False):
                    gradient = gr.Radio(GRADIENTS, value="fixed_eps",
                                        label="CLIP: gradient of log p(y | x̂0) with respect to x_t (the noise-aware "
                                              "classifier reads x_t itself)")
                    eta = gr.Slider(0, 1, value=0, step=0.1, label="DDIM eta (0 = deterministic, 1 = DDPM-like)")
                    steps = gr.Slider(MIN_STEPS, 1000, value=50, step=10, label="Sampling steps (DDPM wants more than DDIM)")
                    seed = seed_input()
                    preview_every = preview_slider()
                run, time_estimate = run_controls("Run classifier guidance")
            with gr.Column():
                gallery = gr.Gallery(label="Samples with the classifier's probability of the target", columns=4,
                                     height=460)
                plot = line_plot("The classifier's p(target | x_t) at each step, guided and unguided", "step",
                                 "p(target | x_t)")
                maps = gr.Gallery(label="|∇ log p(y | x_t)| of the first guided sample at a few steps (white = its "
                                        "largest): where the classifier pushes", columns=GRADIENT_MAPS, height=240)
                results = gr.Column()
        model_id.change(model_controls, [model_id, prompts, target], [classifier_kind, prompts, target],
                        api_visibility="private")
        classifier_kind.change(classifier_controls, [classifier_kind, prompts, model_id, target], [prompts, target],
                               api_visibility="private")
        prompts.change(target_dropdown, [classifier_kind, prompts, model_id, target], target, api_visibility="private")
        gr.Examples(
            EXAMPLES,
            inputs=[classifier_kind, model_id, prompts, target, scale, sampler, steps, samples, seed, sweep, sweep_scales],
            label="Examples (pick one, then Run)",
        )
        inputs = [prompts, target, model_id, scale, sampler, gradient, eta, steps, samples, seed, sweep, sweep_scales,
                  classifier_kind, compare, preview_every]
        costs = [model_id, classifier_kind, gradient, steps, samples, sweep, sweep_scales, scale, compare]
        gr.on([c.change for c in costs], estimate, costs, time_estimate, api_visibility="private")
        event = run.click(live(run_guidance, 3), inputs, [gallery, plot, maps], api_name="guidance", **GPU_CONCURRENCY)
        event.then(estimate, costs, time_estimate, api_visibility="private")
        with results:
            take_home("guidance", run_guidance, inputs, gallery, event)
