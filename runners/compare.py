"""One edit, every method (ALGORITHMS.md §7): the same face and the same goal (make it smile, or give it glasses), one
strength and one seed, through every method's own runner at its tab's defaults, each output read back from its pixels
by the faces' own measurement (training.captions.read_attributes), with what it kept, how faithful it stayed and what
it cost. It composes the runners: no method's math is here, and each cell is the image its own tab gives for the
settings the row names.

Methods on the bundled faces-32 (and the text edit on faces-text-32):
    ILVR with the target class (the input as the reference: Asyrp's "image guidance")
    classifier guidance from the input noised to t0, toward the target class (the bundled noise-aware classifier)
    classifier-free guidance from the same start (faces-32's own null class)
    SDEdit, DDIB and CycleDiffusion's class translation (one CycleDiffusion run gives the three)
    the text edit with cross-attention control (faces-text-32: Replace for the smile, Refine for the glasses)
    Asyrp: the bundled smile direction; for glasses, the mean difference of h between faces with and without glasses
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from pipelines import AsyrpPipeline, mean_difference_direction, save_direction
from pipelines.core import images
from pipelines.core.metrics import faithfulness
from pipelines.core.sampling import chain_length
from pipelines.models import loading

from training import faces
from training.captions import read_attributes
from training.faces_text_edits import held_out_faces, plain_caption

from . import asyrp, base, cycle, cycle_text, guidance, ilvr
from .base import Job, validated
from .budget import Cost, Work
from .common import BoundedCache, Callback, Gallery, picture

TAB = "compare"
PICTURES, FILES = {"image": "model_id"}, ()
MODEL, TEXT_MODEL = "faces-32", "faces-text-32"
GOALS = {"smile": "mouth", "glasses": "glasses"}  # the goal -> the attribute it changes
REACHED = {"smile": "smiling", "glasses": "glasses"}  # ... to this
SMILE = "assets/faces-32/directions/smile.safetensors"
GLASSES_FACES = 16  # faces with and without glasses whose mean h difference is the glasses direction
MAX_FACES = 32
METHODS = ("ILVR", "classifier guidance", "classifier-free guidance", "SDEdit", "DDIB", "CycleDiffusion",
           "text edit", "Asyrp")
glasses_directions = BoundedCache(2)  # model id -> the glasses direction's file, found once per model


@dataclass
class Settings:
    """Every knob of a comparison (the names are the /compare endpoint's parameters)."""

    image: str | None = None  # the input face (an upload is centre-cropped to 32 px)
    goal: str = "smile"  # "smile" (frowning -> smiling) or "glasses" (add glasses)
    strength: float = 0.6  # t0 = strength x T for the methods that start from the noised input
    seed: int = 0
    model_id: str = MODEL  # the model the methods share: the bundled faces-32 (the text edit uses faces-text-32)
    preview_every: int = 0


@dataclass
class MeasureSettings:
    """The comparison over held-out faces of the generator (the /compare_measure endpoint's parameters)."""

    goal: str = "smile"
    faces: int = 8
    strength: float = 0.6
    seed: int = 0
    model_id: str = MODEL


@dataclass
class Cell:
    """One method's answer: its image (None, with why, where it cannot reach the goal) and its row of the table."""

    method: str
    tab: str  # the tab (runner) that gives the same image for `settings`, at `index` of its result's gallery
    settings: dict
    index: int = 0
    image: Image.Image | None = None
    why: str = ""
    read: dict = field(default_factory=dict)  # the attributes read back from the image
    evaluations: int = 0  # U-Net evaluations
    seconds: float = 0.0


@dataclass
class Result:
    gallery: Gallery  # the input, then each method's output
    rows: list[dict] = field(default_factory=list)  # the table: one row per method
    cells: list[Cell] = field(default_factory=list)
    stopped: bool = False


def class_of(read: dict[str, str]) -> str:
    """faces-32's class of a face read back: its mouth, with glasses or without."""
    return read["mouth"] + (" with glasses" if read["glasses"] == "glasses" else "")


def target_of(read: dict[str, str], goal: str) -> dict[str, str]:
    """The attributes the goal asks for: the input's, with the mouth smiling or glasses on."""
    return {**read, GOALS[goal]: REACHED[goal]}


def prompts(read: dict[str, str], goal: str) -> tuple[str, str, str]:
    """The text edit's source and target captions of the face (the model's own caption template) and its control:
    the mouth's word swapped under Replace, or "glasses" added under Refine."""
    if goal == "smile":
        source = plain_caption(read)
        return source, source.replace(read["mouth"], "smiling", 1), "replace"
    source = plain_caption(read, glasses=False)
    return source, source.replace(" face with ", " face with glasses, ", 1), "refine"


def glasses_direction(model_id: str) -> str:
    """The file of the model's glasses direction: delta_h = E[h | glasses] - E[h | none] over GLASSES_FACES held-out
    faces each (the same faces but for the glasses), at the model's Asyrp interval; found once per model."""

    def find() -> str:
        model = loading.load_diffusion(model_id)
        pipe = AsyrpPipeline(unet=model.unet, scheduler=loading.make_scheduler(model))
        pipe.set_progress_bar_config(disable=True)
        drawn = faces.sample_faces(GLASSES_FACES, model.unet.config.sample_size, torch.Generator().manual_seed(7))
        on, off = (faces.render(faces.Faces(**{**asdict(drawn), "glasses": torch.full_like(drawn.glasses, v)}),
                                model.unet.config.sample_size) for v in (True, False))
        t_edit = asyrp.interval(model_id)[0]
        delta = mean_difference_direction(pipe, on, off, t_edit=t_edit, num_inference_steps=asyrp.Settings.steps)
        path = Path(tempfile.mkdtemp(prefix="glasses-")) / f"{model_id}-glasses.safetensors"
        return str(save_direction(path, delta, model_id=model_id, t_edit=t_edit,
                                  num_inference_steps=asyrp.Settings.steps, source="without glasses",
                                  target="with glasses", note="mean difference of h over 16 faces each"))

    return glasses_directions.get(model_id, find)


@dataclass
class Plan:
    """One runner call and the methods its result shows: method -> (gallery index, its own U-Net evaluations, None
    for the whole call's)."""

    runner: object
    settings: object
    shows: dict[str, tuple[int, int | None]]


def plans(settings: Settings, image: str, read: dict[str, str], direction: str) -> list[Plan]:
    """Every method's runner and settings for the comparison of `image`, read as `read`: the tab's defaults, the
    comparison's strength and seed; Asyrp's direction from the file `direction`."""
    source, target = class_of(read), class_of(target_of(read, settings.goal))
    s, seed, model = settings.strength, settings.seed, settings.model_id
    K = chain_length(cycle.Settings.steps, s)  # CycleDiffusion's chain: encode K, decode K
    text_source, text_target, control = prompts(read, settings.goal)
    t_edit, t_boost = asyrp.interval(model)
    return [
        Plan(ilvr, ilvr.Settings(image, model, samples=1, seed=seed, target_class=target), {"ILVR": (2, None)}),
        Plan(guidance, guidance.Settings(target=target, model_id=model, classifier_kind=guidance.NOISE_AWARE,
                                         scale=guidance.DEFAULT_SCALES[guidance.NOISE_AWARE], samples=1, seed=seed,
                                         sampler=guidance.default_sampler(model), compare=False, image=image,
                                         strength=s),
             {"classifier guidance": (1, None)}),
        Plan(guidance, guidance.Settings(target=target, model_id=model, classifier_kind=guidance.CLASSIFIER_FREE,
                                         scale=guidance.DEFAULT_SCALES[guidance.CLASSIFIER_FREE], samples=1,
                                         seed=seed, sampler=guidance.default_sampler(model), compare=False,
                                         image=image, strength=s),
             {"classifier-free guidance": (1, None)}),
        Plan(cycle, cycle.Settings(image, "class", model, strength=s, seed=seed, source_class=source,
                                   target_class=target, sdedit=True, ddib=True),
             {"SDEdit": (3, K), "DDIB": (4, 2 * K), "CycleDiffusion": (2, 2 * K)}),
        Plan(cycle_text, cycle_text.Settings(image, TEXT_MODEL, text_source, text_target, strength=s, seed=seed,
                                             control=control, sdedit=False), {"text edit": (1, None)}),
        Plan(asyrp, asyrp.Settings(image, model, "file", file_path=direction, strip=False, t_edit=t_edit,
                                   t_boost=t_boost, seed=seed), {"Asyrp": (2, None)}),
    ]


def row(cell: Cell, read: dict[str, str], goal: str, image: Image.Image) -> dict:
    """The table's row of a cell: the goal reached (the reader's verdict), the other attributes kept, faithfulness
    to the input, and cost."""
    if cell.image is None:
        return {"method": cell.method, "goal reached": "—", "kept": "—", "PSNR (dB)": "—", "SSIM": "—",
                "U-Net evaluations": "—", "seconds": "—", "note": cell.why}
    others = [k for k in read if k != GOALS[goal]]
    kept = sum(cell.read[k] == read[k] for k in others)
    close = faithfulness(image, cell.image)
    return {"method": cell.method, "goal reached": "yes" if cell.read[GOALS[goal]] == REACHED[goal] else "no",
            "kept": f"{kept} of {len(others)}", "PSNR (dB)": round(close["psnr"], 2), "SSIM": round(close["ssim"], 4),
            "U-Net evaluations": cell.evaluations, "seconds": round(cell.seconds, 1), "note": cell.why}


def check(settings: Settings) -> Settings:
    if settings.goal not in GOALS:
        raise ValueError(f"Pick a goal: {' or '.join(GOALS)} (frowning -> smiling, or add glasses); got "
                         f"{settings.goal!r}.")
    if not 0 < settings.strength <= 1:
        raise ValueError(f"The strength must be in (0, 1] (t0 = strength × T); got {settings.strength}.")
    if settings.model_id != MODEL:
        raise ValueError(f"The comparison reads each output back from its pixels, which only the bundled faces allow: "
                         f"its model is {MODEL} (the text edit's {TEXT_MODEL}); got {settings.model_id}.")
    return settings


ANY_FACE = {"mouth": "frowning", "glasses": "no glasses", "hair": "brown", "skin": "pale", "background": "blue"}


def cost(settings: Settings) -> Cost:
    """Every method's own cost at its tab's defaults and the comparison's strength, whatever the face (the glasses
    direction, found once per model, not counted)."""
    settings = check(validated(settings))
    work = [w for plan in plans(settings, settings.image or "input", ANY_FACE, SMILE)
            for w in plan.runner.cost(plan.settings).work]
    return Cost(settings.model_id, tuple(work))


def forwarded(callback: Callback | None, what: str) -> Callback | None:
    """A method's own progress and previews as the comparison's, its description saying `what` runs."""
    if callback is None:
        return None
    return lambda done, total, desc, preview: callback(done, total, f"{what}: {desc}", preview)


def compared(settings: Settings, image: Image.Image, path: str, callback: Callback | None,
             stop: threading.Event | None) -> Result:
    """Every method on the face (`image`, read from `path`), one runner call after another, each reporting to
    `callback` and ending at `stop`; a stopped call ends the comparison there."""
    read = read_attributes(images.pil_to_tensor(image)[0])
    direction = SMILE if settings.goal == "smile" else glasses_direction(settings.model_id)
    result, calls = Result([(image, f"input: {', '.join(read.values())}")]), plans(settings, path, read, direction)
    for k, plan in enumerate(calls):
        call = f"{k + 1} of {len(calls)}, {', '.join(plan.shows)}"
        began = time.perf_counter()
        try:
            out = plan.runner.run(plan.settings, callback=forwarded(callback, call), stop=stop)
        except ValueError as err:  # this method cannot run here: its cells say why, the others go on
            result.cells += [Cell(name, plan.runner.TAB, asdict(plan.settings), why=str(err)) for name in plan.shows]
            continue
        if out.stopped:
            result.stopped = True
            break
        seconds, evaluations = time.perf_counter() - began, plan.runner.cost(plan.settings).evaluations
        for name, (index, own) in plan.shows.items():
            shown = out.gallery[index][0]
            share = (own or evaluations) / evaluations
            result.cells.append(Cell(name, plan.runner.TAB, asdict(plan.settings), index, shown,
                                     read=read_attributes(images.pil_to_tensor(shown)[0]),
                                     evaluations=own or evaluations, seconds=seconds * share))
    result.gallery += [(cell.image, cell.method) for cell in result.cells if cell.image is not None]
    result.rows = [row(cell, read, settings.goal, image) for cell in result.cells]
    return result


def prepare(settings: Settings) -> Job:
    """The goal, the strength and the face checked; the methods' own checks run as each one starts."""
    settings = check(settings)
    model = loading.load_diffusion(settings.model_id)
    image = picture(settings.image, model.unet.config.sample_size, "a face")
    return Job(model, cost(settings), None, "the strength", len(METHODS), f"one edit, every method: {settings.goal}",
               lambda tracker: compared(settings, image, settings.image, tracker.callback, tracker.stop),
               lambda tracker: Result([(image, "input")], stopped=True), settings.preview_every)


def run(settings: Settings, *, callback: Callback | None = None, stop: threading.Event | None = None) -> Result:
    """The input, each method's output and the table of what each reached, kept and cost."""
    return base.run(prepare, settings, callback=callback, stop=stop)


# ----------------------------------------------------------------------------------------------- over N faces


@dataclass
class Measured:
    """The comparison over held-out faces: per method its rates and means, and the faces where it missed the goal."""

    table: list[dict]  # one row per method
    failures: Gallery  # (the face, then the method's output) for every face where the method missed the goal
    faces: int = 0  # how many faces were compared
    figure: Image.Image | None = None  # rows: faces; columns: the input, then each method
    stopped: bool = False


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate k / n at 95%: (p + z^2/2n ± z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def rate(k: int, n: int) -> str:
    low, high = wilson(k, n)
    return f"{k}/{n} = {k / n:.0%} [{low:.0%}, {high:.0%}]" if n else "—"


def summary(results: list[Result], goal: str) -> list[dict]:
    """Per method over the faces: goal reached, every other attribute kept (each with its Wilson 95% interval), mean
    PSNR, SSIM, U-Net evaluations and seconds."""
    table = []
    for method in METHODS:
        rows = [r for result in results for r in result.rows if r["method"] == method and r["goal reached"] != "—"]
        n = len(rows)
        if not n:
            table.append({"method": method, "goal reached": "—", "all kept": "—", "mean PSNR (dB)": "—",
                          "mean SSIM": "—", "U-Net evaluations": "—", "mean seconds": "—"})
            continue
        reached = sum(r["goal reached"] == "yes" for r in rows)
        kept = sum(r["kept"].split(" of ")[0] == r["kept"].split(" of ")[1] for r in rows)
        mean = lambda key, digits: round(sum(r[key] for r in rows) / n, digits)  # noqa: E731
        table.append({"method": method, "goal reached": rate(reached, n), "all kept": rate(kept, n),
                      "mean PSNR (dB)": mean("PSNR (dB)", 2), "mean SSIM": mean("SSIM", 4),
                      "U-Net evaluations": mean("U-Net evaluations", 0), "mean seconds": mean("seconds", 1)})
    return table


def figure(results: list[Result]) -> Image.Image:
    """One row per face: the input, then each method's output (white where it gave none)."""
    rows = []
    for result in results:
        shown = {cell.method: cell.image for cell in result.cells}
        row_images = [result.gallery[0][0]] + [shown.get(m) or Image.new("RGB", result.gallery[0][0].size, "white")
                                              for m in METHODS]
        rows.append(row_images)
    side = rows[0][0].width
    sheet = Image.new("RGB", (side * len(rows[0]), side * len(rows)), "white")
    for i, row_images in enumerate(rows):
        for j, image in enumerate(row_images):
            sheet.paste(image.convert("RGB"), (j * side, i * side))
    return sheet


def measure_cost(settings: MeasureSettings) -> Cost:
    one = cost(Settings(goal=settings.goal, strength=settings.strength, seed=settings.seed, model_id=settings.model_id))
    return Cost(one.model_id, tuple(Work(w.evals * settings.faces, w.batch_size, w.grad) for w in one.work))


def prepare_measure(settings: MeasureSettings) -> Job:
    """The goal, the strength and the number of faces checked; the faces drawn, as the text edit's measurement draws
    them (frowning for the smile, without glasses for the glasses)."""
    check(Settings(goal=settings.goal, strength=settings.strength, model_id=settings.model_id))
    if not 1 <= settings.faces <= MAX_FACES:
        raise ValueError(f"Compare on 1 to {MAX_FACES} faces; got {settings.faces}.")
    from training.faces_text_edits import frowning, without_glasses

    pictures, _ = held_out_faces(settings.faces, settings.seed, frowning if settings.goal == "smile" else without_glasses)
    folder = Path(tempfile.mkdtemp(prefix="compare-faces-"))
    paths = []
    for i, face in enumerate(images.postprocess(pictures * 2 - 1)):
        paths.append(str(folder / f"face-{i:02d}.png"))
        face.save(paths[-1])
    results: list[Result] = []

    def work(tracker: base.Tracker) -> Measured:
        try:
            for i, path in enumerate(paths):
                one = Settings(path, settings.goal, settings.strength, settings.seed, settings.model_id)
                face = compared(one, Image.open(path).convert("RGB"), path,
                                forwarded(tracker.callback, f"face {i + 1} of {len(paths)}"), tracker.stop)
                if face.stopped:
                    return done(stopped=True)
                results.append(face)
            return done()
        finally:  # the faces live in the results now
            shutil.rmtree(folder, ignore_errors=True)

    def done(stopped: bool = False) -> Measured:
        failures = [(image, caption) for result in results for cell in result.cells
                    if cell.image is not None and cell.read[GOALS[settings.goal]] != REACHED[settings.goal]
                    for image, caption in ((result.gallery[0][0], f"face {results.index(result) + 1}"),
                                           (cell.image, f"{cell.method}: missed"))]
        return Measured(summary(results, settings.goal), failures, len(results),
                        figure(results) if results else None, stopped)

    return Job(loading.load_diffusion(settings.model_id), measure_cost(settings), None, "the number of faces",
               len(paths), f"every method on {len(paths)} faces", work, lambda tracker: done(stopped=True))


def measure(settings: MeasureSettings, *, callback: Callback | None = None,
            stop: threading.Event | None = None) -> Measured:
    """The comparison on `faces` held-out faces: each method's rates (Wilson 95%) and means, and its misses."""
    return base.run(prepare_measure, settings, callback=callback, stop=stop)
