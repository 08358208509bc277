"""The app's endpoints driven with gradio_client against the app launched locally on a tiny local model."""

import pytest
from gradio_client import Client, handle_file


@pytest.fixture(scope="module")
def client(live_app):
    url, model_dir = live_app
    return Client(url, verbose=False), model_dir


def test_ilvr_endpoint_returns_reference_low_pass_and_samples(client):
    c, model_dir = client
    gallery, process = c.predict(
        handle_file("assets/astronaut.png"), model_dir, 4, 0, 10, 2, 7, True, api_name="/ilvr"
    )
    captions = [item["caption"] for item in gallery]
    assert captions == ["reference y", "φ_N(y), N=4", "sample 1", "sample 2"]
    assert len(process) == 12  # 6 snapshots of x_t and predicted x0


def test_ilvr_endpoint_is_reproducible_by_seed(client):
    c, model_dir = client
    args = (handle_file("assets/chelsea.png"), model_dir, 8, 0, 10, 1, 3, False)
    first, _ = c.predict(*args, api_name="/ilvr")
    second, _ = c.predict(*args, api_name="/ilvr")
    read = lambda item: open(item["image"], "rb").read()  # noqa: E731
    assert read(first[-1]) == read(second[-1])


def test_bad_input_gives_a_clear_error_and_the_server_keeps_serving(client, tmp_path):
    c, model_dir = client
    with pytest.raises(Exception, match="use one of 2, 4, 8, 16"):
        c.predict(handle_file("assets/astronaut.png"), model_dir, 64, 0, 10, 1, 0, False, api_name="/ilvr")
    text = tmp_path / "fake.png"
    text.write_text("not an image")
    with pytest.raises(Exception, match="not an image"):
        c.predict(handle_file(str(text)), model_dir, 4, 0, 10, 1, 0, False, api_name="/ilvr")
    gallery, _ = c.predict(handle_file("assets/astronaut.png"), model_dir, 4, 0, 5, 1, 0, False, api_name="/ilvr")
    assert len(gallery) == 3
