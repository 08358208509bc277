"""h-space's properties (Kwon, Jeong & Uh, ICLR 2023, section 5) as views beside an Asyrp edit, each a small run on a
few images: homogeneity, linear combination, robustness and consistency (the probes are pipelines.asyrp.probes').
Each returns a Result: pictures, numbers and a one-line statement; on faces-32 the numbers include what
training.faces.measure reads back without a model (mouth curvature, whether an image is a well-formed face)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from pipelines import AsyrpPipeline
from pipelines.core import images
from pipelines.models import loading, registry
from pipelines.asyrp.pipeline import check_interval
from pipelines.asyrp.directions import load_direction
from pipelines.asyrp.probes import (NoisyDirection, RecordedDirection, additivity_gap, combination, cosine_matrix,
                                    first_row_shift, mean_off_diagonal, noise_shift, shifted_pipeline)
from pipelines.core.metrics import psnr
from training.faces import measure_batch

from . import base
from .asyrp import MAX_K, interval, pipeline, principal
from .base import Job, Tracker, validated
from .budget import Cost, Work
from .common import Callback, Gallery, heat_image, make_generator, picture

FACES = "faces-32"  # the model whose images training.faces.measure reads
DEFAULT_IMAGES = {FACES: "assets/faces", "shapes-16": "assets/shapes"}  # the bundled example images (*.png)
DEFAULT_DIRECTIONS = {FACES: "assets/faces-32/directions/smile.safetensors",
                      "shapes-16": "assets/shapes-16/directions/size.safetensors"}
MAX_IMAGES, MAX_GRID, MAX_NORMS = 16, 5, 4
GRID = (-1.0, 0.0, 1.0)  # linear combination: the scales s_1 (rows) and s_2 (columns)
NORMS = (0.01, 1.0, 4.0)  # robustness: noise norms as multiples of |s delta_h_t|
RISE = 0.05  # a mouth turns up when its measured curvature grows by more than this (a 1.5 px stroke reads within ~0.02)


@dataclass
class Settings:
    """What every view shares: the model, the images, the direction and the edit's interval."""

    model_id: str | None = None
    images: tuple = ()  # image paths; (): the model's bundled examples (faces-32: assets/faces)
    direction_file: str | None = None  # None: the model's bundled direction (faces-32: smile), if it has one
    k: int = 0  # 1..MAX_K: the k-th principal direction of h instead of a file
    scale: float = 1.0
    t_edit: int | None = None  # None: the model's Asyrp interval (pipelines.asyrp.interval.asyrp_interval)
    t_boost: int | None = None
    steps: int = 20
    seed: int = 0


@dataclass
class Result:
    pictures: Gallery  # (image, caption) at the model's size
    numbers: dict = field(default_factory=dict)  # plain floats, lists and dicts
    statement: str = ""  # one line: what the view shows
    stopped: bool = False


@dataclass
class Probe:
    """A view's validated settings, its pipeline, its images and its direction."""

    settings: Settings
    pipe: AsyrpPipeline
    x0: torch.Tensor  # (B,3,H,W) in [0,1]
    direction: object
    label: str

    def decode(self, x_T, direction, scale: float, tracker: Tracker, stage: int, pipe: AsyrpPipeline | None = None):
        """x_T (B,3,H,W) edited along `direction` at `scale` as the tracker's stage `stage`: (B,3,H,W) in [0,1]."""
        s = self.settings
        return (pipe or self.pipe)(x_T=x_T, direction=direction, scale=scale, t_edit=s.t_edit, t_boost=s.t_boost,
                                   num_inference_steps=s.steps, generator=make_generator(s.seed), output_type="pt",
                                   callback=tracker.offset(stage * s.steps)).images


def image_paths(settings: Settings) -> tuple:
    """The view's images: the settings' paths, else the model's bundled examples."""
    folder = DEFAULT_IMAGES.get(settings.model_id)
    found = sorted((registry.ROOT / folder).glob("*.png")) if folder else []
    paths = tuple(settings.images) or tuple(map(str, found))
    if not paths:
        raise ValueError(f"{settings.model_id} has no bundled example images for these views: pick "
                         f"{' or '.join(DEFAULT_IMAGES)}, or pass the images to the API (its images setting).")
    if len(paths) > MAX_IMAGES:
        raise ValueError(f"{len(paths)} images; the views take at most {MAX_IMAGES}.")
    return paths


def direction_of(source, model_id: str, pipe: AsyrpPipeline):
    """(direction, label) of a principal direction index k (int) or a direction file (path)."""
    if isinstance(source, (int, float)):
        source = int(source)
        if not 1 <= source <= MAX_K:
            raise ValueError(f"k must be from 1 to {MAX_K} (the principal directions kept per model); got {source}.")
        return principal(model_id)[source - 1], f"principal direction {source}"
    found, meta = load_direction(registry.ROOT / source, shape=pipe.h_shape, model_id=model_id)
    return found, f"{meta.get('source') or '?'} → {meta.get('target') or '?'}"


