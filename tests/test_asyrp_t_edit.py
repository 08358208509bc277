"""The Asyrp authors' t_edit of their released directions: the first t, read upwards on their LPIPS(x_0, P_t) curve,
with LPIPS >= 0.33 x cos_CLIP(source text, target text) (kwonminki/Asyrp_official, set_t_edit_t_addnoise). Curves are
written here in the official tsv layout and pinned; a tiny random CLIP stands in for ViT-B/16; no network: where
that CLIP or the curve cannot be had, the dataset default is used and the note says why."""

import dataclasses
import hashlib

import pytest
import torch
from diffusers import UNet2DModel
from huggingface_hub import constants

from conftest import ddpm_scheduler, tiny_clip_components, write_published_clip, write_published_ddpm
from pipelines.asyrp import released as asyrp_released
from pipelines.models import loading
from runners import asyrp
from test_asyrp_official import official_state, write_official

CELEBA_CURVE = "celeba_LPIPS_distance_x0_t.tsv"
# t -> LPIPS(x_0, P_t), noisy at small t as the authors' curves are (their CelebA one starts at 0.0085 and dips)
STEPPED = {1: 0.05, 2: 0.02, 100: 0.1, 200: 0.165, 300: 0.25, 400: 0.32, 500: 0.34, 600: 0.5, 999: 1.1}
LINEAR = {t: t / 1000 for t in range(1, 1000) if t != 998}  # the official files' grid: 1..999 but 998


def write_curve(models, monkeypatch, curve: dict, dataset="CelebA_HQ") -> None:
    """The curve as the official code writes utils/<dataset>_LPIPS_distance_x0_t.tsv ("t\\tmean\\n" per t), in the
    offline copy folder, pinned in place of the real file's sha256."""
    file = asyrp_released.CURVES[dataset][0]
    path = models / asyrp_released.REPO / "utils" / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{t}\t{distance}\n" for t, distance in curve.items()))
    monkeypatch.setitem(asyrp_released.CURVES, dataset, (file, hashlib.sha256(path.read_bytes()).hexdigest()))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty STEER_MODEL_DIR, cache and hub cache, the hub off, fresh loaded models, and no download possible."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("STEER_MODEL_DIR", str(models))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(loading, "cache", loading.ModelCache())
    downloads = []

    def no_network(url, timeout):
        downloads.append(url)
        raise OSError("no network in tests")

    monkeypatch.setattr(asyrp_released, "download", no_network)
    return models, downloads


@pytest.fixture
def stand_in_clip(offline):
    """A tiny random CLIPModel and its tokenizer where openai/clip-vit-base-patch16's local copy goes, as that
    repository publishes them (config, tokenizer files, pytorch_model.bin at the root)."""
    models, _ = offline
    model, tokenizer = tiny_clip_components(0)
    write_published_clip(models / asyrp_released.CLIP, model, tokenizer)
    return model, tokenizer


def official_cosine(model, tokenizer, source: str, target: str) -> float:
    """As the official code: each text encoded alone, torch's CosineSimilarity(dim=1, eps=1e-6) of the features."""
    def features(text):
        out = model.get_text_features(**tokenizer([text], return_tensors="pt"))
        return getattr(out, "pooler_output", out)

    with torch.no_grad():
        return torch.nn.CosineSimilarity(dim=1, eps=1e-6)(features(source), features(target)).item()


def first_t_at(curve: dict, threshold: float) -> int:
    return min(t for t, distance in curve.items() if distance >= threshold)


def test_the_rule_takes_the_first_t_upwards_whose_lpips_reaches_a_third_of_the_cosine(offline, monkeypatch):
    models, downloads = offline
    write_curve(models, monkeypatch, STEPPED)
    t_edit = [asyrp_released.official_t_edit("CelebA_HQ", cos) for cos in (1.0, 0.9, 0.55, 0.5, 0.1)]
    # 0.33 falls between 400 and 500 (0.32, 0.34): the grid point above, not an interpolation; a lower cosine, a lower
    # threshold, a smaller t_edit; 0.33 x 0.5 equals the 0.165 of t = 200 (>=, not >); 0.033 is reached first at t = 1,
    # where the scan starts, not at the t = 100 a scan down from T would stop at
    assert t_edit == [500, 400, 300, 200, 1]
    with pytest.raises(ValueError, match="no t of the CelebA_HQ curve reaches LPIPS 1.320"):
        asyrp_released.official_t_edit("CelebA_HQ", 4.0)
    assert downloads == []  # the offline copy, not the network


