"""A stranger hammering the Space: every awkward upload and out-of-range value through the API, and load."""

import concurrent.futures
import io

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from pipelines import models

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
    url, model_dir = live_app
    return Client(url, verbose=False), model_dir


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
        with pytest.raises(Exception, match=message):
            ilvr(c, model_dir, path)
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


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_twenty_concurrent_requests_none_lost_one_load_flat_memory(client):
    c, model_dir = client
    ilvr(c, model_dir, "assets/astronaut.png")  # the model is loaded by now
    memory = []
    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            jobs = [pool.submit(ilvr, c, model_dir, "assets/astronaut.png", 4, 0, 3, 1, seed) for seed in range(20)]
            results = [job.result(timeout=300) for job in jobs]
        assert all(len(gallery) == 3 for gallery, _ in results)  # every request got its result
        memory.append(resident_mb())
    assert models.load_count[model_dir] == 1  # 60 requests, one load
    # the first round warms caches (queue, file cache); after it, growth per 20 requests stays small
    assert memory[2] - memory[1] < 100, memory