def first_source(settings: Settings):
    """The view's direction: principal k when k is set, else the file, else the model's bundled one, else k = 1."""
    return settings.k or settings.direction_file or DEFAULT_DIRECTIONS.get(settings.model_id) or 1


def filled(settings: Settings) -> Settings:
    """The settings validated, with the model's Asyrp interval where t_edit or t_boost is None."""
    settings = validated(settings)
    t_edit, t_boost = interval(settings.model_id)
    settings.t_edit = t_edit if settings.t_edit is None else int(settings.t_edit)
    settings.t_boost = t_boost if settings.t_boost is None else int(settings.t_boost)
    return settings


def edited_steps(settings: Settings, pipe: AsyrpPipeline) -> int:
    """E, the sampler's steps at t >= t_edit (the asymmetric ones)."""
    return int((pipe.ddim(settings.steps).timesteps >= settings.t_edit).sum())


def cost(settings: Settings, view: str, *, grid=GRID, norms=NORMS) -> Cost:
    """The inversion, then each decoding at its batch: an unedited one is `steps` U-Net evaluations, an edited one
    evaluates [x_t; x_t] (twice the batch) at its E asymmetric steps."""
    settings = filled(settings)
    B, E, n = len(image_paths(settings)), edited_steps(settings, pipeline(settings.model_id)), settings.steps
    plain, edited = {"homogeneity": ([B], [B, B]), "linear_combination": ([], [len(grid) ** 2]),
                     "robustness": ([B], [B * len(norms)] * 2), "consistency": ([], [B])}[view]
    work = [Work(n, 1 if view == "linear_combination" else B)] + [Work(n, b) for b in plain]
    return Cost(settings.model_id, tuple(work + [w for b in edited for w in (Work(n - E, b), Work(E, 2 * b))]))


def start(settings: Settings, view: str, stages: int, work: Callable[[Probe, Tracker], Result], callback, stop,
          **sizes) -> Result:
    """A view run by the one template: every check before model work (the images at the model's size), the budget,
    then `work(probe, tracker)` over the inversion and `stages` decodings, the direction read (or found) first."""

    def prepare(settings: Settings) -> Job:
        settings = filled(settings)
        pipe = pipeline(settings.model_id)
        check_interval(settings.t_edit, settings.t_boost, pipe.scheduler.config.num_train_timesteps)
        if edited_steps(settings, pipe) == 0:
            raise ValueError(f"t_edit = {settings.t_edit} is above every one of the {settings.steps} steps: nothing "
                             f"would be edited. Lower t_edit.")
        size = pipe.unet.config.sample_size
        x0 = torch.cat([images.pil_to_tensor(picture(path, size)) for path in image_paths(settings)])  # (B,3,H,W)
        pipe.check_inputs(image=x0, x_T=None, direction=None, scale=settings.scale, t_edit=settings.t_edit,
                          t_boost=settings.t_boost, num_inference_steps=settings.steps, output_type="pt")

        def probed(tracker: Tracker) -> Result:
            direction, label = direction_of(first_source(settings), settings.model_id, pipe)
            return work(Probe(settings, pipe, x0, direction, label), tracker)

        return Job(loading.load_diffusion(settings.model_id), cost(settings, view, **sizes), None,
                   "the number of images or the steps", settings.steps * (1 + stages),
                   f"h-space {view.replace('_', ' ')}", probed, halted)

    return base.run(prepare, settings, callback=callback, stop=stop)


def halted(tracker: Tracker) -> Result:
    """What a stopped view shows: the predicted clean images of its last step."""
    return Result(tracker.stopped(), statement="Stopped.", stopped=True)


def pil(x: torch.Tensor) -> list[Image.Image]:
    """(B,3,H,W) in [0,1] -> B PIL images."""
    return images.postprocess(x * 2 - 1)


