"""Classifier guidance: a noise-aware classifier, or CLIP zero-shot over label prompts, steers a model; or, for a
class-conditional model, classifier-free guidance, its classifier (when it ships one) only judging
(pipelines.ClassifierGuidancePipeline). A run samples from noise, or from an image noised to t0."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pipelines import ClassifierGuidancePipeline, ClipZeroShotClassifier
from pipelines.models import loading, registry

from . import base
from .base import Job, validated
from .budget import Cost, Work
from .common import Callback, Gallery, class_names, evenly, heat_image, make_generator, parse_prompts, picture

TAB = "guidance"
PICTURES, FILES = {"image": "model_id"}, ()
# the model's noise-aware classifier; CLIP zero-shot over prompts; classifier-free guidance by the model's own classes
NOISE_AWARE, CLIP_ZERO_SHOT, CLASSIFIER_FREE = "classifier", "clip", "free"
CLASSIFIERS = (NOISE_AWARE, CLIP_ZERO_SHOT, CLASSIFIER_FREE)
DEFAULT_SCALES = {NOISE_AWARE: 10.0, CLIP_ZERO_SHOT: 10.0, CLASSIFIER_FREE: 3.0}  # s, or w of classifier-free guidance
FACE_PROMPTS = "a photo of a smiling person\na photo of a person with glasses\na photo of a person with a beard"
MIN_STEPS = 10
MAX_SCALE = 100  # the page's slider range; a sweep stays in it too
MAX_SWEEP = 8
GRADIENT_MAPS = 4  # steps of the first guided run whose gradient norm map is kept


@dataclass
class Settings:
    """Every knob of a guidance run (the names are the /guidance endpoint's parameters)."""

    prompts_text: str = FACE_PROMPTS  # CLIP's label prompts, one per line
    target: str | None = None  # a class of the model's classifier, or one of the label prompts
    model_id: str | None = None
    scale: float = 10.0
    sampler: str = "ddim"  # "ddim" (Algorithm 2: shift the noise) or "ddpm" (Algorithm 1: shift the mean)
    gradient: str = "fixed_eps"  # CLIP's gradient: "fixed_eps" or "exact" (through the U-Net)
    eta: float = 0.0
    steps: int = 50
    samples: int = 2
    seed: int = 0
    sweep: bool = False
    sweep_scales: str = "0, 5, 10, 20"
    classifier_kind: str = CLIP_ZERO_SHOT  # "classifier" (the model's noise-aware one), "clip" (zero-shot) or "free"
    compare: bool = True  # also the unguided run from the same seed
    preview_every: int = 0
    image: str | None = None  # start from this image noised to t0 instead of from noise
    strength: float = 1.0  # with an image: t0 = the first of the sampler's last round(strength x steps) timesteps


@dataclass
class Result:
    gallery: Gallery  # every run's samples, captioned with p(target)
    trace: list[dict] = field(default_factory=list)  # p(target | x_t) per step, sample and run ("step", "p", "run")
    gradient_maps: Gallery = field(default_factory=list)  # |grad log p| maps, white at each one's maximum
    stopped: bool = False


def model_class_names(model_id: str | None) -> tuple[str, ...]:
    """The classes of the model's own noise-aware classifier; () when the model ships none."""
    info = registry.REGISTRY.get(model_id or "")
    return info.class_names if info is not None and info.classifier else ()


def default_classifier(model_id: str | None) -> str:
    return NOISE_AWARE if model_class_names(model_id) else CLIP_ZERO_SHOT


def default_sampler(model_id: str | None) -> str:
    """DDPM for the bundled models, whose deterministic DDIM samples are often not clean (about 5 in 8); else DDIM."""
    info = registry.REGISTRY.get(model_id or "")
    return "ddpm" if info is not None and info.path else "ddim"


def target_labels(classifier_kind: str, prompts_text: str, model_id: str | None) -> list[str]:
    """The classes the target is chosen from: the classifier's, the model's own, or the label prompts."""
    if classifier_kind == NOISE_AWARE:
        return list(model_class_names(model_id))
    return list(class_names(model_id)) if classifier_kind == CLASSIFIER_FREE else parse_prompts(prompts_text)


def parse_scales(text: str) -> list[float]:
    try:
        scales = [float(part) for part in (text or "").replace(";", ",").split(",") if part.strip()]
    except ValueError as err:
        raise ValueError(f"Write the sweep scales as numbers separated by commas, e.g. 0, 5, 10, 20 ({err}).") from err
    if not 1 <= len(scales) <= MAX_SWEEP:
        raise ValueError(f"Give from 1 to {MAX_SWEEP} sweep scales, separated by commas, e.g. 0, 5, 10, 20.")
    if not all(0 <= s <= MAX_SCALE for s in scales):
        raise ValueError(f"Sweep scales must be from 0 to {MAX_SCALE}, as on the slider; got {text}.")
    return scales


def runs(settings: Settings) -> list[float]:
    """The scales one request samples at: the sweep's, or the scale (and 0 after it, to compare, unless it is 0)."""
    if settings.sweep:
        return parse_scales(settings.sweep_scales)
    return [settings.scale] + ([0.0] if settings.compare and settings.scale != 0 else [])


def make_classifier(settings: Settings):
    """(classifier(x_t, t, x0_hat) -> logits, the index of the target among its classes), or a ValueError."""
    if settings.classifier_kind == NOISE_AWARE:
        labels = model_class_names(settings.model_id)
        if not labels:
            ships = ", ".join(name for name, info in registry.REGISTRY.items() if info.classifier)
            raise ValueError(f"The model {settings.model_id} comes with no noise-aware classifier. Pick CLIP "
                             f"zero-shot over label prompts, or a model that ships one ({ships}).")
        if settings.target not in labels:
            raise ValueError(f"The target {settings.target!r} is not one of the model's classes; "
                             f"pick one of: {', '.join(labels)}.")
        return loading.load_classifier(settings.model_id), labels.index(settings.target)
    if settings.classifier_kind == CLASSIFIER_FREE:  # the model's own classes; its classifier, if any, only judges
        labels = class_names(settings.model_id)
        if not labels:
            example = next(name for name, info in registry.REGISTRY.items() if info.class_names)
            raise ValueError(f"Classifier-free guidance needs a class-conditional model; {settings.model_id} has no "
                             f"classes. Pick one that has, e.g. {example}.")
        if settings.target not in labels:
            raise ValueError(f"The target {settings.target!r} is not one of the model's classes; "
                             f"pick one of: {', '.join(labels)}.")
        judge = loading.load_classifier(settings.model_id) if model_class_names(settings.model_id) else None
        return judge, labels.index(settings.target)
    if settings.classifier_kind != CLIP_ZERO_SHOT:
        raise ValueError(f"Pick a classifier: {NOISE_AWARE!r} (the model's noise-aware classifier), "
                         f"{CLIP_ZERO_SHOT!r} (CLIP zero-shot over label prompts) or {CLASSIFIER_FREE!r} "
                         f"(classifier-free guidance); got {settings.classifier_kind!r}.")
    prompts = parse_prompts(settings.prompts_text)
    if not prompts:
        raise ValueError("Write the label prompts, one per line: the target and at least one label it competes with.")
    if settings.target not in prompts:
        raise ValueError(f"The target {settings.target!r} is not one of the label prompts; "
                         f"pick one of: {', '.join(prompts)}.")
    return ClipZeroShotClassifier(loading.load_clip().judge, prompts), prompts.index(settings.target)


def pipeline(model_id: str, classifier=None) -> ClassifierGuidancePipeline:
    model = loading.load_diffusion(model_id)
    pipe = ClassifierGuidancePipeline(unet=model.unet, scheduler=loading.make_scheduler(model), classifier=classifier)
    pipe.set_progress_bar_config(disable=True)  # the Tracker reports progress
    return pipe


def sampler_steps(settings: Settings, pipe: ClassifierGuidancePipeline) -> int:
    """The sampler steps of one scale run: from x_T, or from t0 with an image."""
    return pipe.total_steps(num_inference_steps=settings.steps, strength=settings.strength if settings.image else None)


def cost(settings: Settings, pipe: ClassifierGuidancePipeline | None = None) -> Cost:
    """One U-Net evaluation of the batch per step and scale run (two under classifier-free guidance: the class's and
    the null class's); back-propagated when CLIP's gradient goes through the U-Net ("exact")."""
    settings = validated(settings)
    pipe = pipe or pipeline(settings.model_id)
    exact = settings.classifier_kind == CLIP_ZERO_SHOT and settings.gradient == "exact"
    per_step = 2 if settings.classifier_kind == CLASSIFIER_FREE else 1
    return Cost(settings.model_id, (Work(sampler_steps(settings, pipe) * len(runs(settings)) * per_step,
                                         settings.samples, grad=exact),))


def trace_rows(scale: str, log_probs) -> list[dict]:
    """The plot's rows of one run: p(target | x_t) of each sample at each step; scale names the run ("s=10")."""
    return [{"step": step + 1, "p(target | x_t)": p, "run": f"{scale}, sample {i + 1}"}
            for step, row in enumerate(log_probs.exp().tolist()) for i, p in enumerate(row)]


def prepare(settings: Settings) -> Job:
    """The classifier, the pipeline, the starting image and every scale run checked, before any sampling."""
    scales = runs(settings)
    classifier, y = make_classifier(settings)
    pipe = pipeline(settings.model_id, classifier)
    free = settings.classifier_kind == CLASSIFIER_FREE
    start = picture(settings.image, pipe.unet.config.sample_size, "an image to start from") if settings.image else None
    labels = [y] * settings.samples
    for s in scales:
        pipe.check_inputs(class_labels=labels, guidance_scale=s, sampler=settings.sampler,
                          num_inference_steps=settings.steps, eta=settings.eta, gradient=settings.gradient,
                          output_type="pil", classifier_free=free, image=start, strength=settings.strength)
    steps, map_steps = sampler_steps(settings, pipe), evenly(settings.steps, GRADIENT_MAPS)
    result = Result([] if start is None else [(start, "input")])
    symbol = "w" if free else "s"  # w: classifier-free guidance's scale
    name = lambda s: f"{symbol}={s:g}"  # noqa: E731

    def work(tracker: base.Tracker) -> Result:
        for k, s in enumerate(scales):
            tracker.desc = f"guided sampling, {symbol} = {s:g}"
            out = pipe(labels, guidance_scale=s, sampler=settings.sampler, num_inference_steps=settings.steps,
                       eta=settings.eta, gradient=settings.gradient, generator=make_generator(settings.seed),
                       callback=tracker.offset(k * steps), return_log_probs=True, classifier_free=free, image=start,
                       strength=settings.strength,
                       gradient_map_steps=map_steps if s > 0 and not free and not result.gradient_maps else ())
            judged = [None] * len(out.images) if out.probabilities is None else out.probabilities[:, y].tolist()
            for i, (image, p) in enumerate(zip(out.images, judged)):
                said = "" if p is None else f": p(target) = {p:.2f}"
                result.gallery.append((image, f"{name(s)}, sample {i + 1}{said}"))
            if out.log_probs is not None:
                result.trace += trace_rows(name(s), out.log_probs)
            result.gradient_maps += [(heat_image(m[0]), f"{name(s)}, step {step + 1} (t={int(out.timesteps[step])}): "
                                                        f"|∇ log p(y|x_t)|, max {m[0].max().item():.3g}")
                                     for step, m in sorted((out.gradient_maps or {}).items())]
        return result

    def stopped(tracker: base.Tracker) -> Result:
        s = scales[min((tracker.step - 1) // steps, len(scales) - 1)] if tracker.step else scales[0]
        result.gallery += [(image, f"{name(s)}, {caption}") for image, caption in tracker.stopped()]
        result.stopped = True
        return result

    lightest = Settings(model_id=settings.model_id, steps=MIN_STEPS, samples=1, compare=False,
                        classifier_kind=settings.classifier_kind, image=settings.image, strength=settings.strength)
    return Job(loading.load_diffusion(settings.model_id), cost(settings, pipe), cost(lightest, pipe),
               "the steps, the number of samples or the sweep's scales (or use the fixed-eps gradient, or untick the "
               "unguided comparison)", steps * len(scales), f"guided sampling, {symbol} = {scales[0]:g}", work, stopped,
               settings.preview_every)


def run(settings: Settings, *, callback: Callback | None = None, stop: threading.Event | None = None) -> Result:
    """The samples of every scale run, p(target | x_t) over the steps for each (with `compare`, the unguided run
    from the same seed too), and the gradient norm maps of the first guided run."""
    return base.run(prepare, settings, callback=callback, stop=stop)
