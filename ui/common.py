"""What every tab shares: model choice, seeds, errors a student understands, progress, the process view."""

from __future__ import annotations

import base64
import contextvars
import functools
import inspect
import io
import json
import queue
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import gradio as gr
from PIL import Image

import os

ZERO_GPU_SECONDS = 120  # what spaces.GPU reserves for one call

try:  # on Hugging Face ZeroGPU, GPU work runs inside spaces.GPU (imported before torch); elsewhere this is a no-op
    import spaces

    gpu = spaces.GPU(duration=ZERO_GPU_SECONDS)
except ImportError:

    def gpu(fn: Callable) -> Callable:
        return fn

import torch

from pipelines import devices, images, loading, registry, timing

GPU_CONCURRENCY = dict(concurrency_limit=1, concurrency_id="gpu")  # all GPU work shares one slot
MAX_SEED = 2**31 - 1
MAX_PROMPTS = 16  # label prompts per request
MAX_TEXT_CHARS = 300  # a text edit's or a direction's source and target text


def offered_model(model_id) -> str:
    """`model_id` if the page offers it (a registry model, or the operator's STEER_MODEL), else a gr.Error that is the
    same whatever the id names on the server: a request never loads a path."""
    offered = registry.diffusion_model_ids()
    if model_id not in offered:
        raise gr.Error(f"Unknown model; use one of: {', '.join(offered)}.", title="Unknown model")
    return model_id


def parse_prompts(text) -> list[str]:
    """The non-empty lines of a label-prompt box: at most MAX_PROMPTS, each at most MAX_TEXT_CHARS characters
    (CLIP's 77-token limit is checked when CLIP reads them, ClipJudge.check_prompts)."""
    text = text if isinstance(text, str) else ""
    if len(text) > MAX_PROMPTS * (MAX_TEXT_CHARS + 1):
        raise gr.Error(f"The label prompts are {len(text)} characters long; write at most {MAX_PROMPTS} short lines.",
                       title="Prompts too long")
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if len(prompts) > MAX_PROMPTS:
        raise gr.Error(f"{len(prompts)} label prompts; use at most {MAX_PROMPTS}.", title="Too many prompts")
    for prompt in prompts:
        check_text(prompt, "A label prompt")
    return prompts


def check_text(text, what: str) -> str:
    """A text box's value, stripped, at most MAX_TEXT_CHARS characters."""
    text = (text if isinstance(text, str) else "").strip()
    if len(text) > MAX_TEXT_CHARS:
        raise gr.Error(f"{what} is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}.", title="Text too long")
    return text


def max_seconds() -> float:
    """STEER_MAX_SECONDS, else what one ZeroGPU call may take on ZeroGPU, else 300."""
    if "STEER_MAX_SECONDS" in os.environ:
        return float(os.environ["STEER_MAX_SECONDS"])
    return ZERO_GPU_SECONDS if os.environ.get("SPACES_ZERO_GPU") else 300.0


def estimate_seconds(model_id: str, evals: int, grad_evals: int = 0) -> float | None:
    """A request's time from the measured seconds per U-Net evaluation of its model on this device: `evals` plain
    and `grad_evals` back-propagated evaluations at batch 1 (a batch of B counts B). None until measured."""
    plain, grad = timing.measured_seconds(model_id), timing.measured_seconds(model_id, grad=True)
    if plain is None or (grad_evals and grad is None):
        return None
    return evals * plain + grad_evals * (grad or 0.0)


def check_budget(model: loading.DiffusionModel, evals: int, grad_evals: int, lower: str,
                 smallest: tuple[int, int] | None = None) -> None:
    """Refuse, before any sampling, a request whose estimated time exceeds max_seconds(); `lower` says what to lower,
    unless even `smallest`, the (evals, grad_evals) of the tab's lightest settings, is over the limit: then it says
    that no setting fits on this device. The first request of a model on this device measures its cost first (one
    U-Net call, two with a gradient)."""
    timing.seconds_per_eval(model)
    if grad_evals or (smallest and smallest[1]):
        timing.seconds_per_eval(model, grad=True)
    seconds, limit = estimate_seconds(model.model_id, evals, grad_evals), max_seconds()
    if seconds <= limit:
        return
    device = devices.device_and_dtype()[0].type.upper()
    floor = estimate_seconds(model.model_id, *smallest) if smallest else 0.0
    advice = (f"Even the lightest settings take about {floor:.0f} s with {model.model_id} here: pick a smaller model "
              f"(the bundled ones run in seconds) or run the Space on a GPU." if floor > limit else f"Lower {lower}.")
    raise gr.Error(f"This request would take about {seconds:.0f} s on this {device} ({evals + grad_evals} U-Net "
                   f"evaluations); the limit is {limit:.0f} s. {advice}", title="Too much work for one request")


