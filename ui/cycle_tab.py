"""The CycleDiffusion tab: encode an image into a stochastic sampler's latent, decode it with another model or text
(runners.cycle)."""

from __future__ import annotations

import gradio as gr

from runners import cycle

from . import examples
from .gpu import concurrency
from .handler import endpoint, estimator, live
from .outputs import gallery as shown
from .widgets import (describe, how_it_works, input_image, model_dropdown, preview_slider, result_gallery, rule,
                      run_controls, seed_input, settings_inputs, take_home)

MODES = [("reconstruct", "reconstruct"), ("translate", "translate"), ("text edit (CLIP)", "text"),
         ("class translation", "class")]

RULE = r"""**CycleDiffusion** (Wu & De la Torre, ICCV 2023): encode the image into the noise of a stochastic sampler,
$\epsilon_t = (x_{t-1} - \mu_\theta(x_t, t)) / \sigma_t$, and decode the same
$z = (x_{t_0}, \epsilon_{t_0}, \dots, \epsilon_1)$ with another class, model or text."""

EXPLANATION = r"""
**CycleDiffusion** (Wu & De la Torre, ICCV 2023) gives a stochastic sampler (DDIM with $\eta > 0$) a latent code:
$z = (x_{t_0}, \epsilon_{t_0}, \dots, \epsilon_{1})$, the start of the chain and the noise of every step, decoded by
$x_{t-1} = \mu_\theta(x_t, t) + \sigma_t \epsilon_t$. The **DPM-Encoder** runs the forward process on your image and
keeps, at each step, the noise that makes the model land exactly on the next state:

$$\epsilon_t = \frac{x_{t-1} - \mu_\theta(x_t, t)}{\sigma_t},\qquad x_{t-1} \sim q(x_{t-1} \mid x_t, x_0),\ \text{and } x_0 \text{ itself at the last step}$$

so decoding $z$ with the same model gives your image back (**reconstruct**; PSNR far above 40 dB). Decoding the
*same* $z$ with **another model** of the same size turns a face into a cat with the same pose and colours
(**translate**); decoding it with the same model **CLIP-guided toward a text**
($\hat\epsilon = \epsilon_\theta - \sqrt{1-\bar\alpha_t}\, s\, \nabla_{x_t} \text{CLIP}(\hat x_0, \text{text})$)
changes what the text names (**text edit**). A class-conditional model translates between its own classes: encode
with $G(z \mid c_\text{source})$, decode the same $z$ with $G(z \mid c_\text{target})$, and a red circle becomes a red
square in the same place (**class translation**). A **lower strength** starts the chain at a smaller $t_0$: more faithful,
less change. PSNR and SSIM measure faithfulness to the input, the CLIP similarity the edit. The **SDEdit
baseline** decodes the same $x_{t_0}$ with fresh noise instead of the encoded $\epsilon_t$: the gap between it and
the result is what the inferred noise contributes. Below the result, $z$ itself: $x_{t_0}$ and a few noise maps.
"""

EXAMPLE_FIELDS = ("image", "mode", "source_id", "target_id", "target_prompt", "source_prompt", "strength", "eta",
                  "steps", "seed", "source_class", "target_class")
EXAMPLES = [
    ["assets/faces/frowning.png", "class", "faces-32", None, "", "", 0.5, 1.0, 50, 0, "frowning", "smiling"],
    ["assets/faces/frowning.png", "class", "faces-32", None, "", "", 0.5, 1.0, 50, 0, "frowning",
     "frowning with glasses"],
    ["assets/shapes/red-circle.png", "class", "shapes-16", None, "", "", 0.5, 1.0, 50, 0, "circle", "square"],
    ["assets/shapes/green-triangle.png", "class", "shapes-16", None, "", "", 0.5, 1.0, 50, 0, "triangle",
     "circle"],
    ["assets/shapes/blue-square.png", "class", "shapes-16", None, "", "", 0.5, 1.0, 50, 0, "square",
     "triangle"],
    ["assets/astronaut.png", "reconstruct", "google/ddpm-celebahq-256", None, "", "", 1.0, 1.0, 100, 0, None, None],
    ["assets/astronaut.png", "translate", "google/ddpm-celebahq-256", "google/ddpm-cat-256", "", "", 0.6, 1.0, 100, 0,
     None, None],
    ["assets/chelsea.png", "translate", "google/ddpm-cat-256", "google/ddpm-celebahq-256", "", "", 0.5, 1.0, 100, 1,
     None, None],
    ["assets/astronaut.png", "text", "google/ddpm-celebahq-256", None, "a smiling face", "a face", 0.6, 1.0, 100,
     2, None, None],
]


