"""What the tabs show besides their result, run through the tab functions on the bundled models: ILVR's frequency
split and canvas, the preview interval, and taking a result home (PNG strip + settings) and loading it back."""

import json
from dataclasses import fields

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from test_app import no_progress, shown_image
from training.shapes import CLASSES, measure
from runners import asyrp, ilvr
from runners.base import Tracker
from ui import asyrp_tab, ilvr_tab, outputs
from ui.handler import live, progress_callback, user_errors
from ui.widgets import load_settings, save_result



def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_the_ilvr_process_view_ends_with_the_frequency_split_of_the_chosen_step(bundled):
    args = ["assets/shapes/red-circle.png", "shapes-16", 4, 0, 20, 1, 0, True]
    _, process = ilvr_tab.run_ilvr(*args, 7, progress=no_progress)
    split = [caption for _, caption in process[-4:]]
    assert all(caption.startswith("step 7, t=") for caption in split), split
    assert [caption.split(": ", 1)[1].split(",")[0] for caption in split] == [
        "φ_N(x'_t-1)", "φ_N(y_t-1)", "(I − φ_N)(x'_t-1)", "x_t-1 = φ_N(y_t-1) + (I − φ_N)(x'_t-1)"]
    _, process = ilvr_tab.run_ilvr(*args, 500, progress=no_progress)  # past the last conditioned step: that one
    assert process[-1][1].startswith("step 19, t=50")
    _, process = ilvr_tab.run_ilvr(*args[:-1], False, 7, progress=no_progress)
    assert process == []  # no process view, no split
    with pytest.raises(gr.Error, match="frequency split's step must be from 1"):
        ilvr_tab.run_ilvr(*args, 0, progress=no_progress)


def test_a_drawn_triangle_on_the_canvas_drives_ilvr(bundled):
    """The canvas example's composite becomes the reference, and ILVR at N = 2 (8x8 of the 16x16 kept) draws triangles of
    the drawn colour (measured: 8 of 8 over two seeds; at N = 4 the 4x4 low-pass keeps the colour, not the shape)."""
    canvas, reference, model_id, *settings = ilvr_tab.SKETCH_EXAMPLES[1]
    assert model_id == "shapes-16" and ilvr_tab.drawing_reference(canvas) == reference == canvas["composite"]
    gallery, _ = ilvr_tab.run_ilvr(ilvr_tab.drawing_reference(canvas), model_id, *settings, progress=no_progress)
    drawn = measure(shown_image(gallery[0][0]))
    samples = [measure(shown_image(path)) for path, _ in gallery[2:]]
    assert CLASSES[drawn.label] == "triangle" and len(samples) == 4
    assert sum(CLASSES[m.label] == "triangle" for m in samples) >= 3, [CLASSES[m.label] for m in samples]
    assert all(np.abs(np.subtract(m.color, drawn.color)).max() < 0.2 for m in samples), [m.color for m in samples]
    with pytest.raises(gr.Error, match="Draw on the canvas first"):
        ilvr_tab.drawing_reference({"background": None, "layers": [], "composite": None})


def test_every_sketch_example_is_a_canvas_and_the_reference_it_composes():
    for canvas, reference, *_ in ilvr_tab.SKETCH_EXAMPLES:
        background, layer = (Image.open(canvas["background"]).convert("RGBA"), Image.open(canvas["layers"][0]))
        composed = Image.alpha_composite(background, layer).convert("RGB")
        assert np.array_equal(np.asarray(composed), pixels(reference))


