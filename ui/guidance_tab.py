"""The classifier guidance tab: a CLIP zero-shot classifier over label prompts steers an unconditional model."""

from __future__ import annotations

import gradio as gr

from pipelines import ClassifierGuidancePipeline, ClipZeroShotClassifier, load_clip, load_diffusion, make_scheduler
from pipelines.clip import ClipJudge

from .common import GPU_CONCURRENCY, StepReporter, display, gpu, make_generator, model_dropdown, seed_input, user_errors

EXPLANATION = r"""
**Classifier guidance** (Dhariwal & Nichol, NeurIPS 2021) adds the gradient of a classifier's log-probability
of the target class y to every sampling step of an *unconditional* model, scaled by s:

$$\text{DDPM (Alg. 1):}\;\; x_{t-1} \sim \mathcal N\big(\mu + s\,\Sigma\,\nabla_{x_t}\log p_\phi(y \mid x_t),\; \Sigma\big)
\qquad \text{DDIM (Alg. 2):}\;\; \hat\epsilon = \epsilon_\theta(x_t) - \sqrt{1-\bar\alpha_t}\; s\,\nabla_{x_t}\log p_\phi(y \mid x_t)$$

DDPM shifts the *mean* of each random step; DDIM shifts the *predicted noise* and then takes its usual step.
Here the classifier is **CLIP, zero-shot**: $p(y{=}k) = \mathrm{softmax}_k(100\cos(\mathrm{CLIP}(\hat x_0), \mathrm{CLIP}(\text{prompt}_k)))$,
judged on the predicted clean image $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta)/\sqrt{\bar\alpha_t}$ because CLIP
has never seen noise. The gradient either goes **through the U-Net** (exact, about 3x slower) or holds
$\epsilon_\theta$ fixed (fast). Each sample shows CLIP's probability of the target, so you can see what s does;
**sweep** renders the same seed at several scales side by side (s = 0 is plain sampling). Too large an s breaks
the image, and the run stops if the numbers overflow.
"""

FACE_PROMPTS = "a photo of a smiling person\na photo of a person with glasses\na photo of a person with a beard"

# prompts, target, scale, sampler, steps, samples, seed, sweep, sweep scales
EXAMPLES = [
    [FACE_PROMPTS, "a photo of a smiling person", 10, "ddim", 50, 2, 0, False, "0, 5, 10, 20"],
    [FACE_PROMPTS, "a photo of a person with glasses", 10, "ddim", 50, 1, 3, True, "0, 5, 10, 20, 40"],
    ["a photo of a cat\na photo of a dog\na photo of a car", "a photo of a car", 20, "ddpm", 100, 2, 1, False, "0, 10, 20"],
]

SAMPLERS = [("DDIM (Algorithm 2: shift the noise)", "ddim"), ("DDPM (Algorithm 1: shift the mean)", "ddpm")]
GRADIENTS = [("fast: eps held fixed", "fixed_eps"), ("exact: through the U-Net", "exact")]
MAX_SCALE = 100  # the slider's range; a sweep stays in it too


def parse_prompts(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


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


@user_errors
@gpu
def run_guidance(prompts_text, target, model_id, scale, sampler, gradient, eta, steps, samples, seed, sweep,
                 sweep_scales, progress=gr.Progress()):
    prompts = parse_prompts(prompts_text)
    if not prompts:
        raise gr.Error("Write the label prompts, one per line: the target and at least one label it competes with.",
                       title="No label prompts")
    if target not in prompts:
        raise gr.Error(f"The target {target!r} is not one of the label prompts; pick one of: {', '.join(prompts)}.")
    scales = parse_scales(sweep_scales) if sweep else [float(scale)]
    model, clip = load_diffusion(model_id), load_clip()
    classifier = ClipZeroShotClassifier(ClipJudge(clip.model, clip.tokenizer), prompts)  # text embedded once
    pipe = ClassifierGuidancePipeline(unet=model.unet, scheduler=make_scheduler(model, "ddpm"), classifier=classifier)
    y = prompts.index(target)
    gallery = []
    for s in scales:
        reporter = StepReporter(progress, int(steps), f"guided sampling, s = {s:g}")
        out = pipe(
            [y] * int(samples),
            guidance_scale=s,
            sampler=sampler,
            num_inference_steps=int(steps),
            eta=float(eta),
            gradient=gradient,
            generator=make_generator(seed),
            callback=reporter,
        )
        for i, (image, p) in enumerate(zip(out.images, out.probabilities[:, y].tolist())):
            gallery.append((display(image), f"s={s:g}, sample {i + 1}: p(target) = {p:.2f}"))
    return gallery


def build_tab() -> None:
    with gr.Tab("Classifier guidance"):
        gr.Markdown(EXPLANATION, latex_delimiters=[{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}])
        with gr.Row():
            with gr.Column():
                prompts = gr.Textbox(FACE_PROMPTS, lines=3, label="Label prompts, one per line (CLIP's classes)")
                target = gr.Dropdown(parse_prompts(FACE_PROMPTS), value=parse_prompts(FACE_PROMPTS)[0], allow_custom_value=True,
                                     label="Target label y (one of the prompts)")
                model_id = model_dropdown()
                scale = gr.Slider(0, MAX_SCALE, value=10, step=0.5, label="Guidance scale s (0 = no guidance)")
                sampler = gr.Radio(SAMPLERS, value="ddim", label="Sampler")
                samples = gr.Slider(1, 8, value=2, step=1, label="Number of samples")
                sweep = gr.Checkbox(False, label="Sweep: the same seed at several scales side by side")
                sweep_scales = gr.Textbox("0, 5, 10, 20", label="Sweep scales (comma-separated)")
                with gr.Accordion("Advanced", open=False):
                    gradient = gr.Radio(GRADIENTS, value="fixed_eps", label="Gradient of log p(y | x̂0) with respect to x_t")
                    eta = gr.Slider(0, 1, value=0, step=0.1, label="DDIM eta (0 = deterministic, 1 = DDPM-like)")
                    steps = gr.Slider(10, 1000, value=50, step=10, label="Sampling steps (DDPM wants more than DDIM)")
                    seed = seed_input()
                run = gr.Button("Run classifier guidance", variant="primary")
            with gr.Column():
                gallery = gr.Gallery(label="Samples with CLIP's probability of the target", columns=4, height=460)
        prompts.change(
            lambda text, current: gr.Dropdown(choices=parse_prompts(text),
                                              value=current if current in parse_prompts(text) else next(iter(parse_prompts(text)), None)),
            [prompts, target], target, api_visibility="private",
        )
        gr.Examples(
            EXAMPLES,
            inputs=[prompts, target, scale, sampler, steps, samples, seed, sweep, sweep_scales],
            label="Examples (pick one, then Run)",
        )
        inputs = [prompts, target, model_id, scale, sampler, gradient, eta, steps, samples, seed, sweep, sweep_scales]
        run.click(run_guidance, inputs, gallery, api_name="guidance", **GPU_CONCURRENCY)
