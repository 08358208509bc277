"""What a stranger's script can do to the launched app with raw HTTP requests (httpx), not through gradio_client,
which uploads a local file itself and so never sends the server a path of its own."""

import os
import time

import httpx
import pytest

from pipelines.models import loading, timing

ASTRONAUT = os.path.abspath("assets/astronaut.png")


@pytest.fixture(scope="module")
def api(live_app):
    """Each endpoint's parameter names and defaults, as the app publishes them at /gradio_api/info."""
    info = httpx.get(f"{live_app.url}gradio_api/info", timeout=30).json()["named_endpoints"]
    return {name.lstrip("/"): [(p["parameter_name"], p.get("parameter_default")) for p in spec["parameters"]]
            for name, spec in info.items()}


def upload(url: str, path: str) -> dict:
    with open(path, "rb") as f:
        paths = httpx.post(f"{url}gradio_api/upload", files={"files": f}, timeout=30).json()
    return {"path": paths[0], "meta": {"_type": "gradio.FileData"}}


def call(url: str, api: dict, endpoint: str, **values) -> tuple[str, str]:
    """POST the endpoint's arguments (its defaults, replaced by `values`) and read its event stream to the end:
    ("complete" or "error", the last data line)."""
    data = [values.get(name, default) for name, default in api[endpoint]]
    event_id = httpx.post(f"{url}gradio_api/call/{endpoint}", json={"data": data}, timeout=30).json()["event_id"]
    stream = httpx.get(f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=300).text
    events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
    payloads = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
    return events[-1], payloads[-1]


def valid(live_app, endpoint: str, image: dict) -> dict:
    """Arguments that the endpoint serves on the tiny model in a few steps."""
    common = dict(model_id=live_app.model_dir, seed=0)
    return {
        "ilvr": dict(common, reference=image, steps=10, samples=1),
        "guidance": dict(common, prompts_text="a photo\na drawing", target="a photo", steps=10, samples=1),
        "cycle": dict(common, image=image, mode="reconstruct", source_id=live_app.model_dir, steps=10, strength=0.5),
        "asyrp": dict(common, image=image, steps=10, strip=False),
        "asyrp_learn": dict(common, image=image, iterations=1, steps=10),
    }[endpoint]


IMAGE_PARAMETER = {"ilvr": "reference", "cycle": "image", "asyrp": "image", "asyrp_learn": "image"}


@pytest.mark.parametrize("endpoint", list(IMAGE_PARAMETER))
@pytest.mark.parametrize("path", ["/etc/passwd", ASTRONAUT, "../../etc/hostname"])
def test_server_paths_sent_as_uploads_are_refused(live_app, api, endpoint, path):
    args = valid(live_app, endpoint, {"path": path, "meta": {"_type": "gradio.FileData"}})
    assert call(live_app.url, api, endpoint, **args)[0] == "error"


@pytest.fixture
def unet_calls(live_app):
    """How many times the served U-Net has been evaluated (a forward hook on the cached model)."""
    unet = loading.load_diffusion(live_app.model_dir).unet
    calls = []
    handle = unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    yield calls
    handle.remove()


NOT_OFFERED = ["/etc", "/tmp", "/no/such/model", "../assets/shapes-16", "someone/any-model"]
MODEL_PARAMETERS = [("ilvr", {}), ("guidance", {}), ("asyrp", {}), ("asyrp_learn", {}), ("cycle", {"source_id": None}),
                    ("cycle", {"mode": "translate", "target_id": None})]