def test_a_curve_is_verified_downloaded_once_from_the_pinned_commit_and_cached(offline, tmp_path, monkeypatch):
    models, _ = offline
    write_curve(models, monkeypatch, LINEAR)
    data = (models / asyrp_released.REPO / "utils" / CELEBA_CURVE).read_bytes()
    (models / asyrp_released.REPO / "utils" / CELEBA_CURVE).write_bytes(data + b"1\t0.9\n")
    with pytest.raises(ValueError, match="sha256 differs"):  # a changed copy is refused, never read
        asyrp_released.official_t_edit("CelebA_HQ", 1.0)
    monkeypatch.setenv("STEER_MODEL_DIR", str(tmp_path / "elsewhere"))
    urls = []
    monkeypatch.setattr(asyrp_released, "download", lambda url, timeout: urls.append(url) or data)
    assert asyrp_released.official_t_edit("CelebA_HQ", 1.0) == asyrp_released.official_t_edit("CelebA_HQ", 0.5) + 165
    assert urls == [f"https://raw.githubusercontent.com/kwonminki/Asyrp_official/{asyrp_released.COMMIT}/utils/"
                    f"{CELEBA_CURVE}"]
    cached = tmp_path / "cache" / "steer" / "asyrp_official" / asyrp_released.COMMIT[:7] / CELEBA_CURVE
    assert cached.read_bytes() == data


def test_without_clip_or_curve_every_dataset_falls_back_to_its_default(offline):
    _, downloads = offline
    assert asyrp.released_rule(["smiling"]) == (516, "516, the dataset default (CLIP ViT-B/16 is not available here)")
    assert asyrp.released_t_edit(["church_gothic"]) == 370 and asyrp.released_t_edit(["bedroom_hotel"]) == 369
    assert asyrp.released_t_edit(["smiling", "young"]) == 516
    assert downloads == []  # nothing tried past the missing CLIP


def test_with_clip_but_no_curve_the_default_says_the_curve_is_missing(offline, stand_in_clip):
    _, downloads = offline
    assert asyrp.released_rule(["church_gothic"]) == (
        370, "370, the dataset default (the authors' LPIPS curve is not available here)")
    assert downloads == [asyrp_released.RAW + "utils/church_LPIPS_distance_x0_t.tsv"]


def test_with_clip_and_curve_each_direction_gets_the_rule_at_its_own_cosine(offline, stand_in_clip, monkeypatch):
    models, _ = offline
    write_curve(models, monkeypatch, LINEAR)
    texts = {name: (asyrp_released.RELEASED[name].source, asyrp_released.RELEASED[name].target)
             for name in ("smiling", "young")}
    cos = {name: official_cosine(*stand_in_clip, *pair) for name, pair in texts.items()}
    expected = {name: first_t_at(LINEAR, 0.33 * c) for name, c in cos.items()}
    # two distinct cosines below 1 (tiny random CLIP, seed 0: 0.67 and 0.86), so three distinct t_edit
    assert 0 < cos["smiling"] < cos["young"] < 0.95
    assert expected["smiling"] < expected["young"] < first_t_at(LINEAR, 0.33)
    for name in cos:
        assert asyrp.released_rule([name]) == (expected[name], f"{expected[name]} by the authors' rule "
                                                               f"(CLIP cos {cos[name]:.2f})")
    # together: the t_edit of the direction of largest cosine, as the official code picks for several attributes
    assert asyrp.released_rule(["smiling", "young"]) == (
        expected["young"], f"{expected['young']} by the authors' rule (CLIP cos {cos['young']:.2f} of young, the "
                           "largest of the 2)")


def test_the_run_note_says_how_t_edit_was_chosen(offline, stand_in_clip, monkeypatch):
    """The smiling release (random f_t in the official layout, pinned) on a stand-in for google/ddpm-celebahq-256."""
    models, _ = offline
    write_curve(models, monkeypatch, LINEAR)
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, layers_per_block=1, block_out_channels=(32, 512), norm_num_groups=32,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       time_embedding_dim=512, add_attention=False).eval()
    write_published_ddpm(models / "google/ddpm-celebahq-256", unet, ddpm_scheduler())
    smiling = asyrp_released.RELEASED["smiling"]
    (models / asyrp_released.REPO / "checkpoint").mkdir(parents=True)
    digest = hashlib.sha256(write_official(models / asyrp_released.REPO / "checkpoint" / smiling.file,
                                           official_state(0))).hexdigest()
    monkeypatch.setitem(asyrp_released.SHA256, smiling.file, digest)
    monkeypatch.setitem(asyrp_released.RELEASED, "smiling", dataclasses.replace(smiling, sha256=digest))
    t_edit, how = asyrp.released_rule(["smiling"])
    settings = dict(image="assets/astronaut.png", model_id="google/ddpm-celebahq-256", source=asyrp.SOURCES[3],
                    strip=False, t_boost=0, steps=4, released="smiling")
    result = asyrp.run(asyrp.Settings(**settings, t_edit=asyrp.released_t_edit(["smiling"])))
    assert result.t_edit == t_edit != 516 and f"t_edit {how}. " in result.note and "by the authors' rule" in how
    result = asyrp.run(asyrp.Settings(**settings, t_edit=700))
    assert result.t_edit == 700 and f"t_edit 700, not their {how}. " in result.note
