"""Asyrp's released directions: the official f_t formula and scale rule against an implementation written here, the
sha256 pin (an unpinned pickle is never opened), the refused dog and MetFaces releases, and fetching (offline copy,
cache, wrong hashes), all on files written in the official layout from tiny random modules, without the network; and
learning with the official recipe (training.learn_direction): two processes learn what one does."""

import dataclasses
import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, UNet2DModel
from PIL import Image
from safetensors.torch import load_file

from conftest import ddpm_scheduler, tiny_clip_components, tiny_unet
from pipelines import AsyrpPipeline
from pipelines.asyrp.directions import official as asyrp_official
from pipelines.asyrp import released as asyrp_released
from pipelines.models import registry
from pipelines.asyrp.interval import asyrp_interval
from pipelines.asyrp.released import RELEASED, fetch_released, released_status
from pipelines.asyrp.directions import DeltaBlock, load_direction

SMILING, SAD = RELEASED["smiling"], RELEASED["sad"]
T_EDIT = 400


@pytest.fixture(scope="module")
def pipe():
    """A random U-Net whose mid-block has the hub models' 512 channels and 512-d time embedding (h: 512x4x4)."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 512),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=32, time_embedding_dim=512, add_attention=False,
    ).eval()
    pipe = AsyrpPipeline(unet=unet, scheduler=ddpm_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def official_state(seed: int, keys=("conv1", "temb_proj", "norm2", "conv2")) -> dict:
    """A random f_t state dict with the releases' keys and shapes (512 channels, 512-d temb)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv1": (512, 512, 1, 1), "temb_proj": (512, 512), "norm2": (512,), "conv2": (512, 512, 1, 1)}
    state = {}
    for key in keys:
        state[f"{key}.weight"] = (1 if key == "norm2" else 0) + torch.randn(shapes[key], generator=g) * 0.04
        state[f"{key}.bias"] = torch.randn(512, generator=g) * 0.02
    return state


