"""The Asyrp tab: semantic edits of a real image in the U-Net's h-space."""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import pandas as pd
import torch

from pipelines import AsyrpPipeline, images, load_clip, load_diffusion, make_scheduler
from pipelines.asyrp import check_interval
from pipelines.directions import (LPIPS_BOOST, LPIPS_EDIT, choose_interval, learn_direction, load_direction,
                                  load_lpips, principal_directions, save_direction)
from pipelines.registry import asyrp_interval
from pipelines.sampling import counted_from

from .common import (GPU_CONCURRENCY, StepReporter, Stopped, check_budget, check_text, display, estimate_markdown,
                     gpu, line_plot, live, make_generator, model_dropdown, offered_model, preview_slider, run_controls,
                     seed_input, started, stop_button, take_home, uploaded_path, user_errors)

SOURCES = ["unsupervised (k-th principal direction)", "learn from two texts", "load a direction file"]
STRIP = [-2.0, -1.0, 1.0, 2.0]
MAX_SCALE = 3.0  # the slider's range is -MAX_SCALE..MAX_SCALE
PCA_SAMPLES = 32  # noise images whose h the principal directions are read from, once per model
MAX_K = 8
INVERSION_CACHE_SIZE = 8  # inverted images kept, so a new scale or direction does not invert again

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

# image, model, source, k, direction file, scale, strip, steps, seed
EXAMPLES = [
    ["assets/faces/frowning.png", "faces-32", SOURCES[2], 1, SMILE_DIRECTION, 1.5, True, 20, 0],
    ["assets/shapes/green-triangle.png", "shapes-16", SOURCES[2], 1, SIZE_DIRECTION, 1.0, True, 40, 0],
    ["assets/shapes/red-circle.png", "shapes-16", SOURCES[2], 1, SIZE_DIRECTION, 1.0, True, 40, 0],
    ["assets/shapes/blue-square.png", "shapes-16", SOURCES[0], 2, None, 1.0, True, 40, 0],
    ["assets/astronaut.png", "google/ddpm-celebahq-256", SOURCES[0], 1, None, 1.0, True, 40, 0],
    ["assets/astronaut.png", "google/ddpm-celebahq-256", SOURCES[0], 2, None, 1.5, True, 40, 0],
    ["assets/chelsea.png", "google/ddpm-cat-256", SOURCES[0], 1, None, 1.0, True, 40, 0],
]

_inversions: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_inversions_lock = threading.Lock()
_principal: dict[str, torch.Tensor] = {}


def _pipe(model_id: str) -> AsyrpPipeline:
    model = load_diffusion(model_id)
    return AsyrpPipeline(unet=model.unet, scheduler=make_scheduler(model, "ddim"))


def _inversion_key(model_id: str, picture, steps: int) -> tuple:
    return model_id, hashlib.sha1(picture.tobytes()).hexdigest(), picture.size, steps


def x_T_of(pipe: AsyrpPipeline, model_id: str, picture, steps: int, callback=None) -> torch.Tensor:
    """x_T of the picture, inverted once per (model, picture, steps) and kept for the next INVERSION_CACHE_SIZE."""
    key = _inversion_key(model_id, picture, steps)
    with _inversions_lock:
        if key in _inversions:
            _inversions.move_to_end(key)
            return _inversions[key]
    x_T = pipe.invert(picture, num_inference_steps=steps, callback=callback)
    with _inversions_lock:
        _inversions[key] = x_T
        while len(_inversions) > INVERSION_CACHE_SIZE:
            _inversions.popitem(last=False)
    return x_T


def principal(model_id: str) -> torch.Tensor:
    """The model's top MAX_K principal directions of h (MAX_K,C,h,w), read once per offered model from PCA_SAMPLES
    noise images."""
    if model_id not in _principal:
        _principal[model_id] = principal_directions(_pipe(model_id), k=MAX_K, num_samples=PCA_SAMPLES,
                                                    generator=make_generator(0))
    return _principal[model_id]


def _image(path_or_upload, pipe: AsyrpPipeline):
    path = uploaded_path(path_or_upload, "an image to edit")
    return images.center_crop_resize(images.open_image(path), pipe.unet.config.sample_size)


def interval_defaults(model_id: str):
    t_edit, t_boost = asyrp_interval(model_id)
    return gr.Slider(value=t_edit), gr.Slider(value=t_boost)


