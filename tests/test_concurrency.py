"""Every request on its own: each request, run alone, then beside nine others of every method with other settings four
at a time, gives its images bit for bit and never fails; in threads through the runners, and over HTTP against the
page served at concurrency 4 (Gradio runs concurrent requests as threads of one process, sharing the models)."""

import concurrent.futures
import dataclasses
import importlib
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from runners import asyrp, cycle, cycle_text, guidance, hspace, ilvr

SMILE = "assets/faces-32/directions/smile.safetensors"
FROWNING = "a frowning face with glasses, black hair and medium skin on a purple background"
SMILING = "a smiling face with glasses, black hair and medium skin on a purple background"
WITH_GLASSES = "a smiling face with glasses, brown hair and pale skin on a green background"
NO_GLASSES = "a smiling face with brown hair and pale skin on a green background"

# ten requests across every method and both kinds of shared-module edit (Asyrp's h-space shift and recording, the
# text edit's attention control), each with settings of its own; (endpoint, run, settings)
REQUESTS = [
    ("asyrp", asyrp.run, asyrp.Settings("assets/faces/frowning.png", "faces-32", "file", file_path=SMILE, scale=1.5,
                                        t_edit=250, t_boost=0, steps=12)),
    ("cycle_text", cycle_text.run, cycle_text.Settings("assets/faces/frowning-glasses.png", "faces-text-32", FROWNING,
                                                       SMILING, steps=12, control="replace", attention_step=2)),
    ("ilvr", ilvr.run, ilvr.Settings("assets/faces/drawn-face.png", "faces-32", steps=12, samples=2, seed=1,
                                     show_process=True, split_step=5)),
    ("guidance", guidance.run, guidance.Settings(target="smiling", model_id="faces-32", sampler="ddpm", steps=12,
                                                 samples=2, classifier_kind="classifier")),
    ("hspace_consistency", hspace.consistency, hspace.Settings(model_id="faces-32", steps=12)),
    ("cycle", cycle.run, cycle.Settings("assets/faces/frowning.png", "class", "faces-32", strength=0.5, steps=12,
                                        source_class="frowning", target_class="smiling", ddib=True)),
    ("asyrp", asyrp.run, asyrp.Settings("assets/shapes/blue-square.png", "shapes-16", "principal", k=2, strip=False,
                                        t_edit=500, t_boost=0, steps=14, seed=3)),
    ("cycle_text", cycle_text.run, cycle_text.Settings("assets/faces/smiling.png", "faces-text-32", NO_GLASSES,
                                                       WITH_GLASSES, steps=14, control="refine", seed=2, ddib=True)),
    ("hspace_homogeneity", hspace.homogeneity, hspace.Settings(model_id="faces-32", steps=10, scale=2.0)),
    ("ilvr_grid", ilvr.run_grid, ilvr.GridSettings("assets/shapes/red-circle.png", "shapes-16", steps=10, seed=4)),
]


def pictures(result) -> list[np.ndarray]:
    """Every picture a result shows, in order, as pixels."""
    found = []
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if isinstance(value, list) and value and isinstance(value[0], tuple) and isinstance(value[0][0], Image.Image):
            found += [np.asarray(image.convert("RGB")) for image, _ in value]
    return found


def fresh_caches() -> None:
    """Asyrp's principal directions and inversions found again, so that their U-Net calls (which record h) run beside
    the others too."""
    for cache in (asyrp.principal_axes, asyrp.inversions):
        cache._values.clear()


def same(solo: list[np.ndarray], together: list[np.ndarray]) -> bool:
    return len(solo) == len(together) > 0 and all(np.array_equal(a, b) for a, b in zip(solo, together))


def test_ten_requests_of_every_method_four_at_a_time_match_their_solo_runs_bit_for_bit():
    fresh_caches()
    alone = [pictures(run(settings)) for _, run, settings in REQUESTS]
    fresh_caches()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(run, dataclasses.replace(settings)) for _, run, settings in REQUESTS]
        together = [pictures(future.result()) for future in futures]  # a failure raises here
    assert [same(a, b) for a, b in zip(alone, together)] == [True] * len(REQUESTS)


# ---------------------------------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="session")
def served():
    """The page built and served at concurrency 4, as STEER_GPU_CONCURRENCY sets it; closed with the session, as
    live_app is: a page that closes deletes the cached files it made, which the other page serves too."""
    import app

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEER_GPU_CONCURRENCY", "4")
        demo = importlib.reload(app).build_demo()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **app.launch_options())
    yield url
    demo.close()


def http_call(url: str, parameters: dict, endpoint: str, settings) -> list[np.ndarray]:
    """The request as a stranger's script sends it: its pictures uploaded, every parameter posted, the event stream
    read to the end; the pictures of every gallery it returned."""
    values = dataclasses.asdict(settings)
    for name, value in values.items():
        if isinstance(value, str) and value.startswith("assets/") and Path(value).is_file():  # a picture or a file
            with open(value, "rb") as f:
                path = httpx.post(f"{url}gradio_api/upload", files={"files": f}, timeout=60).json()[0]
            values[name] = {"path": path, "meta": {"_type": "gradio.FileData"}}
    data = [values.get(name, default) for name, default in parameters[endpoint]]
    event_id = httpx.post(f"{url}gradio_api/call/{endpoint}", json={"data": data}, timeout=60).json()["event_id"]
    stream = httpx.get(f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=600).text
    events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
    payload = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")][-1]
    assert events[-1] == "complete", (endpoint, payload)
    galleries = [output for output in json.loads(payload) if isinstance(output, list)]
    return [np.asarray(Image.open(io.BytesIO(httpx.get(item["image"]["url"], timeout=60).content)).convert("RGB"))
            for gallery in galleries for item in gallery if isinstance(item, dict) and "image" in item]


def test_over_http_ten_requests_four_at_a_time_match_their_solo_runs_bit_for_bit(served):
    info = httpx.get(f"{served}gradio_api/info", timeout=30).json()["named_endpoints"]
    parameters = {name.lstrip("/"): [(p["parameter_name"], p.get("parameter_default")) for p in spec["parameters"]]
                  for name, spec in info.items()}
    fresh_caches()
    alone = [http_call(served, parameters, endpoint, settings) for endpoint, _, settings in REQUESTS]
    fresh_caches()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(REQUESTS)) as pool:  # all at once; the page runs 4
        futures = [pool.submit(http_call, served, parameters, endpoint, settings)
                   for endpoint, _, settings in REQUESTS]
        together = [future.result() for future in futures]
    assert [same(a, b) for a, b in zip(alone, together)] == [True] * len(REQUESTS)
