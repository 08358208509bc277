"""CycleDiffusion: the DPM-Encoder is exact, other decoders translate, strength trades faithfulness, CLIP edits."""

import pytest
import torch
from diffusers import DDIMPipeline, DDPMScheduler, UNet2DModel

from conftest import ddpm_scheduler, tiny_unet
from pipelines import CycleDiffusionPipeline, make_scheduler
from pipelines.core.clip import ClipJudge
from pipelines.cycle_diffusion.dpm_encoder import CycleLatent, encoder_scheduler
from pipelines.core.metrics import psnr
from pipelines.core.sampling import abar, eps_theta, sigma_t
from pipelines.core.scores import clip_text_score, score_gradient
from training.shapes import CENTROID_DY, make_batch, measure_batch

STEPS = 6
BUNDLED_STEPS, BUNDLED_STRENGTH = 25, 0.5  # the chain starts at t0 = 441: enough noise to redraw the outline


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


def tiny_class_unet() -> UNet2DModel:
    """tiny_unet with 4 class embeddings (labels 0..2, 3 the null class), as the bundled model."""
    torch.manual_seed(0)
    config = {key: value for key, value in tiny_unet().config.items() if not key.startswith("_")}
    return UNet2DModel(**{**config, "num_class_embeds": 4}).eval()


@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_encoder_then_decoder_reconstructs_the_image(unet, eta):
    pipe, image = pipeline(unet), smooth_image(batch=2)
    latents = []
    for seed, strength in [(0, 1.0), (1, 1.0), (2, 0.5)]:
        latents.append(pipe.encode(image, num_inference_steps=STEPS, eta=eta, strength=strength, generator=gen(seed)))
        error = (pipe.decode(latents[-1], output_type="pt").images - image).abs().max().item()
        # G(z) retraces the encoder's chain, which ends on the image; only float32 round-off remains (~1e-5)
        assert error <= 2e-3, (seed, strength, error)
    assert (latents[0].eps - latents[1].eps).abs().mean() > 0.1  # another generator, another latent, same image


def test_latent_has_one_noise_per_step_and_positive_sigma_everywhere(unet):
    latent = pipeline(unet).encode(smooth_image(), num_inference_steps=STEPS, eta=1.0, strength=0.5, generator=gen(0))
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
    got = pipeline(unet).decode(latent, target_prompt="a cat", guidance_scale=0.0, output_type="np").images
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


@pytest.mark.parametrize("gradient", ["fixed_eps", "exact"])
def test_text_edit_raises_clip_similarity_to_the_target(unet, tiny_clip, gradient):
    clip = ClipJudge(*tiny_clip)
    pipe, image, prompt = pipeline(unet), smooth_image(2, batch=2), "a red car"
    out = pipe(image, clip=clip, target_prompt=prompt, source_prompt="a blue sky", guidance_scale=300.0,
               gradient=gradient, num_inference_steps=STEPS, generator=gen(0), output_type="pt")
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


def test_fixed_eps_gradient_is_the_x0_gradient_over_sqrt_abar():
    x_t, eps, w = torch.randn(3, 1, 3, 8, 8, generator=gen(0)).unbind(0)
    abar_t = torch.tensor(0.3)
    g, _ = score_gradient(lambda x, x0: (w * x0).flatten(1).sum(1), x_t, lambda x: eps, abar_t, gradient="fixed_eps")
    torch.testing.assert_close(g, w / abar_t.sqrt())  # d x0_hat / d x_t = 1/sqrt(abar_t) with eps fixed


def test_exact_gradient_matches_a_finite_difference(tiny_clip):
    unet, clip = tiny_unet(), ClipJudge(*tiny_clip)
    score = clip_text_score(clip, clip.text_embeds(["a red car"]))
    t, abar_t = 500, abar(ddpm_scheduler(), 500)
    x_t, v = torch.randn(2, 1, 3, 32, 32, generator=gen(1)).unbind(0)
    g, _ = score_gradient(score, x_t, lambda x: eps_theta(unet, x, t), abar_t, gradient="exact")
    g_fixed, _ = score_gradient(score, x_t, lambda x: eps_theta(unet, x, t), abar_t, gradient="fixed_eps")

    def f(x):
        with torch.no_grad():
            return score(x, (x - (1 - abar_t).sqrt() * eps_theta(unet, x, t)) / abar_t.sqrt()).sum()

    h = 1e-2
    directional = (f(x_t + h * v) - f(x_t - h * v)) / (2 * h)
    # central difference in float32: O(h^2) truncation plus ~1e-5 round-off, well inside 2%
    torch.testing.assert_close((g * v).sum(), directional, rtol=2e-2, atol=1e-4)
    # the cheap gradient ignores d eps / d x_t, so through a random U-Net it differs from the exact one
    assert not torch.allclose(g, g_fixed, rtol=0.1)


