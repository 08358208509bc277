"""Space packaging: the README's front matter and commands, requirements, and both ways of starting the app."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

from ui import gpu

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
    sources = [*ROOT.glob("*.py"), *ROOT.glob("pipelines/**/*.py"), *ROOT.glob("ui/*.py"), *ROOT.glob("runners/*.py")]
    pattern = r"(?:environ(?:\.get)?[\[(]|getenv\()\s*[\"'](\w+)[\"']"
    read = {name for source in sources for name in re.findall(pattern, source.read_text())}
    assert read, "expected the app to read some environment variables"
    for name in read:
        assert f"`{name}`" in README, f"{name} is read by the code but not documented in README.md"


def test_gradio_app_py_finds_the_demo_without_launching():
    # `gradio app.py` imports the module and looks for a Blocks named `demo`
    code = "import app, gradio; assert isinstance(app.demo, gradio.Blocks)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_python_app_py_serves_the_page():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "python app.py did not serve within 120 s"
                time.sleep(1)
        assert "Steering diffusion models without retraining" in page  # the page's title
    finally:
        server.terminate()
        server.wait(timeout=30)


ZERO_GPU = """
import json, sys, types
wrapped, durations = [], {{}}
spaces = types.ModuleType("spaces")
def GPU(duration):
    def decorate(fn):
        wrapped.append(fn.__name__)
        durations[fn.__name__] = duration
        return fn
    return decorate
spaces.GPU = GPU
if {with_spaces}:
    sys.modules["spaces"] = spaces
else:
    sys.modules["spaces"] = None  # as if not installed: importing it raises ImportError
import app
from ui import gpu
endpoints = sorted(d.api_name for d in app.demo.fns.values() if d.api_name and d.api_visibility == "public")
limits = sorted({{d.concurrency_limit for d in app.demo.fns.values() if d.concurrency_id == "gpu"}})
asked = {{}}
if durations:  # each request asks for its own estimate: a long one for more than a short one
    from pipelines.models import registry, timing
    from ui import ilvr_tab
    model = registry.default_model_id()
    ilvr_tab.run_ilvr("assets/astronaut.png", model, 4, 0, 2, 1, 0, False)  # measures the model's seconds per step
    asked = {{steps: durations["ilvr"]("assets/astronaut.png", model, 4, 0, steps, 1, 0, False)
             for steps in (2, 1000)}}
print(json.dumps(dict(wrapped=sorted(wrapped), endpoints=endpoints, gpu_is_identity=gpu.gpu(len, None) is len,
                      limits=limits, asked=asked)))
"""


def zero_gpu_run(with_spaces: bool, **env) -> dict:
    """Import the app in a fresh interpreter with a fake `spaces` package (or none); what got wrapped in spaces.GPU,
    the GPU concurrency limits and, with spaces, the durations a short and a long ILVR request ask for."""
    code = ZERO_GPU.format(with_spaces=with_spaces)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300, capture_output=True, text=True,
                         env=os.environ | env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gpu_work_runs_under_spaces_gpu_when_spaces_is_installed_and_the_app_is_unchanged_without_it():
    with_spaces, without_spaces = zero_gpu_run(True), zero_gpu_run(False)
    endpoints = ["asyrp", "asyrp_learn", "compare", "compare_measure", "cycle", "cycle_text", "guidance",
                 "hspace_consistency", "hspace_homogeneity", "hspace_linear_combination", "hspace_robustness", "ilvr",
                 "ilvr_grid"]
    assert with_spaces["wrapped"] == endpoints  # all GPU work, each function named as its endpoint
    assert without_spaces["wrapped"] == [] and without_spaces["gpu_is_identity"]
    assert without_spaces["limits"] == [gpu.CPU_CONCURRENCY]  # this machine's CPU: as bench_lecture measured
    assert with_spaces["endpoints"] == without_spaces["endpoints"] == endpoints


def test_on_zero_gpu_each_request_asks_for_its_own_duration_and_several_hold_a_gpu_at_once(tiny_model_dir):
    env = {"SPACES_ZERO_GPU": "true", "STEER_MODEL": str(tiny_model_dir), "HF_HUB_OFFLINE": "1",
           "STEER_MAX_SECONDS": "120"}
    zero = zero_gpu_run(True, **env)
    short, long = zero["asked"]["2"], zero["asked"]["1000"]
    assert 0 < short < long <= 120  # the estimate, not a fixed 120 s; never past the limit
    assert zero["limits"] == [4]  # several ZeroGPU calls at once
    assert zero_gpu_run(False, STEER_GPU_CONCURRENCY="3")["limits"] == [3]  # the operator's choice


ZERO_GPU_LOADS = """
import json, sys, types
spaces = types.ModuleType("spaces")
spaces.GPU = lambda duration: (lambda fn: fn)
sys.modules["spaces"] = spaces
from pipelines.models import loading, registry
import app
from ui import guidance_tab, ilvr_tab
at_import = dict(loading.cache.load_count)
ilvr_tab.run_ilvr("assets/astronaut.png", registry.default_model_id(), 4, 0, 2, 1, 0, False)
guidance_tab.run_guidance("a photo\\na drawing", "a photo", registry.default_model_id(), 1, "ddim", "fixed_eps", 0, 2, 1, 0,
                          False, "")
