"""The ILVR tab: reference-guided sampling."""

from __future__ import annotations

import gradio as gr
import torch

from pipelines import ILVRPipeline, images, load_diffusion, make_scheduler
from pipelines.ilvr import DOWN_FACTORS
from pipelines.sampling import counted_from

from .common import (GPU_CONCURRENCY, StepReporter, Stopped, check_budget, display, estimate_markdown, gpu, live,
                     make_generator, model_dropdown, offered_model, preview_slider, run_controls, seed_input, started,
                     take_home, uploaded_path, user_errors)

MIN_STEPS = 10

EXPLANATION = r"""
**ILVR** (Choi et al., ICCV 2021) steers an *unconditional* DDPM toward a reference image y without any training.
After each ordinary sampling step it swaps the low frequencies of the sample for those of the reference,
noised to the same level:

$$x_{t-1} = \phi_N(y_{t-1}) + (I - \phi_N)(x'_{t-1}), \qquad x'_{t-1} \sim p_\theta(x_{t-1} \mid x_t),\; y_{t-1} \sim q(y_{t-1} \mid y)$$

$\phi_N$ downsamples by N and upsamples back (a low-pass filter). The model fills in the details, so the samples
share the reference's coarse layout and colours (what $\phi_N(y)$ shows) but not its fine details.
A **larger N** keeps only coarser structure (more freedom); **stopping the conditioning earlier** (a larger
"condition while t >") also gives more freedom. Tick *show the process* to watch $x_t$ and the predicted $x_0$, and the
refinement of one step split into what it throws away, puts in and keeps. Paint the reference on the canvas to
turn strokes into an image, or scribble on a photo (the paper's paint-to-image and editing).
"""

# reference, model, N, condition while t >, steps, samples, seed, show the process
EXAMPLES = [
    ["assets/faces/drawn-face.png", "faces-32", 4, 0, 50, 4, 0, True],
    ["assets/faces/drawn-face.png", "faces-32", 8, 0, 50, 4, 1, False],
    ["assets/shapes/red-circle.png", "shapes-16", 4, 0, 100, 4, 0, True],
    ["assets/shapes/blue-square.png", "shapes-16", 4, 0, 50, 4, 1, False],
    ["assets/shapes/green-triangle.png", "shapes-16", 8, 0, 100, 4, 2, False],
    ["assets/shapes/yellow-circle.png", "shapes-16", 8, 0, 50, 6, 3, False],
    ["assets/astronaut.png", "google/ddpm-celebahq-256", 4, 0, 100, 2, 0, True],
    ["assets/chelsea.png", "google/ddpm-cat-256", 8, 0, 100, 2, 1, False],
    ["assets/astronaut.png", "google/ddpm-celebahq-256", 16, 300, 100, 2, 2, False],
]


SKETCHES = "assets/sketches"
BRUSH_COLOURS = ["#1a1a1a", "#ffffff", "#e4b896", "#48322a", "#5c78aa", "#c85050", "#3c9a50", "#e63cc8", "#fadc3c"]


def sketch(name: str, background: str | None = None) -> dict:
    """A canvas example: its background, its stroke layer and their composite (the reference it gives)."""
    return {"background": background or f"{SKETCHES}/{name}-background.png", "layers": [f"{SKETCHES}/{name}-layer.png"],
            "composite": f"{SKETCHES}/{name}.png"}


# canvas, reference (the canvas's composite), model, N, condition while t >, steps, samples, seed, show the process
SKETCH_EXAMPLES = [
    [sketch("drawn-face"), f"{SKETCHES}/drawn-face.png", "faces-32", 4, 0, 50, 4, 0, False],
    [sketch("drawn-triangle"), f"{SKETCHES}/drawn-triangle.png", "shapes-16", 2, 0, 100, 4, 0, False],
    [sketch("face-strokes"), f"{SKETCHES}/face-strokes.png", "google/ddpm-celebahq-256", 32, 0, 100, 2, 0, False],
    [sketch("astronaut-scribble", "assets/astronaut.png"), f"{SKETCHES}/astronaut-scribble.png",
     "google/ddpm-celebahq-256", 16, 0, 100, 2, 0, False],
]


def drawing_reference(canvas) -> str:
    """The canvas's composite (background, then every layer) as the reference image."""
    composite = canvas.get("composite") if isinstance(canvas, dict) else None
    if not composite:
        raise gr.Error("Draw on the canvas first (or upload a photo into it to scribble on), then use it as the "
                       "reference.", title="Nothing drawn")
    return composite


