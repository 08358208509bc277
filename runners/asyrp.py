"""Asyrp: semantic edits of a real image in the U-Net's h-space (pipelines.AsyrpPipeline), with directions found
without text, learned from two texts, or read from a file."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipelines import AsyrpPipeline, ModelKind, ModelLoadError
from pipelines.asyrp import released as asyrp_released
from pipelines.models import loading, registry
from pipelines.asyrp.pipeline import check_interval
from pipelines.asyrp.directions.finding import PCA_BATCH
from pipelines.asyrp.directions import learn_direction, load_direction, principal_directions, save_direction
from pipelines.asyrp.interval import LPIPS_BOOST, LPIPS_EDIT, asyrp_interval, choose_interval, load_lpips

from . import base
from .base import Job, validated
from .budget import Cost, Work, check_budget
from .common import BoundedCache, Callback, Gallery, check_text, make_generator, picture

TAB = "asyrp"
PICTURES, FILES = {"image": "model_id"}, ("learned_path", "file_path")
# where the direction comes from: the k-th principal direction of h, learned from two texts, a direction file, or the
# Asyrp authors' released f_t
SOURCES = ("principal", "learned", "file", "released")
KINDS = ("f_t", "global")  # a learned direction: the paper's implicit function f_t, or one global delta_h
STRIP = (-2.0, -1.0, 1.0, 2.0)
MAX_SCALE = 3.0  # the page's slider range is -MAX_SCALE..MAX_SCALE
MAX_K = 8
PCA_SAMPLES = 32  # noise images whose h the principal directions are read from, once per model
MIN_STEPS = 10
inversions = BoundedCache(8)  # x_T of the latest inverted (model, picture, steps): a new scale does not invert again
principal_axes = BoundedCache(4)  # the top MAX_K principal directions of the latest models asked for


@dataclass
class Settings:
    """Every knob of an Asyrp edit (the names are the /asyrp endpoint's parameters)."""

    image: str | None = None  # the image to edit
    model_id: str | None = None
    source: str = "principal"  # where the direction comes from: "principal", "learned", "file" or "released"
    k: int = 1  # unsupervised: the k-th principal direction
    learned_path: str | None = None  # learned: the file /asyrp_learn wrote
    file_path: str | None = None  # file: a direction file (.safetensors, or a pinned official .pth)
    scale: float = 1.0
    strip: bool = True  # the strip -2s, -s, s, 2s
    auto: bool = False  # t_edit and t_boost chosen by LPIPS
    t_edit: int = 500
    t_boost: int = 200
    steps: int = 40
    seed: int = 0
    preview_every: int = 0
    released: list[str] | str | None = None  # released: the authors' directions, by name (a list, or comma-separated)


@dataclass
class LearnSettings:
    """Every knob of learning a direction from two texts (the /asyrp_learn endpoint's parameters)."""

    image: str | None = None
    model_id: str | None = None
    source_text: str = "a face"
    target_text: str = "a smiling face"
    kind: str = "f_t"  # "f_t" (the paper's implicit function) or "global" (one delta_h)
    iterations: int = 5
    t_edit: int = 500
    steps: int = 40


@dataclass
class Result:
    gallery: Gallery  # the input, its reconstruction (scale 0), the edits
    note: str = ""
    scales: list[float] = field(default_factory=list)
    delta_h_norms: dict = field(default_factory=dict)  # t -> |s delta_h_t| per scale
    T: int = 1000  # the model's training timesteps, for the timeline
    t_edit: int = 0
    t_boost: int = 0
    stopped: bool = False


def pipeline(model_id: str) -> AsyrpPipeline:
    model = loading.load_diffusion(model_id)
    pipe = AsyrpPipeline(unet=model.unet, scheduler=loading.make_scheduler(model, "ddim"))
    pipe.set_progress_bar_config(disable=True)  # the Tracker reports progress
    return pipe


def interval(model_id: str | None) -> tuple[int, int]:
    """The model's default (t_edit, t_boost) (pipelines.asyrp.interval.ASYRP_INTERVALS)."""
    return asyrp_interval(model_id or registry.default_model_id())


def train_timesteps(model_id: str) -> int:
    """T of the model's noise schedule."""
    return loading.load_diffusion(model_id).scheduler_config.num_train_timesteps


def inversion_key(model_id: str, image, steps: int) -> tuple:
    return model_id, hashlib.sha1(image.tobytes()).hexdigest(), image.size, steps


def x_T_of(pipe: AsyrpPipeline, model_id: str, image, steps: int, callback=None) -> torch.Tensor:
    """x_T of the image, inverted once per (model, image, steps) while it is among the latest kept."""
    return inversions.get(inversion_key(model_id, image, steps),
                          lambda: pipe.invert(image, num_inference_steps=steps, callback=callback))


def principal(model_id: str) -> torch.Tensor:
    """The model's top MAX_K principal directions of h (MAX_K,C,h,w), from PCA_SAMPLES noise images."""
    return principal_axes.get(model_id, lambda: principal_directions(
        pipeline(model_id), k=MAX_K, num_samples=PCA_SAMPLES, generator=make_generator(0)))


def released_choices(model_id: str | None) -> list[tuple[str, str]]:
    """The authors' released directions for a model, as (label, name): "smiling (Asyrp authors)"."""
    return [(f"{d.name.replace('_', ' ')} (Asyrp authors)", d.name)
            for d in asyrp_released.released_for(model_id or registry.default_model_id())]


def released_names(settings: Settings) -> list[str]:
    """The released directions the settings name, each one made for the settings' model, or a ValueError."""
    names = settings.released if isinstance(settings.released, list) else (settings.released or "").split(",")
    names = [name.strip() for name in names if name and name.strip()]
    offered = [name for _, name in released_choices(settings.model_id)]
    if not names:
        raise ValueError(f"Pick one or more released directions; {settings.model_id} has "
                         f"{', '.join(offered) if offered else 'none (they were made for the 256 px CelebA-HQ, LSUN church and bedroom models)'}.")
    for name in names:
        if name not in offered:
            raise ValueError(f"{name!r} is not a released direction for {settings.model_id}; pick from: "
                             f"{', '.join(offered) or 'none'}.")
    return names


def released_rule(names: list[str]) -> tuple[int, str]:
    """(t_edit, how it was chosen) of released directions: the authors' rule (asyrp_released.combined_t_edit, with
    CLIP ViT-B/16) where that CLIP and the dataset's LPIPS curve can be had, else the dataset default."""
    default = max(asyrp_released.RELEASED[name].t_edit for name in names)
    try:
        if loading.availability(asyrp_released.CLIP, ModelKind.CLIP) == "not available offline":  # no copy, offline
            raise ModelLoadError(asyrp_released.CLIP)
        t_edit, cos, name = asyrp_released.combined_t_edit(names, loading.load_clip(asyrp_released.CLIP).judge)
    except (RuntimeError, ValueError) as err:  # RuntimeError: no CLIP, or its device unusable here (ZeroGPU's CUDA)
        missing = "the authors' LPIPS curve" if isinstance(err, ValueError) else "CLIP ViT-B/16"
        return default, f"{default}, the dataset default ({missing} is not available here)"
    of = f" of {name}, the largest of the {len(names)}" if len(names) > 1 else ""
    return t_edit, f"{t_edit} by the authors' rule (CLIP cos {cos:.2f}{of})"


def released_t_edit(names: list[str]) -> int:
    """The released directions' t_edit (released_rule)."""
    return released_rule(names)[0]


def check_edit(settings: Settings) -> None:
    if settings.source not in SOURCES:
        raise ValueError(f"Pick where the direction comes from: {', '.join(SOURCES)} (the k-th principal direction, "
                         f"learned from two texts, a direction file, the authors' released ones); got "
                         f"{settings.source!r}.")
    if settings.source == "principal" and not 1 <= settings.k <= MAX_K:
        raise ValueError(f"k must be from 1 to {MAX_K} (the principal directions kept per model); got {settings.k}.")
    if not -MAX_SCALE <= settings.scale <= MAX_SCALE:
        raise ValueError(f"The scale s must be from {-MAX_SCALE:g} to {MAX_SCALE:g}; got {settings.scale}.")
    if settings.source == "released":
        released_names(settings)


def direction(settings: Settings, pipe: AsyrpPipeline):
    """The direction the settings pick, and a label for it."""
    if settings.source == "principal":
        return principal(settings.model_id)[settings.k - 1], f"principal direction {settings.k}"
    if settings.source == "released":
        names = released_names(settings)
        found = [load_direction(asyrp_released.fetch_released(name), shape=pipe.h_shape, model_id=settings.model_id)[0]
                 for name in names]
        texts = "; ".join(f"{name}: {asyrp_released.RELEASED[name].source} → {asyrp_released.RELEASED[name].target}"
                          for name in names)
        scaled = "s × 40 / steps" + (f" / √{len(names)}" if len(names) > 1 else "")
        return found, f"released by the Asyrp authors ({texts}; c = {scaled})"
    path = settings.learned_path if settings.source == "learned" else settings.file_path
    if not path:
        raise ValueError("Learn a direction first (button below the texts)" if settings.source == "learned"
                         else "Upload a .safetensors direction file first")
    found, meta = load_direction(path, shape=pipe.h_shape, model_id=settings.model_id)
    return found, f"{meta.get('source') or '?'} → {meta.get('target') or '?'}"


def scales(settings: Settings) -> list[float]:
    """Scale 0 (the reconstruction), then the strip's or the one scale."""
    return [0.0] + ([s * settings.scale for s in STRIP] if settings.strip else [settings.scale])


def cost(settings: Settings, pipe: AsyrpPipeline | None = None, image=None) -> Cost:
    """The inversion (unless kept), then every scale in one batch: one U-Net evaluation per step and a second per
    edited step; the principal directions read h of PCA_SAMPLES noise images, once per model."""
    settings = validated(settings)
    pipe = pipe or pipeline(settings.model_id)
    inverted = image is not None and inversion_key(settings.model_id, image, settings.steps) in inversions
    timesteps = pipe.ddim(settings.steps).timesteps
    edited = int((timesteps >= settings.t_edit).sum())
    work = [Work(0 if inverted else settings.steps), Work(settings.steps + edited, len(scales(settings)))]
    if settings.source == "principal" and settings.model_id not in principal_axes:
        work.append(Work(PCA_SAMPLES // PCA_BATCH, PCA_BATCH))
    return Cost(settings.model_id, tuple(work))


def prepare(settings: Settings) -> Job:
    """The direction's source, the interval, the image and the scales checked, before any model work but the budget's
    measurement; the direction is read (or found, downloaded) as the work begins."""
    check_edit(settings)
    pipe = pipeline(settings.model_id)
    T = pipe.scheduler.config.num_train_timesteps
    check_interval(settings.t_edit, settings.t_boost, T=T)
    image = picture(settings.image, pipe.unet.config.sample_size, "an image to edit")
    edits = scales(settings)
    pipe.check_inputs(image=image, x_T=None, direction=None, scale=edits, t_edit=settings.t_edit,
                      t_boost=settings.t_boost, num_inference_steps=settings.steps, output_type="pil")

    def work(tracker: base.Tracker) -> Result:
        note = interval_note(settings, pipe, image)
        shift, label = direction(settings, pipe)
        x_T = x_T_of(pipe, settings.model_id, image, settings.steps, callback=tracker)
        out = pipe(x_T=x_T, direction=shift, scale=edits, t_edit=settings.t_edit, t_boost=settings.t_boost,
                   num_inference_steps=settings.steps, generator=make_generator(settings.seed),
                   callback=tracker.offset(settings.steps))
        gallery = [(image, "input"), (out.images[0], "reconstruction (scale 0)")]
        gallery += [(edited, f"scale {s:+.2g}") for s, edited in zip(edits[1:], out.images[1:])]
        steps = (f"{len(out.delta_h_norms)} edited steps" if out.delta_h_norms
                 else "no step edited (t_edit above every step)")
        note += (f"Direction: {label}; t_edit = {settings.t_edit}, t_boost = {settings.t_boost}, {settings.steps} "
                 f"steps, {steps}.")
        return Result(gallery, note, delta_h_norms=out.delta_h_norms, **timeline(settings, edits, T))

    lightest = Settings(model_id=settings.model_id, source=settings.source, strip=False, t_edit=T, steps=MIN_STEPS)
    return Job(loading.load_diffusion(settings.model_id), cost(settings, pipe, image), cost(lightest, pipe),
               "the steps, or untick the strip of scales", pipe.total_steps(num_inference_steps=settings.steps),
               "Asyrp: DDIM inversion, then editing", work,
               lambda tracker: Result([(image, "input")] + tracker.stopped(), "Stopped.", stopped=True,
                                      **timeline(settings, edits, T)), settings.preview_every)


def timeline(settings: Settings, edits: list[float], T: int) -> dict:
    """The result's fields that draw the run's timeline."""
    return dict(scales=edits, T=T, t_edit=settings.t_edit, t_boost=settings.t_boost)


def interval_note(settings: Settings, pipe: AsyrpPipeline, image) -> str:
    """What chose the interval: with `auto`, the paper's LPIPS rule on the image (settings.t_edit and t_boost set from
    it); for released directions, whether t_edit is the authors' per-direction rule."""
    note = ""
    if settings.auto:
        lpips = load_lpips()
        if lpips is None:
            note = ("LPIPS is not available here (no `lpips` package or no network for its weights): used the t_edit "
                    "and t_boost sliders (the official defaults unless you moved them). ")
        else:
            settings.t_edit, settings.t_boost = choose_interval(pipe, image, lpips, num_inference_steps=settings.steps,
                                                                generator=make_generator(settings.seed))
            note = f"LPIPS chose t_edit = {settings.t_edit}, t_boost = {settings.t_boost}. "
    if settings.source == "released":
        t_edit, how = released_rule(released_names(settings))
        note += f"t_edit {how}. " if t_edit == settings.t_edit else f"t_edit {settings.t_edit}, not their {how}. "
    return note


def run(settings: Settings, *, callback: Callback | None = None, stop: threading.Event | None = None) -> Result:
    """The input, its reconstruction and the edits, a note on the run, and |s delta_h_t| at each edited step."""
    return base.run(prepare, settings, callback=callback, stop=stop)


def learn_cost(settings: LearnSettings, inverted: bool = False) -> Cost:
    """The inversion (unless kept), then every pass back-propagates through the steps of the asymmetric decoding."""
    settings = validated(settings)
    return Cost(settings.model_id, (Work(0 if inverted else settings.steps),
                                    Work(settings.iterations * settings.steps, grad=True)))


def file_name(settings: LearnSettings) -> str:
    name = "".join(c if c.isalnum() else "_" for c in f"{settings.source_text}_to_{settings.target_text}")[:60]
    return f"asyrp_{name}.safetensors"


def learn(settings: LearnSettings, out_dir: Path, *, progress: Callback | None = None,
          stop: threading.Event | None = None) -> tuple[Path, str]:
    """A direction learned from the settings' two texts on the image, saved in `out_dir`; (its path, a message)."""
    settings = validated(settings)
    settings.source_text = check_text(settings.source_text, "The source text")
    settings.target_text = check_text(settings.target_text, "The target text")
    if not settings.source_text or not settings.target_text:
        raise ValueError("Write both a source text (what the image shows) and a target text (what it should show).")
    if settings.kind not in KINDS:
        raise ValueError(f"Pick the kind of direction: {' or '.join(KINDS)} (the paper's implicit function f_t, or "
                         f"one global Δh); got {settings.kind!r}.")
    pipe = pipeline(settings.model_id)
    check_interval(settings.t_edit, 0, T=pipe.scheduler.config.num_train_timesteps)
    image = picture(settings.image, pipe.unet.config.sample_size, "an image to edit")
    judge = loading.load_clip().judge
    judge.check_prompts([settings.source_text, settings.target_text])
    inverted = inversion_key(settings.model_id, image, settings.steps) in inversions
    check_budget(loading.load_diffusion(settings.model_id), learn_cost(settings, inverted),
                 lower="the passes or the steps",
                 smallest=learn_cost(LearnSettings(model_id=settings.model_id, iterations=1, steps=MIN_STEPS)))
    stop = stop or threading.Event()
    if progress is not None:
        progress(0, settings.iterations, "Inverting the image", None)
    learned = learn_direction(
        pipe, image, judge, settings.source_text, settings.target_text,
        kind="implicit" if settings.kind == "f_t" else "global", t_edit=settings.t_edit,
        num_inference_steps=settings.steps, iterations=settings.iterations,
        x_T=x_T_of(pipe, settings.model_id, image, settings.steps),
        progress=None if progress is None else
        lambda i, n, loss: progress(i, n, f"Learning: CLIP directional loss {loss:.3f}", None),
        should_stop=stop.is_set,
    )
    path = Path(out_dir) / file_name(settings)
    save_direction(path, learned, model_id=settings.model_id, t_edit=settings.t_edit,
                   num_inference_steps=settings.steps, source=settings.source_text, target=settings.target_text)
    stopped = " (stopped early)" if stop.is_set() else ""
    return path, (f"Learned “{settings.source_text}” → “{settings.target_text}”{stopped}. Pick *learn from two "
                  f"texts* and press Edit.")
