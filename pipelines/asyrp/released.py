"""The f_t directions released with Asyrp (kwonminki/Asyrp_official, MIT), fetched like models: from the official
repository at a pinned commit, checked against their sha256 before anything reads them, cached, and taken from
STEER_MODEL_DIR/kwonminki/Asyrp_official/checkpoint/<file> first when that copy exists (offline use). The authors'
LPIPS(x_0, P_t) curves (utils/<dataset>_LPIPS_distance_x0_t.tsv) are fetched the same way for their t_edit rule.

26 of the repository's 35 checkpoint/ files are for the 256 px DDPMs the registry has (CelebA-HQ, LSUN church and
bedroom); the 5 dog and 4 MetFaces files are for iDDPM/ADM models with other key names and are not listed.
Reading a file is `pipelines.asyrp.directions.load_direction`'s (through `directions.official`).
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .interval import LPIPS_EDIT

REPO = "kwonminki/Asyrp_official"
COMMIT = "a6c82dc760849dd4c1e878990ce38e824967e5b0"
RAW = f"https://raw.githubusercontent.com/{REPO}/{COMMIT}/"
URL = RAW + "checkpoint/"
TIMEOUT_S = 60  # one ~3.2 MB file

# sha256 of each usable checkpoint/<file> at COMMIT: the only pickled files this project ever unpickles
SHA256 = {
    "angry_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "533ef903b93101c49ccc19eec89207d209613de0a48e54ca539a5caa7c2d56b6",
    "bedroom_hotel_LC_bedroom_t999_ninv40_ngen40_0.pth": "9b4faf287e534939cbf8a4c775ea4367aec30233006890444aa85f6430ddded2",
    "bedroom_princess_LC_bedroom_t999_ninv40_ngen40_0.pth": "4bb34e68888ab24c83aa424c3b826798068d05655e4124e16c58a885400bd369",
    "church_department_store_LC_church_outdoor_t999_ninv40_ngen40_0.pth": "65a80d2c95ba9d33dda73a6b84efa7ec31815b40b11b3da708b4c663ad531236",
    "church_factory_LC_church_outdoor_t999_ninv40_ngen40_0.pth": "0939534dfeb20736e4eabf4487eda51863ef0006c4603a13745ec17836dcbe5f",
    "church_gothic_LC_church_outdoor_t999_ninv40_ngen40_0.pth": "333a87143dd975cc019c12c7d647e7227fbc59deba35c7067dc04e30b60e7e83",
    "church_red_brick_LC_church_outdoor_t999_ninv40_ngen40_0.pth": "2477d198086e71379b1960b0253a783b4710ce2941dad3824f49fca2a8061bb2",
    "church_temple_LC_church_outdoor_t999_ninv40_ngen40_0.pth": "a81ad285585e2830a36283bcc3ec9709e8525e70d7df2675cb851647971b77cb",
    "church_wooden_church_LC_church_outdoor_t999_ninv40_ngen40_0.pth": "ecdf3a30a0b48cf03ab5540db672eafbe5191f721c6315569ce71e6594bef535",
    "curly_hair_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "8016ba5d555da53bfd7acd87d98fd85bd81cd3b34d15b7d16dd7b2ac06132f20",
    "frida_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "8a32e6fea636904696588925734b5e068dcb7692c574d87c41df3b2867d4034f",
    "makeup_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "8cb888e6daa6b1c135b0ce2e7fc4f6746b324ce3658a96aab1396e968e06185d",
    "man_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "5b206d86bfd66245faf7c816189e85046c295f1bd79b4ebe15f2c79c8b2b8764",
    "modigliani_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "db7ce60fb1e65f0b72964c69b561923b142971f78f72df0ea3e146adb7dff37d",
    "neanderthal_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "f159a7ea48939f149a63de105e56c34d42ced887c712004139c950e5e8ac043b",
    "nicolas_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "365a4109e2d91063e21ca164b6884d30b94ad080d767ade52c61b1ee97aefe0b",
    "pixar_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "fb5b77b60221872c8ba9dd9af9f40a92c6eba5bb716585c0e7e75f996659b67e",
    "random_noise_man_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "913957a7ae6e6ad14063a783acafcb3aba502d5d1e408edd19d54a92a0a6e480",
    "random_noise_woman_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "cc87f61c3bd1459eea19257dfa0ff6e3aa575b4025b26fd1a22af85192093f44",
    "sad_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "3b1fbc22602043d8748fd444ef4a9f993175ad02196c56e7e0d4270ca2e5eea3",
    "smiling_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "6694632ef848d12e595ec1291df734ef3e9850d94a08632f06dc8fdd459b7703",
    "tanned_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "ac4e6eeb1c3aad92aa495a448d5ddf878c38b482b1feba08d8adaf1a856ec7f7",
    "woman_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "10677f4f7b1bd948658ce6ca59aa18a2fc7ade9e35a6db00236ea93aa8b06ff3",
    "young_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "9db44522a9e043479f39b6bad54e8d489754ed36dd25365e024b1861cbe6260b",
    "zombie_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "733751b36777f37e902b401bca865ecbec764b4bb13cd381cee1ce361d98b329",
    "zombie_new_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth": "731e66a6a9b03a87832f2182a3b58333f57f70970813a37415fb1f7e4ef09598",
}

# dataset (as in the file names) -> the hub models its directions are offered on, and its default t_edit: the official
# utils/t_edit_dic.py value (first t with LPIPS(x_0, P_t) >= 0.3), the fallback of the per-direction rule
# (official_t_edit) where the CLIP ViT-B/16 it needs or the dataset's curve cannot be had.
DATASETS = {
    "CelebA_HQ": (("google/ddpm-celebahq-256", "google/ddpm-ema-celebahq-256"), 516),
    "church_outdoor": (("google/ddpm-ema-church-256", "google/ddpm-church-256"), 370),
    "bedroom": (("google/ddpm-ema-bedroom-256", "google/ddpm-bedroom-256"), 369),
}

# name -> (source text, target text), from the official utils/text_dic.py. random_noise_* and zombie_new have no entry
# there: they take the texts of man, woman and zombie (their names say they were trained again, on samples from noise).
TEXTS = {
    "angry": ("face", "angry face"), "curly_hair": ("person", "person with curly hair"),
    "frida": ("photo", "self-portrait by Frida Kahlo"), "makeup": ("person", "person with makeup"),
    "man": ("a person", "a man"), "modigliani": ("photo", "Painting in Modigliani style"),
    "neanderthal": ("Human", "Neanderthal"), "nicolas": ("Person", "Nicolas Cage"),
    "pixar": ("Human", "3D render in the style of Pixar"), "random_noise_man": ("a person", "a man"),
    "random_noise_woman": ("a person", "a woman"), "sad": ("face", "sad face"), "smiling": ("face", "smiling face"),
    "tanned": ("face", "tanned face"), "woman": ("a person", "a woman"), "young": ("person", "young person"),
    "zombie": ("Human", "Zombie"), "zombie_new": ("Human", "Zombie"),
    "church_department_store": ("church", "department store"),
    "church_factory": ("church", "factory with chimneys"), "church_gothic": ("Church", "Gothic Church"),
    "church_red_brick": ("Church", "Red brick wall Church"), "church_temple": ("Church", "Temple"),
    "church_wooden_church": ("Church", "Wooden Church"),
    "bedroom_hotel": ("Bedroom", "Hotel Bedroom"), "bedroom_princess": ("Bedroom", "Princess Bedroom"),
}

# dataset -> the authors' utils/<file> at COMMIT (lines "t<TAB>mean LPIPS(x_0, P_t)" over their images, t = 1..999
# but 998) and its sha256
CURVES = {
    "CelebA_HQ": ("celeba_LPIPS_distance_x0_t.tsv", "df63327a63c43ee1a72f404e69c64870475f3072ded7644ddf623f8552a79702"),
    "church_outdoor": ("church_LPIPS_distance_x0_t.tsv",
                       "a9ee9aa1f1c0022ba92a134104a3d6a358ac708e33576ac7138089b0cc8815e0"),
    "bedroom": ("bedroom_LPIPS_distance_x0_t.tsv", "798d0a3ecbacf517d90e0549b291ecb6d5fae604087d5f0417767f85c6c5b32f"),
}
CLIP = "openai/clip-vit-base-patch16"  # the text cosine of the rule: the official --clip_model_name, ViT-B/16


@dataclass(frozen=True)
class ReleasedDirection:
    """One released f_t: its official name, the dataset and hub models it is for, its texts, file, URL and sha256."""

    name: str
    dataset: str
    model_ids: tuple[str, ...]
    source: str
    target: str
    t_edit: int
    file: str
    sha256: str

    @property
    def url(self) -> str:
        return URL + self.file


def _released(file: str) -> ReleasedDirection:
    name, dataset = file.split("_t999_")[0].split("_LC_")
    model_ids, t_edit = DATASETS[dataset]
    return ReleasedDirection(name, dataset, model_ids, *TEXTS[name], t_edit, file, SHA256[file])


RELEASED: dict[str, ReleasedDirection] = {d.name: d for d in map(_released, SHA256)}


def released_for(model_id: str) -> list[ReleasedDirection]:
    """The released directions offered on a registry model (none for models they were not made for)."""
    return [d for d in RELEASED.values() if model_id in d.model_ids]


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def offline_copy(path: str) -> Path | None:
    """STEER_MODEL_DIR/kwonminki/Asyrp_official/<path> (e.g. checkpoint/<file>) when that copy exists."""
    root = os.environ.get("STEER_MODEL_DIR")
    local = Path(root, REPO, path) if root else None
    return local if local is not None and local.is_file() else None


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "steer", "asyrp_official", COMMIT[:7])


def download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _entry(name: str) -> ReleasedDirection:
    if name not in RELEASED:
        raise ValueError(f"no released Asyrp direction is called {name!r}; the 256 px ones are {', '.join(RELEASED)} "
                         "(the dog and MetFaces releases are for iDDPM/ADM models this demo does not have)")
    return RELEASED[name]


def fetch_pinned(path: str, sha256: str, what: str, *, cache_dir=None, timeout: float = TIMEOUT_S) -> Path:
    """The verified file `path` of the repository at COMMIT: the STEER_MODEL_DIR copy, else the cached one, else
    downloaded from the pinned commit into the cache. Every file is checked against its sha256 before it is returned;
    `what` names it in the errors."""
    url, folder = RAW + path, path.rpartition("/")[0]
    local = offline_copy(path)
    if local is not None:
        if sha256_of(local) != sha256:
            raise ValueError(f"{local} is not {what} (its sha256 differs from {sha256}); replace it with the file "
                             f"from {url}")
        return local
    cached = Path(cache_dir or default_cache_dir(), Path(path).name)
    if cached.is_file() and sha256_of(cached) == sha256:
        return cached
    try:
        data = download(url, timeout)
    except OSError as err:
        raise ValueError(f"could not download {what} from {url} ({err}); for offline use put that file in "
                         f"STEER_MODEL_DIR/{REPO}/{folder}/") from err
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"the download of {url} does not have the pinned sha256 {sha256}; nothing was kept")
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(cached)
    return cached


def fetch_released(name: str, *, cache_dir=None, timeout: float = TIMEOUT_S) -> Path:
    """The verified file of a released direction (fetch_pinned: offline copy, cache, or the pinned commit)."""
    entry = _entry(name)
    return fetch_pinned(f"checkpoint/{entry.file}", entry.sha256, f"the released direction {name!r}",
                        cache_dir=cache_dir, timeout=timeout)


def lpips_curve(dataset: str, *, cache_dir=None) -> dict[int, float]:
    """t -> LPIPS(x_0, P_t), the authors' curve of a dataset (fetch_pinned: offline copy, cache, or the commit)."""
    if dataset not in CURVES:
        raise ValueError(f"the authors measured no LPIPS curve for {dataset!r} here; there are {', '.join(CURVES)}")
    file, sha256 = CURVES[dataset]
    path = fetch_pinned(f"utils/{file}", sha256, f"the authors' LPIPS curve of {dataset}", cache_dir=cache_dir)
    rows = (line.split("\t") for line in path.read_text().splitlines() if line.strip())
    return {int(t): float(distance) for t, distance in rows}


