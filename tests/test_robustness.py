"""A stranger hammering the Space: every awkward upload and out-of-range value through the API, and load."""

import concurrent.futures
import io
import re
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from pipelines.models import loading

rng = np.random.default_rng(0)
PHOTO = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [Image.fromarray(np.full((16, 16, 3), c, dtype=np.uint8)) for c in (0, 128, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


# name -> (file bytes, what the user should see: None means a normal result)
UPLOADS = {
    "text renamed .png": (b"hello, I am a text file", "not an image"),
    "truncated PNG": (encoded(Image.fromarray(PHOTO), "PNG")[:300], "damaged"),
    "decompression bomb 20000x20000": (encoded(Image.new("1", (20000, 20000)), "PNG"), "megapixels"),
    "1x1 pixel": (encoded(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"), None),
    "animated GIF": (animated_gif(), None),
    "CMYK JPEG": (encoded(Image.fromarray(PHOTO).convert("CMYK"), "JPEG"), None),
    "16-bit PNG": (encoded(Image.fromarray((PHOTO[..., 0].astype(np.uint16) * 257)), "PNG"), None),
    "grayscale": (encoded(Image.fromarray(PHOTO).convert("L"), "PNG"), None),
    "RGBA": (encoded(Image.fromarray(PHOTO).convert("RGBA"), "PNG"), None),
}


@pytest.fixture(scope="module")
def client(live_app):
    return Client(live_app.url, verbose=False), live_app.model_dir


def ilvr(c, model_dir, image, down_factor=4, range_t=0, steps=5, samples=1, seed=0):
    return c.predict(handle_file(image), model_dir, down_factor, range_t, steps, samples, seed, False, api_name="/ilvr")


@pytest.mark.parametrize("name", list(UPLOADS))
def test_awkward_uploads_get_a_message_or_a_result_and_the_next_request_works(client, tmp_path, name):
    c, model_dir = client
    data, message = UPLOADS[name]
    path = write(tmp_path / "upload.png", data)
    if message is None:
        gallery, _ = ilvr(c, model_dir, path)
        assert len(gallery) == 3
    else:
        with pytest.raises(Exception, match=message) as refused:
            ilvr(c, model_dir, path)
        assert Path(path).name not in str(refused.value)  # no server paths in messages
        assert "attack" not in str(refused.value)  # PIL's wording for a big image is not the user's business
    gallery, _ = ilvr(c, model_dir, "assets/chelsea.png")
    assert len(gallery) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"down_factor": 3}, "down_factor 3 is not allowed"),
        ({"steps": -5}, "num_inference_steps must be an integer from 1"),
        ({"steps": 10**9}, "num_inference_steps must be an integer from 1 to 1000"),
        ({"range_t": 5000}, "range_t must be an integer from 0"),
        ({"samples": 1000}, "batch_size must be an integer from 1 to"),
        ({"seed": -1}, "seed must be a whole number"),
    ],
)
def test_out_of_range_values_through_the_api_are_refused_clearly(client, kwargs, message):
    c, model_dir = client
    with pytest.raises(Exception, match=message):
        ilvr(c, model_dir, "assets/astronaut.png", **kwargs)


def test_missing_image_is_refused(client):
    c, model_dir = client
    with pytest.raises(Exception, match="Upload a reference image first"):
        c.predict(None, model_dir, 4, 0, 5, 1, 0, False, api_name="/ilvr")


PROMPTS = "a photo of a cat\na photo of a dog"
UNSUPERVISED, LEARNED, FROM_FILE = "principal", "learned", "file"
# every endpoint's arguments in order, with values that work (few steps, one sample)
GOOD = {
    "/guidance": dict(prompts_text=PROMPTS, target="a photo of a cat", model_id=None, scale=10, sampler="ddim",
                      gradient="fixed_eps", eta=0, steps=10, samples=1, seed=0, sweep=False, sweep_scales="0, 5"),
    "/cycle": dict(image="assets/astronaut.png", mode="reconstruct", source_id=None, target_id=None, target_prompt="",
                   source_prompt="", strength=0.5, eta=1.0, steps=4, guidance_scale=10, exact_gradient=False,
                   pnp_steps=0, step_size=1e-3, seed=0, source_class=None, target_class=None, sdedit=True,
                   preview_every=0),
    "/asyrp": dict(image="assets/astronaut.png", model_id=None, source=UNSUPERVISED, k=1, file_path=None, scale=1.0,
                    strip=False, auto=False, t_edit=500, t_boost=200, steps=4, seed=0, preview_every=0),
    "/asyrp_learn": dict(image="assets/astronaut.png", model_id=None, source_text="a face",
                          target_text="a smiling face", kind="global", iterations=1, t_edit=500, steps=4),
}


