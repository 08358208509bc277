"""Uploads of every awkward kind become (1,3,S,S) tensors in [0,1], or a ValueError that says why."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core import images


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    x = images.load_image(_png_bytes(rgba), 8)
    assert x.shape == (1, 3, 8, 8)
    assert torch.allclose(x, torch.ones_like(x))  # transparent pixels show the white background


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16"])
def test_other_modes_become_rgb(mode):
    gray = Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1)))
    if mode == "I;16":
        image = Image.fromarray((np.asarray(gray, dtype=np.uint16) * 257))
        assert image.mode.startswith("I")
    else:
        image = gray.convert(mode)
    x = images.load_image(image, 16)
    assert x.shape == (1, 3, 16, 16) and 0 <= x.min() and x.max() <= 1
    # the left-to-right ramp survives the conversion (16-bit values are rescaled, not clipped to white)
    assert x[0, :, :, -1].mean() > x[0, :, :, 0].mean() + 0.5


def test_one_pixel_image_is_resized():
    x = images.load_image(Image.new("RGB", (1, 1), (0, 255, 0)), 32)
    assert x.shape == (1, 3, 32, 32)
    assert torch.allclose(x[0, 1], torch.ones(32, 32)) and x[0, 0].max() == 0


def test_non_square_is_centre_cropped():
    # left third red, middle third green, right third blue: the centre crop is all green
    array = np.zeros((30, 90, 3), dtype=np.uint8)
    array[:, :30, 0] = array[:, 30:60, 1] = array[:, 60:, 2] = 255
    x = images.load_image(Image.fromarray(array), 30)
    assert x.shape == (1, 3, 30, 30)
    assert x[0, 1, :, 5:25].min() > 0.95 and x[0, 0, :, 5:25].max() < 0.05


def test_exif_orientation_is_applied():
    array = np.zeros((20, 40, 3), dtype=np.uint8)  # wide image, left half white
    array[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = io.BytesIO()
    Image.fromarray(array).save(data, format="JPEG", exif=exif.tobytes())
    upright = images.open_image(data.getvalue())
    assert upright.size == (20, 40)  # tall once rotated


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 megapixels, tiny on disk
    with pytest.raises(ValueError, match="megapixels"):
        images.load_image(path, 32)


def test_not_an_image_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is text, not a PNG")
    with pytest.raises(ValueError, match="not an image"):
        images.load_image(path, 32)


def test_truncated_png_is_refused():
    data = _png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ValueError, match="damaged"):
        images.load_image(data[: len(data) // 2], 32)


def test_tensor_input_is_checked():
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        images.to_model_input(torch.rand(1, 1, 8, 8), 8, torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        images.to_model_input(torch.rand(1, 3, 8, 8) * 2 - 1, 8, torch.device("cpu"), torch.float32)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(images.to_model_input(x, 8, torch.device("cpu"), torch.float32), x * 2 - 1)


def test_postprocess_round_trip():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.allclose(images.postprocess(x, "pt"), (x + 1) / 2)
    assert images.postprocess(x, "np").shape == (2, 8, 8, 3)
    assert len(images.postprocess(x, "pil")) == 2
    with pytest.raises(ValueError, match="output_type"):
        images.postprocess(x, "jpeg")
