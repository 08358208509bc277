"""The runner contract written once (runners.base): every method's runner provides it, every endpoint takes exactly its
runner's settings, and a settings file downloaded before the settings took short ids (steer-settings/1) still gives
the same images, bit for bit."""

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from runners import METHODS, Runner, asyrp, compare, hspace, ilvr, settings_file
from ui.widgets import settings_inputs

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "tests" / "data" / "settings-v1"  # written by the page before steer-settings/2, one per tab
SETTINGS = {"ilvr": ilvr.Settings, "ilvr_grid": ilvr.GridSettings, "guidance": METHODS["guidance"].Settings,
            "cycle": METHODS["cycle"].Settings, "cycle_text": METHODS["cycle_text"].Settings,
            "asyrp": asyrp.Settings, "asyrp_learn": asyrp.LearnSettings, "compare": compare.Settings,
            "compare_measure": compare.MeasureSettings,
            **{f"hspace_{view}": hspace.Settings for view in ("homogeneity", "linear_combination", "robustness",
                                                              "consistency")}}


def test_every_method_provides_the_runner_contract():
    assert set(METHODS) == {"ilvr", "guidance", "cycle", "cycle_text", "asyrp", "compare"}
    for tab, runner in METHODS.items():
        assert isinstance(runner, Runner) and runner.TAB == tab
        names = {f.name for f in dataclasses.fields(runner.Settings)}
        assert set(runner.PICTURES) <= names and set(runner.PICTURES.values()) <= names and set(runner.FILES) <= names


def test_every_endpoint_takes_its_runners_settings_each_from_an_input_of_the_page():
    """A tab builds its inputs from fields(Settings) (ui.widgets.settings_inputs), so each endpoint's parameters are
    its runner's settings in order; the settings the page keeps in a gr.State are not the API's to set."""
    import app

    api = app.demo.get_api_info()["named_endpoints"]
    assert set(api) == {f"/{name}" for name in SETTINGS}
    for name, settings in SETTINGS.items():
        published = [p["parameter_name"] for p in api[f"/{name}"]["parameters"]]
        fields = [f.name for f in dataclasses.fields(settings)]
        kept = {"hspace": {"images", "direction_file", "t_edit", "t_boost"}, "asyrp": {"learned_path"},
                "compare": {"model_id"}}
        assert published == [f for f in fields if f not in kept.get(name.split("_")[0], set())], name


def test_a_tab_that_leaves_a_setting_without_an_input_is_refused_when_built():
    missing = r"no input for \['split_step', 'preview_every', 'target_class'\], no setting for \['bogus'\]"
    with pytest.raises(ValueError, match=missing):
        settings_inputs(ilvr.Settings, reference=1, model_id=2, down_factor=3, range_t=4, steps=5, samples=6, seed=7,
                        show_process=8, bogus=9)


def pixels(result) -> list[np.ndarray]:
    return [np.asarray(image.convert("RGB")) for image, _ in result.gallery]


@pytest.mark.parametrize("path", sorted(V1.glob("*.json")), ids=lambda p: p.stem)
def test_a_settings_file_of_the_first_format_reproduces_its_result_bit_for_bit(path):
    """Its labels become the runners' short ids, and it runs as the same settings written with the ids do."""
    found = settings_file.read_document(path)
    runner = METHODS[found["tab"]]
    old = runner.Settings(**settings_file.values(runner, found, Path(tempfile.mkdtemp())))
    assert all(getattr(old, name) in ids for name, ids in IDS.get(runner.TAB, {}).items())
    written = settings_file.document(runner, old)
    embedded = {name: None for name in (*runner.PICTURES, *runner.FILES) if name in found["settings"]}  # embedded
    assert written["format"] == "steer-settings/2"
    assert {name: written["settings"][name] for name in found["settings"]} == {**found["settings"], **embedded}
    again = Path(tempfile.mkdtemp()) / "again.json"
    again.write_text(json.dumps(written))
    new = runner.Settings(**settings_file.values(runner, settings_file.read_document(again), Path(tempfile.mkdtemp())))
    assert all(np.array_equal(a, b) for a, b in zip(pixels(runner.run(old)), pixels(runner.run(new))))


IDS = {"asyrp": {"source": asyrp.SOURCES}, "guidance": {"classifier_kind": METHODS["guidance"].CLASSIFIERS},
       "cycle": {"mode": tuple(METHODS["cycle"].MODES)}}
