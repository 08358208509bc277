"""ILVR: a reference's low frequencies steer an unconditional DDPM (pipelines.ILVRPipeline)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from pipelines import ILVRPipeline
from pipelines.core import images
from pipelines.models import loading
from pipelines.ilvr import DOWN_FACTORS

from . import base
from .base import Job, validated
from .budget import Cost, Work
from .common import Callback, Gallery, class_names, make_generator, picture

TAB = "ilvr"
PICTURES = {"reference": "model_id"}  # picture settings -> the setting naming the model whose size they take
FILES = ()
MIN_STEPS = 10
SNAPSHOTS = 6  # steps whose x_t and x0_hat the process view shows
GRID_RANGES = (0, 250, 500, 750)  # the grid's columns: condition while t > range_t
GRID_FACTORS = 4  # the grid's rows: the four smallest factors N that leave the reference at least 2 px wide


@dataclass
class Settings:
    """Every knob of an ILVR run (the names are the /ilvr endpoint's parameters)."""

    reference: str | None = None  # the reference image's path
    model_id: str | None = None  # None: the default model
    down_factor: int = 4  # N
    range_t: int = 0  # condition while t > range_t
    steps: int = 100
    samples: int = 2
    seed: int = 0
    show_process: bool = False  # x_t and x0_hat at a few steps, and the frequency split of one step
    split_step: int = 50  # 1-based; capped at the last conditioned step
    preview_every: int = 0
    target_class: str = ""  # a class-conditional model's class to sample the proposals from ("": none)


@dataclass
class GridSettings:
    """The /ilvr_grid endpoint: one sample from one seed at every factor N and conditioning range."""

    reference: str | None = None
    model_id: str | None = None
    steps: int = 100
    seed: int = 0


@dataclass
class Result:
    gallery: Gallery  # the reference, its low-pass phi_N(y), the samples
    process: Gallery = field(default_factory=list)  # x_t and x0_hat at a few steps, then the frequency split
    stopped: bool = False


def pipeline(model_id: str) -> ILVRPipeline:
    model = loading.load_diffusion(model_id)
    pipe = ILVRPipeline(unet=model.unet, scheduler=loading.make_scheduler(model))
    pipe.set_progress_bar_config(disable=True)  # the Tracker reports progress
    return pipe


def split_index(split_step: int, steps: int) -> int:
    """The 0-based index of the step whose frequency split is shown: step `split_step` of 1..steps, capped at the
    last step but one (the last step, to t = 0, is never conditioned)."""
    if split_step < 1:
        raise ValueError(f"The frequency split's step must be from 1 to the number of steps; got {split_step}.")
    return max(0, min(split_step, steps - 1) - 1)


def cost(settings: Settings, pipe: ILVRPipeline | None = None) -> Cost:
    """One U-Net evaluation of the whole batch per sampler step."""
    settings = validated(settings)
    pipe = pipe or pipeline(settings.model_id)
    return Cost(settings.model_id, (Work(pipe.total_steps(num_inference_steps=settings.steps), settings.samples),))


def class_label(settings: Settings) -> int | None:
    """The index of the settings' target class among the model's classes (None without one), or a ValueError."""
    if not settings.target_class:
        return None
    names = class_names(settings.model_id)
    if settings.target_class not in names:
        allowed = f"one of {', '.join(names)}" if names else "none: this model has no classes"
        raise ValueError(f"The target class {settings.target_class!r} is not one of {settings.model_id}'s classes; "
                         f"pick {allowed}.")
    return names.index(settings.target_class)


def prepare(settings: Settings) -> Job:
    """The pipeline, the reference at the model's size, the split's step index and the class checked, before any
    sampling."""
    pipe = pipeline(settings.model_id)
    reference = picture(settings.reference, pipe.unet.config.sample_size, "a reference image")
    split = split_index(settings.split_step, settings.steps) if settings.show_process else None
    y = class_label(settings)
    pipe.check_inputs(down_factor=settings.down_factor, range_t=settings.range_t,
                      num_inference_steps=settings.steps, batch_size=settings.samples, output_type="pil",
                      split_step=split, class_labels=y)

    def work(tracker: base.Tracker) -> Result:
        out = pipe(reference, down_factor=settings.down_factor, range_t=settings.range_t,
                   num_inference_steps=settings.steps, batch_size=settings.samples,
                   generator=make_generator(settings.seed), callback=tracker, split_step=split, class_labels=y)
        gallery = [(reference, "reference y"), (out.reference_low_pass[0], f"φ_N(y), N={settings.down_factor}")]
        of = f" of {settings.target_class}" if settings.target_class else ""
        gallery += [(image, f"sample {i + 1}{of}") for i, image in enumerate(out.images)]
        return Result(gallery, tracker.frames + frequency_split(out.frequency_split, settings.down_factor))

    return Job(loading.load_diffusion(settings.model_id), cost(settings, pipe),
               cost(Settings(model_id=settings.model_id, steps=MIN_STEPS, samples=1), pipe),
               "the sampling steps or the number of samples", pipe.total_steps(num_inference_steps=settings.steps),
               "ILVR sampling", work,
               lambda tracker: Result([(reference, "reference y")] + tracker.stopped(), tracker.frames, stopped=True),
               settings.preview_every, SNAPSHOTS if settings.show_process else 0)


def frequency_split(split, down_factor: int) -> Gallery:
    """The refinement of one step as four pictures: what it replaced, what it put in, what it kept, and the sum."""
    if split is None:
        return []
    where = f"step {split.step + 1}, t={split.t}"
    parts = [(split.proposal_low, f"{where}: φ_N(x'_t-1), the model's low frequencies (replaced)"),
             (split.reference_low, f"{where}: φ_N(y_t-1), the noised reference's (put in), N={down_factor}"),
             (split.proposal_high, f"{where}: (I − φ_N)(x'_t-1), the model's high frequencies (kept)"),
             (split.x_prev, f"{where}: x_t-1 = φ_N(y_t-1) + (I − φ_N)(x'_t-1)")]
    pictures = images.postprocess(torch.stack([part for part, _ in parts]))
    return [(image, caption) for image, (_, caption) in zip(pictures, parts)]


def run(settings: Settings, *, callback: Callback | None = None, stop: threading.Event | None = None) -> Result:
    """The reference, its low-pass and the samples; with show_process, x_t and x0_hat at a few steps and the
    frequency split of one step."""
    return base.run(prepare, settings, callback=callback, stop=stop)


def grid_factors(size: int) -> list[int]:
    return [n for n in DOWN_FACTORS if size % n == 0 and size // n >= 2][:GRID_FACTORS]


def grid_cost(settings: GridSettings, pipe: ILVRPipeline | None = None) -> Cost:
    """One sample per cell of the grid, one U-Net evaluation per step."""
    settings = validated(settings)
    pipe = pipe or pipeline(settings.model_id)
    cells = len(grid_factors(pipe.unet.config.sample_size)) * len(GRID_RANGES)
    return Cost(settings.model_id, (Work(cells * pipe.total_steps(num_inference_steps=settings.steps)),))


def prepare_grid(settings: GridSettings) -> Job:
    """Every cell of the grid checked, before any sampling."""
    pipe = pipeline(settings.model_id)
    reference = picture(settings.reference, pipe.unet.config.sample_size, "a reference image")
    cells = [(n, r) for n in grid_factors(pipe.unet.config.sample_size) for r in GRID_RANGES]
    for n, r in cells:
        pipe.check_inputs(down_factor=n, range_t=r, num_inference_steps=settings.steps, batch_size=1,
                          output_type="pil")
    steps = pipe.total_steps(num_inference_steps=settings.steps)
    gallery: Gallery = []

    def work(tracker: base.Tracker) -> Result:
        for k, (n, r) in enumerate(cells):
            out = pipe(reference, down_factor=n, range_t=r, num_inference_steps=settings.steps, batch_size=1,
                       generator=make_generator(settings.seed), callback=tracker.offset(k * steps))
            gallery.append((out.images[0], f"N={n}, condition while t > {r}"))
        return Result(gallery)

    return Job(loading.load_diffusion(settings.model_id), grid_cost(settings, pipe),
               grid_cost(GridSettings(model_id=settings.model_id, steps=MIN_STEPS), pipe), "the sampling steps",
               len(cells) * steps, "ILVR grid", work,
               lambda tracker: Result(gallery + tracker.stopped(), stopped=True))


def run_grid(settings: GridSettings, *, callback: Callback | None = None,
             stop: threading.Event | None = None) -> Result:
    """One sample from the same seed at every factor N (rows) and conditioning range (columns), as in the paper's
    figures: a larger N keeps less of the reference, a larger range_t stops conditioning earlier."""
    return base.run(prepare_grid, settings, callback=callback, stop=stop)