def test_a_preview_every_k_steps_streams_at_those_steps():
    @user_errors
    def run(steps, preview_every, request=None, progress=None):
        reporter = Tracker(steps, "", progress_callback(lambda *a, **k: None), preview_every=preview_every)
        for step in range(steps):
            reporter(step, 1000 - step, torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
        return ["final"]

    updates = list(live(run, outputs=1)(20, 3))
    assert [u[0][1] for u in updates[:-1]] == [f"step {k} of 20: predicted x0" for k in (3, 6, 9, 12, 15, 18)]
    assert len(list(live(run, outputs=1)(20, 0))) == 9 + 1  # automatic: every 20 // 10 = 2 steps, the result
    with pytest.raises(gr.Error, match="k must be from 0 \\(automatic\\) to 100"):
        list(live(run, outputs=1)(20, 101))


def test_an_ilvr_result_goes_home_as_a_png_strip_and_settings_that_reproduce_it(bundled, tmp_path):
    settings = ["assets/shapes/yellow-circle.png", "shapes-16", 4, 0, 20, 2, 5, False, 50, 0, ""]
    gallery, _ = ilvr_tab.run_ilvr(*settings, progress=no_progress)
    strip, document = save_result(ilvr, gallery, settings)
    widths = [Image.open(path).width for path, _ in gallery]
    assert Image.open(strip).size == (sum(widths), max(Image.open(path).height for path, _ in gallery))
    saved = json.loads(open(document).read())
    assert saved["tab"] == "ilvr" and saved["settings"]["seed"] == 5 and saved["settings"]["reference"] is None
    assert saved["embedded"]["reference"].startswith("data:image/png;base64,")  # at the model's size
    loaded = load_settings(ilvr, document)
    assert loaded[1:] == settings[1:]
    assert Image.open(loaded[0]).size == (16, 16)
    again, _ = ilvr_tab.run_ilvr(*loaded, progress=no_progress)
    for (first, caption), (second, caption_again) in zip(gallery[2:], again[2:]):
        assert caption == caption_again and np.array_equal(pixels(first), pixels(second))  # the same samples


def test_an_asyrp_result_carries_its_direction_file_home(bundled):
    settings = ["assets/shapes/green-triangle.png", "shapes-16", "file", 1, None,
                asyrp_tab.SIZE_DIRECTION, 1.0, False, False, 500, 0, 20, 0, 0]
    gallery, _, _ = asyrp_tab.run_asyrp(*settings, progress=no_progress)
    _, document = save_result(asyrp, gallery, settings)
    loaded = load_settings(asyrp, document)
    assert loaded[4] is None and open(loaded[5], "rb").read() == open(asyrp_tab.SIZE_DIRECTION, "rb").read()
    again, _, _ = asyrp_tab.run_asyrp(*loaded, progress=no_progress)
    assert all(np.array_equal(pixels(a), pixels(b)) for (a, _), (b, _) in zip(gallery[1:], again[1:]))


@pytest.mark.parametrize("content, message", [
    (b"not json", "not a settings file of this Space"),
    (json.dumps({"format": "steer-settings/1", "tab": "asyrp", "settings": {}}).encode(), "settings of the 'asyrp' tab"),
    (json.dumps({"format": "other/1", "tab": "ilvr", "settings": {}}).encode(), "not a settings file of this Space"),
    (json.dumps({"format": "steer-settings/1", "tab": "ilvr", "settings": {"seed": [1]}}).encode(),
     "The setting 'seed' in that file is not a plain value"),
])
def test_loading_refuses_what_is_not_this_tabs_settings(tmp_path, content, message):
    path = tmp_path / "settings.json"
    path.write_bytes(content)
    with pytest.raises(gr.Error, match=message):
        load_settings(ilvr, str(path))


def test_a_settings_file_never_names_a_server_file(tmp_path):
    """Pictures and direction files come only from what the file embeds: a path it names is dropped."""
    path = tmp_path / "settings.json"
    settings = {"image": "/etc/passwd", "file_path": "/etc/passwd", "learned_path": "/etc/hostname", "seed": 3}
    path.write_text(json.dumps({"format": "steer-settings/1", "tab": "asyrp", "settings": settings}))
    loaded = dict(zip([f.name for f in fields(asyrp.Settings)], load_settings(asyrp, str(path))))
    assert (loaded["image"], loaded["file_path"], loaded["learned_path"], loaded["seed"]) == (None, None, None, 3)
    assert isinstance(loaded["model_id"], type(gr.skip()))  # not in the file: left as it is


def test_outputs_older_than_their_age_limit_are_removed():
    import os
    import time

    old_file, old_folder = outputs.OUTPUT_DIR / "old.png", outputs.output_folder()
    old_file.write_bytes(b"")
    (old_folder / "ilvr-settings.json").write_text("{}")
    past = time.time() - outputs.OUTPUT_MAX_AGE_S - 1
    for path in (old_file, old_folder):
        os.utime(path, (past, past))
    fresh = outputs.output_folder()
    assert not old_file.exists() and not old_folder.exists() and fresh.is_dir()
