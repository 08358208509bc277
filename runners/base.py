"""The runner contract, written once: what every method's runner provides to the page, the API, a settings file and
the command line (`Runner`), and the one way a request runs (`run`): validate -> budget -> Tracker -> Stopped.

A runner module checks a request's settings and builds its pipeline over the shared models (`prepare(settings) ->
Job`, no sampling yet); `run` then refuses it when it is over the time budget, tracks its sampler steps (progress,
previews, the process view, Stop), and returns what the work gave, or what a stopped run had.
"""

from __future__ import annotations

import inspect
import io
import threading
import tokenize
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from pipelines.core import images
from pipelines.models import registry

from .budget import Cost, check_budget
from .common import PREVIEWS_PER_RUN, Callback, Gallery, check_preview_every, check_seed, evenly, offered_model


@runtime_checkable
class Runner(Protocol):
    """What a method's runner module provides (each of runners.ilvr, guidance, cycle, cycle_text, asyrp)."""

    TAB: str  # the tab's name: its settings files' "tab", `python -m runners run <TAB>`
    Settings: type  # a dataclass of every knob: short ids and numbers (labels are the page's), the endpoint's names
    PICTURES: dict[str, str]  # picture settings -> the setting naming the model whose size they take
    FILES: tuple[str, ...]  # file settings, embedded whole in a settings file

    def cost(self, settings) -> Cost:
        """The request's U-Net evaluations, from the pipeline's own total_steps, priced at its batch sizes."""

    def run(self, settings, *, callback: Callback | None = None, stop: threading.Event | None = None) -> Any:
        """The request's result: everything its tab shows (`.gallery` first)."""


class Stopped(Exception):
    """Raised by a Tracker at the first step after Stop: the run ends there and shows what it had."""


class Tracker:
    """The pipeline callback: reports each finished step, previews the latest predicted clean images every
    `preview_every` steps (0: about PREVIEWS_PER_RUN times a run), keeps x_t and x0_hat of the first sample at
    `snapshots` steps for the process view, and ends the run (Stopped) at the first step after `stop` is set."""

    def __init__(self, total: int, desc: str, callback: Callback | None = None, stop: threading.Event | None = None,
                 preview_every: int = 0, snapshots: int = 0):
        self.total, self.desc, self.callback, self.stop = total, desc, callback, stop
        self.every = check_preview_every(preview_every) or max(1, total // PREVIEWS_PER_RUN)
        self.keep = set(evenly(total, snapshots))
        self.frames: Gallery = []
        self.step, self.x0_hat = 0, None

    def __call__(self, step: int, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Stopped(step)
        self.step, self.x0_hat = step + 1, x0_hat
        if self.callback is not None:
            due = self.step % self.every == 0 and self.step < self.total
            self.callback(self.step, self.total, self.desc,
                          self.latest(f"step {self.step} of {self.total}: predicted x0") if due else None)
        if step in self.keep:
            x_t_img, x0_img = images.postprocess(torch.stack([x_t[0], x0_hat[0]]))
            self.frames += [(x_t_img, f"t={t}: x_t"), (x0_img, f"t={t}: predicted x0")]

    def latest(self, caption: str) -> Gallery:
        """The predicted clean image of every sample at the latest step."""
        return [] if self.x0_hat is None else [(image, caption) for image in images.postprocess(self.x0_hat)]

    def stopped(self) -> Gallery:
        """What a stopped run had: the predicted clean images of its last step."""
        return self.latest(f"stopped at step {self.step} of {self.total}: predicted x0")

    def offset(self, start: int) -> Callable:
        """This tracker as the callback of a later stage whose step 0 is overall step `start`."""
        return lambda step, t, x_t, x0_hat: self(start + step, t, x_t, x0_hat)


@dataclass
class Job:
    """A request whose settings passed every check, its pipeline built, nothing sampled yet."""

    model: Any  # the loaded model whose measured seconds per U-Net evaluation price the cost (.model_id, .unet)
    cost: Cost
    lightest: Cost | None  # the same request at the tab's lightest settings: whether any setting fits here
    lower: str  # what to lower when the request is over the time budget
    steps: int  # the sampler steps of the whole request, which the tracker counts
    desc: str  # the progress bar's text
    work: Callable[[Tracker], Any]  # the sampling, calling the tracker at every step -> the result
    stopped: Callable[[Tracker], Any]  # what a run stopped by the tracker shows -> the result
    preview_every: int = 0
    snapshots: int = 0  # steps whose x_t and x0_hat the process view keeps


def field_docs(settings_class) -> dict[str, str]:
    """What each setting does, as the comment beside its field in the Settings class says: name -> text ("" where a
    field has none). The API page and the MCP tools show them."""
    docs, field = {}, None
    source = inspect.getsource(settings_class)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and token.start[1] == 4 and field is None:
            field = token.string  # a field's name starts a line of the class body
        elif token.type == tokenize.COMMENT and field is not None:
            docs[field] = token.string.lstrip("# ")
        elif token.type == tokenize.NEWLINE:
            field = None
    return {f.name: docs.get(f.name, "") for f in fields(settings_class)}


def coerced(settings):
    """`settings` with every field cast to the type of its dataclass default (the page sends floats for integer
    sliders, a settings file or the command line strings); None where the default is None stays as given, None for
    a text becomes "" (a page sends None for a textbox in an accordion never opened), which each runner's checks
    judge as an empty text."""
    changes = {}
    for field in fields(settings):
        value, default = getattr(settings, field.name), field.default
        if value is None and isinstance(default, str):
            changes[field.name] = ""
        if value is None or default is None or isinstance(default, str):
            continue
        try:
            changes[field.name] = type(default)(value) if not isinstance(default, bool) else bool(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{field.name} must be a {type(default).__name__}; got {value!r}.") from err
    return replace(settings, **changes)


def validated(settings, model_field: str | None = "model_id"):
    """`settings` with every field cast to the type of its dataclass default, the seed and the preview interval
    checked, and the model in `model_field` (None: the default) one the page offers; a ValueError before any model
    work."""
    settings = coerced(settings)
    for name, check in (("seed", check_seed), ("preview_every", check_preview_every)):
        if hasattr(settings, name):
            setattr(settings, name, check(getattr(settings, name)))
    if model_field is not None and hasattr(settings, model_field):
        setattr(settings, model_field, offered_model(getattr(settings, model_field) or registry.default_model_id()))
    return settings


def run(prepare: Callable[[Any], Job], settings, *, callback: Callback | None = None,
        stop: threading.Event | None = None, model_field: str | None = "model_id"):
    """The one run template: the settings validated (`model_field` names the model they sample with) and checked by
    `prepare` into a Job, refused when over the time budget, then the work, tracked step by step; a Stop ends it at
    the next step with what it had."""
    job = prepare(validated(settings, model_field))
    check_budget(job.model, job.cost, job.lower, job.lightest)
    tracker = Tracker(job.steps, job.desc, callback, stop, job.preview_every, job.snapshots)
    try:
        return job.work(tracker)
    except Stopped:
        return job.stopped(tracker)
