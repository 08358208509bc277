"""The widgets every tab shares: model menu, seed, preview interval, Run and Stop, plots, take-home files."""

from __future__ import annotations

import sys
from dataclasses import fields

import gradio as gr
from PIL import Image

from runners import base, common, settings_file

from .handler import stop_flags, unwrapped, user_errors
from .outputs import output_folder

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]


def settings_inputs(settings_class, **components) -> list:
    """A tab's inputs in the order of its runner's Settings, one component per field (a gr.State for a setting the
    page keeps but does not show); a ValueError when the tab is built names a field left without an input or an input
    that no field takes."""
    names = [f.name for f in fields(settings_class)]
    missing, extra = [n for n in names if n not in components], [n for n in components if n not in names]
    if missing or extra:
        raise ValueError(f"{settings_class.__module__}.{settings_class.__qualname__}: no input for {missing}, "
                         f"no setting for {extra}")
    return [components[name] for name in names]


def allowed(component) -> str:
    """What the page lets a setting be: a slider's range, a menu's or radio's choices (their ids)."""
    if isinstance(component, gr.Slider):
        return f"from {component.minimum:g} to {component.maximum:g}"
    choices = getattr(component, "choices", None)
    if isinstance(component, (gr.Radio, gr.Dropdown)) and choices and not getattr(component, "allow_custom_value", 0):
        values = [c[1] if isinstance(c, (tuple, list)) else c for c in choices]
        return "one of " + ", ".join(repr(v) for v in values) if len(values) <= 12 else ""
    return ""


def describe(fn, run, settings_class, inputs: list) -> None:
    """The docstring of the endpoint `fn` that calls `run`, which the API page and its MCP tool show: what the method
    does (the runner module's docstring), then each setting the API takes (a gr.State is the page's to keep) with what
    it does (its label on the page and its comment in Settings), what it may be, and its default; then what it
    returns (`run`'s docstring). Set before the event is wired: `live` copies it."""
    docs = base.field_docs(settings_class)
    module = sys.modules[run.__module__].__doc__ or ""
    lines = [" ".join(module.split("\n\n")[0].split()), "", "Args:"]
    for field, component in zip(fields(settings_class), inputs):
        if isinstance(component, gr.State):
            continue
        said = "; ".join(text for text in (getattr(component, "label", None), docs[field.name], allowed(component))
                         if text)
        lines.append(f"    {field.name}: {said} (default {field.default!r})")
    lines += ["", "Returns:", "    " + " ".join((run.__doc__ or "").split())]
    fn.__doc__ = "\n".join(lines)


def rule(text: str) -> gr.Markdown:
    """A tab's head: the method's rule in a line or two, with its equation."""
    return gr.Markdown(text, latex_delimiters=LATEX, elem_classes="tab-rule")


def how_it_works(text: str) -> None:
    """The longer story of a method, one click away (closed at first; open or closed as the visitor left it while
    they switch tabs)."""
    with gr.Accordion("How it works", open=False):
        gr.Markdown(text, latex_delimiters=LATEX)


def input_image(label: str) -> gr.Image:
    """A tab's input picture: the box a projector's first screen shows beside the main controls."""
    return gr.Image(type="filepath", label=label, height=230, elem_classes="tab-input")


def result_gallery(label: str, columns: int, height: int = 380) -> gr.Gallery:
    """A tab's result: the gallery a projector's first screen shows beside the controls."""
    return gr.Gallery(label=label, columns=columns, height=height, interactive=False, elem_classes="tab-result")


def model_dropdown(label: str = "Model") -> gr.Dropdown:
    return gr.Dropdown(choices=common.model_choices(), value=common.default_model(), label=label)


def seed_input() -> gr.Number:
    return gr.Number(value=0, precision=0, minimum=0, maximum=common.MAX_SEED,
                     label="Seed (same seed + settings = same image)")


def preview_slider() -> gr.Slider:
    """How often a run streams its predicted clean images: every k sampler steps (0: about PREVIEWS_PER_RUN times)."""
    return gr.Slider(0, common.MAX_PREVIEW_EVERY, value=0, step=1,
                     label=f"Preview every k steps (0 = about {common.PREVIEWS_PER_RUN} times a run)")


def line_plot(label: str, x: str, y: str) -> gr.LinePlot:
    """A plot of one line per run ("run" column), filled by a tab's result."""
    return gr.LinePlot(x=x, y=y, color="run", label=label, x_title=x, y_title=y, height=260)


def stop_button() -> gr.Button:
    """A Stop button: the page's running request ends at its next sampler step and shows what it had."""
    button = gr.Button("Stop", variant="stop")
    button.click(stop_flags.stop, None, None, api_visibility="private", queue=False)
    return button


def run_controls(label: str) -> tuple[gr.Button, gr.Markdown]:
    """A tab's Run button with its Stop button beside it, and the request's time estimate under them."""
    with gr.Row():
        run = gr.Button(label, variant="primary")
        stop_button()
    return run, gr.Markdown()


@user_errors
def save_result(runner, gallery, values: list):
    """The result as a PNG strip (the gallery's images side by side) and a JSON of every setting and the seed."""
    pictures = [Image.open(unwrapped(item[0] if isinstance(item, (tuple, list)) else item)) for item in gallery or []]
    if not pictures:
        return None
    settings = runner.Settings(*[unwrapped(v) for v in values])
    return [str(path) for path in settings_file.write(runner, settings, pictures, output_folder())]


def settings_after_failure(runner, values: list):
    """After a failed run, the JSON of its settings alone, to report an internal error with; nothing where the
    settings themselves cannot be written (the run's own message said why)."""
    try:
        settings = runner.Settings(*[unwrapped(v) for v in values])
        return [str(path) for path in settings_file.write(runner, settings, [], output_folder())]
    except (ValueError, common.ModelLoadError):
        return None


@user_errors
def load_settings(runner, upload) -> list:
    """The values of the tab's inputs from a settings file its results downloaded (gr.skip() for what it lacks)."""
    if not upload:
        raise gr.Error("Upload a settings file (.json) first.", title="No file")
    found = settings_file.values(runner, settings_file.read_document(unwrapped(upload)), output_folder())
    return [found.get(f.name, gr.skip()) for f in fields(runner.Settings)]


def take_home(runner, inputs: list, gallery: gr.Gallery, event) -> None:
    """Under a tab's result: its download (a PNG strip and a JSON of every setting, written when a run ends; the JSON
    alone when it failed), a button that loads such a JSON back into the tab's inputs (`inputs` are the runner's
    settings, in order), and a button that copies a link reopening the page as it is (Gradio's deep link: the
    inputs and the result, kept while the server keeps the result's files)."""
    with gr.Row():
        downloads = gr.File(label="Take it home: the result as a PNG strip, its settings and seed as JSON",
                            file_count="multiple", interactive=False, height=140)
        with gr.Column(min_width=200):
            upload = gr.UploadButton("Load settings (.json) to reproduce a result", file_types=[".json"])
            gr.DeepLinkButton("Copy a link to this result", "Link copied: it reopens these settings and this result")
    event.success(lambda value, *values: save_result(runner, value, list(values)), [gallery, *inputs], downloads,
                  api_visibility="private")
    event.failure(lambda *values: settings_after_failure(runner, list(values)), inputs, downloads,
                  api_visibility="private")
    upload.upload(lambda file: load_settings(runner, file), upload, inputs, api_visibility="private",
                  preprocess=False)
