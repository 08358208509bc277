import gradio as gr
import pytest
import torch
from diffusers import DDIMPipeline, DDPMPipeline, DDPMScheduler

from conftest import ddpm_scheduler, tiny_unet
from pipelines import NoiseAwareClassifier
from pipelines.core.clip import ClipJudge
from pipelines.guidance import ClassifierGuidancePipeline, ClipZeroShotClassifier

STEPS = 4


@pytest.fixture(scope="module")
def small_unet():
    return tiny_unet(sample_size=16)


class RedVsBlue(torch.nn.Module):
    """A clean-image toy classifier on x0_hat: class 0 = 'more red than blue', class 1 = the opposite."""

    def forward(self, x_t, t, x0_hat):
        red_minus_blue = (x0_hat[:, 0] - x0_hat[:, 2]).mean(dim=(1, 2))  # (B,)
        return 4 * torch.stack([red_minus_blue, -red_minus_blue], dim=1)  # (B,2)


class NoiseAware(torch.nn.Module):
    """A noise-aware classifier shaped like a trained one: reads x_t and a timestep embedding, ignores x0_hat."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.t_emb = torch.nn.Embedding(1000, 4)
        self.head = torch.nn.Linear(4, 3)
        self.seen_t = []

    def forward(self, x_t, t, x0_hat=None):
        self.seen_t.append(t.clone())
        h = self.conv(x_t).mean(dim=(2, 3)) + self.t_emb(t)  # (B,4)
        return self.head(torch.tanh(h))  # (B,3)


def run(pipe, labels, scale, sampler="ddim", seed=0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return pipe(labels, guidance_scale=scale, sampler=sampler, num_inference_steps=STEPS, generator=generator,
                output_type="pt", **kwargs)


def test_scale_zero_is_ddpm_pipeline(small_unet, scheduler):
    pipe = ClassifierGuidancePipeline(small_unet, scheduler, RedVsBlue())
    ours = run(pipe, [0, 1, 0], 0.0, sampler="ddpm").images
    plain = DDPMPipeline(small_unet, scheduler)(
        batch_size=3, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    assert torch.equal(ours, plain)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_scale_zero_is_ddim_pipeline(small_unet, eta):
    """With clip_sample the guided DDIM step re-derives eps from the clipped x0 at every scale, so at s = 0 it is
    DDIMPipeline(use_clipped_model_output=True); without clip_sample it is DDIMPipeline's default."""
    for clip_sample in (True, False):
        scheduler = DDPMScheduler(beta_schedule="linear", clip_sample=clip_sample, variance_type="fixed_small")
        pipe = ClassifierGuidancePipeline(small_unet, scheduler, RedVsBlue())
        ours = run(pipe, [0, 1, 0], 0.0, sampler="ddim", eta=eta).images
        plain = DDIMPipeline(small_unet, scheduler)(
            batch_size=3, num_inference_steps=STEPS, eta=eta, generator=torch.Generator().manual_seed(0),
            use_clipped_model_output=clip_sample, output_type="pt",
        ).images
        assert torch.equal(ours, plain)
    # the random UNet's x0 predictions leave [-1,1], so the clipping convention is visible: the default differs
    default = DDIMPipeline(small_unet, ddpm_scheduler())(
        batch_size=3, num_inference_steps=STEPS, eta=eta, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    clipped = run(ClassifierGuidancePipeline(small_unet, ddpm_scheduler(), RedVsBlue()), [0, 1, 0], 0.0, eta=eta)
    assert not torch.equal(clipped.images, default)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_guidance_moves_log_p_toward_the_target(small_unet, scheduler, sampler):
    pipe = ClassifierGuidancePipeline(small_unet, scheduler, RedVsBlue())
    log_p0 = {}  # mean log p(0 | x_0) over the same four seeds
    for name, labels, scale in [("plain", [0] * 4, 0.0), ("to 0", [0] * 4, 30.0), ("to 1", [1] * 4, 30.0)]:
        log_p0[name] = run(pipe, labels, scale, sampler=sampler).probabilities[:, 0].log().mean()
    assert log_p0["to 0"] > log_p0["plain"] > log_p0["to 1"]


def test_noise_aware_module_plugs_in(small_unet, scheduler):
    """A module that reads (x_t, t) only: it gets t as a (B,) long tensor of the sampler's timesteps, and since it
    ignores x0_hat the exact and the fixed-eps gradients are the same gradient."""
    classifier = NoiseAware()
    pipe = ClassifierGuidancePipeline(small_unet, scheduler, classifier)
    exact = run(pipe, [0, 2], 5.0, gradient="exact")
    scheduler.set_timesteps(STEPS)
    seen = torch.stack(classifier.seen_t[:STEPS])  # (STEPS,B); the last call judges the final samples at t = 0
    assert seen.dtype == torch.long and torch.equal(seen, scheduler.timesteps.view(-1, 1).expand(-1, 2))
    assert torch.equal(classifier.seen_t[-1], torch.zeros(2, dtype=torch.long))
    cheap = run(pipe, [0, 2], 5.0, gradient="fixed_eps")
    # same math, but the exact mode runs the U-Net under autograd: allow float reordering noise
    torch.testing.assert_close(exact.images, cheap.images, atol=1e-5, rtol=0)
    assert exact.probabilities.shape == (2, 3)


def test_project_noise_aware_classifier_plugs_in_unchanged(small_unet, scheduler):
    """The project's NoiseAwareClassifier (diffusers ModelMixin) as it stands: its config's num_classes is used to
    reject a bad label before sampling, and guidance toward class 1 raises p(1) over the unguided run."""
    torch.manual_seed(0)
    classifier = NoiseAwareClassifier(sample_size=16, num_classes=3, block_out_channels=(16, 32), norm_num_groups=8)
    pipe = ClassifierGuidancePipeline(small_unet, scheduler, classifier.eval().requires_grad_(False))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        pipe([3], num_inference_steps=1)
    plain, guided = (run(pipe, [1, 1], s, sampler="ddpm").probabilities[:, 1].log().mean() for s in (0.0, 50.0))
    assert guided > plain


def test_learned_variance_is_refused_by_the_ddpm_sampler(small_unet):
    scheduler = DDPMScheduler(variance_type="learned_range")
    with pytest.raises(ValueError, match="sampler='ddim'"):
        ClassifierGuidancePipeline(small_unet, scheduler, RedVsBlue())([0], sampler="ddpm", num_inference_steps=2)


def test_clip_zero_shot_classifier_end_to_end(small_unet, scheduler, tiny_clip):
    model, tokenizer = tiny_clip
    judge = ClipJudge(model, tokenizer)
    classifier = ClipZeroShotClassifier(judge, ["a photo of a smiling person", "a photo of a person with glasses"])
    calls = []
    judge.tokenizer = lambda *a, **k: calls.append(a) or tokenizer(*a, **k)
    pipe = ClassifierGuidancePipeline(small_unet, scheduler, classifier)
    results = {mode: run(pipe, [0, 1], 200.0, gradient=mode) for mode in ("exact", "fixed_eps")}
    assert calls == []  # the text embeddings were computed once, before sampling
    plain = run(pipe, [0, 1], 0.0)
    target = torch.tensor([[0], [1]])
    for result in results.values():
        assert result.probabilities.shape == (2, 2)
        torch.testing.assert_close(result.probabilities.sum(dim=1), torch.ones(2))  # a distribution per sample
        assert result.probabilities.gather(1, target).log().mean() > plain.probabilities.gather(1, target).log().mean()
    # the two gradients differ (the exact one also flows through the U-Net), so the samples differ
    assert not torch.allclose(results["exact"].images, results["fixed_eps"].images)


def test_non_finite_guidance_is_an_error(small_unet, scheduler):
    pipe = ClassifierGuidancePipeline(small_unet, scheduler, RedVsBlue())
    with pytest.raises(ValueError, match="smaller guidance_scale"):
        run(pipe, [0], 1e39, sampler="ddpm")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(class_labels=[]), "non-empty"),
        (dict(class_labels=[0, 2]), r"0\.\.1"),
        (dict(class_labels=[-1]), r"0\.\.1"),
        (dict(guidance_scale=-1.0), ">= 0"),
        (dict(guidance_scale=float("nan")), ">= 0"),
        (dict(num_inference_steps=0), "from 1 to 1000"),
        (dict(num_inference_steps=-3), "from 1 to 1000"),
        (dict(sampler="euler"), "'ddim' or 'ddpm'"),
        (dict(gradient="finite_differences"), "'exact'"),
        (dict(eta=1.5), "from 0"),
    ],
)
def test_bad_arguments(small_unet, scheduler, tiny_clip, kwargs, message):
    classifier = ClipZeroShotClassifier(ClipJudge(*tiny_clip), ["a cat", "a dog"])
    pipe = ClassifierGuidancePipeline(small_unet, scheduler, classifier)
    args = dict(class_labels=[0], guidance_scale=1.0, num_inference_steps=2) | kwargs
    with pytest.raises(ValueError, match=message):
        pipe(**args)