def target_dropdown(source_id: str, current: str | None) -> gr.Dropdown:
    choices = cycle.target_choices(source_id)
    return gr.Dropdown(choices=choices, value=current if current in choices else (choices[0] if choices else None))


def class_values(names, source_class: str | None, target_class: str | None) -> tuple[str | None, str | None]:
    """The source and target class to show among `names`: the current ones where they still apply, else the first two."""
    source = source_class if source_class in names else (names[0] if names else None)
    target = target_class if target_class in names else (names[1 % len(names)] if names else None)
    return source, target


def class_dropdowns(source_id: str, source_class: str | None, target_class: str | None):
    """The source and target class menus for a source model: its classes, keeping choices that still apply."""
    names = list(cycle.class_names(source_id))
    source, target = class_values(names, source_class, target_class)
    return gr.Dropdown(choices=names, value=source), gr.Dropdown(choices=names, value=target)


def source_controls(source_id: str, target_id: str | None, source_class: str | None, target_class: str | None):
    """The target model and class menus for a source model."""
    return (target_dropdown(source_id, target_id), *class_dropdowns(source_id, source_class, target_class))


def example_controls(image, mode, source_id, target_id, *rest):
    """An example's menus made to match the example as written (their choices for its source model)."""
    source_class, target_class = rest[-2:]
    return source_controls(source_id, target_id, source_class, target_class)


def metrics_markdown(metrics: dict) -> str:
    if not metrics:
        return "Stopped."
    z, (width, height) = metrics["z"], metrics["size"]
    lines = [
        f"Chain started at **t0 = {metrics['t0']}**. The latent z = (x_t0, ε_t0 … ε_1), {metrics['tensors']} "
        f"tensors of 3×{height}×{width}: mean {z['mean']:+.3f}, std {z['std']:.3f}, "
        f"‖z‖²/dim **{z['squared_norm_per_dim']:.3f}** (near 1: noise the model would draw itself).",
        "",
        "| | PSNR to input (dB) | SSIM to input |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {row['psnr']:.1f} | {row['ssim']:.4f} |" for name, row in metrics["rows"].items()]
    if "clip" in metrics:
        clip = metrics["clip"]
        lines.append(f"\nCLIP similarity to “{clip['text']}”: reconstruction **{clip['reconstruction']:.3f}** → edit "
                     f"**{clip['edit']:.3f}**.")
    return "\n".join(lines)


def render(result: cycle.Result):
    """The gallery, the metrics and the latent z as pictures."""
    return shown(result.gallery), metrics_markdown(result.metrics), shown(result.latent_maps)


run_cycle = endpoint("cycle", cycle.Settings, cycle.run, render, cycle.cost)


