"""The Asyrp tab: semantic edits of a real image in the U-Net's h-space (runners.asyrp)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from runners import asyrp
from runners.asyrp import LPIPS_BOOST, LPIPS_EDIT
from runners.common import ModelLoadError

from . import examples
from .gpu import concurrency
from .handler import endpoint, estimator, live, user_errors
from .hspace_panel import build_panel
from .outputs import gallery as shown, output_folder
from .widgets import (describe, how_it_works, input_image, line_plot, model_dropdown, preview_slider, result_gallery,
                      rule, run_controls, seed_input, settings_inputs, stop_button, take_home)

RULE = r"""**Asyrp** (Kwon, Jeong & Uh, ICLR 2023): shift the U-Net's bottleneck h in the predicted clean image only,
$x_{t-1} = \sqrt{\bar\alpha_{t-1}}\, P_t(\epsilon_\theta(x_t \mid h_t + s\,\Delta h_t)) + D_t(\epsilon_\theta(x_t))$ for
$t \ge t_\text{edit}$."""

EXPLANATION = r"""
**Asyrp** (Kwon, Jeong & Uh, ICLR 2023) finds a *semantic latent space* in a frozen, unconditional diffusion model:
**h-space**, the output of the U-Net's bottleneck (512×8×8 for the 256px models). Your image is inverted to $x_T$ by
deterministic DDIM, then decoded with a shift $\Delta h_t$ added to h — but only in the predicted clean image, not in
the direction back to $x_t$ (the *asymmetric* reverse process):

$$x_{t-1} = \sqrt{\bar\alpha_{t-1}}\, P_t\big(\epsilon_\theta(x_t \mid h_t + s\,\Delta h_t)\big) + D_t\big(\epsilon_\theta(x_t)\big)\quad\text{for } t \ge t_\text{edit}$$

