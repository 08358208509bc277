"""DDIB on a text-to-image model (pipelines.cycle_diffusion.ddib.text_ddib) against diffusers' own DDIM inversion and DDIM sampling,
on tiny random Stable Diffusion components."""

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from test_stable_cycle_diffusion import components, image, pipe, seeded  # noqa: F401 (fixtures)

from pipelines.cycle_diffusion.ddib import text_ddib

STEPS = 10


def guided_eps(components, x, t, prompt: str, w: float) -> torch.Tensor:
    """eps_u + w (eps_c - eps_u) with two separate U-Net calls (eps_c alone when w <= 1)."""
    tokenizer, text_encoder, unet = components["tokenizer"], components["text_encoder"], components["unet"]

    def eps(text: str) -> torch.Tensor:
        ids = tokenizer([text], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
        return unet(x, t, encoder_hidden_states=text_encoder(ids.input_ids)[0]).sample

    if w <= 1:
        return eps(prompt)
    u = eps("")
    return u + w * (eps(prompt) - u)


@torch.no_grad()
def diffusers_ddib(components, image, source: str, target: str, strength: float, w_src: float, w_tgt: float):
    """z0 = E(image); DDIMInverseScheduler over the lowest K timesteps under the source, DDIMScheduler (eta 0) back
    down under the target, both with P unclipped and abar = 1 below the first timestep; D(z)."""
    vae, config = components["vae"], components["scheduler"].config
    z = vae.encode(image * 2 - 1).latent_dist.sample(seeded()) * vae.config.scaling_factor
    inverse = DDIMInverseScheduler.from_config(config, set_alpha_to_one=True, clip_sample=False)
    forward = DDIMScheduler.from_config(config, set_alpha_to_one=True, clip_sample=False)
    inverse.set_timesteps(STEPS), forward.set_timesteps(STEPS)
    K = int(strength * STEPS)
    for t in inverse.timesteps[:K]:
        z = inverse.step(guided_eps(components, z, t, source, w_src), t, z).prev_sample
    for t in forward.timesteps[STEPS - K:]:
        z = forward.step(guided_eps(components, z, t, target, w_tgt), t, z, eta=0.0).prev_sample
    return (vae.decode(z / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("strength, w_src, w_tgt", [(0.8, 1.0, 3.0), (0.5, 1.0, 1.0), (1.0, 2.0, 5.0)])
def test_text_ddib_is_ddim_inversion_then_ddim_decoding(components, pipe, image, strength, w_src, w_tgt):
    ours = text_ddib(pipe, image[:1], "a photo of a cat", "a photo of a dog", strength=strength,
                     num_inference_steps=STEPS, guidance_scale=w_tgt, source_guidance_scale=w_src,
                     generator=seeded(), output_type="pt").images
    reference = diffusers_ddib(components, image[:1], "a photo of a cat", "a photo of a dog", strength, w_src, w_tgt)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)  # one batched U-Net call against two


def test_text_ddib_callback_sees_the_inversion_then_the_decoding(pipe, image):
    seen = []
    text_ddib(pipe, image[:1], "a photo of a cat", "a photo of a dog", strength=0.6, num_inference_steps=STEPS,
              guidance_scale=1.0, generator=seeded(), output_type="latent",
              callback=lambda step, t, x, x0: seen.append((step, t)))
    K = pipe.total_steps(num_inference_steps=STEPS, strength=0.6)
    assert [s for s, _ in seen] == list(range(2 * K))
    times = [t for _, t in seen]
    assert times[:K] == sorted(times[:K]) and times[K:] == sorted(times[K:], reverse=True) and times[:K] == times[K:][::-1]


def test_text_ddib_checks_its_arguments_first(pipe, image):
    with pytest.raises(ValueError, match="strength"):
        text_ddib(pipe, image[:1], "a photo of a cat", "a photo of a dog", strength=0.0, num_inference_steps=STEPS)
