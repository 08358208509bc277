"""The runner layer: the command line reproduces what the page shows, bit for bit, from the settings file the page
gave; and nothing in ui/ reaches past the runners to the pipelines."""

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from runners import METHODS
from runners.__main__ import main
from test_app import no_progress

ROOT = Path(__file__).resolve().parents[1]


def pixels(image) -> np.ndarray:
    return np.asarray((Image.open(image) if isinstance(image, (str, Path)) else image).convert("RGB"))


def at_model_size(path, size: int) -> np.ndarray:
    """A gallery picture (enlarged by an integer factor with nearest neighbour) back at the model's size."""
    shown = pixels(path)
    factor = shown.shape[0] // size
    return shown[::factor, ::factor]


def test_reproduce_gives_the_pages_images_bit_for_bit_from_its_settings_file(tmp_path):
    from ui import ilvr_tab
    from ui.widgets import save_result
    from runners import ilvr

    settings = ["assets/faces/drawn-face.png", "faces-32", 4, 0, 20, 2, 7, False, 50, 0]
    gallery, _ = ilvr_tab.run_ilvr(*settings, progress=no_progress)
    _, document = save_result(ilvr, gallery, settings)
    assert main(["reproduce", document, "--out", str(tmp_path)]) == 0
    written = sorted(tmp_path.glob("[0-9][0-9]-*.png"))
    assert [p.name for p in written] == ["00-reference-y.png", "01-N-y-N-4.png", "02-sample-1.png", "03-sample-2.png"]
    for (shown, _), path in zip(gallery, written):
        assert Image.open(path).size == (32, 32)  # the model's resolution
        assert np.array_equal(at_model_size(shown, 32), pixels(path))
    assert Image.open(tmp_path / "ilvr-result.png").size == (4 * 32, 32)  # the strip


def test_a_settings_file_saved_before_the_runners_still_runs(tmp_path):
    """A steer-settings/1 file as the page wrote it before: every setting of the old run function, the picture
    embedded, a path it names ignored."""
    buffer = io.BytesIO()
    Image.open("assets/faces/frowning.png").convert("RGB").resize((32, 32)).save(buffer, format="PNG")
    settings = {"image": "/etc/passwd", "mode": "class translation", "source_id": "faces-32", "target_id": None,
                "target_prompt": "", "source_prompt": "", "strength": 0.5, "eta": 1.0, "steps": 10,
                "guidance_scale": 10, "exact_gradient": False, "pnp_steps": 0, "step_size": 0.001, "seed": 0,
                "source_class": "frowning", "target_class": "smiling", "sdedit": False, "preview_every": 0}
    path = tmp_path / "cycle-settings.json"
    path.write_text(json.dumps({"format": "steer-settings/1", "tab": "cycle", "settings": settings, "embedded": {
        "image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}}))
    assert main(["reproduce", str(path), "--out", str(tmp_path / "out")]) == 0
    names = [p.name for p in sorted((tmp_path / "out").glob("[0-9][0-9]-*.png"))]
    assert names == ["00-input.png", "01-reconstruction-G-z-frowning-same-class.png",
                     "02-class-translation-frowning-smiling.png"]


def test_the_command_line_runs_a_method_without_a_file_and_lists_the_methods(tmp_path):
    assert main(["run", "asyrp", "--image", "assets/faces/frowning.png", "--model", "faces-32", "--source",
                 "load a direction file", "--file-path", "assets/faces-32/directions/smile.safetensors",
                 "--no-strip", "--t-edit", "250", "--t-boost", "0", "--steps", "10", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("[0-9][0-9]-*.png"))) == 3  # input, reconstruction, the edit
    shown = subprocess.run([sys.executable, "-m", "runners", "--help"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    assert all(name in shown for name in METHODS)


def test_a_bad_setting_on_the_command_line_says_what_is_allowed(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit, match="down_factor 3 is not allowed"):
        main(["run", "ilvr", "--reference", "assets/faces/drawn-face.png", "--model", "faces-32", "--down-factor", "3",
              "--out", str(tmp_path)])


def test_the_page_never_imports_the_pipelines():
    for module in (ROOT / "ui").glob("*.py"):
        assert not re.search(r"^\s*(from|import) pipelines", module.read_text(), re.MULTILINE), module.name


def test_no_file_of_the_three_layers_is_over_300_lines():
    for folder in ("ui", "runners", "pipelines"):
        for module in (ROOT / folder).glob("*.py"):
            assert len(module.read_text().splitlines()) <= 300, module