@pytest.mark.parametrize("prompts", [[], ["a cat"], ["a cat", "  "]])
def test_too_few_label_prompts(tiny_clip, prompts):
    with pytest.raises(ValueError, match="at least two"):
        ClipZeroShotClassifier(ClipJudge(*tiny_clip), prompts)


def test_missing_classifier_undeclared_classes_and_callback(small_unet, scheduler):
    with pytest.raises(ValueError, match="no classifier"):
        ClassifierGuidancePipeline(small_unet, scheduler)([0], num_inference_steps=2)
    with pytest.raises(ValueError, match=r"0\.\.1 \(2 classes\)"):  # K read from its logits
        run(ClassifierGuidancePipeline(small_unet, scheduler, RedVsBlue()), [0, 2], 1.0)
    seen = []
    pipe = ClassifierGuidancePipeline(small_unet, scheduler, RedVsBlue())
    run(pipe, [0], 1.0, callback=lambda step, t, x_t, x0_hat: seen.append((step, t, x_t.shape, x0_hat.shape)))
    scheduler.set_timesteps(STEPS)
    assert [(s, t) for s, t, _, _ in seen] == list(enumerate(scheduler.timesteps.tolist()))
    assert all(a == b == (1, 3, 16, 16) for _, _, a, b in seen)