then plain DDIM down to $t_\text{boost}$ and stochastic steps ($\eta = 1$) below it, which restore fine detail
(*quality boosting*). The same $\Delta h$ works on every image, the scale $s$ sets the strength (negative reverses it)
and directions add. Find one **without text** (the top principal directions of h over random samples: what the model
varies most), **learn** one from a source and a target text (CLIP directional loss + L1, as a global $\Delta h$ or as the
paper's small network $f_t(h_t, t)$), or **load** a saved one: the bundled faces-32 model ships an $f_t$ that turns a frown into a
smile (a frown at negative scales), shapes-16 one that makes the shape bigger; their examples are first below. Scale 0 is the inversion's reconstruction;
the plot shows how large a shift $s\,\Delta h_t$ each edited step added to h.
"""

INTERVAL_NOTE = (
    "Defaults per model come from the official code (kwonminki/Asyrp_official): t_edit from utils/t_edit_dic.py, t_boost "
    f"where its LPIPS tables reach LPIPS(x, x_t) = {LPIPS_BOOST} (church 293, bedroom 221, dog faces 167, used for cats; "
    "faces use its scripts' 200); the bundled models use the t_edit their directions were learned on (faces-32 250, "
    "shapes-16 500) and no quality boosting. "
    "*Choose automatically* applies the paper's rule to your image: t_edit = the first t with "
    f"LPIPS(x, P_t) ≥ {LPIPS_EDIT}, t_boost = the first t with LPIPS(x, x_t) ≥ {LPIPS_BOOST}; it needs the `lpips` package "
    "and its downloaded weights, and falls back to the defaults (saying so) when they are unavailable."
)

SIZE_DIRECTION = "assets/shapes-16/directions/size.safetensors"  # training/shape_directions.py: bigger at s > 0
SMILE_DIRECTION = "assets/faces-32/directions/smile.safetensors"  # training/face_directions.py: smiling at s > 0

CELEBAHQ = "google/ddpm-celebahq-256"
SOURCES = [("unsupervised (k-th principal direction)", "principal"), ("learn from two texts", "learned"),
           ("load a direction file", "file"), ("released by the Asyrp authors", "released")]
KINDS = [("f_t (the paper's implicit function)", "f_t"), ("global Δh", "global")]

EXAMPLE_FIELDS = ("image", "model_id", "source", "k", "file_path", "scale", "strip", "steps", "seed", "released")
EXAMPLES = [
    ["assets/faces/frowning.png", "faces-32", "file", 1, SMILE_DIRECTION, 1.5, True, 20, 0, []],
    ["assets/shapes/green-triangle.png", "shapes-16", "file", 1, SIZE_DIRECTION, 1.0, True, 40, 0, []],
    ["assets/shapes/red-circle.png", "shapes-16", "file", 1, SIZE_DIRECTION, 1.0, True, 40, 0, []],
    ["assets/shapes/blue-square.png", "shapes-16", "principal", 2, None, 1.0, True, 40, 0, []],
    ["assets/astronaut.png", CELEBAHQ, "released", 1, None, 0.5, True, 40, 0, ["smiling"]],
    ["assets/astronaut.png", CELEBAHQ, "released", 1, None, 0.5, True, 40, 0, ["young"]],
    ["assets/astronaut.png", CELEBAHQ, "released", 1, None, 0.5, True, 40, 0, ["pixar"]],
    ["assets/astronaut.png", CELEBAHQ, "principal", 1, None, 1.0, True, 40, 0, []],
    ["assets/chelsea.png", "google/ddpm-cat-256", "principal", 1, None, 1.0, True, 40, 0, []],
]
RELEASED_NOTE = (
    "**Released by the Asyrp authors** (Kwon, Jeong & Uh, [kwonminki/Asyrp_official](https://github.com/kwonminki/"
    "Asyrp_official), MIT licence): 26 f_t trained on these same DDPM weights (CelebA-HQ, LSUN church and bedroom), "
    "downloaded from the authors' repository at a pinned commit on first use and loaded only when their sha256 is the "
    "pinned one. They are applied as the official code does: h ← h + c · f_t(h, temb) in P_t while t ≥ t_edit, with "
    "c = s × 40 / steps (so one s gives the same edit at any number of steps) and, for k directions together, each at "
    "1/√k. Picking them sets t_edit by the authors' rule: the first t at which LPIPS(x₀, P_t), on the curve they "
    "measured, reaches 0.33 × the CLIP ViT-B/16 cosine of the direction's two texts (for several, the largest cosine); "
    "where that CLIP or the curve cannot be loaded, the dataset's default (CelebA-HQ 516, church 370, bedroom 369). "
    "The run's note says which."
)

TIMELINE_STAGES = (  # colour, what happens
    ("#6366f1", "asymmetric reverse process: P_t sees h + s Δh, D_t does not"),
    ("#94a3b8", "plain DDIM, η = 0"),
    ("#f59e0b", "quality boosting: stochastic DDIM, η = 1"),
)


def timeline(t_edit, t_boost, T: int) -> str:
    """The run's reverse process as a bar from t = T (left) to 0, each stage as wide as its range of t."""
    t_edit, t_boost = int(t_edit), int(t_boost)
    spans = [(T, t_edit), (t_edit, t_boost), (t_boost, 0)]
    bars = "".join(
        f'<div title="{what}" style="flex:{start - end};background:{colour};color:white;padding:4px 6px;'
        f'white-space:nowrap;overflow:hidden">{start} → {end}</div>'
        for (start, end), (colour, what) in zip(spans, TIMELINE_STAGES) if start > end)
    legend = " · ".join(f'<span style="color:{colour}">■</span> {what}' for colour, what in TIMELINE_STAGES)
    return (f"<div><b>The run</b>: DDIM inversion x₀ → x_T, then sampling from t = {T} down to 0:</div>"
            f'<div style="display:flex;border-radius:6px;overflow:hidden;margin:4px 0">{bars}</div>'
            f"<div style='font-size:0.85em'>{legend}</div>")




def delta_h_frame(result: asyrp.Result) -> pd.DataFrame:
    """The plot's rows: |s Δh_t| at each edited timestep t for each edited scale (scale 0 left out)."""
    rows = [{"t": t, "|s Δh_t|": norm, "run": f"scale {s:+.2g}"}
            for t, norms in sorted(result.delta_h_norms.items()) for s, norm in zip(result.scales, norms.tolist())
            if s != 0]
    return pd.DataFrame(rows, columns=["t", "|s Δh_t|", "run"])


def render(result: asyrp.Result):
    """The gallery, the note and the |s Δh_t| plot."""
    return shown(result.gallery), result.note, delta_h_frame(result)


run_asyrp = endpoint("asyrp", asyrp.Settings, asyrp.run, render, asyrp.cost)


def learned(settings: asyrp.LearnSettings, *, callback=None, stop=None):
    path, message = asyrp.learn(settings, output_folder(), progress=callback, stop=stop)
    return str(path), str(path), message


learn = endpoint("asyrp_learn", asyrp.LearnSettings, learned, lambda done: done, asyrp.learn_cost)


def interval_sliders(model_id: str):
    t_edit, t_boost = asyrp.interval(model_id)
    return gr.Slider(value=t_edit), gr.Slider(value=t_boost)


def released_menu(model_id: str, current=None) -> gr.Dropdown:
    """The authors' directions for the model, keeping the picked ones that still apply."""
    choices = asyrp.released_choices(model_id)
    names = [name for _, name in choices]
    return gr.Dropdown(choices=choices, value=[name for name in current or [] if name in names], multiselect=True,
                       allow_custom_value=True, interactive=bool(choices),
                       label="Released directions (Asyrp authors)" + ("" if choices else ": none for this model"))


def model_controls(model_id: str, current):
    """A newly picked model: its Asyrp interval and its released directions."""
    return (*interval_sliders(model_id), released_menu(model_id, current))


def released_picked(names):
    """Picking released directions: their source, and their t_edit (the authors' rule, else the dataset's)."""
    if not names:
        return gr.skip(), gr.skip()
    return "released", asyrp.released_t_edit(names)


def example_controls(image, model_id, *rest):
    """An example's interval and released-directions menu, made to match the example as written (the model's
    interval, or the released directions' t_edit; the menu's choices for the model)."""
    t_edit, t_boost = interval_sliders(model_id)
    names = rest[-1]
    return (asyrp.released_t_edit(names) if names else t_edit), t_boost, released_menu(model_id, names)


@user_errors
def timeline_of(model_id: str, t_edit, t_boost) -> str:
    try:
        return timeline(t_edit, t_boost, asyrp.train_timesteps(model_id))
    except ModelLoadError:  # not loadable here: the run says why
        return ""


def build_tab() -> None:
    with gr.Tab("Asyrp"):
        rule(RULE)
        learned_path = gr.State(None)
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    image = input_image("Image to edit")
                    with gr.Column():
                        model_id = model_dropdown()
                        default_edit, default_boost = asyrp.interval(model_id.value)
                        source = gr.Radio(SOURCES, value="principal", label="Direction")
                with gr.Row():
                    k = gr.Slider(1, asyrp.MAX_K, value=1, step=1,
                                  label="k (unsupervised: the k-th principal direction of h)")
                    scale = gr.Slider(-asyrp.MAX_SCALE, asyrp.MAX_SCALE, value=1.0, step=0.1,
                                      label="Scale s (negative reverses the edit)")
                run, time_estimate = run_controls("Edit")
                how_it_works(EXPLANATION)
                strip = gr.Checkbox(True, label="Show a strip of scales (-2s, -s, s, 2s) to see the linearity")
                direction_file = gr.File(label="Direction file (.safetensors)", file_types=[".safetensors"],
                                         height=110)
                released = released_menu(model_id.value)
                with gr.Accordion("About the released directions", open=False):
                    gr.Markdown(RELEASED_NOTE)
                with gr.Accordion("Learn a direction from two texts", open=False):
                    source_text = gr.Textbox("a face", label="Source text (what the image shows)")
                    target_text = gr.Textbox("a smiling face", label="Target text (what it should show)")
                    kind = gr.Radio(KINDS, value="f_t", label="Kind")
                    iterations = gr.Slider(1, 20, value=5, step=1, label="Passes over the edit interval")
                    with gr.Row():
                        learn_button = gr.Button("Learn direction")
                        stop_button()
                    learned_file = gr.File(label="Learned direction (.safetensors, download to reuse)",
                                           interactive=False)
                with gr.Accordion("Advanced", open=False):
                    gr.Markdown(INTERVAL_NOTE)
                    auto = gr.Checkbox(False, label="Choose t_edit and t_boost automatically (LPIPS)")
                    t_edit = gr.Slider(0, 1000, value=default_edit, step=1, label="t_edit (edit while t ≥ t_edit)")
                    t_boost = gr.Slider(0, 1000, value=default_boost, step=1,
                                        label="t_boost (stochastic steps below it; 0 = off)")
                    steps = gr.Slider(asyrp.MIN_STEPS, 200, value=40, step=10,
                                      label="Steps (inversion and sampling; the paper uses 40)")
                    seed = seed_input()
                    preview_every = preview_slider()
            with gr.Column():
                gallery = result_gallery("Input, reconstruction, edits", 3)
                info = gr.Markdown()
                stages = gr.HTML(timeline_of(model_id.value, default_edit, default_boost))
                norms = line_plot("|s Δh_t|, the shift added to h at each edited step (t from T down to t_edit)",
                                  "t", "|s Δh_t|")
                results = gr.Column()
        settings = dict(image=image, model_id=model_id, source=source, k=k, learned_path=learned_path,
                        file_path=direction_file, scale=scale, strip=strip, auto=auto, t_edit=t_edit, t_boost=t_boost,
                        steps=steps, seed=seed, preview_every=preview_every, released=released)
        examples.add(EXAMPLES, EXAMPLE_FIELDS, settings, model_field="model_id", label="Examples (pick one, then Edit)",
                     run=run_asyrp, outputs=[gallery, info, norms],
                     fill=(example_controls, [t_edit, t_boost, released]))
        # the menus follow the user's picks (.input); an example sets them as written, choices included
        model_id.input(model_controls, [model_id, released], [t_edit, t_boost, released], api_visibility="private")
        released.input(released_picked, released, [source, t_edit], api_visibility="private")
        gr.on([t_edit.change, t_boost.change], timeline_of, [model_id, t_edit, t_boost], stages,
              api_visibility="private")
        learn_inputs = settings_inputs(asyrp.LearnSettings, image=image, model_id=model_id, source_text=source_text,
                                       target_text=target_text, kind=kind, iterations=iterations, t_edit=t_edit,
                                       steps=steps)
        describe(learn, asyrp.learn, asyrp.LearnSettings, learn_inputs)
        learn_button.click(learn, learn_inputs, [learned_path, learned_file, info], api_name="asyrp_learn",
                           preprocess=False, **concurrency())
        inputs = settings_inputs(asyrp.Settings, **settings)
        estimate = estimator(asyrp.Settings, asyrp.cost)
        costs = [model_id, source, strip, t_edit, steps]
        gr.on([c.change for c in costs], estimate, inputs, time_estimate, api_visibility="private")
        describe(run_asyrp, asyrp.run, asyrp.Settings, inputs)
        event = run.click(live(run_asyrp, 3), inputs, [gallery, info, norms], api_name="asyrp", preprocess=False,
                          **concurrency())
        event.then(estimate, inputs, time_estimate, api_visibility="private")
        event.then(timeline_of, [model_id, t_edit, t_boost], stages, api_visibility="private")
        with results:
            take_home(asyrp, inputs, gallery, event)
        build_panel(model_id, seed)
