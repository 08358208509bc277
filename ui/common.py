"""What every tab shares: model choice, seeds, errors a student understands, progress, the process view."""

from __future__ import annotations

import contextvars
import functools
import queue
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import gradio as gr

import os

ZERO_GPU_SECONDS = 120  # what spaces.GPU reserves for one call

try:  # on Hugging Face ZeroGPU, GPU work runs inside spaces.GPU (imported before torch); elsewhere this is a no-op
    import spaces

    gpu = spaces.GPU(duration=ZERO_GPU_SECONDS)
except ImportError:

    def gpu(fn: Callable) -> Callable:
        return fn

import torch

from pipelines import images, models

GPU_CONCURRENCY = dict(concurrency_limit=1, concurrency_id="gpu")  # all GPU work shares one slot
MAX_SEED = 2**31 - 1
MAX_PROMPTS = 16  # label prompts per request
MAX_TEXT_CHARS = 300  # a text edit's or a direction's source and target text


def offered_model(model_id) -> str:
    """`model_id` if the page offers it (a registry model, or the operator's STEER_MODEL), else a gr.Error that is the
    same whatever the id names on the server: a request never loads a path."""
    offered = models.diffusion_model_ids()
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
    plain, grad = models.measured_seconds(model_id), models.measured_seconds(model_id, grad=True)
    if plain is None or (grad_evals and grad is None):
        return None
    return evals * plain + grad_evals * (grad or 0.0)


def check_budget(model: models.DiffusionModel, evals: int, grad_evals: int, lower: str,
                 smallest: tuple[int, int] | None = None) -> None:
    """Refuse, before any sampling, a request whose estimated time exceeds max_seconds(); `lower` says what to lower,
    unless even `smallest`, the (evals, grad_evals) of the tab's lightest settings, is over the limit: then it says
    that no setting fits on this device. The first request of a model on this device measures its cost first (one
    U-Net call, two with a gradient)."""
    models.seconds_per_eval(model)
    if grad_evals or (smallest and smallest[1]):
        models.seconds_per_eval(model, grad=True)
    seconds, limit = estimate_seconds(model.model_id, evals, grad_evals), max_seconds()
    if seconds <= limit:
        return
    device = models.device_and_dtype()[0].type.upper()
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
    device = models.device_and_dtype()[0].type.upper()
    over = f" — over the {max_seconds():.0f} s limit: lower the settings" if seconds > max_seconds() else ""
    return f"About **{max(seconds, 1):.0f} s** on this {device}{over}."


def model_dropdown(label: str = "Model") -> gr.Dropdown:
    choices = [(_describe(m), m) for m in models.diffusion_model_ids()]
    return gr.Dropdown(choices=choices, value=models.default_model_id(), label=label)


def _describe(model_id: str) -> str:
    info = models.REGISTRY.get(model_id)
    return f"{model_id} — {info.domain}, {info.resolution}px" if info else f"{model_id} (local)"


def class_names(model_id: str | None) -> tuple[str, ...]:
    """The names of a model's class labels (the null class left out); () for an unconditional or unknown model."""
    info = models.REGISTRY.get(model_id or "")
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
        except models.ModelLoadError as err:
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


class Stopped(Exception):
    """Raised by StepReporter at the first step after Stop: the run ends there and shows what it had."""


class StepReporter:
    """The pipeline callback: moves the progress bar, keeps x_t and x0_hat at a few steps for the process view and the
    latest x0_hat, and ends the run (Stopped) at the first step after the page pressed Stop."""

    def __init__(self, progress: gr.Progress, total: int, desc: str, snapshots: int = 0,
                 stop: threading.Event | None = None):
        self.progress, self.total, self.desc, self.stop = progress, total, desc, stop
        self.keep = {round(i * (total - 1) / max(1, snapshots - 1)) for i in range(snapshots)}  # evenly, ends included
        self.frames: list[tuple] = []
        self.step, self.x0_hat = 0, None
        self.previews, self.every = _previews.get(), max(1, total // PREVIEWS_PER_RUN)

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


def display(image) -> str:
    """A gallery item: the image (small samples enlarged with nearest neighbour) as a PNG file of its own.

    Gradio copies a returned file into its cache atomically (write, then rename), whereas it rewrites a returned
    PIL image in place under its content hash, so a concurrent download of an identical image (twenty students
    running the same example) could read it half-written. Files older than OUTPUT_MAX_AGE_S are removed.
    """
    now = time.time()
    for old in OUTPUT_DIR.glob("*.png"):
        if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
            old.unlink(missing_ok=True)
    path = OUTPUT_DIR / f"{uuid.uuid4().hex}.png"
    images.upscale_for_display(image).save(path)
    return str(path)


def _model_state(model_id: str, kind: str) -> str:
    state = models.availability(model_id, kind)
    seconds = models.measured_seconds(model_id)
    return state + (f", {seconds:.3g} s per U-Net evaluation here" if seconds is not None else "")


def status_markdown() -> str:
    """The device, and for every model the page offers whether it is ready, where it would come from (with the
    download size) and, once it has run, its measured seconds per U-Net evaluation; refreshed on every page load."""
    device, dtype = models.device_and_dtype()
    model_id = models.default_model_id()
    try:
        models.load_diffusion(model_id)
        state = f"default model **{model_id}** is ready ({_model_state(model_id, 'ddpm')})."
    except models.ModelLoadError as err:
        state = f"⚠️ default model **{model_id}** cannot be loaded: {err}"
    others = [f"{m}: {_model_state(m, 'ddpm')}" for m in models.diffusion_model_ids() if m != model_id]
    clip_id = models.default_clip_id()
    return (f"Running on **{device.type.upper()}** ({str(dtype).removeprefix('torch.')}); {state}  \n"
            f"CLIP {clip_id}: {_model_state(clip_id, 'clip')} · " + " · ".join(others))