def prepare(reference, model_id):
    """(the offered model, the uploaded reference at its size, an ILVR pipeline of it), or a gr.Error."""
    model_id = offered_model(model_id)
    path = uploaded_path(reference, "a reference image")
    model = load_diffusion(model_id)
    reference = images.center_crop_resize(images.open_image(path), model.unet.config.sample_size)
    return model, reference, ILVRPipeline(unet=model.unet, scheduler=make_scheduler(model, "ddpm"))


def split_index(split_step, steps: int) -> int:
    """The 0-based index of the step whose frequency split is shown: step `split_step` of 1..steps, capped at the
    last step but one (the last step, to t = 0, is never conditioned)."""
    if split_step is None or int(split_step) < 1:
        raise gr.Error(f"The frequency split's step must be from 1 to the number of steps; got {split_step}.",
                       title="Invalid input")
    return max(0, min(int(split_step), steps - 1) - 1)


def frequency_split_frames(split, down_factor) -> list[tuple]:
    """The refinement of one step as four pictures: what it replaced, what it put in, what it kept, and the sum."""
    if split is None:
        return []
    where = f"step {split.step + 1}, t={split.t}"
    parts = [(split.proposal_low, f"{where}: φ_N(x'_t-1), the model's low frequencies (replaced)"),
             (split.reference_low, f"{where}: φ_N(y_t-1), the noised reference's (put in), N={down_factor}"),
             (split.proposal_high, f"{where}: (I − φ_N)(x'_t-1), the model's high frequencies (kept)"),
             (split.x_prev, f"{where}: x_t-1 = φ_N(y_t-1) + (I − φ_N)(x'_t-1)")]
    pictures = images.postprocess(torch.stack([part for part, _ in parts]))
    return [(display(picture), caption) for picture, (_, caption) in zip(pictures, parts)]


@user_errors
@gpu
def run_ilvr(reference, model_id, down_factor, range_t, steps, samples, seed, show_process, split_step=50,
             preview_every=0, request: gr.Request = None, progress=gr.Progress()):
    model, reference, pipe = prepare(reference, model_id)
    split = split_index(split_step, int(steps)) if show_process else None
    pipe.check_inputs(down_factor=int(down_factor), range_t=int(range_t), num_inference_steps=int(steps),
                      batch_size=int(samples), output_type="pil", split_step=split)
    check_budget(model, *cost(steps, samples), lower="the sampling steps or the number of samples",
                 smallest=cost(MIN_STEPS, 1))
    reporter = StepReporter(progress, int(steps), "ILVR sampling", snapshots=6 if show_process else 0,
                            stop=started(request), preview_every=preview_every)
    try:
        out = pipe(
            reference,
            down_factor=int(down_factor),
            range_t=int(range_t),
            num_inference_steps=int(steps),
            batch_size=int(samples),
            generator=make_generator(seed),
            callback=reporter,
            split_step=split,
        )
    except Stopped:
        return [(display(reference), "reference y")] + reporter.stopped_gallery(), reporter.frames
    gallery = [(display(reference), "reference y"), (display(out.reference_low_pass[0]), f"φ_N(y), N={down_factor}")]
    gallery += [(display(image), f"sample {i + 1}") for i, image in enumerate(out.images)]
    return gallery, reporter.frames + frequency_split_frames(out.frequency_split, down_factor)


GRID_RANGES = (0, 250, 500, 750)  # the grid's columns: condition while t > range_t
GRID_FACTORS = 4  # the grid's rows: the four smallest factors N that leave the reference at least 2 px wide


