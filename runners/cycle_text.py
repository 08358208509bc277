"""CycleDiffusion's zero-shot text edit on a text-to-image model: encode a photo under a source prompt with the
DPM-Encoder, decode the same latent under a target prompt, optionally with cross-attention control
(pipelines.StableCycleDiffusionPipeline)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

from pipelines import StableCycleDiffusionPipeline
from pipelines.models import loading, registry
from pipelines.cycle_diffusion.ddib import text_ddib
from pipelines.core.images import pil_to_tensor
from pipelines.core.metrics import clip_similarity, directional_clip, faithfulness
from pipelines.models.text_to_image import load_text_to_image

from training.captions import read_attributes

from . import base
from .base import Job, validated
from .budget import Cost, Work
from .common import Callback, Gallery, check_text, evenly, heat_image, make_generator, noise_image, picture

TAB = "cycle_text"
PICTURES, FILES = {"image": "model_id"}, ()
CONTROLS = ("none", "replace", "refine")  # cross-attention control: off, a word swap, the target adds words
MIN_STEPS, MIN_STRENGTH = 10, 0.1
SDEDIT, DDIB = "SDEdit baseline (fresh noise)", "DDIB baseline (deterministic)"
BUNDLED = "faces-text-32"  # its faces are read back by the generator's measurement (training.captions)
MAX_GUIDANCE_SCALE = 20
LATENT_MAPS = 3


@dataclass
class Settings:
    """Every knob of a text edit (the names are the /cycle_text endpoint's parameters)."""

    image: str | None = None
    model_id: str | None = None  # a text-to-image model the page offers (None: the first)
    source_prompt: str = ""  # what the photo shows
    prompt: str = ""  # what the edit should show
    strength: float = 0.8  # t0 = strength x T
    steps: int = 50
    guidance_scale: float = 2.0  # the target's classifier-free guidance
    source_guidance_scale: float = 1.0  # the source's, when encoding
    eta: float = 0.1
    control: str = "none"
    cross_replace_steps: float = 0.8  # the share of steps whose cross-attention follows the source's
    self_replace_steps: float = 0.4  # the share whose self-attention does
    reweight_word: str = ""  # a target word whose attention is scaled ...
    reweight_scale: float = 1.0  # ... by this
    attention_step: int = 1  # the step (1-based, of the chain) whose per-word attention maps are shown
    seed: int = 0
    sdedit: bool = True  # also decode the SDEdit baseline: the same x_t0, fresh noise
    preview_every: int = 0
    ddib: bool = False  # also the DDIB baseline: deterministic DDIM inversion to t0, decoded under the target prompt


@dataclass
class Result:
    gallery: Gallery  # the input, the edit, the SDEdit and DDIB baselines
    attention: Gallery = field(default_factory=list)  # one map per word, source then target
    latent_maps: Gallery = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    note: str = ""
    stopped: bool = False


def offered() -> list[str]:
    return registry.text_to_image_model_ids()


def default_model() -> str:
    """Stable Diffusion 1.4 on a GPU; the bundled faces-text-32, which runs in seconds on a CPU, elsewhere."""
    return "CompVis/stable-diffusion-v1-4" if loading.device_and_dtype()[0].type == "cuda" else BUNDLED


def check(settings: Settings) -> Settings:
    """The settings of a text edit, before any model work: a ValueError says what is allowed."""
    settings = validated(settings, model_field=None)
    settings.model_id = settings.model_id or default_model()
    if settings.model_id not in offered():
        raise ValueError(f"Unknown text-to-image model; use one of: {', '.join(offered())}.")
    settings.source_prompt = check_text(settings.source_prompt, "The source prompt")
    settings.prompt = check_text(settings.prompt, "The target prompt")
    if not settings.source_prompt or not settings.prompt:
        raise ValueError("Write both prompts: the source prompt (what the photo shows) and the target prompt (what "
                         "the edit should show), e.g. “a photo of a horse” → “a photo of an elephant”.")
    if settings.control not in CONTROLS:
        raise ValueError(f"Pick a cross-attention control: {', '.join(CONTROLS)}; got {settings.control!r}.")
    if not all(0 <= s <= MAX_GUIDANCE_SCALE for s in (settings.guidance_scale, settings.source_guidance_scale)):
        raise ValueError(f"The guidance scales must be from 0 to {MAX_GUIDANCE_SCALE}.")
    return settings


def pipeline(model_id: str) -> StableCycleDiffusionPipeline:
    """This request's pipeline over the model's shared components, with a scheduler of its own."""
    pipe = StableCycleDiffusionPipeline(**load_text_to_image(model_id).components())
    pipe.set_progress_bar_config(disable=True)  # the Tracker reports progress
    return pipe


def picture_size(model_id: str) -> int:
    """The side of the model's images: its latents' times the VAE's factor (512 for Stable Diffusion)."""
    pipe = pipeline(model_id)
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def pipe_kwargs(settings: Settings, pipe) -> dict:
    """__call__'s arguments for the settings."""
    steps = pipe.total_steps(num_inference_steps=settings.steps, strength=settings.strength)
    return dict(prompt=settings.prompt, source_prompt=settings.source_prompt, strength=settings.strength,
                num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                source_guidance_scale=settings.source_guidance_scale, eta=settings.eta,
                cross_attention_control=None if settings.control == "none" else settings.control,
                cross_replace_steps=settings.cross_replace_steps, self_replace_steps=settings.self_replace_steps,
                reweight=(settings.reweight_word, settings.reweight_scale) if settings.reweight_word.strip() else None,
                attention_map_step=min(max(settings.attention_step, 1), max(steps, 1)) - 1)


def cost(settings: Settings, pipe=None) -> Cost:
    """Per step of the chain, one U-Net evaluation of the source and the target chain together, each doubled under
    classifier-free guidance (a batch of four); the SDEdit baseline decodes the target alone, the DDIB baseline inverts
    and then decodes it. (The VAE's encode and decode are not counted: a few U-Net steps' worth.)"""
    settings = check(settings)
    pipe = pipe or pipeline(settings.model_id)
    steps = pipe.total_steps(num_inference_steps=settings.steps, strength=settings.strength)
    guided = 2 if settings.guidance_scale > 1 else 1
    work = [Work(steps, 2 * guided)] + ([Work(steps, guided)] if settings.sdedit else [])
    if settings.ddib:  # the inversion (guided only when the source's scale is > 1), then the decoding
        work += [Work(steps, guided if settings.source_guidance_scale > 1 else 1), Work(steps, guided)]
    return Cost(settings.model_id, tuple(work))


def word_maps(maps) -> Gallery:
    """The per-word cross-attention maps of the first image, source then target, white at each one's maximum."""
    if not maps:
        return []
    return [(heat_image(m), f"{side}: “{word}”") for side in ("source", "target") for word, m in maps[0][side]]


def metrics(settings: Settings, image, edited, baselines: dict) -> dict:
    """PSNR and SSIM to the input of the edit and the baseline; on the bundled faces the attributes each one reads as
    (training.captions.read_attributes), elsewhere CLIP similarity to the target prompt and CLIP's directional
    similarity when CLIP is available here."""
    outputs = {"edit": edited, **baselines}
    found = {"rows": {name: faithfulness(image, out) for name, out in outputs.items()}}
    if settings.model_id == BUNDLED:
        found["read"] = {name: read_attributes(pil_to_tensor(out)[0])
                         for name, out in {"input": image, **outputs}.items()}
        return found
    try:
        clip = loading.load_clip().judge
    except loading.ModelLoadError:
        return found
    found["clip"] = {name: {"similarity": clip_similarity(clip, out, settings.prompt),
                            "directional": directional_clip(clip, image, out, settings.source_prompt, settings.prompt)}
                     for name, out in outputs.items()}
    return found


def prepare(settings: Settings) -> Job:
    """The settings, the pipeline and the photo at the model's size checked, before any sampling."""
    settings = check(settings)
    pipe = pipeline(settings.model_id)
    image = picture(settings.image, pipe.unet.config.sample_size * pipe.vae_scale_factor, "a photo to edit")
    kwargs = pipe_kwargs(settings, pipe)
    pipe.check_inputs(image=image, **kwargs)
    steps = pipe.total_steps(num_inference_steps=settings.steps, strength=settings.strength)

    def work(tracker: base.Tracker) -> Result:
        out = pipe(image=image, generator=make_generator(settings.seed), callback=tracker, **kwargs)
        baselines = {}
        if settings.sdedit:
            baselines[SDEDIT] = pipe.decode(out.latent.with_fresh_noise(make_generator(settings.seed + 1)),
                                            settings.prompt, guidance_scale=settings.guidance_scale,
                                            callback=tracker.offset(steps)).images[0]
        if settings.ddib:
            baselines[DDIB] = text_ddib(pipe, image, settings.source_prompt, settings.prompt,
                                        strength=settings.strength, num_inference_steps=settings.steps,
                                        guidance_scale=settings.guidance_scale,
                                        source_guidance_scale=settings.source_guidance_scale,
                                        generator=make_generator(settings.seed),
                                        callback=tracker.offset(tracker.step)).images[0]
        flagged = any(out.nsfw_content_detected or [])
        gallery = [(image, f"input: “{settings.source_prompt}”"), (out.images[0], f"edit: “{settings.prompt}”")]
        labels = {SDEDIT: "SDEdit baseline: the same x_t0, fresh noise instead of the encoded ε",
                  DDIB: "DDIB baseline: deterministic DDIM inversion to t0, decoded under the target prompt"}
        gallery += [(shown, labels[name]) for name, shown in baselines.items()]
        latent = out.latent
        maps = [(noise_image(latent.x_t0[0, :3]), f"x_t0 (3 of {latent.x_t0.shape[1]} channels), t0 = {latent.t0}")]
        maps += [(noise_image(latent.eps[k][0, :3]), f"ε at t = {int(latent.timesteps[k])}")
                 for k in evenly(len(latent.timesteps), LATENT_MAPS)]
        note = ("⚠️ The safety checker flagged the edit; it was replaced by a black image. " if flagged else "")
        return Result(gallery, word_maps(out.attention_maps), maps,
                      metrics(settings, image, out.images[0], baselines), note)

    lightest = replace(settings, strength=MIN_STRENGTH, steps=MIN_STEPS, sdedit=False, ddib=False)
    return Job(load_text_to_image(settings.model_id), cost(settings, pipe), cost(lightest, pipe),
               "the steps or the strength (or untick the baselines)", steps * (1 + settings.sdedit + 2 * settings.ddib),
               "CycleDiffusion: text edit", work,
               lambda tracker: Result([(image, "input")] + tracker.stopped(), stopped=True), settings.preview_every)


def run(settings: Settings, *, callback: Callback | None = None, stop: threading.Event | None = None) -> Result:
    """The input, the edit (and the SDEdit and DDIB baselines), the per-word attention maps, the latent z and the
    metrics."""
    return base.run(prepare, settings, callback=callback, stop=stop, model_field=None)
