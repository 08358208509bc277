"""StableCycleDiffusionPipeline on tiny random Stable Diffusion components: diffusers' deprecated CycleDiffusionPipeline
for the same seed, the exact reconstruction, cross-attention control and the argument checks."""

import json
import re

import pytest
import torch
from diffusers import (AutoencoderKL, CycleDiffusionPipeline, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from pipelines import StableCycleDiffusionPipeline
from pipelines.cycle_diffusion.attention_control import AttentionControl, attention_map_size, token_alignment

WORDS = ["a", "photo", "of", "cat", "dog", "red", "fluffy", "sitting", "on", "mat"]
STEPS = 5


def write_tokenizer(folder) -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary is the characters and WORDS, each word merged into one token."""
    chars = sorted(set("".join(WORDS)))
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    merges = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.append(pieces[0])
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(dict.fromkeys(vocab))}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


def sd_components(folder) -> dict:
    """Stable Diffusion's layout at toy size: 32x32 images, 16x16 latents, cross-attention at 8x8, 16 text tokens."""
    tokenizer = write_tokenizer(folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), norm_num_groups=16, cross_attention_dim=32,
                                attention_head_dim=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")).eval()
    vae = AutoencoderKL(block_out_channels=(32, 64), norm_num_groups=16, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)).eval()
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # Stable Diffusion's schedule
    return dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    return sd_components(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def pipe(components):
    pipe = StableCycleDiffusionPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def image():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (2,3,H,W) in [0,1]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def edit(pipe, images, **kwargs):
    args = dict(prompt="a photo of a dog", source_prompt="a photo of a cat", image=images[:1],
                num_inference_steps=STEPS, output_type="latent", generator=seeded())
    return pipe(**{**args, **kwargs})


@pytest.mark.parametrize("settings", [
    dict(strength=0.8, guidance_scale=3.0, eta=0.1),  # the paper's eta, classifier-free guidance on the target only
    dict(strength=0.6, guidance_scale=1.0, eta=1.0),  # no classifier-free guidance, DDPM-like noise
    dict(strength=1.0, guidance_scale=7.5, source_guidance_scale=2.0, eta=0.5),  # both chains guided, from pure noise
])
def test_same_images_as_diffusers(components, pipe, image, settings):
    reference = CycleDiffusionPipeline(**components)
    reference.set_progress_bar_config(disable=True)
    ours = edit(pipe, image, output_type="np", **settings).images
    theirs = edit(reference, image, output_type="np", **settings).images
    # the same U-Net batches and the same operations in the same order: on CPU the two agree bit for bit; 1e-6 leaves
    # room for a math library that splits the batch differently
    assert ours.shape == theirs.shape == (1, 32, 32, 3)
    assert abs(ours - theirs).max() <= 1e-6


class FlagFirstImage(torch.nn.Module):
    """A stand-in for StableDiffusionSafetyChecker (whose weights need a download): flags the first image, blacks it."""

    device = torch.device("cpu")

    def forward(self, images, clip_input):
        flags = [i == 0 for i in range(len(images))]
        images[0] = torch.zeros_like(images[0])
        return images, flags


def test_safety_checker_blacks_out_a_flagged_image_as_diffusers_does(components, image):
    extractor = CLIPImageProcessor(size=32, crop_size=32)
    checked = dict(components, safety_checker=FlagFirstImage(), feature_extractor=extractor)
    ours, theirs = StableCycleDiffusionPipeline(**checked), CycleDiffusionPipeline(**checked)
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    ours = edit(ours, image, num_images_per_prompt=2, guidance_scale=1.0, output_type="np")
    theirs = edit(theirs, image, num_images_per_prompt=2, guidance_scale=1.0, output_type="np")
    assert ours.nsfw_content_detected == theirs.nsfw_content_detected == [True, False]
    assert ours.images[0].max() == 0 and ours.images[1].max() > 0.5  # the flagged edit is black, the other is kept
    assert abs(ours.images - theirs.images).max() <= 1e-6


def test_batch_of_two_is_two_edits(components, pipe, image):
    reference = CycleDiffusionPipeline(**components)
    reference.set_progress_bar_config(disable=True)
    # num_images_per_prompt=2 without classifier-free guidance, where diffusers' class batches correctly: same latents
    ours = edit(pipe, image, num_images_per_prompt=2, guidance_scale=1.0).images
    theirs = edit(reference, image, num_images_per_prompt=2, guidance_scale=1.0).images
    assert ours.shape == (2, 4, 16, 16) and (ours - theirs).abs().max() <= 1e-6
    assert (ours[0] - ours[1]).abs().max() > 0.1  # two draws of the noise, two different edits
    # two prompts and images under guidance, one generator each: each image edited as diffusers edits it alone
    prompts, sources = ["a photo of a dog", "a red cat"], ["a photo of a cat", "a cat"]
    ours = edit(pipe, image, prompt=prompts, source_prompt=sources, image=image, guidance_scale=3.0,
                generator=[seeded(0), seeded(1)]).images
    alone = torch.cat([edit(reference, image, prompt=prompts[i], source_prompt=sources[i], image=image[i:i + 1],
                            guidance_scale=3.0, generator=seeded(i)).images for i in range(2)])
    # a batch of two changes the summation order inside the VAE's and the text encoder's matrix products (~1e-6),
    # carried through the chain's steps
    assert (ours - alone).abs().max() <= 1e-4


@pytest.mark.parametrize("strength, guidance_scale", [(0.2, 4.0), (0.6, 1.0), (1.0, 4.0)])
def test_same_prompt_and_scale_end_on_the_encoded_latents(pipe, image, strength, guidance_scale):
    z0 = pipe.image_to_latents(image[:1] * 2 - 1, seeded())  # E(x), the generator's first draw in the call
    out = edit(pipe, image, prompt="a photo of a cat", strength=strength, guidance_scale=guidance_scale,
               source_guidance_scale=guidance_scale)
    # the target chain is the source chain: x_prev = mu + sigma_t (x_src_prev - mu) / sigma_t, z0 at the last step;
    # the division and multiplication by sigma_t round at 1e-7 relative
    assert (out.images - z0).abs().max() <= 1e-4
    assert (z0 - out.latent.x_t0).abs().max() > 0.05  # the chain did start away from z0


def test_encode_then_decode_is_the_call(pipe, image):
    latent = pipe.encode(image[:1], "a photo of a cat", num_inference_steps=STEPS, strength=0.8, generator=seeded())
    decoded = pipe.decode(latent, "a photo of a dog", guidance_scale=3.0, output_type="latent").images
    called = edit(pipe, image, guidance_scale=3.0, strength=0.8)
    assert torch.equal(latent.x_t0, called.latent.x_t0)
    # encode's source chain takes eps_c where the call computes eps_u + 1 (eps_c - eps_u): rounding only
    assert (decoded - called.images).abs().max() <= 1e-4
    assert len(latent.eps) == pipe.total_steps(num_inference_steps=STEPS, strength=0.8)


@pytest.mark.parametrize("control", [dict(cross_attention_control="replace"), dict(cross_attention_control="refine"),
                                     dict(cross_attention_control="replace", reweight=("cat", 1.0))])
def test_control_with_identical_prompts_is_the_identity(pipe, image, control):
    same = dict(prompt="a photo of a cat", guidance_scale=3.0, source_guidance_scale=3.0, strength=0.8)
    plain, controlled = [], []
    edit(pipe, image, **same, callback=lambda k, t, x, x0: plain.append(x0))
    edit(pipe, image, **same, **control, cross_replace_steps=1.0, self_replace_steps=1.0,
         callback=lambda k, t, x, x0: controlled.append(x0))
    # the controlled processor computes softmax(QK^T) explicitly where the default one calls SDPA: rounding only
    assert len(plain) == len(controlled) == pipe.total_steps(num_inference_steps=STEPS, strength=0.8)
    assert max((a - b).abs().max() for a, b in zip(plain, controlled)) <= 1e-4


def test_replace_makes_the_target_attend_like_the_source(pipe, image, monkeypatch):
    calls = []
    edit_cross, control_call = AttentionControl.edit_cross, AttentionControl.__call__

    def recording_edit_cross(self, src, tgt):
        edited = edit_cross(self, src, tgt)
        calls.append((self.step, src, tgt, edited))
        return edited

    def recording_call(self, probs, heads, is_cross):
        edited = control_call(self, probs, heads, is_cross)
        if not is_cross:
            M, E = (p.view(self.num_chunks, -1, heads, *p.shape[1:]) for p in (probs, edited))
            calls.append((self.step, M[-2], M[-1], E[-1]))
        return edited

    monkeypatch.setattr(AttentionControl, "edit_cross", recording_edit_cross)
    monkeypatch.setattr(AttentionControl, "__call__", recording_call)
    out = edit(pipe, image, guidance_scale=3.0, cross_attention_control="replace", cross_replace_steps=1.0,
               self_replace_steps=0.4, attention_map_step=2)
    cross = [(k, src, tgt, edited) for k, src, tgt, edited in calls if src.shape[-1] == 16]  # keys: the 16 tokens
    K = pipe.total_steps(num_inference_steps=STEPS)
    layers = sum(name.endswith("attn2.processor") for name in pipe.unet.attn_processors)  # down 1, mid 1, up 2
    assert sorted({k for k, *_ in cross}) == list(range(K)) and len(cross) == K * layers
    assert all(torch.equal(edited, src) for _, src, _, edited in cross)
    assert any((tgt - src).abs().max() > 1e-3 for _, src, tgt, _ in cross)  # "cat" and "dog" do attend differently
    # self-attention: the source's for the first int(0.4 * 5) = 2 steps, the target's own after
    selfs = [(k, src, tgt, edited) for k, src, tgt, edited in calls if src.shape[-1] == 64]
    assert all(torch.equal(edited, src if k < 2 else tgt) for k, src, tgt, edited in selfs)
    maps = out.attention_maps[0]
    assert [token for token, _ in maps["target"]] == ["a", "photo", "of", "a", "dog"]
    assert all(torch.equal(m_src, m_tgt) for (_, m_src), (_, m_tgt) in zip(maps["source"], maps["target"]))
    assert maps["source"][4][1].shape == (8, 8)


@pytest.mark.parametrize("down, latent, size", [
    (("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), 64, 16),  # Stable Diffusion 1.x at 512 px: prompt-to-prompt's
    (("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), 96, 24),  # ... 2.x at 768 px: a quarter of the latent
    (("CrossAttnDownBlock2D",) * 3, 32, 16),  # faces-text-32: its 16 x 16, not its 32 x 32 or 8 x 8
])
def test_attention_maps_are_recorded_at_a_quarter_of_the_latent_and_at_least_16(down, latent, size):
    unet = UNet2DConditionModel(block_out_channels=(8,) * len(down), norm_num_groups=8, cross_attention_dim=8,
                                layers_per_block=1, down_block_types=down, attention_head_dim=2,
                                up_block_types=tuple(reversed([b.replace("Down", "Up") for b in down])))
    assert attention_map_size(unet, latent, latent) == (size, size)


def test_refine_and_reweight_edit_the_right_columns(components):
    tokenizer = components["tokenizer"]
    A, keep = token_alignment(tokenizer, "refine", "a photo of a cat", "a red photo of a fluffy cat")
    # target tokens: <start> a red photo of a fluffy cat <end>; source: <start> a photo of a cat <end>
    assert keep[:9].tolist() == [1, 1, 0, 1, 1, 1, 0, 1, 1] and A[:9][keep[:9]].tolist() == [0, 1, 2, 3, 4, 5, 6]
    control = AttentionControl.from_prompts(tokenizer, ["a photo of a cat"], ["a red photo of a fluffy cat"],
                                            mode="refine", reweight=("fluffy", 2.0), num_chunks=2,
                                            cross_replace_steps=0.1, num_inference_steps=10)  # int(0.1 * 11) = 1 step
    src, tgt = torch.rand(2, 1, 3, 5, 16, generator=seeded()).unbind(0)  # (N, heads, Q, L)
    edited = control.edit_cross(src, tgt)
    assert torch.equal(edited[..., 3], src[..., 2])  # "photo" attends where the source's "photo" did
    assert torch.equal(edited[..., 2], tgt[..., 2])  # the new "red" keeps its own column
    assert torch.equal(edited[..., 6], 2.0 * tgt[..., 6])  # the new "fluffy", reweighted by 2
    control.step = 1  # past cross_replace_steps: the target's own maps
    assert torch.equal(control.edit_cross(src, tgt), tgt)


@pytest.mark.parametrize("kwargs, message", [
    (dict(cross_attention_control="replace", prompt="a photo of a fluffy cat"), "same token count"),
    (dict(cross_attention_control="refine", prompt="a red dog"), "'photo' of 'a photo of a cat' is missing"),
    (dict(reweight=("horse", 2.0)), "not in the target prompt"),
    (dict(cross_attention_control="swap"), "'replace' or 'refine'"),
    (dict(strength=0.1), "strength * num_inference_steps must make at least one step"),
    (dict(strength=1.5), "strength must be in (0, 1]"),
    (dict(eta=0.0), "eta must be in (0, 1]"),
    (dict(guidance_scale=1.0, source_guidance_scale=2.0), "raise guidance_scale or pass source_guidance_scale=1"),
    (dict(output_type="jpg"), "output_type must be one of"),
    (dict(prompt=["a dog", "a cat"], source_prompt=["a", "b", "c"]), "source_prompt must be one, or one per prompt"),
    (dict(attention_map_step=4), "0 to 3"),
    (dict(num_images_per_prompt=2, generator=[seeded()]), "one per image (2)"),
])
def test_bad_arguments_fail_before_any_unet_call(pipe, image, kwargs, message):
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=re.escape(message)):
            edit(pipe, image, **kwargs)
    finally:
        handle.remove()
    assert calls == []


def test_callback_sees_total_steps(pipe, image):
    steps = []
    edit(pipe, image, strength=0.6, guidance_scale=3.0, callback=lambda k, t, x, x0: steps.append((k, t, x.shape)))
    K = pipe.total_steps(num_inference_steps=STEPS, strength=0.6)
    assert [k for k, *_ in steps] == list(range(K)) and K == 3
    assert [t for _, t, _ in steps] == pipe.scheduler.timesteps[STEPS - K:].tolist()
    assert steps[0][2] == (1, 4, 16, 16)


def test_pixel_space_model_runs_without_a_vae(components, image):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                                block_out_channels=(32, 64), norm_num_groups=16, cross_attention_dim=32,
                                attention_head_dim=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")).eval()
    pipe = StableCycleDiffusionPipeline(**{**components, "vae": None, "unet": unet})
    pipe.set_progress_bar_config(disable=True)
    out = edit(pipe, image, prompt="a photo of a cat", output_type="pt", strength=0.6, guidance_scale=1.0)
    # same prompt and scale: the chain ends on the image itself, which is its own latent without a VAE
    assert out.images.shape == (1, 3, 32, 32) and (out.images - image[:1]).abs().max() <= 1e-4
    assert out.latent.x_t0.shape == (1, 3, 32, 32)
    larger = torch.nn.functional.interpolate(image[:1], size=64)
    for given in (larger, pipe.image_processor.pt_to_numpy(larger), pipe.image_processor.numpy_to_pil(
            pipe.image_processor.pt_to_numpy(larger / 2 + 0.5))):
        with pytest.raises(ValueError, match="the image must be 32x32; got 64x64"):
            edit(pipe, given, prompt="a photo of a cat", strength=0.6, guidance_scale=1.0)


def test_from_pretrained_on_a_stable_diffusion_folder(components, pipe, image, tmp_path):
    parts = {k: v for k, v in components.items() if k != "scheduler"}
    StableDiffusionPipeline(**parts, scheduler=PNDMScheduler.from_config(components["scheduler"].config),
                            image_encoder=None).save_pretrained(tmp_path)
    loaded = StableCycleDiffusionPipeline.from_pretrained(tmp_path)  # PNDM, as Stable Diffusion repositories ship
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, DDIMScheduler) and loaded.scheduler.config.steps_offset == 1
    assert torch.equal(edit(loaded, image, guidance_scale=3.0).images, edit(pipe, image, guidance_scale=3.0).images)
