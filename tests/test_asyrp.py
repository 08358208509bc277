"""Asyrp: the identity cases against plain DDIM, linearity and additivity of h-space edits, decoding a given x_T,
direction finding (principal, mean difference, learned with a tiny CLIP), direction files, the automatic interval."""

import pytest
import torch
from diffusers import DDIMScheduler
from safetensors.torch import save_file

from conftest import ddpm_scheduler, tiny_unet
from pipelines import AsyrpPipeline
from pipelines.asyrp import interval
from pipelines.asyrp.directions import finding as find, learning
from pipelines.core.clip import ClipJudge
from pipelines.asyrp.directions import DeltaBlock, load_direction, save_direction

STEPS = 5  # timesteps 800, 600, 400, 200, 0
SIZE = 16  # h-space (32, 8, 8)


@pytest.fixture(scope="module")
def pipe():
    pipe = AsyrpPipeline(unet=tiny_unet(SIZE), scheduler=ddpm_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def direction(pipe, seed: int = 0) -> torch.Tensor:
    return torch.randn(pipe.h_shape, generator=torch.Generator().manual_seed(seed))


def edit(pipe, img, d, scale=1.0, seed=0, **kwargs):
    kwargs = {"t_edit": 400, "t_boost": 200, "num_inference_steps": STEPS, "output_type": "pt", **kwargs}
    return pipe(img, direction=d, scale=scale, generator=torch.Generator().manual_seed(seed), **kwargs).images


@torch.no_grad()
def plain_ddim(pipe, x_T, t_boost, seed):
    """diffusers' unclipped DDIM loop from x_T: eta = 0, then eta = 1 below t_boost, noise from the same generator."""
    ddim = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    ddim.set_timesteps(STEPS)
    generator, x = torch.Generator().manual_seed(seed), x_T
    for t in ddim.timesteps:
        eta = 1.0 if t < t_boost else 0.0
        x = ddim.step(pipe.unet(x, t).sample, t, x, eta=eta, generator=generator).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("t_boost", [0, 500])
def test_no_zero_or_unscaled_direction_is_plain_ddim_bit_for_bit(pipe, t_boost):
    img = image()
    expected = plain_ddim(pipe, pipe.invert(img, num_inference_steps=STEPS), t_boost, seed=3)
    d = direction(pipe)
    for d_, scale in ((None, 1.0), (torch.zeros(pipe.h_shape), 1.0), (d, 0.0), ([d, -d * 0], 0.0)):
        got = edit(pipe, img, d_, scale, seed=3, t_edit=600, t_boost=t_boost)
        assert torch.equal(got, expected)


def test_edit_grows_with_scale_and_reverses_with_its_sign(pipe):
    img, d = image(1), direction(pipe, 1)
    # small scales (h has std ~0.7 here), where the paper's linearity holds; large ones saturate the clipped P_t
    strip = edit(pipe, img, d, scale=[0.0, 0.01, 0.02, 0.04, -0.02], t_boost=0)
    change = [(x - strip[0]).abs().mean().item() for x in strip]
    assert change[0] == 0 and 0 < change[1] < change[2] < change[3]
    assert 1.5 < change[3] / change[2] < 2.5  # roughly linear: twice the scale, about twice the change
    # -delta_h moves the image the other way: nearly opposite to +delta_h (exactly so only to first order)
    plus, minus = strip[2] - strip[0], strip[4] - strip[0]
    assert torch.nn.functional.cosine_similarity(plus.flatten(), minus.flatten(), dim=0) < -0.5


def test_a_batch_of_images_gives_every_image_every_scale(pipe):
    imgs, d, scales = torch.cat([image(6), image(7)]), direction(pipe, 4), [0.0, 0.05, -0.05]
    together = edit(pipe, imgs, d, scale=scales, t_boost=0)  # image-major: image b at scale k is row 3b + k
    assert together.shape == (6, 3, SIZE, SIZE)
    for b in range(2):
        alone = edit(pipe, imgs[b:b + 1], d, scale=scales, t_boost=0)
        assert torch.allclose(together[3 * b:3 * b + 3], alone, atol=1e-4)  # batched float round-off only
    assert (together[0] - together[3]).abs().mean() > 0.05  # the second image is not the first one again


def test_directions_add(pipe):
    img, d1, d2 = image(2), direction(pipe, 2), direction(pipe, 3)
    together = edit(pipe, img, [d1, d2])
    assert torch.equal(together, edit(pipe, img, d1 + d2))
    assert (together - edit(pipe, img, d1)).abs().mean() > 1e-3  # the second direction is not ignored


def test_a_given_x_T_is_decoded_without_inverting_again(pipe):
    img, d = image(4), direction(pipe)
    calls = []
    handle = pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        from_image = edit(pipe, img, d, 1.0)
        first = len(calls)
        x_T = pipe(img, direction=d, t_edit=400, t_boost=200, num_inference_steps=STEPS, output_type="pt").x_T
        from_latent = edit(pipe, None, d, 1.0, x_T=x_T)
        last = len(calls) - 2 * first
    finally:
        handle.remove()
    assert first == STEPS + STEPS  # inversion + sampling (the edited and original eps share one call per step)
    assert last == STEPS  # sampling only
    assert torch.equal(from_latent, from_image)
    with pytest.raises(ValueError, match="not both"):
        edit(pipe, img, d, x_T=x_T)


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_inversion_is_the_exact_inverse_of_ddim_for_a_model_with_consistent_eps(eps):
    # a constant eps_theta (a zeroed output layer with bias eps) makes the inversion exact, so decoding must give x_0
    # back up to float round-off; a timestep misalignment would not, nor would a clipped P_t (eps = 0.5 drives P_t
    # far outside [-1,1] at large t) although this scheduler asks for clip_sample
    unet = tiny_unet(SIZE)
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.constant_(unet.conv_out.bias, eps)
    scheduler = ddpm_scheduler()
    assert scheduler.config.clip_sample
    pipe = AsyrpPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    img = image(5)
    x_T = pipe.invert(img, num_inference_steps=STEPS)
    abar_first = pipe.scheduler.alphas_cumprod[pipe.ddim(STEPS).timesteps[0]]
    assert torch.allclose(x_T, abar_first.sqrt() * (img * 2 - 1) + (1 - abar_first).sqrt() * eps, atol=1e-5)
    assert (edit(pipe, img, None, t_boost=0) - img).abs().max() < 1e-5


def test_learned_direction_lowers_the_directional_loss_it_was_trained_on(pipe, tiny_clip):
    judge = ClipJudge(*tiny_clip)
    img, src, trg = image(6), "a photo", "a red photo"
    x_T, text = pipe.invert(img, num_inference_steps=STEPS), learning.text_delta(judge, src, trg, img.device)

    def loss(d) -> float:  # the mean CLIP directional loss over the edit interval: what learning lowers
        losses = learning.edit_losses(pipe, x_T, d, judge, text, t_edit=400, num_inference_steps=STEPS)
        return sum(losses) / len(losses)

    # no edit: the image delta is 0, its cosine with the text delta 0, the loss exactly 1
    assert loss(None) == 1.0
    learned = {}
    for kind in ("global", "implicit"):
        learned[kind] = learning.learn_direction(pipe, img, judge, src, trg, kind=kind, t_edit=400, num_inference_steps=STEPS, iterations=2)
        assert loss(learned[kind]) < 1.0, kind  # the edit now moves CLIP's image embedding toward the target text
    assert loss(-learned["global"]) > 1.0  # and the opposite direction moves it away


def test_learning_stops_when_asked(pipe, tiny_clip):
    seen = []
    learning.learn_direction(pipe, image(8), ClipJudge(*tiny_clip), "a", "b", kind="global", t_edit=800, num_inference_steps=STEPS,
                         iterations=5, progress=lambda i, n, loss: seen.append(i), should_stop=lambda: len(seen) >= 2)
    assert seen == [1, 2]


def test_direction_files_round_trip(pipe, tmp_path):
    d = direction(pipe)
    save_direction(tmp_path / "d.safetensors", d, model_id="m", t_edit=400, num_inference_steps=STEPS, source="a", target="b")
    loaded, meta = load_direction(tmp_path / "d.safetensors", shape=pipe.h_shape, model_id="m")
    assert torch.equal(loaded, d)
    assert (meta["source"], meta["target"], meta["t_edit"], meta["num_inference_steps"], meta["kind"]) == ("a", "b", "400", str(STEPS), "global")

    f_t = DeltaBlock(pipe.h_shape[0])
    torch.nn.init.normal_(f_t.conv2.weight, std=0.1)  # not the zero function, so the comparison means something
    save_direction(tmp_path / "f.safetensors", f_t, model_id="m", t_edit=400, num_inference_steps=STEPS)
    loaded, meta = load_direction(tmp_path / "f.safetensors", shape=pipe.h_shape, model_id="m")
    h = torch.randn(2, *pipe.h_shape)
    assert meta["kind"] == "implicit"
    assert torch.equal(loaded(h, 500), f_t(h, 500))


def test_bad_direction_files_are_refused(pipe, tmp_path):
    torch.save({"delta_h": direction(pipe)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="pickled"):
        load_direction(tmp_path / "pickled.pt", shape=pipe.h_shape)
    save_direction(tmp_path / "other.safetensors", torch.zeros(8, 4, 4), model_id="m", t_edit=400, num_inference_steps=5)
    with pytest.raises(ValueError, match="shape"):
        load_direction(tmp_path / "other.safetensors", shape=pipe.h_shape)
    save_direction(tmp_path / "d.safetensors", direction(pipe), model_id="google/ddpm-cat-256", t_edit=400, num_inference_steps=5)
    with pytest.raises(ValueError, match="ddpm-cat-256"):
        load_direction(tmp_path / "d.safetensors", shape=pipe.h_shape, model_id="google/ddpm-church-256")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ValueError, match="not an Asyrp direction"):
        load_direction(tmp_path / "weights.safetensors", shape=pipe.h_shape)


def test_bad_arguments_are_refused(pipe):
    with pytest.raises(ValueError, match="t_boost <= t_edit"):
        edit(pipe, image(), None, t_edit=200, t_boost=400)
    with pytest.raises(ValueError, match="shape"):
        edit(pipe, image(), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="kind"):
        learning.learn_direction(pipe, image(), None, "a", "b", kind="pca")


def test_unsupervised_directions_are_orthogonal_principal_axes_that_edit(pipe):
    dirs = find.principal_directions(pipe, k=3, num_samples=8, generator=torch.Generator().manual_seed(0))
    assert dirs.shape == (3, *pipe.h_shape)
    flat = dirs.flatten(1)
    gram = flat @ flat.T
    # orthogonal up to float32 round-off in the SVD; sorted by variance explained
    assert (gram - torch.diag(gram.diag())).abs().max() < 1e-3 * gram.diag().max()
    assert gram[0, 0] >= gram[1, 1] >= gram[2, 2] > 0
    assert (edit(pipe, image(), dirs[0]) - edit(pipe, image(), None)).abs().mean() > 1e-3


def test_automatic_interval_follows_the_lpips_thresholds(pipe):
    T = pipe.scheduler.config.num_train_timesteps
    never = lambda x, y: torch.zeros(x.shape[0])  # noqa: E731
    always = lambda x, y: torch.full((x.shape[0],), 2.0)  # noqa: E731
    assert interval.choose_interval(pipe, image(), never, num_inference_steps=STEPS) == (T, T)  # thresholds never reached: no edit, no boost
    assert interval.choose_interval(pipe, image(), always, num_inference_steps=STEPS) == (0, 0)  # reached at once: the smallest timestep
    # a distance that grows with the noise level: x_t drifts from x_0 faster than P_t does, so t_boost <= t_edit
    l1 = lambda x, y: (x - y).abs().mean(dim=(1, 2, 3))  # noqa: E731
    t_edit, t_boost = interval.choose_interval(pipe, image(), l1, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0))
    assert 0 <= t_boost <= t_edit <= T


