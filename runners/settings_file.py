"""A result taken home: a JSON of every setting and the seed (format steer-settings/2), with the input pictures
embedded at the model's size and direction files embedded whole, and a PNG strip of the result's images.

steer-settings/2 writes every choice as the runner's short id ("principal", "clip", "class"); a steer-settings/1 file
wrote some as the page's labels of the time, which reading it maps to their ids, so an old file reproduces its
result bit for bit.

The page writes it under a result and loads it back into its tab; `python -m runners reproduce` runs it.
A settings file never names a server path: picture and file settings come only from what the file embeds.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import asdict, fields
from pathlib import Path

from PIL import Image

from pipelines.core import images
from pipelines.models import loading

FORMAT = "steer-settings/2"
# the choices steer-settings/1 wrote as the page's labels: tab -> setting -> label -> id
V1_LABELS = {
    "asyrp": {"source": {"unsupervised (k-th principal direction)": "principal", "learn from two texts": "learned",
                         "load a direction file": "file", "released by the Asyrp authors": "released"}},
    "guidance": {"classifier_kind": {"noise-aware classifier of the model (trained on noisy x_t)": "classifier",
                                     "CLIP zero-shot over label prompts": "clip"}},
    "cycle": {"mode": {"text edit": "text", "class translation": "class"}},
}
MAX_BYTES = 8 * 2**20  # a settings file with its images and direction file
MAX_EMBEDDED_FILE_BYTES = 4 * 2**20  # a direction file embedded in settings (a 256 px f_t is 2.4 MB)
PNG_URL = "data:image/png;base64,"


def strip(pictures: list[Image.Image]) -> Image.Image:
    """The pictures side by side, top-aligned on white."""
    sheet = Image.new("RGB", (sum(p.width for p in pictures), max(p.height for p in pictures)), "white")
    x = 0
    for p in pictures:
        sheet.paste(p.convert("RGB"), (x, 0))
        x += p.width
    return sheet


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def diffusion_picture_size(model_id: str) -> int:
    """The side of a pixel DDPM's images."""
    return loading.load_diffusion(model_id).unet.config.sample_size


def document(runner, settings) -> dict:
    """The settings as a steer-settings/2 document: picture settings embedded at their model's size (`runner.PICTURES`
    names the setting holding that model), file settings (`runner.FILES`) embedded whole when small enough."""
    values, embedded = asdict(settings), {}
    for name, model_field in runner.PICTURES.items():
        if values.get(name):
            size = getattr(runner, "picture_size", diffusion_picture_size)(values[model_field])
            picture = images.center_crop_resize(images.open_image(values[name]), size)
            embedded[name] = PNG_URL + base64.b64encode(_png(picture)).decode()
        values[name] = None
    for name in runner.FILES:
        path = values.get(name)
        if path and Path(path).stat().st_size <= MAX_EMBEDDED_FILE_BYTES:
            embedded[name] = {"name": Path(path).name, "base64": base64.b64encode(Path(path).read_bytes()).decode()}
        values[name] = None
    return {"format": FORMAT, "tab": runner.TAB, "settings": values, "embedded": embedded}


def write(runner, settings, pictures: list[Image.Image], folder: Path) -> list[Path]:
    """`<tab>-result.png` (the pictures side by side, when there are any) and `<tab>-settings.json` in `folder`."""
    folder, written = Path(folder), []
    if pictures:
        strip(pictures).save(folder / f"{runner.TAB}-result.png")
        written.append(folder / f"{runner.TAB}-result.png")
    (folder / f"{runner.TAB}-settings.json").write_text(json.dumps(document(runner, settings), indent=1))
    return written + [folder / f"{runner.TAB}-settings.json"]


def read_document(path) -> dict:
    """A steer-settings/2 document from a file (a /1 file's labels mapped to their ids), or a ValueError that says
    what to load instead."""
    if Path(path).stat().st_size > MAX_BYTES:
        raise ValueError(f"That settings file is over {MAX_BYTES // 2**20} MB; load the .json a result's download gave.")
    try:
        found = json.loads(Path(path).read_text())
        assert found["format"] in (FORMAT, "steer-settings/1")
        assert isinstance(found["settings"], dict) and isinstance(found["tab"], str)
    except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError) as err:
        raise ValueError("That is not a settings file of this Space: load the .json that a result's download "
                         "gave.") from err
    if found["format"] == "steer-settings/1":
        for name, ids in V1_LABELS.get(found["tab"], {}).items():
            value = found["settings"].get(name)
            found["settings"][name] = ids.get(value, value) if isinstance(value, str) else value
    return dict(found, format=FORMAT)


def values(runner, found: dict, folder: Path) -> dict:
    """The runner's settings a document holds (name -> value; settings it lacks are left out), with its embedded
    pictures and files written to `folder`. Only plain values are taken."""
    if found["tab"] != runner.TAB:
        raise ValueError(f"Those are settings of the {found['tab']!r} tab; load them there.")
    settings, embedded = dict(found["settings"]), found.get("embedded") or {}
    settings.update({name: None for name in (*runner.PICTURES, *runner.FILES)})  # never a path the file names
    for name in runner.PICTURES:
        data = embedded.get(name)
        if isinstance(data, str) and data.startswith(PNG_URL):
            picture = images.open_image(base64.b64decode(data.removeprefix(PNG_URL)))  # judged like an upload
            settings[name] = str(Path(folder) / f"{name}.png")
            picture.save(settings[name])
    for name in runner.FILES:
        data = embedded.get(name)
        if isinstance(data, dict):
            target = Path(folder) / Path(str(data.get("name") or name)).name
            target.write_bytes(base64.b64decode(data["base64"]))
            settings[name] = str(target)
    known = [f.name for f in fields(runner.Settings)]
    for name in known:
        value = settings.get(name)
        plain = isinstance(value, (str, int, float, bool)) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value))  # a multiple choice
        if value is not None and not plain:
            raise ValueError(f"The setting {name!r} in that file is not a plain value.")
    return {name: settings[name] for name in known if name in settings}
