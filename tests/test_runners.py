"""The runner layer: the command line reproduces what the page shows, bit for bit, from the settings file the page
gave; and nothing in ui/ reaches past the runners to the pipelines."""

import base64
import dataclasses
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from PIL import Image

from conftest import ddpm_scheduler, write_published_ddpm
from pipelines.asyrp import released as asyrp_released
from pipelines.models import loading
from runners import METHODS, asyrp
from runners.base import coerced
from runners.__main__ import main
from test_app import no_progress
from test_asyrp_official import official_state, write_official

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
                 "file", "--file-path", "assets/faces-32/directions/smile.safetensors",
                 "--no-strip", "--t-edit", "250", "--t-boost", "0", "--steps", "10", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("[0-9][0-9]-*.png"))) == 3  # input, reconstruction, the edit
    shown = subprocess.run([sys.executable, "-m", "runners", "--help"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    assert all(name in shown for name in METHODS)


def test_a_bad_setting_on_the_command_line_says_what_is_allowed(tmp_path, capsys):
    with pytest.raises(SystemExit, match="down_factor 3 is not allowed"):
        main(["run", "ilvr", "--reference", "assets/faces/drawn-face.png", "--model", "faces-32", "--down-factor", "3",
              "--out", str(tmp_path)])


def test_the_page_never_imports_the_pipelines():
    for module in (ROOT / "ui").glob("*.py"):
        assert not re.search(r"^\s*(from|import) pipelines", module.read_text(), re.MULTILINE), module.name


def test_a_released_direction_is_picked_by_name_on_the_model_it_was_made_for(tmp_path, monkeypatch):
    """The authors' smiling f_t (random weights in the official layout, pinned) from the offline copy folder, on a
    stand-in for google/ddpm-celebahq-256 with the hub models' 512-channel h-space, through the runner by name."""
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, layers_per_block=1, block_out_channels=(32, 512), norm_num_groups=32,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       time_embedding_dim=512, add_attention=False).eval()
    copies = tmp_path / "copies"
    write_published_ddpm(copies / "google/ddpm-celebahq-256", unet, ddpm_scheduler())
    smiling = asyrp_released.RELEASED["smiling"]
    checkpoint = copies / asyrp_released.REPO / "checkpoint"
    checkpoint.mkdir(parents=True)
    digest = hashlib.sha256(write_official(checkpoint / smiling.file, official_state(0))).hexdigest()
    monkeypatch.setitem(asyrp_released.SHA256, smiling.file, digest)
    monkeypatch.setitem(asyrp_released.RELEASED, "smiling", dataclasses.replace(smiling, sha256=digest))
    monkeypatch.setenv("STEER_MODEL_DIR", str(copies))
    monkeypatch.setattr(loading, "cache", loading.ModelCache())

    assert ("smiling (Asyrp authors)", "smiling") in asyrp.released_choices("google/ddpm-celebahq-256")
    assert asyrp.released_choices("faces-32") == []
    settings = asyrp.Settings("assets/astronaut.png", "google/ddpm-celebahq-256", asyrp.SOURCES[3], strip=False,
                              scale=1.0, t_edit=asyrp.released_t_edit(["smiling"]), t_boost=0, steps=4,
                              released="smiling")
    result = asyrp.run(settings)
    assert [caption for _, caption in result.gallery] == ["input", "reconstruction (scale 0)", "scale +1"]
    assert "released by the Asyrp authors (smiling: face → smiling face; c = s × 40 / steps)" in result.note
    assert result.t_edit == 516 and result.delta_h_norms  # CelebA-HQ's t_edit, and steps were edited
    assert not np.array_equal(pixels(result.gallery[1][0]), pixels(result.gallery[2][0]))
    with pytest.raises(ValueError, match="'sad' is not a released direction for faces-32; pick from: none"):
        asyrp.run(asyrp.Settings("assets/faces/frowning.png", "faces-32", asyrp.SOURCES[3], released=["sad"]))


def test_the_page_starts_without_a_warning():
    """Examples whose menus depend on the model used to warn "not in the list of choices" at every start-up."""
    started = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", "import app"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-2000:]


def test_the_ddib_baseline_sits_beside_sdedit_with_its_row():
    """faces-32, frowning to smiling: the deterministic latent's translation, with its own PSNR/SSIM row."""
    from runners import cycle

    settings = cycle.Settings("assets/faces/frowning.png", "class", "faces-32", strength=0.5, steps=20,
                              source_class="frowning", target_class="smiling", ddib=True)
    result = cycle.run(settings)
    assert [caption for _, caption in result.gallery][-2:] == [
        "SDEdit baseline: the same x_t0, fresh noise instead of the encoded ε",
        "DDIB baseline: deterministic DDIM inversion to t0, then decoding"]
    assert set(result.metrics["rows"]) == {"reconstruction", "result", "SDEdit baseline (fresh noise)",
                                           "DDIB baseline (deterministic)"}
    # the stochastic latent reconstructs exactly; the deterministic one gives a translation of its own
    assert result.metrics["rows"]["reconstruction"]["psnr"] > 40
    assert not np.array_equal(pixels(result.gallery[2][0]), pixels(result.gallery[4][0]))


def test_a_text_the_page_sends_as_none_is_empty():
    """A textbox in an accordion never opened comes as None (the text edit's reweighted word, on a fresh page)."""
    from runners import cycle_text

    settings = cycle_text.Settings("assets/faces/smiling.png", reweight_word=None, steps=20.0, seed=None)
    assert coerced(settings).reweight_word == "" and coerced(settings).steps == 20 and coerced(settings).seed is None