def estimate_markdown(model_id: str, evals: int, grad_evals: int = 0) -> str:
    """The estimate shown next to a Run button: "about 40 s on this CPU"."""
    seconds = estimate_seconds(model_id, evals, grad_evals)
    if seconds is None:
        return f"Time: measured on the first run of {model_id} ({evals + grad_evals} U-Net evaluations)."
    device = devices.device_and_dtype()[0].type.upper()
    over = f" — over the {max_seconds():.0f} s limit: lower the settings" if seconds > max_seconds() else ""
    return f"About **{max(seconds, 1):.0f} s** on this {device}{over}."


def model_dropdown(label: str = "Model") -> gr.Dropdown:
    choices = [(_describe(m), m) for m in registry.diffusion_model_ids()]
    return gr.Dropdown(choices=choices, value=registry.default_model_id(), label=label)


def _describe(model_id: str) -> str:
    info = registry.REGISTRY.get(model_id)
    return f"{model_id} — {info.domain}, {info.resolution}px" if info else f"{model_id} (local)"


def class_names(model_id: str | None) -> tuple[str, ...]:
    """The names of a model's class labels (the null class left out); () for an unconditional or unknown model."""
    info = registry.REGISTRY.get(model_id or "")
    return info.class_names if info is not None else ()


def seed_input() -> gr.Number:
    return gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed (same seed + settings = same image)")


def make_generator(seed) -> torch.Generator:
    """A CPU generator: the same seed draws the same noise on every device."""
    if seed is None or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"the seed must be a whole number from 0 to {MAX_SEED}")
    return torch.Generator("cpu").manual_seed(int(seed))


def user_errors(fn: Callable) -> Callable:
    """Turn the library's ValueError / ModelLoadError into a gr.Error the page shows; the server keeps serving."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except loading.ModelLoadError as err:
            raise gr.Error(str(err), title="Model not available") from err
        except ValueError as err:
            raise gr.Error(str(err), title="Invalid input") from err

    return wrapper


def uploaded_path(image, what: str = "an image") -> str:
    """The file behind an unprocessed gr.Image value. Events run with preprocess=False so that our own
    reader (pipelines.images) judges every upload and a bad file gets a message, not a crash."""
    if not image:
        raise gr.Error(f"Upload {what} first (or pick one of the examples below).", title="No image")
    return image["path"] if isinstance(image, dict) else image


_stop_flags: dict[str, threading.Event] = {}


def stop_flag(request: gr.Request | None) -> threading.Event:
    """The Stop flag of the page that made the request (one per browser session; a fresh one without a request)."""
    if request is None or not request.session_hash:
        return threading.Event()
    return _stop_flags.setdefault(request.session_hash, threading.Event())


def started(request: gr.Request | None) -> threading.Event:
    """The page's Stop flag, lowered as its new request starts."""
    stop = stop_flag(request)
    stop.clear()
    return stop


def request_stop(request: gr.Request) -> None:
    """The Stop buttons: the page's running request ends at its next sampler step."""
    stop_flag(request).set()


def stop_button() -> gr.Button:
    """A Stop button next to a Run button: the page's running request ends at its next sampler step and shows what
    it had (the predicted clean images of that step)."""
    button = gr.Button("Stop", variant="stop")
    button.click(request_stop, None, None, api_visibility="private", queue=False)
    return button


def run_controls(label: str) -> tuple[gr.Button, gr.Markdown]:
    """A tab's Run button with its Stop button beside it, and the request's time estimate under them."""
    with gr.Row():
        run = gr.Button(label, variant="primary")
        stop_button()
    return run, gr.Markdown()