def test_tab_runs_a_sweep_on_local_models(tiny_model_dir, tiny_clip, tmp_path, monkeypatch):
    from pipelines.models import loading
    from ui import guidance_tab

    model, tokenizer = tiny_clip
    model.save_pretrained(tmp_path / "clip", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "clip")
    monkeypatch.setattr(loading, "cache", loading.ModelCache())
    monkeypatch.setenv("STEER_CLIP_MODEL", str(tmp_path / "clip"))
    monkeypatch.setenv("STEER_MODEL", str(tiny_model_dir))  # the operator's model: the page offers it
    prompts = "a photo of a cat\na photo of a dog"
    args = dict(prompts_text=prompts, target="a photo of a dog", model_id=str(tiny_model_dir), scale=1.0,
                sampler="ddim", gradient="fixed_eps", eta=0.0, steps=2, samples=2, seed=0, sweep=True,
                sweep_scales="0, 20", progress=lambda *a, **k: None)
    gallery, _, _ = guidance_tab.run_guidance(**args)
    assert [caption.split(":")[0] for _, caption in gallery] == [
        "s=0, sample 1", "s=0, sample 2", "s=20, sample 1", "s=20, sample 2"]
    with pytest.raises(gr.Error, match="not one of the label prompts"):
        guidance_tab.run_guidance(**args | dict(target="a photo of a car"))
    with pytest.raises(gr.Error, match="at least two"):  # the pipeline's ValueError, shown to the student
        guidance_tab.run_guidance(**args | dict(prompts_text="a photo of a dog"))


def judged_target(bundled, sampler, scale, per_class, steps=25):
    """Fraction of samples that training.shapes.measure judges the target, per target class (circle, square,
    triangle), guided by the bundled noise-aware classifier; the same x_T for every scale."""
    from pipelines.models import loading
    from training.shapes import measure_batch

    pipe = ClassifierGuidancePipeline(bundled.unet, loading.make_scheduler(bundled), loading.load_classifier("shapes-16"))
    pipe.set_progress_bar_config(disable=True)
    labels = [y for y in range(3) for _ in range(per_class)]
    images = pipe(labels, guidance_scale=scale, sampler=sampler, num_inference_steps=steps, gradient="fixed_eps",
                  generator=torch.Generator().manual_seed(0), output_type="pt").images
    judged = torch.tensor([m.label for m in measure_batch(images)]).view(3, per_class)  # (class, sample)
    return (judged == torch.arange(3).view(3, 1)).float().mean(dim=1)  # (3,)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_noise_aware_guidance_draws_the_target_class(bundled, sampler):
    """Measured (16 per class, 25 steps, seed 0): unguided 0.12-0.31 (ddim) and 0.19-0.25 (ddpm) judged the target,
    guided at s = 10 0.81-0.88 (ddim) and 0.75-1.0 (ddpm); with the gradient's sign flipped it is 0.0."""
    unguided, guided = (judged_target(bundled, sampler, s, per_class=16) for s in (0.0, 10.0))
    # unguided, the model draws each class about a third of the time (16 samples: a binomial sd of 0.12)
    assert unguided.mean() < 0.45
    # guided: at least 80% of all samples are the target, and no class is left behind (circle is the hardest)
    assert guided.mean() >= 0.8 and guided.min() >= 0.7