def official_t_edit(dataset: str, cos: float, *, cache_dir=None) -> int:
    """t_edit = min{t : LPIPS(x_0, P_t) >= LPIPS_EDIT * cos}, t on the curve's grid read upwards from its smallest t, as
    the official set_t_edit_t_addnoise does; cos = cos_CLIP(source text, target text) (text_cosine)."""
    curve, threshold = lpips_curve(dataset, cache_dir=cache_dir), LPIPS_EDIT * cos
    for t in sorted(curve):
        if curve[t] >= threshold:
            return t
    raise ValueError(f"no t of the {dataset} curve reaches LPIPS {threshold:.3f}")


def text_cosine(judge, source: str, target: str) -> float:
    """cos_CLIP(source, target): the cosine of the two texts' CLIP embeddings (a pipelines.core.clip.ClipJudge's)."""
    source_emb, target_emb = judge.text_embeds([source, target])
    return float(source_emb @ target_emb)


def combined_t_edit(names: list[str], judge) -> tuple[int, float, str]:
    """(t_edit, cos, name) of released directions used together: the rule at the largest text cosine among them, the
    official code's t_edit for several attributes (that of the attribute of largest cosine)."""
    cosines = {name: text_cosine(judge, _entry(name).source, _entry(name).target) for name in names}
    name = max(cosines, key=cosines.get)
    return official_t_edit(RELEASED[name].dataset, cosines[name]), cosines[name], name


def released_status(*, cache_dir=None) -> dict[str, str]:
    """name -> "offline copy", "offline copy with a wrong sha256" (refused), "cached" or "not downloaded"."""
    status = {}
    for name, entry in RELEASED.items():
        local, cached = offline_copy(f"checkpoint/{entry.file}"), Path(cache_dir or default_cache_dir(), entry.file)
        if local is not None:
            status[name] = "offline copy" if sha256_of(local) == entry.sha256 else "offline copy with a wrong sha256"
        elif cached.is_file() and sha256_of(cached) == entry.sha256:
            status[name] = "cached"
        else:
            status[name] = "not downloaded"
    return status