PREVIEWS_PER_RUN = 10  # a streamed run shows its predicted clean images about this many times before its result
_previews: contextvars.ContextVar[queue.Queue | None] = contextvars.ContextVar("previews", default=None)


def live(run: Callable, outputs: int) -> Callable:
    """A streaming endpoint over a tab's run function (whose first output is its gallery): run(...) works on a thread
    while this yields the gallery of its latest predicted clean images every few sampler steps (its other outputs left
    as they are), then its result. Closing the stream (a cancelled event, a closed page) stops the run at its next step.
    """
    finished = object()

    @functools.wraps(run)
    def stream(*args, **kwargs):
        request = next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None)
        updates: queue.Queue = queue.Queue()

        def work():
            _previews.set(updates)
            try:
                updates.put((finished, run(*args, **kwargs)))
            except Exception as err:  # re-raised below, in the request's own thread
                updates.put((finished, err))

        threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True).start()
        update = None
        try:
            while True:
                update = updates.get()
                if isinstance(update, tuple) and update[0] is finished:
                    break
                yield (update, *[gr.skip()] * (outputs - 1)) if outputs > 1 else update
        finally:
            if not (isinstance(update, tuple) and update[0] is finished):  # closed while the run was working
                stop_flag(request).set()
        if isinstance(update[1], Exception):
            raise update[1]
        yield update[1]

    return stream


def evenly(total: int, count: int) -> list[int]:
    """`count` step indices spread evenly over 0..total-1, both ends included."""
    return sorted({round(i * (total - 1) / max(1, count - 1)) for i in range(count)}) if count else []


MAX_PREVIEW_EVERY = 100


def preview_slider() -> gr.Slider:
    """How often a run streams its predicted clean images: every k sampler steps (0: about PREVIEWS_PER_RUN times)."""
    return gr.Slider(0, MAX_PREVIEW_EVERY, value=0, step=1,
                     label=f"Preview every k steps (0 = about {PREVIEWS_PER_RUN} times a run)")


def check_preview_every(k) -> int:
    if k is None or not 0 <= int(k) <= MAX_PREVIEW_EVERY:
        raise gr.Error(f"Preview every k steps: k must be from 0 (automatic) to {MAX_PREVIEW_EVERY}; got {k}.",
                       title="Invalid input")
    return int(k)


def line_plot(label: str, x: str, y: str) -> gr.LinePlot:
    """A plot of one line per run ("run" column), filled by a tab's result."""
    return gr.LinePlot(x=x, y=y, color="run", label=label, x_title=x, y_title=y, height=260)


class Stopped(Exception):
    """Raised by StepReporter at the first step after Stop: the run ends there and shows what it had."""