def test_ddpm_guidance_scales_the_step_by_sigma(bundled):
    """x_{t-1} ~ N(mu + s Sigma g, Sigma): Sigma of a 25-step respacing is at most ~0.3, so s = 0.5 steers only
    part of the way (measured 0.56 of the samples judged the target, from 0.23 unguided); with Sigma left out
    (s g) the same s gives 0.96, with sqrt(Sigma) 0.71."""
    unguided, weak = (judged_target(bundled, "ddpm", s, per_class=16) for s in (0.0, 0.5))
    assert unguided.mean() < weak.mean() <= 0.7


def test_tab_offers_the_models_own_classifier_and_refuses_it_for_a_model_without_one(tiny_model_dir, monkeypatch):
    from pipelines.models import loading
    from ui import guidance_tab as tab

    kind, _, target, sampler = tab.model_controls("shapes-16", tab.FACE_PROMPTS, None)
    assert kind == tab.NOISE_AWARE and target.choices == [(c, c) for c in ("circle", "square", "triangle")]
    assert sampler == "ddpm"  # the bundled models' DDIM samples are often not clean
    kind, prompts, target, sampler = tab.model_controls("google/ddpm-celebahq-256", tab.FACE_PROMPTS, "triangle")
    assert kind == tab.CLIP_ZERO_SHOT and prompts.visible and target.value == "a photo of a smiling person"
    assert sampler == "ddim"
    monkeypatch.setattr(loading, "cache", loading.ModelCache())
    monkeypatch.setenv("STEER_MODEL", str(tiny_model_dir))  # the operator's model: the page offers it
    args = dict(prompts_text="", target="circle", model_id=str(tiny_model_dir), scale=1.0, sampler="ddim",
                gradient="fixed_eps", eta=0.0, steps=2, samples=1, seed=0, sweep=False, sweep_scales="",
                classifier_kind=tab.NOISE_AWARE, progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="comes with no noise-aware classifier.*shapes-16"):
        tab.run_guidance(**args)
    with pytest.raises(gr.Error, match="not one of the model's classes; pick one of: circle, square, triangle"):
        tab.run_guidance(**args | dict(model_id="shapes-16", target="a photo of a dog"))


