"""ILVR: the low-pass constraint it enforces, the effect of N, and plain DDPM when conditioning is off."""

import pytest
import torch
from diffusers import DDPMPipeline

from conftest import class_conditional_ddpm, ddpm_scheduler, tiny_class_unet, tiny_unet
from pipelines import ILVRPipeline
from pipelines.ilvr import phi_N

STEPS = 20


def smooth_reference(seed: int = 0) -> torch.Tensor:
    """A (1,3,32,32) image in [0,1] with coarse structure: a random 4x4 colour grid, bicubically enlarged."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)


def ilvr(unet, reference, seed, **kwargs):
    pipe = ILVRPipeline(unet=unet, scheduler=ddpm_scheduler())
    kwargs = {"num_inference_steps": STEPS, "output_type": "pt", **kwargs}
    return pipe(reference, generator=torch.Generator().manual_seed(seed), **kwargs).images


def low_pass_gap(x: torch.Tensor, y: torch.Tensor, N: int) -> float:
    return (phi_N(x, N) - phi_N(y, N)).abs().mean().item()


def test_conditioning_off_equals_ddpm_pipeline_bit_for_bit(unet):
    reference = smooth_reference()
    for seed in (0, 1):
        expected = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler())(
            batch_size=2, generator=torch.Generator().manual_seed(seed), num_inference_steps=STEPS, output_type="pt"
        ).images
        got = ilvr(unet, reference, seed, range_t=1000, batch_size=2)
        assert torch.equal(got, expected)


def test_output_keeps_the_references_low_frequencies(unet):
    reference = smooth_reference()
    N = 4
    conditioned = [low_pass_gap(ilvr(unet, reference, seed, down_factor=N), reference, N) for seed in range(3)]
    free = [low_pass_gap(ilvr(unet, reference, seed, range_t=1000), reference, N) for seed in range(3)]
    # the last step sets phi_N(x_0) = phi_N(y) up to phi_N not being an exact projection and the final clamp;
    # an unconditioned random-model sample is an unrelated image, so its low-pass gap is many times larger
    assert max(conditioned) < 0.03
    assert max(conditioned) < 0.2 * min(free)


def test_larger_N_gives_a_larger_gap_to_the_reference(unet):
    reference = smooth_reference(1)
    gaps = {
        N: sum(low_pass_gap(ilvr(unet, reference, seed, down_factor=N), reference, 2) for seed in range(3))
        for N in (2, 8, 16)
    }
    # R_N is a subset of R_M for N <= M: measured at the fine scale 2, looser conditioning drifts further
    assert gaps[2] < gaps[8] < gaps[16]


def test_shorter_conditioning_range_gives_a_larger_gap(unet):
    reference = smooth_reference(2)
    gaps = [
        sum(low_pass_gap(ilvr(unet, reference, seed, down_factor=4, range_t=r), reference, 4) for seed in range(3))
        for r in (0, 500, 1000)
    ]
    # R_N is a subset of R_{N,(T,k)}: conditioning only while t > k leaves the late steps free
    assert gaps[0] < gaps[1] < gaps[2]


def test_batch_samples_differ_and_share_the_reference(unet):
    x = ilvr(unet, smooth_reference(), 0, down_factor=4, batch_size=3)
    assert x.shape == (3, 3, 32, 32)
    assert (x[0] - x[1]).abs().mean() > 1e-3  # fresh noise per sample, not one sample copied


def test_callback_sees_every_step(unet):
    seen = []
    ilvr(unet, smooth_reference(), 0, callback=lambda step, t, x_t, x0: seen.append((step, t, x_t.shape, x0.shape)))
    assert [s[0] for s in seen] == list(range(STEPS))
    assert seen[0][1] > seen[-1][1] and seen[-1][2] == seen[-1][3] == (1, 3, 32, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"down_factor": 3}, "use one of 2, 4, 8, 16"),
        ({"down_factor": 64}, "use one of 2, 4, 8, 16"),  # 64 does not fit a 32x32 model
        ({"range_t": -1}, "range_t must be an integer from 0"),
        ({"range_t": 1001}, "to 1000"),
        ({"num_inference_steps": 0}, "num_inference_steps must be an integer from 1 to 1000"),
        ({"batch_size": 0}, "batch_size must be an integer from 1"),
        ({"output_type": "jpeg"}, "output_type"),
    ],
)
def test_bad_parameters_say_what_is_allowed(unet, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ilvr(unet, smooth_reference(), 0, **{"num_inference_steps": 2, **kwargs})


def test_frequency_split_is_the_refinement_of_the_chosen_step(unet):
    seen = {}
    pipe = ILVRPipeline(unet=unet, scheduler=ddpm_scheduler())
    run = dict(down_factor=4, num_inference_steps=STEPS, output_type="pt", batch_size=2)
    out = pipe(smooth_reference(), generator=torch.Generator().manual_seed(0), split_step=7,
               callback=lambda step, t, x_t, x0: seen.setdefault(step, (t, x_t[0].clone())), **run)
    plain = pipe(smooth_reference(), generator=torch.Generator().manual_seed(0), **run)
    split = out.frequency_split
    assert torch.equal(out.images, plain.images)  # keeping the split does not change the sampling
    assert (split.step, split.t) == (7, seen[7][0]) and torch.equal(split.x_prev, seen[7][1])
    # x_{t-1} = phi_N(y_{t-1}) + (I - phi_N)(x'_{t-1}): the reference's low frequencies and the model's high ones
    torch.testing.assert_close(split.reference_low + split.proposal_high, split.x_prev, rtol=0, atol=1e-6)
    torch.testing.assert_close(split.proposal_low, phi_N((split.proposal_low + split.proposal_high)[None], 4)[0],
                               rtol=0, atol=1e-5)
    assert (split.proposal_low - split.reference_low).abs().mean() > 1e-2  # it replaced something
    unconditioned = pipe(smooth_reference(), generator=torch.Generator().manual_seed(0), split_step=7, range_t=1000, **run)
    assert unconditioned.frequency_split is None  # no refinement at that step
    with pytest.raises(ValueError, match="split_step must be a step index from 0 to 19"):
        pipe(smooth_reference(), split_step=STEPS, **run)


def test_total_steps_counts_the_callbacks_of_a_call(unet):
    pipe = ILVRPipeline(unet=unet, scheduler=ddpm_scheduler())
    for steps in (3, 7):
        seen = []
        pipe(smooth_reference(), num_inference_steps=steps, output_type="pt", generator=torch.Generator().manual_seed(0),
             callback=lambda step, t, x_t, x0: seen.append(step))
        assert seen == list(range(pipe.total_steps(num_inference_steps=steps)))


def test_a_class_conditional_model_samples_its_proposals_from_the_class():
    """With conditioning off, ILVR with y* is class-conditional DDPM sampling of y*, bit for bit; without a class it is
    the null class's, as before; a model without classes refuses one."""
    unet, reference = tiny_class_unet(sample_size=32), smooth_reference()
    expected = (class_conditional_ddpm(unet, [1, 2], STEPS, seed=3) / 2 + 0.5).clamp(0, 1)
    assert torch.equal(ilvr(unet, reference, 3, range_t=1000, batch_size=2, class_labels=[1, 2]), expected)
    null = (class_conditional_ddpm(unet, [3, 3], STEPS, seed=3) / 2 + 0.5).clamp(0, 1)
    assert torch.equal(ilvr(unet, reference, 3, range_t=1000, batch_size=2), null)
    conditioned = ilvr(unet, reference, 3, batch_size=2, class_labels=1)  # one class for both samples
    assert low_pass_gap(conditioned, reference, 4) < low_pass_gap(expected, reference, 4)  # the reference still holds
    with pytest.raises(ValueError, match="no class embeddings"):
        ilvr(tiny_unet(), reference, 0, class_labels=0)