@pytest.mark.parametrize("endpoint, changes", MODEL_PARAMETERS)
def test_a_model_id_that_is_not_offered_gets_one_message_and_loads_nothing(live_app, api, endpoint, changes):
    loads = dict(loading.cache.load_count)
    image = upload(live_app.url, ASTRONAUT)
    answers = set()
    for model_id in NOT_OFFERED + [live_app.other_model_dir]:  # the last one a real model, named by its path
        which = {name: model_id for name in changes if changes[name] is None} or {"model_id": model_id}
        fixed = {name: value for name, value in changes.items() if value is not None}
        event, message = call(live_app.url, api, endpoint, **{**valid(live_app, endpoint, image), **fixed, **which})
        assert event == "error"
        answers.add(message.replace(f"Value: {model_id} ", "Value: <id> "))  # Gradio's own dropdown check repeats it
    assert len(answers) == 1, answers  # the same answer whatever the id names on the server
    assert loading.cache.load_count == loads


BAD_ARGUMENTS = [
    ("ilvr", dict(steps=10**9)),
    ("ilvr", dict(down_factor=3)),
    ("ilvr", dict(samples=1000)),
    ("guidance", dict(steps=0)),
    ("guidance", dict(eta=5)),
    ("guidance", dict(sampler="euler")),
    ("guidance", dict(prompts_text="a photo\n" * 17, target="a photo")),
    ("cycle", dict(strength=5)),
    ("cycle", dict(eta=0)),
    ("cycle", dict(steps=10**9)),
    ("cycle", dict(mode="text", target_prompt="a cat", pnp_steps=1000)),
    ("asyrp", dict(t_edit=5000)),
    ("asyrp", dict(t_boost=900, t_edit=500)),
    ("asyrp", dict(steps=10**9)),
    ("asyrp_learn", dict(t_edit=-1)),
    ("asyrp_learn", dict(target_text="x" * 1000)),
]


@pytest.mark.parametrize("endpoint, bad", BAD_ARGUMENTS)
def test_every_endpoint_refuses_a_bad_argument_before_any_u_net_call(live_app, api, unet_calls, endpoint, bad):
    args = dict(valid(live_app, endpoint, upload(live_app.url, ASTRONAUT)), **bad)
    timing.seconds_per_eval(loading.load_diffusion(live_app.model_dir))  # the budget's own measurement, done
    unet_calls.clear()
    event, message = call(live_app.url, api, endpoint, **args)
    assert event == "error" and message != "null"  # a message for the user, not a crash
    assert unet_calls == []


def test_an_over_budget_request_is_refused_quickly_and_the_next_one_is_served(live_app, api, unet_calls, monkeypatch):
    image = upload(live_app.url, ASTRONAUT)
    monkeypatch.setenv("STEER_MAX_SECONDS", "60")  # 64,000 evaluations are far over it, the lightest request (10) fits
    start = time.monotonic()
    event, message = call(live_app.url, api, "ilvr", **dict(valid(live_app, "ilvr", image), steps=1000, samples=64))
    refused_after = time.monotonic() - start
    assert event == "error" and "would take about" in message and "the limit is 60 s" in message
    assert "Lower the sampling steps or the number of samples" in message
    assert refused_after < 30 and len(unet_calls) <= 2  # at most the two calls that measure the model (the second timed)
    monkeypatch.delenv("STEER_MAX_SECONDS")
    assert call(live_app.url, api, "ilvr", **valid(live_app, "ilvr", image))[0] == "complete"


@pytest.mark.parametrize("prompts, answer", [
    ("\n".join(f"a photo of thing {i}" for i in range(17)), "17 label prompts; use at most 16"),
    ("a photo\n" + "a photo of a cat " * 10_000, "characters long"),
    ("a photo\n" + "\n" * 500_000, "characters long"),
    ("a photo\n" + "a photo of a cat on a mat " * 15, "389 characters long; the limit is 300"),
    ("a photo\n" + "a photo of a cat on a mat " * 5, "tokens long; CLIP reads at most 77"),
])
def test_over_long_label_prompts_are_refused(live_app, api, unet_calls, prompts, answer):
    args = dict(valid(live_app, "guidance", None), prompts_text=prompts, target="a photo")
    event, message = call(live_app.url, api, "guidance", **args)
    assert event == "error" and answer in message and unet_calls == []
