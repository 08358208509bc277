"""Text-to-image models as their repositories publish them, and CycleDiffusion's text edit through its runner.

Copies are written in exactly the published layouts: subfolders with `.safetensors` and `.fp16.safetensors`
(CompVis/stable-diffusion-v1-4, nota-ai/bk-sdm-tiny) or only pickled `.bin` (segmind/tiny-sd), tiny and random."""

import copy
import json

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler
from PIL import Image

from pipelines.models import loading
from pipelines.models.text_to_image import load_text_to_image, text_to_image_patterns
from runners import cycle_text
from runners.__main__ import main
from runners.settings_file import write
from test_stable_cycle_diffusion import sd_components

# CompVis/stable-diffusion-v1-4's file list on main (the weights of each component in four forms, flax and onnx
# besides); bk-sdm-tiny's has the same form without the .bin
SD14_FILES = ["model_index.json", "README.md", "v1-inference.yaml", "safety_checker/config.json",
              "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
              "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
              "tokenizer/vocab.json", "text_encoder/config.json", "unet/config.json", "vae/config.json",
              "unet/diffusion_pytorch_model.msgpack", "unet/diffusion_pytorch_model.onnx"]
for folder, stem in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                     ("text_encoder", "model"), ("safety_checker", "model")):
    bin_stem = "pytorch_model" if stem == "model" else stem
    SD14_FILES += [f"{folder}/{stem}.safetensors", f"{folder}/{stem}.fp16.safetensors",
                   f"{folder}/{bin_stem}.bin", f"{folder}/{bin_stem}.fp16.bin"]


def test_only_the_used_components_in_one_weight_format_are_downloaded():
    cpu = text_to_image_patterns(SD14_FILES, safety=False, fp16=False)
    assert "unet/diffusion_pytorch_model.safetensors" in cpu and "text_encoder/model.safetensors" in cpu
    assert not any(".fp16." in f or f.endswith((".bin", ".msgpack", ".onnx")) for f in cpu)
    assert not any(f.startswith(("safety_checker/", "feature_extractor/")) for f in cpu)  # checker off
    gpu = text_to_image_patterns(SD14_FILES, safety=True, fp16=True)
    weights = [f for f in gpu if f.endswith((".safetensors", ".bin"))]
    assert sorted(weights) == sorted(f"{c}/{s}.fp16.safetensors" for c, s in (
        ("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model"),
        ("safety_checker", "model")))
    assert "feature_extractor/preprocessor_config.json" in gpu
    tiny_sd = [f.replace(".safetensors", ".bin").replace("/model.", "/pytorch_model.") for f in SD14_FILES
               if ".fp16." not in f]
    assert "unet/diffusion_pytorch_model.bin" in text_to_image_patterns(tiny_sd, safety=False, fp16=True)


def write_published(folder, components, weights: str) -> None:
    """The components as a Stable Diffusion repository: model_index.json and one folder each; `weights` "both" writes
    .safetensors and .fp16.safetensors (as CompVis/stable-diffusion-v1-4), "bin" only pickled .bin (segmind/tiny-sd)."""
    folder.mkdir(parents=True)
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.8.0",
             "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "safety_checker": [None, None], "feature_extractor": [None, None]}
    (folder / "model_index.json").write_text(json.dumps(index))
    PNDMScheduler.from_config(components["scheduler"].config).save_pretrained(folder / "scheduler")
    components["tokenizer"].save_pretrained(folder / "tokenizer")
    for name in ("unet", "vae", "text_encoder"):
        model = components[name]
        if weights == "bin":
            model.save_pretrained(folder / name, safe_serialization=False)
            continue
        model.save_pretrained(folder / name)
        copy.deepcopy(model).half().save_pretrained(folder / name, variant="fp16")


@pytest.fixture
def copies(tmp_path, monkeypatch):
    """nota-ai/bk-sdm-tiny as a local copy (tiny, random, published layout), the checker off, a fresh cache."""
    components = sd_components(tmp_path)
    write_published(tmp_path / "copies" / "nota-ai/bk-sdm-tiny", components, "both")
    write_published(tmp_path / "tiny-sd", components, "bin")
    monkeypatch.setenv("STEER_MODEL_DIR", str(tmp_path / "copies"))
    monkeypatch.setenv("STEER_SAFETY_CHECKER", "0")
    monkeypatch.setattr(loading, "cache", loading.ModelCache())
    return tmp_path


