"""What every runner shares: the checks of settings, the generator, the bounded caches, the model menu.

Free of Gradio: the page, the API, a settings file and the command line all reach the pipelines through here, so a
bad value gets the same ValueError (the page shows it as a gr.Error) whichever way it came.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable

import torch
from PIL import Image

from pipelines.core import images
from pipelines.models import registry
from pipelines.core.images import heat_image, noise_image, upscale_for_display
from pipelines.models.loading import ModelLoadError

MAX_SEED = 2**31 - 1
MAX_PROMPTS = 16  # label prompts per request
MAX_TEXT_CHARS = 300  # a text edit's or a direction's source and target text
MAX_PREVIEW_EVERY = 100
PREVIEWS_PER_RUN = 10  # a run shows its predicted clean images about this many times before its result

Gallery = list[tuple[Image.Image, str]]
# callback(done, total, desc, preview): `done` of `total` sampler steps finished; `preview`, every few steps, the
# predicted clean images of the latest step (else None)
Callback = Callable[[int, int, str, "Gallery | None"], None]


def offered_model(model_id) -> str:
    """`model_id` if the page offers it (a registry model, or the operator's STEER_MODEL), else a ValueError that is
    the same whatever the id names on the server: a request never loads a path."""
    offered = registry.diffusion_model_ids()
    if model_id not in offered:
        raise ValueError(f"Unknown model; use one of: {', '.join(offered)}.")
    return model_id


def check_text(text, what: str) -> str:
    """A text box's value, stripped, at most MAX_TEXT_CHARS characters."""
    text = (text if isinstance(text, str) else "").strip()
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"{what} is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}.")
    return text


def parse_prompts(text) -> list[str]:
    """The non-empty lines of a label-prompt box: at most MAX_PROMPTS, each at most MAX_TEXT_CHARS characters
    (CLIP's 77-token limit is checked when CLIP reads them, ClipJudge.check_prompts)."""
    text = text if isinstance(text, str) else ""
    if len(text) > MAX_PROMPTS * (MAX_TEXT_CHARS + 1):
        raise ValueError(f"The label prompts are {len(text)} characters long; write at most {MAX_PROMPTS} short lines.")
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"{len(prompts)} label prompts; use at most {MAX_PROMPTS}.")
    return [check_text(prompt, "A label prompt") for prompt in prompts]


def check_seed(seed) -> int:
    if seed is None or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"the seed must be a whole number from 0 to {MAX_SEED}")
    return int(seed)


def make_generator(seed) -> torch.Generator:
    """A CPU generator: the same seed draws the same noise on every device."""
    return torch.Generator("cpu").manual_seed(check_seed(seed))


def check_preview_every(k) -> int:
    if k is None or not 0 <= int(k) <= MAX_PREVIEW_EVERY:
        raise ValueError(f"Preview every k steps: k must be from 0 (automatic) to {MAX_PREVIEW_EVERY}; got {k}.")
    return int(k)


def picture(path, size: int, what: str = "an image") -> Image.Image:
    """An uploaded picture at a model's size (centre crop, resize), judged by pipelines.core.images."""
    if not path:
        raise ValueError(f"Upload {what} first (or pick one of the examples below).")
    return images.center_crop_resize(images.open_image(path), size)


def evenly(total: int, count: int) -> list[int]:
    """`count` step indices spread evenly over 0..total-1, both ends included."""
    return sorted({round(i * (total - 1) / max(1, count - 1)) for i in range(count)}) if count else []


class BoundedCache:
    """At most `size` values, the least recently used dropped first; safe across the server's threads. A value is
    computed outside the lock (two requests may compute the same one; the second is kept)."""

    def __init__(self, size: int):
        self.size, self._values, self._lock = size, OrderedDict(), threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._values

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def get(self, key: Hashable, compute: Callable[[], object]):
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = compute()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value


def class_names(model_id: str | None) -> tuple[str, ...]:
    """The names of a class-conditional model's class labels (the null class left out); () for an unconditional or
    unknown model."""
    info = registry.REGISTRY.get(model_id or "")
    return info.class_names if info is not None else ()


def bundled(model_id: str) -> bool:
    """A model that ships with the Space, under assets/ (runs offline on a CPU in seconds)."""
    info = registry.REGISTRY.get(model_id)
    return info is not None and bool(info.path)


def default_model() -> str:
    """The model the page opens on: STEER_MODEL, else the hub's celebahq on a GPU that can serve it, else faces-32."""
    return registry.default_model_id()


def model_choices() -> list[tuple[str, str]]:
    """The diffusion models the page offers, as (label, id): "faces-32 — cartoon faces ..., 32px"."""
    def label(model_id: str) -> str:
        info = registry.REGISTRY.get(model_id)
        return f"{model_id} — {info.domain}, {info.resolution}px" if info else f"{model_id} (local)"

    return [(label(m), m) for m in registry.diffusion_model_ids()]
