"""The files a result is shown and taken home with: each gallery image a PNG of its own, folders per request,
all removed after OUTPUT_MAX_AGE_S."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

from PIL import Image

from runners.common import upscale_for_display

OUTPUT_DIR = Path(tempfile.mkdtemp(prefix="steer-outputs-"))
OUTPUT_MAX_AGE_S = 900


def display(image: Image.Image) -> str:
    """A gallery item: the image (small samples enlarged with nearest neighbour) as a PNG file of its own.

    Gradio copies a returned file into its cache atomically (write, then rename), whereas it rewrites a returned
    PIL image in place under its content hash, so a concurrent download of an identical image (twenty students
    running the same example) could read it half-written.
    """
    remove_old_outputs()
    path = OUTPUT_DIR / f"{uuid.uuid4().hex}.png"
    upscale_for_display(image).save(path)
    return str(path)


def gallery(items) -> list[tuple[str, str]]:
    """A runner's (image, caption) pairs as gallery items."""
    return [(display(image), caption) for image, caption in items]


def output_folder() -> Path:
    """A new folder in OUTPUT_DIR for one request's files."""
    remove_old_outputs()
    return Path(tempfile.mkdtemp(dir=OUTPUT_DIR))


def remove_old_outputs() -> None:
    """Files and folders in OUTPUT_DIR older than OUTPUT_MAX_AGE_S go (Gradio has its copies by then)."""
    now = time.time()
    for old in OUTPUT_DIR.iterdir():
        try:
            if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        except FileNotFoundError:  # removed by a concurrent request
            pass