def write_official(path, state: dict) -> bytes:
    """torch.save as the official trainer does: {'0': f_t, 'optimizer': SGD state, 'scheduler': StepLR state}."""
    params = [torch.nn.Parameter(v.clone()) for v in state.values()]
    optimizer = torch.optim.SGD(params, lr=0.5)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.9)
    torch.save({"0": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path)
    return path.read_bytes()


@pytest.fixture
def released(tmp_path, monkeypatch):
    """The smiling and sad releases rewritten with random weights under their official names, and pinned."""
    states, paths = {}, {}
    for seed, entry in enumerate((SMILING, SAD)):
        paths[entry.name] = tmp_path / entry.file
        data = write_official(paths[entry.name], states.setdefault(entry.name, official_state(seed)))
        monkeypatch.setitem(asyrp_released.SHA256, entry.file, hashlib.sha256(data).hexdigest())
    return states, paths


def f_official(state: dict, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
    """The official DeltaBlock written out: conv2(silu(GN_32,eps=1e-6(conv1(h) + temb_proj(silu(temb))))), no residual."""
    x = F.conv2d(h, state["conv1.weight"], state["conv1.bias"])
    x = x + F.linear(F.silu(temb), state["temb_proj.weight"], state["temb_proj.bias"])[:, :, None, None]
    x = F.group_norm(x, 32, state["norm2.weight"], state["norm2.bias"], eps=1e-6)
    return F.conv2d(F.silu(x), state["conv2.weight"], state["conv2.bias"])


@torch.no_grad()
def official_edit(unet, x_T, states: list, s: float, steps: int) -> torch.Tensor:
    """The official generative process from x_T: at t >= t_edit x_{t-1} = sqrt(a') P_t(eps(x_t | h + c sum_i
    f_i(h, temb))) + sqrt(1 - a') eps(x_t), c = s * 40 / steps / sqrt(k), temb the U-Net's time-embedding MLP of t;
    unclipped DDIM (eta 0) below."""
    abar, stride = ddpm_scheduler().alphas_cumprod, 1000 // steps
    c = s * 40 / steps / math.sqrt(len(states))
    x = x_T
    for t in [i * stride for i in reversed(range(steps))]:  # DDIM's evenly spaced timesteps from 0
        a, a_prev = abar[t], abar[t - stride] if t >= stride else torch.tensor(1.0)
        eps = unet(x, t).sample
        eps_edit = eps
        if t >= T_EDIT:
            temb = unet.time_embedding(unet.time_proj(torch.tensor([t]))).expand(len(x), -1)  # (B,512)
            shift = lambda module, args, h: h + c * sum(f_official(state, h, temb) for state in states)
            handle = unet.mid_block.register_forward_hook(shift)
            eps_edit = unet(x, t).sample
            handle.remove()
        p_t = (x - (1 - a).sqrt() * eps_edit) / a.sqrt()
        x = a_prev.sqrt() * p_t + (1 - a_prev).sqrt() * eps
    return x


@torch.no_grad()
def decode(pipe, x_T, direction, s: float, steps: int) -> torch.Tensor:
    """The pipeline's reverse process from x_T, unclamped: a random U-Net's x_0 lies far outside [-1, 1] (|x| ~ 15)."""
    scales = torch.full((len(x_T), 1, 1, 1), s)
    return pipe.reverse_process(x_T, direction=direction, scales=scales, t_edit=T_EDIT, t_boost=0,
                                num_inference_steps=steps)


def edit(pipe, x_T, direction, scale, steps):
    return pipe(x_T=x_T, direction=direction, scale=scale, t_edit=T_EDIT, t_boost=0, num_inference_steps=steps,
                output_type="pt").images


@pytest.mark.parametrize("steps", [4, 6])
def test_released_directions_edit_as_the_official_formula_and_scale_rule(pipe, released, steps):
    states, paths = released
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    smiling, meta = load_direction(paths["smiling"], shape=pipe.h_shape)
    sad, _ = load_direction(paths["sad"], shape=pipe.h_shape)
    plain = decode(pipe, x_T, None, 0.0, steps)
    for directions, s in (([smiling], 0.03), ([smiling, sad], -0.03)):
        got = decode(pipe, x_T, directions if len(directions) > 1 else directions[0], s, steps)
        expected = official_edit(pipe.unet, x_T, [states[m.name] for m in (SMILING, SAD)][:len(directions)], s, steps)
        # the pipeline runs the edited and plain U-Net calls as one batch of 2B: float round-off only
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
        # and the edit is far larger than that tolerance, so a wrong c, temb or f would not pass
        assert (got - plain).abs().mean() > 0.1
    assert meta["source"] == "face" and meta["target"] == "smiling face" and meta["t_edit"] == "516"


def test_scale_zero_is_the_identity(pipe, released):
    _, paths = released
    x_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    smiling, _ = load_direction(paths["smiling"], shape=pipe.h_shape)
    plain = edit(pipe, x_T, None, 0.0, 4)
    strip = edit(pipe, x_T, smiling, [0.0, 0.05], 4)
    assert torch.equal(edit(pipe, x_T, smiling, 0.0, 4), plain)  # nothing edited: plain DDIM, bit for bit
    # in a strip the s = 0 row shares the batched U-Net call of the edited one: float round-off only
    assert torch.allclose(strip[0], plain[0], atol=1e-5) and (strip[1] - plain[0]).abs().mean() > 0.01


def test_a_file_whose_sha256_is_not_pinned_is_never_unpickled(pipe, released, tmp_path, monkeypatch):
    _, paths = released
    opened = []
    monkeypatch.setattr(asyrp_official.torch, "load", lambda *a, **k: opened.append(a))
    write_official(tmp_path / "mine.pth", official_state(5))
    tampered = tmp_path / SMILING.file.replace(".pth", "_copy.pth")
    tampered.write_bytes(paths["smiling"].read_bytes() + b"\0")  # one byte more than the pinned file
    for path in (tmp_path / "mine.pth", tampered):
        with pytest.raises(ValueError, match="pickled PyTorch file whose sha256 .* is not one of the 26 pinned"):
            load_direction(path, shape=pipe.h_shape)
    assert opened == []


def test_dog_and_metfaces_releases_are_refused_as_another_architecture(pipe, tmp_path, monkeypatch):
    adm_keys = ("in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3")
    adm_state = {f"{k}.{p}": torch.zeros(2) for k in adm_keys for p in ("weight", "bias")}
    for name in ("dog_happy_LC_dog_t999_ninv40_ngen40_0.pth", "metface_sad_LC_metfaces_t999_ninv40_ngen40_0.pth"):
        write_official(tmp_path / name, adm_state)
        with pytest.raises(ValueError, match=r"(AFHQ-dog|MetFaces) iDDPM/ADM model, another f_t architecture"):
            load_direction(tmp_path / name, shape=pipe.h_shape)
    # the same keys under a pinned 256 px name: refused after the restricted load, by its keys
    data = write_official(tmp_path / SMILING.file, adm_state)
    monkeypatch.setitem(asyrp_released.SHA256, SMILING.file, hashlib.sha256(data).hexdigest())
    with pytest.raises(ValueError, match="another architecture"):
        load_direction(tmp_path / SMILING.file, shape=pipe.h_shape)


def test_released_directions_load_only_on_their_models_and_combine_only_with_each_other(pipe, released):
    _, paths = released
    smiling, _ = load_direction(paths["smiling"], shape=pipe.h_shape, model_id="google/ddpm-ema-celebahq-256")
    with pytest.raises(ValueError, match="offered on google/ddpm-celebahq-256, google/ddpm-ema-celebahq-256"):
        load_direction(paths["smiling"], shape=pipe.h_shape, model_id="google/ddpm-church-256")
    with pytest.raises(ValueError, match="512 channels; this model.s h-space has 256"):
        load_direction(paths["smiling"], shape=(256, 8, 8))
    with pytest.raises(ValueError, match="combine only with each other"):
        edit(pipe, torch.zeros(1, 3, 8, 8), [smiling, torch.zeros(pipe.h_shape)], 1.0, 4)


def test_the_registry_lists_the_26_releases_at_the_pinned_commit():
    assert len(RELEASED) == 26
    by_dataset = {d: sum(e.dataset == d for e in RELEASED.values()) for d in asyrp_released.DATASETS}
    assert by_dataset == {"CelebA_HQ": 18, "church_outdoor": 6, "bedroom": 2}
    assert all(asyrp_released.COMMIT in e.url and e.url.endswith("/checkpoint/" + e.file) for e in RELEASED.values())
    church = RELEASED["church_red_brick"]
    assert (church.source, church.target, church.t_edit) == ("Church", "Red brick wall Church", 370)
    assert "google/ddpm-ema-church-256" in church.model_ids
    assert [d.name for d in asyrp_released.released_for("google/ddpm-ema-bedroom-256")] == ["bedroom_hotel", "bedroom_princess"]
    for entry in RELEASED.values():  # offered only on registry models, with the dataset's Asyrp interval
        assert all(m in registry.REGISTRY and asyrp_interval(m)[0] == entry.t_edit for m in entry.model_ids)


@pytest.fixture
def fake_smiling(monkeypatch, tmp_path):
    """Bytes standing in for the smiling release, pinned; no network: a download fails unless a test allows it."""
    data = b"released f_t bytes"
    monkeypatch.setitem(RELEASED, "smiling", dataclasses.replace(SMILING, sha256=hashlib.sha256(data).hexdigest()))
    monkeypatch.delenv("STEER_MODEL_DIR", raising=False)

    def no_network(url, timeout):
        raise OSError("no network in tests")

    monkeypatch.setattr(asyrp_released, "download", no_network)
    return data


def test_an_offline_copy_is_found_and_verified_before_the_network(fake_smiling, tmp_path, monkeypatch):
    copy = tmp_path / "models" / "kwonminki" / "Asyrp_official" / "checkpoint" / SMILING.file
    copy.parent.mkdir(parents=True)
    copy.write_bytes(fake_smiling)
    monkeypatch.setenv("STEER_MODEL_DIR", str(tmp_path / "models"))
    assert fetch_released("smiling", cache_dir=tmp_path / "cache") == copy
    status = released_status(cache_dir=tmp_path / "cache")
    assert status["smiling"] == "offline copy" and status["sad"] == "not downloaded"
    copy.write_bytes(fake_smiling + b"!")
    with pytest.raises(ValueError, match="sha256 differs"):
        fetch_released("smiling", cache_dir=tmp_path / "cache")
    assert released_status(cache_dir=tmp_path / "cache")["smiling"] == "offline copy with a wrong sha256"


def test_a_download_is_verified_then_cached(fake_smiling, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="could not download .* STEER_MODEL_DIR"):
        fetch_released("smiling", cache_dir=cache)
    monkeypatch.setattr(asyrp_released, "download", lambda url, timeout: b"something else")
    with pytest.raises(ValueError, match="does not have the pinned sha256"):
        fetch_released("smiling", cache_dir=cache)
    assert not any(cache.glob("*"))  # nothing kept from a wrong download
    urls = []
    monkeypatch.setattr(asyrp_released, "download", lambda url, timeout: urls.append(url) or fake_smiling)
    first, again = fetch_released("smiling", cache_dir=cache), fetch_released("smiling", cache_dir=cache)
    assert first == again == cache / SMILING.file and first.read_bytes() == fake_smiling
    assert urls == [SMILING.url]  # downloaded once, from the pinned commit
    assert released_status(cache_dir=cache)["smiling"] == "cached"
    with pytest.raises(ValueError, match="dog and MetFaces"):
        fetch_released("dog_happy")


def test_two_processes_learn_the_direction_one_process_learns_from_the_same_batches(tmp_path):
    """training.learn_direction under torchrun (two gloo processes on the CPU) against one process: the same images
    in the same global batches, each process walking half of every batch, gradients averaged at every step."""
    DDPMPipeline(unet=tiny_unet(), scheduler=ddpm_scheduler()).save_pretrained(tmp_path / "ddpm")
    clip, tokenizer = tiny_clip_components()
    clip.save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    pixels = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    (tmp_path / "images").mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / "images" / f"{i}.png")
    args = ["-m", "training.learn_direction", "--source", "face", "--target", "smiling face", "--images",
            str(tmp_path / "images"), "--model", str(tmp_path / "ddpm"), "--clip", str(tmp_path / "clip"),
            "--steps", "5", "--t-edit", "400", "--iterations", "2", "--batch-size", "4", "--lr", "0.001"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launchers = {"one": [], "two": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]}
    for name, launcher in launchers.items():
        subprocess.run([sys.executable, *launcher, *args, "--out", str(tmp_path / f"{name}.safetensors")],
                       check=True, env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True)
    one, two = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    channels = tiny_unet().config.block_out_channels[-1]  # h's
    torch.manual_seed(0)  # the script's --seed: the f_t both runs start from
    start = {f"f_t.{k}": v for k, v in DeltaBlock(channels).state_dict().items()}
    assert one["f_t.conv2.weight"].abs().max() > 1e-3  # f_t learned (W_2 starts at zero)
    for key in one:
        # the averaged half-batch gradients equal the whole batch's but for the order of float sums, which depends on
        # the CPU; the round-off they carry into the weights is a small share of what learning moved each tensor
        # (measured: at most 3.4e-4 of it), whereas a wrong average (a sum, or no exchange) would be of the order of the
        # move itself; conv1's bias, which GroupNorm cancels, never moves in either
        moved = (one[key] - start[key]).abs().max()
        assert (one[key] - two[key]).abs().max() <= 1e-2 * moved, key
