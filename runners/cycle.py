"""CycleDiffusion: encode an image into a stochastic sampler's latent z, decode z with another model, class or text
(pipelines.CycleDiffusionPipeline)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pipelines import CycleDiffusionPipeline
from pipelines.models import loading, registry
from pipelines.cycle_diffusion.ddib import ddib
from pipelines.core.sampling import chain_length
from pipelines.core.metrics import clip_similarity, faithfulness

from . import base
from .base import Job, validated
from .budget import Cost, Work
from .common import (Callback, Gallery, check_text, class_names, evenly, make_generator, noise_image, offered_model,
                     picture)

TAB = "cycle"
PICTURES, FILES = {"image": "source_id"}, ()
# what the decoding does, and how a result's caption names it
MODES = {"reconstruct": "reconstruction", "translate": "translate", "text": "text edit", "class": "class translation"}
MIN_STEPS, MIN_STRENGTH = 10, 0.1
MAX_GUIDANCE_SCALE = 100  # the page's slider range
LATENT_MAPS = 4  # the noise maps eps_t shown besides x_t0


@dataclass
class Settings:
    """Every knob of a CycleDiffusion run (the names are the /cycle endpoint's parameters)."""

    image: str | None = None  # the input image's path
    mode: str = "class"  # "reconstruct", "translate" (another model), "text" (CLIP-guided), "class" (another class)
    source_id: str | None = None  # the model that encodes the input (None: the default model)
    target_id: str | None = None  # translate: the model that decodes z
    target_prompt: str = ""  # text: what the edited image should show
    source_prompt: str = ""  # text, optional: what to steer away from
    strength: float = 0.6  # t0 = strength x T
    eta: float = 1.0
    steps: int = 100
    guidance_scale: float = 10.0  # text: CLIP guidance scale s
    exact_gradient: bool = False
    pnp_steps: int = 0  # plug-and-play guidance: Langevin steps on z
    step_size: float = 1e-3  # the Langevin step size lambda
    seed: int = 0
    source_class: str | None = None  # class translation
    target_class: str | None = None
    sdedit: bool = True  # also decode the SDEdit baseline: the same x_t0, fresh noise
    preview_every: int = 0
    ddib: bool = False  # also the DDIB baseline: deterministic DDIM inversion to t0, decoded with the target


@dataclass
class Result:
    gallery: Gallery  # the input, its reconstruction, the result, the SDEdit baseline
    metrics: dict = field(default_factory=dict)  # PSNR/SSIM rows, the latent's statistics, CLIP similarities
    latent_maps: Gallery = field(default_factory=list)  # x_t0 and eps_t maps: grey 0, black/white -+3 sigma
    stopped: bool = False


def resolution(model_id: str) -> int | None:
    """The image size of a model: from the registry, or by loading a local model (cached); None if it cannot load."""
    info = registry.REGISTRY.get(model_id)
    if info is not None:
        return info.resolution
    try:
        return loading.load_diffusion(model_id).unet.config.sample_size
    except loading.ModelLoadError:
        return None


def target_choices(source_id: str | None) -> list[str]:
    """The models that can decode a latent of `source_id`: the others of the same resolution (the hub DDPMs of one
    resolution share one noise schedule; the pipeline checks the schedule again at run time)."""
    size = resolution(source_id) if source_id else None
    return [m for m in registry.diffusion_model_ids() if m != source_id and size is not None and resolution(m) == size]


def class_labels(settings: Settings) -> dict[str, int]:
    """The pipeline's class_labels / target_class_labels indices of the source and target class names."""
    names = class_names(settings.source_id)
    if not names:
        example = next(m for m, info in registry.REGISTRY.items() if info.class_names)
        raise ValueError(f"{settings.source_id} has no classes, so it cannot translate between them. Class translation "
                         f"needs a class-conditional model, e.g. {example} ({', '.join(class_names(example))}).")
    for what, name in (("source", settings.source_class), ("target", settings.target_class)):
        if name not in names:
            raise ValueError(f"Pick the {what} class from {settings.source_id}'s classes: {', '.join(names)}; "
                             f"got {name!r}.")
    return {"class_labels": names.index(settings.source_class),
            "target_class_labels": names.index(settings.target_class)}


def check_mode(settings: Settings) -> None:
    """The mode's own settings, before any model work."""
    if settings.mode not in MODES:
        raise ValueError(f"Pick a mode: {', '.join(MODES)} (reconstruct, translate to another model, text edit by "
                         f"CLIP guidance, class translation); got {settings.mode!r}.")
    if settings.mode == "translate":
        if not settings.target_id:
            raise ValueError("Pick a target model of the same resolution as the source model.")
        settings.target_id = offered_model(settings.target_id)
    settings.target_prompt = check_text(settings.target_prompt, "The target text")
    settings.source_prompt = check_text(settings.source_prompt, "The source text")
    if settings.mode == "text":
        if not settings.target_prompt:
            raise ValueError("Write the target text (what the edited image should show).")
        if not 0 <= settings.guidance_scale <= MAX_GUIDANCE_SCALE:
            raise ValueError(f"The CLIP guidance scale s must be from 0 to {MAX_GUIDANCE_SCALE}; "
                             f"got {settings.guidance_scale}.")
        if settings.step_size is None:
            raise ValueError("Write a Langevin step size λ (e.g. 0.001).")


def decoding_kwargs(settings: Settings) -> dict:
    """What the mode asks of the decoding: a target model, target class or text guidance."""
    if settings.mode == "class":
        return class_labels(settings)
    if settings.mode == "translate":
        target = loading.load_diffusion(settings.target_id)
        return dict(target_unet=target.unet, target_scheduler=loading.make_scheduler(target))
    if settings.mode == "text":
        return dict(clip=loading.load_clip().judge, target_prompt=settings.target_prompt,
                    source_prompt=settings.source_prompt or None, guidance_scale=settings.guidance_scale,
                    gradient="exact" if settings.exact_gradient else "fixed_eps",
                    plug_and_play_steps=settings.pnp_steps, step_size=settings.step_size)
    return {}


def pipeline(model_id: str) -> CycleDiffusionPipeline:
    model = loading.load_diffusion(model_id)
    pipe = CycleDiffusionPipeline(unet=model.unet, scheduler=loading.make_scheduler(model))
    pipe.set_progress_bar_config(disable=True)  # the Tracker reports progress
    return pipe


def with_ddib(settings: Settings) -> bool:
    """The DDIB baseline decodes with a model or a class (deterministic DDIM has no CLIP guidance here)."""
    return settings.ddib and settings.mode in ("translate", "class")


def total_steps(settings: Settings, pipe: CycleDiffusionPipeline) -> int:
    """The pipeline's steps, and DDIB's inversion and decoding (one chain each) when asked."""
    chain = chain_length(settings.steps, settings.strength)
    return pipe.total_steps(num_inference_steps=settings.steps, strength=settings.strength,
                            plug_and_play_steps=settings.pnp_steps if settings.mode == "text" else 0,
                            translate_or_edit=settings.mode != "reconstruct",
                            sdedit_baseline=settings.sdedit) + 2 * chain * with_ddib(settings)


def cost(settings: Settings, pipe: CycleDiffusionPipeline | None = None) -> Cost:
    """Every step of the pipeline is one U-Net evaluation; back-propagated through the U-Net in an exact
    CLIP-guided decoding (the result's and the baseline's) and through the whole chain at every Langevin step."""
    settings = validated(settings, model_field="source_id")
    pipe = pipe or pipeline(settings.source_id)
    steps = total_steps(settings, pipe)
    if settings.mode != "text":
        return Cost(settings.source_id, (Work(steps),))
    chain = chain_length(settings.steps, settings.strength)
    decodings = (1 + int(settings.sdedit)) * chain if settings.exact_gradient and not settings.pnp_steps else 0
    plain, grad = steps - settings.pnp_steps - decodings, decodings + settings.pnp_steps * chain
    return Cost(settings.source_id, (Work(plain), Work(grad, grad=True)))


def latent_maps(latent) -> list[tuple]:
    """z = (x_t0, eps_t0, ..., eps_1) of the first image: x_t0 and LATENT_MAPS noise maps spread over the chain."""
    maps = [(noise_image(latent.x_t0[0]), f"x_t0, t0 = {latent.t0}")]
    return maps + [(noise_image(latent.eps[k][0]), f"ε at t = {int(latent.timesteps[k])}")
                   for k in evenly(len(latent.timesteps), LATENT_MAPS)]


def metrics(settings: Settings, image, out, clip, deterministic=None) -> dict:
    """Faithfulness (PSNR, SSIM to the input) of each output, the latent's statistics and CLIP's similarities."""
    rows = {"reconstruction": faithfulness(image, out.reconstructions[0])}
    if settings.mode != "reconstruct":
        rows["result"] = faithfulness(image, out.images[0])
    if settings.sdedit:
        rows["SDEdit baseline (fresh noise)"] = faithfulness(image, out.sdedit_images[0])
    if deterministic is not None:
        rows["DDIB baseline (deterministic)"] = faithfulness(image, deterministic)
    found = {"rows": rows, "t0": out.latent.t0, "tensors": 1 + len(out.latent.timesteps),
             "size": image.size, "z": out.latent.statistics()}
    if clip is not None:
        found["clip"] = {"text": settings.target_prompt,
                         "reconstruction": clip_similarity(clip, out.reconstructions[0], settings.target_prompt),
                         "edit": clip_similarity(clip, out.images[0], settings.target_prompt)}
    return found


def prepare(settings: Settings) -> Job:
    """The mode, the pipeline, the image at the model's size and the decoding's arguments checked, before any
    sampling."""
    check_mode(settings)
    pipe = pipeline(settings.source_id)
    image = picture(settings.image, pipe.unet.config.sample_size)
    kwargs = decoding_kwargs(settings)
    chain = dict(strength=settings.strength, eta=settings.eta, num_inference_steps=settings.steps)
    pipe.check_inputs(image=image, output_type="pil", **chain, **kwargs)

    def work(tracker: base.Tracker) -> Result:
        out = pipe(image, generator=make_generator(settings.seed), callback=tracker, sdedit_baseline=settings.sdedit,
                   **chain, **kwargs)
        deterministic = ddib_baseline(settings, pipe, image, kwargs, tracker.offset(tracker.step))
        captions = {"translate": settings.target_id, "text": f"“{settings.target_prompt}”",
                    "class": f"{settings.source_class} → {settings.target_class}"}
        same = (f"G(z | {settings.source_class}) (same class)" if settings.mode == "class"
                else "G1(z) (same model)")
        gallery = [(image, "input"), (out.reconstructions[0], f"reconstruction {same}")]
        if settings.mode != "reconstruct":
            gallery.append((out.images[0], f"{MODES[settings.mode]}: {captions[settings.mode]}"))
        if settings.sdedit:
            gallery.append((out.sdedit_images[0],
                            "SDEdit baseline: the same x_t0, fresh noise instead of the encoded ε"))
        if deterministic is not None:
            gallery.append((deterministic, "DDIB baseline: deterministic DDIM inversion to t0, then decoding"))
        return Result(gallery, metrics(settings, image, out, kwargs.get("clip"), deterministic),
                      latent_maps(out.latent))

    lightest = Settings(source_id=settings.source_id, mode=settings.mode, strength=MIN_STRENGTH, steps=MIN_STEPS,
                        sdedit=False)
    return Job(loading.load_diffusion(settings.source_id), cost(settings, pipe), cost(lightest, pipe),
               "the steps, the strength or the Langevin steps (or turn off the exact CLIP gradient or the SDEdit "
               "baseline)", total_steps(settings, pipe), f"CycleDiffusion: {MODES[settings.mode]}", work,
               lambda tracker: Result([(image, "input")] + tracker.stopped(), stopped=True), settings.preview_every)


def run(settings: Settings, *, callback: Callback | None = None, stop: threading.Event | None = None) -> Result:
    """The input, its reconstruction, the result (and the SDEdit and DDIB baselines), the metrics, and the latent z."""
    return base.run(prepare, settings, callback=callback, stop=stop, model_field="source_id")


def ddib_baseline(settings: Settings, pipe: CycleDiffusionPipeline, image, kwargs: dict, callback):
    """DDIB's translation of the image (Su et al. 2023): what a deterministic latent gives, beside the stochastic."""
    if not with_ddib(settings):
        return None
    return ddib(pipe.unet, pipe.scheduler, image, target_unet=kwargs.get("target_unet"),
                target_scheduler=kwargs.get("target_scheduler"), class_labels=kwargs.get("class_labels"),
                target_class_labels=kwargs.get("target_class_labels"), strength=settings.strength,
                num_inference_steps=settings.steps, callback=callback).images[0]
