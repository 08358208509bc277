"""The CycleDiffusion tab: encode an image into a stochastic sampler's latent, decode it with another model or text."""

from __future__ import annotations

import gradio as gr

from pipelines import CycleDiffusionPipeline, images, load_clip, load_diffusion, loading, make_scheduler, registry
from pipelines.cycle_diffusion import chain_length
from pipelines.metrics import clip_similarity, faithfulness

from .common import (GPU_CONCURRENCY, StepReporter, Stopped, check_budget, check_text, class_names, display,
                     estimate_markdown, evenly, gpu, live, make_generator, model_dropdown, noise_image, offered_model,
                     preview_slider, run_controls, seed_input, started, take_home, uploaded_path, user_errors)

MIN_STEPS, MIN_STRENGTH = 10, 0.1
MODES = ["reconstruct", "translate", "text edit", "class translation"]
MAX_GUIDANCE_SCALE = 100  # the slider's range

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

# image, mode, source model, target model, target text, source text, strength, eta, steps, seed, source/target class
EXAMPLES = [
    ["assets/faces/frowning.png", "class translation", "faces-32", None, "", "", 0.5, 1.0, 50, 0, "frowning", "smiling"],
    ["assets/faces/frowning.png", "class translation", "faces-32", None, "", "", 0.5, 1.0, 50, 0, "frowning",
     "frowning with glasses"],
    ["assets/shapes/red-circle.png", "class translation", "shapes-16", None, "", "", 0.5, 1.0, 50, 0, "circle", "square"],
    ["assets/shapes/green-triangle.png", "class translation", "shapes-16", None, "", "", 0.5, 1.0, 50, 0, "triangle",
     "circle"],
    ["assets/shapes/blue-square.png", "class translation", "shapes-16", None, "", "", 0.5, 1.0, 50, 0, "square",
     "triangle"],
    ["assets/astronaut.png", "reconstruct", "google/ddpm-celebahq-256", None, "", "", 1.0, 1.0, 100, 0, None, None],
    ["assets/astronaut.png", "translate", "google/ddpm-celebahq-256", "google/ddpm-cat-256", "", "", 0.6, 1.0, 100, 0,
     None, None],
    ["assets/chelsea.png", "translate", "google/ddpm-cat-256", "google/ddpm-celebahq-256", "", "", 0.5, 1.0, 100, 1,
     None, None],
    ["assets/astronaut.png", "text edit", "google/ddpm-celebahq-256", None, "a smiling face", "a face", 0.6, 1.0, 100,
     2, None, None],
]


def resolution(model_id: str) -> int | None:
    """The image size of a model: from the registry, or by loading a local model (cached); None if it cannot load."""
    info = registry.REGISTRY.get(model_id)
    if info is not None:
        return info.resolution
    try:
        return load_diffusion(model_id).unet.config.sample_size
    except loading.ModelLoadError:
        return None


def target_choices(source_id: str) -> list[str]:
    """The models that can decode a latent of `source_id`: the others of the same resolution (the hub DDPMs of one
    resolution share one noise schedule; the pipeline checks the schedule again at run time)."""
    size = resolution(source_id)
    return [m for m in registry.diffusion_model_ids() if m != source_id and size is not None and resolution(m) == size]


def target_dropdown_update(source_id: str, current: str | None) -> gr.Dropdown:
    choices = target_choices(source_id)
    return gr.Dropdown(choices=choices, value=current if current in choices else (choices[0] if choices else None))


def class_values(names, source_class: str | None, target_class: str | None) -> tuple[str | None, str | None]:
    """The source and target class to show among `names`: the current ones where they still apply, else the first two."""
    source = source_class if source_class in names else (names[0] if names else None)
    target = target_class if target_class in names else (names[1 % len(names)] if names else None)
    return source, target


def class_dropdown_updates(source_id: str, source_class: str | None, target_class: str | None):
    """The source and target class dropdowns for a source model: its classes, keeping choices that still apply."""
    names = list(class_names(source_id))
    source, target = class_values(names, source_class, target_class)
    return gr.Dropdown(choices=names, value=source), gr.Dropdown(choices=names, value=target)