def _direction(pipe, model_id, source, k, learned_path, file_path):
    """The direction the user picked, and a label for it."""
    if source == SOURCES[0]:
        return principal(model_id)[int(k) - 1], f"principal direction {int(k)}"
    path = learned_path if source == SOURCES[1] else (file_path["path"] if isinstance(file_path, dict) else file_path)
    if not path:
        what = "Learn a direction first (button below the texts)" if source == SOURCES[1] else "Upload a .safetensors direction file first"
        raise gr.Error(what, title="No direction")
    direction, meta = load_direction(path, shape=pipe.h_shape, model_id=model_id)
    return direction, f"{meta.get('source') or '?'} → {meta.get('target') or '?'}"


@user_errors
@gpu
def run_asyrp(image, model_id, source, k, learned_path, file_path, scale, strip, auto, t_edit, t_boost, steps, seed,
              preview_every=0, request: gr.Request = None, progress=gr.Progress()):
    """The input, its reconstruction and the edits, a note on the run, and a plot of |s Δh_t| at each edited step."""
    if source not in SOURCES:
        raise gr.Error(f"Pick where the direction comes from: {', '.join(SOURCES)}.", title="Invalid input")
    if source == SOURCES[0] and not 1 <= int(k) <= MAX_K:
        raise gr.Error(f"k must be from 1 to {MAX_K} (the principal directions kept per model); got {k}.",
                       title="Invalid input")
    if not -MAX_SCALE <= float(scale) <= MAX_SCALE:
        raise gr.Error(f"The scale s must be from {-MAX_SCALE:g} to {MAX_SCALE:g}; got {scale}.", title="Invalid input")
    model_id = offered_model(model_id)
    check_interval(int(t_edit), int(t_boost), T=1000)
    scales = [0.0] + ([s * float(scale) for s in STRIP] if strip else [float(scale)])
    pipe = _pipe(model_id)
    picture = _image(image, pipe)
    pipe.check_inputs(image=picture, x_T=None, direction=None, scale=scales, t_edit=int(t_edit), t_boost=int(t_boost),
                      num_inference_steps=int(steps), output_type="pil")
    inverted = _inversion_key(model_id, picture, int(steps)) in _inversions
    check_budget(load_diffusion(model_id), *cost(model_id, source, strip, t_edit, steps, inverted=inverted),
                 lower="the steps, or untick the strip of scales", smallest=cost(model_id, source, False, 1000, 10))
    note = ""
    if auto:
        lpips = load_lpips()
        if lpips is None:
            note = "LPIPS is not available here (no `lpips` package or no network for its weights): used the t_edit and t_boost sliders (the official defaults unless you moved them). "
        else:
            t_edit, t_boost = choose_interval(pipe, picture, lpips, num_inference_steps=int(steps), generator=make_generator(seed))
            note = f"LPIPS chose t_edit = {t_edit}, t_boost = {t_boost}. "
    direction, label = _direction(pipe, model_id, source, k, learned_path, file_path)
    reporter = StepReporter(progress, pipe.total_steps(num_inference_steps=int(steps)), "Asyrp: DDIM inversion, then editing",
                            stop=started(request), preview_every=preview_every)
    try:
        x_T = x_T_of(pipe, model_id, picture, int(steps), callback=reporter)
        out = pipe(x_T=x_T, direction=direction, scale=scales, t_edit=int(t_edit), t_boost=int(t_boost),
                   num_inference_steps=int(steps), generator=make_generator(seed),
                   callback=counted_from(reporter, int(steps)))
    except Stopped:
        return [(display(picture), "input")] + reporter.stopped_gallery(), "Stopped.", delta_h_frame({}, scales)
    gallery = [(display(picture), "input"), (display(out.images[0]), "reconstruction (scale 0)")]
    gallery += [(display(img), f"scale {s:+.2g}") for s, img in zip(scales[1:], out.images[1:])]
    edited = f"{len(out.delta_h_norms)} edited steps" if out.delta_h_norms else "no step edited (t_edit above every step)"
    return (gallery, f"{note}Direction: {label}; t_edit = {int(t_edit)}, t_boost = {int(t_boost)}, {int(steps)} steps, "
                     f"{edited}.", delta_h_frame(out.delta_h_norms, scales))