def call(c, model_dir, api_name, **changes):
    args = GOOD[api_name] | {key: model_dir for key in ("model_id", "source_id")} | changes
    for key in ("image", "file_path"):
        if isinstance(args.get(key), str):
            args[key] = handle_file(args[key])
    return c.predict(*[args[key] for key in GOOD[api_name]], api_name=api_name)


# (endpoint, changed arguments, what the user should see). Values past a slider's range are refused by Gradio
# itself where the event preprocesses its inputs (/guidance), by the tab or the pipeline where it does not.
BAD = [
    ("/guidance", dict(prompts_text="", target=""), "Write the label prompts"),
    ("/guidance", dict(prompts_text=" \n \n", target="a photo of a cat"), "Write the label prompts"),
    ("/guidance", dict(prompts_text="a photo of a cat"), "at least two non-empty label prompts"),
    ("/guidance", dict(target="a photo of a bird"), "not one of the label prompts; pick one of: a photo of a cat, "),
    ("/guidance", dict(steps=-5), "less than minimum value 10"),
    ("/guidance", dict(steps=10**9), "greater than maximum value 1000"),
    ("/guidance", dict(scale=1e30), "greater than maximum value 100"),
    ("/guidance", dict(scale=-3), "less than minimum value 0"),
    ("/guidance", dict(samples=1000), "greater than maximum value 8"),
    ("/guidance", dict(eta=5), "greater than maximum value 1"),
    ("/guidance", dict(seed=-1), "less than minimum value 0"),
    ("/guidance", dict(sampler="euler"), "not in the list of choices"),
    ("/guidance", dict(sweep=True, sweep_scales="0, 1e30"), "Sweep scales must be from 0 to 100"),
    ("/guidance", dict(sweep=True, sweep_scales="-5, nan"), "Sweep scales must be from 0 to 100"),
    ("/guidance", dict(sweep=True, sweep_scales="small, big"), "Write the sweep scales as numbers"),
    ("/guidance", dict(sweep=True, sweep_scales=""), "Give from 1 to 8 sweep scales"),
    ("/cycle", dict(image=None), "Upload an image first"),
    ("/cycle", dict(mode="dream"), "Pick a mode: reconstruct, translate, text, class"),
    ("/cycle", dict(mode="translate", target_id=None), "Pick a target model of the same resolution"),
    ("/cycle", dict(mode="translate", target_id="/no/such/model"), "Unknown model; use one of"),
    ("/cycle", dict(mode="translate", target_id="google/ddpm-bedroom-256"), "Could not load 'google/ddpm-bedroom-256'"),
    ("/cycle", dict(mode="text", target_prompt="a photo of a cat sitting on a mat " * 5), "tokens long; CLIP reads at most 77"),
    ("/cycle", dict(mode="text", target_prompt="a cat " * 100), "599 characters long; the limit is 300"),
    ("/cycle", dict(mode="text", target_prompt=""), "Write the target text"),
    ("/cycle", dict(mode="text", target_prompt="   "), "Write the target text"),
    ("/cycle", dict(mode="text", target_prompt="a cat", guidance_scale=1e30), "guidance scale s must be from 0 to 100"),
    ("/cycle", dict(mode="text", target_prompt="a cat", guidance_scale=-1), "guidance scale s must be from 0 to 100"),
    ("/cycle", dict(mode="text", target_prompt="a cat", step_size=None), "Write a Langevin step size"),
    ("/cycle", dict(mode="text", target_prompt="a cat", pnp_steps=1000), "langevin_steps must be an integer from 1 to 100"),
    ("/cycle", dict(strength=0), "strength must be in (0, 1]"),
    ("/cycle", dict(strength=5), "strength must be in (0, 1]"),
    ("/cycle", dict(eta=0), "eta must be in (0, 1] for the DPM-Encoder"),
    ("/cycle", dict(steps=-5), "num_inference_steps must be an integer from 1 to 999"),
    ("/cycle", dict(steps=10**9), "num_inference_steps must be an integer from 1 to 999"),
    ("/cycle", dict(seed=-1), "the seed must be a whole number"),
    ("/cycle", dict(preview_every=1000), "Preview every k steps: k must be from 0 (automatic) to 100"),
    ("/asyrp", dict(image=None), "Upload an image to edit first"),
    ("/asyrp", dict(source="a guess"), "Pick where the direction comes from"),
    ("/asyrp", dict(scale=1e30), "scale s must be from -3 to 3"),
    ("/asyrp", dict(k=0), "k must be from 1 to 8"),
    ("/asyrp", dict(k=100), "k must be from 1 to 8"),
    ("/asyrp", dict(t_edit=5000), "need 0 <= t_boost <= t_edit <= 1000"),
    ("/asyrp", dict(t_edit=100, t_boost=900), "need 0 <= t_boost <= t_edit <= 1000"),
    ("/asyrp", dict(steps=-5), "num_inference_steps must be an integer from 1 to 1000"),
    ("/asyrp", dict(steps=10**9), "num_inference_steps must be an integer from 1 to 1000"),
    ("/asyrp", dict(source=LEARNED), "Learn a direction first"),
    ("/asyrp", dict(source=FROM_FILE), "Upload a .safetensors direction file first"),
    ("/asyrp", dict(source=FROM_FILE, file_path=b"not a safetensors file"), "is not a safetensors direction file"),
    ("/asyrp", dict(seed=-1), "the seed must be a whole number"),
    ("/asyrp", dict(preview_every=-1), "Preview every k steps: k must be from 0 (automatic) to 100"),
    ("/asyrp_learn", dict(source_text="", target_text=""), "Write both a source text"),
    ("/asyrp_learn", dict(source_text=None, target_text=None), "Write both a source text"),
    ("/asyrp_learn", dict(iterations=0), "iterations must be a whole number >= 1"),
    ("/asyrp_learn", dict(t_edit=-1), "need 0 <= t_boost <= t_edit <= 1000"),
    ("/asyrp_learn", dict(steps=-5), "num_inference_steps must be an integer from 1 to 1000"),
    ("/asyrp_learn", dict(image=None), "Upload an image to edit first"),
]


