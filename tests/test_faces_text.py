"""The captioned faces and the text-to-image training of faces-text-32, on tiny models (no trained weights needed)."""

import json
import random
from dataclasses import replace

import pytest
import torch
from test_faces import one_thread  # noqa: F401 (autouse: one torch thread, as the training runs)
from transformers import CLIPTokenizer

from training import captions, faces
from training import train_faces_text as text

TINY = text.Config(name="tiny", batch_size=8, steps=4, warmup=1, checkpoint_every=2, block_out_channels=(16, 32),
                   heads=2, text_width=32, text_layers=1)


@pytest.fixture(scope="module")
def drawn():
    """200 generator faces (B,3,32,32) and their attributes."""
    return faces.make_batch(200, 32, seed=3)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return CLIPTokenizer.from_pretrained(captions.write_tokenizer(tmp_path_factory.mktemp("tokenizer")))


def said(caption: str) -> dict[str, str]:
    """The attributes a caption names, read back from its words."""
    words = caption.replace(",", " ,").split()
    pairs = set(zip(words, words[1:]))

    def one(names, noun):
        found = [n for n in names if (n, noun) in pairs]
        assert len(found) == 1, (caption, noun, found)
        return found[0]

    mouths = [m for m, noun in zip(captions.MOUTHS, ("frown", "smile")) if m in words or noun in words]
    assert len(mouths) == 1, caption
    bald = "bald" in words or ("no", "hair") in pairs
    no_glasses = ("no", "glasses") in pairs or ("without", "glasses") in pairs
    assert "glasses" in words, caption
    return dict(mouth=mouths[0], glasses="no glasses" if no_glasses else "glasses",
                hair="bald" if bald else one(captions.HAIR_NAMES, "hair"),
                skin=one(captions.SKIN_NAMES, "skin"), background=one(captions.BACKGROUND_NAMES, "background"))


def test_every_word_is_one_token(tokenizer):
    ids = [tokenizer(word).input_ids for word in captions.VOCAB]
    assert all(len(i) == 3 for i in ids)  # <|startoftext|> word <|endoftext|>
    assert len({i[1] for i in ids}) == len(captions.VOCAB)
    assert tokenizer.unk_token_id not in {i[1] for i in ids} - {tokenizer.eos_token_id}


def test_captions_tokenize_one_id_per_word_and_round_trip(drawn, tokenizer):
    rng = random.Random(0)
    for caption in captions.captions(drawn[1], rng):
        words = caption.replace(",", " ,").split()
        ids = tokenizer(caption).input_ids
        assert len(ids) == len(words) + 2 and ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == [w + "</w>" for w in words]
    padded = tokenizer([""], padding="max_length", max_length=captions.MAX_LENGTH).input_ids[0]
    assert len(padded) == 77 and padded[0] == tokenizer.bos_token_id and set(padded[1:]) == {tokenizer.eos_token_id}


def test_captions_name_every_attribute_in_several_templates(drawn):
    rng = random.Random(1)
    batch = drawn[1]
    texts = captions.captions(batch, rng)
    assert all(said(c) == captions.attributes(batch, i) for i, c in enumerate(texts))
    assert len({c.split()[0] for c in texts}) >= 5  # templates and orders vary: "a", "blue", "grey", ...
    assert set(" ".join(texts).replace(",", " ,").split()) == set(captions.VOCAB)


def test_measured_faces_agree_with_their_captions(drawn):
    """The data is right: what measure reads from each drawn face is what its caption says."""
    images, batch = drawn
    for i in range(64):
        assert captions.read_attributes(images[i]) == captions.attributes(batch, i)


def painted(batch: faces.Faces) -> list[torch.Tensor]:
    """Each layer's pixels (B,32,32) bool, more than a quarter covered: face, hair, eyes, glasses, mouth."""
    return [torch.nn.functional.avg_pool2d(mask.float()[:, None], faces.SUPERSAMPLE)[:, 0] > 0.25
            for mask, _ in faces.layers(batch, 32)]


@pytest.mark.parametrize("layer, box", [(-1, faces.MOUTH_BOX), (1, faces.HAIR_BOX)], ids=["mouth", "hair"])
def test_a_loss_box_holds_its_feature(drawn, layer, box):
    """The loss's mouth (hair) weight covers the whole drawn mouth (hair), of any curvature (hair line), and little
    else (< 12% of the image)."""
    feature, inside = painted(drawn[1])[layer], faces.in_box(drawn[1], 32, box)
    assert feature.any((1, 2)).any() and not (feature & ~inside).any()
    assert inside.float().mean() < 0.12


def test_the_hair_box_is_clear_of_the_glasses_and_the_mouth(drawn):
    hair = faces.in_box(drawn[1], 32, faces.HAIR_BOX)
    assert not (painted(drawn[1])[3] & hair).any() and not (faces.in_box(drawn[1], 32, faces.MOUTH_BOX) & hair).any()