def class_labels(source_id: str, source_class: str | None, target_class: str | None) -> dict[str, int]:
    """The pipeline's class_labels / target_class_labels indices for two class names of the source model."""
    names = class_names(source_id)
    if not names:
        raise gr.Error(
            f"{source_id} has no classes, so it cannot translate between them. Class translation needs a "
            f"class-conditional model, e.g. {registry.BUNDLED_MODEL} ({', '.join(class_names(registry.BUNDLED_MODEL))}).",
            title="No classes",
        )
    for what, name in (("source", source_class), ("target", target_class)):
        if name not in names:
            raise gr.Error(f"Pick the {what} class from {source_id}'s classes: {', '.join(names)}; got {name!r}.",
                           title="Invalid input")
    return {"class_labels": names.index(source_class), "target_class_labels": names.index(target_class)}


@user_errors
@gpu
def run_cycle(image, mode, source_id, target_id, target_prompt, source_prompt, strength, eta, steps, guidance_scale,
              exact_gradient, pnp_steps, step_size, seed, source_class=None, target_class=None, sdedit=True,
              preview_every=0, request: gr.Request = None, progress=gr.Progress()):
    """The input, its reconstruction, the result (and the SDEdit baseline), the metrics, and the latent z as pictures."""
    source_id = offered_model(source_id)
    if mode not in MODES:
        raise gr.Error(f"Pick a mode: {', '.join(MODES)}.", title="Invalid input")
    if mode == "translate":
        if not target_id:
            raise gr.Error("Pick a target model of the same resolution as the source model.", title="No target model")
        target_id = offered_model(target_id)
    target_prompt, source_prompt = check_text(target_prompt, "The target text"), check_text(source_prompt, "The source text")
    if mode == "text edit":
        if not target_prompt:
            raise gr.Error("Write the target text (what the edited image should show).", title="No target text")
        if not 0 <= float(guidance_scale) <= MAX_GUIDANCE_SCALE:
            raise gr.Error(f"The CLIP guidance scale s must be from 0 to {MAX_GUIDANCE_SCALE}; got {guidance_scale}.", title="Invalid input")
        if step_size is None:
            raise gr.Error("Write a Langevin step size λ (e.g. 0.001).", title="Invalid input")
    kwargs = class_labels(source_id, source_class, target_class) if mode == "class translation" else {}
    path = uploaded_path(image)
    source = load_diffusion(source_id)
    picture = images.center_crop_resize(images.open_image(path), source.unet.config.sample_size)
    pipe = CycleDiffusionPipeline(unet=source.unet, scheduler=make_scheduler(source, "ddim"))
    if mode == "translate":
        target = load_diffusion(target_id)
        kwargs = dict(target_unet=target.unet, target_scheduler=make_scheduler(target, "ddim"))
    clip = None
    if mode == "text edit":
        clip = load_clip().judge
        kwargs = dict(clip=clip, target_prompt=target_prompt, source_prompt=source_prompt or None,
                      guidance_scale=float(guidance_scale), gradient="exact" if exact_gradient else "fixed_eps",
                      plug_and_play_steps=int(pnp_steps), step_size=float(step_size))
    settings = dict(strength=float(strength), eta=float(eta), num_inference_steps=int(steps))
    pipe.check_inputs(image=picture, output_type="pil", **settings, **kwargs)
    check_budget(source, *cost(mode, strength, steps, exact_gradient, pnp_steps, sdedit),
                 lower="the steps, the strength or the Langevin steps (or turn off the exact CLIP gradient or the "
                       "SDEdit baseline)",
                 smallest=cost(mode, MIN_STRENGTH, MIN_STEPS, False, 0, False))
    total = pipe.total_steps(num_inference_steps=settings["num_inference_steps"], strength=settings["strength"],
                             plug_and_play_steps=kwargs.get("plug_and_play_steps", 0),
                             translate_or_edit=mode != "reconstruct", sdedit_baseline=bool(sdedit))
    reporter = StepReporter(progress, total, f"CycleDiffusion: {mode}", stop=started(request),
                            preview_every=preview_every)
    try:
        out = pipe(picture, generator=make_generator(seed), callback=reporter, sdedit_baseline=bool(sdedit),
                   **settings, **kwargs)
    except Stopped:
        return [(display(picture), "input")] + reporter.stopped_gallery(), "Stopped.", []
    result, reconstruction = out.images[0], out.reconstructions[0]
    baseline = out.sdedit_images[0] if sdedit else None
    captions = {"translate": target_id, "text edit": f"“{target_prompt}”",
                "class translation": f"{source_class} → {target_class}"}
    rebuilt = f"G(z | {source_class}) (same class)" if mode == "class translation" else "G1(z) (same model)"
    gallery = [(display(picture), "input"), (display(reconstruction), f"reconstruction {rebuilt}")]
    if mode != "reconstruct":
        gallery.append((display(result), f"{mode}: {captions[mode]}"))
    if baseline is not None:
        gallery.append((display(baseline), "SDEdit baseline: the same x_t0, fresh noise instead of the encoded ε"))
    metrics = metrics_markdown(picture, reconstruction, result, mode, clip, target_prompt, out.latent, baseline)
    return gallery, metrics, latent_frames(out.latent)