def psnrs(x: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """PSNR (dB) of each image (B,3,H,W) to its reference (B,3,H,W), both in [0,1]."""
    return [round(psnr(a[None], b[None]), 2) for a, b in zip(x, reference)]


def curvatures(x: torch.Tensor) -> torch.Tensor:
    """Measured mouth curvature of each face (B,3,H,W) in [0,1]: (B,), nan where no mouth is found."""
    return torch.tensor([m.curvature for m in measure_batch(x)])


def well_formed(x: torch.Tensor) -> float:
    """The share of images (B,3,H,W) in [0,1] that measure as well-formed faces."""
    return round(sum(m.well_formed for m in measure_batch(x)) / len(x), 3)


def homogeneity(settings: Settings, *, callback: Callback | None = None,
                stop: threading.Event | None = None) -> Result:
    """Per image: the input, its reconstruction, the edit by delta_h, and the edit by image 1's delta_eps_t
    (eps_theta(x_t | h + delta_h) - eps_theta(x_t | h) measured on image 1 at each t, added to every image's eps)."""

    def work(probe: Probe, tracker: Tracker) -> Result:
        s = probe.settings
        x_T = probe.pipe.invert(probe.x0, num_inference_steps=s.steps, callback=tracker)
        rebuilt = probe.decode(x_T, None, 0.0, tracker, 1)
        by_h = probe.decode(x_T, probe.direction, s.scale, tracker, 2)
        by_eps = probe.decode(x_T, probe.direction, s.scale, tracker, 3, shifted_pipeline(probe.pipe, first_row_shift))
        pictures = []
        for b, row in enumerate(zip(pil(probe.x0), pil(rebuilt), pil(by_h), pil(by_eps))):
            pictures += zip(row, (f"image {b + 1}", "reconstruction", f"Δh, s = {s.scale:g}", "Δε of image 1"))
        numbers = {"psnr_to_reconstruction": {"delta_h": psnrs(by_h, rebuilt), "delta_eps": psnrs(by_eps, rebuilt)}}
        B, p = len(x_T), numbers["psnr_to_reconstruction"]
        if s.model_id != FACES:
            h, e = (sum(p[k][1:]) / max(1, B - 1) for k in ("delta_h", "delta_eps"))
            return Result(pictures, numbers, f"{probe.label}, s = {s.scale:g}: mean PSNR to the reconstruction of "
                                             f"images 2..{B}: Δh {h:.1f} dB, image 1's Δε {e:.1f} dB (lower: changed "
                                             f"more).")
        c = curvatures(rebuilt)
        change = {"delta_h": curvatures(by_h) - c, "delta_eps": curvatures(by_eps) - c}
        numbers["curvature_change"] = {k: [round(v, 3) for v in d.tolist()] for k, d in change.items()}
        numbers["mouths_up"] = up = {k: int((d > RISE).sum()) for k, d in change.items()}
        return Result(pictures, numbers, f"One Δh ({probe.label}) turns the mouth up on {up['delta_h']} of {B} faces; "
                                         f"face 1's Δε added to every face's ε does on {up['delta_eps']} of {B}.")

    return start(settings, "homogeneity", 3, work, callback, stop)


def linear_combination(settings: Settings, second: int | str | None = None, grid=GRID, *,
                       callback: Callback | None = None, stop: threading.Event | None = None) -> Result:
    """Image 1 edited by s_1 delta_h^1 + s_2 delta_h^2 (each at 1/sqrt(2), the official rule) on the grid of (s_1, s_2):
    rows s_1, columns s_2. second: a principal direction index or a direction file (None: the first principal
    direction that is not the view's own)."""
    grid = [float(g) for g in grid]
    if not 1 <= len(grid) <= MAX_GRID:
        raise ValueError(f"Give 1 to {MAX_GRID} scales for the grid; got {len(grid)}.")

    def work(probe: Probe, tracker: Tracker) -> Result:
        s = probe.settings
        other, other_label = direction_of(second or (2 if first_source(s) == 1 else 1), s.model_id, probe.pipe)
        cells = [(a, b) for a in grid for b in grid]
        mixed = combination([probe.direction, other], cells, s.steps)
        x_T = probe.pipe.invert(probe.x0[:1], num_inference_steps=s.steps, callback=tracker)
        x = probe.decode(x_T.expand(len(cells), -1, -1, -1), mixed, 1.0, tracker, 1)  # (G,3,H,W)
        pictures = [(image, f"s₁ = {a:+g}, s₂ = {b:+g}") for image, (a, b) in zip(pil(x), cells)]
        numbers = {"cells": [list(cell) for cell in cells], "columns": len(grid)}
        statement = (f"Δh₁ ({probe.label}) and Δh₂ ({other_label}) added at (s₁, s₂), each at s/√2 as the "
                     f"official code combines two: rows s₁, columns s₂.")
        if 0.0 in grid:
            numbers["additivity_gap"] = round(additivity_gap(dict(zip(cells, x))), 3)
            statement += f" The joint edits differ from the sums of single ones by {numbers['additivity_gap']:.0%}."
        if s.model_id == FACES:
            numbers["curvature"] = [round(v, 3) for v in curvatures(x).tolist()]
            numbers["well_formed"] = well_formed(x)
        return Result(pictures, numbers, statement)

    return start(settings, "linear_combination", 1, work, callback, stop, grid=grid)


def robustness(settings: Settings, norms=NORMS, *, callback: Callback | None = None,
               stop: threading.Event | None = None) -> Result:
    """Per image: its reconstruction, then random noise of norm m |s delta_h_t| (m in `norms`) put into h instead of
    delta_h_t, then noise of the same norm put into P_t's eps, fresh at every edited step."""
    norms = [float(m) for m in norms]
    if not 1 <= len(norms) <= MAX_NORMS or min(norms) <= 0:
        raise ValueError(f"Give 1 to {MAX_NORMS} positive noise norms (multiples of |Δh|); got {norms}.")

    def work(probe: Probe, tracker: Tracker) -> Result:
        s, B = probe.settings, len(probe.x0)
        multiples = torch.tensor(norms).repeat_interleave(B)  # (N*B,): row i*B + b is image b at norms[i]
        in_h = NoisyDirection(probe.direction, multiples, make_generator(s.seed), s.steps)
        in_eps = shifted_pipeline(probe.pipe, noise_shift(multiples, make_generator(s.seed)))
        x_T = probe.pipe.invert(probe.x0, num_inference_steps=s.steps, callback=tracker)
        rebuilt = probe.decode(x_T, None, 0.0, tracker, 1)
        rows = x_T.repeat(len(norms), 1, 1, 1)  # (N*B,3,H,W)
        by_h = probe.decode(rows, in_h, s.scale, tracker, 2)
        by_eps = probe.decode(rows, probe.direction, s.scale, tracker, 3, in_eps)
        noised = {"h": by_h.split(B), "eps": by_eps.split(B)}  # per space, one (B,3,H,W) per norm
        shown = {space: [pil(x) for x in chunks] for space, chunks in noised.items()}
        pictures = []
        for b, image in enumerate(pil(rebuilt)):
            pictures.append((image, f"image {b + 1}: reconstruction"))
            pictures += [(shown[space][i][b], f"noise in {name}, {m:g} |Δh|")
                         for space, name in (("h", "h"), ("eps", "ε")) for i, m in enumerate(norms)]
        mean_psnr = lambda chunks: [round(sum(psnrs(x, rebuilt)) / B, 2) for x in chunks]  # noqa: E731
        p = {space: mean_psnr(chunks) for space, chunks in noised.items()}
        numbers = {"norms": norms, "psnr_to_reconstruction": p}
        listed = lambda values, form: ", ".join(format(v, form) for v in values)  # noqa: E731
        statement = (f"Noise of {listed(norms, 'g')} × |Δh| in h: PSNR to the reconstruction "
                     f"{listed(p['h'], '.1f')} dB; the same noise in ε: {listed(p['eps'], '.1f')} dB")
        if s.model_id == FACES:
            w = {space: [well_formed(x) for x in chunks] for space, chunks in noised.items()}
            numbers["well_formed"] = {"reconstruction": well_formed(rebuilt), **w}
            statement += (f"; well-formed faces: {listed(w['h'], '.0%')} with noise in h, {listed(w['eps'], '.0%')} "
                          f"in ε")
        return Result(pictures, numbers, statement + ".")

    return start(settings, "robustness", 3, work, callback, stop, norms=norms)


def consistency(settings: Settings, *, callback: Callback | None = None,
                stop: threading.Event | None = None) -> Result:
    """The cosine similarity of delta_h_t between the edited timesteps, recorded along each image's edit and
    averaged over the images, as a heat map (white 1, black -1), with the edits."""

    def work(probe: Probe, tracker: Tracker) -> Result:
        s = probe.settings
        recorded = RecordedDirection(probe.direction, s.steps)
        x_T = probe.pipe.invert(probe.x0, num_inference_steps=s.steps, callback=tracker)
        edited = probe.decode(x_T, recorded, s.scale, tracker, 1)
        cos = cosine_matrix(recorded.record)  # (E,E)
        timesteps = [int(t) for t in probe.pipe.ddim(s.steps).timesteps if t >= s.t_edit]
        mean = round(mean_off_diagonal(cos), 4)
        pictures = [(heat_image((cos + 1) / 2), f"cos(Δh_t, Δh_t'), t = {timesteps[0]} … {timesteps[-1]} "
                                                f"(top left first): white 1, black −1")]
        pictures += [(image, f"image {b + 1}, Δh at s = {s.scale:g}") for b, image in enumerate(pil(edited))]
        numbers = {"timesteps": timesteps, "cosine": [[round(v, 4) for v in row] for row in cos.tolist()],
                   "mean_off_diagonal": mean}
        return Result(pictures, numbers, f"Δh_t of {probe.label} at {len(timesteps)} edited steps: mean cosine "
                                         f"between different steps {mean:.2f} (1: one direction at every t).")

    return start(settings, "consistency", 1, work, callback, stop)