print(json.dumps(dict(at_import=at_import, after_calls=loading.cache.load_count)))
"""


def test_on_zero_gpu_the_default_model_clip_and_the_text_model_load_at_import_and_never_in_a_call(tiny_model_dir, tmp_path):
    from conftest import tiny_clip_components

    clip, tokenizer = tiny_clip_components()
    clip.save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    env = os.environ | {"SPACES_ZERO_GPU": "true", "STEER_MODEL": str(tiny_model_dir),
                        "STEER_CLIP_MODEL": str(tmp_path / "clip"), "STEER_MODEL_DIR": str(tmp_path / "copies"),
                        "STEER_SAFETY_CHECKER": "0", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", ZERO_GPU_LOADS], cwd=ROOT, env=env, check=True, timeout=300,
                         capture_output=True, text=True)
    loads = json.loads(out.stdout.strip().splitlines()[-1])
    assert loads["at_import"] == {str(tiny_model_dir): 1, str(tmp_path / "clip"): 1, "faces-text-32": 1}
    assert loads["after_calls"] == loads["at_import"]  # the GPU functions found both loaded


# What ZeroGPU runs: the Hub documentation's "Spaces ZeroGPU" page, section "Supported Versions"
# (docs/hub/spaces-zerogpu.md in huggingface/hub-docs), checked 2026-11-30. CPU and GPU Spaces take any Python 3.x or
# 3.x.x ("Spaces Configuration Reference", python_version) and whatever torch requirements.txt installs.
ZEROGPU_PYTHON = ["3.10.13", "3.12.12"]
ZEROGPU_TORCH = ["2.8.0", "2.9.1", "2.10.0", "2.11.0"]
CI_TORCH = "2.13.0"  # .ci/run and the README's commands install it before requirements.txt, on Python 3.11


def torch_requirement(python: str) -> Requirement:
    """The torch line of requirements.txt that pip applies on this Python version (lines may carry markers)."""
    env = default_environment() | {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python}
    lines = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    torch = [r for r in map(Requirement, filter(None, lines))
             if r.name == "torch" and (not r.marker or r.marker.evaluate(env))]
    assert len(torch) == 1, f"exactly one torch requirement must apply on Python {python}: {torch}"
    return torch[0]


def test_the_space_gets_a_python_and_a_torch_that_zerogpu_lists_and_ci_keeps_its_torch():
    python = front_matter()["python_version"]
    assert isinstance(python, str) and python in ZEROGPU_PYTHON, python  # quoted: unquoted 3.10 reads as 3.1
    listed = {Version(v) for v in ZEROGPU_TORCH}
    near = listed | {Version(f"2.{minor}.{micro}") for minor in range(20) for micro in range(3)}
    admitted = {v for v in near if torch_requirement(python).specifier.contains(v)}
    assert admitted and admitted <= listed, sorted(map(str, admitted - listed))  # pip picks among them on the Space
    # CI and development run Python 3.11 with torch 2.13.0 installed first; requirements.txt must not replace it
    assert torch_requirement("3.11").specifier.contains(CI_TORCH), torch_requirement("3.11")