def build_tab() -> None:
    with gr.Tab("CycleDiffusion"):
        rule(RULE)
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    image = input_image("Input image")
                    with gr.Column():
                        source_id = model_dropdown("Source model (encodes the input)")
                        first_classes = list(cycle.class_names(source_id.value))
                        first_source, first_target = class_values(first_classes, None, None)
                        with gr.Row():
                            source_class = gr.Dropdown(first_classes, value=first_source, allow_custom_value=True,
                                                       label="Source class", min_width=100)
                            target_class = gr.Dropdown(first_classes, value=first_target, allow_custom_value=True,
                                                       label="Target class", min_width=100)
                        strength = gr.Slider(cycle.MIN_STRENGTH, 1.0, value=0.6, step=0.05,
                                             label="Strength (t0 = strength × T)")
                mode = gr.Radio(MODES, value="class" if first_classes else "translate", label="Mode")
                run, time_estimate = run_controls("Run CycleDiffusion")
                how_it_works(EXPLANATION)
                with gr.Accordion("Translate to another model, or edit toward a text (CLIP guidance)", open=False):
                    first_targets = cycle.target_choices(source_id.value)
                    target_id = gr.Dropdown(first_targets, value=first_targets[0] if first_targets else None,
                                            allow_custom_value=True,
                                            label="Target model (translate: same resolution as the source)")
                    target_prompt = gr.Textbox("", label="Target text (text edit)", placeholder="a smiling face")
                    source_prompt = gr.Textbox("", label="Source text, optional (text edit: steer away from it)",
                                               placeholder="a face")
                sdedit = gr.Checkbox(True, label="Also decode the SDEdit baseline: the same x_t0, fresh noise instead "
                                                 "of the encoded ε (what the inferred noise contributes)")
                ddib = gr.Checkbox(False, label="Also decode the DDIB baseline: deterministic DDIM inversion to t0, then "
                                                "decoding with the target (translations; what the stochastic latent adds)")
                with gr.Accordion("Advanced", open=False):
                    eta = gr.Slider(0.05, 1.0, value=1.0, step=0.05,
                                    label="η (noise of the sampler; must be > 0, the paper uses 1)")
                    steps = gr.Slider(cycle.MIN_STEPS, 999, value=100, step=1, label="Sampling steps")
                    guidance_scale = gr.Slider(0, cycle.MAX_GUIDANCE_SCALE, value=10, step=0.5,
                                               label="CLIP guidance scale s (text edit)")
                    exact_gradient = gr.Checkbox(False, label="Exact CLIP gradient through the U-Net (about 3× slower; "
                                                 "not with plug-and-play, which differentiates the whole chain)")
                    pnp_steps = gr.Slider(0, 50, value=0, step=1, label="Plug-and-play guidance: Langevin steps on z "
                                          "(0 = off; backpropagates through the whole chain, wants a GPU)")
                    step_size = gr.Number(1e-3, minimum=1e-6, maximum=1.0, label="Langevin step size λ")
                    seed = seed_input()
                    preview_every = preview_slider()
            with gr.Column():
                gallery = result_gallery("Input, reconstruction, result, SDEdit baseline", 4)
                metrics = gr.Markdown()
                latent_view = gr.Gallery(label="The latent z of the input: x_t0 and noise maps ε_t (grey = 0, "
                                               "black/white = ∓3σ)", columns=1 + cycle.LATENT_MAPS, height=220,
                                               interactive=False)
                results = gr.Column()
        menus = [target_id, source_class, target_class]
        # the menus follow the user's picks (.input); an example sets them as written, choices included
        source_id.input(source_controls, [source_id, *menus], menus, api_visibility="private")
        settings = dict(image=image, mode=mode, source_id=source_id, target_id=target_id, target_prompt=target_prompt,
                        source_prompt=source_prompt, strength=strength, eta=eta, steps=steps,
                        guidance_scale=guidance_scale, exact_gradient=exact_gradient, pnp_steps=pnp_steps,
                        step_size=step_size, seed=seed, source_class=source_class, target_class=target_class,
                        sdedit=sdedit, preview_every=preview_every, ddib=ddib)
        examples.add(EXAMPLES, EXAMPLE_FIELDS, settings, model_field="source_id", label="Examples (pick one, then Run)",
                     run=run_cycle, outputs=[gallery, metrics, latent_view], fill=(example_controls, menus))
        inputs = settings_inputs(cycle.Settings, **settings)
        estimate = estimator(cycle.Settings, cycle.cost, model_field="source_id")
        costs = [source_id, mode, strength, steps, exact_gradient, pnp_steps, sdedit, ddib]
        gr.on([c.change for c in costs], estimate, inputs, time_estimate, api_visibility="private")
        describe(run_cycle, cycle.run, cycle.Settings, inputs)
        event = run.click(live(run_cycle, 3), inputs, [gallery, metrics, latent_view], api_name="cycle",
                          preprocess=False, **concurrency())
        event.then(estimate, inputs, time_estimate, api_visibility="private")
        with results:
            take_home(cycle, inputs, gallery, event)
