"""Images in and out of the pipelines.

Outside the pipelines an image is a PIL image or a float tensor (B,3,H,W) in [0,1];
inside the samplers it is a tensor (B,3,H,W) in [-1,1] on the model's device and dtype.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # ~ a 6300x6300 photo; larger uploads are refused before decoding (decompression bombs)


def open_image(source: str | os.PathLike | bytes | Image.Image) -> Image.Image:
    """An upload (path, bytes or PIL image) as an RGB PIL image, upright per its EXIF orientation.

    RGBA and LA are composited on white, grayscale, palette, CMYK and 16-bit images become 8-bit RGB,
    and an animated image gives its first frame. Raises ValueError for a file that is not an image
    or one over MAX_PIXELS.
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
        except Image.DecompressionBombError as err:  # PIL's own guard fires above ~179 megapixels
            raise ValueError(f"The image is too large to open (over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels); "
                             f"the limit is {MAX_PIXELS / 1e6:.0f}. Resize it and try again.") from err
        except (UnidentifiedImageError, OSError) as err:  # the message names only the kind of file, never its server path
            raise ValueError("This file is not an image we can read. Upload a PNG, JPEG or WebP.") from err
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"The image is {width}x{height} = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {MAX_PIXELS / 1e6:.0f}. Resize it and try again."
        )
    try:
        image.seek(0)
        image = ImageOps.exif_transpose(image)
        image.load()
    except (OSError, SyntaxError) as err:  # truncated or corrupt pixel data
        raise ValueError(f"The image file is damaged ({err}). Save it again as PNG or JPEG.") from err
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: rescale to 8 bits
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to size x size (Lanczos, which antialiases when shrinking)."""
    return ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (1,3,H,W) float32 in [0,1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def load_image(source, size: int) -> torch.Tensor:
    """An upload -> (1,3,size,size) float32 in [0,1], centre-cropped and resized."""
    return pil_to_tensor(center_crop_resize(open_image(source), size))


def to_model_input(image, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A pipeline's image argument (PIL image, path, or tensor (B,3,H,W) in [0,1]) -> (B,3,size,size) in [-1,1]."""
    if isinstance(image, torch.Tensor):
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"an image tensor must be (B,3,H,W) in [0,1]; got shape {tuple(image.shape)}")
        if image.shape[-2:] != (size, size):
            raise ValueError(f"an image tensor must be {size}x{size} for this model; got {tuple(image.shape[-2:])}")
        if image.min() < 0 or image.max() > 1:
            raise ValueError("an image tensor must hold values in [0,1]")
        x = image.float()
    else:
        x = load_image(image, size)
    return (x * 2 - 1).to(device=device, dtype=dtype)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [-1,1] -> float32 in [0,1], clamped."""
    return (x.float() / 2 + 0.5).clamp(0, 1)


OUTPUT_TYPES = ("pil", "np", "pt")


def check_output_type(output_type: str) -> None:
    """Called by every pipeline before its first U-Net evaluation, so a bad output_type costs no sampling."""
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type {output_type!r} is not supported; use 'pil', 'np' or 'pt'")


def postprocess(x: torch.Tensor, output_type: str = "pil"):
    """(B,3,H,W) in [-1,1] -> list of PIL images, np (B,H,W,3) or pt (B,3,H,W), all in [0,1]."""
    check_output_type(output_type)
    x = to_unit(x)
    if output_type == "pt":
        return x
    array = x.cpu().permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return array
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array]


def upscale_for_display(image: Image.Image, min_side: int = 256) -> Image.Image:
    """Small samples (e.g. 32x32) enlarged with nearest neighbour so a gallery shows pixels, not blur."""
    factor = max(1, min_side // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def noise_image(z: torch.Tensor) -> Image.Image:
    """A noise map (3,H,W) of N(0, I) as a picture: -3 sigma black, 0 grey, +3 sigma white."""
    return postprocess(z[None].float() / 3)[0]


def heat_image(m: torch.Tensor) -> Image.Image:
    """A non-negative map (H,W) as a grey picture, white at its maximum."""
    m = m.float() / m.max().clamp_min(1e-12)
    return postprocess((m * 2 - 1).expand(1, 3, *m.shape))[0]
