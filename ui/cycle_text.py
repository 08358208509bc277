"""The text edit tab: CycleDiffusion's zero-shot editing on a text-to-image model (runners.cycle_text)."""

from __future__ import annotations

import gradio as gr

from runners import cycle_text

from . import examples
from .gpu import concurrency
from .handler import endpoint, estimator, live
from .outputs import gallery as shown
from .widgets import (describe, how_it_works, input_image, preview_slider, result_gallery, rule, run_controls,
                      seed_input, settings_inputs, take_home)

RULE = r"""**Text edit** (CycleDiffusion's headline, on Stable Diffusion): encode the photo under its source prompt into
$z = (x_{t_0}, \epsilon_{t_0}, \dots, \epsilon_1)$, decode the same $z$ under the target prompt; cross-attention control
keeps the layout."""

EXPLANATION = r"""
**The paper's headline: edit a photo by changing its text.** A text-to-image model (Stable Diffusion) is a
stochastic sampler too: the DPM-Encoder encodes your photo under a **source prompt** into
$z = (x_{t_0}, \epsilon_{t_0}, \dots, \epsilon_1)$, and the *same* $z$ is decoded under a **target prompt**. What the
two prompts share stays; the words that differ change. **Cross-attention control** (prompt-to-prompt) keeps the layout
more tightly: for the first steps the target's words attend where the source's did — *replace* for a word swap (the
same number of words), *refine* when the target adds words; one target word can be **reweighted**. The maps below
show where each word attends at the chosen step (averaged over heads and layers); the SDEdit baseline decodes the same
$x_{t_0}$ with fresh noise. Stable Diffusion wants a GPU; on a CPU the bundled **faces-text-32** (cartoon faces at
32×32, trained here on captions such as “a frowning face with glasses, black hair and medium skin on a purple
background”) runs in seconds, and its edits are read back from the pixels: try “frowning” → “smiling”.
"""

EXAMPLE_FIELDS = ("image", "model_id", "source_prompt", "prompt", "strength", "steps", "guidance_scale", "control",
                  "seed")
EXAMPLES = [  # the bundled faces-text-32 first: a few seconds each on a CPU
    ["assets/faces/frowning-glasses.png", "faces-text-32",
     "a frowning face with glasses, black hair and medium skin on a purple background",
     "a smiling face with glasses, black hair and medium skin on a purple background", 0.8, 50, 2.0, "replace", 1],
    ["assets/faces/smiling.png", "faces-text-32", "a smiling face with brown hair and pale skin on a green background",
     "a smiling face with glasses, brown hair and pale skin on a green background", 0.8, 50, 2.0, "refine", 0],
    ["assets/faces/smiling.png", "faces-text-32",
     "a smiling face with no glasses, brown hair and pale skin on a green background",
     "a smiling face with no glasses, red hair and pale skin on a green background", 0.7, 50, 2.0, "replace", 0],
    ["assets/chelsea.png", "nota-ai/bk-sdm-tiny", "a photo of a cat", "a photo of a dog", 0.8, 25, 2.0, "replace", 0],
    ["assets/chelsea.png", "CompVis/stable-diffusion-v1-4", "a photo of a cat", "a photo of a tiger", 0.8, 100, 2.0,
     "replace", 0],
    ["assets/chelsea.png", "CompVis/stable-diffusion-v1-4", "a photo of an orange cat", "a photo of a black cat", 0.8,
     100, 2.0, "replace", 1],
    ["assets/chelsea.png", "CompVis/stable-diffusion-v1-4", "a photo of a cat", "a photo of a cat wearing sunglasses",
     0.8, 100, 2.0, "refine", 0],
    ["assets/astronaut.png", "CompVis/stable-diffusion-v1-4", "a photo of a woman", "a photo of a man", 0.7, 100, 2.0,
     "replace", 0],
    ["assets/astronaut.png", "stable-diffusion-v1-5/stable-diffusion-v1-5", "a photo of a woman",
     "a photo of a smiling woman", 0.7, 100, 2.0, "refine", 0],
]


def metrics_markdown(result: cycle_text.Result) -> str:
    if not result.metrics:
        return "Stopped." if result.stopped else result.note
    lines = ["| | PSNR to input (dB) | SSIM to input | CLIP to the target | directional CLIP |", "| --- | --- | --- | --- | --- |"]
    clip = result.metrics.get("clip", {})
    for name, row in result.metrics["rows"].items():
        scores = clip.get(name)
        extra = f"{scores['similarity']:.3f} | {scores['directional']:.3f}" if scores else "— | —"
        lines.append(f"| {name} | {row['psnr']:.1f} | {row['ssim']:.4f} | {extra} |")
    read = result.metrics.get("read")
    if read:
        names = list(next(iter(read.values())))
        lines += ["", "Read back from the pixels by the faces' own measurement (no model judges):", "",
                  "| | " + " | ".join(names) + " |", "| --- " * (len(names) + 1) + "|"]
        lines += [f"| {image} | " + " | ".join(found[k] for k in names) + " |" for image, found in read.items()]
    elif not clip:
        lines.append("\nCLIP is not available here: no CLIP scores.")
    return result.note + "\n\n" + "\n".join(lines)


