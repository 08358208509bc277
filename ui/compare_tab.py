"""The Compare tab: one edit of one face by every method, side by side, each output read back from its pixels
(runners.compare)."""

from __future__ import annotations

import gradio as gr

from runners import compare

from .gpu import concurrency
from .handler import endpoint, estimator, live
from .outputs import gallery as shown
from .widgets import (describe, how_it_works, input_image, preview_slider, result_gallery, rule, run_controls,
                      seed_input, settings_inputs, stop_button, take_home)

RULE = r"""**One edit, every method**: one face, one goal (*smile* or *add glasses*), one strength $t_0 = \text{strength}
\times T$ and one seed, each method at its tab's defaults; every output read back from its pixels, no model judging."""

EXPLANATION = r"""
**One edit, every method.** Every paper here sets its method against the others (Asyrp's first figure: image
guidance, classifier guidance and fine-tuning against h-space; CycleDiffusion's tables: SDEdit and DDIB against the
DPM-Encoder). Here they meet on one face: make it **smile**, or give it **glasses**, with one strength
($t_0 = \text{strength} \times T$ for the methods that start from the noised input) and one seed, each method at its
own tab's defaults: ILVR sampling the target class with the input as its reference, classifier guidance and
classifier-free guidance from the noised input, SDEdit, DDIB and CycleDiffusion's class translation, the text edit
with cross-attention control (faces-text-32), and Asyrp (the bundled smile direction; for glasses, the mean
difference of h between faces with and without them). No model judges: the faces' own measurement reads the mouth,
glasses, hair, skin and background back from the pixels of the input and of each output. *Goal reached* is its
verdict, *kept* the other attributes that read as the input's, PSNR and SSIM the faithfulness to the input, and the
cost the U-Net evaluations and seconds. Each cell is the image its own tab gives for the settings its row names.
"""

EXAMPLE_FIELDS = ("image", "goal", "strength", "seed")
EXAMPLES = [
    ["assets/faces/frowning.png", "smile", 0.6, 0],
    ["assets/faces/frowning-glasses.png", "smile", 0.6, 0],
    ["assets/faces/smiling.png", "glasses", 0.6, 0],
    ["assets/faces/frowning.png", "glasses", 0.6, 1],
]
GOALS = [("make it smile (frowning → smiling)", "smile"), ("add glasses", "glasses")]
COLUMNS = ("method", "goal reached", "kept", "PSNR (dB)", "SSIM", "U-Net evaluations", "seconds")


def table(rows: list[dict], columns=COLUMNS) -> str:
    """Rows as a Markdown table, a note under a row that has one."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    notes = [f"- **{row['method']}**: {row['note']}" for row in rows if row.get("note")]
    return "\n".join(lines + ([""] + notes if notes else []))


def render(result: compare.Result):
    """The grid and the table."""
    if result.stopped:
        return shown(result.gallery), "Stopped."
    return shown(result.gallery), table(result.rows)


def render_measured(result: compare.Measured):
    """The misses, the table over the faces, and the figure of every face."""
    columns = ("method", "goal reached", "all kept", "mean PSNR (dB)", "mean SSIM", "U-Net evaluations",
               "mean seconds")
    said = "Stopped. " if result.stopped else ""
    text = (f"{said}Over {result.faces} held-out faces of the generator; rates with their 95% interval (Wilson).\n\n"
            + table(result.table, columns))
    return shown(result.failures), text, result.figure


run_compare = endpoint("compare", compare.Settings, compare.run, render, compare.cost)
run_measure = endpoint("compare_measure", compare.MeasureSettings, compare.measure, render_measured,
                       compare.measure_cost)


def build_tab() -> None:
    with gr.Tab("Compare"):
        rule(RULE)
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    image = input_image("A face (an upload is centre-cropped to 32 px)")
                    with gr.Column():
                        goal = gr.Radio(GOALS, value="smile", label="Goal")
                        strength = gr.Slider(0.1, 1.0, value=0.6, step=0.05,
                                             label="Strength (t0 = strength × T, for the methods that start from the "
                                                   "noised input)")
                run, time_estimate = run_controls("Compare every method")
                how_it_works(EXPLANATION)
                with gr.Accordion("Advanced", open=False):
                    seed = seed_input()
                    preview_every = preview_slider()
            with gr.Column():
                gallery = result_gallery("The input, then each method's output", 5)
                rows = gr.Markdown()
                results = gr.Column()
        settings = dict(image=image, goal=goal, strength=strength, seed=seed, model_id=gr.State(compare.MODEL),
                        preview_every=preview_every)
        gr.Examples(EXAMPLES, inputs=[settings[name] for name in EXAMPLE_FIELDS],
                    label="Examples (pick one, then Compare)")
        inputs = settings_inputs(compare.Settings, **settings)
        estimate = estimator(compare.Settings, compare.cost)
        gr.on([c.change for c in (goal, strength)], estimate, inputs, time_estimate, api_visibility="private")
        describe(run_compare, compare.run, compare.Settings, inputs)
        event = run.click(live(run_compare, 2), inputs, [gallery, rows], api_name="compare", preprocess=False,
                          **concurrency())
        event.then(estimate, inputs, time_estimate, api_visibility="private")
        with results:
            take_home(compare, inputs, gallery, event)
        with gr.Accordion(f"Measure on N faces: the same comparison over held-out faces of the generator (up to "
                          f"{compare.MAX_FACES})", open=False):
            with gr.Row():
                faces = gr.Slider(1, compare.MAX_FACES, value=8, step=1, label="Faces")
                measure = gr.Button("Measure")
                stop_button()
            measured = gr.Markdown()
            failures = gr.Gallery(label="Where a method missed the goal: the face, then its output", columns=6,
                                  height=240, interactive=False)
            grid = gr.Image(label="Every face (rows): the input, then each method, in the table's order", height=360)
            measure_inputs = settings_inputs(compare.MeasureSettings, goal=goal, faces=faces, strength=strength,
                                             seed=seed, model_id=settings["model_id"])
            describe(run_measure, compare.measure, compare.MeasureSettings, measure_inputs)
            measure.click(live(run_measure, 3), measure_inputs, [failures, measured, grid], api_name="compare_measure",
                          **concurrency())