@pytest.mark.parametrize(
    "run, reconstruct, total",
    [("reconstruct", True, 6), ("reconstruct", False, 6), ("translate", True, 9), ("translate", False, 6),
     ("plug-and-play", True, 11), ("translate + SDEdit", True, 12)],
)
def test_callback_sees_every_step_of_every_stage_with_one_running_index(unet, tiny_clip, run, reconstruct, total):
    """K = 3 steps (6 x strength 0.5) each for the encoder, the reconstruction, the result and the SDEdit baseline,
    one per Langevin step."""
    pipe, seen, pnp_steps = pipeline(unet), [], 2 if run == "plug-and-play" else 0
    sdedit = run.endswith("SDEdit")
    kwargs = {"translate": {"target_unet": tiny_unet(seed=1)},
              "translate + SDEdit": {"target_unet": tiny_unet(seed=1), "sdedit_baseline": True},
              "plug-and-play": {"clip": ClipJudge(*tiny_clip), "target_prompt": "a red car",
                                "plug_and_play_steps": pnp_steps}}.get(run, {})
    pipe(smooth_image(), num_inference_steps=STEPS, strength=0.5, reconstruct=reconstruct, generator=gen(0),
         callback=lambda step, t, x_t, x0: seen.append(step), **kwargs)
    assert pipe.total_steps(num_inference_steps=STEPS, strength=0.5, reconstruct=reconstruct,
                            plug_and_play_steps=pnp_steps, translate_or_edit=run != "reconstruct",
                            sdedit_baseline=sdedit) == total
    assert seen == list(range(total))


def test_decode_honours_return_dict(unet):
    pipe = pipeline(unet)
    latent = pipe.encode(smooth_image(), num_inference_steps=2, generator=gen(0))
    (images,) = pipe.decode(latent, output_type="pt", return_dict=False)
    assert torch.equal(images, pipe.decode(latent, output_type="pt").images)


def test_plug_and_play_runs_the_chain_of_the_target_model(unet, tiny_clip):
    pipe, clip, image = pipeline(unet), ClipJudge(*tiny_clip), smooth_image(7)
    args = dict(clip=clip, target_prompt="a red car", plug_and_play_steps=1, guidance_scale=300.0,
                num_inference_steps=2, reconstruct=False, output_type="pt")
    own = pipe(image, generator=gen(0), **args).images
    other = pipe(image, target_unet=tiny_unet(seed=1), generator=gen(0), **args).images
    assert (own - other).abs().mean() > 1e-2  # the target model's G, in the Langevin steps and the decoding


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gradient": "exact"}, "gradient='exact' does not apply to plug-and-play guidance"),
        ({"target_prompt": None}, "plug-and-play guidance needs a target_prompt"),
        ({"gradient": "through"}, "gradient 'through' is not supported"),
    ],
)
def test_plug_and_play_refuses_what_it_would_ignore_before_any_step(unet, tiny_clip, kwargs, message):
    seen = []
    with pytest.raises(ValueError, match=message):
        pipeline(unet)(smooth_image(), **{"clip": ClipJudge(*tiny_clip), "target_prompt": "a red car",
                                          "plug_and_play_steps": 2, "num_inference_steps": 2, **kwargs},
                       callback=lambda step, *state: seen.append(step))
    assert seen == []


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


def test_class_conditional_latent_reconstructs_under_its_class_and_translates_under_another():
    pipe, image = pipeline(tiny_class_unet()), smooth_image(4, batch=2)
    latent = pipe.encode(image, num_inference_steps=STEPS, strength=0.5, generator=gen(0), class_labels=[0, 2])
    assert latent.class_labels.tolist() == [0, 2]  # recorded, so that decode(latent) needs no labels
    # G(z | c_source) retraces the encoder's chain: only float32 round-off remains (~1e-5)
    assert (pipe.decode(latent, output_type="pt").images - image).abs().max() <= 2e-3
    other = pipe.encode(image, num_inference_steps=STEPS, strength=0.5, generator=gen(0), class_labels=1)
    assert (other.eps - latent.eps).abs().mean() > 1e-3  # the encoder's mu_theta sees the class
    for labels in ([1, 1], 3):  # another class, and the null class: another decoder, another image
        translated = pipe.decode(latent, output_type="pt", class_labels=labels).images
        assert (translated - image).abs().mean() > 1e-2, labels  # random class embeddings move mu_theta every step