def render(result: cycle_text.Result):
    """The gallery, the metrics, the per-word attention maps and the latent z."""
    return shown(result.gallery), metrics_markdown(result), shown(result.attention), shown(result.latent_maps)


run_cycle_text = endpoint("cycle_text", cycle_text.Settings, cycle_text.run, render, cycle_text.cost)


def build_tab() -> None:
    with gr.Tab("Text edit (Stable Diffusion)"):
        rule(RULE)
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    image = input_image("Photo to edit")
                    with gr.Column():
                        model_id = gr.Dropdown(cycle_text.offered(), value=cycle_text.default_model(),
                                               label="Text-to-image model")
                        control = gr.Radio(list(cycle_text.CONTROLS), value="replace",
                                           label="Cross-attention control (replace: a word swap; refine: the target "
                                                 "adds words)")
                source_prompt = gr.Textbox("", label="Source prompt (what the photo shows)",
                                           placeholder="a photo of a cat")
                prompt = gr.Textbox("", label="Target prompt (what the edit should show)",
                                    placeholder="a photo of a dog")
                run, time_estimate = run_controls("Edit with text")
                how_it_works(EXPLANATION)
                strength = gr.Slider(cycle_text.MIN_STRENGTH, 1.0, value=0.8, step=0.05,
                                     label="Strength (start t0 = strength × T; lower = more faithful)")
                sdedit = gr.Checkbox(True, label="Also decode the SDEdit baseline: the same x_t0, fresh noise")
                ddib = gr.Checkbox(False, label="Also decode the DDIB baseline: deterministic DDIM inversion to t0 "
                                                "under the source prompt, decoded under the target prompt")
                with gr.Accordion("Advanced", open=False):
                    guidance_scale = gr.Slider(0, cycle_text.MAX_GUIDANCE_SCALE, value=2.0, step=0.5,
                                               label="Target guidance scale (classifier-free; ≤ 1 = off)")
                    source_guidance_scale = gr.Slider(0, cycle_text.MAX_GUIDANCE_SCALE, value=1.0, step=0.5,
                                                      label="Source guidance scale (the encoder's; > 1 needs the target's > 1)")
                    eta = gr.Slider(0.05, 1.0, value=0.1, step=0.05, label="η (noise of the sampler; must be > 0)")
                    steps = gr.Slider(cycle_text.MIN_STEPS, 200, value=25, step=1,
                                      label="Sampling steps (a 2-core CPU fits about 28 with BK-SDM-Tiny)")
                    cross_replace = gr.Slider(0, 1, value=0.8, step=0.05,
                                              label="Cross-attention follows the source for this share of the steps")
                    self_replace = gr.Slider(0, 1, value=0.4, step=0.05,
                                             label="Self-attention follows the source for this share of the steps")
                    reweight_word = gr.Textbox("", label="Reweight one target word (optional)", placeholder="dog")
                    reweight_scale = gr.Slider(-2, 5, value=1.0, step=0.1, label="… by this factor")
                    attention_step = gr.Slider(1, 200, value=1, step=1, label="Attention maps at step k of the chain")
                    seed = seed_input()
                    preview_every = preview_slider()
            with gr.Column():
                gallery = result_gallery("Input, edit, SDEdit and DDIB baselines", 4)
                metrics = gr.Markdown()
                attention = gr.Gallery(label="Where each word attends (source words, then target words; white = most)",
                                       columns=8, height=260, interactive=False)
                latent_view = gr.Gallery(label="The latent z: x_t0 and noise maps ε_t (3 of the latent's channels)",
                                         columns=1 + cycle_text.LATENT_MAPS, height=200, interactive=False)
                results = gr.Column()
        settings = dict(image=image, model_id=model_id, source_prompt=source_prompt, prompt=prompt, strength=strength,
                        steps=steps, guidance_scale=guidance_scale, source_guidance_scale=source_guidance_scale,
                        eta=eta, control=control, cross_replace_steps=cross_replace, self_replace_steps=self_replace,
                        reweight_word=reweight_word, reweight_scale=reweight_scale, attention_step=attention_step,
                        seed=seed, sdedit=sdedit, preview_every=preview_every, ddib=ddib)
        examples.add(EXAMPLES, EXAMPLE_FIELDS, settings, model_field="model_id",
                     label="Examples (pick one, then Edit with text; faces-text-32 runs in seconds on a CPU, "
                           "Stable Diffusion wants a GPU)",
                     run=run_cycle_text, outputs=[gallery, metrics, attention, latent_view])
        inputs = settings_inputs(cycle_text.Settings, **settings)
        estimate = estimator(cycle_text.Settings, cycle_text.cost)
        gr.on([c.change for c in (model_id, strength, steps, guidance_scale, source_guidance_scale, sdedit, ddib)],
              estimate, inputs, time_estimate, api_visibility="private")
        describe(run_cycle_text, cycle_text.run, cycle_text.Settings, inputs)
        event = run.click(live(run_cycle_text, 4), inputs, [gallery, metrics, attention, latent_view],
                          api_name="cycle_text", preprocess=False, **concurrency())
        event.then(estimate, inputs, time_estimate, api_visibility="private")
        with results:
            take_home(cycle_text, inputs, gallery, event)