def test_the_loss_weighs_the_mouth_and_hair_boxes():
    scheduler = text.make_noise_scheduler()
    x_t, t, eps, prompts, w = text.noisy_batch(TINY, 5, scheduler)
    prediction = torch.randn(eps.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(text.weighted_mse(prediction, eps, w), torch.nn.functional.mse_loss(prediction, eps))
    *same, heavy = text.noisy_batch(replace(TINY, mouth_weight=10.0, hair_weight=5.0), 5, scheduler)
    assert all(torch.equal(a, b) for a, b in zip(same[:3], (x_t, t, eps))) and same[3] == prompts
    drawn = faces.make_batch(TINY.batch_size, 32, TINY.seed * 1_000_003 + 5)[1]
    mouth, hair = (faces.in_box(drawn, 32, box)[:, None] for box in (faces.MOUTH_BOX, faces.HAIR_BOX))
    assert torch.equal(heavy, torch.where(mouth, 10.0, torch.where(hair, 5.0, 1.0)))


def test_a_finetuned_run_starts_as_the_exported_model_and_chains_its_command(tmp_path):
    """A run fine-tuned from an export starts at its EMA weights, step and time; only the learning rate and the loss's
    weights may change; its export's command is the base's command and then its own."""
    run = text.Run(replace(TINY, steps=2), tmp_path / "base")
    run.train()
    base = run.export(tmp_path / "model")
    heavy = replace(TINY, lr=2e-4, mouth_weight=10.0, hair_weight=5.0)
    tuned = text.Run(heavy, tmp_path / "tuned", finetune_from=base)
    assert tuned.step == 2 and tuned.seconds == pytest.approx(run.seconds, abs=3)
    exported = text.load(base)
    for ours, theirs in ((tuned.unet, exported[0]), (tuned.text_encoder, exported[1])):
        assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    tuned.train()
    assert text.Run(heavy, tmp_path / "tuned").base == tuned.base  # resumed, not started again
    record = json.loads((tuned.export(tmp_path / "tuned-model") / "training.json").read_text())
    assert record["command"] == ("python -m training.train_faces_text --steps 2 && python -m "
                                 f"training.train_faces_text --finetune-from {base} --steps {TINY.steps} "
                                 "--lr 0.0002 --mouth-weight 10 --hair-weight 5")
    with pytest.raises(ValueError, match="another config"):
        text.Run(replace(heavy, heads=4), tmp_path / "other", finetune_from=base)


def test_a_finetune_adds_full_size_cross_attention_at_zero_output(tmp_path):
    """Cross-attention at full size (both attention layers of its blocks on the caption) joins an exported model at
    zero output: the fine-tuned U-Net first predicts what the export's did, and then learns to use it."""
    run = text.Run(replace(TINY, steps=2), tmp_path / "base")
    run.train()
    base = run.export(tmp_path / "model")
    full = replace(TINY, full_size_cross_attention=True)
    tuned = text.Run(full, tmp_path / "tuned", finetune_from=base)
    blocks = tuned.unet.down_blocks[0], tuned.unet.up_blocks[-1]
    assert [type(b).__name__ for b in blocks] == ["CrossAttnDownBlock2D", "CrossAttnUpBlock2D"]
    assert all(a.transformer_blocks[0].only_cross_attention for b in blocks for a in b.attentions)
    unet, text_encoder, tokenizer, _ = text.load(base)
    x_t, t, _, prompts, _ = text.noisy_batch(TINY, 99, text.make_noise_scheduler())
    with torch.no_grad():
        context = text.encode(tokenizer, text_encoder, prompts)
        torch.testing.assert_close(tuned.unet(x_t, t, context).sample, unet(x_t, t, context).sample, atol=0, rtol=0)
    tuned.train()
    assert all(a.proj_out.weight.abs().sum() > 0 for b in blocks for a in b.attentions)
    record = json.loads((tuned.export(tmp_path / "tuned-model") / "training.json").read_text())
    assert record["command"].endswith(f"--steps {TINY.steps} --lr 0.001 --mouth-weight 1 --hair-weight 1 "
                                      "--full-size-cross-attention")
    with pytest.raises(ValueError, match="another config"):  # taken away, it is not a fine-tune
        text.Run(TINY, tmp_path / "back", finetune_from=tmp_path / "tuned-model")


def test_training_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    run = text.Run(replace(TINY, steps=30, checkpoint_every=30), tmp_path)
    scheduler = text.make_noise_scheduler()
    x_t, t, eps, prompts, _ = text.noisy_batch(run.config, 10_000, scheduler)  # a batch training never sees

    def held_out_loss() -> float:
        with torch.no_grad():
            context = text.encode(run.tokenizer, run.text_encoder, prompts)
            return torch.nn.functional.mse_loss(run.unet(x_t, t, context).sample, eps).item()

    before = held_out_loss()
    run.train(log_every=100)
    # a random U-Net's eps is far from N(0, I) (loss ~1.1 here); 30 steps bring it below 0.6 (0.45 when written)
    assert held_out_loss() < 0.6 < before


def test_a_resumed_run_is_the_uninterrupted_run(tmp_path):
    whole = text.Run(TINY, tmp_path / "whole")
    whole.train()
    half = text.Run(replace(TINY, steps=2), tmp_path / "half")
    half.train()
    resumed = text.Run(TINY, tmp_path / "half")
    assert resumed.step == 2
    resumed.train()
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="another config"):
        text.Run(replace(TINY, heads=4), tmp_path / "half")


