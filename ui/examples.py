"""A tab's examples, live or cached.

The bundled models' examples always run live: a few seconds on a CPU, with the streaming that shows the image form.
The hub models' examples take minutes on a CPU and tens of seconds on a GPU, so where compute is scarce they are
cached lazily: the first visitor who picks one runs it, and every later visitor sees that result at once. They are
cached on GPU hardware (a CUDA device, or ZeroGPU), and on a CPU only when STEER_CACHE_EXAMPLES=1
(STEER_CACHE_EXAMPLES=0 turns caching off everywhere).

A cached result is served only to the code and models that made it: each table's cache lies in a folder named by a
digest of the app's source (app.py, ui/, runners/, pipelines/), its assets (the bundled models' weights, the example
images, the bundled directions) and the versions of torch, diffusers, transformers and gradio, under Gradio's
GRADIO_EXAMPLES_CACHE. A change to any of them starts an empty cache; the old folder is never read again.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import re
from importlib import metadata
from pathlib import Path
from typing import Callable

import gradio as gr

from runners import common
from runners.budget import device_name

from . import gpu

ROOT = Path(__file__).resolve().parents[1]  # the repository
SOURCES = ("app.py", "ui", "runners", "pipelines", "assets")  # what makes an example's result, besides the libraries
LIBRARIES = ("torch", "diffusers", "transformers", "gradio")


def caching() -> bool:
    """Whether the hub models' examples are cached: STEER_CACHE_EXAMPLES=1 or 0 where set, else on GPU hardware."""
    if "STEER_CACHE_EXAMPLES" in os.environ:
        return os.environ["STEER_CACHE_EXAMPLES"].strip().lower() in ("1", "true", "yes")
    return gpu.ZERO_GPU or device_name() != "CPU"


@functools.cache
def digest() -> str:
    """The cache's key: a digest of every file under SOURCES and of the LIBRARIES' versions."""
    sha = hashlib.sha256()
    for source in SOURCES:
        root = ROOT / source
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                sha.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    for library in LIBRARIES:
        sha.update(f"{library}=={metadata.version(library)}\n".encode())
    return sha.hexdigest()[:16]


def cache_folder(label: str) -> Path:
    """Where the examples table called `label` keeps its results: GRADIO_EXAMPLES_CACHE / digest / the label's slug."""
    root = Path(os.environ.get("GRADIO_EXAMPLES_CACHE", ".gradio/cached_examples"))
    return root / digest() / re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:60]


def add(rows: list[list], fields: tuple[str, ...], components: dict[str, gr.components.Component], *,
        model_field: str, label: str, run: Callable, outputs: list, fill: tuple[Callable, list] | None = None) -> None:
    """The examples `rows` (values of `fields`, components[field] showing each) as one table for the bundled models,
    which fills the tab, and one for the hub models, which on GPU hardware also shows its cached result in `outputs`
    (the endpoint `run`, called with the row's settings and the defaults for the rest). `fill` = (fn, its outputs)
    makes the menus that an example fills match it (their choices)."""
    column, keep = fields.index(model_field), caching()
    inputs = [components[name] for name in fields]
    kept_rows = [row for row in rows if keep and not common.bundled(row[column])]
    live_rows = [row for row in rows if row not in kept_rows]
    filled = dict(fn=fill[0], outputs=fill[1], run_on_click=True) if fill else {}
    if live_rows:
        gr.Examples(live_rows, inputs, label=label, cache_examples=False, **filled)
    if kept_rows:
        kept_label = label + " (kept: the first visitor's run, shown to the next at once)"
        table = gr.Examples(kept_rows, inputs, outputs=outputs, fn=settings_run(run, fields), cache_examples=True,
                            cache_mode="lazy", label=kept_label)
        folder = table.cached_folder = cache_folder(kept_label)  # keyed by the code and models (the module's docstring)
        table.cached_file, table.cached_indices_file = folder / "log.csv", folder / "indices.csv"
        if fill:
            table.cache_event.then(fill[0], inputs, fill[1], api_visibility="private")


def settings_run(run: Callable, fields: tuple[str, ...]) -> Callable:
    """The endpoint `run` called with an example row: its values by field name (fields that are no setting, as the
    canvas of a drawn reference, left out), every other setting at its default."""
    settings = set(inspect.signature(run).parameters)

    def example(*values):
        return run(**{name: value for name, value in zip(fields, values) if name in settings})

    example.__name__ = f"{run.__name__}_example"
    return example