def test_trace_reads_the_target_log_probability_and_the_gradient_without_changing_the_samples(small_unet, scheduler):
    pipe = ClassifierGuidancePipeline(small_unet, scheduler, RedVsBlue())
    maps = (0, STEPS // 2)
    traced = {s: run(pipe, [0, 0], s, sampler="ddpm", gradient="fixed_eps", return_log_probs=True,
                     gradient_map_steps=maps) for s in (0.0, 30.0)}
    assert torch.equal(traced[30.0].images, run(pipe, [0, 0], 30.0, sampler="ddpm", gradient="fixed_eps").images)
    assert traced[0.0].log_probs.shape == (STEPS, 2) and set(traced[30.0].gradient_maps) == set(maps)
    scheduler.set_timesteps(STEPS)
    assert torch.equal(traced[30.0].timesteps, scheduler.timesteps)  # the t of each step, for the maps' captions
    assert not traced[0.0].gradient_maps[0].any()  # no gradient is taken at s = 0
    # RedVsBlue's gradient with respect to x_t is uniform per channel: |g| = const over the pixels, nonzero
    g = traced[30.0].gradient_maps[0]  # at x_T: later the guided samples saturate RedVsBlue (p = 1, g = 0)
    assert g.shape == (2, 16, 16) and g.min() > 0 and torch.allclose(g, g[:, :1, :1].expand_as(g), rtol=1e-4)
    # guidance raises log p(target | x_t) along the way, not only at the end; at x_T the two runs are the same image
    assert torch.equal(traced[0.0].log_probs[0], traced[30.0].log_probs[0])
    assert (traced[30.0].log_probs[STEPS // 2:] > traced[0.0].log_probs[STEPS // 2:]).all()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_total_steps_counts_the_callbacks_of_a_call(small_unet, scheduler, sampler):
    pipe = ClassifierGuidancePipeline(small_unet, scheduler, RedVsBlue())
    for steps in (2, 5):
        seen = []
        pipe([0], guidance_scale=1.0, sampler=sampler, num_inference_steps=steps, output_type="pt",
             generator=torch.Generator().manual_seed(0), callback=lambda step, t, x_t, x0_hat: seen.append(step))
        assert seen == list(range(pipe.total_steps(num_inference_steps=steps)))


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_Sigma_t_is_the_variance_the_ddpm_step_samples_with(variance_type, spacing):
    """Sigma_t from alphas_cumprod alone equals DDPMScheduler's own variance at every step of several respacings.
    The scheduler clamps its fixed_small variance to >= 1e-20 for a log it never takes here, so at the last step
    (beta_tilde = 0 exactly) the two differ by that 1e-20; everywhere else they are the same float."""
    from pipelines.guidance import Sigma_t

    for steps in (1, 7, 50, 1000):
        scheduler = DDPMScheduler(variance_type=variance_type, timestep_spacing=spacing)
        scheduler.set_timesteps(steps)
        ours = torch.stack([Sigma_t(scheduler, t) for t in scheduler.timesteps])
        theirs = torch.stack([scheduler._get_variance(int(t)) for t in scheduler.timesteps])
        assert torch.equal(ours[:-1], theirs[:-1]), (steps, variance_type, spacing)
        torch.testing.assert_close(ours[-1], theirs[-1], rtol=0, atol=1e-20)


def test_from_an_image_at_scale_zero_is_sdedit_with_the_same_noise(small_unet, scheduler):
    """x_{t0} = q_sample(x0, t0, eps) with eps the draw x_T would be, then the plain sampler from t0: SDEdit."""
    from diffusers.utils.torch_utils import randn_tensor

    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    pipe = ClassifierGuidancePipeline(small_unet, scheduler, RedVsBlue())
    ours = run(pipe, [0, 1], 0.0, sampler="ddpm", image=image, strength=0.5)
    reference, generator = ddpm_scheduler(), torch.Generator().manual_seed(0)
    reference.set_timesteps(STEPS)
    timesteps = reference.timesteps[STEPS - 2:]  # round(0.5 * 4) = 2 steps from t0
    x = reference.add_noise((image * 2 - 1).expand(2, -1, -1, -1), randn_tensor((2, 3, 16, 16), generator=generator),
                            timesteps[:1])
    for t in timesteps:
        x = reference.step(small_unet(x, t).sample, t, x, generator=generator).prev_sample
    assert torch.equal(ours.images, (x / 2 + 0.5).clamp(0, 1)) and torch.equal(ours.timesteps, timesteps)
    guided = run(pipe, [0, 1], 30.0, sampler="ddpm", image=image, strength=0.5)
    assert not torch.equal(guided.images, ours.images)
    with pytest.raises(ValueError, match="strength must be in"):
        run(pipe, [0], 1.0, image=image, strength=0)


def test_classifier_free_guidance_is_conditional_sampling_at_one_and_the_null_class_at_zero():
    """eps_hat = eps(x_t, null) + w (eps(x_t, y) - eps(x_t, null)): w = 1 samples the class, w = 0 the null class, each
    bit for bit as plain class-conditional sampling does; other w move away from both; a classifier, when given, only
    reads p(y | x_t)."""
    from conftest import class_conditional_ddpm, tiny_class_unet

    unet = tiny_class_unet()
    pipe = ClassifierGuidancePipeline(unet, ddpm_scheduler(), NoiseAware())
    cfg = {w: run(pipe, [0, 2], w, sampler="ddpm", classifier_free=True, return_log_probs=True) for w in (0.0, 1.0, 3.0)}
    assert torch.equal(cfg[1.0].images, (class_conditional_ddpm(unet, [0, 2], STEPS, seed=0) / 2 + 0.5).clamp(0, 1))
    assert torch.equal(cfg[0.0].images, (class_conditional_ddpm(unet, [3, 3], STEPS, seed=0) / 2 + 0.5).clamp(0, 1))
    assert not torch.equal(cfg[3.0].images, cfg[1.0].images) and cfg[3.0].log_probs.shape == (STEPS, 2)
    alone = ClassifierGuidancePipeline(unet, ddpm_scheduler())(
        [0, 2], guidance_scale=1.0, sampler="ddpm", num_inference_steps=STEPS, classifier_free=True,
        generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.equal(alone.images, cfg[1.0].images) and alone.probabilities is None
    with pytest.raises(ValueError, match="classifier-free guidance needs a class-conditional model"):
        run(ClassifierGuidancePipeline(tiny_unet(16), ddpm_scheduler()), [0], 1.0, classifier_free=True)
    with pytest.raises(ValueError, match="lie in 0..2"):
        run(pipe, [3], 1.0, classifier_free=True)  # the null class is not a target
