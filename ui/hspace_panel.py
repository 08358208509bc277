"""The Asyrp tab's "h-space properties" panel: the paper's claims about h-space as pictures with their numbers
(runners.hspace); linearity is the tab's own strip of scales."""

from __future__ import annotations

import json

import gradio as gr

from runners import hspace

from .gpu import concurrency
from .handler import endpoint, live
from .outputs import gallery as shown
from .widgets import describe, settings_inputs, stop_button

VIEWS = {  # name: (button, what it shows, columns of its grid)
    "homogeneity": ("Homogeneity", "one Δh on every image, beside the Δε of image 1 on every image", 4),
    "linear_combination": ("Linear combination", "two directions at (s1, s2), each at 1/√2", 3),
    "robustness": ("Robustness", "noise of |s Δh|'s norm in h, then the same noise in ε", 7),
    "consistency": ("Consistency across timesteps", "cos(Δh_t, Δh_t') as a heat map, then the edits", 5),
}


def numbers_markdown(result: hspace.Result) -> str:
    if result.stopped:
        return "Stopped."
    rows = "\n".join(f"| {name} | `{json.dumps(value, default=lambda v: round(v, 3))[:300]}` |"
                     for name, value in result.numbers.items())
    return f"**{result.statement}**\n\n| measured | value |\n| --- | --- |\n{rows}"


def render(result: hspace.Result):
    return shown(result.pictures), numbers_markdown(result)


def view_endpoint(view: str):
    run = getattr(hspace, view)
    return endpoint(f"hspace_{view}", hspace.Settings,
                    lambda settings, *, callback=None, stop=None: run(settings, callback=callback, stop=stop),
                    render, lambda settings: hspace.cost(settings, view))


ENDPOINTS = {view: view_endpoint(view) for view in VIEWS}


def build_panel(model_id: gr.Dropdown, seed: gr.Number) -> None:
    """Under the tab's result: the views, on the model picked above and the bundled example images."""
    with gr.Accordion("h-space properties: the paper's claims, measured (bundled models in seconds)", open=False):
        gr.Markdown("On the model's bundled example images and its learned direction (faces-32: the smile; k > 0: "
                    "the k-th principal direction instead). The strip of scales above is **linearity**.")
        images, direction = gr.State(()), gr.State(None)
        with gr.Row():
            k = gr.Slider(0, hspace.MAX_K, value=0, step=1, label="k (0 = the model's learned direction)")
            scale = gr.Slider(-3, 3, value=1.5, step=0.1, label="Scale s")
            steps = gr.Slider(10, 100, value=20, step=5, label="Steps")
        inputs = settings_inputs(hspace.Settings, model_id=model_id, images=images, direction_file=direction, k=k,
                                 scale=scale, t_edit=gr.State(None), t_boost=gr.State(None), steps=steps,
                                 seed=seed)  # t_edit and t_boost: the model's interval
        for view, (label, what, columns) in VIEWS.items():
            with gr.Row():
                button = gr.Button(f"{label}: {what}")
                stop_button()
            pictures = gr.Gallery(label=label, columns=columns, height=260, interactive=False)
            numbers = gr.Markdown()
            describe(ENDPOINTS[view], getattr(hspace, view), hspace.Settings, inputs)
            button.click(live(ENDPOINTS[view], 2), inputs, [pictures, numbers], api_name=f"hspace_{view}",
                         preprocess=False, **concurrency())