def delta_h_frame(delta_h_norms: dict, scales: list[float]) -> pd.DataFrame:
    """The plot's rows: |s Δh_t| at each edited timestep t for each edited scale (scale 0 left out)."""
    rows = [{"t": t, "|s Δh_t|": norm, "run": f"scale {s:+.2g}"}
            for t, norms in sorted(delta_h_norms.items()) for s, norm in zip(scales, norms.tolist()) if s != 0]
    return pd.DataFrame(rows, columns=["t", "|s Δh_t|", "run"])


@user_errors
@gpu
def learn(image, model_id, source_text, target_text, kind, iterations, t_edit, steps, request: gr.Request, progress=gr.Progress()):
    source_text, target_text = check_text(source_text, "The source text"), check_text(target_text, "The target text")
    if not source_text or not target_text:
        raise gr.Error("Write both a source text (what the image shows) and a target text (what it should show).", title="Missing text")
    model_id = offered_model(model_id)
    check_interval(int(t_edit), 0, T=1000)
    pipe = _pipe(model_id)
    picture = _image(image, pipe)
    judge = load_clip().judge
    judge.check_prompts([source_text, target_text])
    inverted = _inversion_key(model_id, picture, int(steps)) in _inversions
    check_budget(load_diffusion(model_id), *learn_cost(iterations, steps, inverted=inverted),
                 lower="the passes or the steps", smallest=learn_cost(1, 10))
    stop = started(request)
    progress((0, int(iterations)), desc="Inverting the image")
    direction = learn_direction(
        pipe, picture, judge, source_text, target_text, kind="implicit" if kind.startswith("f_t") else "global",
        t_edit=int(t_edit), num_inference_steps=int(steps), iterations=int(iterations),
        x_T=x_T_of(pipe, model_id, picture, int(steps)),
        progress=lambda i, n, loss: progress((i, n), desc=f"Learning: CLIP directional loss {loss:.3f}"), should_stop=stop.is_set,
    )
    name = "".join(c if c.isalnum() else "_" for c in f"{source_text}_to_{target_text}")[:60]
    path = Path(tempfile.mkdtemp()) / f"asyrp_{name}.safetensors"
    save_direction(path, direction, model_id=model_id, t_edit=int(t_edit), num_inference_steps=int(steps), source=source_text, target=target_text)
    stopped = " (stopped early)" if stop.is_set() else ""
    return str(path), str(path), f"Learned “{source_text}” → “{target_text}”{stopped}. Pick *learn from two texts* and press Edit."


TIMELINE_STAGES = (  # colour, what happens
    ("#6366f1", "asymmetric reverse process: P_t sees h + s Δh, D_t does not"),
    ("#94a3b8", "plain DDIM, η = 0"),
    ("#f59e0b", "quality boosting: stochastic DDIM, η = 1"),
)


def timeline(t_edit, t_boost) -> str:
    """The run's reverse process as a bar from t = T (left) to 0, each stage as wide as its range of t."""
    T, t_edit, t_boost = 1000, int(t_edit), int(t_boost)
    spans = [(T, t_edit), (t_edit, t_boost), (t_boost, 0)]
    bars = "".join(
        f'<div title="{what}" style="flex:{start - end};background:{colour};color:white;padding:4px 6px;'
        f'white-space:nowrap;overflow:hidden">{start} → {end}</div>'
        for (start, end), (colour, what) in zip(spans, TIMELINE_STAGES) if start > end)
    legend = " · ".join(f'<span style="color:{colour}">■</span> {what}' for colour, what in TIMELINE_STAGES)
    return (f"<div><b>The run</b>: DDIM inversion x₀ → x_T, then sampling from t = {T} down to 0:</div>"
            f'<div style="display:flex;border-radius:6px;overflow:hidden;margin:4px 0">{bars}</div>'
            f"<div style='font-size:0.85em'>{legend}</div>")


def cost(model_id, source, strip, t_edit, steps, inverted: bool = False) -> tuple[int, int]:
    """U-Net evaluations at batch 1: the inversion (unless kept from an earlier run), then per scale (0 and the edits)
    one per step plus a second one per step of the edit interval [T, t_edit]; the principal directions read h of
    PCA_SAMPLES noise images, once per model."""
    steps, n_scales = int(steps), 1 + (len(STRIP) if strip else 1)
    edited = round(steps * (1000 - int(t_edit)) / 1000)
    pca = PCA_SAMPLES if source == SOURCES[0] and model_id not in _principal else 0
    return (0 if inverted else steps) + n_scales * (steps + edited) + pca, 0