class StepReporter:
    """The pipeline callback: moves the progress bar, keeps x_t and x0_hat at a few steps for the process view and the
    latest x0_hat, and ends the run (Stopped) at the first step after the page pressed Stop."""

    def __init__(self, progress: gr.Progress, total: int, desc: str, snapshots: int = 0,
                 stop: threading.Event | None = None, preview_every: int = 0):
        self.progress, self.total, self.desc, self.stop = progress, total, desc, stop
        self.keep = set(evenly(total, snapshots))
        self.frames: list[tuple] = []
        self.step, self.x0_hat = 0, None
        self.previews = _previews.get()
        self.every = check_preview_every(preview_every) or max(1, total // PREVIEWS_PER_RUN)

    def __call__(self, step: int, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Stopped(step)
        self.step, self.x0_hat = step + 1, x0_hat
        self.progress((step + 1, self.total), desc=self.desc)
        if self.previews is not None and self.step % self.every == 0 and self.step < self.total:
            self.previews.put(self.latest_gallery(f"step {self.step} of {self.total}: predicted x0"))
        if step in self.keep:
            x_t_img, x0_img = images.postprocess(torch.stack([x_t[0], x0_hat[0]]))
            self.frames += [(display(x_t_img), f"t={t}: x_t"), (display(x0_img), f"t={t}: predicted x0")]

    def latest_gallery(self, caption: str) -> list[tuple]:
        """The predicted clean image of every sample at the latest step."""
        if self.x0_hat is None:
            return []
        return [(display(image), caption) for image in images.postprocess(self.x0_hat)]

    def stopped_gallery(self) -> list[tuple]:
        """What a stopped run had: the predicted clean images of its last step."""
        return self.latest_gallery(f"stopped at step {self.step} of {self.total}: predicted x0")


OUTPUT_DIR = Path(tempfile.mkdtemp(prefix="steer-outputs-"))
OUTPUT_MAX_AGE_S = 900


def noise_image(z: torch.Tensor) -> Image.Image:
    """A noise map (3,H,W) of N(0, I) as a picture: -3 sigma black, 0 grey, +3 sigma white."""
    return images.postprocess(z[None].float() / 3)[0]


def heat_image(m: torch.Tensor) -> Image.Image:
    """A non-negative map (H,W) as a grey picture, white at its maximum."""
    m = m.float() / m.max().clamp_min(1e-12)
    return images.postprocess((m * 2 - 1).expand(1, 3, *m.shape))[0]


def display(image) -> str:
    """A gallery item: the image (small samples enlarged with nearest neighbour) as a PNG file of its own.

    Gradio copies a returned file into its cache atomically (write, then rename), whereas it rewrites a returned
    PIL image in place under its content hash, so a concurrent download of an identical image (twenty students
    running the same example) could read it half-written.
    """
    remove_old_outputs()
    path = OUTPUT_DIR / f"{uuid.uuid4().hex}.png"
    images.upscale_for_display(image).save(path)
    return str(path)


def output_folder() -> Path:
    """A new folder in OUTPUT_DIR for one request's files."""
    remove_old_outputs()
    return Path(tempfile.mkdtemp(dir=OUTPUT_DIR))


def remove_old_outputs() -> None:
    """Files and folders in OUTPUT_DIR older than OUTPUT_MAX_AGE_S go (Gradio has its copies by then)."""
    now = time.time()
    for old in OUTPUT_DIR.iterdir():
        try:
            if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        except FileNotFoundError:  # removed by a concurrent request
            pass


def _model_state(model_id: str, kind: str) -> str:
    state = loading.availability(model_id, kind)
    seconds = timing.measured_seconds(model_id)
    return state + (f", {seconds:.3g} s per U-Net evaluation here" if seconds is not None else "")


def status_markdown() -> str:
    """The device, and for every model the page offers whether it is ready, where it would come from (with the
    download size) and, once it has run, its measured seconds per U-Net evaluation; refreshed on every page load."""
    device, dtype = devices.device_and_dtype()
    model_id = registry.default_model_id()
    try:
        loading.load_diffusion(model_id)
        state = f"default model **{model_id}** is ready ({_model_state(model_id, 'ddpm')})."
    except loading.ModelLoadError as err:
        state = f"⚠️ default model **{model_id}** cannot be loaded: {err}"
    others = [f"{m}: {_model_state(m, 'ddpm')}" for m in registry.diffusion_model_ids() if m != model_id]
    clip_id = registry.default_clip_id()
    return (f"Running on **{device.type.upper()}** ({str(dtype).removeprefix('torch.')}); {state}  \n"
            f"CLIP {clip_id}: {_model_state(clip_id, 'clip')} · " + " · ".join(others))


SETTINGS_FORMAT = "steer-settings/1"
MAX_SETTINGS_BYTES = 8 * 2**20  # a settings file with its images and direction file
MAX_EMBEDDED_FILE_BYTES = 4 * 2**20  # a direction file embedded in settings (a 256 px f_t is 2.4 MB)


def run_parameters(run: Callable) -> list[str]:
    """The names of a run function's inputs, in order (the request and the progress left out)."""
    return [name for name in inspect.signature(run).parameters if name not in ("request", "progress")]


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_result(tab: str, run: Callable, gallery, values: list, pictures: dict[str, str], files: tuple[str, ...]):
    """The result as a PNG strip (the gallery's images side by side) and a JSON of every setting of `run` and the seed,
    with each picture input (a name of `run`'s parameters -> the parameter naming its model) embedded at the model's
    size and each file input embedded whole, so that load_settings() on the same tab reproduces the run."""
    strip = [Image.open(item[0] if isinstance(item, (tuple, list)) else item).convert("RGB") for item in gallery or []]
    if not strip:
        return None
    settings = dict(zip(run_parameters(run), values))
    embedded = {}
    for name, model_name in pictures.items():
        if settings.get(name):
            size = loading.load_diffusion(offered_model(settings[model_name])).unet.config.sample_size
            embedded[name] = _data_url(_png(images.center_crop_resize(images.open_image(settings[name]), size)))
        settings[name] = None
    for name in files:
        path = settings.get(name)
        if path and Path(path).stat().st_size <= MAX_EMBEDDED_FILE_BYTES:
            embedded[name] = {"name": Path(path).name, "base64": base64.b64encode(Path(path).read_bytes()).decode()}
        settings[name] = None
    folder = output_folder()
    height = max(image.height for image in strip)
    sheet = Image.new("RGB", (sum(image.width for image in strip), height), "white")
    x = 0
    for image in strip:
        sheet.paste(image, (x, 0))
        x += image.width
    sheet.save(folder / f"{tab}-result.png")
    document = {"format": SETTINGS_FORMAT, "tab": tab, "settings": settings, "embedded": embedded}
    (folder / f"{tab}-settings.json").write_text(json.dumps(document, indent=1))
    return [str(folder / f"{tab}-result.png"), str(folder / f"{tab}-settings.json")]


def load_settings(tab: str, run: Callable, upload, pictures: dict[str, str], files: tuple[str, ...]) -> list:
    """The values of `run`'s inputs from a settings file that save_result() wrote for this tab, or a gr.Error."""
    path = uploaded_path(upload, "a settings file (.json)")
    if Path(path).stat().st_size > MAX_SETTINGS_BYTES:
        raise gr.Error(f"That settings file is over {MAX_SETTINGS_BYTES // 2**20} MB; load the .json a result's "
                       f"download gave.", title="Not a settings file")
    try:
        document = json.loads(Path(path).read_text())
        assert document["format"] == SETTINGS_FORMAT and isinstance(document["settings"], dict)
    except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError) as err:
        raise gr.Error("That is not a settings file of this Space: load the .json that a result's download gave.",
                       title="Not a settings file") from err
    if document["tab"] != tab:
        raise gr.Error(f"Those are settings of the {document['tab']!r} tab; load them there.", title="Another tab")
    settings, embedded = document["settings"], document.get("embedded") or {}
    settings.update({name: None for name in (*pictures, *files)})  # only what the file embeds, never a path it names
    folder = output_folder()
    for name in pictures:
        if isinstance(embedded.get(name), str) and embedded[name].startswith("data:image/png;base64,"):
            picture = images.open_image(base64.b64decode(embedded[name].split(",", 1)[1]))  # judged like an upload
            settings[name] = str(folder / f"{name}.png")
            picture.save(settings[name])
    for name in files:
        if isinstance(embedded.get(name), dict):
            target = folder / Path(str(embedded[name].get("name") or name)).name
            target.write_bytes(base64.b64decode(embedded[name]["base64"]))
            settings[name] = str(target)
    values = []
    for name in run_parameters(run):
        value = settings.get(name)
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise gr.Error(f"The setting {name!r} in that file is not a plain value.", title="Not a settings file")
        values.append(value if name in settings else gr.skip())
    return values


def take_home(tab: str, run: Callable, inputs: list, gallery: gr.Gallery, event,
              pictures: dict[str, str] | None = None, files: tuple[str, ...] = ()) -> None:
    """Under a tab's result: its download (a PNG strip and a JSON of every setting, written when a run ends) and a
    button that loads such a JSON back into the tab's inputs."""
    pictures = pictures or {}
    with gr.Row():
        downloads = gr.File(label="Take it home: the result as a PNG strip, its settings and seed as JSON",
                            file_count="multiple", interactive=False, height=140)
        upload = gr.UploadButton("Load settings (.json) to reproduce a result", file_types=[".json"])
    event.success(lambda gallery_value, *values: save_result(tab, run, gallery_value, list(values), pictures, files),
                  [gallery, *inputs], downloads, api_visibility="private")
    upload.upload(lambda file: load_settings(tab, run, file, pictures, files), upload, inputs,
                  api_visibility="private", preprocess=False)