def test_call_translates_from_source_class_to_target_class():
    pipe, image = pipeline(tiny_class_unet()), smooth_image(5)
    same = pipe(image, class_labels=0, target_class_labels=0, strength=0.5, num_inference_steps=STEPS,
                generator=gen(0), output_type="pt")
    assert torch.equal(same.images, same.reconstructions)  # decoding under the source class is the reconstruction
    out = pipe(image, class_labels=0, target_class_labels=2, strength=0.5, num_inference_steps=STEPS,
               generator=gen(0), output_type="pt")
    assert torch.equal(out.reconstructions, same.reconstructions) and out.latent.class_labels.tolist() == [0]
    assert (out.reconstructions - image).abs().max() <= 2e-3 and (out.images - image).abs().mean() > 1e-2


def test_plug_and_play_runs_the_chain_under_the_target_class(tiny_clip):
    pipe, clip = pipeline(tiny_class_unet()), ClipJudge(*tiny_clip)
    latent = pipe.encode(smooth_image(6), num_inference_steps=2, generator=gen(0), class_labels=0)
    edited = pipe.plug_and_play(latent, clip=clip, target_prompt="a red car", langevin_steps=1, class_labels=2,
                                generator=gen(1))
    assert edited.class_labels.tolist() == [2]  # decode(edited) decodes under the class Langevin used


@pytest.mark.parametrize(
    "unet_kind, kwargs, message",
    [
        ("plain", {"class_labels": 0}, "this model has no class embeddings"),
        ("plain", {"target_class_labels": 1}, "this model has no class embeddings"),
        ("class", {"class_labels": 4}, "integers from 0 to 3 \\(3 is the null class"),
        ("class", {"target_class_labels": -1}, "integers from 0 to 3"),
        ("class", {"class_labels": [0, 1]}, "or a list of 1 of them \\(one per image\\); got \\[0, 1\\]"),
        ("class", {"target_class_labels": "square"}, "integers from 0 to 3"),
        ("class", {"target_class_labels": 1.0}, "integers from 0 to 3"),
    ],
)
def test_bad_class_labels_say_what_is_allowed(unet_kind, kwargs, message):
    pipe = pipeline(tiny_class_unet() if unet_kind == "class" else tiny_unet())
    with pytest.raises(ValueError, match=message):
        pipe(smooth_image(), num_inference_steps=2, **kwargs)


def centroid(m) -> torch.Tensor:
    """The shape's centre of mass (x, y) in pixels: a triangle's lies r/3 below its bounding square's centre."""
    return torch.tensor(m.center) + torch.tensor([0.0, CENTROID_DY[m.label] * m.size])


def test_bundled_class_translation_changes_the_class_and_keeps_colour_and_position(bundled):
    """Every source -> target pair of the bundled model: 8 generator images per class, each encoded under its class
    and decoded under each of the two others; measured by training.shapes (no model)."""
    pipe = CycleDiffusionPipeline(unet=bundled.unet, scheduler=make_scheduler(bundled, "ddim"))
    pipe.set_progress_bar_config(disable=True)
    images, shapes = make_batch(96, 16, seed=0)
    keep = torch.cat([(shapes.label == k).nonzero()[:8, 0] for k in range(3)])  # (24,), 8 of each class
    x, source = images[keep], shapes.label[keep]
    true_colour, true_centroid = shapes.color[keep], shapes.center[keep] + torch.stack(
        [torch.zeros(24), torch.tensor([CENTROID_DY[int(k)] for k in source]) * shapes.size[keep]], dim=1)
    latent = pipe.encode(x, num_inference_steps=BUNDLED_STEPS, strength=BUNDLED_STRENGTH, generator=gen(0),
                         class_labels=source.tolist())
    # reconstruction under the source class is exact: float32 round-off only (~1e-6 measured)
    assert (pipe.decode(latent, output_type="pt").images - x).abs().max() <= 1e-4
    fresh = CycleLatent(torch.randn(latent.x_t0.shape, generator=gen(1)),
                        torch.randn(latent.eps.shape, generator=gen(2)), latent.timesteps, latent.num_inference_steps,
                        latent.eta)
    errors, unrelated_errors = [], []
    for shift in (1, 2):
        target = (source + shift) % 3
        translated = measure_batch(pipe.decode(latent, output_type="pt", class_labels=target.tolist()).images)
        unrelated = measure_batch(pipe.decode(fresh, output_type="pt", class_labels=target.tolist()).images)
        changed = torch.tensor([m.label for m in translated]) == target
        colour_error = (torch.tensor([m.color for m in translated]) - true_colour).norm(dim=1)  # RGB distance
        centroid_error = (torch.stack([centroid(m) for m in translated]) - true_centroid).norm(dim=1)  # pixels
        unrelated_colour = (torch.tensor([m.color for m in unrelated]) - true_colour).norm(dim=1)
        errors.append(centroid_error)
        unrelated_errors.append((torch.stack([centroid(m) for m in unrelated]) - true_centroid).norm(dim=1))
        for k in range(3):
            pair, rows = f"{k}->{(k + shift) % 3}", source == k
            assert changed[rows].float().mean() >= 0.8, pair  # measured 100% for every pair
            # measured pair means 0.03..0.15; a random latent decoded under the same class: 0.52..0.60
            assert colour_error[rows].mean() < 0.25 < unrelated_colour[rows].mean(), (pair, colour_error[rows])
            # measured pair means 0.3..1.8 px (redrawing a circle or square as a triangle moves the mass most)
            assert centroid_error[rows].mean() < 2.0, (pair, centroid_error[rows])
    # measured: 1.0 px on average, a random latent 2.7 px (shapes keep a margin, so random centres are not far)
    assert torch.cat(errors).mean() < 0.5 * torch.cat(unrelated_errors).mean()