def learn_cost(iterations, steps, inverted: bool = False) -> tuple[int, int]:
    """U-Net evaluations at batch 1 to learn a direction: the inversion (unless kept), then every pass
    back-propagates through the steps of the asymmetric decoding."""
    return 0 if inverted else int(steps), int(iterations) * int(steps)


def estimate(model_id, source, strip, t_edit, steps) -> str:
    return estimate_markdown(model_id, *cost(model_id, source, strip, t_edit, steps))


def build_tab() -> None:
    with gr.Tab("Asyrp"):
        gr.Markdown(EXPLANATION, latex_delimiters=[{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}])
        learned_path = gr.State(None)
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label="Image to edit", height=320)
                model_id = model_dropdown()
                default_edit, default_boost = asyrp_interval(model_id.value)
                source = gr.Radio(SOURCES, value=SOURCES[0], label="Direction")
                k = gr.Slider(1, MAX_K, value=1, step=1, label="k (unsupervised: the k-th principal direction of h)")
                with gr.Accordion("Learn a direction from two texts", open=False):
                    source_text = gr.Textbox("a face", label="Source text (what the image shows)")
                    target_text = gr.Textbox("a smiling face", label="Target text (what it should show)")
                    kind = gr.Radio(["f_t (the paper's implicit function)", "global Δh"], value="f_t (the paper's implicit function)", label="Kind")
                    iterations = gr.Slider(1, 20, value=5, step=1, label="Passes over the edit interval")
                    with gr.Row():
                        learn_button = gr.Button("Learn direction")
                        stop_button()
                    learned_file = gr.File(label="Learned direction (.safetensors, download to reuse)", interactive=False)
                direction_file = gr.File(label="Direction file (.safetensors)", file_types=[".safetensors"])
                scale = gr.Slider(-MAX_SCALE, MAX_SCALE, value=1.0, step=0.1, label="Scale s (negative reverses the edit)")
                strip = gr.Checkbox(True, label="Show a strip of scales (-2s, -s, s, 2s) to see the linearity")
                with gr.Accordion("Advanced", open=False):
                    gr.Markdown(INTERVAL_NOTE)
                    auto = gr.Checkbox(False, label="Choose t_edit and t_boost automatically (LPIPS)")
                    t_edit = gr.Slider(0, 1000, value=default_edit, step=1, label="t_edit (edit while t ≥ t_edit)")
                    t_boost = gr.Slider(0, 1000, value=default_boost, step=1, label="t_boost (stochastic steps below it; 0 = off)")
                    steps = gr.Slider(10, 200, value=40, step=10, label="Steps (inversion and sampling; the paper uses 40)")
                    seed = seed_input()
                    preview_every = preview_slider()
                run, time_estimate = run_controls("Edit")
            with gr.Column():
                gallery = gr.Gallery(label="Input, reconstruction, edits", columns=3, height=460)
                info = gr.Markdown()
                stages = gr.HTML(timeline(default_edit, default_boost))
                norms = line_plot("|s Δh_t|, the shift added to h at each edited step (t from T down to t_edit)",
                                  "t", "|s Δh_t|")
                results = gr.Column()
        gr.Examples(EXAMPLES, inputs=[image, model_id, source, k, direction_file, scale, strip, steps, seed], label="Examples (pick one, then Edit)")
        model_id.change(interval_defaults, model_id, [t_edit, t_boost], api_visibility="private")
        gr.on([t_edit.change, t_boost.change], timeline, [t_edit, t_boost], stages, api_visibility="private")
        learn_button.click(
            learn, [image, model_id, source_text, target_text, kind, iterations, t_edit, steps], [learned_path, learned_file, info],
            api_name="asyrp_learn", preprocess=False, **GPU_CONCURRENCY,
        )
        inputs = [image, model_id, source, k, learned_path, direction_file, scale, strip, auto, t_edit, t_boost, steps, seed,
                  preview_every]
        costs = [model_id, source, strip, t_edit, steps]
        gr.on([c.change for c in costs], estimate, costs, time_estimate, api_visibility="private")
        event = run.click(live(run_asyrp, 3), inputs, [gallery, info, norms], api_name="asyrp", preprocess=False,
                          **GPU_CONCURRENCY)
        event.then(estimate, costs, time_estimate, api_visibility="private")
        with results:
            take_home("asyrp", run_asyrp, inputs, gallery, event, pictures={"image": "model_id"},
                      files=("learned_path", "file_path"))