def test_callback_sees_every_step(pipe):
    seen = []
    edit(pipe, image(), direction(pipe), callback=lambda step, t, x_t, x0: seen.append((step, t, x_t.shape)))
    assert [s[0] for s in seen] == list(range(pipe.total_steps(num_inference_steps=STEPS)))  # inversion, then decoding
    assert [s[1] for s in seen] == [0, 200, 400, 600, 800, 800, 600, 400, 200, 0]


def test_mean_difference_direction_is_the_gap_between_the_groups_mean_h_over_the_edit_interval(pipe):
    positives, negatives = torch.cat([image(10), image(11)]), torch.cat([image(12), image(13)])
    d = find.mean_difference_direction(pipe, positives, negatives, t_edit=400, num_inference_steps=STEPS)
    assert d.shape == pipe.h_shape
    assert d.abs().mean() > 1e-3  # different images, different mean h
    assert torch.equal(find.mean_difference_direction(pipe, positives, positives, t_edit=400, num_inference_steps=STEPS), torch.zeros(pipe.h_shape))
    # antisymmetric: swapping the groups reverses the direction (up to float32 round-off in the means)
    assert torch.allclose(find.mean_difference_direction(pipe, negatives, positives, t_edit=400, num_inference_steps=STEPS), -d, atol=1e-6)
    # h is read along the images' own DDIM trajectories at t = 800, 600, 400 only: three U-Net calls after the inversion
    calls = []
    handle = pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        find.mean_h(pipe, positives, t_edit=400, num_inference_steps=STEPS)
    finally:
        handle.remove()
    assert len(calls) == STEPS + 3
    assert (edit(pipe, image(), d) - edit(pipe, image(), None)).abs().mean() > 1e-3  # usable as a direction as it stands