def grid_factors(size: int) -> list[int]:
    return [n for n in DOWN_FACTORS if size % n == 0 and size // n >= 2][:GRID_FACTORS]


@user_errors
@gpu
def run_ilvr_grid(reference, model_id, steps, seed, request: gr.Request = None, progress=gr.Progress()):
    """One sample from the same seed at every factor N (rows) and conditioning range (columns), as in the paper's
    figures: a larger N keeps less of the reference, a larger range_t stops conditioning earlier."""
    model, reference, pipe = prepare(reference, model_id)
    cells = [(n, r) for n in grid_factors(model.unet.config.sample_size) for r in GRID_RANGES]
    for n, r in cells:
        pipe.check_inputs(down_factor=n, range_t=r, num_inference_steps=int(steps), batch_size=1, output_type="pil")
    check_budget(model, *cost(steps, len(cells)), lower="the sampling steps", smallest=cost(MIN_STEPS, len(cells)))
    reporter = StepReporter(progress, len(cells) * int(steps), "ILVR grid", stop=started(request))
    gallery = []
    for k, (n, r) in enumerate(cells):
        try:
            out = pipe(reference, down_factor=n, range_t=r, num_inference_steps=int(steps), batch_size=1,
                       generator=make_generator(seed), callback=counted_from(reporter, k * int(steps)))
        except Stopped:
            return gallery + reporter.stopped_gallery()
        gallery.append((display(out.images[0]), f"N={n}, condition while t > {r}"))
    return gallery


def cost(steps, samples) -> tuple[int, int]:
    """U-Net evaluations at batch 1 (plain, back-propagated): one per step and sample."""
    return int(steps) * int(samples), 0


def estimate(model_id, steps, samples) -> str:
    return estimate_markdown(model_id, *cost(steps, samples))


def build_tab() -> None:
    with gr.Tab("ILVR"):
        gr.Markdown(EXPLANATION, latex_delimiters=[{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}])
        with gr.Row():
            with gr.Column():
                reference = gr.Image(type="filepath", label="Reference image y", height=320)
                with gr.Accordion("Draw the reference: paint-to-image, or scribble on a photo", open=False):
                    gr.Markdown("Paint a few colour strokes (a large N keeps only their colours and layout), or "
                                "upload a photo into the canvas and scribble on it; then use it as the reference.")
                    canvas = gr.ImageEditor(type="filepath", format="png", canvas_size=(256, 256), height=340,
                                            sources=("upload", "clipboard"), label="Canvas",
                                            brush=gr.Brush(colors=BRUSH_COLOURS, default_size=12, color_mode="defaults"))
                    use_drawing = gr.Button("Use the drawing as the reference")
                model_id = model_dropdown()
                down_factor = gr.Dropdown(DOWN_FACTORS, value=4, label="Downsampling factor N (larger = looser)")
                samples = gr.Slider(1, 8, value=2, step=1, label="Number of samples")
                with gr.Accordion("Advanced", open=False):
                    range_t = gr.Slider(0, 1000, value=0, step=10, label="Condition while t > (0 = every step, 1000 = never)")
                    steps = gr.Slider(MIN_STEPS, 1000, value=100, step=10, label="Sampling steps (the paper uses 1000)")
                    seed = seed_input()
                    show_process = gr.Checkbox(False, label="Show the process (x_t and predicted x0 at a few steps, "
                                                             "and the frequency split of one step)")
                    split_step = gr.Slider(1, 1000, value=50, step=1, label="Frequency split at step k (capped at the "
                                           "last conditioned step; shown while t > the range)")
                    preview_every = preview_slider()
                run, time_estimate = run_controls("Run ILVR")
            with gr.Column():
                gallery = gr.Gallery(label="Reference, its low-pass φ_N(y), samples", columns=4, height=420)
                process = gr.Gallery(label="The process, first sample: x_t and predicted x0, then the frequency split",
                                     columns=6, visible=False)
                results = gr.Column()
                with gr.Accordion("Grid over N and the conditioning range, as in the paper's figures", open=False):
                    gr.Markdown(f"One sample from the seed above for each factor N (rows: the {GRID_FACTORS} smallest "
                                f"that suit the model) and each range (columns: condition while t > "
                                f"{', '.join(map(str, GRID_RANGES))}).")
                    grid_button = gr.Button("Run the grid")
                    grid = gr.Gallery(label="Rows: N; columns: the conditioning range", columns=len(GRID_RANGES))
        inputs = [reference, model_id, down_factor, range_t, steps, samples, seed, show_process, split_step, preview_every]
        gr.Examples(
            EXAMPLES,
            inputs=inputs[:8],
            label="Examples (pick one, then Run)",
        )
        gr.Examples(SKETCH_EXAMPLES, inputs=[canvas, *inputs[:8]],
                    label="Drawn references (pick one to see it on the canvas and as the reference, then Run)")
        use_drawing.click(drawing_reference, canvas, reference, api_visibility="private")
        gr.on([model_id.change, steps.change, samples.change], estimate, [model_id, steps, samples], time_estimate,
              api_visibility="private")
        show_process.change(lambda show: gr.Gallery(visible=show), show_process, process, api_visibility="private")
        grid_button.click(live(run_ilvr_grid, 1), [reference, model_id, steps, seed], grid, api_name="ilvr_grid",
                          preprocess=False, **GPU_CONCURRENCY)
        event = run.click(live(run_ilvr, 2), inputs, [gallery, process], api_name="ilvr", preprocess=False,
                          **GPU_CONCURRENCY)
        event.then(estimate, [model_id, steps, samples], time_estimate, api_visibility="private")
        with results:
            take_home("ilvr", run_ilvr, inputs, gallery, event, pictures={"reference": "model_id"})
