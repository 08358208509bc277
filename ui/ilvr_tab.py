"""The ILVR tab: reference-guided sampling (runners.ilvr)."""

from __future__ import annotations

import gradio as gr

from runners import ilvr
from runners.common import class_names

from . import examples
from .handler import endpoint, estimator, live
from .gpu import concurrency
from .outputs import gallery as shown
from .widgets import (describe, how_it_works, input_image, model_dropdown, preview_slider, result_gallery, rule,
                      run_controls, seed_input, settings_inputs, take_home)

RULE = r"""**ILVR** (Choi et al., ICCV 2021): after each DDPM step the sample's low frequencies become the noised
reference's, $x_{t-1} = \phi_N(y_{t-1}) + (I - \phi_N)(x'_{t-1})$: the samples share the reference's layout."""

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

EXAMPLE_FIELDS = ("reference", "model_id", "down_factor", "range_t", "steps", "samples", "seed", "show_process")
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


def class_choices(model_id: str) -> list[tuple[str, str]]:
    """The classes a class-conditional model can draw its proposals from, and "none" (the null class)."""
    return [("none", "")] + [(name, name) for name in class_names(model_id)]


def class_menu(model_id: str) -> gr.Dropdown:
    """The class menu for a newly picked model, back at "none"."""
    return gr.Dropdown(choices=class_choices(model_id), value="", interactive=bool(class_names(model_id)))


def render(result: ilvr.Result):
    """The gallery and the process view."""
    return shown(result.gallery), shown(result.process)


run_ilvr = endpoint("ilvr", ilvr.Settings, ilvr.run, render, ilvr.cost)
run_ilvr_grid = endpoint("ilvr_grid", ilvr.GridSettings, ilvr.run_grid,
                         lambda result: shown(result.gallery), ilvr.grid_cost)


def build_tab() -> None:
    with gr.Tab("ILVR"):
        rule(RULE)
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    reference = input_image("Reference image y")
                    with gr.Column():
                        model_id = model_dropdown()
                        down_factor = gr.Dropdown(list(ilvr.DOWN_FACTORS), value=4,
                                                  label="Downsampling factor N (larger = looser)")
                        samples = gr.Slider(1, 8, value=2, step=1, label="Number of samples")
                run, time_estimate = run_controls("Run ILVR")
                how_it_works(EXPLANATION)
                with gr.Accordion("Draw the reference: paint-to-image, or scribble on a photo", open=False):
                    gr.Markdown("Paint a few colour strokes (a large N keeps only their colours and layout), or "
                                "upload a photo into the canvas and scribble on it; then use it as the reference.")
                    canvas = gr.ImageEditor(type="filepath", format="png", canvas_size=(256, 256), height=340,
                                            sources=("upload", "clipboard"), label="Canvas",
                                            brush=gr.Brush(colors=BRUSH_COLOURS, default_size=12, color_mode="defaults"))
                    use_drawing = gr.Button("Use the drawing as the reference")
                with gr.Accordion("Advanced", open=False):
                    range_t = gr.Slider(0, 1000, value=0, step=10, label="Condition while t > (0 = every step, 1000 = never)")
                    steps = gr.Slider(ilvr.MIN_STEPS, 1000, value=100, step=10, label="Sampling steps (the paper uses 1000)")
                    seed = seed_input()
                    show_process = gr.Checkbox(False, label="Show the process (x_t and predicted x0 at a few steps, "
                                                             "and the frequency split of one step)")
                    split_step = gr.Slider(1, 1000, value=50, step=1, label="Frequency split at step k (capped at the "
                                           "last conditioned step; shown while t > the range)")
                    preview_every = preview_slider()
                    target_class = gr.Dropdown(class_choices(model_id.value), value="",
                                               interactive=bool(class_names(model_id.value)),
                                               label="Class y* of the proposals (a class-conditional model's: the "
                                                     "reference keeps the layout, the class sets what is drawn)")
            with gr.Column():
                gallery = result_gallery("Reference, its low-pass φ_N(y), samples", 4)
                process = gr.Gallery(label="The process, first sample: x_t and predicted x0, then the frequency split",
                                     columns=6, visible=False, interactive=False)
                results = gr.Column()
                with gr.Accordion("Grid over N and the conditioning range, as in the paper's figures", open=False):
                    gr.Markdown(f"One sample from the seed above for each factor N (rows: the {ilvr.GRID_FACTORS} "
                                f"smallest that suit the model) and each range (columns: condition while t > "
                                f"{', '.join(map(str, ilvr.GRID_RANGES))}).")
                    grid_button = gr.Button("Run the grid")
                    grid = gr.Gallery(label="Rows: N; columns: the conditioning range", columns=len(ilvr.GRID_RANGES),
                                      interactive=False)
        settings = dict(reference=reference, model_id=model_id, down_factor=down_factor, range_t=range_t, steps=steps,
                        samples=samples, seed=seed, show_process=show_process, split_step=split_step,
                        preview_every=preview_every, target_class=target_class)
        inputs = settings_inputs(ilvr.Settings, **settings)
        model_id.change(class_menu, model_id, target_class, api_visibility="private")
        shown_in = dict(settings, canvas=canvas)
        examples.add(EXAMPLES, EXAMPLE_FIELDS, shown_in, model_field="model_id", label="Examples (pick one, then Run)",
                     run=run_ilvr, outputs=[gallery, process])
        examples.add(SKETCH_EXAMPLES, ("canvas", *EXAMPLE_FIELDS), shown_in, model_field="model_id",
                     label="Drawn references (pick one to see it on the canvas and as the reference, then Run)",
                     run=run_ilvr, outputs=[gallery, process])
        use_drawing.click(drawing_reference, canvas, reference, api_visibility="private")
        estimate = estimator(ilvr.Settings, ilvr.cost)
        gr.on([c.change for c in (model_id, steps, samples)], estimate, inputs, time_estimate, api_visibility="private")
        show_process.change(lambda show: gr.Gallery(visible=show), show_process, process, api_visibility="private")
        grid_inputs = settings_inputs(ilvr.GridSettings, reference=reference, model_id=model_id, steps=steps, seed=seed)
        describe(run_ilvr_grid, ilvr.run_grid, ilvr.GridSettings, grid_inputs)
        grid_button.click(live(run_ilvr_grid, 1), grid_inputs, grid, api_name="ilvr_grid", preprocess=False,
                          **concurrency())
        describe(run_ilvr, ilvr.run, ilvr.Settings, inputs)
        event = run.click(live(run_ilvr, 2), inputs, [gallery, process], api_name="ilvr", preprocess=False,
                          **concurrency())
        event.then(estimate, inputs, time_estimate, api_visibility="private")
        with results:
            take_home(ilvr, inputs, gallery, event)