LATENT_MAPS = 4  # the noise maps eps_t shown besides x_t0


def latent_frames(latent) -> list[tuple]:
    """z = (x_t0, eps_t0, ..., eps_1) of the first image as pictures: x_t0 and LATENT_MAPS noise maps spread over the
    chain (grey is 0, black and white are -3 and +3 standard deviations)."""
    frames = [(display(noise_image(latent.x_t0[0])), f"x_t0, t0 = {latent.t0}")]
    for k in evenly(len(latent.timesteps), LATENT_MAPS):
        frames.append((display(noise_image(latent.eps[k][0])), f"ε at t = {int(latent.timesteps[k])}"))
    return frames


def cost(mode, strength, steps, exact_gradient, pnp_steps, sdedit=False) -> tuple[int, int]:
    """U-Net evaluations at batch 1 (plain, back-propagated): the encoder's chain of n = strength x steps, the
    reconstruction's and the result's decodings (and the SDEdit baseline's); back-propagated in an exact CLIP-guided
    decoding (the result's and the baseline's), and through the whole chain at every Langevin step of plug-and-play
    guidance."""
    n = chain_length(int(steps), float(strength))
    decodings = 1 + (1 if mode != "reconstruct" else 0) + (1 if sdedit else 0)
    if mode != "text edit":
        return (1 + decodings) * n, 0
    guided = n * (2 if sdedit else 1) if exact_gradient and not int(pnp_steps) else 0
    return (1 + decodings) * n - guided, guided + int(pnp_steps) * n


def estimate(source_id, mode, strength, steps, exact_gradient, pnp_steps, sdedit) -> str:
    return estimate_markdown(source_id, *cost(mode, strength, steps, exact_gradient, pnp_steps, sdedit))


def metrics_markdown(picture, reconstruction, result, mode, clip, target_prompt, latent, baseline=None) -> str:
    rec, res = faithfulness(picture, reconstruction), faithfulness(picture, result)
    z = latent.statistics()
    lines = [
        f"Chain started at **t0 = {latent.t0}**. The latent z = (x_t0, ε_t0 … ε_1), {1 + len(latent.timesteps)} "
        f"tensors of 3×{picture.height}×{picture.width}: mean {z['mean']:+.3f}, std {z['std']:.3f}, "
        f"‖z‖²/dim **{z['squared_norm_per_dim']:.3f}** (near 1: noise the model would draw itself).",
        "",
        "| | PSNR to input (dB) | SSIM to input |",
        "| --- | --- | --- |",
        f"| reconstruction | {rec['psnr']:.1f} | {rec['ssim']:.4f} |",
    ]
    if mode != "reconstruct":
        lines.append(f"| result | {res['psnr']:.1f} | {res['ssim']:.4f} |")
    if baseline is not None:
        base = faithfulness(picture, baseline)
        lines.append(f"| SDEdit baseline (fresh noise) | {base['psnr']:.1f} | {base['ssim']:.4f} |")
    if clip is not None:
        before, after = clip_similarity(clip, reconstruction, target_prompt), clip_similarity(clip, result, target_prompt)
        lines.append(f"\nCLIP similarity to “{target_prompt}”: reconstruction **{before:.3f}** → edit **{after:.3f}**.")
    return "\n".join(lines)