def test_export_is_a_stable_diffusion_layout_without_vae(tmp_path):
    run = text.Run(TINY, tmp_path / "run")
    out = run.export(tmp_path / "model")
    index = json.loads((out / "model_index.json").read_text())
    assert index["vae"] == [None, None] and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    for part in ("unet", "text_encoder"):
        assert list((out / part).glob("*.safetensors")) and not list((out / part).glob("*.bin"))
    unet, text_encoder, tokenizer, scheduler = model = text.load(out)
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size == TINY.text_width
    assert tokenizer.model_max_length == text_encoder.config.max_position_embeddings == 77
    assert type(scheduler).__name__ == "DDIMScheduler" and scheduler.config.clip_sample
    assert not scheduler.config.set_alpha_to_one  # sigma_t > 0 at the last step, as CycleDiffusion needs
    # the BPE files themselves ship too, for a tokenizer built from vocab.json and merges.txt alone
    words = CLIPTokenizer(str(out / "tokenizer" / "vocab.json"), str(out / "tokenizer" / "merges.txt"))
    assert words("a smiling face").input_ids == tokenizer("a smiling face").input_ids
    images = text.sample(model, ["a smiling face", ""], 3.0, 4, torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1


def test_guidance_scale_one_is_the_conditional_model(tmp_path):
    """eps_u + 1 (eps_c - eps_u) = eps_c: w = 1 samples the conditional model alone."""
    model = text.load(text.Run(TINY, tmp_path / "run").export(tmp_path / "model"))
    unet, text_encoder, tokenizer, scheduler = model
    prompts = ["a frowning face with glasses", "blue background, a smiling face"]
    guided = text.sample(model, prompts, 1.0, 3, torch.Generator().manual_seed(1))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        context = text.encode(tokenizer, text_encoder, prompts)
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t, context).sample, t, x).prev_sample
    torch.testing.assert_close(guided, (x / 2 + 0.5).clamp(0, 1), atol=1e-5, rtol=0)  # float sums in another order


def test_a_grown_run_starts_as_the_run_it_grows_from(tmp_path):
    """The pooled-text embedding starts at zero output: the grown U-Net predicts what the cross-attention-only one
    did, its EMA weights are that run's, and it trains on from that run's step."""
    small = text.Run(replace(TINY, pooled_text=False, name="small"), tmp_path / "small")
    small.train()
    grown = text.Run(TINY, tmp_path / "grown", grow_from=small.checkpoint)
    assert grown.step == small.step == TINY.steps and grown.grown_at == TINY.steps
    x_t, t, _, prompts, _ = text.noisy_batch(TINY, 99, text.make_noise_scheduler())
    with torch.no_grad():
        before = small.unet(x_t, t, text.encode(small.tokenizer, small.text_encoder, prompts)).sample
        after = grown.unet(x_t, t, text.encode(grown.tokenizer, grown.text_encoder, prompts)).sample
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    exported = text.load(grown.export(tmp_path / "model"))[0]
    assert json.loads((tmp_path / "model" / "training.json").read_text())["command"] == (
        f"python -m training.train_faces_text --no-pooled-text --steps {TINY.steps} && python -m "
        f"training.train_faces_text --steps {TINY.steps} --grow-from runs/{text.NO_POOLED_TEXT}/checkpoint.pt")
    assert exported.config.addition_embed_type == "text"
    old = {k: v for k, v in text.load(small.export(tmp_path / "old"))[0].state_dict().items()}
    assert all(torch.equal(v, old[k]) for k, v in exported.state_dict().items() if not k.startswith("add_embedding."))
    grown.config = replace(TINY, steps=TINY.steps + 2)
    grown.train()
    assert grown.unet.add_embedding.norm2.weight.abs().sum() > 0  # it learns to use the pooled caption
    with pytest.raises(ValueError, match="not this config without pooled_text"):
        text.Run(TINY, tmp_path / "again", grow_from=grown.checkpoint)