def test_published_layouts_load_in_one_format_and_the_bin_only_one_through_the_restricted_loader(copies):
    safetensors, pickled = load_text_to_image("nota-ai/bk-sdm-tiny"), load_text_to_image(str(copies / "tiny-sd"))
    assert safetensors.unet.dtype == torch.float32 and safetensors.safety_checker is None
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(safetensors, name).state_dict(), getattr(pickled, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # the same weights from either format
    assert loading.cache.load_count["nota-ai/bk-sdm-tiny"] == 1 and load_text_to_image("nota-ai/bk-sdm-tiny") is safetensors


def test_a_text_edit_through_the_runner_shows_the_edit_the_baselines_and_each_words_attention(copies):
    settings = cycle_text.Settings("assets/chelsea.png", "nota-ai/bk-sdm-tiny", "a photo of a cat", "a photo of a dog",
                                   steps=5, control="replace", attention_step=2, seed=3, ddib=True)
    seen = []
    result = cycle_text.run(settings, callback=lambda step, total, desc, preview: seen.append((step, total)))
    assert [caption for _, caption in result.gallery] == [
        "input: “a photo of a cat”", "edit: “a photo of a dog”",
        "SDEdit baseline: the same x_t0, fresh noise instead of the encoded ε",
        "DDIB baseline: deterministic DDIM inversion to t0, decoded under the target prompt"]
    assert seen[-1] == (16, 16)  # K = 4 steps of the edit, 4 of SDEdit, 4 + 4 of DDIB's inversion and decoding
    assert not np.array_equal(np.asarray(result.gallery[2][0]), np.asarray(result.gallery[3][0]))
    assert [caption for _, caption in result.attention] == [f"{side}: “{word}”" for side, words in (
        ("source", "a photo of a cat"), ("target", "a photo of a dog")) for word in words.split()]
    assert set(result.metrics["rows"]) == {"edit", "SDEdit baseline (fresh noise)", "DDIB baseline (deterministic)"}
    again = cycle_text.run(settings)
    assert np.array_equal(np.asarray(again.gallery[1][0]), np.asarray(result.gallery[1][0]))  # the seed decides


@pytest.mark.parametrize("changes, message", [
    (dict(source_prompt=""), "Write both prompts"),
    (dict(control="swap"), "Pick a cross-attention control: none, replace, refine"),
    (dict(model_id="google/ddpm-cat-256"), "Unknown text-to-image model; use one of: CompVis/stable-diffusion-v1-4"),
    (dict(control="replace", prompt="a red fluffy dog"), "replace"),
    (dict(prompt="a photo of a dog " * 4), "is 22 tokens long; the text encoder reads at most 16"),  # never cut
])
def test_bad_text_edits_are_refused_with_what_to_write(copies, changes, message):
    settings = dict(image="assets/chelsea.png", model_id="nota-ai/bk-sdm-tiny", source_prompt="a photo of a cat",
                    prompt="a photo of a dog", steps=5) | changes
    with pytest.raises(ValueError, match=message):
        cycle_text.run(cycle_text.Settings(**settings))


def test_a_text_edit_goes_home_and_reproduces_from_the_command_line(copies, tmp_path):
    settings = cycle_text.Settings("assets/chelsea.png", "nota-ai/bk-sdm-tiny", "a photo of a cat", "a photo of a dog",
                                   steps=5, sdedit=False, seed=2)
    result = cycle_text.run(settings)
    _, document = write(cycle_text, settings, [image for image, _ in result.gallery], tmp_path)
    assert main(["reproduce", str(document), "--out", str(tmp_path / "out")]) == 0
    edit = sorted((tmp_path / "out").glob("01-*.png"))[0]
    assert np.array_equal(np.asarray(result.gallery[1][0]), np.asarray(Image.open(edit)))  # the page's edit, bit for bit
