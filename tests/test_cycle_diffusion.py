"""CycleDiffusion: the DPM-Encoder is exact, other decoders translate, strength trades faithfulness, CLIP edits."""

import pytest
import torch
from diffusers import DDIMPipeline, DDPMScheduler

from conftest import ddpm_scheduler, tiny_unet
from pipelines import CycleDiffusionPipeline
from pipelines.clip import ClipJudge
from pipelines.clip_guidance import clip_text_score, grad_exact, grad_fixed_eps
from pipelines.cycle_diffusion import CycleLatent, encoder_scheduler, psnr, sigma_t
from pipelines.sampling import abar, eps_theta

STEPS = 6


def smooth_image(seed: int = 0, batch: int = 1) -> torch.Tensor:
    """(B,3,32,32) in [0,1]: a random 4x4 colour grid, bicubically enlarged."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)


def pipeline(unet) -> CycleDiffusionPipeline:
    pipe = CycleDiffusionPipeline(unet=unet, scheduler=ddpm_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_encoder_then_decoder_reconstructs_the_image(unet, eta):
    pipe, image = pipeline(unet), smooth_image(batch=2)
    latents = []
    for seed, strength in [(0, 1.0), (1, 1.0), (2, 0.5)]:
        latents.append(pipe.encode(image, STEPS, eta=eta, strength=strength, generator=gen(seed)))
        error = (pipe.decode(latents[-1], output_type="pt") - image).abs().max().item()
        # G(z) retraces the encoder's chain, which ends on the image; only float32 round-off remains (~1e-5)
        assert error <= 2e-3, (seed, strength, error)
    assert (latents[0].eps - latents[1].eps).abs().mean() > 0.1  # another generator, another latent, same image


def test_latent_has_one_noise_per_step_and_positive_sigma_everywhere(unet):
    latent = pipeline(unet).encode(smooth_image(), STEPS, eta=1.0, strength=0.5, generator=gen(0))
    assert latent.eps.shape == (STEPS // 2, 1, 3, 32, 32) and latent.x_t0.shape == (1, 3, 32, 32)
    scheduler = encoder_scheduler(ddpm_scheduler().config)
    scheduler.set_timesteps(STEPS)
    assert torch.equal(latent.timesteps, scheduler.timesteps[STEPS // 2 :]) and latent.t0 == latent.timesteps[0]
    assert int(scheduler.timesteps[-1]) > 0
    assert all(sigma_t(scheduler, t, 1.0) > 0 for t in scheduler.timesteps)  # the last step included


def test_prior_latent_decodes_like_ddim_pipeline_bit_for_bit(unet):
    """Guidance off (scale 0) is the plain diffusers DDIM sampler from the same noise."""
    eta, scheduler = 1.0, encoder_scheduler(ddpm_scheduler().config)
    expected = DDIMPipeline(unet=unet, scheduler=scheduler)(
        batch_size=2, generator=gen(0), eta=eta, num_inference_steps=STEPS, output_type="np"
    ).images
    scheduler.set_timesteps(STEPS)
    g = gen(0)
    x_T = torch.randn(2, 3, 32, 32, generator=g)
    eps = torch.stack([torch.randn(2, 3, 32, 32, generator=g) for _ in range(STEPS)])
    latent = CycleLatent(x_T, eps, scheduler.timesteps, STEPS, eta)
    got = pipeline(unet).decode(latent, target_prompt="a cat", guidance_scale=0.0, output_type="np")
    assert (got == expected).all()


def test_decoding_with_another_model_changes_the_image(unet):
    pipe, image = pipeline(unet), smooth_image()
    out = pipe(image, target_unet=tiny_unet(seed=1), num_inference_steps=STEPS, generator=gen(0), output_type="pt")
    assert (out.reconstructions - image).abs().max() <= 2e-3
    assert (out.images - image).abs().mean() > 0.05  # the other model's mu_theta moves every step


def test_smaller_strength_stays_closer_to_the_input(unet):
    pipe, target = pipeline(unet), tiny_unet(seed=1)
    image = smooth_image(1, batch=2)

    def mean_psnr(strength):
        return sum(
            psnr(pipe(image, target_unet=target, strength=strength, num_inference_steps=STEPS, reconstruct=False,
                      generator=gen(seed), output_type="pt").images, image)
            for seed in range(2)
        )

    values = [mean_psnr(s) for s in (0.2, 0.5, 1.0)]
    # fewer steps of the other model, started from a less noisy x_t0, leave more of the input
    assert values[0] > values[1] > values[2]


@pytest.mark.parametrize("exact_gradient", [False, True])
def test_text_edit_raises_clip_similarity_to_the_target(unet, tiny_clip, exact_gradient):
    clip = ClipJudge(*tiny_clip)
    pipe, image, prompt = pipeline(unet), smooth_image(2, batch=2), "a red car"
    out = pipe(image, clip=clip, target_prompt=prompt, source_prompt="a blue sky", guidance_scale=300.0,
               exact_gradient=exact_gradient, num_inference_steps=STEPS, generator=gen(0), output_type="pt")
    target = clip.text_embeds([prompt])
    with torch.no_grad():
        edited, plain = (clip.similarity(x * 2 - 1, target) for x in (out.images, out.reconstructions))
    # same z, so the gain is the guidance's; a random CLIP's cosines spread little, hence a small margin
    assert (edited > plain + 1e-3).all(), (edited, plain)


def test_plug_and_play_raises_clip_similarity(unet, tiny_clip):
    clip = ClipJudge(*tiny_clip)
    pipe, image, prompt = pipeline(unet), smooth_image(3), "a red car"
    out = pipe(image, clip=clip, target_prompt=prompt, plug_and_play_steps=4, step_size=1e-3, guidance_scale=300.0,
               num_inference_steps=4, generator=gen(0), output_type="pt")
    target = clip.text_embeds([prompt])
    with torch.no_grad():
        edited, plain = (clip.similarity(x * 2 - 1, target) for x in (out.images, out.reconstructions))
    assert (edited > plain + 1e-3).all(), (edited, plain)


def test_grad_fixed_eps_is_the_x0_gradient_over_sqrt_abar():
    x_t, eps, w = torch.randn(3, 1, 3, 8, 8, generator=gen(0)).unbind(0)
    abar_t = torch.tensor(0.3)
    g = grad_fixed_eps(lambda x, x0: (w * x0).flatten(1).sum(1), x_t, eps, abar_t)
    torch.testing.assert_close(g, w / abar_t.sqrt())  # d x0_hat / d x_t = 1/sqrt(abar_t) with eps fixed


def test_grad_exact_matches_a_finite_difference(tiny_clip):
    unet, clip = tiny_unet(), ClipJudge(*tiny_clip)
    score = clip_text_score(clip, clip.text_embeds(["a red car"]))
    t, abar_t = 500, abar(ddpm_scheduler(), 500)
    x_t, v = torch.randn(2, 1, 3, 32, 32, generator=gen(1)).unbind(0)
    g, _ = grad_exact(score, x_t, lambda x: eps_theta(unet, x, t), abar_t)
    g_fixed = grad_fixed_eps(score, x_t, eps_theta(unet, x_t, t).detach(), abar_t)

    def f(x):
        with torch.no_grad():
            return score(x, (x - (1 - abar_t).sqrt() * eps_theta(unet, x, t)) / abar_t.sqrt()).sum()

    h = 1e-2
    directional = (f(x_t + h * v) - f(x_t - h * v)) / (2 * h)
    # central difference in float32: O(h^2) truncation plus ~1e-5 round-off, well inside 2%
    torch.testing.assert_close((g * v).sum(), directional, rtol=2e-2, atol=1e-4)
    # the cheap gradient ignores d eps / d x_t, so through a random U-Net it differs from the exact one
    assert not torch.allclose(g, g_fixed, rtol=0.1)


def test_callback_sees_every_step_of_encode_and_decode(unet):
    seen = []
    pipeline(unet)(smooth_image(), target_unet=tiny_unet(seed=1), num_inference_steps=STEPS, generator=gen(0),
                   reconstruct=False, callback=lambda step, t, x_t, x0: seen.append(step))
    assert seen == list(range(STEPS)) * 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eta": 0.0}, "eta must be in \\(0, 1\\]"),
        ({"num_inference_steps": 1000}, "from 1 to 999"),
        ({"strength": 0.0}, "strength must be in"),
        ({"target_unet": tiny_unet(sample_size=16)}, "sample_size is 32 for the source and 16"),
        ({"target_unet": tiny_unet(), "target_scheduler": DDPMScheduler(beta_schedule="squaredcos_cap_v2")},
         "noise schedules differ in beta_schedule"),
        ({"target_prompt": "a cat"}, "needs a CLIP model"),
        ({"output_type": "jpeg"}, "output_type"),
    ],
)
def test_bad_arguments_say_what_is_allowed(unet, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipeline(unet)(smooth_image(), **{"num_inference_steps": 2, **kwargs})