@pytest.mark.parametrize("api_name, changes, message", BAD, ids=[f"{a} {c}" for a, c, _ in BAD])
def test_bad_inputs_to_every_endpoint_get_a_clear_message(client, tmp_path, api_name, changes, message):
    c, model_dir = client
    if isinstance(changes.get("file_path"), bytes):  # an upload with these contents
        changes = changes | {"file_path": write(tmp_path / "direction.safetensors", changes["file_path"])}
    with pytest.raises(Exception, match=re.escape(message)):
        call(c, model_dir, api_name, **changes)


def test_after_the_bad_inputs_every_endpoint_still_answers(client):
    c, model_dir = client
    gallery, _, _ = call(c, model_dir, "/guidance")
    assert len(gallery) == 2  # the guided sample and the unguided one from the same seed
    gallery, metrics, _ = call(c, model_dir, "/cycle", mode="text", target_prompt="a photo of a cat")
    assert len(gallery) == 4 and "CLIP similarity" in metrics  # input, reconstruction, edit, SDEdit baseline
    gallery, _, _ = call(c, model_dir, "/asyrp")
    assert len(gallery) == 3
    path, _ = call(c, model_dir, "/asyrp_learn")
    assert path.endswith(".safetensors")


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_twenty_concurrent_requests_none_lost_one_load_flat_memory(client):
    c, model_dir = client
    ilvr(c, model_dir, "assets/astronaut.png")  # the model is loaded by now
    memory, served = [], 0
    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            jobs = [pool.submit(ilvr, c, model_dir, "assets/astronaut.png", 4, 0, 3, 1, seed) for seed in range(20)]
            results = [job.result(timeout=300) for job in jobs]  # an error or a lost request fails here
        served += sum(len(gallery) == 3 for gallery, _ in results)
        memory.append(resident_mb())
    print(f"\nload: 3 rounds of 20 concurrent requests, {served} served with their images, "
          f"{loading.cache.load_count[model_dir]} model load(s), RSS after each round (MB): {[round(m) for m in memory]}")
    assert served == 60  # every request got its result
    assert loading.cache.load_count[model_dir] == 1  # 60 requests, one load
    # the first round warms caches (queue, file cache); after it, growth per 20 requests stays small
    assert memory[2] - memory[1] < 100, memory