def test_mean_difference_direction_refuses_a_bad_interval(pipe):
    with pytest.raises(ValueError, match="t_boost <= t_edit"):
        find.mean_difference_direction(pipe, image(), image(1), t_edit=-1)


def test_delta_h_norms_are_the_scaled_directions_norm_at_every_edited_step(pipe):
    d = direction(pipe)
    out = pipe(image(), direction=d, scale=[-2.0, 0.5], t_edit=400, t_boost=0, num_inference_steps=STEPS,
               output_type="pt")
    assert sorted(out.delta_h_norms) == [400, 600, 800]  # t >= t_edit
    for norms in out.delta_h_norms.values():
        torch.testing.assert_close(norms, torch.tensor([2.0, 0.5]) * d.norm())
    f_t = DeltaBlock(pipe.h_shape[0])  # an f_t(h, t) module: its shift depends on h_t and t
    torch.nn.init.normal_(f_t.conv2.weight, std=0.1)
    learned = pipe(image(), direction=f_t, scale=1.0, t_edit=400, t_boost=0, num_inference_steps=STEPS,
                   output_type="pt").delta_h_norms
    assert len({round(float(n), 6) for n in learned.values()}) == 3 and all(n > 0 for n in learned.values())
    assert pipe(image(), direction=None, t_edit=400, num_inference_steps=STEPS).delta_h_norms == {}
