"""Which examples are kept (cached) and under what key: the key follows the code, assets and libraries that make a
result, so a kept result is never served to other code."""

import pytest

from runners import common
from ui import examples


@pytest.mark.parametrize("setting, kept", [("1", True), ("true", True), ("0", False), (None, False)])
def test_examples_are_kept_on_a_cpu_only_when_the_operator_asks(monkeypatch, setting, kept):
    if setting is None:
        monkeypatch.delenv("STEER_CACHE_EXAMPLES", raising=False)
    else:
        monkeypatch.setenv("STEER_CACHE_EXAMPLES", setting)
    assert examples.caching() is kept  # this machine has no GPU


def test_the_bundled_models_examples_run_live_and_the_hub_models_are_the_ones_kept():
    assert common.bundled("faces-32") and common.bundled("shapes-16") and common.bundled("faces-text-32")
    assert not common.bundled("google/ddpm-celebahq-256") and not common.bundled("CompVis/stable-diffusion-v1-4")
    assert not common.bundled("/a/local/copy")


def test_the_cache_key_changes_with_any_source_file_and_the_folder_with_it(tmp_path, monkeypatch):
    monkeypatch.setattr(examples, "ROOT", tmp_path)
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "cache"))
    (tmp_path / "pipelines" / "core").mkdir(parents=True)
    (tmp_path / "app.py").write_text("demo = 1\n")
    source = tmp_path / "pipelines" / "core" / "sampling.py"
    keys = []
    for text in ("x = 1\n", "x = 2\n", "x = 1\n"):
        source.write_text(text)
        examples.digest.cache_clear()
        keys.append(examples.cache_folder("Examples (pick one, then Run)"))
    examples.digest.cache_clear()
    assert keys[0] != keys[1] and keys[0] == keys[2]  # another file: another folder; the same files: the same one
    assert keys[0].parent.parent == tmp_path / "cache" and keys[0].name == "examples-pick-one-then-run"
