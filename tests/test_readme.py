"""The README's API and command-line snippets run as written against a live app, a hub model swapped for the bundled
one where a snippet names it (no test downloads weights), and give back what the README says they do."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

from PIL import Image

from runners import ilvr, settings_file

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def indented_blocks() -> list[str]:
    """The README's code blocks written as 4-space indented paragraphs."""
    blocks, current = [], []
    for line in README.splitlines() + [""]:
        if line.startswith("    ") and (current or not line.strip().startswith(("|", "-"))):
            current.append(line[4:])
        elif current and not line.strip():
            blocks.append("\n".join(current))
            current = []
        else:
            current = []
    return blocks


def test_the_command_line_snippets_run_as_written(tmp_path):
    commands = [line for block in indented_blocks() for line in block.splitlines()
                if line.startswith("python -m runners")]
    assert len(commands) == 4
    settings = ilvr.Settings("assets/faces/drawn-face.png", "faces-32", steps=20)  # the file a page download gives
    for path in settings_file.write(ilvr, settings, [Image.open(settings.reference)], tmp_path):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    for command in commands:
        args = shlex.split(command.replace("assets/", f"{ROOT}/assets/"))
        done = subprocess.run([sys.executable, *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                              env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert (tmp_path / "out" / "ilvr-result.png").is_file() and (tmp_path / "out" / "03-sample-2.png").is_file()
    table = (tmp_path / "out" / "compare-glasses.md").read_text()
    assert "`python -m runners compare --goal glasses --faces 2 --out out/`" in table and "| text edit |" in table


def test_the_python_api_snippet_runs_with_the_bundled_model(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README, re.S)[1].replace("google/ddpm-celebahq-256", "faces-32")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the README's own lines
    assert Image.open(tmp_path / "sample.png").size == (32, 32)
    assert len(namespace["strip"]) == 3  # the edit at scales -1, 0 and 1


def test_the_api_snippet_calls_the_text_edit_and_gets_what_the_readme_says(live_app):
    code = next(b for b in indented_blocks() if b.startswith("from gradio_client"))
    namespace = {}
    exec(compile(code.replace("http://127.0.0.1:7860/", live_app.url).replace("assets/", f"{ROOT}/assets/"),
                 "README.md", "exec"), namespace)
    gallery, metrics, attention, latent = (namespace[k] for k in ("gallery", "metrics", "attention", "latent"))
    assert [item["caption"].split(":")[0] for item in gallery] == ["input", "edit", "SDEdit baseline"]
    assert "PSNR to input" in metrics and len(attention) > 0 and len(latent) > 0