def build_tab() -> None:
    with gr.Tab("CycleDiffusion"):
        gr.Markdown(EXPLANATION, latex_delimiters=[{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}])
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label="Input image", height=320)
                first_classes = class_names(registry.default_model_id())
                mode = gr.Radio(MODES, value="class translation" if first_classes else "translate", label="Mode")
                source_id = model_dropdown("Source model (encodes the input)")
                first_targets = target_choices(registry.default_model_id())
                target_id = gr.Dropdown(first_targets, value=first_targets[0] if first_targets else None,
                                        label="Target model (translate: same resolution as the source)")
                with gr.Row():
                    first_source, first_target = class_values(first_classes, None, None)
                    source_class = gr.Dropdown(first_classes, value=first_source,
                                               label="Source class (class translation: what the input shows)")
                    target_class = gr.Dropdown(first_classes, value=first_target,
                                               label="Target class (class translation: what it should become)")
                target_prompt = gr.Textbox(label="Target text (text edit)", placeholder="a smiling face")
                source_prompt = gr.Textbox(label="Source text, optional (text edit: steer away from it)",
                                           placeholder="a face")
                strength = gr.Slider(MIN_STRENGTH, 1.0, value=0.6, step=0.05, label="Strength (start t0 = strength × 1000; lower = more faithful)")
                with gr.Accordion("Advanced", open=False):
                    eta = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="η (noise of the sampler; must be > 0, the paper uses 1)")
                    steps = gr.Slider(MIN_STEPS, 999, value=100, step=1, label="Sampling steps")
                    guidance_scale = gr.Slider(0, MAX_GUIDANCE_SCALE, value=10, step=0.5, label="CLIP guidance scale s (text edit)")
                    exact_gradient = gr.Checkbox(False, label="Exact CLIP gradient through the U-Net (about 3× slower; "
                                                 "not with plug-and-play, which differentiates the whole chain)")
                    pnp_steps = gr.Slider(0, 50, value=0, step=1, label="Plug-and-play guidance: Langevin steps on z "
                                          "(0 = off; backpropagates through the whole chain, wants a GPU)")
                    step_size = gr.Number(1e-3, minimum=1e-6, maximum=1.0, label="Langevin step size λ")
                    seed = seed_input()
                    preview_every = preview_slider()
                sdedit = gr.Checkbox(True, label="Also decode the SDEdit baseline: the same x_t0, fresh noise instead "
                                                 "of the encoded ε (what the inferred noise contributes)")
                run, time_estimate = run_controls("Run CycleDiffusion")
            with gr.Column():
                gallery = gr.Gallery(label="Input, reconstruction, result, SDEdit baseline", columns=4, height=420)
                metrics = gr.Markdown()
                latent_view = gr.Gallery(label="The latent z of the input: x_t0 and noise maps ε_t (grey = 0, "
                                               "black/white = ∓3σ)", columns=1 + LATENT_MAPS, height=220)
                results = gr.Column()
        gr.Examples(
            EXAMPLES,
            inputs=[image, mode, source_id, target_id, target_prompt, source_prompt, strength, eta, steps, seed,
                    source_class, target_class],
            label="Examples (pick one, then Run)",
        )
        source_id.change(target_dropdown_update, [source_id, target_id], target_id, api_visibility="private")
        source_id.change(class_dropdown_updates, [source_id, source_class, target_class], [source_class, target_class],
                         api_visibility="private")
        inputs = [image, mode, source_id, target_id, target_prompt, source_prompt, strength, eta, steps, guidance_scale,
                  exact_gradient, pnp_steps, step_size, seed, source_class, target_class, sdedit, preview_every]
        costs = [source_id, mode, strength, steps, exact_gradient, pnp_steps, sdedit]
        gr.on([c.change for c in costs], estimate, costs, time_estimate, api_visibility="private")
        event = run.click(live(run_cycle, 3), inputs, [gallery, metrics, latent_view], api_name="cycle",
                          preprocess=False, **GPU_CONCURRENCY)
        event.then(estimate, costs, time_estimate, api_visibility="private")
        with results:
            take_home("cycle", run_cycle, inputs, gallery, event, pictures={"image": "source_id"})