def test_the_encoded_noise_of_the_bundled_model_looks_like_its_own_prior(bundled):
    # z = (x_t0, eps_t0..eps_1) of an image the model knows: every part nearly N(0, I), so |z|^2 / dim is near 1
    # (measured 1.07 for this circle at 50 steps); an encoder that got mu_theta or sigma_t wrong leaves the noise
    # scaled or shifted, which this would show
    pipe = CycleDiffusionPipeline(unet=bundled.unet, scheduler=make_scheduler(bundled, "ddim"))
    pipe.set_progress_bar_config(disable=True)
    latent = pipe.encode("assets/shapes/red-circle.png", num_inference_steps=50, class_labels=0,
                         generator=torch.Generator().manual_seed(0))
    z = latent.statistics()
    assert abs(z["mean"]) < 0.05 and 0.9 < z["squared_norm_per_dim"] < 1.25, z
    assert z["squared_norm_per_dim"] == pytest.approx(z["std"] ** 2 + z["mean"] ** 2, rel=1e-3)


def test_sdedit_baseline_keeps_x_t0_draws_fresh_noise_and_does_not_reconstruct(unet):
    pipe, image = pipeline(unet), smooth_image()
    latent = pipe.encode(image, num_inference_steps=STEPS, eta=1.0, strength=0.5, generator=gen(0))
    sdedit = latent.with_fresh_noise(gen(1))
    assert torch.equal(sdedit.x_t0, latent.x_t0) and sdedit.eps.shape == latent.eps.shape
    assert torch.equal(sdedit.timesteps, latent.timesteps) and sdedit.eta == latent.eta
    assert (sdedit.eps - latent.eps).abs().mean() > 0.1
    rebuilt = psnr(pipe.decode(latent, output_type="pt").images, image)
    baseline = psnr(pipe.decode(sdedit, output_type="pt").images, image)
    assert rebuilt > 40 and baseline < rebuilt - 10  # the encoded noise, not x_t0 alone, carries the image back
    # __call__ decodes the baseline as it decodes the result, with noise drawn after the encoder's
    generator = gen(0)
    expected = pipe.decode(pipe.encode(image, num_inference_steps=STEPS, eta=1.0, strength=0.5, generator=generator)
                           .with_fresh_noise(generator), output_type="pt").images
    out = pipe(image, num_inference_steps=STEPS, eta=1.0, strength=0.5, sdedit_baseline=True, generator=gen(0),
               output_type="pt")
    assert torch.equal(out.sdedit_images, expected) and pipe(image, num_inference_steps=STEPS).sdedit_images is None


def test_sigma_t_is_the_noise_level_of_the_ddim_step():
    """sigma_t from alphas_cumprod alone is the same float as DDIMScheduler's own eta sqrt(variance), at every step,
    over 500 steps too (where the last step's prev is timestep 0, not the final abar)."""
    for steps in (1, 6, 50, 999):
        scheduler = encoder_scheduler(ddpm_scheduler().config)
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            prev = int(t) - 1000 // steps  # DDIMScheduler.step's previous timestep
            for eta in (0.3, 1.0):
                assert torch.equal(sigma_t(scheduler, t, eta), eta * scheduler._get_variance(int(t), prev).sqrt())
