"""Space packaging: the README's front matter and commands, requirements, and both ways of starting the app."""

import re
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def front_matter() -> dict:
    match = re.match(r"---\n(.*?)\n---\n", README, re.S)
    assert match, "README.md must start with Hugging Face Space front matter between --- lines"
    return yaml.safe_load(match.group(1))


def requirements() -> dict[str, Requirement]:
    lines = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    return {Requirement(l).name: Requirement(l) for l in lines if l}


def test_front_matter_describes_a_gradio_space():
    meta = front_matter()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (ROOT / meta["app_file"]).is_file()
    assert {"title", "license", "sdk_version"} <= set(meta)
    assert len(meta.get("short_description", "")) <= 60  # the Hub refuses longer ones


def test_sdk_version_is_admitted_by_requirements():
    assert requirements()["gradio"].specifier.contains(str(front_matter()["sdk_version"]))


def test_requirements_have_version_ranges():
    for name, req in requirements().items():
        assert req.specifier, f"{name} in requirements.txt needs a version range"


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    assert len(commands) == 2, commands
    start, test = commands
    assert start.endswith("python app.py") and "pip install -r requirements.txt" in start
    test_command = test.split("&& ")[-1]
    assert "pytest" in test_command and test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_documents_every_environment_variable_the_code_reads():
    sources = [*ROOT.glob("*.py"), *ROOT.glob("pipelines/*.py"), *ROOT.glob("ui/*.py")]
    pattern = r"(?:environ(?:\.get)?[\[(]|getenv\()\s*[\"'](\w+)[\"']"
    read = {name for source in sources for name in re.findall(pattern, source.read_text())}
    assert read, "expected the app to read some environment variables"
    for name in read:
        assert f"`{name}`" in README, f"{name} is read by the code but not documented in README.md"


def test_gradio_app_py_finds_the_demo_without_launching():
    # `gradio app.py` imports the module and looks for a Blocks named `demo`
    code = "import app, gradio; assert isinstance(app.demo, gradio.Blocks)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
